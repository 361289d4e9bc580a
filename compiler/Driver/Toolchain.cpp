//===- Toolchain.cpp - Compiling host code, linking executables -----------===//

#include "compiler/Driver/Toolchain.h"

#include "compiler/Driver/DriverConfig.h"
#include "targets/common/TargetRegistry.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Process.h"
#include "llvm/Support/Program.h"

namespace mlir::moe {

namespace {

/// The compiler driver and the flags every use of it shares.
std::vector<std::string> compilerDriver(const TargetDescription &target) {
  std::vector<std::string> argv{target.cc};
  if (!target.sysroot.empty()) {
    argv.push_back("--sysroot=" + target.sysroot);
  }
  return argv;
}

/// Runs `argv`; on failure the error quotes the command and its stderr.
llvm::Error run(const TargetDescription &target, std::vector<std::string> argv,
                llvm::StringRef what) {
  std::optional<std::string> program = findTool(argv[0]);
  if (!program) {
    return checkToolchain(target);
  }
  llvm::SmallString<128> errors;
  llvm::sys::fs::createTemporaryFile("moec-cc", "txt", errors);
  std::optional<llvm::StringRef> redirects[] = {std::nullopt, std::nullopt,
                                                llvm::StringRef(errors)};
  std::vector<llvm::StringRef> args(argv.begin(), argv.end());
  std::string message;
  int rc = llvm::sys::ExecuteAndWait(*program, args, std::nullopt, redirects,
                                     /*SecondsToWait=*/0, /*MemoryLimit=*/0,
                                     &message);
  std::string output;
  if (auto buffer = llvm::MemoryBuffer::getFile(errors)) {
    output = (*buffer)->getBuffer().str();
  }
  llvm::sys::fs::remove(errors);
  if (rc != 0) {
    return llvm::createStringError(
        "cannot " + what + ": '" + llvm::join(argv, " ") + "' failed" +
        (message.empty() ? "" : " (" + message + ")") +
        (output.empty() ? "" : ":\n" + output));
  }
  return llvm::Error::success();
}

} // namespace

llvm::Error checkToolchain(const TargetDescription &target) {
  if (!findTool(target.cc)) {
    return llvm::createStringError(
        "--target=" + target.name + " needs the C compiler '" + target.cc +
        "', which is not installed: install the Debian package " +
        target.ccPackage);
  }
  return llvm::Error::success();
}

llvm::Expected<RuntimeLocation> findRuntime(const char *argv0,
                                            const TargetDescription &target,
                                            bool libraries) {
  RuntimeLocation location;
  location.halideIncludeDir = MOEC_HALIDE_INCLUDE_DIR;
  std::string root;
  if (std::optional<std::string> env =
          llvm::sys::Process::GetEnv("MOEC_RUNTIME_DIR")) {
    root = *env;
  } else {
    static int anchor;
    std::string exe = llvm::sys::fs::getMainExecutable(argv0, &anchor);
    root =
        llvm::sys::path::parent_path(llvm::sys::path::parent_path(exe)).str();
  }
  location.libDir = llvm::sys::path::is_absolute(target.runtimeDir)
                        ? target.runtimeDir
                        : root + "/" + target.runtimeDir;
  location.includeDir = root + "/include";
  // The build tree and an installation carry HalideRuntime.h beside
  // moert/; a runtime-only MOEC_RUNTIME_DIR may lean on Halide's package.
  if (llvm::sys::fs::exists(location.includeDir + "/HalideRuntime.h")) {
    location.halideIncludeDir = location.includeDir;
  }
  std::vector<std::string> needed{location.includeDir + "/moert/host_abi.h"};
  if (libraries) {
    needed.push_back(location.libDir + "/libmoert.a");
    needed.push_back(location.libDir + "/libmoert_main.a");
  }
  for (const std::string &file : needed) {
    if (!llvm::sys::fs::exists(file)) {
      return llvm::createStringError(
          "the moec runtime for --target=" + target.name + " is missing: " +
          file + " does not exist (rebuild moec with " + target.ccPackage +
          " installed, or set MOEC_RUNTIME_DIR to a directory with " +
          target.runtimeDir + "/ and include/)");
    }
  }
  return location;
}

llvm::Error compileHostCode(const TargetDescription &target,
                            const RuntimeLocation &runtime,
                            llvm::StringRef source, llvm::StringRef object) {
  std::vector<std::string> argv = compilerDriver(target);
  argv.insert(argv.end(), target.cflags.begin(), target.cflags.end());
  argv.insert(argv.end(), {"-std=c11", "-fPIC", "-I" + runtime.includeDir,
                           "-I" + runtime.halideIncludeDir, "-c", source.str(),
                           "-o", object.str()});
  return run(target, argv, "compile the host code");
}

llvm::Error linkExecutable(const TargetDescription &target,
                           const RuntimeLocation &runtime,
                           const std::vector<std::string> &objects,
                           llvm::StringRef output) {
  std::vector<std::string> argv = compilerDriver(target);
  argv.insert(argv.end(), {"-o", output.str()});
  argv.insert(argv.end(), objects.begin(), objects.end());
  argv.insert(argv.end(), {runtime.libDir + "/libmoert_main.a",
                           runtime.libDir + "/libmoert.a"});
  argv.insert(argv.end(), target.ldflags.begin(), target.ldflags.end());
  return run(target, argv, "link the executable");
}

} // namespace mlir::moe
