//===- TargetRegistry.h - The targets moec compiles for ---------*- C++ -*-===//
//
// The built-in target descriptions (targets/<t>/*.json, embedded when moec
// is built; the folders are listed in targets/CMakeLists.txt) and `host`,
// this machine: the built-in description of its architecture with every
// ISA extension Halide detects.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_TARGETS_COMMON_TARGETREGISTRY_H
#define MOE_TARGETS_COMMON_TARGETREGISTRY_H

#include "targets/common/TargetDescription.h"

#include "llvm/ADT/STLFunctionalExtras.h"

#include <optional>

namespace mlir::moe {

/// `host` first, then every built-in description.
const std::vector<TargetDescription> &builtinTargets();

/// The target called `nameOrPath`: a built-in name, or the path of a
/// description file. The error lists the known names.
llvm::Expected<TargetDescription> lookupTarget(llvm::StringRef nameOrPath);

/// What `moec targets` prints: every target, what it needs installed and
/// whether it is; `runtimeStatus` says whether its runtime is built.
std::string describeTargets(
    llvm::function_ref<std::string(const TargetDescription &)> runtimeStatus);

/// The program `name` runs: found on PATH, or, for a path, if it can be
/// executed.
std::optional<std::string> findTool(llvm::StringRef name);

} // namespace mlir::moe

#endif // MOE_TARGETS_COMMON_TARGETREGISTRY_H
