//===- Driver.cpp - The library behind moec -------------------------------===//
//
// `moec compile` in order (DESIGN.md §3):
//   1. load and recognise the model (frontends), import it as moe IR;
//   2. moe-model-pipeline              -> --emit=moe
//   3. moe-lower-pipeline              -> --emit=lowered
//   4. moe-cpu-kernel-pipeline         -> --emit=kernels
//   5. compile every kernel with Halide -> --emit=stmt|asm
//   6. write the weight file, emit host code (moe-cpu-host-pipeline)
//                                      -> --emit=c
//   7. compile the host code           -> --emit=obj
//   8. link an executable (--emit=exe) or archive a library (--emit=lib)
//   8. link the executable.
// Outputs are written under temporary names and renamed at the very end,
// so a failure at any stage leaves no half-written executable or weights.
//
//===----------------------------------------------------------------------===//

#include "compiler/Driver/Driver.h"

#include "compiler/Driver/Calibrate.h"

#include "compiler/Driver/DriverConfig.h"
#include "compiler/Driver/ModelLibrary.h"
#include "compiler/Driver/PendingFile.h"
#include "compiler/Driver/TextInterface.h"
#include "compiler/Driver/Toolchain.h"
#include "compiler/Driver/WeightWriter.h"
#include "compiler/Pipelines/Pipelines.h"
#include "compiler/Pipelines/Registration.h"
#include "dialects/MoE/Transforms/QuantPolicy.h"
#include "frontends/family/LoadModel.h"
#include "frontends/import/ImportModel.h"
#include "frontends/text/TextBlob.h"
#include "targets/common/TargetRegistry.h"
#include "targets/cpu/kernels/KernelCompiler.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Target/Cpp/CppEmitter.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/ADT/StringSwitch.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Process.h"
#include "llvm/Support/Threading.h"
#include "llvm/Support/raw_ostream.h"

#include "moert/hash.h"

#include <chrono>
#include <sys/resource.h>
#include <unistd.h>

namespace mlir::moe {

namespace fe = ::moe::frontend;

std::optional<EmitStage> parseEmitStage(llvm::StringRef text) {
  return llvm::StringSwitch<std::optional<EmitStage>>(text)
      .Case("moe", EmitStage::Moe)
      .Case("lowered", EmitStage::Lowered)
      .Case("kernels", EmitStage::Kernels)
      .Case("c", EmitStage::C)
      .Case("stmt", EmitStage::Stmt)
      .Case("asm", EmitStage::Asm)
      .Case("ptx", EmitStage::Ptx)
      .Case("obj", EmitStage::Obj)
      .Case("exe", EmitStage::Exe)
      .Case("lib", EmitStage::Lib)
      .Default(std::nullopt);
}

namespace {

/// Copies `files` into directory `dir`, which it creates.
LogicalResult copyFilesTo(const std::vector<std::string> &files,
                          llvm::StringRef dir) {
  if (std::error_code ec = llvm::sys::fs::create_directories(dir)) {
    llvm::errs() << "moec: error: cannot create " << dir << ": " << ec.message()
                 << "\n";
    return failure();
  }
  for (const std::string &file : files) {
    std::string to = (dir + "/" + llvm::sys::path::filename(file)).str();
    if (llvm::sys::fs::copy_file(file, to)) {
      llvm::errs() << "moec: error: cannot write " << to << "\n";
      return failure();
    }
  }
  return success();
}

/// Prints `err` as moec's error and fails.
LogicalResult reportError(llvm::Error err) {
  llvm::errs() << "moec: error: " << llvm::toString(std::move(err)) << "\n";
  return failure();
}

using Clock = std::chrono::steady_clock;

double secondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

/// "peak memory N MB": moec's peak resident memory (getrusage), for a user
/// sizing a machine for a compile. It counts the checkpoint's pages that
/// were read, which the kernel can drop; Halide compiles in this process.
/// (The C compiler and linker it runs are small beside it; getrusage's
/// figure for children is not theirs, as they start as copies of moec.)
std::string peakMemoryText() {
  struct rusage self = {};
  getrusage(RUSAGE_SELF, &self);
  // ru_maxrss is in KiB on Linux.
  return llvm::formatv("peak memory {0:f0} MB", self.ru_maxrss * 1024.0 / 1e6);
}

/// Prints every diagnostic as `moec: <severity>: <where>: <message>`.
class DiagnosticPrinter {
public:
  explicit DiagnosticPrinter(MLIRContext &context)
      : handler(&context, [](Diagnostic &diag) {
          print(diag);
          return success();
        }) {
    // Users read messages, not whole kernels in generic form.
    context.printOpOnDiagnostic(false);
  }

private:
  static void print(Diagnostic &diag) {
    llvm::errs() << "moec: ";
    switch (diag.getSeverity()) {
    case DiagnosticSeverity::Error:
      llvm::errs() << "error: ";
      break;
    case DiagnosticSeverity::Warning:
      llvm::errs() << "warning: ";
      break;
    default:
      llvm::errs() << "note: ";
      break;
    }
    Location loc = diag.getLocation();
    if (auto name = dyn_cast<NameLoc>(loc)) {
      llvm::errs() << name.getName().getValue() << ": ";
    } else if (auto file = dyn_cast<FileLineColLoc>(loc)) {
      llvm::errs() << file.getFilename().getValue() << ": ";
    }
    llvm::errs() << diag.str() << "\n";
    for (Diagnostic &note : diag.getNotes()) {
      print(note);
    }
  }

