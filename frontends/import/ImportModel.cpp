//===- ImportModel.cpp - ModelDescription to moe IR -----------------------===//
//
// One code path for every family: the description says which variant each
// step takes, and this file only translates that into ops. The order of
// QK-norm and RoPE, the presence of a V scale, dense versus MoE layers and a
// shared expert are all read from the description.
//
//===----------------------------------------------------------------------===//

#include "frontends/import/ImportModel.h"

#include "dialects/MoE/IR/MoEOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/Verifier.h"

namespace fe = ::moe::frontend;

namespace mlir::moe {

namespace {

RopeLayout convert(fe::RopeLayout layout) {
  return layout == fe::RopeLayout::HalfSplit ? RopeLayout::HalfSplit
                                             : RopeLayout::Interleaved;
}

Activation convert(fe::Activation activation) {
  switch (activation) {
  case fe::Activation::Silu:
    return Activation::Silu;
  case fe::Activation::Gelu:
    return Activation::Gelu;
  case fe::Activation::GeluTanh:
    return Activation::GeluTanh;
  case fe::Activation::Relu:
    return Activation::Relu;
  }
  return Activation::Silu;
}

/// Emits one entry point. T is ShapedType::kDynamic for prefill, 1 for
/// decode; everything else is the same code.
class EntryBuilder {
public:
  EntryBuilder(OpBuilder &builder, const fe::ModelDescription &model,
               int64_t tokens)
      : b(builder), model(model), tokens(tokens), f32(builder.getF32Type()) {}

  LogicalResult build(func::FuncOp func);

private:
  Location loc(const Twine &name) {
    return NameLoc::get(
        b.getStringAttr(name),
        FileLineColLoc::get(b.getContext(), model.checkpointPath, 0, 0));
  }

  RankedTensorType activations(ArrayRef<int64_t> features) {
    SmallVector<int64_t> shape{tokens};
    shape.append(features.begin(), features.end());
    return RankedTensorType::get(shape, f32);
  }

  Value weight(const fe::WeightRef &ref) {
    SmallVector<StringRef> sources(ref.sources.begin(), ref.sources.end());
    if (ref.packed) {
      return packedWeight(ref, sources);
    }
    auto type = RankedTensorType::get(ref.shape, f32);
    auto op = WeightOp::create(b, loc(ref.sources.front()), type,
                               b.getStrArrayAttr(sources));
    if (ref.rows) {
      op.setRows(ArrayRef<int64_t>{(*ref.rows)[0], (*ref.rows)[1]});
    }
    return op;
  }

  /// A packed weight: its code bytes and scales as weights, dequantized
  /// where it is read.
  Value packedWeight(const fe::WeightRef &ref, ArrayRef<StringRef> sources) {
    const fe::PackedWeight &p = *ref.packed;
    bool stacked = ref.shape.size() == 3;
    SmallVector<int64_t> bytesShape, scaleShape;
    if (stacked) {
      bytesShape.push_back(ref.shape[0]);
      scaleShape.push_back(ref.shape[0]);
    }
    bytesShape.push_back(p.bytes);
    scaleShape.push_back(ref.shape[ref.shape.size() - 2]);
    Location l = loc(ref.sources.front());
    auto u8 = IntegerType::get(b.getContext(), 8, IntegerType::Unsigned);
    Value codes = WeightOp::create(b, l, RankedTensorType::get(bytesShape, u8),
                                   b.getStrArrayAttr(sources));
    SmallVector<StringRef> scaleNames(p.scaleSources.begin(),
                                      p.scaleSources.end());
    Value scale = WeightOp::create(b, l, RankedTensorType::get(scaleShape, f32),
                                   b.getStrArrayAttr(scaleNames));
    return DequantizeOp::create(
        b, l, RankedTensorType::get(ref.shape, f32), codes, scale,
        /*offset=*/Value(),
        PackedFormatAttr::get(b.getContext(),
                              p.format == fe::PackedFormat::Sign1
                                  ? PackedFormat::Sign1
                                  : PackedFormat::Int4),
        b.getI64IntegerAttr(ref.shape.back()), /*group=*/IntegerAttr(),
        p.lowBitsFirst ? b.getUnitAttr() : UnitAttr(),
        p.offsetBinary ? b.getUnitAttr() : UnitAttr(),
        /*transposed=*/UnitAttr(), /*lanes=*/IntegerAttr(),
        /*dot=*/IntegerAttr(), /*panels=*/IntegerAttr());
  }

