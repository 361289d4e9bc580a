//===- Tokenizer.cpp - Reading tokenizer files ----------------------------===//
//
// Compiled with exceptions on (nlohmann_json); none escapes.
//
//===----------------------------------------------------------------------===//

#include "frontends/text/Tokenizer.h"

#include "moert/text_format.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/Base64.h"
#include "llvm/Support/ConvertUTF.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"

#include <nlohmann/json.hpp>

#include <unordered_map>

namespace moe::frontend {
namespace {

using json = nlohmann::json;

llvm::Error error(const llvm::Twine &message) {
  return llvm::createStringError(message);
}

std::string utf8(uint32_t codePoint) {
  char buffer[UNI_MAX_UTF8_BYTES_PER_CODE_POINT];
  char *end = buffer;
  llvm::ConvertCodePointToUTF8(codePoint, end);
  return std::string(buffer, end);
}

/// GPT-2's byte-to-unicode map, inverted: the printable character that
/// stands for each byte in a byte-level vocabulary -> the byte.
const std::unordered_map<std::string, uint8_t> &unicodeToByte() {
  static const auto *table = [] {
    auto *map = new std::unordered_map<std::string, uint8_t>();
    uint32_t next = 256;
    for (uint32_t b = 0; b < 256; ++b) {
      bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) ||
                       (b >= 174 && b <= 255);
      (*map)[utf8(printable ? b : next++)] = static_cast<uint8_t>(b);
    }
    return map;
  }();
  return *table;
}

/// A byte-level vocabulary entry as raw bytes.
llvm::Expected<std::string> unmapBytes(const std::string &piece) {
  std::string bytes;
  const auto &table = unicodeToByte();
  for (size_t i = 0; i < piece.size();) {
    size_t len = llvm::getNumBytesForUTF8(piece[i]);
    auto it = table.find(piece.substr(i, len));
    if (len == 0 || it == table.end()) {
      return error("'" + piece +
                   "' is not in GPT-2's byte alphabet (a byte-level "
                   "vocabulary spells every byte as one character)");
    }
    bytes.push_back(static_cast<char>(it->second));
    i += len;
  }
  return bytes;
}

bool isBytePiece(llvm::StringRef text) {
  return text.size() == 6 && text.starts_with("<0x") && text.ends_with(">") &&
         llvm::isHexDigit(text[3]) && llvm::isHexDigit(text[4]);
}

std::string typeOf(const json &node) {
  return node.is_object() ? node.value("type", std::string()) : std::string();
}

/// `object[key]`, or null when `object` is not an object or has no `key`.
/// (operator[] of a const json with a missing key is undefined behaviour:
/// a tokenizer.json without a "decoder" read freed memory, found by
/// test/fuzz/fuzz_tokenizer.)
const json &member(const json &object, const char *key) {
  static const json null;
  if (!object.is_object()) {
    return null;
  }
  auto it = object.find(key);
  return it == object.end() ? null : *it;
}

/// A token id: a whole number in [0, 2^24). (get<uint32_t>() of 1e54 is
/// undefined behaviour, found by test/fuzz/fuzz_tokenizer.)
llvm::Expected<uint32_t> tokenId(const json &value, const std::string &what) {
  if (!value.is_number_integer() || value.get<int64_t>() < 0 ||
      value.get<int64_t>() >= (int64_t(1) << 24)) {
    return error(what +
                 ": expected a token id (an integer in [0, 16777216)), "
                 "got " +
                 value.dump());
  }
  return static_cast<uint32_t>(value.get<int64_t>());
}

/// The SentencePiece conventions a byte-fallback tokenizer.json spells out
/// in its normalizer, pre-tokenizer and decoder.
llvm::Error readMetaspaceFlags(const json &root, Tokenizer &tokenizer) {
  const std::string meta = "\xE2\x96\x81";
  auto normalizer = [&](const json &n) -> llvm::Error {
    std::string type = typeOf(n);
    if (type == "Prepend" && n.value("prepend", "") == meta) {
      tokenizer.flags |= MOERT_TOKENIZER_PREPEND_META;
    } else if (type == "Replace" &&
               member(n, "pattern").value("String", "") == " " &&
               n.value("content", "") == meta) {
      tokenizer.flags |= MOERT_TOKENIZER_SPACE_TO_META;
    } else {
      return error("normalizer '" + n.dump() +
                   "' is not supported (moec reads Prepend(\"\xE2\x96\x81\") "
                   "and Replace(\" \", \"\xE2\x96\x81\"))");
    }
    return llvm::Error::success();
  };
  const json &norm = member(root, "normalizer");
  if (typeOf(norm) == "Sequence") {
    for (const json &n : member(norm, "normalizers")) {
      if (llvm::Error err = normalizer(n)) {
        return err;
      }
    }
  } else if (!norm.is_null()) {
    if (llvm::Error err = normalizer(norm)) {
      return err;
    }
  }
  const json &pre = member(root, "pre_tokenizer");
  if (typeOf(pre) == "Metaspace") {
    if (pre.value("replacement", meta) != meta) {
      return error("pre_tokenizer Metaspace with a replacement other than "
                   "U+2581 is not supported");
    }
    tokenizer.flags |= MOERT_TOKENIZER_SPACE_TO_META;
    std::string scheme =
        pre.contains("prepend_scheme")
            ? pre["prepend_scheme"].get<std::string>()
            : (pre.value("add_prefix_space", true) ? "always" : "never");
    if (scheme == "always") {
      tokenizer.flags |= MOERT_TOKENIZER_PREPEND_META;
    } else if (scheme == "first") {
      tokenizer.flags |= MOERT_TOKENIZER_PREPEND_META_FIRST;
    } else if (scheme != "never") {
      return error("pre_tokenizer Metaspace prepend_scheme '" + scheme +
                   "' is not one of always, first, never");
    }
    if (pre.value("split", true)) {
      tokenizer.flags |= MOERT_TOKENIZER_SPLIT_META;
    }
  } else if (!pre.is_null()) {
    return error("pre_tokenizer '" + typeOf(pre) +
                 "' is not supported with a non-byte-level BPE (moec reads "
                 "Metaspace)");
  }
  // The decoder strips the space the normalizer prepended.
  const json &decoder = member(root, "decoder");
  std::vector<json> decoders;
  if (typeOf(decoder) == "Sequence") {
    decoders = member(decoder, "decoders").get<std::vector<json>>();
  } else if (!decoder.is_null()) {
    decoders.push_back(decoder);
  }
  for (const json &d : decoders) {
    std::string type = typeOf(d);
    if ((type == "Strip" && d.value("start", 0) > 0) ||
        (type == "Metaspace" &&
         d.value("prepend_scheme", "always") != "never" &&
         d.value("add_prefix_space", true))) {
      tokenizer.flags |= MOERT_TOKENIZER_STRIP_DECODED;
    }
  }
  return llvm::Error::success();
}

llvm::Error readByteLevelFlags(const json &pre, Tokenizer &tokenizer) {
  if (!pre.value("use_regex", true)) {
    return error("pre_tokenizer ByteLevel with use_regex false is not "
                 "supported (moec splits words with the GPT-2 regex)");
  }
  if (pre.value("add_prefix_space", false)) {
    tokenizer.flags |= MOERT_TOKENIZER_ADD_PREFIX_SPACE;
  }
  return llvm::Error::success();
}

llvm::Expected<Tokenizer> parseHuggingFace(const json &root) {
  const json &model = root.at("model");
  std::string modelType = model.value("type", "BPE");
  if (modelType != "BPE") {
    return error("model.type '" + modelType +
                 "' is not supported (moec reads BPE tokenizers)");
  }
  for (const char *key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (model.contains(key) && model[key].is_string() &&
        !model[key].get<std::string>().empty()) {
      return error(std::string("model.") + key + " is not supported");
    }
  }
  Tokenizer tokenizer;
  const json &pre = member(root, "pre_tokenizer");
  bool byteLevel = typeOf(pre) == "ByteLevel";
  tokenizer.kind =
      byteLevel ? MOERT_TOKENIZER_BYTE_LEVEL : MOERT_TOKENIZER_BYTE_FALLBACK;
  if (byteLevel) {
    if (llvm::Error err = readByteLevelFlags(pre, tokenizer)) {
      return std::move(err);
    }
    if (!member(root, "normalizer").is_null()) {
      return error("a normalizer with a ByteLevel pre_tokenizer is not "
                   "supported");
    }
  } else if (llvm::Error err = readMetaspaceFlags(root, tokenizer)) {
    return std::move(err);
  }
  if (model.value("ignore_merges", false)) {
    tokenizer.flags |= MOERT_TOKENIZER_IGNORE_MERGES;
  }
  if (model.value("fuse_unk", false)) {
    tokenizer.flags |= MOERT_TOKENIZER_FUSE_UNK;
  }

  // Ids: the vocabulary's and the added tokens'; a gap is an empty token.
  std::vector<std::pair<std::string, uint32_t>> entries;
  for (const auto &[piece, value] : model.at("vocab").items()) {
    auto id = tokenId(value, "model.vocab['" + piece + "']");
    if (!id) {
      return id.takeError();
    }
    entries.emplace_back(piece, *id);
  }
  const json &addedTokens =
      root.contains("added_tokens") && root["added_tokens"].is_array()
          ? root["added_tokens"]
          : json::array();
  uint64_t count = 0;
  for (const auto &entry : entries) {
    count = std::max<uint64_t>(count, entry.second + 1ull);
  }
  for (const json &added : addedTokens) {
    auto id = tokenId(added.at("id"), "added_tokens[].id");
    if (!id) {
      return id.takeError();
    }
    count = std::max<uint64_t>(count, *id + 1ull);
  }
  if (count == 0 || count > (1u << 24)) {
    return error("model.vocab has " + llvm::Twine(count) +
                 " ids (expected 1 to 16777216)");
  }
  tokenizer.texts.resize(count);
  tokenizer.tokenFlags.assign(count, 0);
  std::unordered_map<std::string, uint32_t> idOfPiece;
  for (const auto &[piece, id] : entries) {
    idOfPiece.emplace(piece, id);
    if (byteLevel) {
      auto bytes = unmapBytes(piece);
      if (!bytes) {
        return error("model.vocab: " + llvm::toString(bytes.takeError()));
      }
      tokenizer.texts[id] = *bytes;
    } else {
      tokenizer.texts[id] = piece;
      if (model.value("byte_fallback", false) && isBytePiece(piece)) {
        tokenizer.tokenFlags[id] |= MOERT_TOKEN_BYTE;
      }
    }
  }
  for (const json &added : addedTokens) {
    auto checked = tokenId(added.at("id"), "added_tokens[].id");
    if (!checked) {
      return checked.takeError();
    }
    uint32_t id = *checked;
    tokenizer.texts[id] = added.at("content").get<std::string>();
    uint32_t flags = 0;
    if (added.value("special", false)) {
      flags |= MOERT_ADDED_SPECIAL;
      tokenizer.tokenFlags[id] |= MOERT_TOKEN_SPECIAL;
      tokenizer.tokenFlags[id] &= ~MOERT_TOKEN_BYTE;
    }
    if (added.value("lstrip", false)) {
      flags |= MOERT_ADDED_LSTRIP;
    }
    if (added.value("rstrip", false)) {
      flags |= MOERT_ADDED_RSTRIP;
    }
    tokenizer.added.push_back({id, flags});
  }
  if (model.contains("unk_token") && model["unk_token"].is_string()) {
    auto it = idOfPiece.find(model["unk_token"].get<std::string>());
    if (it == idOfPiece.end()) {
      return error("model.unk_token '" + model["unk_token"].get<std::string>() +
                   "' is not in model.vocab");
    }
    tokenizer.unkId = static_cast<int32_t>(it->second);
  }

  // Merges: "left right" strings, or [left, right] pairs in newer files.
  const json &merges = model.at("merges");
  for (size_t i = 0; i < merges.size(); ++i) {
    std::string left, right;
    if (merges[i].is_string()) {
      std::string text = merges[i].get<std::string>();
      size_t space = text.find(' ', 1);
      if (space == std::string::npos) {
        return error("model.merges[" + llvm::Twine(i) + "] '" + text +
                     "' is not two pieces separated by a space");
      }
      left = text.substr(0, space);
      right = text.substr(space + 1);
    } else {
      left = merges[i].at(0).get<std::string>();
      right = merges[i].at(1).get<std::string>();
    }
    auto l = idOfPiece.find(left), r = idOfPiece.find(right),
         m = idOfPiece.find(left + right);
    if (l == idOfPiece.end() || r == idOfPiece.end() || m == idOfPiece.end()) {
      return error("model.merges[" + llvm::Twine(i) + "] ('" + left + "', '" +
                   right + "') names a piece that is not in model.vocab");
    }
    tokenizer.merges.push_back(
        {l->second, r->second, m->second, static_cast<uint32_t>(i)});
  }
  tokenizer.summary =
      (byteLevel ? "byte-level BPE, " : "BPE with byte fallback, ") +
      std::to_string(count) + " tokens, " + std::to_string(merges.size()) +
      " merges";
  return tokenizer;
}

} // namespace

