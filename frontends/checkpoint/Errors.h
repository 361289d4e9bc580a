//===- Errors.h - How frontends report failures -----------------*- C++ -*-===//
//
// Frontend failures are user errors (a bad file, a bad flag), reported as
// llvm::Error with a message that already names the file and the key.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_FRONTENDS_CHECKPOINT_ERRORS_H
#define MOE_FRONTENDS_CHECKPOINT_ERRORS_H

#include "llvm/Support/Error.h"

namespace moe::frontend {

/// An error carrying `message` as is.
inline llvm::Error makeError(const llvm::Twine &message) {
  return llvm::createStringError(message);
}

} // namespace moe::frontend

#endif // MOE_FRONTENDS_CHECKPOINT_ERRORS_H