  FailureOr<Value> norm(Value x, const fe::NormDesc &desc, const Twine &where) {
    Location l = loc(where);
    if (desc.kind == fe::NormKind::Rms) {
      if (!desc.weight || desc.bias) {
        return emitError(l, "an RMS norm needs a weight and no bias (")
               << where << ")";
      }
      return RmsNormOp::create(b, l, x.getType(), x, weight(*desc.weight),
                               b.getF64FloatAttr(desc.eps))
          .getResult();
    }
    Value w = desc.weight ? weight(*desc.weight) : Value();
    Value bias = desc.bias ? weight(*desc.bias) : Value();
    return LayerNormOp::create(b, l, x.getType(), x, w, bias,
                               b.getF64FloatAttr(desc.eps))
        .getResult();
  }

  Value linear(Value x, const fe::WeightRef &w, ArrayRef<int64_t> features,
               const Twine &where) {
    return LinearOp::create(b, loc(where), activations(features), x, weight(w),
                            Value(), /*int8_activations=*/IntegerAttr());
  }

  FailureOr<Value> qkNorm(Value x, const fe::QkNormDesc &desc,
                          const std::optional<fe::WeightRef> &w,
                          const std::optional<fe::WeightRef> &gain,
                          const Twine &where) {
    fe::NormDesc norm;
    norm.kind = desc.kind;
    norm.eps = desc.eps;
    norm.weight = w;
    FailureOr<Value> normed = this->norm(x, norm, where);
    if (failed(normed) || !gain) {
      return normed;
    }
    return HeadScaleOp::create(b, loc(where), normed->getType(), *normed,
                               weight(*gain))
        .getResult();
  }

  FailureOr<Value> ffn(Value x, const fe::FfnDesc &desc, const Twine &where) {
    if (!desc.gate) {
      return emitError(loc(where), "a feed-forward network without a gate "
                                   "projection is not supported yet (")
             << where << ")";
    }
    int64_t width = desc.up.shape[0];
    Value gate = linear(x, *desc.gate, {width}, where + ": gate");
    Value up = linear(x, desc.up, {width}, where + ": up");
    Value hidden = GluOp::create(
        b, loc(where), gate.getType(), gate, up,
        ActivationAttr::get(b.getContext(), convert(desc.activation)));
    return linear(hidden, desc.down, {model.dModel}, where + ": down");
  }

  /// Names the results of `op` for `--dump-activations` (the compiled
  /// binary reports them after the kernel computing them).
  void nameForDump(Operation *op, ArrayRef<std::string> names) {
    SmallVector<StringRef> refs(names.begin(), names.end());
    op->setAttr("moe.dump", b.getStrArrayAttr(refs));
  }

  FailureOr<Value> attention(Value x, const fe::AttentionDesc &attn,
                             int64_t layer);
  FailureOr<Value> moeBlock(Value x, const fe::MoEDesc &moe, int64_t layer);

