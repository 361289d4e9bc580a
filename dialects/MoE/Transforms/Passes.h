//===- Passes.h - Passes of the moe dialect ---------------------*- C++ -*-===//
//
// The passes (generated from Passes.td) and the transform functions behind
// them, each usable on its own with a rewriter.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_DIALECTS_MOE_TRANSFORMS_PASSES_H
#define MOE_DIALECTS_MOE_TRANSFORMS_PASSES_H

#include "dialects/MoE/IR/MoEOps.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/PatternMatch.h"
#include "mlir/Pass/Pass.h"

namespace mlir::moe {

#define GEN_PASS_DECL
#include "dialects/MoE/Transforms/Passes.h.inc"

/// Rewrites `op` into a kv_cache_write and a cached_attention; returns the
/// latter.
CachedAttentionOp splitAttention(RewriterBase &rewriter, AttentionOp op);

/// Rewrites `op` into a cached_conv1d and a conv_state_write; returns the
/// former. Fails (with a diagnostic) for a width-1 convolution.
FailureOr<CachedConv1dOp> splitCausalConv(RewriterBase &rewriter,
                                          CausalConv1dOp op);

/// Groups `write` with the per-head ops producing its key, value and the
/// query of the attention that reads the same cache layer. Fails when there
/// is nothing to fuse or fusing would break dominance.
FailureOr<FusedOp> fuseAttentionPrologue(RewriterBase &rewriter,
                                         KVCacheWriteOp write);

/// Groups `glu` with the projections producing its operands. Fails unless
/// both are moe.linear of the same input used only by `glu`.
FailureOr<FusedOp> fuseGatedFfn(RewriterBase &rewriter, GluOp glu);

/// Groups the norm `norm` (an rms_norm or layer_norm over the model width)
/// with the projections reading it. Fails when no projection reads it.
FailureOr<FusedOp> fuseNormProjection(RewriterBase &rewriter, Operation *norm);

/// Groups `projection` (a moe.linear, or a group ending in one) with the
/// chain of arith.addf that its result feeds. Fails when the result has
/// another use.
FailureOr<FusedOp> fuseResidualAdd(RewriterBase &rewriter,
                                   Operation *projection);

/// The kernel-level name of the hash that identifies a kernel's body and
/// signature (also used by targets to cache compiled kernels).
std::string kernelContentHash(KernelOp kernel);

#define GEN_PASS_REGISTRATION
#include "dialects/MoE/Transforms/Passes.h.inc"

} // namespace mlir::moe

#endif // MOE_DIALECTS_MOE_TRANSFORMS_PASSES_H
