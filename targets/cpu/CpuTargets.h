//===- CpuTargets.h - The CPU targets moec knows ----------------*- C++ -*-===//

#ifndef MOE_TARGETS_CPU_CPUTARGETS_H
#define MOE_TARGETS_CPU_CPUTARGETS_H

#include "targets/common/TargetDescription.h"

#include "llvm/Support/Error.h"

namespace mlir::moe::cpu {

/// Every CPU target, `host` first (resolved to this machine's features).
const std::vector<TargetDescription> &cpuTargets();

/// The target called `name`; an error lists the known ones.
llvm::Expected<TargetDescription> lookupCpuTarget(llvm::StringRef name);

} // namespace mlir::moe::cpu

#endif // MOE_TARGETS_CPU_CPUTARGETS_H
