//===- TextBlob.h - The text interface compiled into a model ----*- C++ -*-===//
//
// What turns token ids into a tool people use: the tokenizer, the family's
// chat format, its stop tokens and its sampling defaults (the family
// description's "text" section; docs/family-descriptions.md), as the blob
// of moert/text_format.h that the executable embeds.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_FRONTENDS_TEXT_TEXTBLOB_H
#define MOE_FRONTENDS_TEXT_TEXTBLOB_H

#include "frontends/text/Tokenizer.h"

#include "llvm/Support/Error.h"

#include <nlohmann/json_fwd.hpp>

#include <optional>
#include <string>
#include <vector>

namespace moe::frontend {

struct TextOptions {
  /// The family description's "text" section (null: none).
  const nlohmann::json *section = nullptr;
  /// Where the publisher's files are.
  std::string modelDir;
  /// --tokenizer=FILE, instead of looking in modelDir.
  std::string tokenizerPath;
  /// The model's vocabulary: no token id may reach it.
  int64_t modelVocab = 0;
};

/// The tokenizer file to use: --tokenizer, else the first of the family's
/// "tokenizer" names present in the model directory; empty when none is.
llvm::Expected<std::string> findTokenizerFile(const TextOptions &options);

/// Reads the family's tiktoken special tokens ("tiktoken_special").
llvm::Expected<std::map<std::string, uint32_t>>
tiktokenSpecialTokens(const TextOptions &options);

/// The blob, or std::nullopt when the model comes without a tokenizer (the
/// executable then takes token ids only; a note says so). Errors name the
/// file or the description key.
llvm::Expected<std::optional<std::string>>
buildTextBlob(const TextOptions &options, std::vector<std::string> &notes);

/// The blob with only a tokenizer (for `moec tokenize`).
std::string textBlobOfTokenizer(const Tokenizer &tokenizer);

} // namespace moe::frontend

#endif // MOE_FRONTENDS_TEXT_TEXTBLOB_H
