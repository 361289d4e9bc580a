//===- Recognizer.h - Family descriptions and the recogniser ----*- C++ -*-===//
//
// A family description (JSON, see docs/family-descriptions.md) says, as
// data, how one architecture lays out its checkpoint and computes: the
// tensors of each role and their shapes, how sizes follow from shapes, the
// settings the tensors cannot show and where to take them from, and the
// variant of every step. One generic recogniser applies any description to
// a checkpoint and produces a ModelDescription; adding a variant of a known
// architecture is a new JSON file, not new C++.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_FRONTENDS_FAMILY_RECOGNIZER_H
#define MOE_FRONTENDS_FAMILY_RECOGNIZER_H

#include "frontends/checkpoint/TensorSource.h"
#include "frontends/family/ModelDescription.h"

#include "llvm/Support/Error.h"

#include <memory>
#include <nlohmann/json.hpp>

namespace moe::frontend {

/// A parsed family description. Cheap to copy.
struct FamilyDescription {
  std::string name;
  /// Where it was read from: a path or "built-in:<name>".
  std::string source;
  nlohmann::json root;
};

/// Parses description text; `source` names it in errors. Checks the
/// top-level shape (required sections and their types); the rest is checked
/// when applied, with the JSON path of any bad field.
llvm::Expected<FamilyDescription>
parseFamilyDescription(llvm::StringRef text, llvm::StringRef source);

/// Reads and parses a description file.
llvm::Expected<FamilyDescription> loadFamilyDescription(llvm::StringRef path);

/// The descriptions compiled into moec (frontends/families/*.json).
const std::vector<FamilyDescription> &builtinFamilies();

/// The names of tensors a description's `match` list needs that `tensors`
/// lacks (after prefix stripping); empty when the description matches.
std::vector<std::string> missingMatchTensors(const FamilyDescription &family,
                                             const TensorSource &tensors);

/// Applies `family` to a checkpoint. `config` is the parsed config.json
/// (null when there is none); `configPath` names it in notes. Fails with a
/// message naming the file, the key and what was expected.
llvm::Expected<ModelDescription> recognizeModel(const FamilyDescription &family,
                                                const TensorSource &tensors,
                                                const nlohmann::json *config,
                                                llvm::StringRef configPath);

} // namespace moe::frontend

#endif // MOE_FRONTENDS_FAMILY_RECOGNIZER_H
