//===- LoadModel.h - From a model path to a ModelDescription ----*- C++ -*-===//
//
// What `moec import/compile <model>` does first: find the weights and the
// config in what the user points at, pick the family (or use the one the
// user names), and recognise the model.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_FRONTENDS_FAMILY_LOADMODEL_H
#define MOE_FRONTENDS_FAMILY_LOADMODEL_H

#include "frontends/checkpoint/TensorSource.h"
#include "frontends/family/ModelDescription.h"

#include "llvm/Support/Error.h"

#include <memory>

namespace moe::frontend {

struct LoadOptions {
  /// A built-in family name, or the path of a description file; empty to
  /// detect the family from the checkpoint's tensor names.
  std::string family;
};

struct LoadedModel {
  std::unique_ptr<TensorSource> tensors;
  ModelDescription description;
};

/// Loads `path`: a directory holding the publisher's files, or a weights
/// file (whose directory may hold config.json). Errors name the file, the
/// key and what was expected.
llvm::Expected<LoadedModel> loadModel(llvm::StringRef path,
                                      const LoadOptions &options);

} // namespace moe::frontend

#endif // MOE_FRONTENDS_FAMILY_LOADMODEL_H
