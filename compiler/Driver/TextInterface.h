//===- TextInterface.h - The tokenizer a compiled model embeds --*- C++ -*-===//
//
// What `moec compile` embeds beside the kernels (tokenizer, chat format,
// stop tokens, sampling defaults) and `moec inspect` reports; `moec import`
// does not read it, since the IR does not depend on it.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_COMPILER_DRIVER_TEXTINTERFACE_H
#define MOE_COMPILER_DRIVER_TEXTINTERFACE_H

#include "frontends/family/LoadModel.h"

#include "llvm/Support/Error.h"

#include <string>

namespace mlir::moe {

/// Reads the tokenizer (`tokenizerPath`, or the family's files beside the
/// checkpoint) into `loaded.textBlob` and adds a note saying what it found
/// (or that the model has none) to the description's notes.
llvm::Error attachTextInterface(::moe::frontend::LoadedModel &loaded,
                                const std::string &tokenizerPath);

} // namespace mlir::moe

#endif // MOE_COMPILER_DRIVER_TEXTINTERFACE_H
