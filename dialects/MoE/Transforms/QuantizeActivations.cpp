//===- QuantizeActivations.cpp - Int8 inputs for packed projections -------===//
//
// A projection of packed weights spends most of its time turning codes back
// into floats. Quantizing its input to int8 instead (one scale per block of
// features, recomputed for every token) lets the kernel multiply codes and
// inputs as integers, several per instruction, and apply the two scales
// once per block. The rounding this adds to the input is what llama.cpp's
// Q8_0 activations add; test/e2e/quant_agreement.py measures it.
//
//===----------------------------------------------------------------------===//

#include "dialects/MoE/Transforms/Passes.h"

namespace mlir::moe {
#define GEN_PASS_DEF_MOEQUANTIZEACTIVATIONSPASS
#include "dialects/MoE/Transforms/Passes.h.inc"

namespace {

/// Whether `weight` is packed and divides into blocks of `block` columns,
/// within its scale groups.
bool blockable(Value weight, int64_t block) {
  auto dequantize = weight.getDefiningOp<DequantizeOp>();
  if (!dequantize) {
    return false;
  }
  std::optional<int64_t> group = dequantize.getGroup();
  return dequantize.getCols() % block == 0 && (!group || *group % block == 0);
}

struct QuantizeActivationsPass
    : impl::MoEQuantizeActivationsPassBase<QuantizeActivationsPass> {
  using Base::Base;

  void runOnOperation() override {
    // Every dot-product block of every format (at most 4 bytes of 1-bit
    // codes: 32 columns) must fit a whole number of times.
    if (block < 32 || block % 32 != 0 || block > 4096) {
      getOperation().emitError("moe-quantize-activations: block must be a "
                               "multiple of 32 in [32, 4096], got ")
          << static_cast<int64_t>(block);
      return signalPassFailure();
    }
    IntegerAttr attr = IntegerAttr::get(IntegerType::get(&getContext(), 64),
                                        static_cast<int64_t>(block));
    auto visit = [&](Operation *op, ArrayRef<Value> weights) {
      bool packed = llvm::any_of(weights, [](Value w) {
        return w && w.getDefiningOp<DequantizeOp>();
      });
      if (!packed) {
        return;
      }
      if (llvm::all_of(weights,
                       [&](Value w) { return !w || blockable(w, block); })) {
        op->setAttr("int8_activations", attr);
        ++numInt8;
      } else {
        ++numKeptFloat;
      }
    };
    getOperation().walk([&](Operation *op) {
      if (auto linear = dyn_cast<LinearOp>(op)) {
        visit(op, {linear.getWeight()});
      } else if (auto logits = dyn_cast<LogitsOp>(op)) {
        visit(op, {logits.getWeight()});
      } else if (auto dispatch = dyn_cast<ExpertDispatchOp>(op)) {
        visit(op, {dispatch.getGate(), dispatch.getUp(), dispatch.getDown()});
      }
    });
  }
};

} // namespace
} // namespace mlir::moe
