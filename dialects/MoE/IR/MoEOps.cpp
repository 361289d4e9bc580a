//===- MoEOps.cpp - Operations of the moe dialect -------------------------===//
//
// Verifiers for the rules ODS cannot state (shapes that relate several
// operands and attributes), memory effects on session state, and the
// function-like parsing of `moe.kernel`.
//
// Shape rules are checked on static dimensions only where a dimension may
// legitimately be dynamic: the token dimension (dimension 0 of activations)
// is `?` in prefill. Every other dimension of a model is static, and the
// verifiers insist on it, because kernels are specialised on those sizes.
//
//===----------------------------------------------------------------------===//

#include "dialects/MoE/IR/MoEOps.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/ImplicitLocOpBuilder.h"
#include "mlir/IR/TypeUtilities.h"
#include "mlir/Interfaces/FunctionImplementation.h"

using namespace mlir;
using namespace mlir::moe;

//===----------------------------------------------------------------------===//
// Shape helpers
//===----------------------------------------------------------------------===//

static RankedTensorType tensorType(Value value) {
  return cast<RankedTensorType>(value.getType());
}

/// Formats a shape the way MLIR prints it inside a tensor type (`?x640`).
static std::string shapeString(ArrayRef<int64_t> shape) {
  std::string result;
  llvm::raw_string_ostream os(result);
  llvm::interleave(
      shape, os,
      [&](int64_t d) {
        if (ShapedType::isDynamic(d)) {
          os << "?";
        } else {
          os << d;
        }
      },
      "x");
  return result;
}

/// Product of `shape[from:]`; all must be static.
static int64_t trailingElements(ArrayRef<int64_t> shape, unsigned from) {
  int64_t n = 1;
  for (int64_t d : shape.drop_front(from)) {
    n *= d;
  }
  return n;
}

/// Every dimension but the token dimension (0) of an activation is static.
static LogicalResult verifyActivation(Operation *op, Value value,
                                      StringRef name) {
  auto type = tensorType(value);
  if (type.getRank() < 1) {
    return op->emitOpError("expects ")
           << name << " to have a token dimension, got rank 0";
  }
  for (int64_t d : type.getShape().drop_front()) {
    if (ShapedType::isDynamic(d)) {
      return op->emitOpError("expects ")
             << name << " to be static in every dimension but the first, got "
             << type;
    }
  }
  return success();
}

static LogicalResult verifyStaticWeight(Operation *op, Value value,
                                        StringRef name) {
  if (!tensorType(value).hasStaticShape()) {
    return op->emitOpError("expects ")
           << name << " to have a static shape, got " << value.getType();
  }
  return success();
}

/// The token dimensions of two activations must agree (both `?` or equal).
static LogicalResult verifySameTokens(Operation *op, Value a, StringRef aName,
                                      Value b, StringRef bName) {
  int64_t ta = tensorType(a).getDimSize(0);
  int64_t tb = tensorType(b).getDimSize(0);
  if (ta != tb) {
    return op->emitOpError("expects ")
           << aName << " and " << bName
           << " to have the same token dimension, got " << shapeString({ta})
           << " and " << shapeString({tb});
  }
  return success();
}

static LogicalResult verifyShape(Operation *op, Value value, StringRef name,
                                 ArrayRef<int64_t> expected) {
  ArrayRef<int64_t> got = tensorType(value).getShape();
  if (got != expected) {
    return op->emitOpError("expects ")
           << name << " of shape " << shapeString(expected) << ", got "
           << shapeString(got);
  }
  return success();
}

/// A weight `[rows, D]` applied to an input `[T, D]`, with an optional bias
/// of `rows`: the shape rule of routers and output heads. Returns rows.
static FailureOr<int64_t> verifyRowProjection(Operation *op, Value input,
                                              Value weight, Value bias,
                                              StringRef weightName,
                                              StringRef rowsName) {
  if (failed(verifyActivation(op, input, "input")) ||
      failed(verifyStaticWeight(op, weight, weightName))) {
    return failure();
  }
  auto in = tensorType(input);
  auto w = tensorType(weight);
  int64_t rows = w.getDimSize(0);
  if (w.getDimSize(1) != in.getDimSize(1)) {
    return op->emitOpError("expects ")
           << weightName << " [" << rowsName << ", " << in.getDimSize(1)
           << "], got " << shapeString(w.getShape());
  }
  if (bias && failed(verifyShape(op, bias, "bias", {rows}))) {
    return failure();
  }
  return rows;
}

