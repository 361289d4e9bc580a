//===- moec.cpp - The moec compiler driver --------------------------------===//
//
//   moec import  <model> [-o model.mlir] [--family=NAME|FILE]
//   moec inspect <model> [--family=NAME|FILE] [--json]
//   moec tokenize <model|tokenizer file> "text" [--decode] [--file F]
//   moec compile <model> -o <exe> [--target=T] [--emit=STAGE] [options]
//
// Flags are parsed here; everything else is the driver library
// (compiler/Driver). Exit code 0 on success, 1 on any error.
//
//===----------------------------------------------------------------------===//

#include "compiler/Driver/Driver.h"
#include "compiler/Driver/Toolchain.h"
#include "compiler/Pipelines/Registration.h"
#include "targets/common/TargetRegistry.h"

#include "mlir/IR/AsmState.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Pass/PassManager.h"

#include "llvm/Support/CommandLine.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/raw_ostream.h"

#include <cstring>

using namespace llvm;

namespace {

cl::OptionCategory category("moec options");
cl::OptionCategory
    debugCategory("Debugging options (IR of every pass, timing, statistics)");

/// Shows moec's own options and MLIR's IR-printing, timing and statistics
/// options in --help; hides the hundreds of LLVM-internal ones.
void organiseHelp() {
  cl::HideUnrelatedOptions({&category, &debugCategory});
  for (auto &entry : cl::getRegisteredOptions()) {
    llvm::StringRef name = entry.first;
    if (name.starts_with("mlir-print-ir") || name == "mlir-timing" ||
        name == "mlir-pass-statistics" || name == "mlir-print-op-generic" ||
        name == "mlir-print-debuginfo") {
      entry.second->addCategory(debugCategory);
      entry.second->setHiddenFlag(cl::NotHidden);
    }
  }
}

cl::opt<std::string> modelPath(cl::Positional, cl::desc("<model>"),
                               cl::cat(category));
cl::opt<std::string> outputPath("o", cl::desc("output file (- for stdout)"),
                                cl::value_desc("path"), cl::cat(category));
cl::opt<std::string>
    family("family",
           cl::desc("family name or description file (default: detect from the "
                    "checkpoint's tensor names)"),
           cl::value_desc("name|file.json"), cl::cat(category));
cl::opt<std::string>
    target("target",
           cl::desc("target to compile for: a name from `moec targets`, or a "
                    "description file; 'help' lists them (default: host)"),
           cl::value_desc("name|file.json"), cl::init("host"),
           cl::cat(category));
cl::opt<std::string> emit(
    "emit",
    cl::desc("stop after a stage and write it: moe | lowered | kernels | c | "
             "stmt | asm | ptx (a GPU target's device code: -o dir) | obj | "
             "exe (default) | lib (a static library and C header to embed "
             "the model: -o dir/name)"),
    cl::init("exe"), cl::cat(category));
cl::opt<int64_t> prefillChunk(
    "prefill-chunk",
    cl::desc("most tokens one prefill call runs; longer prompts run in "
             "chunks (default: 256, or the whole context for a model with "
             "a capacity rule)"),
    cl::init(256), cl::cat(category));
cl::opt<bool> moeDropless(
    "moe-dropless",
    cl::desc("keep every expert assignment: turn off a router's capacity "
             "rule (Moonlight drops over-capacity assignments at prefill)"),
    cl::cat(category));
cl::opt<std::string> prefillStrategy(
    "prefill-strategy",
    cl::desc("expert dispatch in prefill: grouped (bucket tokens by expert, "
             "a GEMM per expert; default) | gather (a GEMV per token)"),
    cl::init("grouped"), cl::cat(category));
cl::opt<std::string> quant(
    "quant",
    cl::desc("store projection, embedding and expert weights packed: q8 | "
             "q4 | q2 | q1 (signs) for all, each symmetric, or with an 'a' "
             "(q4a) asymmetric: an offset per group beside its scale; or "
             "mixed (embedding and head q8, attention q4a, other projections "
             "q8, experts q4a); prints a report of what it cost"),
    cl::value_desc("mode"), cl::cat(category));
cl::opt<std::string> quantPolicy(
    "quant-policy",
    cl::desc("precisions over --quant, comma-separated KEY=PRECISION, a "
             "--quant mode but mixed (q4, q4a, ..) or f32; KEY is a role "
             "(embedding, head, attention, ffn, experts) or a "
             "glob on checkpoint tensor names, e.g. "
             "'experts=q2,*.o_proj.weight=q8'"),
    cl::value_desc("rules"), cl::cat(category));
cl::opt<int64_t> quantGroup(
    "quant-group",
    cl::desc("weights per quantization scale along a row (default 32)"),
    cl::init(32), cl::cat(category));
cl::opt<std::string> quantScale(
    "quant-scale",
    cl::desc("element type of the quantization scales: f16 (default) or "
             "f32"),
    cl::init("f16"), cl::cat(category));
cl::opt<std::string> quantCalibration(
    "quant-calibration",
    cl::desc("quantize by GPTQ, each weight's rounding chosen for its "
             "inputs on this text (its first 4096 tokens, run through a "
             "float build of the model) instead of round-to-nearest"),
    cl::value_desc("text file"), cl::cat(category));
cl::opt<int64_t> quantCalibrationTokens(
    "quant-calibration-tokens",
    cl::desc("tokens of --quant-calibration's text used (default 4096)"),
    cl::init(4096), cl::cat(category));
cl::opt<std::string> activations(
    "activations",
    cl::desc("inputs of projections of packed weights: int8 (each token "
             "quantized per 32 features; integer dot products: VNNI, NEON "
             "sdot, pmaddwd), f32 (codes dequantized in registers: the "
             "publisher's math), or auto (default: int8 with --quant or "
             "--quant-policy, else f32)"),
    cl::init("auto"), cl::cat(category));
cl::opt<int> jobs("j",
                  cl::desc("kernels compiled in parallel (default: "
                           "one per core)"),
                  cl::init(0), cl::cat(category));
cl::opt<std::string> kernelCache(
    "kernel-cache",
    cl::desc("directory of compiled kernels reused across runs (default: "
             "$MOEC_CACHE_DIR, else ~/.cache/moec/kernels)"),
    cl::value_desc("dir"), cl::cat(category));
cl::opt<bool> noKernelCache("no-kernel-cache",
                            cl::desc("compile every kernel afresh"),
                            cl::cat(category));
cl::opt<bool> profile(
    "profile",
    cl::desc("compile the kernels with Halide's sampling profiler: the "
             "executable prints each kernel's time, and each stage's share "
             "of it, to stderr when it exits"),
    cl::cat(category));
cl::opt<bool> traceKernels(
    "trace-kernels",
    cl::desc("the executable's --dump-activations writes every kernel "
             "call's outputs (<entry>.<call>.<kernel>.<result>), not only "
             "each layer's: compare two builds' dumps to find the first "
             "kernel that differs"),
    cl::cat(category));
cl::opt<std::string> tokenizerPath(
    "tokenizer",
    cl::desc("the tokenizer file (tokenizer.json or *.tiktoken) when the "
             "model directory has none, or to use another"),
    cl::value_desc("file"), cl::cat(category));
cl::opt<std::string> tokenizeText(cl::Positional, cl::desc("[text]"),
                                  cl::cat(category));
cl::opt<std::string> tokenizeFile(
    "file",
    cl::desc("with `moec tokenize`: read the text from a file (- for "
             "stdin)"),
    cl::value_desc("path"), cl::cat(category));
cl::opt<bool> tokenizeBatch(
    "batch",
    cl::desc("with `moec tokenize --file`: the file holds NUL-separated "
             "texts (or, with --decode, lines of ids); one line out each"),
    cl::cat(category));
cl::opt<bool>
    tokenizeDecode("decode",
                   cl::desc("with `moec tokenize`: the text is comma-separated "
                            "token ids; print what they decode to"),
                   cl::cat(category));
cl::opt<bool> noSpecial(
    "no-special",
    cl::desc("with `moec tokenize`: special tokens written in the text "
             "(e.g. <|endoftext|>) stay text"),
    cl::cat(category));
cl::opt<bool>
    tokenizeSpeed("speed",
                  cl::desc("with `moec tokenize`: print encoding throughput "
                           "instead of ids"),
                  cl::cat(category));
cl::opt<bool> quiet("q", cl::desc("print errors only"), cl::cat(category));
cl::opt<bool>
    asJson("json",
           cl::desc("with `moec targets` or `moec inspect`: JSON output"),
           cl::cat(category));

int usage() {
  errs() << "usage: moec import <model> [-o model.mlir] [--family=NAME|FILE]\n"
            "       moec inspect <model> [--family=NAME|FILE] [--json]\n"
            "       moec tokenize <model|tokenizer.json|x.tiktoken> \"text\" "
            "[--decode] [--file F]\n"
            "       moec compile <model> -o <exe> [--target=T] "
            "[--emit=STAGE] [options]\n"
            "       moec targets [--json]\n"
            "       moec --help\n";
  return 1;
}

} // namespace

