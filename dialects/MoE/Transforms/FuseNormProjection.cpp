//===- FuseNormProjection.cpp - Norms with the projections reading them ---===//
//
// A norm over the model width is cheap to compute and is read by one or
// more projections (Q/K/V; router and shared expert; the logits). Computing
// it inside the projections' kernel saves writing and re-reading [T, D].
// Groups formed earlier (gated FFNs) whose projections read the norm join
// the same kernel.
//
//===----------------------------------------------------------------------===//

#include "dialects/MoE/Transforms/Passes.h"

#include "dialects/MoE/Utils/Fusion.h"

namespace mlir::moe {
#define GEN_PASS_DEF_MOEFUSENORMPROJECTIONPASS
#include "dialects/MoE/Transforms/Passes.h.inc"

/// True for a projection that takes `value` as its activation input.
static bool projects(Operation *op, Value value) {
  if (auto linear = dyn_cast<LinearOp>(op)) {
    return linear.getInput() == value;
  }
  if (auto route = dyn_cast<RouteOp>(op)) {
    return route.getInput() == value;
  }
  if (auto logits = dyn_cast<LogitsOp>(op)) {
    return logits.getInput() == value;
  }
  return false;
}

FailureOr<FusedOp> fuseNormProjection(RewriterBase &rewriter, Operation *norm) {
  if (!isa<RmsNormOp, LayerNormOp>(norm) ||
      cast<RankedTensorType>(norm->getResult(0).getType()).getRank() != 2) {
    return rewriter.notifyMatchFailure(norm, "not a norm over the model width");
  }
  Value normed = norm->getResult(0);
  SmallVector<Operation *> members{norm};
  for (Operation *user : normed.getUsers()) {
    Operation *top = topLevelOp(user);
    if (top->getBlock() != norm->getBlock() ||
        llvm::is_contained(members, top)) {
      continue;
    }
    // A group formed earlier joins when a projection inside it reads the
    // norm directly (`top` is then the group).
    if (projects(user, normed)) {
      members.push_back(top);
    }
  }
  if (members.size() == 1) {
    return rewriter.notifyMatchFailure(norm, "no projection reads the norm");
  }
  return fuseIntoGroup(rewriter, members, "norm_projection");
}

namespace {
struct FuseNormProjectionPass
    : impl::MoEFuseNormProjectionPassBase<FuseNormProjectionPass> {
  void runOnOperation() override {
    numFused += fuseEach(
        getOperation().getBody().front(),
        [](Operation *op) { return isa<RmsNormOp, LayerNormOp>(op); },
        fuseNormProjection);
  }
};
} // namespace
} // namespace mlir::moe
