//===- SplitCausalConv.cpp - A causal conv as a state read and a write ----===//

#include "dialects/MoE/Transforms/Passes.h"

#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

namespace mlir::moe {
#define GEN_PASS_DEF_MOESPLITCAUSALCONVPASS
#include "dialects/MoE/Transforms/Passes.h.inc"

FailureOr<CachedConv1dOp> splitCausalConv(RewriterBase &rewriter,
                                          CausalConv1dOp op) {
  // Width 1 has no state: the ring of K-1 slots would be empty.
  if (op.getState().getType().getWidth() < 2) {
    return op.emitOpError("of width 1 keeps no state; it is a per-channel "
                          "scale and cannot be split");
  }
  rewriter.setInsertionPoint(op);
  // The read comes first: the write overwrites slots the read needs.
  auto read = CachedConv1dOp::create(
      rewriter, op.getLoc(), op.getResult().getType(), op.getInput(),
      op.getWeight(), op.getState(), op.getPosition(), op.getLayerAttr());
  ConvStateWriteOp::create(rewriter, op.getLoc(), op.getInput(), op.getState(),
                           op.getPosition(), op.getLayerAttr());
  rewriter.replaceOp(op, read.getResult());
  return read;
}

namespace {
struct SplitCausalConvPattern : OpRewritePattern<CausalConv1dOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(CausalConv1dOp op,
                                PatternRewriter &rewriter) const override {
    return success(succeeded(splitCausalConv(rewriter, op)));
  }
};

struct SplitCausalConvPass
    : impl::MoESplitCausalConvPassBase<SplitCausalConvPass> {
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    patterns.add<SplitCausalConvPattern>(&getContext());
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns)))) {
      return signalPassFailure();
    }
    // A conv the pattern refused has reported why.
    WalkResult left = getOperation().walk(
        [](CausalConv1dOp) { return WalkResult::interrupt(); });
    if (left.wasInterrupted()) {
      signalPassFailure();
    }
  }
};
} // namespace
} // namespace mlir::moe
