//===- AssignWeightLayouts.cpp - Storage layout of each weight for CPUs ---===//
//
// A projection y[t, n] = sum_k x[t, k] W[n, k] is computed by the CPU
// kernels with n innermost in vector registers. Stored as PyTorch ships it,
// W[n, k], consecutive n are a whole row apart; transposed, W^T[k, n], they
// are adjacent and one vector load feeds one vector of outputs. Cut into
// panels of the kernels' tile width, W[N/P, K, P], a tile's weights are
// one contiguous block, streamed at full DRAM speed (see Passes.td):
// measured on full-size models at f32, decode x1.3 (physics, 1 thread;
// x2 on 2 threads) and x1.6 (SSMoELM), prefill x1.3 and x1.8.
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

/// `weight` for `user` alone: itself when nothing else reads it, else a
/// copy (so that a layout set for `user` changes no other reader).
WeightOp exclusiveWeight(OpBuilder &builder, WeightOp weight, Operation *user) {
  if (llvm::all_of(weight->getUsers(),
                   [&](Operation *other) { return other == user; })) {
    return weight;
  }
  builder.setInsertionPointAfter(weight);
  auto copy = cast<WeightOp>(builder.clone(*weight));
  user->replaceUsesOfWith(weight, copy);
  return copy;
}

struct AssignWeightLayoutsPass
    : impl::MoECpuAssignWeightLayoutsPassBase<AssignWeightLayoutsPass> {
  using Base::Base;

  /// Whether projection weight `weight` is stored in panels: a float
  /// matrix (not the scales of a packed one) whose output features divide
  /// into them.
  bool inPanels(WeightOp weight) {
    auto type = weight.getResult().getType();
    if (panel <= 0 || weight.getQuantize() || type.getRank() < 2 ||
        !isa<FloatType>(type.getElementType())) {
      return false;
    }
    return type.getDimSize(type.getRank() - 2) % panel == 0;
  }

  /// Stores `dequantize`'s codes in the order projections read them, when
  /// one of its readers is a projection: blocks for the target's dot
  /// products when one reads them with int8 inputs, else column by column.
  void transposePacked(OpBuilder &builder, DequantizeOp dequantize) {
    bool integer = llvm::any_of(dequantize->getUsers(), [](Operation *user) {
      return user->hasAttr("int8_activations");
    });
    bool projected =
        integer || llvm::any_of(dequantize->getUses(), [](OpOperand &use) {
          return preferredLayout(use.getOwner(), use.getOperandNumber()) ==
                 WeightLayout::Transposed;
        });
    auto codes = dequantize.getPacked().getDefiningOp<WeightOp>();
    auto scale = dequantize.getScale().getDefiningOp<WeightOp>();
    WeightOp offset;
    if (Value value = dequantize.getOffset();
        value && !(offset = value.getDefiningOp<WeightOp>())) {
      return;
    }
    if (!projected || !codes || !scale || dequantize.getTransposed() ||
        dequantize.getDot()) {
      return;
    }
    WeightOp stored = exclusiveWeight(builder, codes, dequantize);
    stored.setLayout(WeightLayout::Transposed);
    if (dequantize.getGroup()) {
      // [.., N, G] stored as [.., G, N]: a vector of features, one load.
      // Offsets are read where the scales are, in the same order.
      for (WeightOp perGroup : {scale, offset}) {
        if (perGroup) {
          exclusiveWeight(builder, perGroup, dequantize)
              .setLayout(WeightLayout::Transposed);
        }
      }
    }
    if (integer) {
      // The verifier of int8_activations checked that the columns divide
      // into blocks of the widest dot product (4 bytes): no padding.
      dequantize.setDot(dot);
      // On CPUs (panel > 0; a GPU's threads read codes their own way),
      // rows in panels of one vector: every kernel tile is whole vectors,
      // so whole panels, and reads its codes as contiguous runs (physics q4
      // decode x1.2-1.3, docs/quantization.md).
      ArrayRef<int64_t> shape = dequantize.getResult().getType().getShape();
      if (panel > 0 && lanes > 0 && shape[shape.size() - 2] % lanes == 0) {
        dequantize.setPanels(lanes);
      }
      return;
    }
    dequantize.setTransposed(true);
    if (DequantizeOp::bitsOf(dequantize.getFormat()) < 8) {
      dequantize.setLanes(lanes);
      // Whole runs of `lanes` bytes per matrix.
      auto type = stored.getResult().getType();
      ArrayRef<int64_t> shape = dequantize.getResult().getType().getShape();
      SmallVector<int64_t> bytes(type.getShape());
      bytes.back() = DequantizeOp::codeBytes(dequantize.getFormat(),
                                             shape[shape.size() - 2],
                                             shape.back(), int64_t(lanes));
      stored.getResult().setType(
          RankedTensorType::get(bytes, type.getElementType()));
    }
  }

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
        if (layout == WeightLayout::Transposed && inPanels(target)) {
          target.setStorage(WeightLayout::Panels, panel);
        } else {
          target.setStorage(layout);
        }
      }
    }
    // Packed weights, once every weight has its default layout.
    getOperation().walk(
        [&](DequantizeOp dequantize) { transposePacked(builder, dequantize); });
  }
};
} // namespace
} // namespace mlir::moe::cpu
