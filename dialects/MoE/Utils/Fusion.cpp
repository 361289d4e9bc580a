//===- Fusion.cpp - Forming moe.fused groups ------------------------------===//
//
// Algorithm:
//   1. Sort the requested ops by position; the first one is the anchor.
//   2. Check every value the group reads from outside (for a merged group,
//      what its body reads from outside): it must be a block argument, be
//      defined before the anchor, or come from an operand-free pure op (a
//      weight), or the dequantization of such ops, that can move above the
//      anchor. Otherwise fail before changing anything.
//   3. Hoist those pure ops, dissolve merged groups into their block, create
//      the new group at the anchor, move the ops in, and yield what is used
//      outside.
//
//===----------------------------------------------------------------------===//

#include "dialects/MoE/Utils/Fusion.h"

#include "mlir/Interfaces/SideEffectInterfaces.h"

#include "llvm/ADT/SetVector.h"

namespace mlir::moe {

Operation *topLevelOp(Operation *op) {
  if (auto fused = op->getParentOfType<FusedOp>()) {
    return fused;
  }
  return op;
}

int64_t
fuseEach(Block &body, function_ref<bool(Operation *)> select,
         function_ref<FailureOr<FusedOp>(RewriterBase &, Operation *)> fuse) {
  SmallVector<Operation *> candidates;
  for (Operation &op : body) {
    if (select(&op)) {
      candidates.push_back(&op);
    }
  }
  if (candidates.empty()) {
    return 0;
  }
  IRRewriter rewriter(candidates.front()->getContext());
  int64_t fused = 0;
  for (Operation *op : candidates) {
    // An earlier fusion may have moved this op into a group.
    if (op->getBlock() == &body && succeeded(fuse(rewriter, op))) {
      ++fused;
    }
  }
  return fused;
}

/// The values `op` reads that are defined outside it.
static SmallVector<Value> externalOperands(Operation *op) {
  SmallVector<Value> values;
  if (auto fused = dyn_cast<FusedOp>(op)) {
    fused.getBody().walk([&](Operation *inner) {
      for (Value operand : inner->getOperands()) {
        Region *defRegion = operand.getParentRegion();
        if (!fused.getBody().isAncestor(defRegion)) {
          values.push_back(operand);
        }
      }
    });
    return values;
  }
  values.append(op->operand_begin(), op->operand_end());
  return values;
}

/// Whether `def` (defined after `anchor`) can move above it, with what it
/// reads: adds them to `toHoist`, operands first.
static bool collectHoistable(Operation *def, Operation *anchor,
                             llvm::SetVector<Operation *> &toHoist) {
  if (def->getNumRegions() != 0 || !isMemoryEffectFree(def) ||
      (def->getNumOperands() != 0 && !isa<DequantizeOp>(def))) {
    return false;
  }
  for (Value operand : def->getOperands()) {
    Operation *inner = operand.getDefiningOp();
    if (!inner) {
      return false;
    }
    if (inner->getBlock() == def->getBlock() &&
        !inner->isBeforeInBlock(anchor) &&
        !collectHoistable(inner, anchor, toHoist)) {
      return false;
    }
  }
  toHoist.insert(def);
  return true;
}

/// Replaces a group by its body, in place.
static void dissolve(RewriterBase &rewriter, FusedOp fused) {
  Block &body = fused.getBody().front();
  auto yield = cast<YieldOp>(body.getTerminator());
  SmallVector<Value> yielded(yield.getValues());
  rewriter.eraseOp(yield);
  rewriter.inlineBlockBefore(&body, fused);
  rewriter.replaceOp(fused, yielded);
}

FailureOr<FusedOp> fuseIntoGroup(RewriterBase &rewriter,
                                 ArrayRef<Operation *> ops, StringRef name) {
  if (ops.empty()) {
    return failure();
  }
  Block *block = ops.front()->getBlock();
  SmallVector<Operation *> sorted(ops.begin(), ops.end());
  for (Operation *op : sorted) {
    if (op->getBlock() != block) {
      return failure();
    }
  }
  llvm::sort(sorted,
             [](Operation *a, Operation *b) { return a->isBeforeInBlock(b); });
  sorted.erase(std::unique(sorted.begin(), sorted.end()), sorted.end());
  Operation *anchor = sorted.front();
  llvm::SmallPtrSet<Operation *, 16> members(sorted.begin(), sorted.end());

  // 2. Check what the group reads.
  llvm::SetVector<Operation *> toHoist;
  for (Operation *op : sorted) {
    for (Value value : externalOperands(op)) {
      Operation *def = value.getDefiningOp();
      if (!def || members.contains(def)) {
        continue;
      }
      if (def->getBlock() != block || def->isBeforeInBlock(anchor)) {
        continue;
      }
      if (!collectHoistable(def, anchor, toHoist)) {
        return failure();
      }
    }
  }

  // 3. Rewrite.
  for (Operation *def : toHoist) {
    rewriter.moveOpBefore(def, anchor);
  }
  SmallVector<Operation *> flat;
  for (Operation *op : sorted) {
    auto fused = dyn_cast<FusedOp>(op);
    if (!fused) {
      flat.push_back(op);
      continue;
    }
    for (Operation &inner : fused.getBody().front().without_terminator()) {
      flat.push_back(&inner);
    }
    dissolve(rewriter, fused);
  }
  llvm::SmallPtrSet<Operation *, 32> flatMembers(flat.begin(), flat.end());
  SmallVector<Value> escaping;
  for (Operation *op : flat) {
    for (Value result : op->getResults()) {
      if (llvm::any_of(result.getUsers(), [&](Operation *user) {
            return !flatMembers.contains(topLevelOp(user));
          })) {
        escaping.push_back(result);
      }
    }
  }

  rewriter.setInsertionPoint(flat.front());
  SmallVector<Type> types;
  for (Value value : escaping) {
    types.push_back(value.getType());
  }
  auto group = FusedOp::create(rewriter, flat.front()->getLoc(), name, types);
  Block &body = group.getBody().front();
  for (Operation *op : flat) {
    rewriter.moveOpBefore(op, &body, body.end());
  }
  rewriter.setInsertionPointToEnd(&body);
  YieldOp::create(rewriter, group.getLoc(), escaping);
  for (auto [inner, outer] : llvm::zip(escaping, group.getResults())) {
    rewriter.replaceUsesWithIf(inner, outer, [&](OpOperand &use) {
      return !group->isAncestor(use.getOwner());
    });
  }
  return group;
}

} // namespace mlir::moe
