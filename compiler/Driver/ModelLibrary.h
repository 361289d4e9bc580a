//===- ModelLibrary.h - A compiled model as a static library ----*- C++ -*-===//
//
// `moec compile --emit=lib -o DIR/NAME` writes, beside the weight file
// DIR/NAME.weights:
//   DIR/libNAME.a    the model's kernels and host code, and the runtime
//                    library's members, so an application links one archive
//   DIR/NAME.h       declares the model and NAME_open() over moert/llm.h
//   DIR/moert/*.h    the runtime headers NAME.h includes
//
//===----------------------------------------------------------------------===//

#ifndef MOE_COMPILER_DRIVER_MODELLIBRARY_H
#define MOE_COMPILER_DRIVER_MODELLIBRARY_H

#include "compiler/Driver/Toolchain.h"

#include "llvm/Support/Error.h"

#include <string>
#include <vector>

namespace mlir::moe {

/// What the header tells its reader about the model.
struct ModelLibraryInfo {
  std::string family;
  std::string target; // as named on the command line
  std::string moecVersion;
};

/// The C identifier NAME_open() is named after: `stem` with every
/// character outside [A-Za-z0-9_] replaced by '_', and a leading digit
/// prefixed by '_'.
std::string modelSymbolPrefix(llvm::StringRef stem);

/// How an application links the library of `name` in `dir`:
/// "<cc> app.c -I<dir> <dir>/lib<name>.a <ldflags>".
std::string modelLibraryLinkCommand(const TargetDescription &target,
                                    llvm::StringRef dir, llvm::StringRef name);

/// Writes the archive, the header and the runtime headers for `outputPath`
/// (DIR/NAME), each through a temporary file, so a failure leaves no
/// partial file.
llvm::Error writeModelLibrary(const TargetDescription &target,
                              const RuntimeLocation &runtime,
                              const std::vector<std::string> &objects,
                              llvm::StringRef outputPath,
                              const ModelLibraryInfo &info);

} // namespace mlir::moe

#endif // MOE_COMPILER_DRIVER_MODELLIBRARY_H
