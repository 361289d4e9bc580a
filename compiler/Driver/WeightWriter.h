//===- WeightWriter.h - Writing a compiled model's weight file --*- C++ -*-===//

#ifndef MOE_COMPILER_DRIVER_WEIGHTWRITER_H
#define MOE_COMPILER_DRIVER_WEIGHTWRITER_H

#include "frontends/checkpoint/TensorSource.h"

#include "mlir/IR/BuiltinOps.h"

namespace mlir::moe {

struct WeightFileInfo {
  uint64_t dataBytes = 0;
  uint64_t hash = 0;
};

/// Writes the weight file (runtime/include/moert/weights_format.h) of
/// `module`, whose moe.weight ops carry `moe.offset` (moe-plan-weights):
/// each weight read from `tensors`, converted to f32, sliced, stacked and
/// laid out as its op says. Emits a diagnostic on the op whose tensor is
/// missing or malformed. The file is complete when this succeeds; callers
/// write to a temporary path and rename.
FailureOr<WeightFileInfo>
writeWeightFile(ModuleOp module, const ::moe::frontend::TensorSource &tensors,
                StringRef family, StringRef path);

} // namespace mlir::moe

#endif // MOE_COMPILER_DRIVER_WEIGHTWRITER_H
