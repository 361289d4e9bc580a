//===- SplitAttention.cpp - Attention as a cache write and a cache read ---===//

#include "dialects/MoE/Transforms/Passes.h"

#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

namespace mlir::moe {
#define GEN_PASS_DEF_MOESPLITATTENTIONPASS
#include "dialects/MoE/Transforms/Passes.h.inc"

CachedAttentionOp splitAttention(RewriterBase &rewriter, AttentionOp op) {
  rewriter.setInsertionPoint(op);
  KVCacheWriteOp::create(rewriter, op.getLoc(), op.getKey(), op.getValue(),
                         op.getCache(), op.getPosition(), op.getLayerAttr());
  auto read = CachedAttentionOp::create(
      rewriter, op.getLoc(), op.getResult().getType(), op.getQuery(),
      op.getCache(), op.getPosition(), op.getLayerAttr(), op.getScaleAttr());
  rewriter.replaceOp(op, read.getResult());
  return read;
}

namespace {
struct SplitAttentionPattern : OpRewritePattern<AttentionOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(AttentionOp op,
                                PatternRewriter &rewriter) const override {
    splitAttention(rewriter, op);
    return success();
  }
};

struct SplitAttentionPass
    : impl::MoESplitAttentionPassBase<SplitAttentionPass> {
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    patterns.add<SplitAttentionPattern>(&getContext());
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns)))) {
      return signalPassFailure();
    }
  }
};
} // namespace
} // namespace mlir::moe
