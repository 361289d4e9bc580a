//===- TraceKernels.cpp - Names every kernel result for dumps -------------===//
//
// `moec compile --trace-kernels`: the executable's --dump-activations then
// writes the outputs of every kernel call, not only the results a family
// names (each layer's residual and router choices). Two builds' traces
// compared call by call (a GPU build against the host's, say) find the
// first kernel whose outputs differ.
//
// Algorithm, per function: number its moe.call ops in order, and give each
// tensor result the trace name `<function>.<call index>.<kernel>.<result>`
// (`moe.trace`, which the host code dumps besides any `moe.dump` name a
// family gave, so first_divergence.py still finds `layer0.hidden`). The
// kernel appears without the content hash outlining appended, so builds for
// different targets (whose kernels differ in layout and so in hash) name
// the same call alike; the call index orders the files.
//
//===----------------------------------------------------------------------===//

#include "dialects/MoE/Transforms/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FormatVariadic.h"

namespace mlir::moe {
#define GEN_PASS_DEF_MOETRACEKERNELSPASS
#include "dialects/MoE/Transforms/Passes.h.inc"

namespace {

/// `name` without the `_<8 hex digits>` that outlining appends.
StringRef withoutHash(StringRef name) {
  size_t underscore = name.rfind('_');
  if (underscore == StringRef::npos || name.size() - underscore != 9) {
    return name;
  }
  StringRef hash = name.drop_front(underscore + 1);
  return llvm::all_of(hash, llvm::isHexDigit) ? name.take_front(underscore)
                                              : name;
}

struct TraceKernelsPass : impl::MoETraceKernelsPassBase<TraceKernelsPass> {
  void runOnOperation() override {
    Builder b(&getContext());
    for (auto func : getOperation().getOps<func::FuncOp>()) {
      int64_t index = 0;
      func.walk([&](CallOp call) {
        StringRef kernel = withoutHash(call.getCallee());
        SmallVector<Attribute> names;
        for (auto [i, result] : llvm::enumerate(call.getResults())) {
          // The dump files hold 4-byte values (.f32, .i32); an index or
          // complex element has no bit width to ask for.
          auto type = dyn_cast<RankedTensorType>(result.getType());
          if (!type || type.getRank() < 1 ||
              !type.getElementType().isIntOrFloat() ||
              type.getElementTypeBitWidth() != 32) {
            names.push_back(b.getStringAttr(""));
            continue;
          }
          names.push_back(b.getStringAttr(llvm::formatv(
              "{0}.{1:d3}.{2}.{3}", func.getSymName(), index, kernel, i)));
          ++numNamed;
        }
        call->setAttr("moe.trace", b.getArrayAttr(names));
        ++index;
      });
    }
  }
};

} // namespace
} // namespace mlir::moe