/// `int8_activations(B)` of a projection reading `weights` ([.., N, K]):
/// every weight is a moe.dequantize whose K, scale groups and dot blocks
/// are whole blocks of B.
static LogicalResult verifyInt8Activations(Operation *op,
                                           std::optional<int64_t> block,
                                           ArrayRef<Value> weights) {
  if (!block) {
    return success();
  }
  if (*block < 4 || *block % 4 != 0 || *block > 4096) {
    return op->emitOpError("expects int8_activations(B) with B a multiple "
                           "of 4 in [4, 4096], got ")
           << *block;
  }
  for (Value weight : weights) {
    if (!weight) {
      continue;
    }
    auto dequantize = weight.getDefiningOp<DequantizeOp>();
    if (!dequantize) {
      return op->emitOpError("expects packed weights (moe.dequantize) with "
                             "int8_activations");
    }
    int64_t cols = dequantize.getCols();
    std::optional<int64_t> group = dequantize.getGroup();
    if (cols % *block != 0 || (group && *group % *block != 0)) {
      return op->emitOpError("expects int8_activations(")
             << *block << ") to divide the weight's " << cols << " columns"
             << (group ? " and its group of " + std::to_string(*group) : "");
    }
    if (std::optional<int64_t> dot = dequantize.getDot()) {
      int64_t columns =
          DequantizeOp::dotBlockColumns(dequantize.getFormat(), *dot);
      if (*block % columns != 0) {
        return op->emitOpError("expects int8_activations(")
               << *block << ") to hold whole dot(" << *dot << ") blocks of "
               << columns << " columns";
      }
    }
  }
  return success();
}

//===----------------------------------------------------------------------===//
// custom<BareEnum>: enum attributes inside op syntax
//===----------------------------------------------------------------------===//

// Inside an op's own syntax the attribute kind is known, so an enum prints as
// its bare keyword (`layout(interleaved)`) rather than as the full attribute
// (`#moe.rope_layout<interleaved>`), which attr-dict still uses.

template <typename AttrT>
static ParseResult parseBareEnum(OpAsmParser &parser, AttrT &attr) {
  using EnumT = decltype(std::declval<AttrT>().getValue());
  SMLoc loc = parser.getCurrentLocation();
  StringRef keyword;
  if (failed(parser.parseOptionalKeyword(&keyword))) {
    return failure();
  }
  std::optional<EnumT> value = symbolizeEnum<EnumT>(keyword);
  if (!value) {
    return parser.emitError(loc, "unknown ")
           << AttrT::getMnemonic() << " '" << keyword << "'";
  }
  attr = AttrT::get(parser.getContext(), *value);
  return success();
}

template <typename AttrT>
static void printBareEnum(OpAsmPrinter &printer, Operation *, AttrT attr) {
  printer << stringifyEnum(attr.getValue());
}

// custom<WeightLayout>: `transposed`, or `panels(P)` with P the `panel`
// attribute, which means nothing without the layout.
static ParseResult parseWeightLayout(OpAsmParser &parser,
                                     WeightLayoutAttr &layout,
                                     IntegerAttr &panel) {
  if (failed(parseBareEnum(parser, layout))) {
    return failure();
  }
  if (succeeded(parser.parseOptionalLParen())) {
    int64_t width;
    if (parser.parseInteger(width) || parser.parseRParen()) {
      return failure();
    }
    panel = parser.getBuilder().getI64IntegerAttr(width);
  }
  return success();
}

static void printWeightLayout(OpAsmPrinter &printer, Operation *op,
                              WeightLayoutAttr layout, IntegerAttr panel) {
  printBareEnum(printer, op, layout);
  if (panel) {
    printer << "(" << panel.getInt() << ")";
  }
}

//===----------------------------------------------------------------------===//
// WeightOp
//===----------------------------------------------------------------------===//

SmallVector<int64_t> mlir::moe::storedWeightShape(
    RankedTensorType type, std::optional<WeightLayout> layout, int64_t panel) {
  SmallVector<int64_t> shape(type.getShape());
  if (shape.size() < 2 || type.getElementType().isUnsignedInteger(8)) {
    return shape;
  }
  size_t n = shape.size() - 2;
  if (layout == WeightLayout::Transposed) {
    std::swap(shape[n], shape[n + 1]);
  } else if (layout == WeightLayout::Panels && panel > 0) {
    int64_t features = shape[n];
    shape[n] = features / panel;
    shape.push_back(panel);
  }
  return shape;
}

void WeightOp::setStorage(WeightLayout layout, int64_t panel) {
  if (layout == WeightLayout::RowMajor) {
    removeLayoutAttr();
  } else {
    setLayout(layout);
  }
  if (layout == WeightLayout::Panels) {
    setPanel(panel);
  } else {
    removePanelAttr();
  }
}

LogicalResult WeightOp::verifyLayout() {
  auto type = getResult().getType();
  bool codes = type.getElementType().isUnsignedInteger(8);
  std::optional<WeightLayout> layout = getLayout();
  // Codes (ui8) have no matrix shape of their own: transposed, they are
  // in the order of the moe.dequantize that reads them.
  if (layout == WeightLayout::Transposed && type.getRank() < 2 && !codes) {
    return emitOpError("expects a transposed layout only for rank >= 2, got ")
           << type;
  }
  if (layout != WeightLayout::Panels) {
    if (getPanel()) {
      return emitOpError("expects a panel width only with layout panels");
    }
    return success();
  }
  std::optional<int64_t> panel = getPanel();
  if (!panel) {
    return emitOpError("expects layout panels(P) with its panel width P");
  }
  if (codes || type.getRank() < 2 || getQuantize()) {
    return emitOpError("expects layout panels only for a float weight of "
                       "rank >= 2, got ")
           << type;
  }
  int64_t features = type.getDimSize(type.getRank() - 2);
  if (*panel < 1 || features % *panel != 0) {
    return emitOpError("expects a panel width that divides the ")
           << features << " output features, got " << *panel;
  }
  return success();
}

