//===- KernelAbi.h - How a compiled kernel is called ------------*- C++ -*-===//
//
// The calling convention between a `moe.kernel` compiled by a target and
// the host code that calls it. Both sides derive it from the kernel's
// signature with kernelAbi(), so they cannot disagree:
//
//   int32_t kernel(void *user_context, <inputs...>, <outputs...>)
//
//   inputs, in kernel-argument order:
//     tensor argument           -> one buffer (read)
//     index argument (position) -> one int32 scalar
//     KV-cache view, read       -> two buffers: keys, values, each
//                                  [head_dim, capacity, kv_heads] (Halide
//                                  order), covering the whole layer
//     conv-state view, read     -> one buffer [channels, width - 1]: the
//                                  layer's ring of saved rows
//   outputs:
//     each kernel result        -> one buffer
//     each KV-cache view written -> two buffers: keys, values, covering
//                                  positions [position, position + T)
//     each conv-state view written -> one buffer, the whole ring
//
// Buffers use Halide's dimension order: dimension 0 is the innermost
// (contiguous) one, so a tensor<?x64xf32> is a buffer of extents {64, T}.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_TARGETS_COMMON_KERNELABI_H
#define MOE_TARGETS_COMMON_KERNELABI_H

#include "dialects/MoE/IR/MoEOps.h"

namespace mlir::moe {

struct KernelAbiSlot {
  enum class Kind {
    InputTensor,
    Scalar,
    CacheKeysRead,
    CacheValuesRead,
    ConvStateRead,
    OutputTensor,
    CacheKeysWrite,
    CacheValuesWrite,
    ConvStateWrite,
  };
  Kind kind;
  /// The kernel argument (inputs, cache writes) or result (output tensors).
  unsigned index;

  bool isOutput() const {
    return kind == Kind::OutputTensor || kind == Kind::CacheKeysWrite ||
           kind == Kind::CacheValuesWrite || kind == Kind::ConvStateWrite;
  }
};

/// The slots of `kernel`'s machine signature after user_context, in order.
/// Fails with a diagnostic on an argument type no target can pass.
FailureOr<SmallVector<KernelAbiSlot>> kernelAbi(KernelOp kernel);

/// "read" or "write": how `kernel` uses its state argument `index`.
StringRef cacheAccess(KernelOp kernel, unsigned index);

} // namespace mlir::moe

#endif // MOE_TARGETS_COMMON_KERNELABI_H
