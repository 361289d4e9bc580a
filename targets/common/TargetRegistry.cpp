//===- TargetRegistry.cpp - The targets moec compiles for -----------------===//
//
// Compiled with exceptions on: resolving `host` asks libHalide.
//
//===----------------------------------------------------------------------===//

#include "targets/common/TargetRegistry.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/ADT/bit.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Program.h"
#include "llvm/Support/raw_ostream.h"

#include <Halide.h>

#include <set>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

namespace mlir::moe {

namespace {

#include "targets/common/BuiltinTargets.inc"

/// Checks what only Halide knows: that the Halide target string parses, and
/// that its architecture is the triple's.
llvm::Error checkHalideTarget(const TargetDescription &target) {
  auto error = [&](const llvm::Twine &what) {
    return llvm::createStringError(target.source + ": 'halide_target': '" +
                                   target.halideTarget + "' " + what);
  };
  if (!Halide::Target::validate_target_string(target.halideTarget)) {
    return error("is not a Halide target string (arch-bits-os-features, "
                 "e.g. arm-64-linux)");
  }
  Halide::Target halide(target.halideTarget);
  llvm::StringRef arch = llvm::StringRef(target.triple).split('-').first;
  bool matches = true;
  if (halide.arch == Halide::Target::X86) {
    matches = arch == (halide.bits == 64 ? "x86_64" : "i686");
  } else if (halide.arch == Halide::Target::ARM) {
    matches = halide.bits == 64 ? arch == "aarch64" : arch.starts_with("arm");
  }
  if (!matches) {
    return error("does not compile for the triple's architecture '" + arch +
                 "'");
  }
  if (halide.has_gpu_feature() != target.isGpu() ||
      (target.backend == "cuda" && !halide.has_feature(Halide::Target::CUDA))) {
    return error(target.isGpu()
                     ? "lacks the feature of backend '" + target.backend +
                           "' (e.g. x86-64-linux-cuda-cuda_capability_80)"
                     : "names a GPU feature, and backend 'cpu' runs its "
                       "kernels on the CPU");
  }
  if (!target.int8Dot.halideFeatures.empty() &&
      !Halide::Target::validate_target_string(int8HalideTarget(target))) {
    return llvm::createStringError(
        target.source + ": 'int8_dot.halide_features': '" +
        target.int8Dot.halideFeatures +
        "' are not Halide target features (e.g. avx512_sapphirerapids)");
  }
  return llvm::Error::success();
}

/// Every description in a file: one object, or an array of them.
llvm::Expected<std::vector<TargetDescription>>
parseTargetFile(llvm::StringRef text, llvm::StringRef source) {
  llvm::Expected<llvm::json::Value> json = llvm::json::parse(text);
  if (!json) {
    return llvm::createStringError(
        source + ": not valid JSON: " + llvm::toString(json.takeError()));
  }
  std::vector<TargetDescription> targets;
  std::vector<const llvm::json::Value *> entries;
  if (const llvm::json::Array *array = json->getAsArray()) {
    for (const llvm::json::Value &entry : *array) {
      entries.push_back(&entry);
    }
  } else {
    entries.push_back(&*json);
  }
  for (const llvm::json::Value *entry : entries) {
    auto target = parseTargetDescription(*entry, source);
    if (!target) {
      return target.takeError();
    }
    if (llvm::Error err = checkHalideTarget(*target)) {
      return std::move(err);
    }
    targets.push_back(std::move(*target));
  }
  return targets;
}

/// This machine as Halide detects it, without JIT.
const Halide::Target &detectedHalideTarget() {
  static const Halide::Target detected =
      Halide::get_host_target().without_feature(Halide::Target::JIT);
  return detected;
}

/// Whether the CPU executes AVX512-FP16 instructions (CPUID leaf 7,
/// EDX bit 23); false off x86.
bool cpuHasAvx512Fp16() {
#if defined(__x86_64__) || defined(__i386__)
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) {
    return false;
  }
  return (edx >> 23) & 1;
#else
  return false;
#endif
}

const Halide::Target &thisMachine() { return hostHalideTarget(); }

bool sameArchitecture(const Halide::Target &a, const Halide::Target &b) {
  return a.arch == b.arch && a.bits == b.bits;
}

/// A target of this machine's architecture is compiled for with the
/// native compiler (its native package), links the runtime built natively
/// beside moec, and runs without an emulator.
void adaptToThisMachine(TargetDescription &target) {
  if (!sameArchitecture(Halide::Target(target.halideTarget), thisMachine())) {
    return;
  }
  target.emulator.clear();
  target.emulatorPackage.clear();
  target.runtimeDir = "lib";
  if (!target.ccNativePackage.empty()) {
    target.ccPackage = target.ccNativePackage;
  }
}

std::vector<TargetDescription> makeTargets() {
  std::vector<TargetDescription> targets;
  for (const EmbeddedFile &file : kEmbeddedFiles) {
    auto parsed =
        parseTargetFile(file.text, std::string("built-in:") + file.file);
    // test/targets/common/targets.test parses them all; a broken one is a
    // bug in moec, reported rather than hidden.
    if (!parsed) {
      llvm::errs() << "moec: internal error: "
                   << llvm::toString(parsed.takeError()) << "\n";
      continue;
    }
    targets.insert(targets.end(), parsed->begin(), parsed->end());
  }
  std::set<std::string> names{"host"};
  for (auto it = targets.begin(); it != targets.end();) {
    if (names.insert(it->name).second) {
      ++it;
      continue;
    }
    llvm::errs() << "moec: internal error: " << it->source << ": target '"
                 << it->name << "' is defined twice\n";
    it = targets.erase(it);
  }
  // `host`: of the built-in descriptions this machine runs, the one with
  // the most features (its register count and int8 dot product), with
  // every feature Halide finds here.
  const TargetDescription *basis = nullptr;
  int basisFeatures = 0;
  for (TargetDescription &target : targets) {
    adaptToThisMachine(target);
    int features = 0;
    for (uint64_t word : halideFeatureWords(int8HalideTarget(target))) {
      features += llvm::popcount(word);
    }
    if (runsNatively(target) && (!basis || features > basisFeatures)) {
      basis = &target;
      basisFeatures = features;
    }
  }
  if (basis) {
    TargetDescription host = *basis;
    host.name = "host";
    host.summary = "this machine: " + basis->triple +
                   ", every extension it has (registers as " + basis->name +
                   ")";
    host.halideTarget = thisMachine().to_string();
    host.vectorBytes = thisMachine().natural_vector_size(Halide::Float(32)) * 4;
    targets.insert(targets.begin(), host);
  }
  return targets;
}

} // namespace