/// With `quantize`: the group and logical shape are given, and the result
/// is the codes or the scales of that shape.
LogicalResult WeightOp::verifyQuantized() {
  std::optional<PackedFormat> format = getQuantize();
  if (!format) {
    if (getQuantGroup() || getQuantShape() || getQuantAsymmetric() ||
        getQuantOffsets()) {
      return emitOpError("expects quantize(..) with a quantization group, "
                         "shape, asymmetric or offsets");
    }
    return success();
  }
  if (getQuantOffsets() && !getQuantAsymmetric()) {
    return emitOpError("expects offsets only of an asymmetric quantization");
  }
  std::optional<int64_t> group = getQuantGroup();
  std::optional<ArrayRef<int64_t>> shape = getQuantShape();
  if (!group || *group < 1) {
    return emitOpError("expects a quantization group >= 1");
  }
  if (!shape || shape->size() < 2 ||
      llvm::any_of(*shape, [](int64_t d) { return d < 1; })) {
    return emitOpError("expects a quantized shape [.., N, K] of positive "
                       "sizes");
  }
  // One matrix, or a stack of them (several names, or one 3-d tensor).
  bool stacked = getSources().size() > 1;
  if (shape->size() > 3 || (stacked && shape->size() != 3)) {
    return emitOpError("expects a quantized shape [N, K] or [E, N, K]")
           << (stacked ? " with E = the number of sources" : "");
  }
  size_t lead = shape->size() - 2;
  int64_t rows = (*shape)[lead], cols = (*shape)[lead + 1];
  SmallVector<int64_t> expected(shape->begin(), shape->begin() + lead);
  auto type = getResult().getType();
  Type element = type.getElementType();
  if (element.isUnsignedInteger(8)) {
    if (getQuantOffsets()) {
      return emitOpError("expects offsets of f32 or f16, got ") << type;
    }
    expected.push_back(DequantizeOp::codeBytes(*format, rows, cols));
  } else if (element.isF32() || element.isF16()) {
    expected.append({rows, DequantizeOp::scalesPerRow(cols, group)});
  } else {
    return emitOpError("expects the codes (ui8) or the scales (f32 or f16) "
                       "of a quantized weight, got ")
           << type;
  }
  // Codes stored transposed may be padded to the runs of the reading
  // moe.dequantize, which checks their size.
  bool padded = element.isUnsignedInteger(8) &&
                getLayout() == WeightLayout::Transposed &&
                type.getRank() == static_cast<int64_t>(expected.size()) &&
                type.getShape().back() >= expected.back();
  if (type.getShape() != ArrayRef<int64_t>(expected) && !padded) {
    return emitOpError("expects ")
           << (getQuantOffsets()         ? "offsets"
               : isa<FloatType>(element) ? "scales"
                                         : "codes")
           << " of shape " << shapeString(expected) << " for "
           << stringifyPackedFormat(*format) << " " << shapeString(*shape)
           << " in groups of " << *group << ", got " << type;
  }
  return success();
}

LogicalResult WeightOp::verify() {
  ArrayAttr sources = getSources();
  if (sources.empty()) {
    return emitOpError("expects at least one source tensor name");
  }
  for (Attribute name : sources) {
    if (cast<StringAttr>(name).getValue().empty()) {
      return emitOpError("expects non-empty source tensor names");
    }
  }
  auto type = getResult().getType();
  if (!type.hasStaticShape()) {
    return emitOpError("expects a static shape, got ") << type;
  }
  bool stacked = sources.size() > 1;
  if (stacked && (type.getRank() < 2 ||
                  type.getDimSize(0) != static_cast<int64_t>(sources.size()))) {
    return emitOpError("expects stacking ")
           << sources.size()
           << " tensors to give a leading dimension of that size, got " << type;
  }
  // The tensor the names select: the result, or what a quantized weight
  // stands for.
  if (failed(verifyQuantized())) {
    return failure();
  }
  ArrayRef<int64_t> selected =
      getQuantShape() ? *getQuantShape() : type.getShape();
  if (std::optional<ArrayRef<int64_t>> rows = getRows()) {
    if (rows->size() != 2 || (*rows)[0] < 0 || (*rows)[0] >= (*rows)[1]) {
      return emitOpError("expects rows [begin, end] with 0 <= begin < end");
    }
    unsigned rowDim = stacked ? 1 : 0;
    if (selected.size() <= rowDim ||
        selected[rowDim] != (*rows)[1] - (*rows)[0]) {
      InFlightDiagnostic diag = emitOpError("expects rows [")
                                << (*rows)[0] << ", " << (*rows)[1]
                                << "] to select " << (*rows)[1] - (*rows)[0]
                                << " rows, got ";
      if (getQuantShape()) {
        diag << "[" << selected << "]";
      } else {
        diag << type;
      }
      return diag;
    }
  }
  return verifyLayout();
}

//===----------------------------------------------------------------------===//
// EmbedOp
//===----------------------------------------------------------------------===//

