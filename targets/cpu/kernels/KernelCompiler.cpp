//===- KernelCompiler.cpp - Compile and cache a module's kernels ----------===//
//
// Algorithm:
//   1. Key every kernel: hash(content hash, symbol, Halide target, the
//      description's vector width and registers, Halide version, generator
//      source hash). A cached object with that key is copied; the rest are
//      compiled.
//   2. With jobs > 1, fork that many workers; worker w compiles every
//      jobs-th missing kernel and writes its object to the cache (or the
//      work directory) atomically. Forking is safe here: moec runs MLIR
//      single-threaded and Halide's compiler starts no threads.
//   3. The Halide runtime (one per executable) is keyed by target alone.
//
// Compiled with exceptions on: Halide reports errors as exceptions.
//
//===----------------------------------------------------------------------===//

#include "targets/cpu/kernels/KernelCompiler.h"

#include "dialects/MoE/Transforms/Passes.h"
#include "targets/common/ObjectCache.h"
#include "targets/common/TargetRegistry.h"
#include "targets/cpu/kernels/KernelBuilder.h"
#include "targets/cpu/kernels/KernelSourceHash.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/Path.h"

#include <Halide.h>

#include <sys/wait.h>
#include <unistd.h>

namespace mlir::moe::cpu {

namespace {

struct Job {
  KernelOp kernel;
  std::string symbol;
  std::string key;
  std::string object;  // final path in the work directory
  std::string listing; // stmt or assembly path, if requested
  std::string halideTarget;
};

/// Writes the GPU code of `module` (Halide embeds it as a buffer named
/// `<api>_gpu_source_kernels`: PTX for CUDA) to `job.listing`.
bool writeDeviceCode(const Halide::Module &module, Job job) {
  for (const Halide::Buffer<> &buffer : module.buffers()) {
    if (!llvm::StringRef(buffer.name()).ends_with("_gpu_source_kernels")) {
      continue;
    }
    std::string code(reinterpret_cast<const char *>(buffer.data()),
                     buffer.size_in_bytes());
    while (!code.empty() && code.back() == '\0') {
      code.pop_back();
    }
    std::error_code ec;
    llvm::raw_fd_ostream os(job.listing, ec);
    if (ec) {
      job.kernel.emitOpError("cannot write ") << job.listing;
      return false;
    }
    os << code;
    return true;
  }
  job.kernel.emitOpError("has no GPU code: --emit=ptx needs a GPU target "
                         "(e.g. --target=cuda)");
  return false;
}

/// Compiles one kernel; returns false after emitting a diagnostic.
bool compileOne(Job job, const KernelCompileOptions &options) {
  const std::string &halideTarget = job.halideTarget;
  FailureOr<BuiltKernel> built = buildKernel(job.kernel, options.target);
  if (failed(built)) {
    return false;
  }
  std::string temp = job.object + ".tmp" + std::to_string(getpid());
  try {
    Halide::Module module = built->pipeline.compile_to_module(
        built->arguments, job.symbol, Halide::Target(halideTarget));
    std::map<Halide::OutputFileType, std::string> files{
        {Halide::OutputFileType::object, temp}};
    if (options.emitStmt) {
      files[Halide::OutputFileType::stmt] = job.listing;
    }
    if (options.emitAssembly) {
      files[Halide::OutputFileType::assembly] = job.listing;
    }
    if (options.emitDeviceCode && !writeDeviceCode(module, job)) {
      return false;
    }
    module.compile(files);
  } catch (const Halide::Error &error) {
    job.kernel.emitOpError("Halide could not compile the kernel: ")
        << error.what();
    llvm::sys::fs::remove(temp);
    return false;
  }
  if (llvm::sys::fs::rename(temp, job.object)) {
    job.kernel.emitOpError("cannot write ") << job.object;
    llvm::sys::fs::remove(temp);
    return false;
  }
  return true;
}

} // namespace

std::string kernelHalideTarget(const TargetDescription &target, bool int8) {
  Halide::Target t(int8 ? int8HalideTarget(target) : target.halideTarget);
  return t.with_feature(Halide::Target::UserContext)
      .with_feature(Halide::Target::NoRuntime)
      .to_string();
}

bool usesInt8Dot(Operation *root) {
  return root
      ->walk([](Operation *op) {
        return op->hasAttr("int8_activations") ? WalkResult::interrupt()
                                               : WalkResult::advance();
      })
      .wasInterrupted();
}

FailureOr<CompiledKernels> compileKernels(ModuleOp module,
                                          const KernelCompileOptions &options) {
  std::string halideTarget, int8Target;
  try {
    halideTarget = kernelHalideTarget(options.target);
    int8Target = kernelHalideTarget(options.target, /*int8=*/true);
  } catch (const Halide::Error &error) {
    module.emitError("target '")
        << options.target.name << "': Halide rejects its target string '"
        << options.target.halideTarget << "': " << error.what();
    return failure();
  }
  if (!options.cacheDir.empty()) {
    if (std::error_code ec =
            llvm::sys::fs::create_directories(options.cacheDir)) {
      module.emitError("cannot create the kernel cache ")
          << options.cacheDir << ": " << ec.message();
      return failure();
    }
  }
  // Halide 14's headers carry no version macros; the major version is in
  // the library's name.
  std::string version = "halide-14";
  // What the schedules read of the description beyond the Halide target:
  // two descriptions that differ only there build different code.
  std::string schedule =
      llvm::formatv("vector_bytes={0},vector_registers={1},dot={2}{3}",
                    options.target.vectorBytes, options.target.vectorRegisters,
                    options.target.int8Dot.dotBytes,
                    options.target.int8Dot.unsignedCodes ? "u" : "s")
          .str();
  bool listings =
      options.emitStmt || options.emitAssembly || options.emitDeviceCode;
  std::vector<Job> jobs;
  for (KernelOp kernel : module.getOps<KernelOp>()) {
    Job job;
    job.kernel = kernel;
    job.symbol = kernel.getSymName().str();
    // Only kernels with int8 dot products get the target's extra features.
    job.halideTarget = usesInt8Dot(kernel) ? int8Target : halideTarget;
    job.key = cacheKey(kernelContentHash(kernel) + "|" + job.symbol + "|" +
                       job.halideTarget + "|" + schedule + "|" + version + "|" +
                       MOE_KERNEL_SOURCE_HASH);
    llvm::SmallString<256> path(options.workDir);
    llvm::sys::path::append(path, job.symbol + ".o");
    job.object = path.str().str();
    if (listings) {
      job.listing = options.workDir + "/" + job.symbol +
                    (options.emitStmt         ? ".stmt"
                     : options.emitDeviceCode ? ".ptx"
                                              : ".s");
    }
    jobs.push_back(std::move(job));
  }

  CompiledKernels result;
  std::vector<size_t> missing;
  for (size_t i = 0; i < jobs.size(); ++i) {
    const Job &job = jobs[i];
    std::string cached = options.cacheDir + "/" + job.key + ".o";
    if (!listings && !options.cacheDir.empty() &&
        llvm::sys::fs::exists(cached) && copyAtomically(cached, job.object)) {
      ++result.fromCache;
      continue;
    }
    missing.push_back(i);
  }

  auto finish = [&](const Job &job) {
    if (!options.cacheDir.empty()) {
      copyAtomically(job.object, options.cacheDir + "/" + job.key + ".o");
    }
  };
  int workers = std::max(1, std::min<int>(options.jobs, missing.size()));
  if (workers == 1) {
    for (size_t i : missing) {
      if (!compileOne(jobs[i], options)) {
        return failure();
      }
      finish(jobs[i]);
      ++result.compiled;
    }
  } else {
    std::vector<pid_t> children;
    for (int w = 0; w < workers; ++w) {
      pid_t pid = fork();
      if (pid < 0) {
        module.emitError("cannot fork a kernel compiler worker");
        return failure();
      }
      if (pid == 0) {
        int status = 0;
        for (size_t n = w; n < missing.size(); n += workers) {
          const Job &job = jobs[missing[n]];
          if (!compileOne(job, options)) {
            status = 1;
            break;
          }
          finish(job);
        }
        fflush(nullptr);
        _exit(status);
      }
      children.push_back(pid);
    }
    bool ok = true;
    for (pid_t child : children) {
      int status = 0;
      if (waitpid(child, &status, 0) < 0 || !WIFEXITED(status) ||
          WEXITSTATUS(status) != 0) {
        ok = false;
      }
    }
    if (!ok) {
      module.emitError("kernel compilation failed (see above)");
      return failure();
    }
    result.compiled = static_cast<int>(missing.size());
  }
  for (const Job &job : jobs) {
    result.objects.push_back(job.object);
    if (listings) {
      result.listings.push_back(job.listing);
    }
  }

  // The one Halide runtime every kernel of the executable shares.
  Halide::Target runtimeTarget =
      Halide::Target(halideTarget).without_feature(Halide::Target::NoRuntime);
  std::string runtimeKey =
      cacheKey("runtime|" + runtimeTarget.to_string() + "|" + version);
  std::string runtimeObject = options.workDir + "/halide_runtime.o";
  std::string cachedRuntime = options.cacheDir + "/" + runtimeKey + ".o";
  if (options.cacheDir.empty() || !llvm::sys::fs::exists(cachedRuntime) ||
      !copyAtomically(cachedRuntime, runtimeObject)) {
    try {
      std::string temp = runtimeObject + ".tmp";
      Halide::compile_standalone_runtime(temp, runtimeTarget);
      if (llvm::sys::fs::rename(temp, runtimeObject)) {
        module.emitError("cannot write ") << runtimeObject;
        return failure();
      }
    } catch (const Halide::Error &error) {
      module.emitError("Halide could not compile its runtime: ")
          << error.what();
      return failure();
    }
    if (!options.cacheDir.empty()) {
      copyAtomically(runtimeObject, cachedRuntime);
    }
  }
  result.objects.push_back(runtimeObject);
  return result;
}

} // namespace mlir::moe::cpu
