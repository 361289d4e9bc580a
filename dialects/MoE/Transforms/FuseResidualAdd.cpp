//===- FuseResidualAdd.cpp - Projections with the sums they feed ----------===//

#include "dialects/MoE/Transforms/Passes.h"

#include "dialects/MoE/Utils/Fusion.h"

#include "mlir/Dialect/Arith/IR/Arith.h"

namespace mlir::moe {
#define GEN_PASS_DEF_MOEFUSERESIDUALADDPASS
#include "dialects/MoE/Transforms/Passes.h.inc"

FailureOr<FusedOp> fuseResidualAdd(RewriterBase &rewriter,
                                   Operation *projection) {
  if (!isa<LinearOp>(projection) || projection->getNumResults() != 1) {
    return rewriter.notifyMatchFailure(projection, "not a projection");
  }
  SmallVector<Operation *> members{projection};
  Value result = projection->getResult(0);
  while (result.hasOneUse()) {
    auto add = dyn_cast<arith::AddFOp>(*result.getUsers().begin());
    if (!add || add->getBlock() != projection->getBlock()) {
      break;
    }
    members.push_back(add);
    result = add.getResult();
  }
  if (members.size() == 1) {
    return rewriter.notifyMatchFailure(projection, "no addition to fuse");
  }
  return fuseIntoGroup(rewriter, members, "projection_residual");
}

namespace {
struct FuseResidualAddPass
    : impl::MoEFuseResidualAddPassBase<FuseResidualAddPass> {
  void runOnOperation() override {
    numFused += fuseEach(
        getOperation().getBody().front(),
        [](Operation *op) { return isa<LinearOp>(op); }, fuseResidualAdd);
  }
};
} // namespace
} // namespace mlir::moe