LogicalResult EmbedOp::verify() {
  if (failed(verifyStaticWeight(*this, getTable(), "table"))) {
    return failure();
  }
  auto table = tensorType(getTable());
  int64_t tokens = tensorType(getTokens()).getDimSize(0);
  if (failed(verifyShape(*this, getResult(), "result",
                         {tokens, table.getDimSize(1)}))) {
    return failure();
  }
  if (table.getElementType() != tensorType(getResult()).getElementType()) {
    return emitOpError("expects the result element type to match the table");
  }
  return success();
}

//===----------------------------------------------------------------------===//
// Norms
//===----------------------------------------------------------------------===//

LogicalResult RmsNormOp::verify() {
  if (failed(verifyActivation(*this, getInput(), "input")) ||
      failed(verifyStaticWeight(*this, getWeight(), "weight"))) {
    return failure();
  }
  auto input = tensorType(getInput());
  auto weight = tensorType(getWeight());
  if (weight.getRank() >= input.getRank()) {
    return emitOpError("expects the weight rank (")
           << weight.getRank() << ") to be below the input rank ("
           << input.getRank() << ")";
  }
  ArrayRef<int64_t> trailing = input.getShape().take_back(weight.getRank());
  if (trailing != weight.getShape()) {
    return emitOpError("expects the weight shape ")
           << shapeString(weight.getShape())
           << " to match the trailing input dimensions "
           << shapeString(trailing);
  }
  if (getEps().convertToDouble() < 0) {
    return emitOpError("expects a non-negative eps");
  }
  return success();
}

LogicalResult LayerNormOp::verify() {
  if (failed(verifyActivation(*this, getInput(), "input"))) {
    return failure();
  }
  if (getBias() && !getWeight()) {
    return emitOpError("expects a weight when a bias is given");
  }
  int64_t width = tensorType(getInput()).getShape().back();
  for (auto [value, name] :
       {std::pair(getWeight(), "weight"), std::pair(getBias(), "bias")}) {
    if (value && failed(verifyShape(*this, value, name, {width}))) {
      return failure();
    }
  }
  if (getEps().convertToDouble() < 0) {
    return emitOpError("expects a non-negative eps");
  }
  return success();
}

//===----------------------------------------------------------------------===//
// LinearOp
//===----------------------------------------------------------------------===//

LogicalResult LinearOp::verify() {
  if (failed(verifyActivation(*this, getInput(), "input")) ||
      failed(verifyActivation(*this, getResult(), "result")) ||
      failed(verifyStaticWeight(*this, getWeight(), "weight")) ||
      failed(verifySameTokens(*this, getInput(), "input", getResult(),
                              "result"))) {
    return failure();
  }
  auto input = tensorType(getInput());
  auto result = tensorType(getResult());
  auto weight = tensorType(getWeight());
  if (input.getRank() < 2 || result.getRank() < 2) {
    return emitOpError("expects input and result of rank >= 2 ([T, ...])");
  }
  int64_t n = weight.getDimSize(0), k = weight.getDimSize(1);
  if (trailingElements(input.getShape(), 1) != k) {
    return emitOpError("expects the input features (")
           << shapeString(input.getShape().drop_front())
           << ") to hold K = " << k << " elements of the weight [" << n << ", "
           << k << "]";
  }
  if (trailingElements(result.getShape(), 1) != n) {
    return emitOpError("expects the result features (")
           << shapeString(result.getShape().drop_front())
           << ") to hold N = " << n << " elements of the weight [" << n << ", "
           << k << "]";
  }
  if (getBias() && failed(verifyShape(*this, getBias(), "bias", {n}))) {
    return failure();
  }
  return verifyInt8Activations(*this, getInt8Activations(), {getWeight()});
}

//===----------------------------------------------------------------------===//
// HeadScaleOp
//===----------------------------------------------------------------------===//

LogicalResult HeadScaleOp::verify() {
  if (failed(verifyActivation(*this, getInput(), "input"))) {
    return failure();
  }
  auto input = tensorType(getInput());
  if (input.getRank() != 3) {
    return emitOpError("expects input [T, H, D], got ") << input;
  }
  int64_t heads = input.getDimSize(1);
  ArrayRef<int64_t> scale = tensorType(getScale()).getShape();
  bool perHead =
      scale == ArrayRef<int64_t>{heads} || scale == ArrayRef<int64_t>{heads, 1};
  if (!perHead) {
    return emitOpError("expects one scale per head ([")
           << heads << "] or [" << heads << ", 1]), got " << shapeString(scale);
  }
  return success();
}

//===----------------------------------------------------------------------===//
// RopeOp
//===----------------------------------------------------------------------===//

LogicalResult RopeOp::verify() {
  if (failed(verifyActivation(*this, getInput(), "input"))) {
    return failure();
  }
  int64_t headDim = tensorType(getInput()).getDimSize(2);
  int64_t dims = getRotaryDims();
  if (dims <= 0 || dims % 2 != 0 || dims > headDim) {
    return emitOpError("expects rotary dims to be even and in (0, ")
           << headDim << "], got " << dims;
  }
  if (getTheta().convertToDouble() <= 0) {
    return emitOpError("expects a positive theta");
  }
  return success();
}

//===----------------------------------------------------------------------===//
// Attention and its lowered halves
//===----------------------------------------------------------------------===//