const Halide::Target &hostHalideTarget() {
  static const Halide::Target machine = [] {
    Halide::Target target = detectedHalideTarget();
    if (target.has_feature(Halide::Target::AVX512_SapphireRapids) &&
        !cpuHasAvx512Fp16()) {
      target = target.without_feature(Halide::Target::AVX512_SapphireRapids);
    }
    return target;
  }();
  return machine;
}

const std::vector<TargetDescription> &builtinTargets() {
  static const std::vector<TargetDescription> targets = makeTargets();
  return targets;
}

llvm::Expected<TargetDescription> lookupTarget(llvm::StringRef nameOrPath) {
  std::vector<std::string> names;
  for (const TargetDescription &target : builtinTargets()) {
    if (target.name == nameOrPath) {
      return target;
    }
    names.push_back(target.name);
  }
  if (nameOrPath.ends_with(".json")) {
    auto buffer = llvm::MemoryBuffer::getFile(nameOrPath);
    if (!buffer) {
      return llvm::createStringError("--target=" + nameOrPath + ": " +
                                     buffer.getError().message());
    }
    auto parsed = parseTargetFile((*buffer)->getBuffer(), nameOrPath);
    if (!parsed) {
      return parsed.takeError();
    }
    if (parsed->size() != 1) {
      return llvm::createStringError(
          nameOrPath + ": a --target file holds exactly one description");
    }
    adaptToThisMachine(parsed->front());
    return parsed->front();
  }
  return llvm::createStringError(
      "--target=" + nameOrPath + ": unknown target (known: " +
      llvm::join(names, ", ") + "; or the path of a description .json)");
}

