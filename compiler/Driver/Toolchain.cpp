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
#include <cerrno>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <mutex>
#include <pthread.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

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

/// The tools running now (the C compiler, the linker), each the leader of
/// its own process group. An interrupted moec stops them and everything they
/// started before it exits: one left running could write its output, moec's
/// temporary file, after the signal handler removed it (a stray
/// `exe.tmp<pid>` after `kill -INT`, found by test/bad-inputs). A slot holds
/// kSpawning while a tool is being started, so the handler knows to wait for
/// its pid.
constexpr int kToolSlots = 8;
constexpr pid_t kSpawning = -1;
std::atomic<pid_t> runningTools[kToolSlots];

/// The signals LLVM's handlers turn into an interrupt.
constexpr int kInterruptSignals[] = {SIGINT, SIGTERM, SIGHUP};

sigset_t interruptSignals() {
  sigset_t set;
  sigemptyset(&set);
  for (int sig : kInterruptSignals) {
    sigaddset(&set, sig);
  }
  return set;
}

/// Which interrupt signal arrived. LLVM's interrupt function is not told,
/// and moec must end by the signal it got (a `kill -TERM` reported as an
/// interrupt misleads the shell or the service manager that sent it), so a
/// handler in front of LLVM's records it and passes the signal on.
std::atomic<int> receivedInterrupt{0};
struct sigaction llvmHandlers[NSIG];

void recordInterrupt(int sig, siginfo_t *info, void *context) {
  receivedInterrupt.store(sig);
  const struct sigaction &next = llvmHandlers[sig];
  if (next.sa_flags & SA_SIGINFO) {
    next.sa_sigaction(sig, info, context);
  } else {
    next.sa_handler(sig);
  }
}

/// Puts recordInterrupt in front of the handlers LLVM has registered.
/// LLVM registers its handlers once and, when one runs, restores what was
/// there before it (the default), so the chain stays valid until the end.
void recordInterruptsBeforeLlvm() {
  for (int sig : kInterruptSignals) {
    struct sigaction current;
    if (::sigaction(sig, nullptr, &current) != 0 ||
        (!(current.sa_flags & SA_SIGINFO) &&
         (current.sa_handler == SIG_DFL || current.sa_handler == SIG_IGN))) {
      continue; // not LLVM's: nothing to put a handler in front of
    }
    llvmHandlers[sig] = current;
    struct sigaction ours = current;
    ours.sa_flags |= SA_SIGINFO;
    ours.sa_sigaction = recordInterrupt;
    ::sigaction(sig, &ours, nullptr);
  }
}

/// Kills the process group `leader` leads and waits, up to a few seconds,
/// until none of it is left: the compiler driver's children (the linker)
/// are in its group, and must not outlive the removal of their output.
void killToolGroup(pid_t leader) {
  ::kill(-leader, SIGKILL);
  ::waitpid(leader, nullptr, 0);
  // Orphaned members are reparented and reaped by init; poll until the
  // group is gone (ESRCH).
  for (int i = 0; i < 2000 && ::kill(-leader, 0) == 0; ++i) {
    ::usleep(1000);
  }
}

/// SIGINT, SIGTERM, SIGHUP: LLVM has removed the files registered with
/// RemoveFileOnSignal; stop the tools, remove what they wrote since, exit.
void stopToolsOnInterrupt() {
  for (std::atomic<pid_t> &slot : runningTools) {
    // A tool another thread is starting (interrupt signals are blocked in
    // that thread until its pid is stored, so this is not that thread).
    pid_t pid = slot.load();
    for (int i = 0; i < 5000 && pid == kSpawning; ++i) {
      ::usleep(100);
      pid = slot.load();
    }
    if (pid > 0 && slot.compare_exchange_strong(pid, 0)) {
      killToolGroup(pid);
    }
  }
  llvm::sys::RunInterruptHandlers();
  int sig = receivedInterrupt.load();
  if (sig == 0) {
    sig = SIGINT;
  }
  ::signal(sig, SIG_DFL);
  ::raise(sig);
  ::_exit(128 + sig);
}

/// A slot of runningTools for one tool's lifetime: reserved (kSpawning)
/// before the tool starts, so an interrupt never misses a tool that has
/// started but is not yet recorded.
class TrackedTool {
public:
  TrackedTool() {
    for (std::atomic<pid_t> &candidate : runningTools) {
      pid_t free = 0;
      if (candidate.compare_exchange_strong(free, kSpawning)) {
        slot = &candidate;
        return;
      }
    }
  }
  void started(pid_t pid) {
    if (slot) {
      slot->store(pid);
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

/// Starts `argv` (argv[0] is `program`) as the leader of a new process
/// group, its stdout and stderr into `output`, and waits for it. Returns its
/// exit status; -1 with `message` set when it did not start or did not exit
/// normally.
int runToolGroup(const std::string &program,
                 const std::vector<std::string> &argv, llvm::StringRef output,
                 std::string &message) {
  std::vector<char *> args;
  for (const std::string &arg : argv) {
    args.push_back(const_cast<char *>(arg.c_str()));
  }
  args.push_back(nullptr);
  std::string outputPath = output.str();
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, outputPath.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  // Interrupt signals stay blocked in this thread from the slot's
  // reservation until the pid is in it; the tool starts with this thread's
  // usual mask and default handlers, in a group of its own.
  sigset_t interrupts = interruptSignals();
  sigset_t usual;
  pthread_sigmask(SIG_BLOCK, &interrupts, &usual);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP |
                                      POSIX_SPAWN_SETSIGMASK |
                                      POSIX_SPAWN_SETSIGDEF);
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setsigmask(&attr, &usual);
  posix_spawnattr_setsigdefault(&attr, &interrupts);
  TrackedTool tracked;
  pid_t pid = 0;
  int err =
      posix_spawn(&pid, program.c_str(), &actions, &attr, args.data(), environ);
  if (err == 0) {
    tracked.started(pid);
  }
  pthread_sigmask(SIG_SETMASK, &usual, nullptr);
  posix_spawnattr_destroy(&attr);
  posix_spawn_file_actions_destroy(&actions);
  if (err != 0) {
    message = "cannot start it: " + std::string(std::strerror(err));
    return -1;
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) {
      message = "cannot wait for it: " + std::string(std::strerror(errno));
      return -1;
    }
  }
  if (WIFSIGNALED(status)) {
    message = "killed by signal " + std::to_string(WTERMSIG(status)) + ", " +
              ::strsignal(WTERMSIG(status));
    return -1;
  }
  return WEXITSTATUS(status);
}

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
  std::call_once(interruptible, [] {
    llvm::sys::SetInterruptFunction(stopToolsOnInterrupt);
    recordInterruptsBeforeLlvm();
  });
  std::optional<std::string> program = findTool(argv[0]);
  if (!program) {
    return llvm::createStringError("cannot " + what + ": " + argv[0] +
                                   " is not an executable program");
  }
  llvm::SmallString<128> errors;
  llvm::sys::fs::createTemporaryFile("moec-cc", "txt", errors);
  // Both output streams: a failure's message may be on either.
  std::string message;
  int rc = runToolGroup(*program, argv, errors, message);
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
