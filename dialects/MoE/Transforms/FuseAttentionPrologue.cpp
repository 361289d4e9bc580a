//===- FuseAttentionPrologue.cpp - Per-head ops with the cache write ------===//
//
// Algorithm:
//   1. For each moe.kv_cache_write, find the moe.cached_attention that reads
//      the same layer at the same position (its query is this layer's).
//   2. From the key, value and query, walk producers upward while they are
//      per-head ops (norms over heads, head_scale, rope) whose results stay
//      in the chain.
//   3. Fuse the chains and the write; the query comes out as a result.
//
//===----------------------------------------------------------------------===//

#include "dialects/MoE/Transforms/Passes.h"

#include "dialects/MoE/Utils/Fusion.h"

namespace mlir::moe {
#define GEN_PASS_DEF_MOEFUSEATTENTIONPROLOGUEPASS
#include "dialects/MoE/Transforms/Passes.h.inc"

/// Ops that act on each head of a [T, H, D] tensor independently.
static bool isPerHeadOp(Operation *op) {
  if (isa<HeadScaleOp, RopeOp>(op)) {
    return true;
  }
  if (isa<RmsNormOp, LayerNormOp>(op)) {
    return cast<RankedTensorType>(op->getOperand(0).getType()).getRank() == 3;
  }
  return false;
}

/// Adds to `chain` the per-head ops producing `value`, walking upward while
/// every use of each result is already in the group.
static void collectChain(Value value, llvm::SmallPtrSetImpl<Operation *> &group,
                         SmallVectorImpl<Operation *> &chain) {
  Operation *def = value.getDefiningOp();
  while (def && isPerHeadOp(def) && !group.contains(def)) {
    bool onlyGroupUses = llvm::all_of(def->getUsers(), [&](Operation *user) {
      return group.contains(user) || isa<CachedAttentionOp>(user);
    });
    if (!onlyGroupUses) {
      return;
    }
    group.insert(def);
    chain.push_back(def);
    def = def->getOperand(0).getDefiningOp();
  }
}

FailureOr<FusedOp> fuseAttentionPrologue(RewriterBase &rewriter,
                                         KVCacheWriteOp write) {
  CachedAttentionOp read;
  for (Operation *user : write.getCache().getUsers()) {
    auto candidate = dyn_cast<CachedAttentionOp>(user);
    if (candidate && candidate.getLayer() == write.getLayer() &&
        candidate.getPosition() == write.getPosition() &&
        candidate->getBlock() == write->getBlock() &&
        write->isBeforeInBlock(candidate)) {
      read = candidate;
      break;
    }
  }
  llvm::SmallPtrSet<Operation *, 16> group;
  SmallVector<Operation *> members{write};
  group.insert(write);
  collectChain(write.getKey(), group, members);
  collectChain(write.getValue(), group, members);
  if (read) {
    collectChain(read.getQuery(), group, members);
  }
  if (members.size() == 1) {
    return rewriter.notifyMatchFailure(write, "no per-head op to fuse");
  }
  return fuseIntoGroup(rewriter, members, "attention_prologue");
}

namespace {
struct FuseAttentionProloguePass
    : impl::MoEFuseAttentionProloguePassBase<FuseAttentionProloguePass> {
  void runOnOperation() override {
    numFused += fuseEach(
        getOperation().getBody().front(),
        [](Operation *op) { return isa<KVCacheWriteOp>(op); },
        [](RewriterBase &rewriter, Operation *op) {
          return fuseAttentionPrologue(rewriter, cast<KVCacheWriteOp>(op));
        });
  }
};
} // namespace
} // namespace mlir::moe
