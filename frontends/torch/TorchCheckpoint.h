//===- TorchCheckpoint.h - Tensors of a torch.save zip file -----*- C++ -*-===//
//
// Reads `pytorch_model.bin` / `*.pt` files written by torch.save (the zip
// format, the default since torch 1.6): a zip archive holding `data.pkl`,
// the pickled object, and one member per storage under `data/`. The pickle
// goes through the restricted unpickler (Pickle.h), so nothing in the file
// can run code.
//
// The object is a state dict (a dict of tensors), or a dict that holds one
// under a key such as "model" next to other entries (a training
// checkpoint: optimizer state, step, configs). Entries that hold no tensors
// become metadata, as JSON text, e.g. metadata()["model_cfg"].
//
// Tensors are used in place: each must be a contiguous view inside its
// storage, which must match its declared size. Tensors moec cannot use
// (non-contiguous views, complex128) are left out and listed in notes().
//
//===----------------------------------------------------------------------===//

#ifndef MOE_FRONTENDS_TORCH_TORCHCHECKPOINT_H
#define MOE_FRONTENDS_TORCH_TORCHCHECKPOINT_H

#include "frontends/checkpoint/TensorSource.h"

#include "llvm/Support/Error.h"

#include <memory>

namespace moe::frontend {

class TorchCheckpoint : public MappedTensorSource {
public:
  /// Maps and validates the file at `path`.
  static llvm::Expected<std::unique_ptr<TorchCheckpoint>>
  open(llvm::StringRef path);

  /// Validates `bytes`, which must outlive the result; `name` stands for
  /// the path in messages.
  static llvm::Expected<std::unique_ptr<TorchCheckpoint>>
  parse(llvm::ArrayRef<uint8_t> bytes, llvm::StringRef name);

  /// True when `bytes` start like a torch.save file of either format.
  static bool looksLikeTorchSave(llvm::ArrayRef<uint8_t> bytes);

  const std::string &path() const override { return filePath; }
  llvm::ArrayRef<TensorInfo> tensors() const override { return all; }
  const std::map<std::string, std::string> &metadata() const override {
    return meta;
  }
  llvm::ArrayRef<std::string> notes() const override { return readNotes; }

private:
  TorchCheckpoint() = default;
  std::string filePath;
  std::vector<TensorInfo> all;
  std::map<std::string, std::string> meta;
  std::vector<std::string> readNotes;
};

} // namespace moe::frontend

#endif // MOE_FRONTENDS_TORCH_TORCHCHECKPOINT_H
