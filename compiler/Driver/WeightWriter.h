//===- WeightWriter.h - Writing a compiled model's weight file --*- C++ -*-===//

#ifndef MOE_COMPILER_DRIVER_WEIGHTWRITER_H
#define MOE_COMPILER_DRIVER_WEIGHTWRITER_H

#include "compiler/Driver/Calibrate.h"
#include "frontends/checkpoint/TensorSource.h"

#include "mlir/IR/BuiltinOps.h"

#include <string>
#include <vector>

namespace mlir::moe {

/// A weight quantized while it was written (moe.weight `quantize(..)`).
struct QuantizedWeightReport {
  /// The first checkpoint name, and how many more are stacked with it.
  std::string name;
  std::string format;
  /// Element type of the scales: "f16" or "f32".
  std::string scale;
  int64_t group = 0;
  int64_t params = 0;
  /// Codes, scales and offsets.
  uint64_t bytes = 0;
  /// ||w - dequantized|| / ||w|| over the whole tensor.
  double relativeError = 0;
  /// Quantized by GPTQ on calibration inputs (--quant-calibration).
  bool calibrated = false;
};

struct WeightFileInfo {
  uint64_t dataBytes = 0;
  uint64_t hash = 0;
  /// In the order they were written.
  std::vector<QuantizedWeightReport> quantized;
};

/// Writes the weight file (runtime/include/moert/weights_format.h) of
/// `module`, whose moe.weight ops carry `moe.offset` (moe-plan-weights):
/// each weight read from `tensors`, converted to f32, sliced, stacked and
/// laid out as its op says. Emits a diagnostic on the op whose tensor is
/// missing or malformed. The file is complete when this succeeds; callers
/// write to a temporary path and rename.
///
/// With `calibration`, weights it has input statistics for are quantized
/// by GPTQ (see quantizeMatrices).
FailureOr<WeightFileInfo>
writeWeightFile(ModuleOp module, const ::moe::frontend::TensorSource &tensors,
                StringRef family, StringRef path,
                const CalibrationData *calibration = nullptr);

/// The f32 values of the float weight `op` in its logical shape
/// (row-major): its checkpoint tensors converted, sliced and stacked.
FailureOr<std::vector<float>>
readWeightValues(WeightOp op, const ::moe::frontend::TensorSource &tensors);

/// Prints what quantization cost: per tensor its format, parameters,
/// bytes, bits per weight and relative error, then the weight file's size
/// against the same file with those tensors in f32.
void printQuantizationReport(const WeightFileInfo &info, llvm::raw_ostream &os);

} // namespace mlir::moe

#endif // MOE_COMPILER_DRIVER_WEIGHTWRITER_H
