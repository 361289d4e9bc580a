//===- Tokenize.cpp - `moec tokenize`: the runtime's tokenizer, here ------===//
//
// Runs the tokenizer a compiled model embeds (the runtime's C code, on the
// blob moec would embed), so its ids can be checked against other
// tokenizers without compiling a model.
//
//===----------------------------------------------------------------------===//

#include "compiler/Driver/Driver.h"

#include "frontends/family/LoadModel.h"
#include "frontends/text/TextBlob.h"

#include "moert/text.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/raw_ostream.h"

#include <chrono>

namespace mlir::moe {
namespace {

namespace fe = ::moe::frontend;

LogicalResult fail(const llvm::Twine &message) {
  llvm::errs() << "moec: error: " << message << "\n";
  return failure();
}

/// The text blob for `path`: a tokenizer file, or a model directory (its
/// family's tokenizer and chat format).
FailureOr<std::string> blobFor(const TokenizeOptions &options) {
  fe::TextOptions text;
  std::optional<fe::FamilyDescription> family;
  std::vector<std::string> notes;
  if (llvm::sys::fs::is_directory(options.path)) {
    fe::LoadOptions load;
    load.family = options.family;
    auto model = fe::loadModel(options.path, load);
    if (!model) {
      return fail(llvm::toString(model.takeError()));
    }
    family = model->family;
    text.modelDir = model->modelDir;
    text.modelVocab = model->description.vocab;
    text.tokenizerPath = options.tokenizerPath;
  } else {
    if (!options.family.empty()) {
      auto found = fe::resolveFamily(options.family);
      if (!found) {
        return fail(llvm::toString(found.takeError()));
      }
      family = *found;
    }
    text.tokenizerPath = options.path;
    text.modelVocab = int64_t(1) << 24;
  }
  if (family && family->root.contains("text")) {
    text.section = &family->root["text"];
  }
  auto blob = fe::buildTextBlob(text, notes);
  if (!blob) {
    return fail(llvm::toString(blob.takeError()));
  }
  if (!*blob) {
    return fail(options.path + ": no tokenizer found (expected tokenizer.json "
                               "or the family's tokenizer file)");
  }
  return **blob;
}

/// Texts to encode: the text argument, the file, or the file's
/// NUL-separated records (--batch).
FailureOr<std::vector<std::string>> inputs(const TokenizeOptions &options) {
  if (options.file.empty()) {
    return std::vector<std::string>{options.text};
  }
  auto buffer = llvm::MemoryBuffer::getFileOrSTDIN(options.file);
  if (!buffer) {
    return fail(options.file + ": " + buffer.getError().message());
  }
  llvm::StringRef content = (*buffer)->getBuffer();
  if (!options.batch) {
    return std::vector<std::string>{content.str()};
  }
  // Texts are NUL-separated (they may hold newlines); id lists are lines.
  llvm::SmallVector<llvm::StringRef> records;
  content.split(records, options.decode ? '\n' : '\0', -1,
                /*KeepEmpty=*/true);
  if (!records.empty() && records.back().empty()) {
    records.pop_back(); // a trailing separator ends the last record
  }
  std::vector<std::string> out;
  for (llvm::StringRef record : records) {
    out.push_back(record.str());
  }
  return out;
}

LogicalResult decode(const moert_text_interface &text, llvm::StringRef ids,
                     bool hex) {
  moert_detokenizer decoder;
  moert_detokenizer_init(&decoder, text.tokenizer, /*skip_special=*/0);
  moert_text out = {};
  llvm::SmallVector<llvm::StringRef> parts;
  ids.trim().split(parts, ',', -1, /*KeepEmpty=*/false);
  moert_status_t status = MOERT_STATUS_OK;
  for (llvm::StringRef part : parts) {
    int32_t id;
    if (part.trim().getAsInteger(10, id) || id < 0 ||
        id >= moert_tokenizer_vocab_size(text.tokenizer)) {
      moert_text_free(&out);
      return fail("--decode: '" + part + "' is not a token id below " +
                  llvm::Twine(moert_tokenizer_vocab_size(text.tokenizer)));
    }
    status = moert_detokenizer_push(&decoder, id, &out);
  }
  if (status == MOERT_STATUS_OK) {
    status = moert_detokenizer_flush(&decoder, &out);
  }
  llvm::StringRef result(out.data ? out.data : "", out.length);
  if (hex) {
    llvm::outs() << llvm::toHex(result, /*LowerCase=*/true) << "\n";
  } else {
    llvm::outs() << result;
  }
  moert_text_free(&out);
  return success(status == MOERT_STATUS_OK);
}

} // namespace

LogicalResult runTokenize(const TokenizeOptions &options) {
  FailureOr<std::string> blob = blobFor(options);
  if (failed(blob)) {
    return failure();
  }
  moert_text_interface text;
  char error[512] = "";
  if (moert_text_interface_open(blob->data(), blob->size(), &text, error,
                                sizeof(error)) != MOERT_STATUS_OK) {
    return fail(llvm::Twine("the tokenizer does not load: ") + error);
  }
  auto texts = inputs(options);
  if (failed(texts)) {
    moert_text_interface_close(&text);
    return failure();
  }
  LogicalResult result = success();
  if (options.decode) {
    for (const std::string &ids : *texts) {
      if (failed(decode(text, ids, options.batch))) {
        result = failure();
      }
    }
    moert_text_interface_close(&text);
    return result;
  }
  moert_token_list ids = {};
  size_t bytes = 0, tokens = 0;
  auto start = std::chrono::steady_clock::now();
  for (const std::string &input : *texts) {
    ids.count = 0;
    if (moert_tokenizer_encode(text.tokenizer, input.data(), input.size(),
                               !options.noSpecial, &ids) != MOERT_STATUS_OK) {
      result = fail("out of memory while encoding");
      break;
    }
    bytes += input.size();
    tokens += ids.count;
    if (options.speed) {
      continue;
    }
    for (size_t i = 0; i < ids.count; ++i) {
      llvm::outs() << (i ? "," : "") << ids.ids[i];
    }
    llvm::outs() << "\n";
  }
  double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  if (options.speed && succeeded(result)) {
    llvm::outs() << llvm::formatv(
        "encoded {0} bytes into {1} tokens in {2:f3} s: {3:f2} MB/s\n", bytes,
        tokens, seconds, seconds > 0 ? bytes / seconds / 1e6 : 0.0);
  }
  moert_token_list_free(&ids);
  moert_text_interface_close(&text);
  return result;
}

} // namespace mlir::moe