std::vector<uint64_t> halideFeatureWords(llvm::StringRef halideTarget) {
  Halide::Target target(halideTarget.str());
  std::vector<uint64_t> words((Halide::Target::FeatureEnd + 63) / 64, 0);
  for (int f = 0; f < Halide::Target::FeatureEnd; ++f) {
    if (target.has_feature(static_cast<Halide::Target::Feature>(f))) {
      words[f / 64] |= uint64_t(1) << (f % 64);
    }
  }
  return words;
}

namespace {

/// Whether every feature of `wanted` is one of `present`'s.
bool hasFeatures(const std::string &wanted, const Halide::Target &present) {
  std::vector<uint64_t> want = halideFeatureWords(wanted);
  std::vector<uint64_t> have = halideFeatureWords(present.to_string());
  for (size_t i = 0; i < want.size(); ++i) {
    if (want[i] & ~have[i]) {
      return false;
    }
  }
  return true;
}

} // namespace

bool runsNatively(const std::string &halideTarget) {
  return sameArchitecture(Halide::Target(halideTarget), thisMachine()) &&
         hasFeatures(halideTarget, thisMachine());
}

bool runsNatively(const TargetDescription &target) {
  if (!runsNatively(target.halideTarget)) {
    return false;
  }
  // The int8 kernels' extra features, as Halide's run-time check sees
  // them: Halide's own detection, before hostHalideTarget() drops what the
  // float kernels must not use.
  return hasFeatures(int8HalideTarget(target), detectedHalideTarget());
}

std::string int8HalideTarget(const TargetDescription &target) {
  if (target.int8Dot.halideFeatures.empty()) {
    return target.halideTarget;
  }
  return target.halideTarget + "-" + target.int8Dot.halideFeatures;
}

std::optional<std::string> findTool(llvm::StringRef name) {
  if (name.contains('/')) {
    if (llvm::sys::fs::can_execute(name)) {
      return name.str();
    }
    return std::nullopt;
  }
  if (llvm::ErrorOr<std::string> path = llvm::sys::findProgramByName(name)) {
    return *path;
  }
  return std::nullopt;
}

std::optional<std::string> findPtxas() {
  if (std::optional<std::string> onPath = findTool("ptxas")) {
    return onPath;
  }
  return findTool("/usr/local/cuda/bin/ptxas");
}

std::string describeTargets(
    llvm::function_ref<std::string(const TargetDescription &)> runtimeStatus) {
  std::string text;
  llvm::raw_string_ostream os(text);
  os << "targets (--target=NAME, or --target=FILE.json for your own):\n";
  auto status = [](llvm::StringRef program) {
    return findTool(program) ? "installed" : "MISSING";
  };
  for (const TargetDescription &t : builtinTargets()) {
    os << llvm::formatv("  {0,-14} {1}\n", t.name, t.summary);
    os << llvm::formatv("  {0,-14} halide {1}; {2}-byte vectors, {3} "
                        "registers\n",
                        "", t.halideTarget, t.vectorBytes, t.vectorRegisters);
    if (t.isGpu()) {
      std::string archs = llvm::join(t.gpu.ptxasArchs, ", ");
      os << llvm::formatv("  {0,-14} kernels on the GPU ({1}), {2} threads a "
                          "block; PTX checked for {3} (ptxas: {4})\n",
                          "", t.backend, t.gpu.blockThreads,
                          archs.empty() ? "no architecture" : archs,
                          findPtxas() ? "installed" : "MISSING");
    } else {
      os << llvm::formatv("  {0,-14} int8 dot products of {1} bytes, {2} "
                          "codes{3}\n",
                          "", t.int8Dot.dotBytes,
                          t.int8Dot.unsignedCodes ? "unsigned" : "signed",
                          t.int8Dot.halideFeatures.empty()
                              ? std::string()
                              : " (kernels with " + t.int8Dot.halideFeatures +
                                    ")");
    }
    os << llvm::formatv("  {0,-14} needs {1} ({2}: {3}); runtime: {4}\n", "",
                        t.ccPackage, t.cc, status(t.cc), runtimeStatus(t));
    if (!t.emulator.empty()) {
      os << llvm::formatv("  {0,-14} runs here under {1} ({2}: {3})\n", "",
                          t.emulatorPackage, t.emulator.front(),
                          status(t.emulator.front()));
    }
  }
  return text;
}

} // namespace mlir::moe
