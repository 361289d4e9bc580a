//===- TensorSource.cpp - Named tensors of a checkpoint -------------------===//

#include "frontends/checkpoint/TensorSource.h"

#include <algorithm>

namespace moe::frontend {

const TensorInfo *TensorSource::find(llvm::StringRef name) const {
  llvm::ArrayRef<TensorInfo> all = tensors();
  auto it = std::lower_bound(
      all.begin(), all.end(), name,
      [](const TensorInfo &t, llvm::StringRef n) { return t.name < n; });
  if (it == all.end() || it->name != name) {
    return nullptr;
  }
  return &*it;
}

} // namespace moe::frontend
