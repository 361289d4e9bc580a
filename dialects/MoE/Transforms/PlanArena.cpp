//===- PlanArena.cpp - Static memory plan of every entry point ------------===//
//
// Algorithm, per function (straight-line code):
//   1. Number the ops. A tensor produced by a moe.call lives from its call to
//      its last user.
//   2. Walk the calls in order. Before placing a call's results, free the
//      slots of tensors whose last use came before this call (a call's
//      inputs are still live while it writes its outputs, so a kernel never
//      reads and writes the same memory).
//   3. Place each result at the lowest aligned offset that fits among the
//      live slots (first fit).
//
//===----------------------------------------------------------------------===//

#include "dialects/MoE/Transforms/Passes.h"

#include "llvm/Support/MathExtras.h"

namespace mlir::moe {
#define GEN_PASS_DEF_MOEPLANARENAPASS
#include "dialects/MoE/Transforms/Passes.h.inc"

namespace {

struct Slot {
  int64_t offset, bytes, lastUse;
};

int64_t tensorBytes(RankedTensorType type, int64_t maxTokens) {
  int64_t elements = 1;
  for (int64_t d : type.getShape()) {
    elements *= ShapedType::isDynamic(d) ? maxTokens : d;
  }
  return elements * ((type.getElementTypeBitWidth() + 7) / 8);
}

struct PlanArenaPass : impl::MoEPlanArenaPassBase<PlanArenaPass> {
  using Base::Base;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    auto chunkAttr = module->getAttrOfType<IntegerAttr>("moe.prefill_chunk");
    int64_t maxTokens = chunkAttr ? chunkAttr.getInt() : 256;
    if (alignment <= 0 || !llvm::isPowerOf2_64(alignment)) {
      module.emitError("moe-plan-arena: alignment must be a power of two");
      return signalPassFailure();
    }
    int64_t arenaBytes = 0;
    for (auto func : module.getOps<func::FuncOp>()) {
      if (func.isExternal()) {
        continue;
      }
      arenaBytes = std::max(arenaBytes, plan(func, maxTokens));
    }
    module->setAttr(
        "moe.arena_bytes",
        IntegerAttr::get(IntegerType::get(&getContext(), 64), arenaBytes));
  }

  int64_t plan(func::FuncOp func, int64_t maxTokens) {
    Block &block = func.getBody().front();
    DenseMap<Operation *, int64_t> index;
    int64_t n = 0;
    for (Operation &op : block) {
      index[&op] = n++;
    }
    SmallVector<Slot> live;
    int64_t high = 0;
    for (Operation &op : block) {
      auto call = dyn_cast<CallOp>(op);
      if (!call) {
        continue;
      }
      int64_t now = index[&op];
      llvm::erase_if(live, [&](const Slot &s) { return s.lastUse < now; });
      SmallVector<int64_t> offsets;
      for (Value result : call.getResults()) {
        auto type = dyn_cast<RankedTensorType>(result.getType());
        bool returned = llvm::any_of(result.getUsers(), [](Operation *user) {
          return isa<func::ReturnOp>(user);
        });
        if (!type || returned) {
          offsets.push_back(-1); // the caller's output buffer
          continue;
        }
        int64_t bytes = llvm::alignTo(tensorBytes(type, maxTokens), alignment);
        int64_t lastUse = now;
        for (Operation *user : result.getUsers()) {
          lastUse = std::max(lastUse, index.lookup(user));
        }
        llvm::sort(live, [](const Slot &a, const Slot &b) {
          return a.offset < b.offset;
        });
        int64_t offset = 0;
        for (const Slot &s : live) {
          if (offset + bytes <= s.offset) {
            break;
          }
          offset = std::max(offset, s.offset + s.bytes);
        }
        live.push_back({offset, bytes, lastUse});
        high = std::max(high, offset + bytes);
        offsets.push_back(offset);
        ++numSlots;
      }
      call->setAttr("moe.arena",
                    DenseI64ArrayAttr::get(&getContext(), offsets));
    }
    return high;
  }
};

} // namespace
} // namespace mlir::moe
