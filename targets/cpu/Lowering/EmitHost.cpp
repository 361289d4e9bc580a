//===- EmitHost.cpp - Host functions as EmitC -----------------------------===//
//
// Algorithm:
//   1. Declare every kernel as an external C function with the machine
//      signature kernelAbi() gives (targets/common/KernelAbi.h).
//   2. For every entry function (`moe.entry`), emit
//        int32_t moe_<entry>(moert_exec_t *exec, int32_t n_tokens,
//                            int32_t position)
//      that, per `moe.call`, describes each kernel argument as a Halide
//      buffer (weights at their `moe.offset` in the weight file, tensors at
//      their `moe.arena` offset, the entry's result in the caller's logits,
//      KV-cache layers through moert_kv_buffer, conv-state layers through
//      moert_conv_buffer), calls the kernel and returns
//      its status if it failed.
//   3. Define the model descriptor (runtime/include/moert/host_abi.h) from
//      the module's attributes (`moe.device_api`, e.g. "cuda": the GPU API
//      whose Halide device interface the kernels use), and erase the moe-level
//      functions and kernels. What is left translates to C with
//      emitc::translateToCpp.
//
//===----------------------------------------------------------------------===//

#include "targets/cpu/Lowering/Passes.h"

#include "targets/common/KernelAbi.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FormatVariadic.h"

namespace mlir::moe::cpu {
#define GEN_PASS_DEF_MOECPUEMITHOSTPASS
#include "targets/cpu/Lowering/Passes.h.inc"

namespace {

/// A C string literal holding `text`.
std::string cString(StringRef text) {
  std::string out = "\"";
  for (char c : text) {
    switch (c) {
    case '"':
      out += "\\\"";
      break;
    case '\\':
      out += "\\\\";
      break;
    case '\n':
      out += "\\n";
      break;
    default:
      if (static_cast<unsigned char>(c) < 0x20) {
        out += llvm::formatv("\\{0:o3}", static_cast<unsigned>(c)).str();
      } else {
        out += c;
      }
    }
  }
  return out + "\"";
}

/// The halide_type_code_t of `element` (MOERT_FLOAT, MOERT_UINT, MOERT_INT).
int elementCode(Type element) {
  if (isa<FloatType>(element)) {
    return 2;
  }
  return element.isUnsignedInteger() ? 1 : 0;
}

class HostEmitter {
public:
  HostEmitter(ModuleOp module) : module(module), ctx(module.getContext()) {}

  LogicalResult run();

private:
  Type opaque(StringRef name) { return emitc::OpaqueType::get(ctx, name); }
  Type pointer(Type pointee) { return emitc::PointerType::get(pointee); }
  Type bufferPtr() { return pointer(opaque("halide_buffer_t")); }
  Type execPtr() { return pointer(opaque("moert_exec_t")); }
  Attribute i32(int64_t value) {
    return IntegerAttr::get(IntegerType::get(ctx, 32), value);
  }
  Attribute i64(int64_t value) {
    return IntegerAttr::get(IntegerType::get(ctx, 64), value);
  }
  Attribute operandRef(int64_t index) {
    return IntegerAttr::get(IndexType::get(ctx), index);
  }

  Value callOpaque(OpBuilder &b, Location loc, Type result, StringRef callee,
                   ValueRange operands, ArrayRef<Attribute> args) {
    auto op = emitc::CallOpaqueOp::create(
        b, loc, result ? TypeRange(result) : TypeRange(), callee, operands,
        b.getArrayAttr(args));
    return result ? op.getResult(0) : Value();
  }

  /// A fresh moert_buffer_t variable, returned as a pointer to it.
  Value newBufferStorage(OpBuilder &b, Location loc) {
    Type storage = opaque("moert_buffer_t");
    Value var =
        emitc::VariableOp::create(b, loc, emitc::LValueType::get(storage),
                                  emitc::OpaqueAttr::get(ctx, ""));
    return emitc::AddressOfOp::create(b, loc, pointer(storage), var);
  }

  /// A dense buffer at `ref` with the shape of `type` (Halide order).
  Value tensorBuffer(OpBuilder &b, Location loc, Value ref,
                     RankedTensorType type, Value nTokens);

  LogicalResult declareKernels(OpBuilder &b);
  /// After `call`: moert_dump of every result it names (moe.dump, and
  /// moe.trace with --trace-kernels).
  void emitDumps(OpBuilder &b, CallOp call, Value exec, Value nTokens,
                 const DenseMap<Value, Value> &refOf);
  LogicalResult emitEntry(OpBuilder &b, func::FuncOp func);
  void emitDescriptor(OpBuilder &b, ArrayRef<std::string> entries);

