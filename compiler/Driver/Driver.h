//===- Driver.h - The library behind moec -----------------------*- C++ -*-===//
//
// Everything `moec` does, as functions a test can call: load a model, run
// the pipeline stage by stage, compile kernels, write the weight file and
// link the executable. Tool mains only parse flags.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_COMPILER_DRIVER_DRIVER_H
#define MOE_COMPILER_DRIVER_DRIVER_H

#include "mlir/Support/LogicalResult.h"

#include "llvm/ADT/StringRef.h"

#include <optional>

#include <string>

namespace mlir::moe {

/// The stages `--emit` can stop after.
enum class EmitStage {
  Moe,     // model-level moe IR
  Lowered, // attention split, dispatch chosen, fused groups
  Kernels, // outlined kernels, arena and weight plans
  C,       // the host code, as C
  Stmt,    // Halide's lowered statement of every kernel
  Asm,     // assembly of every kernel
  Ptx,     // GPU targets: the PTX of every kernel, in a directory
  Obj,     // kernel and host objects, in a directory
  Exe,     // the executable and its weight file (the default)
  Lib,     // a static library, its C header and the weight file
};

struct CalibrationPlan;

struct DriverOptions {
  std::string modelPath;
  std::string outputPath;
  /// Built-in family name or description file; empty to detect.
  std::string family;
  std::string target = "host";
  EmitStage emit = EmitStage::Exe;
  /// The most tokens one prefill call runs; unset: 256, or the whole
  /// context for a model whose routers have a capacity rule (the rule is
  /// per call, so chunking would change which tokens it drops).
  std::optional<int64_t> prefillChunk;
  std::string prefillStrategy = "grouped";
  /// --quant, --quant-policy, --quant-group: packed weights (see
  /// dialects/MoE/Transforms/QuantPolicy.h); empty: as the checkpoint has
  /// them.
  std::string quant;
  std::string quantPolicy;
  int64_t quantGroup = 32;
  std::string quantScale = "f16";
  /// --quant-calibration: a text whose first `quantCalibrationTokens`
  /// tokens give GPTQ its input statistics (compiler/Driver/Calibrate.h).
  std::string quantCalibration;
  int64_t quantCalibrationTokens = 4096;
  /// Set by the driver for the float build of --quant-calibration: the
  /// build names the inputs it must dump (and forms no fused groups), and
  /// says here what each feeds.
  CalibrationPlan *calibrationPlan = nullptr;
  /// Inputs of packed projections: "f32", "int8" (quantized per block of
  /// 32, integer dot products), or "auto": int8 when --quant or
  /// --quant-policy quantizes, else f32.
  std::string activations = "auto";
  /// Turn off the routers' capacity rule (every assignment is kept).
  bool moeDropless = false;
  /// Parallel kernel compiles; 0 = one per core.
  int jobs = 0;
  /// Where compiled kernels are cached across runs; empty = default
  /// ($MOEC_CACHE_DIR, else $XDG_CACHE_HOME/moec, else ~/.cache/moec).
  std::string kernelCache;
  bool noKernelCache = false;
  /// Kernels with Halide's profiler (the `profile` target feature).
  bool profile = false;
  /// Every kernel call's results named for --dump-activations
  /// (moe-trace-kernels).
  bool traceKernels = false;
  /// Print the recogniser's notes and progress.
  bool verbose = true;
  /// --tokenizer: the tokenizer file, instead of the model directory's.
  std::string tokenizerPath;
  /// argv[0] of moec, to find the runtime next to it.
  const char *argv0 = "moec";
};

/// `moec tokenize`: what the compiled model's tokenizer makes of a text.
struct TokenizeOptions {
  /// A model directory, a tokenizer.json or a *.tiktoken file.
  std::string path;
  /// --family: the description whose "text" section applies.
  std::string family;
  /// --tokenizer: the tokenizer file of a model directory.
  std::string tokenizerPath;
  std::string text;
  /// --file: read the text (or with `batch`, NUL-separated texts) from it.
  std::string file;
  bool batch = false;
  /// --decode: the inputs are comma-separated ids; print their text (hex
  /// per line with `batch`).
  bool decode = false;
  /// --no-special: written special tokens stay text.
  bool noSpecial = false;
  /// --speed: print encoding throughput instead of ids.
  bool speed = false;
};
LogicalResult runTokenize(const TokenizeOptions &options);

/// `moec import`: prints the model-level IR (after the model pipeline).
LogicalResult runImport(const DriverOptions &options);

/// `moec inspect`: what the recogniser found and assumed, as text or JSON
/// on stdout; nothing is compiled.
LogicalResult runInspect(const DriverOptions &options, bool json);

/// `moec compile`: runs to `options.emit` and writes the output.
LogicalResult runCompile(const DriverOptions &options);

/// Parses an --emit value.
std::optional<EmitStage> parseEmitStage(llvm::StringRef text);

} // namespace mlir::moe

#endif // MOE_COMPILER_DRIVER_DRIVER_H