int32_t Tokenizer::find(llvm::StringRef text) const {
  for (size_t id = 0; id < texts.size(); ++id) {
    if (texts[id] == text) {
      return static_cast<int32_t>(id);
    }
  }
  return -1;
}

llvm::Expected<Tokenizer> readHuggingFaceTokenizer(llvm::StringRef path) {
  auto buffer = llvm::MemoryBuffer::getFile(path);
  if (!buffer) {
    return error(path + ": " + buffer.getError().message());
  }
  return parseHuggingFaceTokenizer((*buffer)->getBuffer(), path);
}

llvm::Expected<Tokenizer> parseHuggingFaceTokenizer(llvm::StringRef text,
                                                    llvm::StringRef path) {
  try {
    json root = json::parse(text.begin(), text.end());
    auto tokenizer = parseHuggingFace(root);
    if (!tokenizer) {
      return error(path + ": " + llvm::toString(tokenizer.takeError()));
    }
    tokenizer->summary =
        llvm::sys::path::filename(path).str() + " (" + tokenizer->summary + ")";
    return tokenizer;
  } catch (const json::exception &e) {
    return error(path + ": not a tokenizer.json: " + e.what());
  }
}

llvm::Expected<Tokenizer>
readTiktokenRanks(llvm::StringRef path,
                  const std::map<std::string, uint32_t> &special) {
  auto buffer = llvm::MemoryBuffer::getFile(path);
  if (!buffer) {
    return error(path + ": " + buffer.getError().message());
  }
  return parseTiktokenRanks((*buffer)->getBuffer(), path, special);
}

