//===- FuseGatedFfn.cpp - Gate and up projections with their activation
//----===//

#include "dialects/MoE/Transforms/Passes.h"

#include "dialects/MoE/Utils/Fusion.h"

namespace mlir::moe {
#define GEN_PASS_DEF_MOEFUSEGATEDFFNPASS
#include "dialects/MoE/Transforms/Passes.h.inc"

FailureOr<FusedOp> fuseGatedFfn(RewriterBase &rewriter, GluOp glu) {
  auto gate = glu.getGate().getDefiningOp<LinearOp>();
  auto up = glu.getUp().getDefiningOp<LinearOp>();
  if (!gate || !up || gate == up) {
    return rewriter.notifyMatchFailure(glu, "operands are not two projections");
  }
  if (gate.getInput() != up.getInput()) {
    return rewriter.notifyMatchFailure(glu, "projections of different inputs");
  }
  if (!gate->hasOneUse() || !up->hasOneUse()) {
    return rewriter.notifyMatchFailure(glu, "a projection has other uses");
  }
  return fuseIntoGroup(rewriter, {gate, up, glu}, "gated_ffn");
}

namespace {
struct FuseGatedFfnPass : impl::MoEFuseGatedFfnPassBase<FuseGatedFfnPass> {
  void runOnOperation() override {
    SmallVector<GluOp> glus;
    getOperation().walk([&](GluOp op) {
      if (!op->getParentOfType<FusedOp>()) {
        glus.push_back(op);
      }
    });
    IRRewriter rewriter(&getContext());
    for (GluOp glu : glus) {
      if (succeeded(fuseGatedFfn(rewriter, glu))) {
        ++numFused;
      }
    }
  }
};
} // namespace
} // namespace mlir::moe
