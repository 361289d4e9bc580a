//===- OpenCheckpoint.h - Open a weights file by what it holds --*- C++ -*-===//
//
// One entry point for every checkpoint container moec reads: the format is
// decided by the file's first bytes, not its name, so a `.bin` that is
// really safetensors (or a `.pt` that is a zip) reads the same.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_FRONTENDS_CHECKPOINT_OPENCHECKPOINT_H
#define MOE_FRONTENDS_CHECKPOINT_OPENCHECKPOINT_H

#include "frontends/checkpoint/TensorSource.h"

#include "llvm/Support/Error.h"

#include <memory>

namespace moe::frontend {

/// Opens `path` as the index of sharded safetensors (by its name,
/// *.safetensors.index.json), else as a torch.save file or a safetensors
/// file (by its first bytes).
llvm::Expected<std::unique_ptr<TensorSource>>
openCheckpoint(llvm::StringRef path);

} // namespace moe::frontend

#endif // MOE_FRONTENDS_CHECKPOINT_OPENCHECKPOINT_H
