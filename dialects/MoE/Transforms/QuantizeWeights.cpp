//===- QuantizeWeights.cpp - Float weights into packed codes and scales ---===//
//
// A projection reads every weight once per token; at decode that is the
// whole cost. Storing codes of 8, 4, 2 or 1 bits with one scale per group
// of columns cuts the bytes 4-25x, and `moe.dequantize` lets every op keep
// reading the weight as the f32 tensor it stands for, so no kernel changes
// meaning. The values themselves are computed when the weight file is
// written (compiler/Driver/WeightWriter.cpp): the IR says which tensor is
// quantized how, and stays small.
//
// Norms, routers, biases and convolution filters stay in float: they are a
// tiny share of the bytes and the model is sensitive to them.
//
//===----------------------------------------------------------------------===//

#include "dialects/MoE/Transforms/Passes.h"
#include "dialects/MoE/Transforms/QuantPolicy.h"

namespace mlir::moe {
#define GEN_PASS_DEF_MOEQUANTIZEWEIGHTSPASS
#include "dialects/MoE/Transforms/Passes.h.inc"

namespace {

/// Whether the result of `linear` reaches an attention through per-head
/// ops (query, key, value), or its input comes from one (output).
bool isAttentionProjection(LinearOp linear) {
  if (linear.getInput().getDefiningOp<AttentionOp>()) {
    return true;
  }
  SmallVector<Value> frontier{linear.getResult()};
  while (!frontier.empty()) {
    Value value = frontier.pop_back_val();
    for (Operation *user : value.getUsers()) {
      if (isa<AttentionOp>(user)) {
        return true;
      }
      if (isa<HeadScaleOp, RopeOp, RmsNormOp, LayerNormOp>(user)) {
        frontier.push_back(user->getResult(0));
      }
    }
  }
  return false;
}

/// The role `use` gives its weight, when the use may read a quantized one.
std::optional<WeightRole> roleOfUse(OpOperand &use) {
  Operation *user = use.getOwner();
  unsigned index = use.getOperandNumber();
  if (auto embed = dyn_cast<EmbedOp>(user)) {
    return use.get() == embed.getTable() ? std::optional(WeightRole::Embedding)
                                         : std::nullopt;
  }
  if (isa<LogitsOp>(user)) {
    return index == 1 ? std::optional(WeightRole::Head) : std::nullopt;
  }
  if (auto linear = dyn_cast<LinearOp>(user)) {
    if (index != 1) {
      return std::nullopt;
    }
    return isAttentionProjection(linear) ? WeightRole::Attention
                                         : WeightRole::Ffn;
  }
  if (auto dispatch = dyn_cast<ExpertDispatchOp>(user)) {
    Value v = use.get();
    bool expert = v == dispatch.getGate() || v == dispatch.getUp() ||
                  v == dispatch.getDown();
    return expert ? std::optional(WeightRole::Experts) : std::nullopt;
  }
  return std::nullopt;
}

struct QuantizeWeightsPass
    : impl::MoEQuantizeWeightsPassBase<QuantizeWeightsPass> {
  using Base::Base;

  void runOnOperation() override {
    llvm::Expected<QuantPolicy> policy = parseQuantPolicy(mode, rules);
    if (!policy) {
      getOperation().emitError("moe-quantize-weights: ")
          << llvm::toString(policy.takeError());
      return signalPassFailure();
    }
    if (scaleType != "f16" && scaleType != "f32") {
      getOperation().emitError("moe-quantize-weights: scale-type must be "
                               "f16 or f32, got '")
          << scaleType << "'";
      return signalPassFailure();
    }
    if (group < 1) {
      getOperation().emitError("moe-quantize-weights: group must be >= 1, "
                               "got ")
          << group;
      return signalPassFailure();
    }
    SmallVector<WeightOp> weights;
    getOperation().walk([&](WeightOp op) { weights.push_back(op); });
    for (WeightOp weight : weights) {
      quantize(weight, *policy);
    }
  }

  void quantize(WeightOp weight, const QuantPolicy &policy) {
    auto type = weight.getResult().getType();
    if (weight.getQuantize() || !type.getElementType().isF32() ||
        type.getRank() < 2 || type.getRank() > 3) {
      return;
    }
    // The uses that may read it packed, and the role that decides its
    // precision: a tied embedding is an embedding, whatever else reads it.
    SmallVector<OpOperand *> uses;
    std::optional<WeightRole> role;
    for (OpOperand &use : weight->getUses()) {
      std::optional<WeightRole> r = roleOfUse(use);
      if (!r) {
        continue;
      }
      uses.push_back(&use);
      if (!role || static_cast<int>(*r) < static_cast<int>(*role)) {
        role = r;
      }
    }
    if (!role) {
      return;
    }
    SmallVector<StringRef> sources;
    for (Attribute name : weight.getSources()) {
      sources.push_back(cast<StringAttr>(name).getValue());
    }
    QuantChoice choice = policy.choose(*role, sources);
    if (!choice) {
      return;
    }
    PackedFormat format = choice->format;

    OpBuilder b(weight);
    b.setInsertionPointAfter(weight);
    Location loc = weight.getLoc();
    ArrayRef<int64_t> shape = type.getShape();
    size_t lead = shape.size() - 2;
    int64_t rows = shape[lead], cols = shape[lead + 1];
    SmallVector<int64_t> codesShape(shape.begin(), shape.begin() + lead);
    SmallVector<int64_t> scaleShape = codesShape;
    codesShape.push_back(DequantizeOp::codeBytes(format, rows, cols));
    scaleShape.append({rows, DequantizeOp::scalesPerRow(cols, int64_t(group))});
    auto part = [&](RankedTensorType partType) {
      auto op = WeightOp::create(b, loc, partType, weight.getSources());
      if (std::optional<ArrayRef<int64_t>> r = weight.getRows()) {
        op.setRows(*r);
      }
      op.setQuantize(format);
      op.setQuantGroup(group);
      op.setQuantShape(shape);
      op.setQuantAsymmetric(choice->asymmetric);
      return op;
    };
    auto u8 = IntegerType::get(&getContext(), 8, IntegerType::Unsigned);
    WeightOp codes = part(RankedTensorType::get(codesShape, u8));
    Type scaleElement =
        scaleType == "f16" ? Type(b.getF16Type()) : Type(b.getF32Type());
    auto scaleTensor = RankedTensorType::get(scaleShape, scaleElement);
    WeightOp scale = part(scaleTensor);
    Value offset;
    if (choice->asymmetric) {
      WeightOp offsets = part(scaleTensor);
      offsets.setQuantOffsets(true);
      offset = offsets;
    }
    auto dequantized = DequantizeOp::create(
        b, loc, type, codes, scale, offset,
        PackedFormatAttr::get(&getContext(), format), b.getI64IntegerAttr(cols),
        b.getI64IntegerAttr(group),
        /*low_bits_first=*/UnitAttr(), /*offset_binary=*/UnitAttr(),
        /*transposed=*/UnitAttr(), /*lanes=*/IntegerAttr(),
        /*dot=*/IntegerAttr(), /*panels=*/IntegerAttr());
    for (OpOperand *use : uses) {
      use->set(dequantized);
    }
    if (weight->use_empty()) {
      weight->erase();
    }
    ++numQuantized;
  }
};

} // namespace
} // namespace mlir::moe