/// Checks keys/values against each other and the cache layer they go to.
/// Checks `layer` addresses one of the `layers` of a state handle.
static LogicalResult verifyLayer(Operation *op, int64_t layer, int64_t layers) {
  if (layer < 0 || layer >= layers) {
    return op->emitOpError("expects layer in [0, ")
           << layers << "), got " << layer;
  }
  return success();
}

static LogicalResult verifyCacheAccess(Operation *op, KVCacheType cache,
                                       int64_t layer, int64_t kvHeads,
                                       int64_t headDim) {
  if (failed(verifyLayer(op, layer, cache.getLayers()))) {
    return failure();
  }
  if (cache.getKvHeads() != kvHeads || cache.getHeadDim() != headDim) {
    return op->emitOpError("expects the cache to hold ")
           << kvHeads << " KV heads of " << headDim << " dims, got " << cache;
  }
  return success();
}

static LogicalResult verifyKeysValues(Operation *op, Value key, Value value) {
  if (failed(verifyActivation(op, key, "key")) ||
      failed(verifyActivation(op, value, "value"))) {
    return failure();
  }
  if (key.getType() != value.getType()) {
    return op->emitOpError("expects key and value of the same type, got ")
           << key.getType() << " and " << value.getType();
  }
  return success();
}

static LogicalResult verifyQueryHeads(Operation *op, Value query,
                                      int64_t kvHeads, int64_t headDim) {
  if (failed(verifyActivation(op, query, "query"))) {
    return failure();
  }
  auto q = tensorType(query);
  if (q.getDimSize(2) != headDim) {
    return op->emitOpError("expects query heads of ")
           << headDim << " dims, got " << q.getDimSize(2);
  }
  if (q.getDimSize(1) % kvHeads != 0) {
    return op->emitOpError("expects the query heads (")
           << q.getDimSize(1) << ") to be a multiple of the KV heads ("
           << kvHeads << ")";
  }
  return success();
}

static LogicalResult verifyScale(Operation *op, APFloat scale) {
  if (scale.convertToDouble() <= 0) {
    return op->emitOpError("expects a positive scale");
  }
  return success();
}

LogicalResult AttentionOp::verify() {
  if (failed(verifyKeysValues(*this, getKey(), getValue()))) {
    return failure();
  }
  auto k = tensorType(getKey());
  if (failed(verifyQueryHeads(*this, getQuery(), k.getDimSize(1),
                              k.getDimSize(2))) ||
      failed(verifySameTokens(*this, getQuery(), "query", getKey(), "key")) ||
      failed(verifyCacheAccess(*this, getCache().getType(), getLayer(),
                               k.getDimSize(1), k.getDimSize(2))) ||
      failed(verifyScale(*this, getScale()))) {
    return failure();
  }
  if (getResult().getType() != getQuery().getType()) {
    return emitOpError("expects the result type to match the query, got ")
           << getResult().getType();
  }
  return success();
}

void AttentionOp::getEffects(
    SmallVectorImpl<SideEffects::EffectInstance<MemoryEffects::Effect>>
        &effects) {
  effects.emplace_back(MemoryEffects::Read::get(), &getCacheMutable());
  effects.emplace_back(MemoryEffects::Write::get(), &getCacheMutable());
}

LogicalResult KVCacheWriteOp::verify() {
  if (failed(verifyKeysValues(*this, getKey(), getValue()))) {
    return failure();
  }
  auto k = tensorType(getKey());
  return verifyCacheAccess(*this, getCache().getType(), getLayer(),
                           k.getDimSize(1), k.getDimSize(2));
}

void KVCacheWriteOp::getEffects(
    SmallVectorImpl<SideEffects::EffectInstance<MemoryEffects::Effect>>
        &effects) {
  effects.emplace_back(MemoryEffects::Write::get(), &getCacheMutable());
}

LogicalResult CachedAttentionOp::verify() {
  KVCacheType cache = getCache().getType();
  if (failed(verifyQueryHeads(*this, getQuery(), cache.getKvHeads(),
                              cache.getHeadDim())) ||
      failed(verifyCacheAccess(*this, cache, getLayer(), cache.getKvHeads(),
                               cache.getHeadDim())) ||
      failed(verifyScale(*this, getScale()))) {
    return failure();
  }
  if (getResult().getType() != getQuery().getType()) {
    return emitOpError("expects the result type to match the query, got ")
           << getResult().getType();
  }
  return success();
}

void CachedAttentionOp::getEffects(
    SmallVectorImpl<SideEffects::EffectInstance<MemoryEffects::Effect>>
        &effects) {
  effects.emplace_back(MemoryEffects::Read::get(), &getCacheMutable());
}

LogicalResult KVCacheLayerOp::verify() {
  KVCacheType cache = getCache().getType();
  KVCacheType view = getResult().getType();
  // I64Attr getters return the bits unsigned; compare them signed.
  int64_t layer = static_cast<int64_t>(getLayer());
  if (failed(verifyLayer(*this, layer, cache.getLayers()))) {
    return failure();
  }
  if (view.getLayers() != 1 || view.getKvHeads() != cache.getKvHeads() ||
      view.getHeadDim() != cache.getHeadDim() ||
      view.getElementType() != cache.getElementType()) {
    return emitOpError("expects a one-layer view of the same heads and "
                       "element type, got ")
           << view;
  }
  return success();
}

