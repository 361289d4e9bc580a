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

struct GpuScheduleOptions {
  /// Threads of every GPU block (the description's gpu.block_threads).
  int threads = 128;
  /// When > 0, a long reduction (a constant extent of at least 8 chunks)
  /// is split into chunks of this many elements summed by threads of
  /// their own (Halide's rfactor), and the chunks' partial results
  /// reduced after: for one-token kernels, whose projections would
  /// otherwise give the GPU only one thread per output feature.
  int splitReductions = 0;
  /// Runs the GPU loops on the host instead: blocks in parallel, a block's
  /// threads serially, single-thread stages serially. The same Funcs at
  /// the same levels, split the same way: the kernel tests check the GPU
  /// schedules' structure with it on a machine without a GPU.
  bool onHost = false;
};

/// Schedules every Func the pipeline of `outputs` computes for the GPU:
///   - materialised at root: the outputs, every Func with an update
///     definition (a reduction), and the Funcs named in `materialise`
///     (results the CPU schedules also compute once, such as a norm feeding
///     a projection, and helpers an algorithm computes at root itself);
///   - everything else inline into its consumers;
///   - each stage of a root Func: its pure dimensions fused into one loop
///     (innermost fastest, so neighbouring threads touch neighbouring
///     elements) split into blocks of `threads` GPU threads; a reduction
///     runs serially within its thread (or in chunks, see
///     splitReductions); a stage with no pure dimension (a scan, the
///     buckets of a counting sort) runs on one GPU thread.
/// No Func may have been given a CPU loop schedule (split, vectorize,
/// parallel) before: the schedules replace, they do not amend.
void scheduleForGpu(const std::vector<Halide::Func> &outputs,
                    const std::set<std::string> &materialise,
                    const GpuScheduleOptions &options);

} // namespace mlir::moe::gpu

#endif // MOE_TARGETS_CUDA_KERNELS_GPUSCHEDULE_H