  ModuleOp module;
  MLIRContext *ctx;
  DenseMap<StringAttr, SmallVector<KernelAbiSlot>> abis;
};

Value HostEmitter::tensorBuffer(OpBuilder &b, Location loc, Value ref,
                                RankedTensorType type, Value nTokens) {
  Value storage = newBufferStorage(b, loc);
  SmallVector<Value> operands{storage, ref};
  Type element = type.getElementType();
  SmallVector<Attribute> args{
      operandRef(0), operandRef(1), i32(elementCode(element)),
      i32(element.getIntOrFloatBitWidth()), i32(type.getRank())};
  ArrayRef<int64_t> shape = type.getShape();
  for (int i = 0; i < 4; ++i) {
    if (i >= type.getRank()) {
      args.push_back(i32(1));
      continue;
    }
    int64_t extent = shape[type.getRank() - 1 - i];
    if (ShapedType::isDynamic(extent)) {
      operands.push_back(nTokens);
      args.push_back(operandRef(static_cast<int64_t>(operands.size()) - 1));
    } else {
      args.push_back(i32(extent));
    }
  }
  return callOpaque(b, loc, bufferPtr(), "moert_buffer", operands, args);
}

void HostEmitter::emitDumps(OpBuilder &b, CallOp call, Value exec,
                            Value nTokens,
                            const DenseMap<Value, Value> &refOf) {
  SmallVector<std::pair<Value, Attribute>> dumps;
  // A family's names (moe.dump), then --trace-kernels' (moe.trace).
  for (StringRef attr : {"moe.dump", "moe.trace"}) {
    if (auto names = call->getAttrOfType<ArrayAttr>(attr)) {
      for (auto [result, name] : llvm::zip(call.getResults(), names)) {
        dumps.push_back({result, name});
      }
    }
  }
  for (auto [result, nameAttr] : dumps) {
    StringRef name = cast<StringAttr>(nameAttr).getValue();
    auto type = dyn_cast<RankedTensorType>(result.getType());
    if (name.empty() || !type || type.getRank() < 1) {
      continue;
    }
    int64_t width = 1;
    for (int64_t d : type.getShape().drop_front()) {
      width *= d;
    }
    SmallVector<Value> operands{exec, refOf.lookup(result)};
    SmallVector<Attribute> args{operandRef(0),
                                emitc::OpaqueAttr::get(ctx, cString(name)),
                                operandRef(1)};
    if (ShapedType::isDynamic(type.getDimSize(0))) {
      operands.push_back(nTokens);
      args.push_back(operandRef(2));
    } else {
      args.push_back(i32(type.getDimSize(0)));
    }
    args.append({i32(width), i32(elementCode(type.getElementType()))});
    callOpaque(b, call.getLoc(), Type(), "moert_dump", operands, args);
  }
}

LogicalResult HostEmitter::declareKernels(OpBuilder &b) {
  for (KernelOp kernel : module.getOps<KernelOp>()) {
    FailureOr<SmallVector<KernelAbiSlot>> abi = kernelAbi(kernel);
    if (failed(abi)) {
      return failure();
    }
    SmallVector<Type> inputs{pointer(opaque("void"))};
    for (const KernelAbiSlot &slot : *abi) {
      inputs.push_back(slot.kind == KernelAbiSlot::Kind::Scalar
                           ? Type(IntegerType::get(ctx, 32))
                           : bufferPtr());
    }
    auto decl = emitc::FuncOp::create(
        b, kernel.getLoc(), kernel.getSymName(),
        b.getFunctionType(inputs, {IntegerType::get(ctx, 32)}));
    decl.setSpecifiersAttr(b.getStrArrayAttr({"extern"}));
    decl.setPrivate();
    abis[kernel.getSymNameAttr()] = *abi;
  }
  return success();
}

LogicalResult HostEmitter::emitEntry(OpBuilder &b, func::FuncOp func) {
  Location loc = func.getLoc();
  Type i32Type = IntegerType::get(ctx, 32);
  auto entry = emitc::FuncOp::create(
      b, loc, ("moe_" + func.getSymName()).str(),
      b.getFunctionType({execPtr(), i32Type, i32Type}, {i32Type}));
  entry.setSpecifiersAttr(b.getStrArrayAttr({"static"}));
  Block *body = entry.addEntryBlock();
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(body);
  Value exec = body->getArgument(0);
  Value nTokens = body->getArgument(1);
  Value position = body->getArgument(2);
  Value userContext = callOpaque(b, loc, pointer(opaque("void")),
                                 "moert_user_context", {exec}, {operandRef(0)});

  // Where every tensor the kernels read or write is (a moert_ref_t: host
  // and, for a GPU model, device address).
  DenseMap<Value, Value> refOf;
  DenseMap<Value, int64_t> layerOf;
  Block &source = func.getBody().front();
  Value tokens = source.getArgument(0);
  Type ref = opaque("moert_ref_t");
  refOf[tokens] =
      callOpaque(b, loc, ref, "moert_tokens_at", {exec}, {operandRef(0)});

  for (Operation &op : source) {
    if (auto weight = dyn_cast<WeightOp>(op)) {
      auto offset = weight->getAttrOfType<IntegerAttr>("moe.offset");
      if (!offset) {
        return weight.emitOpError("has no moe.offset; run moe-plan-weights "
                                  "before moe-cpu-emit-host");
      }
      refOf[weight] = callOpaque(b, weight.getLoc(), ref, "moert_weight_at",
                                 {exec}, {operandRef(0), i64(offset.getInt())});
      continue;
    }
    if (auto view = dyn_cast<KVCacheLayerOp>(op)) {
      layerOf[view] = view.getLayer();
      continue;
    }
    if (auto view = dyn_cast<ConvStateLayerOp>(op)) {
      layerOf[view] = view.getLayer();
      continue;
    }
    if (isa<func::ReturnOp>(op)) {
      continue;
    }
    auto call = dyn_cast<CallOp>(op);
    if (!call) {
      return op.emitOpError("cannot be emitted as host code; kernels must be "
                            "outlined first (moe-outline-kernels)");
    }
    auto arena = call->getAttrOfType<DenseI64ArrayAttr>("moe.arena");
    if (!arena || arena.size() != static_cast<int64_t>(call.getNumResults())) {
      return call.emitOpError("has no arena plan; run moe-plan-arena first");
    }
    for (auto [result, offset] :
         llvm::zip(call.getResults(), arena.asArrayRef())) {
      refOf[result] = offset < 0
                          ? callOpaque(b, call.getLoc(), ref, "moert_logits_at",
                                       {exec}, {operandRef(0)})
                          : callOpaque(b, call.getLoc(), ref, "moert_arena_at",
                                       {exec}, {operandRef(0), i64(offset)});
    }
    auto found = abis.find(call.getCalleeAttr().getAttr());
    if (found == abis.end()) {
      return call.emitOpError("calls an unknown kernel");
    }
    // The kernel whose only result is the logits runs on the last rows the
    // session wants (moert_logits_rows: the last alone when it reads only
    // the last token's logits, as generation does), its per-token tensors
    // viewed from that row: a prefill's head then costs one token's, not
    // the prompt's (23% of SSMoELM's f32 prefill was the head).
    Value callTokens = nTokens;
    // Only a kernel of tensors alone: one reading the KV cache at the call's
    // position would need the position of the row, not of the call.
    bool lastRows = false;
    if (call.getNumResults() == 1 && arena.asArrayRef()[0] < 0 &&
        llvm::all_of(
            found->second,
            [](const KernelAbiSlot &slot) {
              return slot.kind == KernelAbiSlot::Kind::InputTensor ||
                     slot.kind == KernelAbiSlot::Kind::OutputTensor;
            })) {
      auto type = dyn_cast<RankedTensorType>(call.getResult(0).getType());
      lastRows = type && type.getRank() > 0 && type.isDynamicDim(0);
    }
    if (lastRows) {
      callTokens = callOpaque(b, call.getLoc(), i32Type, "moert_logits_rows",
                              {exec, nTokens}, {operandRef(0), operandRef(1)});
    }
    SmallVector<Value> args{userContext};
    for (const KernelAbiSlot &slot : found->second) {
      using Kind = KernelAbiSlot::Kind;
      Location l = call.getLoc();
      switch (slot.kind) {
      case Kind::Scalar:
        args.push_back(position);
        break;
      case Kind::InputTensor:
      case Kind::OutputTensor: {
        Value value = slot.kind == Kind::InputTensor
                          ? call.getOperand(slot.index)
                          : call.getResult(slot.index);
        Value host = refOf.lookup(value);
        if (!host) {
          return call.emitOpError("argument ")
                 << slot.index << " has no memory";
        }
        auto type = cast<RankedTensorType>(value.getType());
        if (auto weight = value.getDefiningOp<WeightOp>()) {
          type = RankedTensorType::get(
              storedWeightShape(type, weight.getLayout(),
                                weight.getPanel().value_or(0)),
              type.getElementType());
        }
        if (lastRows && type.getRank() > 0 && type.isDynamicDim(0) &&
            !llvm::any_of(type.getShape().drop_front(),
                          ShapedType::isDynamic)) {
          int64_t rowBytes = type.getElementTypeBitWidth() / 8;
          for (int64_t d : type.getShape().drop_front()) {
            rowBytes *= d;
          }
          host = callOpaque(
              b, l, ref, "moert_ref_last_rows", {host, nTokens, callTokens},
              {operandRef(0), operandRef(1), operandRef(2), i64(rowBytes)});
        }
        args.push_back(tensorBuffer(b, l, host, type, callTokens));
        break;
      }
      case Kind::CacheKeysRead:
      case Kind::CacheValuesRead:
      case Kind::CacheKeysWrite:
      case Kind::CacheValuesWrite: {
        Value view = call.getOperand(slot.index);
        auto layer = layerOf.find(view);
        if (layer == layerOf.end()) {
          return call.emitOpError("cache argument ")
                 << slot.index << " is not a moe.kv_cache_layer view";
        }
        auto type = cast<KVCacheType>(view.getType());
        bool values = slot.kind == Kind::CacheValuesRead ||
                      slot.kind == Kind::CacheValuesWrite;
        bool write = slot.kind == Kind::CacheKeysWrite ||
                     slot.kind == Kind::CacheValuesWrite;
        Value storage = newBufferStorage(b, l);
        SmallVector<Value> operands{storage, exec};
        SmallVector<Attribute> cargs{
            operandRef(0),          operandRef(1),
            i32(layer->second),     i32(values ? 1 : 0),
            i32(type.getKvHeads()), i32(type.getHeadDim())};
        // A write covers the new positions; a read the whole capacity.
        if (write) {
          operands.append({position, nTokens});
          cargs.append({operandRef(2), operandRef(3)});
        } else {
          operands.push_back(callOpaque(b, l, i32Type, "moert_kv_capacity",
                                        {exec}, {operandRef(0)}));
          cargs.append({i32(0), operandRef(2)});
        }
        args.push_back(
            callOpaque(b, l, bufferPtr(), "moert_kv_buffer", operands, cargs));
        break;
      }
      case Kind::ConvStateRead:
      case Kind::ConvStateWrite: {
        // Read or written, the buffer is the layer's whole ring.
        Value view = call.getOperand(slot.index);
        auto layer = layerOf.find(view);
        if (layer == layerOf.end()) {
          return call.emitOpError("conv-state argument ")
                 << slot.index << " is not a moe.conv_state_layer view";
        }
        auto type = cast<ConvStateType>(view.getType());
        Value storage = newBufferStorage(b, l);
        args.push_back(
            callOpaque(b, l, bufferPtr(), "moert_conv_buffer", {storage, exec},
                       {operandRef(0), operandRef(1), i32(layer->second),
                        i32(type.getChannels()), i32(type.getWidth() - 1)}));
        break;
      }
      }
    }
    auto status = emitc::CallOp::create(b, call.getLoc(), call.getCalleeAttr(),
                                        TypeRange{i32Type}, args);
    callOpaque(b, call.getLoc(), Type(), "MOERT_CHECK", status.getResults(),
               {operandRef(0)});
    emitDumps(b, call, exec, nTokens, refOf);
  }
  Value zero = emitc::ConstantOp::create(b, loc, i32Type, i32(0));
  emitc::ReturnOp::create(b, loc, zero);
  return success();
}

void HostEmitter::emitDescriptor(OpBuilder &b, ArrayRef<std::string> entries) {
  auto intAttr = [&](StringRef name) -> int64_t {
    auto attr = module->getAttrOfType<IntegerAttr>(name);
    return attr ? attr.getInt() : 0;
  };
  auto strAttr = [&](StringRef name) -> std::string {
    auto attr = module->getAttrOfType<StringAttr>(name);
    return attr ? attr.getValue().str() : "";
  };
  KVCacheType cache;
  ConvStateType conv;
  for (auto func : module.getOps<func::FuncOp>()) {
    for (Type type : func.getArgumentTypes()) {
      if (auto c = dyn_cast<KVCacheType>(type)) {
        cache = c;
      }
      if (auto c = dyn_cast<ConvStateType>(type)) {
        conv = c;
      }
    }
  }
  auto entryOr = [&](StringRef name) {
    return llvm::is_contained(entries, name) ? ("moe_" + name).str()
                                             : std::string("0");
  };
  // The kernels' Halide features, checked against the CPU at start.
  std::string features = "0, 0";
  std::string text;
  if (auto words =
          module->getAttrOfType<DenseI64ArrayAttr>("moe.halide_features")) {
    std::vector<std::string> list;
    for (int64_t word : words.asArrayRef()) {
      list.push_back(
          llvm::formatv("0x{0:x-}u", static_cast<uint64_t>(word)).str());
    }
    text += "static const uint64_t moe_halide_features[] = {" +
            llvm::join(list, ", ") + "};\n";
    features = llvm::formatv("{0}, moe_halide_features", words.size()).str();
  }
  // A GPU model names the Halide device interface of its kernels.
  std::string device = "0", deviceApi = "0";
  if (auto api = module->getAttrOfType<StringAttr>("moe.device_api")) {
    device = ("halide_" + api.getValue() + "_device_interface").str();
    deviceApi = cString(api.getValue().upper());
    text += "extern const struct halide_device_interface_t *" + device +
            "(void);\n";
  }
  text += llvm::formatv(
      "const moert_model_desc_t moert_model = {{\n"
      "    MOERT_ABI_VERSION,\n"
      "    {0},\n    {1},\n    {2},\n"
      "    /*vocab=*/{3}, /*n_layers=*/{4}, /*n_kv_heads=*/{5}, "
      "/*head_dim=*/{6},\n"
      "    /*conv_channels=*/{15}, /*conv_width=*/{16},\n"
      "    /*context_length=*/{7}, /*prefill_chunk=*/{8},\n"
      "    /*arena_bytes=*/{9}u, /*weights_bytes=*/{10}u,\n"
      "    /*weights_hash=*/0x{11:x-}u,\n"
      "    {12}, {13},\n"
      "    /*halide_feature_words, halide_features=*/{14},\n"
      "    /*prefill_whole_sequence=*/{17},\n"
      "    /*device_interface=*/{18}, /*device_api=*/{19}};",
      cString(strAttr("moe.family")), cString(strAttr("moe.target")),
      cString(strAttr("moe.manifest")), intAttr("moe.vocab"),
      cache ? cache.getLayers() : 0, cache ? cache.getKvHeads() : 0,
      cache ? cache.getHeadDim() : 0, intAttr("moe.context_length"),
      intAttr("moe.prefill_chunk"), intAttr("moe.arena_bytes"),
      intAttr("moe.weights_bytes"),
      static_cast<uint64_t>(intAttr("moe.weights_hash")), entryOr("prefill"),
      entryOr("decode"), features, conv ? conv.getChannels() : 0,
      conv ? conv.getWidth() : 0, intAttr("moe.prefill_whole_sequence"), device,
      deviceApi);
  emitc::VerbatimOp::create(b, module.getLoc(), b.getStringAttr(text));
}

LogicalResult HostEmitter::run() {
  OpBuilder b(ctx);
  Block *body = module.getBody();
  b.setInsertionPointToStart(body);
  emitc::IncludeOp::create(b, module.getLoc(), "moert/host_abi.h",
                           /*is_standard_include=*/false);
  if (failed(declareKernels(b))) {
    return failure();
  }
  std::vector<std::string> entries;
  SmallVector<Operation *> toErase;
  for (Operation &op : *body) {
    if (isa<KernelOp>(op)) {
      toErase.push_back(&op);
    }
  }
  for (auto func : llvm::to_vector(module.getOps<func::FuncOp>())) {
    auto entry = func->getAttrOfType<StringAttr>("moe.entry");
    if (!entry) {
      return func.emitOpError("is not an entry point (no moe.entry)");
    }
    b.setInsertionPointToEnd(body);
    if (failed(emitEntry(b, func))) {
      return failure();
    }
    entries.push_back(entry.getValue().str());
    toErase.push_back(func);
  }
  b.setInsertionPointToEnd(body);
  emitDescriptor(b, entries);
  for (Operation *op : toErase) {
    op->erase();
  }
  return success();
}

struct EmitHostPass : impl::MoECpuEmitHostPassBase<EmitHostPass> {
  void runOnOperation() override {
    if (failed(HostEmitter(getOperation()).run())) {
      return signalPassFailure();
    }
  }
};

} // namespace
} // namespace mlir::moe::cpu
