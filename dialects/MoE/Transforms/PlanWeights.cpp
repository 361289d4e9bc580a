//===- PlanWeights.cpp - Layout of the compiled weight file ---------------===//

#include "dialects/MoE/Transforms/Passes.h"

#include "llvm/Support/MathExtras.h"

namespace mlir::moe {
#define GEN_PASS_DEF_MOEPLANWEIGHTSPASS
#include "dialects/MoE/Transforms/Passes.h.inc"

namespace {

struct PlanWeightsPass : impl::MoEPlanWeightsPassBase<PlanWeightsPass> {
  using Base::Base;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    if (alignment <= 0 || !llvm::isPowerOf2_64(alignment)) {
      module.emitError("moe-plan-weights: alignment must be a power of two");
      return signalPassFailure();
    }
    // Weights are identified by what they read and how they are stored: the
    // same tensor in two layouts, or the codes, the scales and the offsets
    // of one quantized tensor, are different weights.
    std::map<std::string, int64_t> offsets;
    int64_t end = 0;
    auto i64 = IntegerType::get(&getContext(), 64);
    module.walk([&](WeightOp op) {
      std::string key;
      llvm::raw_string_ostream os(key);
      os << op.getSourcesAttr() << "|";
      if (auto rows = op.getRowsAttr()) {
        os << rows;
      }
      os << "|"
         << stringifyWeightLayout(
                op.getLayout().value_or(WeightLayout::RowMajor))
         << op.getPanel().value_or(0) << "|" << op.getResult().getType();
      if (std::optional<PackedFormat> format = op.getQuantize()) {
        os << "|" << stringifyPackedFormat(*format) << "/"
           << *op.getQuantGroup() << (op.getQuantAsymmetric() ? "a" : "")
           << (op.getQuantOffsets() ? "|offsets" : "");
      }
      auto [it, inserted] = offsets.try_emplace(key, end);
      if (inserted) {
        auto type = op.getResult().getType();
        // Floats are stored as f32, except f16 scales; packed codes (ui8)
        // as they are.
        Type element = type.getElementType();
        int64_t bytes =
            type.getNumElements() * (element.isUnsignedInteger(8) ? 1
                                     : element.isF16()            ? 2
                                                                  : 4);
        end = llvm::alignTo(end + bytes, alignment);
      }
      op->setAttr("moe.offset", IntegerAttr::get(i64, it->second));
    });
    module->setAttr("moe.weights_bytes", IntegerAttr::get(i64, end));
  }
};

} // namespace
} // namespace mlir::moe