//===----------------------------------------------------------------------===//
// DequantizeOp
//===----------------------------------------------------------------------===//

int64_t DequantizeOp::bitsOf(PackedFormat format) {
  switch (format) {
  case PackedFormat::Sign1:
    return 1;
  case PackedFormat::Int2:
    return 2;
  case PackedFormat::Int4:
    return 4;
  case PackedFormat::Int8:
    return 8;
  }
  llvm_unreachable("unknown packed format");
}

int64_t DequantizeOp::codeBytes(PackedFormat format, int64_t rows, int64_t cols,
                                std::optional<int64_t> lanes,
                                std::optional<int64_t> dot) {
  int64_t bits = bitsOf(format);
  if (dot) {
    int64_t columns = dotBlockColumns(format, *dot);
    return (cols + columns - 1) / columns * rows * *dot;
  }
  if (lanes && bits < 8) {
    int64_t run = *lanes * (8 / bits);
    return (rows * cols + run - 1) / run * *lanes;
  }
  return (rows * cols * bits + 7) / 8;
}

int64_t DequantizeOp::scalesPerRow(int64_t cols, std::optional<int64_t> group) {
  return group ? (cols + *group - 1) / *group : 1;
}

LogicalResult DequantizeOp::verify() {
  auto packed = getPacked().getType();
  auto scale = getScale().getType();
  auto result = getResult().getType();
  if (!packed.hasStaticShape() || !scale.hasStaticShape() ||
      !result.hasStaticShape()) {
    return emitOpError("expects static shapes");
  }
  // [.., B] bytes, [.., N] or [.., N, groups] scales, [.., N, K] weights.
  std::optional<int64_t> group = getGroup();
  int64_t lead = result.getRank() - 2;
  int64_t scaleRank = lead + (group ? 2 : 1);
  if (lead < 0 || packed.getRank() != lead + 1 ||
      scale.getRank() != scaleRank) {
    return emitOpError("expects packed [.., B], scale ")
           << (group ? "[.., N, groups]" : "[.., N]")
           << " and result [.., N, K] with the same leading dimensions";
  }
  for (int64_t i = 0; i < lead; ++i) {
    if (packed.getDimSize(i) != result.getDimSize(i) ||
        scale.getDimSize(i) != result.getDimSize(i)) {
      return emitOpError("expects the leading dimensions to agree");
    }
  }
  int64_t rows = result.getDimSize(lead), cols = result.getDimSize(lead + 1);
  if (static_cast<int64_t>(getCols()) != cols) {
    return emitOpError("expects cols(")
           << cols << ") for a result of " << result;
  }
  if (scale.getDimSize(lead) != rows) {
    return emitOpError("expects scales for ")
           << rows << " rows, got " << scale.getDimSize(lead);
  }
  if (group) {
    if (*group < 1) {
      return emitOpError("expects group(G) with G >= 1, got ") << *group;
    }
    int64_t groups = scalesPerRow(cols, group);
    if (scale.getDimSize(lead + 1) != groups) {
      return emitOpError("expects ")
             << groups << " scales per row (ceil(" << cols << " / " << *group
             << ")), got " << scale.getDimSize(lead + 1);
    }
  }
  std::optional<int64_t> lanes = getLanes();
  if (lanes && (*lanes < 1 || *lanes > 256)) {
    return emitOpError("expects lanes(L) with 1 <= L <= 256, got ") << *lanes;
  }
  std::optional<int64_t> dot = getDot();
  if (dot) {
    if (*dot != 2 && *dot != 4) {
      return emitOpError("expects dot(D) with D = 2 or 4, got ") << *dot;
    }
    if (getTransposed() || lanes) {
      return emitOpError("expects dot(D) without transposed or lanes: they "
                         "are other orders of the codes");
    }
    int64_t columns = dotBlockColumns(getFormat(), *dot);
    if (cols % columns != 0) {
      return emitOpError("expects dot(")
             << *dot << ") blocks of " << columns << " "
             << stringifyPackedFormat(getFormat()) << " columns to divide cols("
             << cols << ")";
    }
  }
  if (std::optional<int64_t> panels = getPanels()) {
    if (!dot) {
      return emitOpError("expects panels(P) only with dot(D): panels order "
                         "the dot-product blocks");
    }
    if (*panels < 1 || rows % *panels != 0) {
      return emitOpError("expects panels(P) with P >= 1 dividing the ")
             << rows << " rows, got " << *panels;
    }
  }
  int64_t bytes = codeBytes(getFormat(), rows, cols, lanes, dot);
  if (packed.getDimSize(lead) != bytes) {
    return emitOpError("expects ")
           << bytes << " bytes of " << stringifyPackedFormat(getFormat())
           << " codes per matrix, got " << packed.getDimSize(lead);
  }
  if (getOffsetBinary() && getFormat() == PackedFormat::Sign1) {
    return emitOpError("offset_binary applies to int2, int4 and int8 codes");
  }
  if (Value offset = getOffset(); offset && offset.getType() != scale) {
    return emitOpError("expects offsets of the scales' type ")
           << scale << ", got " << offset.getType();
  }
  return success();
}

//===----------------------------------------------------------------------===//
// CausalConv1dOp
//===----------------------------------------------------------------------===//

