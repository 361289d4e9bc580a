//===- OpenCheckpoint.cpp - Open a weights file by what it holds ----------===//

#include "frontends/checkpoint/OpenCheckpoint.h"

#include "frontends/checkpoint/MappedFile.h"
#include "frontends/safetensors/SafetensorsReader.h"
#include "frontends/safetensors/ShardedSafetensors.h"
#include "frontends/torch/TorchCheckpoint.h"

namespace moe::frontend {

llvm::Expected<std::unique_ptr<TensorSource>>
openCheckpoint(llvm::StringRef path) {
  if (path.ends_with(".safetensors.index.json")) {
    auto sharded = ShardedSafetensors::open(path);
    if (!sharded) {
      return sharded.takeError();
    }
    return std::unique_ptr<TensorSource>(std::move(*sharded));
  }
  // Peek at the first bytes through a mapping, then let the chosen reader
  // map the file itself (mappings are cheap; the bytes are not copied).
  bool torch;
  {
    auto mapping = MappedFile::open(path);
    if (!mapping) {
      return mapping.takeError();
    }
    torch = TorchCheckpoint::looksLikeTorchSave((*mapping)->bytes());
  }
  if (torch) {
    auto file = TorchCheckpoint::open(path);
    if (!file) {
      return file.takeError();
    }
    return std::unique_ptr<TensorSource>(std::move(*file));
  }
  auto file = SafetensorsFile::open(path);
  if (!file) {
    return file.takeError();
  }
  return std::unique_ptr<TensorSource>(std::move(*file));
}

} // namespace moe::frontend
