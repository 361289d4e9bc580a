//===- TextBlob.cpp - The text interface compiled into a model ------------===//
//
// Compiled with exceptions on (nlohmann_json); none escapes.
//
//===----------------------------------------------------------------------===//

#include "frontends/text/TextBlob.h"

#include "moert/text_format.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Path.h"

#include <nlohmann/json.hpp>

#include <cstring>

namespace moe::frontend {
namespace {

using json = nlohmann::json;

llvm::Error error(const llvm::Twine &message) {
  return llvm::createStringError(message);
}

/// Little-endian words and padded strings, as moert/text_format.h lays out.
class BlobWriter {
public:
  void word(uint32_t value) {
    for (int i = 0; i < 4; ++i) {
      bytes.push_back(static_cast<char>((value >> (8 * i)) & 0xFF));
    }
  }
  void real(float value) {
    uint32_t bits;
    std::memcpy(&bits, &value, 4);
    word(bits);
  }
  void padded(const std::string &text) {
    bytes += text;
    bytes.append((4 - text.size() % 4) % 4, '\0');
  }
  void section(uint32_t tag, const std::string &payload) {
    word(tag);
    word(static_cast<uint32_t>(payload.size()));
    padded(payload);
    ++sections;
  }
  std::string bytes;
  uint32_t sections = 0;
};

std::string finish(const BlobWriter &body) {
  BlobWriter out;
  out.bytes.assign(MOERT_TEXT_MAGIC, 8);
  out.word(MOERT_TEXT_VERSION);
  out.word(body.sections);
  return out.bytes + body.bytes;
}

/// The runtime's MOERT_TEXT_TOKENIZER payload.
std::string serializeTokenizer(const Tokenizer &t) {
  BlobWriter w;
  uint32_t stringBytes = 0;
  for (const std::string &text : t.texts) {
    stringBytes += static_cast<uint32_t>(text.size());
  }
  for (uint32_t value : {t.kind, t.flags, static_cast<uint32_t>(t.unkId),
                         static_cast<uint32_t>(t.texts.size()),
                         static_cast<uint32_t>(t.merges.size()),
                         static_cast<uint32_t>(t.added.size()), stringBytes}) {
    w.word(value);
  }
  uint32_t offset = 0;
  for (const std::string &text : t.texts) {
    w.word(offset);
    offset += static_cast<uint32_t>(text.size());
  }
  w.word(offset);
  for (uint32_t flags : t.tokenFlags) {
    w.word(flags);
  }
  for (const TokenizerMerge &m : t.merges) {
    for (uint32_t value : {m.left, m.right, m.result, m.priority}) {
      w.word(value);
    }
  }
  for (const AddedToken &a : t.added) {
    w.word(a.id);
    w.word(a.flags);
  }
  for (const std::string &text : t.texts) {
    w.bytes += text;
  }
  return w.bytes;
}

/// Reads the description's pieces of the text section, with the key path in
/// every error.
class SectionReader {
public:
  SectionReader(const json &section, const Tokenizer &tokenizer,
                int64_t modelVocab)
      : section(section), tokenizer(tokenizer), modelVocab(modelVocab) {}

  /// {"token": "<|eot|>"} or {"id": 50256}.
  llvm::Expected<int32_t> tokenRef(const json &ref, const std::string &key) {
    if (ref.is_object() && ref.contains("token")) {
      std::string text = ref["token"].get<std::string>();
      int32_t id = tokenizer.find(text);
      if (id < 0 && ref.value("optional", false)) {
        return -1; // a convention some of the family's tokenizers follow
      }
      if (id < 0) {
        return error("text." + key + ": token '" + text + "' is not in " +
                     tokenizer.summary);
      }
      return id;
    }
    if (ref.is_object() && ref.contains("id") &&
        ref["id"].is_number_integer()) {
      int64_t id = ref["id"].get<int64_t>();
      if (id < 0 || id >= modelVocab) {
        return error("text." + key + ": id " + llvm::Twine(id) +
                     " is outside the model's vocabulary of " +
                     llvm::Twine(modelVocab));
      }
      return static_cast<int32_t>(id);
    }
    return error("text." + key +
                 ": expected {\"token\": \"<text>\"} or {\"id\": <n>}");
  }

