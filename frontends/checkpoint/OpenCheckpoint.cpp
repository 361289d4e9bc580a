//===- OpenCheckpoint.cpp - Open a weights file by what it holds ----------===//

#include "frontends/checkpoint/OpenCheckpoint.h"

#include "frontends/checkpoint/MappedFile.h"
#include "frontends/safetensors/SafetensorsReader.h"
#include "frontends/safetensors/ShardedSafetensors.h"
#include "frontends/torch/TorchCheckpoint.h"

namespace moe::frontend {

namespace {

/// A reader's result as the interface every caller uses.
template <typename File>
llvm::Expected<std::unique_ptr<TensorSource>>
asSource(llvm::Expected<std::unique_ptr<File>> file) {
  if (!file) {
    return file.takeError();
  }
  return std::unique_ptr<TensorSource>(std::move(*file));
}

} // namespace

llvm::Expected<std::unique_ptr<TensorSource>>
openCheckpoint(llvm::StringRef path) {
  if (path.ends_with(".safetensors.index.json")) {
    return asSource(ShardedSafetensors::open(path));
  }
  // Mapped once: the first bytes choose the reader, which keeps the mapping.
  auto mapping = MappedFile::open(path);
  if (!mapping) {
    return mapping.takeError();
  }
  if (TorchCheckpoint::looksLikeTorchSave((*mapping)->bytes())) {
    return asSource(
        MappedTensorSource::fromMapping<TorchCheckpoint>(std::move(*mapping)));
  }
  return asSource(
      MappedTensorSource::fromMapping<SafetensorsFile>(std::move(*mapping)));
}

} // namespace moe::frontend
