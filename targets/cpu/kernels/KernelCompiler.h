//===- KernelCompiler.h - Compile and cache a module's kernels --*- C++ -*-===//
//
// Compiles every `moe.kernel` of a module ahead of time with libHalide,
// in-process, into one object file each, plus one shared Halide runtime.
// Objects are cached by a hash of everything that determines them (kernel
// body and signature, symbol, Halide target, Halide version, and a hash of
// the kernel generator's own sources), so recompiling a model, or another
// model with the same shapes, reuses them.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_TARGETS_CPU_KERNELS_KERNELCOMPILER_H
#define MOE_TARGETS_CPU_KERNELS_KERNELCOMPILER_H

#include "targets/common/TargetDescription.h"

#include "mlir/IR/BuiltinOps.h"

#include <string>
#include <vector>

namespace mlir::moe::cpu {

struct KernelCompileOptions {
  TargetDescription target;
  /// Cross-run cache; empty disables it.
  std::string cacheDir;
  /// Where this compile's objects (and listings) are written.
  std::string workDir;
  /// Also write Halide's lowered statement / assembly of every kernel.
  bool emitStmt = false;
  bool emitAssembly = false;
  /// Also write every kernel's GPU code (PTX) as its listing; fails for a
  /// kernel without any (a CPU target).
  bool emitDeviceCode = false;
  /// Kernels compiled at once (forked workers); 1 compiles in-process.
  int jobs = 1;
};

struct CompiledKernels {
  /// One object per kernel, then the Halide runtime's.
  std::vector<std::string> objects;
  /// With emitStmt / emitAssembly / emitDeviceCode: one file per kernel,
  /// in module order.
  std::vector<std::string> listings;
  int compiled = 0;
  int fromCache = 0;
};

/// Compiles the kernels of `module`. Diagnostics name the failing kernel.
FailureOr<CompiledKernels> compileKernels(ModuleOp module,
                                          const KernelCompileOptions &options);

/// The Halide target string kernels of `target` are compiled for; with
/// `int8`, kernels that compute int8 dot products (with the target's
/// int8_dot.halide_features).
std::string kernelHalideTarget(const TargetDescription &target,
                               bool int8 = false);

/// Whether `root` holds an op with `int8_activations`.
bool usesInt8Dot(Operation *root);

} // namespace mlir::moe::cpu

#endif // MOE_TARGETS_CPU_KERNELS_KERNELCOMPILER_H
