//===- Toolchain.h - Compiling host code, linking executables ---*- C++ -*-===//

#ifndef MOE_COMPILER_DRIVER_TOOLCHAIN_H
#define MOE_COMPILER_DRIVER_TOOLCHAIN_H

#include "targets/common/TargetDescription.h"

#include "llvm/Support/Error.h"

#include <string>
#include <vector>

namespace mlir::moe {

/// Where the runtime moec links into executables lives: `lib/` holding
/// libmoert.a and libmoert_main.a, `include/` holding moert/*.h.
struct RuntimeLocation {
  std::string libDir;
  std::string includeDir;
  std::string halideIncludeDir;
};

/// Finds `target`'s runtime: under $MOEC_RUNTIME_DIR if set, else next to
/// the moec executable (<bin>/../<runtime_dir> and <bin>/../include), as in
/// the build tree and after installation. Objects need only the headers;
/// an executable also needs the `libraries`.
llvm::Expected<RuntimeLocation> findRuntime(const char *argv0,
                                            const TargetDescription &target,
                                            bool libraries = true);

/// Fails, naming the Debian package, when `target`'s C compiler is not
/// installed: checked before any expensive work.
llvm::Error checkToolchain(const TargetDescription &target);

/// Compiles the host C file `source` to `object` for `target`. With a
/// `cacheDir`, the object is kept there under a key of the source, the
/// command line and the runtime headers it includes, and reused:
/// `*fromCache` says whether it was. (The C compiler took about 4 s of an
/// 8 s warm compile of the full-size physics model.)
llvm::Error compileHostCode(const TargetDescription &target,
                            const RuntimeLocation &runtime,
                            llvm::StringRef source, llvm::StringRef object,
                            llvm::StringRef cacheDir = "",
                            bool *fromCache = nullptr);

/// Links `objects` with the runtime into the executable `output`.
llvm::Error linkExecutable(const TargetDescription &target,
                           const RuntimeLocation &runtime,
                           const std::vector<std::string> &objects,
                           llvm::StringRef output);

/// Runs `argv` (argv[0] a path or a program on PATH) and waits; on failure
/// the error says it could not `what`, quoting the command and its stderr.
/// An interrupted moec stops it first.
llvm::Error runProgram(std::vector<std::string> argv, llvm::StringRef what);

} // namespace mlir::moe

#endif // MOE_COMPILER_DRIVER_TOOLCHAIN_H
