//===- OutlineKernels.cpp - Fused groups and compute ops become kernels ---===//
//
// Algorithm, for every function of the module:
//   1. Each top-level `moe.fused` and each compute op (anything but
//      moe.weight, moe.kv_cache_layer, constants and the return) is one
//      kernel call.
//   2. Its operands from outside become kernel arguments, in order of first
//      use. A KV cache used at layer L becomes a one-layer view made in the
//      host function, and the ops inside use layer 0 of it.
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
  return isa<WeightOp, KVCacheLayerOp, func::ReturnOp, arith::ConstantOp>(op);
}

/// The layer attribute of an op that addresses a KV cache, if any.
std::optional<int64_t> cacheLayer(Operation *op) {
  if (auto write = dyn_cast<KVCacheWriteOp>(op)) {
    return write.getLayer();
  }
  if (auto read = dyn_cast<CachedAttentionOp>(op)) {
    return read.getLayer();
  }
  if (auto attention = dyn_cast<AttentionOp>(op)) {
    return attention.getLayer();
  }
  return std::nullopt;
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
        if (!isHostOp(&op)) {
          candidates.push_back(&op);
        }
      }
      for (Operation *candidate : candidates) {
        if (failed(outline(candidate, symbols, byHash))) {
          return signalPassFailure();
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
        if (isa<KVCacheType>(operand.getType())) {
          layer = cacheLayer(op);
          if (!layer) {
            return op->emitOpError("uses a KV cache without a layer");
          }
          access = isa<KVCacheWriteOp>(op) ? "write" : "read";
          if (isa<AttentionOp>(op)) {
            return op->emitOpError("must be split by moe-split-attention "
                                   "before kernels are outlined");
          }
        }
        int existing = findArg(operand, layer);
        if (existing >= 0) {
          if (!access.empty() && args[existing].access != access) {
            return op->emitOpError("a kernel cannot both read and write "
                                   "the same cache layer");
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
      if (auto cache = dyn_cast<KVCacheType>(type)) {
        type = KVCacheType::get(ctx, 1, cache.getKvHeads(), cache.getHeadDim(),
                                cache.getElementType());
        attrs.append("moe.cache_access", builder.getStringAttr(arg.access));
      }
      if (auto weight = arg.value.getDefiningOp<WeightOp>()) {
        attrs.append("moe.layout",
                     WeightLayoutAttr::get(ctx, weight.getLayout().value_or(
                                                    WeightLayout::RowMajor)));
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
            findArg(operand.get(), isa<KVCacheType>(operand.get().getType())
                                       ? cacheLayer(op)
                                       : std::nullopt);
        mapping.map(operand.get(), entry.getArgument(index));
      }
      Operation *clone = builder.clone(*op, mapping);
      if (cacheLayer(clone)) {
        setCacheLayer(clone, 0);
      }
      // Operand mapping is per op: two ops may map the same cache value to
      // different per-layer arguments.
      for (OpOperand &operand : op->getOpOperands()) {
        if (isa<KVCacheType>(operand.get().getType())) {
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

    // The call, with one-layer cache views made in the host function.
    builder.setInsertionPoint(candidate);
    SmallVector<Value> operands;
    for (const Arg &arg : args) {
      Value value = arg.value;
      if (auto cache = dyn_cast<KVCacheType>(value.getType())) {
        auto viewType =
            KVCacheType::get(ctx, 1, cache.getKvHeads(), cache.getHeadDim(),
                             cache.getElementType());
        value = KVCacheLayerOp::create(builder, candidate->getLoc(), viewType,
                                       value,
                                       builder.getI64IntegerAttr(*arg.layer));
      }
      operands.push_back(value);
    }
    auto call = CallOp::create(builder, candidate->getLoc(),
                               target.getFunctionType().getResults(),
                               target.getSymName(), operands,
                               /*arg_attrs=*/nullptr, /*res_attrs=*/nullptr);
    candidate->replaceAllUsesWith(call.getResults());
    candidate->erase();
    ++numCalls;
    return success();
  }
};

} // namespace
} // namespace mlir::moe