  ScopedDiagnosticHandler handler;
};

/// Writes text to `path` ("" or "-": stdout) through a temporary file.
LogicalResult writeText(llvm::StringRef path,
                        llvm::function_ref<void(llvm::raw_ostream &)> write) {
  if (path.empty() || path == "-") {
    write(llvm::outs());
    llvm::outs().flush();
    return success();
  }
  PendingFile file(path.str());
  if (llvm::Error err = file.write(write)) {
    return reportError(std::move(err));
  }
  return file.commit();
}

/// A temporary directory, removed on destruction unless MOEC_KEEP_TEMPS.
class WorkDir {
public:
  LogicalResult create() {
    llvm::SmallString<128> dir;
    if (std::error_code ec =
            llvm::sys::fs::createUniqueDirectory("moec-build", dir)) {
      llvm::errs() << "moec: error: cannot create a temporary directory: "
                   << ec.message() << "\n";
      return failure();
    }
    path = dir.str().str();
    return success();
  }
  ~WorkDir() {
    if (!path.empty() && !llvm::sys::Process::GetEnv("MOEC_KEEP_TEMPS")) {
      llvm::sys::fs::remove_directories(path);
    }
  }
  std::string path;
};

std::string defaultKernelCache() {
  if (auto dir = llvm::sys::Process::GetEnv("MOEC_CACHE_DIR")) {
    return *dir;
  }
  if (auto xdg = llvm::sys::Process::GetEnv("XDG_CACHE_HOME")) {
    return *xdg + "/moec/kernels";
  }
  if (auto home = llvm::sys::Process::GetEnv("HOME")) {
    return *home + "/.cache/moec/kernels";
  }
  return "";
}

LogicalResult runPipeline(ModuleOp module,
                          llvm::function_ref<void(OpPassManager &)> build) {
  PassManager pm(module.getContext());
  if (failed(applyPassManagerCLOptions(pm))) {
    return failure();
  }
  build(pm);
  return pm.run(module);
}

/// Loads, recognises and imports the model; prints the recogniser's notes.
/// `withText`: also reads the tokenizer the executable embeds.
FailureOr<std::pair<fe::LoadedModel, OwningOpRef<ModuleOp>>>
loadAndImport(MLIRContext &context, const DriverOptions &options,
              bool withText) {
  fe::LoadOptions loadOptions;
  loadOptions.family = options.family;
  llvm::Expected<fe::LoadedModel> loaded =
      fe::loadModel(options.modelPath, loadOptions);
  if (!loaded) {
    return reportError(loaded.takeError());
  }
  fe::ModelDescription &model = loaded->description;
  if (withText) {
    if (llvm::Error err = attachTextInterface(*loaded, options.tokenizerPath)) {
      return reportError(std::move(err));
    }
  }
  bool capacityRule = false;
  for (fe::LayerDesc &layer : model.layers) {
    if (layer.moe && layer.moe->router.capacity != fe::CapacityRule::Dropless) {
      if (options.moeDropless) {
        layer.moe->router.capacity = fe::CapacityRule::Dropless;
      } else {
        capacityRule = true;
      }
    }
  }
  int64_t prefillChunk = options.prefillChunk.value_or(0);
  if (options.moeDropless) {
    model.notes.push_back("--moe-dropless: routers keep every assignment "
                          "(the family's capacity rule is off)");
  }
  if (capacityRule && prefillChunk == 0) {
    prefillChunk = model.contextLength;
    model.notes.push_back(llvm::formatv(
        "prefill runs the whole prompt in one call (up to the context, {0} "
        "tokens): the routers' capacity rule is per call",
        prefillChunk));
  } else if (capacityRule && prefillChunk < model.contextLength) {
    model.notes.push_back(llvm::formatv(
        "--prefill-chunk={0}: prompts longer than that are prefilled in "
        "chunks, and the routers' capacity rule then applies per chunk, not "
        "per prompt as in the reference",
        prefillChunk));
  } else if (prefillChunk == 0) {
    prefillChunk = 256;
  }
  if (options.verbose) {
    llvm::errs() << llvm::formatv(
        "moec: {0}: family {1}, {2} layers, d_model {3}, vocab {4}, "
        "{5:f1}M parameters ({6:f1}M active)\n",
        model.checkpointPath, model.family, model.layers.size(), model.dModel,
        model.vocab, model.totalParams / 1e6, model.activeParams / 1e6);
    for (const std::string &note : model.notes) {
      llvm::errs() << "moec: note: " << note << "\n";
    }
  }
  ImportOptions importOptions;
  importOptions.prefillChunk = prefillChunk;
  importOptions.prefillWholeSequence = capacityRule;
  FailureOr<OwningOpRef<ModuleOp>> module =
      importModel(context, model, importOptions);
  if (failed(module)) {
    return failure();
  }
  return std::make_pair(std::move(*loaded), std::move(*module));
}

std::string hexHash(uint64_t hash) {
  return "0x" + llvm::utohexstr(hash, /*LowerCase=*/true, /*Width=*/16);
}

/// Each input file's path, size and content hash (moert_hash64, the weight
/// file's hash: about 10 GB/s, so a 1 GB checkpoint, already in the page
/// cache from the compile, costs about 0.1 s). Contents rather than
/// modification times, so copying a model elsewhere compiles to the same
/// bytes and a changed file shows.
llvm::json::Array inputManifest(const std::vector<std::string> &paths) {
  llvm::json::Array inputs;
  for (const std::string &path : paths) {
    llvm::json::Object input{{"path", path}};
    auto buffer = llvm::MemoryBuffer::getFile(path, /*IsText=*/false,
                                              /*RequiresNullTerminator=*/false);
    if (buffer) {
      llvm::StringRef bytes = (*buffer)->getBuffer();
      input["bytes"] = static_cast<int64_t>(bytes.size());
      input["hash"] = hexHash(moert_hash64(bytes.data(), bytes.size(), 0));
    }
    inputs.push_back(std::move(input));
  }
  return inputs;
}

std::string manifest(ModuleOp module, const fe::LoadedModel &loaded,
                     const TargetDescription &target,
                     const std::string &halideTarget, int kernels,
                     uint64_t weightsHash, llvm::json::Object quantization) {
  const fe::ModelDescription &model = loaded.description;
  llvm::json::Array notes;
  for (const std::string &note : model.notes) {
    notes.push_back(note);
  }
  llvm::json::Object root{
      {"moec", MOEC_VERSION},
      {"llvm", MOEC_LLVM_VERSION},
      {"halide", "14"},
      {"family", model.family},
      {"family_source", model.descriptionSource},
      {"checkpoint", model.checkpointPath},
      {"inputs", inputManifest(loaded.inputFiles)},
      {"target", target.name},
      {"halide_target", halideTarget},
      {"quantization", std::move(quantization)},
      {"total_params", model.totalParams},
      {"active_params", model.activeParams},
      {"kernels", kernels},
      {"prefill_chunk",
       module->getAttrOfType<IntegerAttr>("moe.prefill_chunk").getInt()},
      {"weights_hash", hexHash(weightsHash)},
      {"notes", std::move(notes)}};
  std::string text;
  llvm::raw_string_ostream os(text);
  os << llvm::json::Value(std::move(root));
  return text;
}

/// The C source that embeds the text interface (tokenizer, chat format,
/// sampling defaults) in the executable: the blob goes to `blobPath` and an
/// .incbin pulls it into .rodata, so a tokenizer of megabytes costs no C
/// parsing. The runtime's cli.c reads moert_model_text.
void writeTextInterfaceSource(llvm::raw_ostream &os,
                              const std::optional<std::string> &blob,
                              const std::string &blobPath) {
  os << "// Generated by moec " << MOEC_VERSION
     << ": the model's text interface (moert/text_format.h). Do not edit.\n"
     << "#include <stdint.h>\n";
  if (!blob) {
    os << "const unsigned char moert_model_text[1] = {0};\n"
       << "const uint64_t moert_model_text_size = 0;\n";
    return;
  }
  {
    std::error_code ec;
    llvm::raw_fd_ostream out(blobPath, ec);
    out << *blob;
  }
  std::string quoted;
  for (char c : blobPath) {
    if (c == '"' || c == '\\') {
      quoted += '\\';
    }
    quoted += c;
  }
  os << "__asm__(\".section .rodata\\n\"\n"
     << "        \".balign 16\\n\"\n"
     << "        \".globl moert_model_text\\n\"\n"
     << "        \"moert_model_text:\\n\"\n"
     << "        \".incbin \\\"" << quoted << "\\\"\\n\"\n"
     << "        \".previous\\n\");\n"
     << "const uint64_t moert_model_text_size = " << blob->size() << "u;\n";
}

LogicalResult translateHost(ModuleOp module, std::string &source) {
  if (failed(runPipeline(module, buildMoECpuHostPipeline))) {
    return failure();
  }
  llvm::raw_string_ostream os(source);
  os << "// Generated by moec " << MOEC_VERSION
     << ": host code of a compiled model. Do not edit.\n";
  return emitc::translateToCpp(module, os, /*declareVariablesAtTop=*/false);
}

} // namespace

/// --quant-calibration: builds the model in float for this machine, with
/// every quantized weight's input dumped, runs it over the text and sums
/// the inputs' outer products (compiler/Driver/Calibrate.h).
static std::optional<CalibrationData> calibrate(const DriverOptions &options,
                                                const fe::LoadedModel &loaded) {
  Clock::time_point start = Clock::now();
  FailureOr<std::vector<int32_t>> tokens =
      calibrationTokens(loaded.textBlob, options.quantCalibration,
                        options.quantCalibrationTokens);
  if (failed(tokens)) {
    return std::nullopt;
  }
  WorkDir work;
  if (failed(work.create())) {
    return std::nullopt;
  }
  CalibrationPlan plan;
  Clock::time_point buildStart = Clock::now();
  DriverOptions build = options;
  build.quant.clear();
  build.quantPolicy.clear();
  build.quantCalibration.clear();
  build.activations = "f32";
  build.target = "host";
  build.emit = EmitStage::Exe;
  build.profile = false;
  build.traceKernels = false;
  build.verbose = false;
  build.outputPath = work.path + "/calibration";
  build.calibrationPlan = &plan;
  if (failed(runCompile(build))) {
    llvm::errs() << "moec: error: --quant-calibration: the float build of "
                    "the model failed (above)\n";
    return std::nullopt;
  }
  double buildSeconds = secondsSince(buildStart);
  // Windows no longer than the context (the float build's limit) and
  // short enough to keep each run's dumps small.
  int64_t window = std::min<int64_t>(512, loaded.description.contextLength > 0
                                              ? loaded.description.contextLength
                                              : 512);
  FailureOr<CalibrationData> data =
      runCalibration(build.outputPath, plan, *tokens, window, work.path);
  if (failed(data)) {
    return std::nullopt;
  }
  if (options.verbose) {
    llvm::errs() << llvm::formatv(
        "moec: calibration: {0} tokens of {1} through a float build in "
        "{2:f1} s (build {3:f1} s, runs {4:f1} s, sums {5:f1} s)\n",
        data->tokens, options.quantCalibration, secondsSince(start),
        buildSeconds, data->runSeconds, data->sumSeconds);
  }
  return std::move(*data);
}

LogicalResult runImport(const DriverOptions &options) {
  DialectRegistry registry;
  registerAllDialects(registry);
  MLIRContext context(registry, MLIRContext::Threading::DISABLED);
  DiagnosticPrinter printer(context);
  auto imported = loadAndImport(context, options, /*withText=*/false);
  if (failed(imported)) {
    return failure();
  }
  ModuleOp module = *imported->second;
  if (failed(runPipeline(module, [](OpPassManager &pm) {
        buildMoEModelPipeline(pm, MoEModelPipelineOptions());
      }))) {
    return failure();
  }
  return writeText(options.outputPath,
                   [&](llvm::raw_ostream &os) { module.print(os); });
}

LogicalResult runCompile(const DriverOptions &options) {
  Clock::time_point start = Clock::now();
  DialectRegistry registry;
  registerAllDialects(registry);
  // Single-threaded: the kernel compiler forks workers, which is only safe
  // without other threads.
  MLIRContext context(registry, MLIRContext::Threading::DISABLED);
  DiagnosticPrinter printer(context);

  llvm::Expected<TargetDescription> target = lookupTarget(options.target);
  if (!target) {
    return reportError(target.takeError());
  }
  if (options.profile) {
    // Every kernel and the runtime: a feature of the Halide target, so the
    // kernel cache keeps profiled kernels apart.
    target->halideTarget += "-profile";
  }
  // The stages that write the weight file and link with the runtime.
  bool linked =
      options.emit == EmitStage::Exe || options.emit == EmitStage::Lib;
  if (linked && options.outputPath.empty()) {
    llvm::errs() << "moec: error: compile needs -o <"
                 << (options.emit == EmitStage::Lib ? "dir/name" : "executable")
                 << ">\n";
    return failure();
  }
  if (options.emit == EmitStage::Ptx && !target->isGpu()) {
    llvm::errs() << "moec: error: --emit=ptx: --target=" << target->name
                 << " runs its kernels on the CPU; PTX is the device code of "
                    "a GPU target (--target=cuda)\n";
    return failure();
  }
  if (options.emit == EmitStage::Ptx && options.outputPath.empty()) {
    llvm::errs() << "moec: error: --emit=ptx writes one file per kernel: it "
                    "needs -o <directory>\n";
    return failure();
  }
  // What linking needs is checked before any expensive work.
  std::optional<RuntimeLocation> runtime;
  if (options.emit == EmitStage::Obj || linked) {
    if (llvm::Error err = checkToolchain(*target)) {
      return reportError(std::move(err));
    }
    llvm::Expected<RuntimeLocation> found =
        findRuntime(options.argv0, *target, linked);
    if (!found) {
      return reportError(found.takeError());
    }
    runtime = *found;
  }
  if (options.prefillChunk &&
      (*options.prefillChunk < 1 || *options.prefillChunk > 65536)) {
    llvm::errs() << "moec: error: --prefill-chunk=" << *options.prefillChunk
                 << ": expected a value in [1, 65536]\n";
    return failure();
  }

  if (!options.quant.empty() || !options.quantPolicy.empty()) {
    llvm::Expected<QuantPolicy> policy = parseQuantPolicy(
        options.quant.empty() ? "none" : options.quant, options.quantPolicy);
    if (!policy) {
      llvm::errs() << "moec: error: "
                   << (options.quant.empty() ? "--quant-policy" : "--quant")
                   << ": " << llvm::toString(policy.takeError()) << "\n";
      return failure();
    }
  }
  if (options.quantScale != "f16" && options.quantScale != "f32") {
    llvm::errs() << "moec: error: --quant-scale=" << options.quantScale
                 << ": expected f16 or f32\n";
    return failure();
  }
  if (options.activations != "auto" && options.activations != "f32" &&
      options.activations != "int8") {
    llvm::errs() << "moec: error: --activations=" << options.activations
                 << ": expected auto, f32 or int8\n";
    return failure();
  }
  // auto: quantizing with --quant asks for llama.cpp's trade (int8 inputs
  // too); a checkpoint compiled as published keeps the publisher's f32 math.
  bool quantizing = !options.quant.empty() || !options.quantPolicy.empty();
  std::string activations = options.activations == "auto"
                                ? (quantizing ? "int8" : "f32")
                                : options.activations;
  if (options.quantGroup < 1 || options.quantGroup > 65536) {
    llvm::errs() << "moec: error: --quant-group=" << options.quantGroup
                 << ": expected a value in [1, 65536]\n";
    return failure();
  }

  if (!options.quantCalibration.empty()) {
    if (!quantizing) {
      llvm::errs() << "moec: error: --quant-calibration="
                   << options.quantCalibration
                   << ": nothing is quantized; add --quant or --quant-policy\n";
      return failure();
    }
    if (options.quantCalibrationTokens < 1 ||
        options.quantCalibrationTokens > (1 << 20)) {
      llvm::errs() << "moec: error: --quant-calibration-tokens="
                   << options.quantCalibrationTokens
                   << ": expected a value in [1, 1048576]\n";
      return failure();
    }
  }

  auto imported = loadAndImport(context, options, /*withText=*/true);
  if (failed(imported)) {
    return failure();
  }
  fe::LoadedModel &loaded = imported->first;
  ModuleOp module = *imported->second;

  // GPTQ's statistics, from a float build run over the text, before the
  // quantized build that uses them (only its weight file does).
  std::optional<CalibrationData> calibration;
  if (linked && !options.quantCalibration.empty()) {
    calibration = calibrate(options, loaded);
    if (!calibration) {
      return failure();
    }
    loaded.inputFiles.push_back(options.quantCalibration);
  }
  auto emitIR = [&]() {
    return writeText(options.outputPath,
                     [&](llvm::raw_ostream &os) { module.print(os); });
  };

  MoEModelPipelineOptions modelOptions;
  modelOptions.quant = options.quant;
  modelOptions.quantPolicy = options.quantPolicy;
  modelOptions.quantGroup = options.quantGroup;
  modelOptions.quantScale = options.quantScale;
  modelOptions.activations = activations;
  if (failed(runPipeline(module, [&](OpPassManager &pm) {
        buildMoEModelPipeline(pm, modelOptions);
      }))) {
    return failure();
  }
  if (options.emit == EmitStage::Moe) {
    return emitIR();
  }
  MoELowerPipelineOptions lowerOptions;
  lowerOptions.prefillStrategy = options.prefillStrategy;
  lowerOptions.fuse = !options.calibrationPlan;
  if (failed(runPipeline(module, [&](OpPassManager &pm) {
        buildMoELowerPipeline(pm, lowerOptions);
      }))) {
    return failure();
  }
  // After the attention split, which makes new ops of the attention.
  if (options.calibrationPlan) {
    FailureOr<CalibrationPlan> plan = planCalibration(module, *loaded.tensors);
    if (failed(plan)) {
      return failure();
    }
    *options.calibrationPlan = std::move(*plan);
  }
  if (options.emit == EmitStage::Lowered) {
    return emitIR();
  }
  MoECpuKernelPipelineOptions kernelPipelineOptions;
  kernelPipelineOptions.lanes = target->floatLanes();
  kernelPipelineOptions.dot = target->int8Dot.dotBytes;
  kernelPipelineOptions.panel = target->projectionPanel();
  kernelPipelineOptions.traceKernels = options.traceKernels;
  if (failed(runPipeline(module, [&](OpPassManager &pm) {
        buildMoECpuKernelPipeline(pm, kernelPipelineOptions);
      }))) {
    return failure();
  }
  // What `--info` and the kernel-level IR show: the target as named, and
  // its ISA.
  module->setAttr("moe.target",
                  StringAttr::get(&context, target->name + " (" +
                                                target->halideTarget + ")"));
  if (target->isGpu()) {
    module->setAttr("moe.device_api",
                    StringAttr::get(&context, target->backend));
  }
  // Kernels with int8 dot products may use the target's extra features:
  // the executable checks the CPU has them too.
  bool int8Kernels = cpu::usesInt8Dot(module);
  std::vector<uint64_t> features = halideFeatureWords(
      int8Kernels ? int8HalideTarget(*target) : target->halideTarget);
  module->setAttr(
      "moe.halide_features",
      DenseI64ArrayAttr::get(
          &context, SmallVector<int64_t>(features.begin(), features.end())));
  if (options.emit == EmitStage::Kernels) {
    return emitIR();
  }
  std::string halideTarget = cpu::kernelHalideTarget(*target);
  if (options.emit == EmitStage::C) {
    std::string source;
    if (failed(translateHost(module, source))) {
      return failure();
    }
    return writeText(options.outputPath,
                     [&](llvm::raw_ostream &os) { os << source; });
  }

  // Kernels.
  WorkDir work;
  if (failed(work.create())) {
    return failure();
  }
  cpu::KernelCompileOptions kernelOptions;
  kernelOptions.target = *target;
  kernelOptions.workDir = work.path;
  kernelOptions.cacheDir = options.noKernelCache         ? ""
                           : options.kernelCache.empty() ? defaultKernelCache()
                                                         : options.kernelCache;
  kernelOptions.emitStmt = options.emit == EmitStage::Stmt;
  kernelOptions.emitAssembly = options.emit == EmitStage::Asm;
  kernelOptions.emitDeviceCode = options.emit == EmitStage::Ptx;
  kernelOptions.jobs = options.jobs > 0
                           ? options.jobs
                           : static_cast<int>(llvm::get_physical_cores() > 0
                                                  ? llvm::get_physical_cores()
                                                  : 1);
  Clock::time_point kernelStart = Clock::now();
  FailureOr<cpu::CompiledKernels> kernels =
      cpu::compileKernels(module, kernelOptions);
  if (failed(kernels)) {
    return failure();
  }
  int numKernels = static_cast<int>(kernels->objects.size()) - 1;
  if (options.verbose) {
    llvm::errs() << llvm::formatv(
        "moec: {0} kernels for {1} ({2} compiled, {3} from the cache) in "
        "{4:f1} s\n",
        numKernels, halideTarget, kernels->compiled, kernels->fromCache,
        secondsSince(kernelStart));
  }
  if (options.emit == EmitStage::Ptx) {
    // One file per kernel: what ptxas (one module per run) takes.
    return copyFilesTo(kernels->listings, options.outputPath);
  }
  if (options.emit == EmitStage::Stmt || options.emit == EmitStage::Asm) {
    return writeText(options.outputPath, [&](llvm::raw_ostream &os) {
      for (const std::string &listing : kernels->listings) {
        os << "//===--- " << llvm::sys::path::stem(listing) << " ---===//\n";
        if (auto buffer = llvm::MemoryBuffer::getFile(listing)) {
          os << (*buffer)->getBuffer() << "\n";
        }
      }
    });
  }

  // Weights (their hash goes into the host code).
  std::string exePath = options.outputPath;
  llvm::StringRef outputDir = llvm::sys::path::parent_path(exePath);
  if (options.emit == EmitStage::Lib && !outputDir.empty()) {
    // -o dir/name names a directory of files, which moec makes.
    if (std::error_code ec = llvm::sys::fs::create_directories(outputDir)) {
      llvm::errs() << "moec: error: cannot create " << outputDir << ": "
                   << ec.message() << "\n";
      return failure();
    }
  }
  // An executable sent to a character device (-o /dev/null: compile, keep
  // nothing) has its weights written to a temporary file that is removed,
  // not to a new /dev/null.weights.
  llvm::sys::fs::file_status exeStatus;
  bool discarded = options.emit != EmitStage::Lib &&
                   !llvm::sys::fs::status(exePath, exeStatus) &&
                   exeStatus.type() == llvm::sys::fs::file_type::character_file;
  llvm::SmallString<128> discardedWeights;
  if (discarded) {
    llvm::sys::path::system_temp_directory(/*ErasedOnReboot=*/true,
                                           discardedWeights);
    llvm::sys::path::append(discardedWeights, "moec-discarded.weights");
  }
  PendingFile weightsFile(discarded ? discardedWeights.str().str()
                                    : exePath + ".weights");
  uint64_t weightsHash = 0;
  if (linked) {
    Clock::time_point weightStart = Clock::now();
    FailureOr<WeightFileInfo> info = writeWeightFile(
        module, *loaded.tensors, loaded.description.family,
        weightsFile.tempPath(), calibration ? &*calibration : nullptr);
    if (failed(info)) {
      return failure();
    }
    weightsHash = info->hash;
    if (options.verbose && !info->quantized.empty()) {
      llvm::errs() << "moec: quantization report\n";
      printQuantizationReport(*info, llvm::errs());
    } else if (options.verbose && !options.quant.empty()) {
      llvm::errs() << "moec: note: --quant=" << options.quant
                   << ": no float weight of this model was chosen (packed "
                      "weights are kept as they are)\n";
    }
    if (options.verbose) {
      llvm::errs() << llvm::formatv(
          "moec: wrote {0:f1} MB of weights in {1:f1} s\n",
          info->dataBytes / 1e6, secondsSince(weightStart));
    }
  }
  Builder b(&context);
  module->setAttr("moe.weights_hash",
                  b.getI64IntegerAttr(static_cast<int64_t>(weightsHash)));
  // How the weights are stored and read: what --quant asked, and which
  // inputs the packed projections take (with the int8 kernels' target).
  llvm::json::Object quantization{{"activations", activations}};
  if (quantizing) {
    quantization["quant"] = options.quant.empty() ? "none" : options.quant;
    quantization["policy"] = options.quantPolicy;
    quantization["group"] = options.quantGroup;
    quantization["scale"] = options.quantScale;
  }
  if (calibration) {
    quantization["calibration"] = llvm::json::Object{
        {"text", options.quantCalibration}, {"tokens", calibration->tokens}};
  }
  if (int8Kernels) {
    quantization["int8_halide_target"] =
        cpu::kernelHalideTarget(*target, /*int8=*/true);
  }
  module->setAttr("moe.manifest",
                  b.getStringAttr(manifest(
                      module, loaded, *target, halideTarget, numKernels,
                      weightsHash, std::move(quantization))));

  // Host code.
  std::string source;
  if (failed(translateHost(module, source))) {
    return failure();
  }
  std::string hostC = work.path + "/host.c", hostO = work.path + "/host.o";
  if (failed(writeText(hostC, [&](llvm::raw_ostream &os) { os << source; }))) {
    return failure();
  }
  Clock::time_point hostStart = Clock::now();
  bool hostFromCache = false;
  if (llvm::Error err =
          compileHostCode(*target, *runtime, hostC, hostO,
                          kernelOptions.cacheDir, &hostFromCache)) {
    return reportError(std::move(err));
  }
  if (options.verbose) {
    llvm::errs() << llvm::formatv("moec: host code {0} in {1:f1} s\n",
                                  hostFromCache ? "from the cache" : "compiled",
                                  secondsSince(hostStart));
  }
  std::string textC = work.path + "/text.c", textO = work.path + "/text.o";
  if (failed(writeText(textC, [&](llvm::raw_ostream &os) {
        writeTextInterfaceSource(os, loaded.textBlob, work.path + "/text.bin");
      }))) {
    return failure();
  }
  if (llvm::Error err = compileHostCode(*target, *runtime, textC, textO)) {
    return reportError(std::move(err));
  }
  std::vector<std::string> objects{hostO, textO};
  objects.insert(objects.end(), kernels->objects.begin(),
                 kernels->objects.end());
  if (options.emit == EmitStage::Obj) {
    return copyFilesTo(objects, options.outputPath);
  }

  if (options.emit == EmitStage::Lib) {
    ModelLibraryInfo info{loaded.description.family, options.target,
                          MOEC_VERSION};
    if (llvm::Error err = writeModelLibrary(*target, *runtime, objects,
                                            options.outputPath, info)) {
      return reportError(std::move(err));
    }
    if (failed(weightsFile.commit())) {
      return failure();
    }
    if (options.verbose) {
      std::string dir = outputDir.empty() ? "." : outputDir.str();
      std::string name = llvm::sys::path::filename(exePath).str();
      llvm::errs() << llvm::formatv(
          "moec: wrote {0}/lib{1}.a, {0}/{1}.h and {0}/{1}.weights in {2:f1} "
          "s, {3}; link with: {4}\n",
          dir, name, secondsSince(start), peakMemoryText(),
          modelLibraryLinkCommand(*target, dir, name));
    }
    return success();
  }

  // Link, then publish both files.
  PendingFile exeFile(exePath);
  if (llvm::Error err =
          linkExecutable(*target, *runtime, objects, exeFile.tempPath())) {
    return reportError(std::move(err));
  }
  // Discarded weights stay uncommitted: PendingFile removes them.
  if ((!discarded && failed(weightsFile.commit())) ||
      failed(exeFile.commit())) {
    return failure();
  }
  if (options.verbose) {
    uint64_t exeBytes = 0;
    llvm::sys::fs::file_size(exePath, exeBytes);
    llvm::errs() << llvm::formatv(
        "moec: wrote {0} ({1:f2} MB) and {4} in {2:f1} s, {3}\n", exePath,
        exeBytes / 1e6, secondsSince(start), peakMemoryText(),
        discarded ? std::string("no weights (discarded)")
                  : exePath + ".weights");
  }
  return success();
}

llvm::Error attachTextInterface(fe::LoadedModel &loaded,
                                const std::string &tokenizerPath) {
  fe::TextOptions textOptions;
  if (loaded.family.root.contains("text")) {
    textOptions.section = &loaded.family.root["text"];
  }
  textOptions.modelDir = loaded.modelDir;
  textOptions.tokenizerPath = tokenizerPath;
  textOptions.modelVocab = loaded.description.vocab;
  auto textBlob = fe::buildTextBlob(textOptions, loaded.description.notes);
  if (!textBlob) {
    return textBlob.takeError();
  }
  if (auto tokenizer = fe::findTokenizerFile(textOptions)) {
    if (!tokenizer->empty()) {
      loaded.inputFiles.push_back(*tokenizer);
    }
  } else {
    llvm::consumeError(tokenizer.takeError());
  }
  loaded.textBlob = std::move(*textBlob);
  return llvm::Error::success();
}

} // namespace mlir::moe
