//===- TargetDescription.h - What moec knows of a target --------*- C++ -*-===//
//
// A target as data (targets/<t>/*.json, or a file the user names with
// --target=board.json): the triple, the Halide target its kernels are
// compiled for, the vector width and register count its schedules size
// their tiles with, the C toolchain that compiles its host code and links
// the executable, the emulator tests run it under, and where its prebuilt
// runtime lives. Schedules consult this, never a hard-coded ISA; adding a
// target is a new description, not edits across the compiler.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_TARGETS_COMMON_TARGETDESCRIPTION_H
#define MOE_TARGETS_COMMON_TARGETDESCRIPTION_H

#include "llvm/Support/Error.h"
#include "llvm/Support/JSON.h"

#include <algorithm>
#include <string>
#include <vector>

namespace mlir::moe {

/// Vectors of output features in a CPU matrix-matrix register tile of
/// `rows` tokens with `registers` vector registers: its accumulators take
/// at most half the registers, leaving the rest to the loaded weights and
/// inputs (four rows: 2 vectors with 16 registers as on AVX2, 4 with 32 as
/// on AVX-512 and NEON). The kernels' schedules and the weights' panel
/// width both follow it.
inline int tileVectors(int registers, int rows) {
  return std::clamp(registers / 2 / rows, 1, 4);
}

struct TargetDescription {
  /// The --target name: host, x86-64, x86-64-avx2, x86-64-avx512, aarch64.
  std::string name;
  /// One line for `--target=help`.
  std::string summary;
  /// The code generator that compiles it: "cpu" (x86-64 and AArch64: the
  /// kernels run on the host), or "cuda" (the kernels run on an NVIDIA GPU
  /// and the host code, of `triple`, drives them).
  std::string backend = "cpu";
  /// Triple of the host code and executable, e.g. aarch64-linux-gnu.
  std::string triple;
  /// Halide target string of the kernels, without the features moec adds
  /// itself (user_context, no_runtime).
  std::string halideTarget;
  /// Bytes in one vector register, and how many registers there are: the
  /// schedules size vectors and register tiles from them.
  int vectorBytes = 16;
  int vectorRegisters = 16;
  /// The C compiler driver of the host code and the link, its flags, and
  /// the Debian package that provides it (named in errors): on another
  /// architecture's machine (the cross compiler), and on one of the
  /// target's own (empty: the same).
  std::string cc;
  std::vector<std::string> cflags;
  std::vector<std::string> ldflags;
  std::string ccPackage;
  std::string ccNativePackage;
  /// The root of the target's C library and headers, given to the compiler
  /// as --sysroot; empty when the compiler knows its own (as Debian's cross
  /// compilers do).
  std::string sysroot;
  /// The command that runs an executable of this target on this machine
  /// (tests, benchmarks), and its package; empty when it runs natively.
  std::vector<std::string> emulator;
  std::string emulatorPackage;
  /// Where the target's libmoert.a and libmoert_main.a are, relative to
  /// moec's installation root (`lib` beside moec's `bin`).
  std::string runtimeDir = "lib";
  /// How the kernels multiply int8 inputs by packed codes (projections
  /// with `int8_activations`): `dotBytes` consecutive products summed into
  /// each 32-bit lane (4: VNNI `vpdpbusd`, NEON `sdot`; 2: `pmaddwd`),
  /// whether the codes operand is unsigned (`vpdpbusd` multiplies u8 by
  /// s8: codes are offset and the offset subtracted once per block) or
  /// signed, and Halide features that only the kernels doing so are
  /// compiled with (Halide 14 emits `vpdpbusd` for avx512_sapphirerapids,
  /// whose other instructions moec keeps out of the float kernels).
  struct Int8Dot {
    int dotBytes = 4;
    bool unsignedCodes = false;
    std::string halideFeatures;
  } int8Dot;
  /// A GPU backend's kernels: threads per block of every GPU loop, and the
  /// GPU architectures whose assembler (ptxas) must accept the device code
  /// (checked by `moec compile --emit=ptx` users and the tests).
  struct Gpu {
    int blockThreads = 128;
    std::vector<std::string> ptxasArchs;
  } gpu;
  /// Where the description came from, for messages.
  std::string source;

  int floatLanes() const { return vectorBytes / 4; }
  /// Output features of one 4-token matrix-matrix tile of the CPU
  /// projection kernels, which is also the panel width P of the weights
  /// they read stored `layout panels(P)`; 0 on a GPU, whose threads read
  /// transposed weights coalesced without panels.
  int projectionPanel() const {
    return isGpu() ? 0 : floatLanes() * tileVectors(vectorRegisters, 4);
  }
  /// Whether the kernels run on a GPU rather than on the host CPU.
  bool isGpu() const { return backend == "cuda"; }

  llvm::json::Value toJson() const;
};

/// Reads a description from JSON; `source` names it in errors, which also
/// name the field at fault.
llvm::Expected<TargetDescription>
parseTargetDescription(const llvm::json::Value &value, llvm::StringRef source);

} // namespace mlir::moe

#endif // MOE_TARGETS_COMMON_TARGETDESCRIPTION_H