/// Checks what a convolution and its state write share: a [T, C] input
/// whose C the state holds, a [C, 1, K] weight when given, and a layer the
/// state has.
static LogicalResult verifyConvAccess(Operation *op, Value input, Value weight,
                                      ConvStateType state, int64_t layer) {
  if (failed(verifyActivation(op, input, "input"))) {
    return failure();
  }
  int64_t channels = tensorType(input).getDimSize(1);
  if (weight && (failed(verifyStaticWeight(op, weight, "weight")) ||
                 failed(verifyShape(op, weight, "weight",
                                    {channels, 1, state.getWidth()})))) {
    return failure();
  }
  if (state.getChannels() != channels) {
    return op->emitOpError("expects the state to hold ")
           << channels << " channels, got " << state;
  }
  return verifyLayer(op, layer, state.getLayers());
}

LogicalResult CausalConv1dOp::verify() {
  // I64Attr getters return the bits unsigned; compare them signed.
  return verifyConvAccess(*this, getInput(), getWeight(), getState().getType(),
                          static_cast<int64_t>(getLayer()));
}

void CausalConv1dOp::getEffects(
    SmallVectorImpl<SideEffects::EffectInstance<MemoryEffects::Effect>>
        &effects) {
  effects.emplace_back(MemoryEffects::Read::get(), &getStateMutable());
  effects.emplace_back(MemoryEffects::Write::get(), &getStateMutable());
}

LogicalResult CachedConv1dOp::verify() {
  return verifyConvAccess(*this, getInput(), getWeight(), getState().getType(),
                          static_cast<int64_t>(getLayer()));
}

void CachedConv1dOp::getEffects(
    SmallVectorImpl<SideEffects::EffectInstance<MemoryEffects::Effect>>
        &effects) {
  effects.emplace_back(MemoryEffects::Read::get(), &getStateMutable());
}

LogicalResult ConvStateWriteOp::verify() {
  return verifyConvAccess(*this, getInput(), Value(), getState().getType(),
                          static_cast<int64_t>(getLayer()));
}

void ConvStateWriteOp::getEffects(
    SmallVectorImpl<SideEffects::EffectInstance<MemoryEffects::Effect>>
        &effects) {
  effects.emplace_back(MemoryEffects::Write::get(), &getStateMutable());
}

LogicalResult ConvStateLayerOp::verify() {
  ConvStateType state = getState().getType();
  ConvStateType view = getResult().getType();
  int64_t layer = static_cast<int64_t>(getLayer());
  if (failed(verifyLayer(*this, layer, state.getLayers()))) {
    return failure();
  }
  if (view.getLayers() != 1 || view.getChannels() != state.getChannels() ||
      view.getWidth() != state.getWidth() ||
      view.getElementType() != state.getElementType()) {
    return emitOpError("expects a one-layer view of the same channels, width "
                       "and element type, got ")
           << view;
  }
  return success();
}

//===----------------------------------------------------------------------===//
// RouteOp
//===----------------------------------------------------------------------===//

LogicalResult RouteOp::verify() {
  FailureOr<int64_t> experts = verifyRowProjection(
      *this, getInput(), getRouter(), getBias(), "router", "E");
  if (failed(experts)) {
    return failure();
  }
  auto input = tensorType(getInput());
  int64_t k = getTopK();
  if (k < 1 || k > *experts) {
    return emitOpError("expects top_k in [1, ") << *experts << "], got " << k;
  }
  int64_t tokens = input.getDimSize(0);
  if (failed(verifyShape(*this, getIndices(), "indices", {tokens, k})) ||
      failed(verifyShape(*this, getWeights(), "weights", {tokens, k}))) {
    return failure();
  }
  if (getRenormEps().convertToDouble() < 0) {
    return emitOpError("expects a non-negative renorm_eps");
  }
  if (getCapacity() == CapacityRule::DropLowestGate &&
      getCapacityFactor().convertToDouble() <= 0) {
    return emitOpError(
        "expects a positive capacity_factor with the drop_lowest_gate rule");
  }
  return success();
}

//===----------------------------------------------------------------------===//
// ExpertDispatchOp
//===----------------------------------------------------------------------===//

LogicalResult ExpertDispatchOp::verify() {
  if (failed(verifyActivation(*this, getInput(), "input")) ||
      failed(verifyStaticWeight(*this, getUp(), "up")) ||
      failed(verifyStaticWeight(*this, getDown(), "down"))) {
    return failure();
  }
  auto input = tensorType(getInput());
  auto up = tensorType(getUp());
  int64_t experts = up.getDimSize(0), ffn = up.getDimSize(1);
  int64_t model = input.getDimSize(1);
  if (up.getDimSize(2) != model) {
    return emitOpError("expects up [E, F, ")
           << model << "], got " << shapeString(up.getShape());
  }
  if (getGate() &&
      failed(verifyShape(*this, getGate(), "gate", up.getShape()))) {
    return failure();
  }
  if (failed(verifyShape(*this, getDown(), "down", {experts, model, ffn}))) {
    return failure();
  }
  auto indices = tensorType(getIndices());
  if (failed(verifyShape(*this, getWeights(), "weights", indices.getShape())) ||
      failed(verifySameTokens(*this, getInput(), "input", getIndices(),
                              "indices"))) {
    return failure();
  }
  if (getResult().getType() != getInput().getType()) {
    return emitOpError("expects the result type to match the input, got ")
           << getResult().getType();
  }
  return verifyInt8Activations(*this, getInt8Activations(),
                               {getGate(), getUp(), getDown()});
}

