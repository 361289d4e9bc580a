//===- Fusion.h - Forming moe.fused groups ----------------------*- C++ -*-===//
//
// The one operation every fusion pass needs: put a set of ops in one
// `moe.fused` region, merging groups formed by earlier passes.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_DIALECTS_MOE_UTILS_FUSION_H
#define MOE_DIALECTS_MOE_UTILS_FUSION_H

#include "dialects/MoE/IR/MoEOps.h"

#include "mlir/IR/PatternMatch.h"

namespace mlir::moe {

/// Wraps `ops` into one `moe.fused` named `name`, placed where the first of
/// them was. The ops must be in one block; a `moe.fused` among them is
/// merged (its body joins the new group). Values the group reads that are
/// defined further down by operand-free pure ops (`moe.weight`, constants)
/// are hoisted above the group. The group yields every value used outside
/// it, in program order.
///
/// Fails, leaving the IR untouched, when the group would read a value that
/// another op computes between its first and its last member: that op would
/// have to run inside the group, and the caller did not ask for it.
FailureOr<FusedOp> fuseIntoGroup(RewriterBase &rewriter,
                                 ArrayRef<Operation *> ops, StringRef name);

/// The op directly in the function body that contains `op` (itself, or the
/// `moe.fused` it sits in).
Operation *topLevelOp(Operation *op);

/// What every fusion pass does: collects the ops directly in `body` for
/// which `select` holds (before changing anything, since fusing restructures
/// the block), applies `fuse` to each, and returns how many groups formed.
int64_t
fuseEach(Block &body, function_ref<bool(Operation *)> select,
         function_ref<FailureOr<FusedOp>(RewriterBase &, Operation *)> fuse);

} // namespace mlir::moe

#endif // MOE_DIALECTS_MOE_UTILS_FUSION_H
