//===- OutlineKernels.cpp - Fused groups and compute ops become kernels ---===//
//
// Algorithm, for every function of the module:
//   1. Each top-level `moe.fused` and each compute op (anything but
//      moe.weight, moe.kv_cache_layer, constants and the return) is one
//      kernel call.
//   2. Its operands from outside become kernel arguments, in order of first
//      use. Session state (a KV cache, a convolution state) used at layer L
//      becomes a one-layer view made in the host function, and the ops
//      inside use layer 0 of it.
//      A packed weight's `moe.dequantize` is not a kernel of its own: it is
//      cloned into every kernel that reads the weight (its code bytes and
//      scales become the arguments), so f32 copies are never materialised.
//   3. The kernel is hashed (body and signature, printed without its name);
//      kernels with the same hash are one kernel.
//
//===----------------------------------------------------------------------===//

#include "dialects/MoE/Transforms/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/IR/IRMapping.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/xxhash.h"

namespace mlir::moe {
#define GEN_PASS_DEF_MOEOUTLINEKERNELSPASS
#include "dialects/MoE/Transforms/Passes.h.inc"

std::string kernelContentHash(KernelOp kernel) {
  // The name is not part of the content; print a clone without it.
  OpBuilder builder(kernel.getContext());
  auto clone = cast<KernelOp>(builder.clone(*kernel));
  clone.setSymName("kernel");
  std::string text;
  llvm::raw_string_ostream os(text);
  clone->print(os, OpPrintingFlags().useLocalScope());
  clone->erase();
  return llvm::utohexstr(llvm::xxh3_64bits(text), /*LowerCase=*/true,
                         /*Width=*/16);
}

namespace {

bool isHostOp(Operation *op) {
  return isa<WeightOp, KVCacheLayerOp, ConvStateLayerOp, func::ReturnOp,
             arith::ConstantOp>(op);
}

/// Ops recomputed inside each kernel that reads their result.
bool isRematerialized(Operation *op) { return isa<DequantizeOp>(op); }

bool isSessionState(Type type) { return isa<KVCacheType, ConvStateType>(type); }

/// The layer attribute of an op that addresses session state, if any.
std::optional<int64_t> cacheLayer(Operation *op) {
  if (!isa<KVCacheWriteOp, CachedAttentionOp, AttentionOp, CachedConv1dOp,
           ConvStateWriteOp, CausalConv1dOp>(op)) {
    return std::nullopt;
  }
  return op->getAttrOfType<IntegerAttr>("layer").getInt();
}

/// The one-layer view type of session state `type`.
Type layerViewType(Type type) {
  if (auto cache = dyn_cast<KVCacheType>(type)) {
    return KVCacheType::get(type.getContext(), 1, cache.getKvHeads(),
                            cache.getHeadDim(), cache.getElementType());
  }
  auto state = cast<ConvStateType>(type);
  return ConvStateType::get(type.getContext(), 1, state.getChannels(),
                            state.getWidth(), state.getElementType());
}

/// Layer `layer` of session state `value`, viewed in the host function.
Value makeLayerView(OpBuilder &builder, Location loc, Value value,
                    int64_t layer) {
  Type view = layerViewType(value.getType());
  IntegerAttr index = builder.getI64IntegerAttr(layer);
  if (isa<KVCacheType>(value.getType())) {
    return KVCacheLayerOp::create(builder, loc, view, value, index);
  }
  return ConvStateLayerOp::create(builder, loc, view, value, index);
}

void setCacheLayer(Operation *op, int64_t layer) {
  op->setAttr("layer",
              IntegerAttr::get(IntegerType::get(op->getContext(), 64), layer));
}

struct OutlineKernelsPass
    : impl::MoEOutlineKernelsPassBase<OutlineKernelsPass> {
  void runOnOperation() override {
    ModuleOp module = getOperation();
    SymbolTable symbols(module);
    llvm::StringMap<KernelOp> byHash;
    for (auto func : llvm::to_vector(module.getOps<func::FuncOp>())) {
      SmallVector<Operation *> candidates;
      for (Operation &op : func.getBody().front()) {
        if (!isHostOp(&op) && !isRematerialized(&op)) {
          candidates.push_back(&op);
        }
      }
      for (Operation *candidate : candidates) {
        if (failed(outline(candidate, symbols, byHash))) {
          return signalPassFailure();
        }
      }
      // Every reader now has its own copy.
      for (Operation &op : llvm::make_early_inc_range(func.getBody().front())) {
        if (isRematerialized(&op)) {
          if (!op.use_empty()) {
            op.emitOpError("is used outside a kernel");
            return signalPassFailure();
          }
          op.erase();
        }
      }
    }
  }

  LogicalResult outline(Operation *candidate, SymbolTable &symbols,
                        llvm::StringMap<KernelOp> &byHash) {
    MLIRContext *ctx = &getContext();
    SmallVector<Operation *> body;
    std::string name;
    if (auto fused = dyn_cast<FusedOp>(candidate)) {
      for (Operation &op : fused.getBody().front().without_terminator()) {
        body.push_back(&op);
      }
      name = fused.getName().str();
    } else {
      body.push_back(candidate);
      name = candidate->getName().stripDialect().str();
    }
    // Rematerialized producers of what the body reads join it, first.
    SmallVector<Operation *> remat;
    for (Operation *op : body) {
      for (Value operand : op->getOperands()) {
        Operation *def = operand.getDefiningOp();
        if (def && isRematerialized(def) && !llvm::is_contained(remat, def) &&
            !llvm::is_contained(body, def)) {
          remat.push_back(def);
        }
      }
    }
    body.insert(body.begin(), remat.begin(), remat.end());
    llvm::SmallPtrSet<Operation *, 16> inside(body.begin(), body.end());

    // Kernel arguments: outside values in order of first use; a cache gets
    // one argument per layer it is used at.
    struct Arg {
      Value value;
      std::optional<int64_t> layer;
      StringRef access;
    };
    SmallVector<Arg> args;
    auto findArg = [&](Value value, std::optional<int64_t> layer) -> int {
      for (auto [i, arg] : llvm::enumerate(args)) {
        if (arg.value == value && arg.layer == layer) {
          return static_cast<int>(i);
        }
      }
      return -1;
    };
    for (Operation *op : body) {
      for (Value operand : op->getOperands()) {
        Operation *def = operand.getDefiningOp();
        if (def && inside.contains(def)) {
          continue;
        }
        std::optional<int64_t> layer;
        StringRef access;
        if (isSessionState(operand.getType())) {
          layer = cacheLayer(op);
          if (!layer) {
            return op->emitOpError("uses session state without a layer");
          }
          access = isa<KVCacheWriteOp, ConvStateWriteOp>(op) ? "write" : "read";
          if (isa<AttentionOp>(op)) {
            return op->emitOpError("must be split by moe-split-attention "
                                   "before kernels are outlined");
          }
          if (isa<CausalConv1dOp>(op)) {
            return op->emitOpError("must be split by moe-split-causal-conv "
                                   "before kernels are outlined");
          }
        }
        int existing = findArg(operand, layer);
        if (existing >= 0) {
          if (!access.empty() && args[existing].access != access) {
            return op->emitOpError("a kernel cannot both read and write "
                                   "the same state layer");
          }
          continue;
        }
        args.push_back({operand, layer, access});
      }
    }

    // Results: what the candidate produces.
    SmallVector<Value> results(candidate->getResults());
    SmallVector<Value> yielded;
    if (auto fused = dyn_cast<FusedOp>(candidate)) {
      auto yield = cast<YieldOp>(fused.getBody().front().getTerminator());
      yielded.append(yield.getValues().begin(), yield.getValues().end());
    } else {
      yielded = results;
    }

    // The kernel.
    OpBuilder builder(ctx);
    builder.setInsertionPoint(candidate->getParentOfType<func::FuncOp>());
    SmallVector<Type> argTypes;
    SmallVector<Attribute> argAttrs;
    for (const Arg &arg : args) {
      Type type = arg.value.getType();
      NamedAttrList attrs;
      if (isSessionState(type)) {
        type = layerViewType(type);
        attrs.append("moe.cache_access", builder.getStringAttr(arg.access));
      }
      if (auto weight = arg.value.getDefiningOp<WeightOp>()) {
        attrs.append("moe.layout",
                     WeightLayoutAttr::get(ctx, weight.getLayout().value_or(
                                                    WeightLayout::RowMajor)));
        if (std::optional<int64_t> panel = weight.getPanel()) {
          attrs.append("moe.panel", builder.getI64IntegerAttr(*panel));
        }
      }
      argTypes.push_back(type);
      argAttrs.push_back(attrs.getDictionary(ctx));
    }
    auto kernel = KernelOp::create(
        builder, candidate->getLoc(), name,
        builder.getFunctionType(argTypes, TypeRange(ValueRange(yielded))));
    kernel.setAllArgAttrs(argAttrs);
    Block &entry = kernel.getBody().front();
    IRMapping mapping;
    builder.setInsertionPointToStart(&entry);
    for (Operation *op : body) {
      for (OpOperand &operand : op->getOpOperands()) {
        Operation *def = operand.get().getDefiningOp();
        if (def && inside.contains(def)) {
          continue;
        }
        int index =
            findArg(operand.get(), isSessionState(operand.get().getType())
                                       ? cacheLayer(op)
                                       : std::nullopt);
        mapping.map(operand.get(), entry.getArgument(index));
      }
      Operation *clone = builder.clone(*op, mapping);
      // Dump names belong to the call (one kernel serves every layer).
      clone->removeAttr("moe.dump");
      if (cacheLayer(clone)) {
        setCacheLayer(clone, 0);
      }
      // Operand mapping is per op: two ops may map the same state value to
      // different per-layer arguments.
      for (OpOperand &operand : op->getOpOperands()) {
        if (isSessionState(operand.get().getType())) {
          mapping.erase(operand.get());
        }
      }
    }
    SmallVector<Value> kernelResults;
    for (Value value : yielded) {
      kernelResults.push_back(mapping.lookup(value));
    }
    YieldOp::create(builder, candidate->getLoc(), kernelResults);

    // Deduplicate by content.
    std::string hash = kernelContentHash(kernel);
    KernelOp target;
    auto known = byHash.find(hash);
    if (known != byHash.end()) {
      target = known->second;
      kernel->erase();
    } else {
      kernel.setSymName(name + "_" + hash.substr(0, 8));
      symbols.insert(kernel);
      byHash[hash] = kernel;
      target = kernel;
      ++numKernels;
    }

    // The call, with one-layer state views made in the host function.
    builder.setInsertionPoint(candidate);
    SmallVector<Value> operands;
    for (const Arg &arg : args) {
      Value value = arg.value;
      if (isSessionState(value.getType())) {
        value = makeLayerView(builder, candidate->getLoc(), value, *arg.layer);
      }
      operands.push_back(value);
    }
    auto call = CallOp::create(builder, candidate->getLoc(),
                               target.getFunctionType().getResults(),
                               target.getSymName(), operands,
                               /*arg_attrs=*/nullptr, /*res_attrs=*/nullptr);
    // The dump names of what the call returns (`--dump-activations`).
    SmallVector<StringRef> dumpNames;
    bool named = false;
    for (Value value : yielded) {
      StringRef name;
      if (auto result = dyn_cast<OpResult>(value)) {
        if (auto names =
                result.getOwner()->getAttrOfType<ArrayAttr>("moe.dump");
            names && result.getResultNumber() < names.size()) {
          name = cast<StringAttr>(names[result.getResultNumber()]).getValue();
        }
      }
      named |= !name.empty();
      dumpNames.push_back(name);
    }
    if (named) {
      call->setAttr("moe.dump", builder.getStrArrayAttr(dumpNames));
    }
    candidate->replaceAllUsesWith(call.getResults());
    candidate->erase();
    ++numCalls;
    return success();
  }
};

} // namespace
} // namespace mlir::moe
