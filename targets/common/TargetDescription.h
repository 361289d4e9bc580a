//===- TargetDescription.h - What moec needs to know of a target -*- C++
//-*-===//
//
// A target as data: the triple, the Halide target its kernels are compiled
// for, the vector width its schedules use, and the toolchain that compiles
// its host code and links the executable. Schedules consult this, never a
// hard-coded ISA.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_TARGETS_COMMON_TARGETDESCRIPTION_H
#define MOE_TARGETS_COMMON_TARGETDESCRIPTION_H

#include <string>
#include <vector>

namespace mlir::moe {

struct TargetDescription {
  /// The --target name: host, x86-64, x86-64-avx2, x86-64-avx512, ...
  std::string name;
  /// One line for `--target=help`.
  std::string summary;
  /// LLVM triple of the host code and executable.
  std::string triple;
  /// Halide target string of the kernels, without the features moec adds
  /// itself (user_context, no_runtime).
  std::string halideTarget;
  /// Bytes in one vector register the kernels are scheduled for.
  int vectorBytes = 16;
  /// C compiler driver for the host code and the link.
  std::string cc;
  /// Flags every compile and link of this target gets.
  std::vector<std::string> cflags;
  std::vector<std::string> ldflags;
  /// The Debian package that provides `cc`, named in errors.
  std::string ccPackage;

  int floatLanes() const { return vectorBytes / 4; }
};

} // namespace mlir::moe

#endif // MOE_TARGETS_COMMON_TARGETDESCRIPTION_H
