//===- CpuTargets.cpp - The CPU targets moec knows
//-------------------------===//
//
// `host` is this machine as Halide sees it (every ISA extension it has);
// the named x86-64 targets are fixed feature sets, for building on one
// machine and running on another.
//
//===----------------------------------------------------------------------===//

#include "targets/cpu/CpuTargets.h"

#include "llvm/ADT/StringExtras.h"

#include <Halide.h>

namespace mlir::moe::cpu {

namespace {

TargetDescription x86(std::string name, std::string summary, std::string halide,
                      int vectorBytes) {
  TargetDescription t;
  t.name = std::move(name);
  t.summary = std::move(summary);
  t.triple = "x86_64-linux-gnu";
  t.halideTarget = std::move(halide);
  t.vectorBytes = vectorBytes;
  t.cc = "cc";
  t.cflags = {"-O2"};
  t.ldflags = {"-lm", "-lpthread", "-ldl"};
  t.ccPackage = "gcc";
  return t;
}

std::vector<TargetDescription> makeTargets() {
  std::vector<TargetDescription> targets;
  Halide::Target host = Halide::get_host_target();
  host = host.without_feature(Halide::Target::JIT);
  int bytes = host.natural_vector_size(Halide::Float(32)) * 4;
  targets.push_back(x86("host",
                        "this machine's CPU, every ISA extension it has",
                        host.to_string(), bytes));
  if (host.arch != Halide::Target::X86) {
    targets.back().triple = host.arch == Halide::Target::ARM
                                ? "aarch64-linux-gnu"
                                : targets.back().triple;
  }
  targets.push_back(
      x86("x86-64", "any x86-64 CPU (SSE4.1)", "x86-64-linux-sse41", 16));
  targets.push_back(x86("x86-64-avx2", "x86-64 with AVX2 and FMA (Haswell+)",
                        "x86-64-linux-sse41-avx-avx2-fma-f16c", 32));
  targets.push_back(x86("x86-64-avx512",
                        "x86-64 with AVX-512 (Skylake-SP+, Zen 4+)",
                        "x86-64-linux-sse41-avx-avx2-fma-f16c-avx512-"
                        "avx512_skylake",
                        64));
  return targets;
}

} // namespace

const std::vector<TargetDescription> &cpuTargets() {
  static const std::vector<TargetDescription> targets = makeTargets();
  return targets;
}

llvm::Expected<TargetDescription> lookupCpuTarget(llvm::StringRef name) {
  std::vector<std::string> names;
  for (const TargetDescription &target : cpuTargets()) {
    if (target.name == name) {
      return target;
    }
    names.push_back(target.name);
  }
  return llvm::createStringError(
      "--target=" + name +
      ": unknown target (known: " + llvm::join(names, ", ") + ")");
}

} // namespace mlir::moe::cpu
