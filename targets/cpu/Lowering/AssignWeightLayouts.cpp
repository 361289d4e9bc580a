//===- AssignWeightLayouts.cpp - Storage layout of each weight for CPUs ---===//
//
// A projection y[t, n] = sum_k x[t, k] W[n, k] is computed by the CPU
// kernels with n innermost in vector registers. Stored as PyTorch ships it,
// W[n, k], consecutive n are a whole row apart; transposed, W^T[k, n], they
// are adjacent and one vector load feeds one vector of outputs.
//
//===----------------------------------------------------------------------===//

#include "targets/cpu/Lowering/Passes.h"

namespace mlir::moe::cpu {
#define GEN_PASS_DEF_MOECPUASSIGNWEIGHTLAYOUTSPASS
#include "targets/cpu/Lowering/Passes.h.inc"

WeightLayout preferredLayout(Operation *user, unsigned operandIndex) {
  if (auto linear = dyn_cast<LinearOp>(user)) {
    return operandIndex == 1 ? WeightLayout::Transposed
                             : WeightLayout::RowMajor;
  }
  if (isa<LogitsOp>(user)) {
    return operandIndex == 1 ? WeightLayout::Transposed
                             : WeightLayout::RowMajor;
  }
  if (auto dispatch = dyn_cast<ExpertDispatchOp>(user)) {
    Value operand = user->getOperand(operandIndex);
    bool expertWeight = operand == dispatch.getGate() ||
                        operand == dispatch.getUp() ||
                        operand == dispatch.getDown();
    return expertWeight ? WeightLayout::Transposed : WeightLayout::RowMajor;
  }
  return WeightLayout::RowMajor;
}

namespace {
struct AssignWeightLayoutsPass
    : impl::MoECpuAssignWeightLayoutsPassBase<AssignWeightLayoutsPass> {
  void runOnOperation() override {
    SmallVector<WeightOp> weights;
    getOperation().walk([&](WeightOp op) { weights.push_back(op); });
    OpBuilder builder(&getContext());
    for (WeightOp weight : weights) {
      // One weight op per layout its users want.
      std::map<WeightLayout, SmallVector<OpOperand *>> byLayout;
      for (OpOperand &use : weight->getUses()) {
        byLayout[preferredLayout(use.getOwner(), use.getOperandNumber())]
            .push_back(&use);
      }
      bool first = true;
      for (auto &[layout, uses] : byLayout) {
        WeightOp target = weight;
        if (!first) {
          builder.setInsertionPointAfter(weight);
          target = cast<WeightOp>(builder.clone(*weight));
          for (OpOperand *use : uses) {
            use->set(target);
          }
        }
        first = false;
        if (layout == WeightLayout::RowMajor) {
          target.removeLayoutAttr();
        } else {
          target.setLayout(layout);
        }
      }
    }
  }
};
} // namespace
} // namespace mlir::moe::cpu
