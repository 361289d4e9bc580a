//===- fuzz_tokenizer.cpp - libFuzzer target of tokenizer files and text --===//
//
// The first byte picks the format: even, a Hugging Face tokenizer.json;
// odd, tiktoken ranks. The rest is the file. A file moec refuses must be
// refused with a message naming it. A file it accepts becomes the text
// blob an executable embeds; the runtime must open that blob, encode the
// file's own bytes as a prompt (with and without special tokens) into ids
// of the vocabulary, and decode them again. See test/fuzz/README.md.
//
//===----------------------------------------------------------------------===//

#include "frontends/text/TextBlob.h"
#include "frontends/text/Tokenizer.h"
#include "test/fuzz/FuzzChecks.h"

#include "moert/text.h"
#include "moert/tokenizer.h"

namespace {

void encodeAndDecode(const moert_text_interface &text, const char *prompt,
                     size_t length, int special) {
  moert_token_list ids = {nullptr, 0, 0};
  if (moert_tokenizer_encode(text.tokenizer, prompt, length, special, &ids) ==
      MOERT_STATUS_OK) {
    int32_t vocab = moert_tokenizer_vocab_size(text.tokenizer);
    moert_detokenizer decoder;
    moert_detokenizer_init(&decoder, text.tokenizer, /*skip_special=*/0);
    moert_text out = {nullptr, 0, 0};
    for (size_t i = 0; i < ids.count; ++i) {
      if (ids.ids[i] < 0 || ids.ids[i] >= vocab) {
        abort();
      }
      moert_detokenizer_push(&decoder, ids.ids[i], &out);
    }
    moert_detokenizer_flush(&decoder, &out);
    moert_text_free(&out);
  }
  moert_token_list_free(&ids);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) {
    return 0;
  }
  bool tiktoken = data[0] & 1;
  llvm::StringRef file(reinterpret_cast<const char *>(data + 1), size - 1);
  const char *name = tiktoken ? "fuzz.tiktoken" : "fuzz.json";
  auto tokenizer =
      tiktoken ? moe::frontend::parseTiktokenRanks(file, name,
                                                   {{"<|endoftext|>", 300}})
               : moe::frontend::parseHuggingFaceTokenizer(file, name);
  if (!tokenizer) {
    moe::fuzz::expectNamedError(tokenizer.takeError(), {name});
    return 0;
  }
  std::string blob = moe::frontend::textBlobOfTokenizer(*tokenizer);
  moert_text_interface text;
  char error[256];
  if (moert_text_interface_open(blob.data(), blob.size(), &text, error,
                                sizeof error) != MOERT_STATUS_OK) {
    abort(); // moec wrote a blob its own runtime refuses
  }
  for (int special : {0, 1}) {
    encodeAndDecode(text, file.data(), file.size(), special);
  }
  moert_text_interface_close(&text);
  return 0;
}
