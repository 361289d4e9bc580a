//===- KernelBuilder.h - A moe.kernel as a Halide pipeline ------*- C++ -*-===//
//
// Builds the Halide pipeline of one kernel: parameters in the order of the
// kernel ABI (targets/common/KernelAbi.h), one Func per op from
// Algorithms.h, elementwise results inlined into their consumers, and every
// other result materialised with its op's schedule.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_TARGETS_CPU_KERNELS_KERNELBUILDER_H
#define MOE_TARGETS_CPU_KERNELS_KERNELBUILDER_H

#include "dialects/MoE/IR/MoEOps.h"
#include "targets/common/TargetDescription.h"

#include <Halide.h>

#include <optional>

namespace mlir::moe::cpu {

struct BuiltKernel {
  Halide::Pipeline pipeline;
  /// Inputs in ABI order; Halide appends the outputs in pipeline order,
  /// which is the ABI's output order.
  std::vector<Halide::Argument> arguments;
  /// The same inputs as objects, for binding values when JIT-running the
  /// pipeline (kernel tests): an ImageParam per buffer slot, a Param per
  /// scalar slot; the other member of each pair is unset.
  std::vector<std::pair<std::optional<Halide::ImageParam>,
                        std::optional<Halide::Param<int32_t>>>>
      inputs;
};

struct KernelBuildOptions {
  /// A GPU target's schedules with their GPU loops run on the host
  /// (GpuScheduleOptions::onHost): for the kernel tests, without a GPU.
  bool gpuLoopsOnHost = false;
};

/// Builds `kernel` for `target`. Emits a diagnostic on the kernel and fails
/// for an op or variant the target does not compile.
FailureOr<BuiltKernel> buildKernel(KernelOp kernel,
                                   const TargetDescription &target,
                                   const KernelBuildOptions &options = {});

} // namespace mlir::moe::cpu

#endif // MOE_TARGETS_CPU_KERNELS_KERNELBUILDER_H