//===----------------------------------------------------------------------===//
// LogitsOp
//===----------------------------------------------------------------------===//

LogicalResult LogitsOp::verify() {
  FailureOr<int64_t> vocab = verifyRowProjection(*this, getInput(), getWeight(),
                                                 getBias(), "weight", "V");
  if (failed(vocab)) {
    return failure();
  }
  if (failed(verifyShape(*this, getResult(), "result",
                         {tensorType(getInput()).getDimSize(0), *vocab}))) {
    return failure();
  }
  return verifyInt8Activations(*this, getInt8Activations(), {getWeight()});
}

//===----------------------------------------------------------------------===//
// FusedOp
//===----------------------------------------------------------------------===//

void FusedOp::build(OpBuilder &builder, OperationState &state, StringRef name,
                    TypeRange results) {
  state.addAttribute(getNameAttrName(state.name), builder.getStringAttr(name));
  state.addTypes(results);
  Region *body = state.addRegion();
  body->push_back(new Block());
}

static LogicalResult verifyYield(Operation *op, Block &body,
                                 TypeRange expected) {
  auto yield = dyn_cast<YieldOp>(body.getTerminator());
  if (!yield) {
    return op->emitOpError("expects its body to end in moe.yield");
  }
  if (TypeRange(yield.getValues().getTypes()) != expected) {
    return op->emitOpError("expects moe.yield of the result types");
  }
  return success();
}

LogicalResult FusedOp::verify() {
  if (getName().empty()) {
    return emitOpError("expects a fusion name");
  }
  return verifyYield(*this, getBody().front(), getResultTypes());
}

//===----------------------------------------------------------------------===//
// KernelOp
//===----------------------------------------------------------------------===//

void KernelOp::build(OpBuilder &builder, OperationState &state, StringRef name,
                     FunctionType type) {
  state.addAttribute(SymbolTable::getSymbolAttrName(),
                     builder.getStringAttr(name));
  state.addAttribute(getFunctionTypeAttrName(state.name), TypeAttr::get(type));
  Region *body = state.addRegion();
  auto *block = new Block();
  for (Type input : type.getInputs()) {
    block->addArgument(input, state.location);
  }
  body->push_back(block);
}

ParseResult KernelOp::parse(OpAsmParser &parser, OperationState &result) {
  auto buildType = [](Builder &builder, ArrayRef<Type> args,
                      ArrayRef<Type> results,
                      function_interface_impl::VariadicFlag, std::string &) {
    return builder.getFunctionType(args, results);
  };
  if (failed(function_interface_impl::parseFunctionOp(
          parser, result, /*allowVariadic=*/false,
          getFunctionTypeAttrName(result.name), buildType,
          getArgAttrsAttrName(result.name),
          getResAttrsAttrName(result.name)))) {
    return failure();
  }
  // The terminator is implicit only when there is nothing to yield.
  KernelOp::ensureTerminator(*result.regions.front(), parser.getBuilder(),
                             result.location);
  return success();
}

void KernelOp::print(OpAsmPrinter &p) {
  function_interface_impl::printFunctionOp(
      p, *this, /*isVariadic=*/false, getFunctionTypeAttrName(),
      getArgAttrsAttrName(), getResAttrsAttrName());
}

LogicalResult KernelOp::verify() {
  Block &body = getBody().front();
  if (TypeRange(body.getArgumentTypes()) != getArgumentTypes()) {
    return emitOpError("expects the block arguments to match the signature");
  }
  return verifyYield(*this, body, getResultTypes());
}

//===----------------------------------------------------------------------===//
// CallOp
//===----------------------------------------------------------------------===//

LogicalResult CallOp::verifySymbolUses(SymbolTableCollection &symbolTable) {
  auto kernel =
      symbolTable.lookupNearestSymbolFrom<KernelOp>(*this, getCalleeAttr());
  if (!kernel) {
    return emitOpError("expects '") << getCallee() << "' to name a moe.kernel";
  }
  FunctionType type = kernel.getFunctionType();
  if (TypeRange(getOperands().getTypes()) != type.getInputs() ||
      TypeRange(getResultTypes()) != type.getResults()) {
    return emitOpError("expects the types of '")
           << getCallee() << "': " << type;
  }
  return success();
}

void CallOp::getEffects(
    SmallVectorImpl<SideEffects::EffectInstance<MemoryEffects::Effect>>
        &effects) {
  // A kernel is pure but for the session state it is handed.
  for (OpOperand &operand : getOperandsMutable()) {
    if (isa<KVCacheType, ConvStateType>(operand.get().getType())) {
      effects.emplace_back(MemoryEffects::Read::get(), &operand);
      effects.emplace_back(MemoryEffects::Write::get(), &operand);
    }
  }
}

#define GET_OP_CLASSES
#include "dialects/MoE/IR/MoEOps.cpp.inc"
