//===- TargetRegistry.cpp - The targets moec compiles for -----------------===//
//
// Compiled with exceptions on: resolving `host` asks libHalide.
//
//===----------------------------------------------------------------------===//

#include "targets/common/TargetRegistry.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Program.h"
#include "llvm/Support/raw_ostream.h"

#include <Halide.h>

#include <optional>

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
  // `host`: the built-in description of this architecture, with every
  // extension Halide finds here.
  Halide::Target hostTarget =
      Halide::get_host_target().without_feature(Halide::Target::JIT);
  std::string arch =
      hostTarget.arch == Halide::Target::ARM ? "aarch64" : "x86-64";
  std::optional<TargetDescription> host;
  for (TargetDescription &target : targets) {
    if (Halide::Target(target.halideTarget).arch != hostTarget.arch) {
      continue;
    }
    // Executables of this machine's architecture run here natively.
    target.emulator.clear();
    target.emulatorPackage.clear();
    if (target.name == arch) {
      host = target;
    }
  }
  if (host) {
    host->name = "host";
    host->summary = "this machine: " + arch + " with every extension it has";
    host->halideTarget = hostTarget.to_string();
    host->vectorBytes = hostTarget.natural_vector_size(Halide::Float(32)) * 4;
    if (hostTarget.has_feature(Halide::Target::AVX512)) {
      host->vectorRegisters = 32;
    }
    targets.insert(targets.begin(), *host);
  }
  return targets;
}

} // namespace

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
    return parsed->front();
  }
  return llvm::createStringError(
      "--target=" + nameOrPath + ": unknown target (known: " +
      llvm::join(names, ", ") + "; or the path of a description .json)");
}

std::string describeTargets() {
  std::string text;
  llvm::raw_string_ostream os(text);
  os << "targets (--target=NAME, or --target=FILE.json for your own):\n";
  for (const TargetDescription &t : builtinTargets()) {
    os << llvm::formatv("  {0,-14} {1}\n", t.name, t.summary);
    os << llvm::formatv("  {0,-14} halide {1}; {2}-byte vectors\n", "",
                        t.halideTarget, t.vectorBytes);
    auto status = [](llvm::StringRef program) {
      return llvm::sys::findProgramByName(program) ? "installed" : "MISSING";
    };
    os << llvm::formatv("  {0,-14} needs {1} ({2}: {3})\n", "", t.ccPackage,
                        t.cc, status(t.cc));
    if (!t.emulator.empty()) {
      os << llvm::formatv("  {0,-14} runs here under {1} ({2}: {3})\n", "",
                          t.emulatorPackage, t.emulator.front(),
                          status(t.emulator.front()));
    }
  }
  return text;
}

} // namespace mlir::moe
