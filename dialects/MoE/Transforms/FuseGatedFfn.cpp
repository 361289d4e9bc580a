//===- FuseGatedFfn.cpp - Gate and up projections with their activation ---===//

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
    numFused += fuseEach(
        getOperation().getBody().front(),
        [](Operation *op) { return isa<GluOp>(op); },
        [](RewriterBase &rewriter, Operation *op) {
          return fuseGatedFfn(rewriter, cast<GluOp>(op));
        });
  }
};
} // namespace
} // namespace mlir::moe
