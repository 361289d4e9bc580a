//===- Toolchain.cpp - Compiling host code, linking executables -----------===//

#include "compiler/Driver/Toolchain.h"

#include "compiler/Driver/DriverConfig.h"
#include "targets/common/ObjectCache.h"
#include "targets/common/TargetRegistry.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Process.h"
#include "llvm/Support/Program.h"
#include "llvm/Support/Signals.h"

#include <algorithm>
#include <atomic>
#include <csignal>
#include <mutex>
#include <sys/wait.h>

namespace mlir::moe {

namespace {

std::string readOrEmpty(llvm::StringRef path) {
  auto buffer = llvm::MemoryBuffer::getFile(path);
  return buffer ? (*buffer)->getBuffer().str() : std::string();
}

/// The runtime headers host code includes, in a fixed order: a moec built
/// from other runtime sources must not reuse this one's objects.
std::string headersText(const RuntimeLocation &runtime) {
  std::vector<std::string> paths;
  std::error_code ec;
  for (llvm::sys::fs::directory_iterator it(runtime.includeDir + "/moert", ec),
       end;
       it != end && !ec; it.increment(ec)) {
    paths.push_back(it->path());
  }
  std::sort(paths.begin(), paths.end());
  paths.push_back(runtime.halideIncludeDir + "/HalideRuntime.h");
  std::string text;
  for (const std::string &path : paths) {
    text += path + "\n" + readOrEmpty(path);
  }
  return text;
}

/// The compiler driver and the flags every use of it shares.
std::vector<std::string> compilerDriver(const TargetDescription &target) {
  std::vector<std::string> argv{target.cc};
  if (!target.sysroot.empty()) {
    argv.push_back("--sysroot=" + target.sysroot);
  }
  return argv;
}

/// The tools running now (the C compiler, the linker). An interrupted moec
/// stops them before it exits: one left running could write its output,
/// moec's temporary file, after the signal handler removed it (a stray
/// `exe.tmp<pid>` after `kill -INT`, found by test/bad-inputs).
constexpr int kToolSlots = 8;
std::atomic<pid_t> runningTools[kToolSlots];

/// SIGINT, SIGTERM, SIGHUP: LLVM has removed the files registered with
/// RemoveFileOnSignal; stop the tools, remove what they wrote since, exit.
void stopToolsOnInterrupt() {
  for (std::atomic<pid_t> &slot : runningTools) {
    if (pid_t pid = slot.exchange(0); pid > 0) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
  }
  llvm::sys::RunInterruptHandlers();
  ::signal(SIGINT, SIG_DFL);
  ::raise(SIGINT);
  ::_exit(130);
}

/// Holds a running tool's pid in a free slot for stopToolsOnInterrupt.
class TrackedTool {
public:
  explicit TrackedTool(pid_t pid) {
    for (std::atomic<pid_t> &slot : runningTools) {
      pid_t free = 0;
      if (slot.compare_exchange_strong(free, pid)) {
        this->slot = &slot;
        return;
      }
    }
  }
  ~TrackedTool() {
    if (slot) {
      slot->store(0);
    }
  }

private:
  std::atomic<pid_t> *slot = nullptr;
};

/// Runs `argv`; on failure the error quotes the command and its stderr.
llvm::Error run(const TargetDescription &target, std::vector<std::string> argv,
                llvm::StringRef what) {
  if (!findTool(argv[0])) {
    return checkToolchain(target);
  }
  return runProgram(std::move(argv), what);
}

} // namespace

llvm::Error runProgram(std::vector<std::string> argv, llvm::StringRef what) {
  static std::once_flag interruptible;
  std::call_once(interruptible,
                 [] { llvm::sys::SetInterruptFunction(stopToolsOnInterrupt); });
  std::optional<std::string> program = findTool(argv[0]);
  if (!program) {
    return llvm::createStringError("cannot " + what + ": " + argv[0] +
                                   " is not an executable program");
  }
  llvm::SmallString<128> errors;
  llvm::sys::fs::createTemporaryFile("moec-cc", "txt", errors);
  // Both output streams: a failure's message may be on either.
  std::optional<llvm::StringRef> redirects[] = {
      std::nullopt, llvm::StringRef(errors), llvm::StringRef(errors)};
  std::vector<llvm::StringRef> args(argv.begin(), argv.end());
  std::string message;
  bool notStarted = false;
  llvm::sys::ProcessInfo tool =
      llvm::sys::ExecuteNoWait(*program, args, std::nullopt, redirects,
                               /*MemoryLimit=*/0, &message, &notStarted);
  int rc = -1;
  if (!notStarted) {
    TrackedTool tracked(tool.Pid);
    rc = llvm::sys::Wait(tool, /*SecondsToWait=*/std::nullopt, &message)
             .ReturnCode;
  }
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
                            llvm::StringRef source, llvm::StringRef object,
                            llvm::StringRef cacheDir, bool *fromCache) {
  std::vector<std::string> flags = compilerDriver(target);
  flags.insert(flags.end(), target.cflags.begin(), target.cflags.end());
  flags.insert(flags.end(), {"-std=c11", "-fPIC", "-I" + runtime.includeDir,
                             "-I" + runtime.halideIncludeDir, "-c"});
  std::vector<std::string> argv = flags;
  argv.insert(argv.end(), {source.str(), "-o", object.str()});
  if (fromCache) {
    *fromCache = false;
  }
  std::string cached;
  if (!cacheDir.empty()) {
    // Everything the object is built from (the work directory's paths
    // are not: they differ every compile).
    std::string what = MOEC_VERSION "\n" + llvm::join(flags, " ") + "\n" +
                       readOrEmpty(source) + headersText(runtime);
    cached = (cacheDir + "/host-" + cacheKey(what) + ".o").str();
    if (llvm::sys::fs::exists(cached) && copyAtomically(cached, object)) {
      if (fromCache) {
        *fromCache = true;
      }
      return llvm::Error::success();
    }
  }
  if (llvm::Error err = run(target, argv, "compile the host code")) {
    return err;
  }
  if (!cached.empty()) {
    copyAtomically(object, cached);
  }
  return llvm::Error::success();
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
