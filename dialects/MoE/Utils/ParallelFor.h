//===- ParallelFor.h - A loop on every core, no thread left ---*- C++ -*-===//
//
// The compile-time number crunching (quantizing weights, GPTQ's factors,
// calibration sums) runs on every core through this one loop.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_DIALECTS_MOE_UTILS_PARALLELFOR_H
#define MOE_DIALECTS_MOE_UTILS_PARALLELFOR_H

#include <cstdint>
#include <functional>

namespace mlir::moe {

/// Runs `body(i)` for every i in [0, n) on every core, handing out indices
/// in order, and returns when all are done. No thread outlives the call:
/// moec later forks the C compiler, which is only safe in a process without
/// other threads (so not llvm::parallelFor, whose pool lives on).
void parallelFor(int64_t n, const std::function<void(int64_t)> &body);

} // namespace mlir::moe

#endif // MOE_DIALECTS_MOE_UTILS_PARALLELFOR_H
