//===- SelectDispatch.cpp - Choose expert-dispatch strategies -------------===//
//
// Decode reads k experts' weights for one token; gathering them per token is
// the only sensible way. Prefill visits many tokens per expert, where
// bucketing tokens by expert turns k*T matrix-vector products into E
// matrix-matrix products that reuse each weight across tokens.
//
//===----------------------------------------------------------------------===//

#include "dialects/MoE/Transforms/Passes.h"

namespace mlir::moe {
#define GEN_PASS_DEF_MOESELECTDISPATCHPASS
#include "dialects/MoE/Transforms/Passes.h.inc"

namespace {
struct SelectDispatchPass
    : impl::MoESelectDispatchPassBase<SelectDispatchPass> {
  using Base::Base;

  void runOnOperation() override {
    std::optional<DispatchStrategy> prefill =
        symbolizeDispatchStrategy(prefillStrategy);
    if (!prefill || *prefill == DispatchStrategy::Auto) {
      getOperation().emitError("moe-select-dispatch: prefill-strategy must "
                               "be 'gather' or 'grouped', got '")
          << prefillStrategy << "'";
      return signalPassFailure();
    }
    getOperation().walk([&](ExpertDispatchOp op) {
      if (op.getStrategy() != DispatchStrategy::Auto) {
        return;
      }
      int64_t tokens =
          cast<RankedTensorType>(op.getInput().getType()).getDimSize(0);
      bool small = !ShapedType::isDynamic(tokens) && tokens <= gatherMaxTokens;
      DispatchStrategy strategy = small ? DispatchStrategy::Gather : *prefill;
      op.setStrategy(strategy);
      ++(strategy == DispatchStrategy::Gather ? numGather : numGrouped);
    });
  }
};
} // namespace
} // namespace mlir::moe