llvm::Expected<Tokenizer>
parseTiktokenRanks(llvm::StringRef contents, llvm::StringRef path,
                   const std::map<std::string, uint32_t> &special) {
  Tokenizer tokenizer;
  tokenizer.kind = MOERT_TOKENIZER_BYTE_LEVEL;
  llvm::SmallVector<llvm::StringRef> lines;
  contents.split(lines, '\n', -1, /*KeepEmpty=*/false);
  for (size_t i = 0; i < lines.size(); ++i) {
    auto [encoded, rankText] = lines[i].trim().split(' ');
    uint32_t rank;
    std::vector<char> bytes;
    if (rankText.trim().getAsInteger(10, rank) || rank >= (1u << 24)) {
      return error(path + ":" + llvm::Twine(i + 1) +
                   ": expected '<base64 token> <rank>'");
    }
    if (llvm::Error err = llvm::decodeBase64(encoded, bytes)) {
      return error(path + ":" + llvm::Twine(i + 1) + ": " +
                   llvm::toString(std::move(err)));
    }
    if (rank >= tokenizer.texts.size()) {
      tokenizer.texts.resize(rank + 1);
    }
    tokenizer.texts[rank].assign(bytes.begin(), bytes.end());
  }
  std::unordered_map<std::string, uint32_t> rankOf;
  for (size_t id = 0; id < tokenizer.texts.size(); ++id) {
    if (!tokenizer.texts[id].empty()) {
      rankOf.emplace(tokenizer.texts[id], id);
    }
  }
  for (int b = 0; b < 256; ++b) {
    if (!rankOf.count(std::string(1, static_cast<char>(b)))) {
      return error(path + ": byte " + llvm::Twine(b) +
                   " has no rank (tiktoken ranks cover every byte)");
    }
  }
  // tiktoken merges the adjacent pair whose concatenation has the lowest
  // rank: every split of a token into two tokens is a merge at its rank.
  for (size_t id = 0; id < tokenizer.texts.size(); ++id) {
    const std::string &text = tokenizer.texts[id];
    for (size_t k = 1; k < text.size(); ++k) {
      auto l = rankOf.find(text.substr(0, k)), r = rankOf.find(text.substr(k));
      if (l != rankOf.end() && r != rankOf.end()) {
        tokenizer.merges.push_back({l->second, r->second,
                                    static_cast<uint32_t>(id),
                                    static_cast<uint32_t>(id)});
      }
    }
  }
  std::sort(tokenizer.merges.begin(), tokenizer.merges.end(),
            [](const TokenizerMerge &a, const TokenizerMerge &b) {
              return std::tie(a.priority, a.left) <
                     std::tie(b.priority, b.left);
            });
  size_t ranks = rankOf.size();
  for (const auto &[text, id] : special) {
    if (id >= (1u << 24)) {
      return error("special token '" + text + "' has id " + llvm::Twine(id));
    }
    if (id >= tokenizer.texts.size()) {
      tokenizer.texts.resize(id + 1);
    }
    tokenizer.texts[id] = text;
    tokenizer.added.push_back({id, MOERT_ADDED_SPECIAL});
  }
  tokenizer.tokenFlags.assign(tokenizer.texts.size(), 0);
  for (const AddedToken &added : tokenizer.added) {
    tokenizer.tokenFlags[added.id] = MOERT_TOKEN_SPECIAL;
  }
  tokenizer.summary = llvm::sys::path::filename(path).str() +
                      " (tiktoken ranks, " + std::to_string(ranks) +
                      " tokens + " + std::to_string(special.size()) +
                      " special)";
  return tokenizer;
}

llvm::Expected<Tokenizer>
readTokenizerFile(llvm::StringRef path,
                  const std::map<std::string, uint32_t> &tiktokenSpecial) {
  if (path.ends_with(".tiktoken")) {
    return readTiktokenRanks(path, tiktokenSpecial);
  }
  return readHuggingFaceTokenizer(path);
}

} // namespace moe::frontend