  llvm::Expected<std::string> generation() {
    BlobWriter w;
    int32_t bos = -1;
    if (section.contains("bos") && !section["bos"].is_null()) {
      auto id = tokenRef(section["bos"], "bos");
      if (!id) {
        return id.takeError();
      }
      bos = *id; // -1 when an optional token is absent
    }
    w.word(static_cast<uint32_t>(bos));
    w.word(section.value("add_bos", false) ? 1 : 0);
    const json &s =
        section.contains("sampling") ? section["sampling"] : json::object();
    std::string form = s.value("repeat_form", "sign_aware");
    uint32_t formCode = form == "none"         ? MOERT_REPEAT_NONE
                        : form == "sign_aware" ? MOERT_REPEAT_SIGN_AWARE
                        : form == "divide_by_count"
                            ? MOERT_REPEAT_DIVIDE_BY_COUNT
                            : ~0u;
    if (formCode == ~0u) {
      return error("text.sampling.repeat_form: '" + form +
                   "' is not one of none, sign_aware, divide_by_count");
    }
    w.real(s.value("temperature", 1.0f));
    w.word(static_cast<uint32_t>(s.value("top_k", 0)));
    w.real(s.value("top_p", 1.0f));
    w.real(s.value("min_p", 0.0f));
    w.real(s.value("repeat_penalty", 1.0f));
    w.word(formCode);
    w.word(static_cast<uint32_t>(s.value("repeat_last_n", 64)));
    std::vector<int32_t> stops;
    const json &stopList =
        section.contains("stop") ? section["stop"] : json::array();
    for (size_t i = 0; i < stopList.size(); ++i) {
      auto id = tokenRef(stopList[i], "stop[" + std::to_string(i) + "]");
      if (!id) {
        return id.takeError();
      }
      if (*id >= 0) {
        stops.push_back(*id);
      }
    }
    w.word(static_cast<uint32_t>(stops.size()));
    for (int32_t id : stops) {
      w.word(static_cast<uint32_t>(id));
    }
    return w.bytes;
  }

