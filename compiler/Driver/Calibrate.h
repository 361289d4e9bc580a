//===- Calibrate.h - Input statistics for GPTQ quantization ----*- C++ -*-===//
//
// `moec compile --quant=... --quant-calibration=TEXT` quantizes with GPTQ,
// which needs, for every weight it quantizes, H = sum of x x^T over the
// inputs x the weight multiplies on real text. moec gets them from the
// model itself: a float build of it (unfused, so each projection's input is
// a kernel's output) names those inputs for `--dump-activations`, runs over
// the tokens of TEXT, and the dumps are summed here. An expert's down
// projection reads an activation inside the dispatch kernel, so its inputs
// are recomputed here from the dumped token, its routing and the expert's
// gate and up weights.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_COMPILER_DRIVER_CALIBRATE_H
#define MOE_COMPILER_DRIVER_CALIBRATE_H

#include "dialects/MoE/IR/MoEOps.h"
#include "frontends/checkpoint/TensorSource.h"

#include "mlir/IR/BuiltinOps.h"
#include "llvm/ADT/StringMap.h"

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace mlir::moe {

/// What GPTQ reads: per weight (calibrationKey), one [cols, cols] sum of
/// x x^T per matrix of the weight (one per expert for stacked experts),
/// cols being the weight's input width. Weights that read one input (Q, K
/// and V; gate and up) share one vector: its address says so.
struct CalibrationData {
  llvm::StringMap<std::shared_ptr<std::vector<float>>> hessians;
  /// The sums of `key`, made empty when missing.
  std::vector<float> &sumsOf(llvm::StringRef key) {
    std::shared_ptr<std::vector<float>> &sums = hessians[key];
    if (!sums) {
      sums = std::make_shared<std::vector<float>>();
    }
    return *sums;
  }
  /// Tokens run through the model.
  int64_t tokens = 0;
  /// Seconds spent running the float build and summing its dumps.
  double runSeconds = 0, sumSeconds = 0;
};

/// The key of the tensor a weight op stands for: its checkpoint names and
/// the rows it selects, the same in the float build and the quantized one.
std::string calibrationKey(WeightOp op);

/// The inputs one calibration run dumps and what each feeds.
struct CalibrationPlan {
  struct Dense {
    std::string dump;
    /// Values per token of the dumped input.
    int64_t width = 0;
    std::vector<std::string> weights;
  };
  struct Experts {
    std::string input, indices;
    std::string gate, up, down; // weight keys; `gate` empty when absent
    Activation activation = Activation::Silu;
    /// E, F and D of the weights; `topK` choices per token.
    int64_t experts = 0, hidden = 0, width = 0, topK = 0;
    /// The f32 gate and up weights as [E, D, F], to recompute down's
    /// inputs.
    std::vector<float> gateValues, upValues;
  };
  std::vector<Dense> dense;
  std::vector<Experts> experts;
};

/// Names the input of every float projection, logits head and expert
/// dispatch of the prefill entry point of the lowered, unfused `module` for
/// `--dump-activations` and says which weights each feeds. Fails (with a
/// diagnostic) when a weight cannot be read from `tensors`.
FailureOr<CalibrationPlan>
planCalibration(ModuleOp module, const ::moe::frontend::TensorSource &tensors);

/// The first `maxTokens` tokens of the text file `path` under the model's
/// tokenizer (`textBlob`, the text interface moec embeds); an error names
/// the file when it cannot be read or gives no tokens.
FailureOr<std::vector<int32_t>>
calibrationTokens(const std::optional<std::string> &textBlob,
                  const std::string &path, int64_t maxTokens);

/// Runs the calibration build `exe` over `tokens` in windows of at most
/// `window`, dumping into `workDir`, and sums the plan's Hessians.
FailureOr<CalibrationData> runCalibration(const std::string &exe,
                                          const CalibrationPlan &plan,
                                          const std::vector<int32_t> &tokens,
                                          int64_t window,
                                          const std::string &workDir);

} // namespace mlir::moe

#endif // MOE_COMPILER_DRIVER_CALIBRATE_H
