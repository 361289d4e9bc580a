//===- GpuSchedule.h - Schedules a kernel's pipeline for a GPU --*- C++ -*-===//
//
// The GPU targets share the CPU targets' algorithms (targets/cpu/kernels/
// Algorithms.h) and replace their schedules: every stage runs on the
// device, so weights, activations and caches never leave it.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_TARGETS_CUDA_KERNELS_GPUSCHEDULE_H
#define MOE_TARGETS_CUDA_KERNELS_GPUSCHEDULE_H

#include <Halide.h>

#include <set>
#include <string>
#include <vector>

namespace mlir::moe::gpu {

/// Schedules every Func the pipeline of `outputs` computes for the GPU:
///   - materialised at root: the outputs, every Func with an update
///     definition (a reduction), and the Funcs named in `materialise`
///     (results the CPU schedules also compute once, such as a norm feeding
///     a projection, and helpers an algorithm computes at root itself);
///   - everything else inline into its consumers;
///   - each stage of a root Func: its pure dimensions fused into one loop
///     (innermost fastest, so neighbouring threads touch neighbouring
///     elements) split into blocks of `threads` GPU threads; a reduction
///     runs serially within its thread; a stage with no pure dimension (a
///     scan, the buckets of a counting sort) runs on one GPU thread.
/// No Func may have been given a CPU loop schedule (split, vectorize,
/// parallel) before: the schedules replace, they do not amend.
void scheduleForGpu(const std::vector<Halide::Func> &outputs,
                    const std::set<std::string> &materialise, int threads);

} // namespace mlir::moe::gpu

#endif // MOE_TARGETS_CUDA_KERNELS_GPUSCHEDULE_H
