//===- TensorSource.h - Named tensors of a checkpoint -----------*- C++ -*-===//
//
// What a family recogniser and the weight writer need from any checkpoint
// container (safetensors, torch.save zip files):
// the tensors by name, each with dtype, shape and its bytes.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_FRONTENDS_CHECKPOINT_TENSORSOURCE_H
#define MOE_FRONTENDS_CHECKPOINT_TENSORSOURCE_H

#include "frontends/checkpoint/DType.h"
#include "frontends/checkpoint/MappedFile.h"

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/SmallVector.h"
#include "llvm/Support/Error.h"

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace moe::frontend {

/// One tensor of a checkpoint, already validated: `bytes` lies inside the
/// container and holds exactly numElements() * dtypeBits(dtype) / 8 bytes.
struct TensorInfo {
  std::string name;
  DType dtype;
  llvm::SmallVector<int64_t, 4> shape;
  llvm::ArrayRef<uint8_t> bytes;

  int64_t numElements() const {
    int64_t n = 1;
    for (int64_t d : shape) {
      n *= d;
    }
    return n;
  }
};

/// A container of named tensors. Immutable after construction.
class TensorSource {
public:
  virtual ~TensorSource() = default;
  /// The file the tensors come from, for messages.
  virtual const std::string &path() const = 0;
  /// Every file the tensors are read from (an index and its shards), for
  /// the build manifest.
  virtual std::vector<std::string> files() const { return {path()}; }
  /// All tensors, sorted by name.
  virtual llvm::ArrayRef<TensorInfo> tensors() const = 0;
  /// Free-form string metadata of the container (safetensors __metadata__;
  /// a torch checkpoint's non-tensor entries as JSON text).
  virtual const std::map<std::string, std::string> &metadata() const = 0;
  /// What the reader decided on the way, in words (e.g. where it found the
  /// state dict, which tensors it left out and why), for `moec inspect`.
  virtual llvm::ArrayRef<std::string> notes() const { return {}; }

  /// The tensor called `name`, or null.
  const TensorInfo *find(llvm::StringRef name) const;
};

/// A TensorSource whose tensors view a file mapping it owns: the container
/// formats read in place (safetensors, torch.save zip files).
class MappedTensorSource : public TensorSource {
public:
  /// Parses the mapped bytes with `File::parse(bytes, path)`; the result
  /// keeps the mapping its tensors view.
  template <typename File>
  static llvm::Expected<std::unique_ptr<File>>
  fromMapping(std::unique_ptr<MappedFile> mapping) {
    auto file = File::parse(mapping->bytes(), mapping->path());
    if (!file) {
      return file.takeError();
    }
    static_cast<MappedTensorSource &>(**file).mapping = std::move(mapping);
    return file;
  }

  /// Maps `path` and parses it as a `File`.
  template <typename File>
  static llvm::Expected<std::unique_ptr<File>> openFile(llvm::StringRef path) {
    auto mapping = MappedFile::open(path);
    if (!mapping) {
      return mapping.takeError();
    }
    return fromMapping<File>(std::move(*mapping));
  }

private:
  std::unique_ptr<MappedFile> mapping;
};

} // namespace moe::frontend

#endif // MOE_FRONTENDS_CHECKPOINT_TENSORSOURCE_H
