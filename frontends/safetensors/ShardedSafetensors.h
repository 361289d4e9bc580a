//===- ShardedSafetensors.h - A checkpoint split over shards ----*- C++ -*-===//
//
// Large Hugging Face checkpoints are split into model-0000N-of-0000M
// .safetensors files with a model.safetensors.index.json whose weight_map
// names the shard of every tensor. This source opens every shard named
// there and serves their tensors as one checkpoint, after checking that
// the index and the shards agree exactly: every mapped tensor is in its
// shard, no tensor is in two shards, no shard holds an unmapped tensor.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_FRONTENDS_SAFETENSORS_SHARDEDSAFETENSORS_H
#define MOE_FRONTENDS_SAFETENSORS_SHARDEDSAFETENSORS_H

#include "frontends/safetensors/SafetensorsReader.h"

namespace moe::frontend {

class ShardedSafetensors : public TensorSource {
public:
  /// Opens the index at `indexPath` and the shards beside it.
  static llvm::Expected<std::unique_ptr<ShardedSafetensors>>
  open(llvm::StringRef indexPath);

  const std::string &path() const override { return indexPath; }
  std::vector<std::string> files() const override;
  llvm::ArrayRef<TensorInfo> tensors() const override { return all; }
  const std::map<std::string, std::string> &metadata() const override {
    return meta;
  }
  llvm::ArrayRef<std::string> notes() const override { return readNotes; }

private:
  ShardedSafetensors() = default;
  std::string indexPath;
  std::vector<std::unique_ptr<SafetensorsFile>> shards;
  std::vector<TensorInfo> all;
  std::map<std::string, std::string> meta;
  std::vector<std::string> readNotes;
};

} // namespace moe::frontend

#endif // MOE_FRONTENDS_SAFETENSORS_SHARDEDSAFETENSORS_H