int main(int argc, char **argv) {
  InitLLVM init(argc, argv);
  mlir::registerAsmPrinterCLOptions();
  mlir::registerMLIRContextCLOptions();
  mlir::registerPassManagerCLOptions();
  mlir::moe::registerAllPassesAndPipelines();

  if (argc < 2) {
    return usage();
  }
  std::string command = argv[1];
  bool isHelp =
      command == "--help" || command == "-h" || command == "--help-hidden";
  if (!isHelp && command != "import" && command != "compile" &&
      command != "inspect" && command != "targets" && command != "tokenize") {
    errs() << "moec: error: unknown command '" << command
           << "' (expected import, inspect, compile, tokenize or targets)\n";
    return usage();
  }
  organiseHelp();
  // The command is not a flag; hide it from the option parser.
  std::vector<char *> args{argv[0]};
  args.insert(args.end(), argv + (isHelp ? 1 : 2), argv + argc);
  if (!cl::ParseCommandLineOptions(static_cast<int>(args.size()), args.data(),
                                   "moec: compiles Mixture-of-Experts models "
                                   "into native executables\n\n"
                                   "  moec import  <model> [-o model.mlir]\n"
                                   "  moec inspect <model> [--json]\n"
                                   "  moec tokenize <model> \"text\"\n"
                                   "  moec compile <model> -o <exe>\n"
                                   "  moec targets [--json]\n",
                                   &errs())) {
    return 1;
  }
  if (command == "targets" || target == "help") {
    if (asJson) {
      llvm::json::Array all;
      for (const auto &t : mlir::moe::builtinTargets()) {
        llvm::json::Value description = t.toJson();
        description.getAsObject()->try_emplace("runs_natively",
                                               mlir::moe::runsNatively(t));
        if (t.isGpu()) {
          // Where the tests find the assembler that checks the device code.
          std::optional<std::string> ptxas = mlir::moe::findPtxas();
          description.getAsObject()->try_emplace(
              "ptxas", ptxas ? llvm::json::Value(*ptxas) : nullptr);
        }
        all.push_back(std::move(description));
      }
      outs() << formatv("{0:2}\n", llvm::json::Value(std::move(all)));
    } else {
      outs() << mlir::moe::describeTargets(
          [&](const mlir::moe::TargetDescription &t) -> std::string {
            llvm::Expected<mlir::moe::RuntimeLocation> runtime =
                mlir::moe::findRuntime(argv[0], t);
            if (runtime) {
              return runtime->libDir;
            }
            llvm::consumeError(runtime.takeError());
            return "MISSING (rebuild moec with " + t.ccPackage + " installed)";
          });
    }
    return 0;
  }
  if (modelPath.empty()) {
    errs() << "moec: error: " << command << " needs a <model> (a directory "
           << "or a weights file)\n";
    return 1;
  }
  if (command == "tokenize") {
    mlir::moe::TokenizeOptions options;
    options.path = modelPath;
    options.family = family;
    options.tokenizerPath = tokenizerPath;
    options.text = tokenizeText;
    options.file = tokenizeFile;
    options.batch = tokenizeBatch;
    options.decode = tokenizeDecode;
    options.noSpecial = noSpecial;
    options.speed = tokenizeSpeed;
    if (tokenizeText.getNumOccurrences() == tokenizeFile.getNumOccurrences()) {
      errs() << "moec: error: tokenize needs a text or --file (one of them)\n";
      return 1;
    }
    return mlir::succeeded(mlir::moe::runTokenize(options)) ? 0 : 1;
  }
  if (tokenizeText.getNumOccurrences()) {
    errs() << "moec: error: unexpected argument '" << tokenizeText
           << "' (only `moec tokenize` takes a text)\n";
    return 1;
  }
  if (command == "inspect") {
    mlir::moe::DriverOptions options;
    options.modelPath = modelPath;
    options.family = family;
    return mlir::succeeded(mlir::moe::runInspect(options, asJson)) ? 0 : 1;
  }
  // `import` prints the model-level IR only; the stages are compile's.
  if (command == "import" && emit.getNumOccurrences()) {
    errs() << "moec: error: --emit=" << emit << " belongs to `moec compile` "
           << "(`moec import` always writes the moe IR; `moec compile "
           << "<model> --emit=" << emit << "` stops after that stage)\n";
    return 1;
  }
  std::optional<mlir::moe::EmitStage> stage = mlir::moe::parseEmitStage(emit);
  if (!stage) {
    errs()
        << "moec: error: --emit=" << emit
        << ": expected moe, lowered, kernels, c, stmt, asm, ptx, obj, exe or "
           "lib\n";
    return 1;
  }

  mlir::moe::DriverOptions options;
  options.argv0 = argv[0];
  options.modelPath = modelPath;
  options.outputPath = outputPath;
  options.family = family;
  options.target = target;
  options.emit = *stage;
  if (prefillChunk.getNumOccurrences()) {
    options.prefillChunk = prefillChunk;
  }
  options.prefillStrategy = prefillStrategy;
  options.quant = quant;
  options.quantPolicy = quantPolicy;
  options.quantGroup = quantGroup;
  options.quantScale = quantScale;
  options.quantCalibration = quantCalibration;
  options.quantCalibrationTokens = quantCalibrationTokens;
  options.activations = activations;
  options.moeDropless = moeDropless;
  options.jobs = jobs;
  options.kernelCache = kernelCache;
  options.noKernelCache = noKernelCache;
  options.profile = profile;
  options.traceKernels = traceKernels;
  options.tokenizerPath = tokenizerPath;
  options.verbose = !quiet;
  mlir::LogicalResult result = command == "import"
                                   ? mlir::moe::runImport(options)
                                   : mlir::moe::runCompile(options);
  return mlir::succeeded(result) ? 0 : 1;
}
