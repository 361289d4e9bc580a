//===- Tokenizer.h - A tokenizer as the runtime reads it --------*- C++ -*-===//
//
// Tokenizer files (Hugging Face tokenizer.json, tiktoken ranks) are read
// into one form: token texts, BPE merges by priority, added tokens. The
// runtime's C tokenizer (runtime/src/tokenizer*.c) runs it; TextBlob.h
// writes it into the executable.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_FRONTENDS_TEXT_TOKENIZER_H
#define MOE_FRONTENDS_TEXT_TOKENIZER_H

#include "llvm/Support/Error.h"

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace moe::frontend {

struct TokenizerMerge {
  uint32_t left, right, result;
  /// Lower merges first. Merge order for Hugging Face BPE; the rank of the
  /// merged token for tiktoken, where several pairs can make one token.
  uint32_t priority;
};

struct AddedToken {
  uint32_t id;
  uint32_t flags; // MOERT_ADDED_*
};

struct Tokenizer {
  uint32_t kind = 0;  // moert_tokenizer_kind
  uint32_t flags = 0; // MOERT_TOKENIZER_*
  int32_t unkId = -1;
  /// What encoding matches: raw bytes (byte-level) or the UTF-8 piece.
  std::vector<std::string> texts;
  std::vector<uint32_t> tokenFlags; // MOERT_TOKEN_*
  std::vector<TokenizerMerge> merges;
  std::vector<AddedToken> added;
  /// "tokenizer.json (byte-level BPE, 50257 tokens)", for notes.
  std::string summary;

  /// The id whose text is `text`, or -1.
  int32_t find(llvm::StringRef text) const;
};

/// Reads a Hugging Face tokenizer.json. Errors name the file and the key.
llvm::Expected<Tokenizer> readHuggingFaceTokenizer(llvm::StringRef path);
/// The same from the file's `text`; `path` names it in errors.
llvm::Expected<Tokenizer> parseHuggingFaceTokenizer(llvm::StringRef text,
                                                    llvm::StringRef path);

/// Reads tiktoken ranks ("<base64 token> <rank>" per line) and adds
/// `special` (text -> id) as special tokens; ids may lie past the ranks.
llvm::Expected<Tokenizer>
readTiktokenRanks(llvm::StringRef path,
                  const std::map<std::string, uint32_t> &special);
/// The same from the file's `text`; `path` names it in errors.
llvm::Expected<Tokenizer>
parseTiktokenRanks(llvm::StringRef contents, llvm::StringRef path,
                   const std::map<std::string, uint32_t> &special);

/// Either, by the file's name (*.json or *.tiktoken).
llvm::Expected<Tokenizer>
readTokenizerFile(llvm::StringRef path,
                  const std::map<std::string, uint32_t> &tiktokenSpecial);

} // namespace moe::frontend

#endif // MOE_FRONTENDS_TEXT_TOKENIZER_H