  OpBuilder &b;
  const fe::ModelDescription &model;
  int64_t tokens;
  Type f32;
  Value position, cache, convState;
};

FailureOr<Value> EntryBuilder::attention(Value x, const fe::AttentionDesc &attn,
                                         int64_t layer) {
  std::string where = "layer " + std::to_string(layer) + ": attention";
  FailureOr<Value> h = norm(x, attn.norm, where + " norm");
  if (failed(h)) {
    return failure();
  }
  if (attn.conv) {
    if (!convState) {
      return emitError(loc(where), "layer ")
             << layer << " has a causal convolution but the model has no "
             << "convolution state (every convolution must have the same "
             << "width)";
    }
    h = CausalConv1dOp::create(b, loc(where + ": conv"), h->getType(), *h,
                               weight(*attn.conv), convState, position,
                               b.getI64IntegerAttr(layer))
            .getResult();
  }
  int64_t hq = model.nHeads, hkv = model.nKvHeads, d = model.headDim;
  Value q = linear(*h, attn.q, {hq, d}, where + ": q");
  Value k = linear(*h, attn.k, {hkv, d}, where + ": k");
  Value v = linear(*h, attn.v, {hkv, d}, where + ": v");

  auto applyQkNorm = [&]() -> LogicalResult {
    FailureOr<Value> qn = qkNorm(q, *attn.qkNorm, attn.qkNorm->qWeight,
                                 attn.qkNorm->qGain, where + ": q norm");
    FailureOr<Value> kn = qkNorm(k, *attn.qkNorm, attn.qkNorm->kWeight,
                                 attn.qkNorm->kGain, where + ": k norm");
    if (failed(qn) || failed(kn)) {
      return failure();
    }
    q = *qn;
    k = *kn;
    return success();
  };
  if (attn.qkNorm && attn.qkNorm->beforeRope && failed(applyQkNorm())) {
    return failure();
  }
  if (attn.rope) {
    auto layout =
        RopeLayoutAttr::get(b.getContext(), convert(attn.rope->layout));
    for (Value *target : {&q, &k}) {
      *target =
          RopeOp::create(b, loc(where + ": rope"), target->getType(), *target,
                         position, layout, b.getI64IntegerAttr(attn.rope->dims),
                         b.getF64FloatAttr(attn.rope->theta));
    }
  }
  if (attn.qkNorm && !attn.qkNorm->beforeRope && failed(applyQkNorm())) {
    return failure();
  }
  if (attn.vScale) {
    v = HeadScaleOp::create(b, loc(where + ": v scale"), v.getType(), v,
                            weight(*attn.vScale));
  }
  Value o = AttentionOp::create(b, loc(where), q.getType(), q, k, v, cache,
                                position, b.getI64IntegerAttr(layer),
                                b.getF64FloatAttr(attn.scale));
  Value projected = linear(o, attn.o, {model.dModel}, where + ": o");
  auto residual =
      arith::AddFOp::create(b, loc(where + ": residual"), x, projected);
  nameForDump(residual, {"layer" + std::to_string(layer) + ".attention"});
  return residual.getResult();
}

FailureOr<Value> EntryBuilder::moeBlock(Value h, const fe::MoEDesc &moe,
                                        int64_t layer) {
  std::string where = "layer " + std::to_string(layer) + ": moe";
  const fe::RouterDesc &r = moe.router;
  int64_t k = r.topK;
  auto indicesType = RankedTensorType::get({tokens, k}, b.getI32Type());
  auto weightsType = RankedTensorType::get({tokens, k}, f32);
  auto route = RouteOp::create(
      b, loc(where + ": router"), indicesType, weightsType, h, weight(r.weight),
      r.bias ? weight(*r.bias) : Value(),
      RouterScoringAttr::get(b.getContext(),
                             r.scoring == fe::RouterScoring::Softmax
                                 ? RouterScoring::Softmax
                                 : RouterScoring::Sigmoid),
      b.getI64IntegerAttr(k), r.renormalize ? b.getUnitAttr() : UnitAttr(),
      b.getF64FloatAttr(r.renormEps),
      SelectionBiasAttr::get(b.getContext(),
                             r.selectionBias == fe::SelectionBias::Logits
                                 ? SelectionBias::Logits
                                 : SelectionBias::Scores),
      b.getF64FloatAttr(r.scaling),
      CapacityRuleAttr::get(b.getContext(),
                            r.capacity == fe::CapacityRule::Dropless
                                ? CapacityRule::Dropless
                                : CapacityRule::DropLowestGate),
      b.getF64FloatAttr(r.capacityFactor));
  nameForDump(route, {"layer" + std::to_string(layer) + ".experts",
                      "layer" + std::to_string(layer) + ".gates"});
  const fe::FfnDesc &e = moe.experts;
  Value routed = ExpertDispatchOp::create(
      b, loc(where + ": experts"), h.getType(), h, route.getIndices(),
      route.getWeights(), e.gate ? weight(*e.gate) : Value(), weight(e.up),
      weight(e.down),
      ActivationAttr::get(b.getContext(), convert(e.activation)),
      DispatchStrategyAttr::get(b.getContext(), DispatchStrategy::Auto),
      /*int8_activations=*/IntegerAttr());
  if (!moe.shared) {
    return routed;
  }
  FailureOr<Value> shared = ffn(h, *moe.shared, where + ": shared expert");
  if (failed(shared)) {
    return failure();
  }
  return arith::AddFOp::create(b, loc(where), routed, *shared).getResult();
}

LogicalResult EntryBuilder::build(func::FuncOp func) {
  Block *entry = func.addEntryBlock();
  b.setInsertionPointToStart(entry);
  Value tokenIds = entry->getArgument(0);
  position = entry->getArgument(1);
  cache = entry->getArgument(2);
  if (entry->getNumArguments() > 3) {
    convState = entry->getArgument(3);
  }

  Value x = EmbedOp::create(b, loc("embedding"), activations({model.dModel}),
                            weight(model.embedding), tokenIds,
                            b.getF64FloatAttr(model.embeddingScale));
  for (auto [index, layer] : llvm::enumerate(model.layers)) {
    int64_t i = static_cast<int64_t>(index);
    FailureOr<Value> afterAttention = attention(x, layer.attention, i);
    if (failed(afterAttention)) {
      return failure();
    }
    x = *afterAttention;
    std::string where = "layer " + std::to_string(i) + ": ffn";
    FailureOr<Value> h = norm(x, layer.ffnNorm, where + " norm");
    if (failed(h)) {
      return failure();
    }
    FailureOr<Value> out =
        layer.moe ? moeBlock(*h, *layer.moe, i) : ffn(*h, *layer.dense, where);
    if (failed(out)) {
      return failure();
    }
    auto residual =
        arith::AddFOp::create(b, loc(where + ": residual"), x, *out);
    nameForDump(residual, {"layer" + std::to_string(i) + ".hidden"});
    x = residual;
  }
  FailureOr<Value> normed = norm(x, model.finalNorm, "final norm");
  if (failed(normed)) {
    return failure();
  }
  Value logits =
      LogitsOp::create(b, loc("logits"), activations({model.vocab}), *normed,
                       weight(model.logitsWeight),
                       model.logitsBias ? weight(*model.logitsBias) : Value(),
                       b.getF64FloatAttr(model.logitScale),
                       /*int8_activations=*/IntegerAttr());
  func::ReturnOp::create(b, loc("logits"), logits);
  return success();
}

} // namespace

FailureOr<OwningOpRef<ModuleOp>> importModel(MLIRContext &context,
                                             const fe::ModelDescription &model,
                                             const ImportOptions &options) {
  context.loadDialect<MoEDialect, func::FuncDialect, arith::ArithDialect>();
  OpBuilder b(&context);
  Location moduleLoc =
      FileLineColLoc::get(&context, model.checkpointPath, 0, 0);
  OwningOpRef<ModuleOp> module = ModuleOp::create(moduleLoc);

  // What later stages and the compiled binary report about the model.
  SmallVector<NamedAttribute> info;
  auto add = [&](StringRef name, Attribute value) {
    info.push_back(b.getNamedAttr(name, value));
  };
  add("moe.family", b.getStringAttr(model.family));
  add("moe.family_source", b.getStringAttr(model.descriptionSource));
  add("moe.checkpoint", b.getStringAttr(model.checkpointPath));
  add("moe.vocab", b.getI64IntegerAttr(model.vocab));
  add("moe.context_length", b.getI64IntegerAttr(model.contextLength));
  add("moe.prefill_chunk", b.getI64IntegerAttr(options.prefillChunk));
  if (options.prefillWholeSequence) {
    add("moe.prefill_whole_sequence", b.getI64IntegerAttr(1));
  }
  add("moe.total_params", b.getI64IntegerAttr(model.totalParams));
  add("moe.active_params", b.getI64IntegerAttr(model.activeParams));
  SmallVector<StringRef> notes(model.notes.begin(), model.notes.end());
  add("moe.notes", b.getStrArrayAttr(notes));
  for (NamedAttribute attr : info) {
    (*module)->setAttr(attr.getName(), attr.getValue());
  }

  auto cacheType =
      KVCacheType::get(&context, static_cast<int64_t>(model.layers.size()),
                       model.nKvHeads, model.headDim, b.getF32Type());
  // A model with causal convolutions carries their last inputs as state;
  // one state type serves all layers, so every convolution has its width.
  SmallVector<Type> stateTypes{cacheType};
  for (const fe::LayerDesc &layer : model.layers) {
    if (!layer.attention.conv) {
      continue;
    }
    auto convType = ConvStateType::get(
        &context, static_cast<int64_t>(model.layers.size()), model.dModel,
        layer.attention.conv->shape[2], b.getF32Type());
    if (stateTypes.size() == 1) {
      stateTypes.push_back(convType);
    } else if (stateTypes[1] != convType) {
      return emitError(moduleLoc, "causal convolutions of different widths "
                                  "in one model are not supported");
    }
  }
  for (auto [name, tokens] : {std::pair("prefill", ShapedType::kDynamic),
                              std::pair("decode", int64_t(1))}) {
    b.setInsertionPointToEnd(module->getBody());
    auto tokensType = RankedTensorType::get({tokens}, b.getI32Type());
    auto logitsType =
        RankedTensorType::get({tokens, model.vocab}, b.getF32Type());
    SmallVector<Type> inputs{tokensType, b.getIndexType()};
    inputs.append(stateTypes.begin(), stateTypes.end());
    auto func = func::FuncOp::create(b, moduleLoc, name,
                                     b.getFunctionType(inputs, {logitsType}));
    func->setAttr("moe.entry", b.getStringAttr(name));
    OpBuilder::InsertionGuard guard(b);
    if (failed(EntryBuilder(b, model, tokens).build(func))) {
      return failure();
    }
  }
  if (failed(verify(*module))) {
    return failure();
  }
  return module;
}

} // namespace mlir::moe
