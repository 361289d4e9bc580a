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

#include <cstdint>
#include <optional>

namespace Halide {
struct Target;
} // namespace Halide

namespace mlir::moe {

/// This machine as Halide should see it: Halide's detection, without JIT,
/// and without AVX512_SapphireRapids on a CPU that lacks AVX512-FP16
/// (Halide 14 infers it from VNNI + BF16, which AMD Zen 4 also has; LLVM
/// then emits FP16 instructions that fault there).
const Halide::Target &hostHalideTarget();

/// `host` first, then every built-in description.
const std::vector<TargetDescription> &builtinTargets();

/// The target called `nameOrPath`: a built-in name, or the path of a
/// description file. The error lists the known names.
llvm::Expected<TargetDescription> lookupTarget(llvm::StringRef nameOrPath);

/// CUDA's PTX assembler: on PATH, or where CUDA installs it
/// (/usr/local/cuda/bin); nullopt when neither has it.
std::optional<std::string> findPtxas();

/// What `moec targets` prints: every target, what it needs installed and
/// whether it is; `runtimeStatus` says whether its runtime is built.
std::string describeTargets(
    llvm::function_ref<std::string(const TargetDescription &)> runtimeStatus);

/// The features of a Halide target string as bit words, feature f at bit
/// f % 64 of word f / 64: the form halide_can_use_target_features() takes,
/// so an executable can check at start that the CPU has its kernels'
/// features.
std::vector<uint64_t> halideFeatureWords(llvm::StringRef halideTarget);

/// Whether this machine runs code of `halideTarget` natively: same
/// architecture, every feature present.
bool runsNatively(const std::string &halideTarget);

/// Whether this machine runs every kernel of `target` natively, those with
/// int8 dot products included.
bool runsNatively(const TargetDescription &target);

/// The Halide target of `target`'s kernels that compute int8 dot products:
/// its own plus `int8_dot.halide_features`.
std::string int8HalideTarget(const TargetDescription &target);

/// The program `name` runs: found on PATH, or, for a path, if it can be
/// executed.
std::optional<std::string> findTool(llvm::StringRef name);

} // namespace mlir::moe

#endif // MOE_TARGETS_COMMON_TARGETREGISTRY_H
