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
#include "frontends/family/Recognizer.h"

#include "llvm/Support/Error.h"

#include <memory>
#include <optional>
#include <string>

namespace moe::frontend {

struct LoadOptions {
  /// A built-in family name, or the path of a description file; empty to
  /// detect the family from the checkpoint's tensor names.
  std::string family;
};

struct LoadedModel {
  std::unique_ptr<TensorSource> tensors;
  ModelDescription description;
  /// The description it was recognised with (its "text" section describes
  /// the tokenizer and chat format).
  FamilyDescription family;
  /// The directory of the publisher's files.
  std::string modelDir;
  /// The tokenizer, chat format and sampling defaults the executable embeds
  /// (frontends/text/TextBlob.h); none when the model has no tokenizer.
  std::optional<std::string> textBlob;
  /// Every file the model was read from: the checkpoint (an index and its
  /// shards), config.json, a family description file and the tokenizer, in
  /// that order; the build manifest records each one's size and hash.
  std::vector<std::string> inputFiles;
};

/// A built-in family by name, or a description file.
llvm::Expected<FamilyDescription> resolveFamily(llvm::StringRef nameOrPath);

/// Loads `path`: a directory holding the publisher's files, or a weights
/// file (whose directory may hold config.json). Errors name the file, the
/// key and what was expected.
llvm::Expected<LoadedModel> loadModel(llvm::StringRef path,
                                      const LoadOptions &options);

} // namespace moe::frontend

#endif // MOE_FRONTENDS_FAMILY_LOADMODEL_H