  /// The chat section, or "" for a base model.
  llvm::Expected<std::string> chat() {
    if (!section.contains("chat") || section["chat"].is_null()) {
      return std::string();
    }
    const json &chat = section["chat"];
    BlobWriter parts;
    uint32_t count = 0;
    auto add = [&](moert_chat_slot slot, const json &list,
                   const std::string &key) -> llvm::Error {
      if (list.is_null()) {
        return llvm::Error::success();
      }
      if (!list.is_array()) {
        return error("text.chat." + key + ": expected a list of parts");
      }
      for (size_t i = 0; i < list.size(); ++i) {
        const json &part = list[i];
        std::string where = "chat." + key + "[" + std::to_string(i) + "]";
        parts.word(slot);
        if (part.is_object() && part.contains("text")) {
          std::string text = part["text"].get<std::string>();
          parts.word(MOERT_CHAT_TEXT);
          parts.word(~0u);
          parts.word(static_cast<uint32_t>(text.size()));
          parts.padded(text);
        } else {
          auto id = tokenRef(part, where);
          if (!id) {
            return id.takeError();
          }
          parts.word(MOERT_CHAT_TOKEN);
          parts.word(static_cast<uint32_t>(*id));
          parts.word(0);
        }
        ++count;
      }
      return llvm::Error::success();
    };
    struct Slot {
      moert_chat_slot slot;
      const char *role, *part;
    };
    const Slot slots[] = {
        {MOERT_CHAT_SYSTEM_PREFIX, "system", "prefix"},
        {MOERT_CHAT_SYSTEM_SUFFIX, "system", "suffix"},
        {MOERT_CHAT_USER_PREFIX, "user", "prefix"},
        {MOERT_CHAT_USER_SUFFIX, "user", "suffix"},
        {MOERT_CHAT_ASSISTANT_PREFIX, "assistant", "prefix"},
        {MOERT_CHAT_ASSISTANT_SUFFIX, "assistant", "suffix"},
    };
    if (llvm::Error err =
            add(MOERT_CHAT_BEGIN, chat.value("begin", json()), "begin")) {
      return std::move(err);
    }
    for (const Slot &s : slots) {
      const json &role = chat.contains(s.role) ? chat[s.role] : json::object();
      if (llvm::Error err = add(s.slot, role.value(s.part, json()),
                                std::string(s.role) + "." + s.part)) {
        return std::move(err);
      }
    }
    if (chat.contains("default_system")) {
      json text = json::array({{{"text", chat["default_system"]}}});
      if (llvm::Error err =
              add(MOERT_CHAT_DEFAULT_SYSTEM, text, "default_system")) {
        return std::move(err);
      }
    }
    BlobWriter out;
    out.word(count);
    return out.bytes + parts.bytes;
  }

private:
  const json &section;
  const Tokenizer &tokenizer;
  int64_t modelVocab;
};

} // namespace

llvm::Expected<std::string> findTokenizerFile(const TextOptions &options) {
  if (!options.tokenizerPath.empty()) {
    if (!llvm::sys::fs::exists(options.tokenizerPath)) {
      return error("--tokenizer=" + options.tokenizerPath + ": no such file");
    }
    return options.tokenizerPath;
  }
  std::vector<std::string> names{"tokenizer.json"};
  if (options.section && options.section->contains("tokenizer")) {
    names = (*options.section)["tokenizer"].get<std::vector<std::string>>();
  }
  for (const std::string &name : names) {
    llvm::SmallString<256> path(options.modelDir.empty() ? "."
                                                         : options.modelDir);
    llvm::sys::path::append(path, name);
    if (llvm::sys::fs::exists(path)) {
      return std::string(path);
    }
  }
  return std::string();
}

llvm::Expected<std::map<std::string, uint32_t>>
tiktokenSpecialTokens(const TextOptions &options) {
  std::map<std::string, uint32_t> special;
  if (!options.section || !options.section->contains("tiktoken_special")) {
    return special;
  }
  try {
    special = (*options.section)["tiktoken_special"]
                  .get<std::map<std::string, uint32_t>>();
  } catch (const json::exception &e) {
    return error(llvm::Twine("text.tiktoken_special: ") + e.what());
  }
  return special;
}

llvm::Expected<std::optional<std::string>>
buildTextBlob(const TextOptions &options, std::vector<std::string> &notes) {
  auto path = findTokenizerFile(options);
  if (!path) {
    return path.takeError();
  }
  if (path->empty()) {
    notes.push_back("no tokenizer next to the checkpoint (pass "
                    "--tokenizer=FILE): the executable takes token ids "
                    "(--tokens), not text");
    return std::nullopt;
  }
  auto special = tiktokenSpecialTokens(options);
  if (!special) {
    return special.takeError();
  }
  auto tokenizer = readTokenizerFile(*path, *special);
  if (!tokenizer) {
    return tokenizer.takeError();
  }
  if (static_cast<int64_t>(tokenizer->texts.size()) > options.modelVocab) {
    return error(*path + ": " + tokenizer->summary + " has more tokens than " +
                 "the model's vocabulary of " +
                 llvm::Twine(options.modelVocab) +
                 ": it is not this model's tokenizer");
  }
  BlobWriter body;
  body.section(MOERT_TEXT_TOKENIZER, serializeTokenizer(*tokenizer));
  json empty = json::object();
  const json &section = options.section ? *options.section : empty;
  try {
    SectionReader reader(section, *tokenizer, options.modelVocab);
    auto generation = reader.generation();
    if (!generation) {
      return generation.takeError();
    }
    body.section(MOERT_TEXT_GENERATION, *generation);
    auto chat = reader.chat();
    if (!chat) {
      return chat.takeError();
    }
    if (!chat->empty()) {
      body.section(MOERT_TEXT_CHAT, *chat);
    }
  } catch (const json::exception &e) {
    return error(llvm::Twine("the family description's text section: ") +
                 e.what());
  }
  notes.push_back("tokenizer: " + tokenizer->summary);
  return finish(body);
}

std::string textBlobOfTokenizer(const Tokenizer &tokenizer) {
  BlobWriter body;
  body.section(MOERT_TEXT_TOKENIZER, serializeTokenizer(tokenizer));
  return finish(body);
}

} // namespace moe::frontend
