//===- KernelHarness.h - Build, JIT-run and check CPU kernels ---*- C++ -*-===//
//
// What every CPU kernel test shares: a `moe.kernel` written as IR, built
// with the same buildKernel() that `moec compile` uses, JIT-compiled for
// this machine and run on given tensors; random inputs, layouts, and
// comparisons.
//
// $MOE_KERNEL_TEST_TARGET names the target whose schedules are built
// (default: host): its vector width and register count shape every tile,
// so the tiles and tails of aarch64 or AVX2 are checked here too, though
// the code runs with this machine's instructions. Kernels with int8 dot
// products run with the target's extra Halide features when this machine
// has them (VNNI), so the instructions they select are the ones tested. A
// GPU target (cuda) is built with its GPU schedules, their GPU loops run
// on the host.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_TEST_TARGETS_CPU_KERNELS_KERNELHARNESS_H
#define MOE_TEST_TARGETS_CPU_KERNELS_KERNELHARNESS_H

#include "targets/cpu/kernels/KernelBuilder.h"

#include "dialects/MoE/Utils/Quantize.h"
#include "frontends/checkpoint/DType.h"

#include "compiler/Pipelines/Registration.h"
#include "targets/common/KernelAbi.h"
#include "targets/common/TargetRegistry.h"
#include "targets/cpu/kernels/KernelCompiler.h"
#include "test/targets/cpu/kernels/Reference.h"

#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <random>
#include <regex>

namespace moe::kernel_test {

using namespace mlir;
using namespace mlir::moe;
namespace ref = ::moe::reference;
using ref::Vec;

inline Vec randomValues(size_t n, uint32_t seed, float lo = -1.0f,
                        float hi = 1.0f) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  Vec v(n);
  for (float &x : v) {
    x = dist(gen);
  }
  return v;
}

/// Transposes a row-major [rows, cols] matrix (per leading batch).
inline Vec transposed(const Vec &m, int batch, int rows, int cols) {
  Vec t(m.size());
  for (int b = 0; b < batch; ++b) {
    for (int r = 0; r < rows; ++r) {
      for (int c = 0; c < cols; ++c) {
        t[b * rows * cols + c * rows + r] = m[b * rows * cols + r * cols + c];
      }
    }
  }
  return t;
}

/// A row-major [rows, cols] matrix (per leading batch) in panels of
/// `panel` rows: [rows / panel, cols, panel] (moe.weight `layout panels`).
inline Vec panels(const Vec &m, int batch, int rows, int cols, int panel) {
  Vec p(m.size());
  for (int b = 0; b < batch; ++b) {
    for (int r = 0; r < rows; ++r) {
      for (int c = 0; c < cols; ++c) {
        p[b * rows * cols + ((r / panel) * cols + c) * panel + r % panel] =
            m[b * rows * cols + r * cols + c];
      }
    }
  }
  return p;
}

/// The panel width the target's projections are tiled by (the CPU
/// pipeline's choice), or 16 where it stores no panels (a GPU).
inline int targetPanel() {
  const char *name = std::getenv("MOE_KERNEL_TEST_TARGET");
  auto target = lookupTarget(name ? name : "host");
  int panel = target ? target->projectionPanel() : 0;
  if (!target) {
    llvm::consumeError(target.takeError());
  }
  return panel > 0 ? panel : 16;
}

/// The argument attributes of a weight stored in panels of `panel`.
inline std::string panelAttrs(int panel) {
  return "{moe.layout = #moe.weight_layout<panels>, moe.panel = " +
         std::to_string(panel) + " : i64}";
}

/// A kernel parsed from IR and built for this machine.
class Kernel {
public:
  /// Builds `ir` for `targetName` (default: $MOE_KERNEL_TEST_TARGET, or
  /// host).
  explicit Kernel(const std::string &ir, const char *targetName = nullptr) {
    DialectRegistry registry;
    registerAllDialects(registry);
    context.appendDialectRegistry(registry);
    context.loadAllAvailableDialects();
    module = parseSourceString<ModuleOp>(ir, &context);
    if (!module) {
      ADD_FAILURE() << "cannot parse:\n" << ir;
      return;
    }
    kernel = *module->getOps<KernelOp>().begin();
    const char *name =
        targetName ? targetName : std::getenv("MOE_KERNEL_TEST_TARGET");
    auto target = lookupTarget(name ? name : "host");
    if (!target) {
      ADD_FAILURE() << llvm::toString(target.takeError());
      return;
    }
    // A GPU target's schedules run here with their GPU loops on the host:
    // the same Funcs, roots, splits and guards, without a GPU.
    cpu::KernelBuildOptions options;
    options.gpuLoopsOnHost = target->isGpu();
    FailureOr<cpu::BuiltKernel> result =
        cpu::buildKernel(kernel, *target, options);
    if (failed(result)) {
      ADD_FAILURE() << "buildKernel failed";
      return;
    }
    built = std::move(*result);
    description = *target;
    // This machine's instructions, with the int8 kernels' extra features
    // when the target has some and this machine runs them.
    jitTarget = hostHalideTarget();
    std::string int8 = int8HalideTarget(*target);
    if (cpu::usesInt8Dot(kernel) && int8 != target->halideTarget &&
        runsNatively(*target)) {
      Halide::Target extra(int8);
      for (int f = 0; f < Halide::Target::FeatureEnd; ++f) {
        auto feature = static_cast<Halide::Target::Feature>(f);
        if (extra.has_feature(feature) &&
            !Halide::Target(target->halideTarget).has_feature(feature)) {
          jitTarget = jitTarget.with_feature(feature);
        }
      }
    }
    ok = true;
  }

  struct Cache {
    int capacity, kvHeads, headDim;
    Vec keys, values; // [kvHeads, capacity, headDim]
  };

  /// One layer's convolution-state ring: [slots][channels].
  struct ConvState {
    int channels, slots;
    Vec ring;
  };

  /// Runs with `tensors` (one per tensor argument, in argument order, in
  /// stored layout), returns every output tensor (row-major) and fills the
  /// cache windows of written caches and the ring of a written conv state.
  std::vector<Vec>
  run(const std::vector<std::pair<Vec, std::vector<int>>> &tensors, int tokens,
      int position = 0, Cache *cache = nullptr, ConvState *conv = nullptr) {
    std::vector<Vec> results;
    if (!ok) {
      return results;
    }
    FailureOr<SmallVector<KernelAbiSlot>> abi = kernelAbi(kernel);
    std::vector<Halide::Buffer<>> outputs;
    size_t nextTensor = 0, nextInput = 0;
    std::vector<Halide::Buffer<>> keep;
    for (const KernelAbiSlot &slot : *abi) {
      using Kind = KernelAbiSlot::Kind;
      if (slot.kind == Kind::InputTensor) {
        const auto &[data, shape] = tensors.at(nextTensor++);
        std::vector<int> sizes(shape.rbegin(), shape.rend());
        auto type =
            cast<RankedTensorType>(kernel.getArgumentTypes()[slot.index]);
        bool isInt = type.getElementType().isInteger(32);
        bool isByte = type.getElementType().isUnsignedInteger(8);
        bool isHalf = type.getElementType().isF16();
        Halide::Buffer<> buffer(isInt    ? Halide::Int(32)
                                : isByte ? Halide::UInt(8)
                                : isHalf ? Halide::Float(16)
                                         : Halide::Float(32),
                                sizes);
        if (isHalf) {
          for (size_t i = 0; i < data.size(); ++i) {
            static_cast<uint16_t *>(buffer.data())[i] =
                ::moe::frontend::floatToHalf(data[i]);
          }
        } else if (isByte) {
          for (size_t i = 0; i < data.size(); ++i) {
            static_cast<uint8_t *>(buffer.data())[i] =
                static_cast<uint8_t>(data[i]);
          }
        } else if (isInt) {
          for (size_t i = 0; i < data.size(); ++i) {
            static_cast<int32_t *>(buffer.data())[i] =
                static_cast<int32_t>(data[i]);
          }
        } else {
          std::memcpy(buffer.data(), data.data(), data.size() * 4);
        }
        built.inputs[nextInput++].first->set(buffer);
        keep.push_back(buffer);
      } else if (slot.kind == Kind::Scalar) {
        built.inputs[nextInput++].second->set(position);
      } else if (slot.kind == Kind::CacheKeysRead ||
                 slot.kind == Kind::CacheValuesRead) {
        Halide::Buffer<float> buffer(cache->headDim, cache->capacity,
                                     cache->kvHeads);
        const Vec &src =
            slot.kind == Kind::CacheKeysRead ? cache->keys : cache->values;
        std::memcpy(buffer.data(), src.data(), src.size() * 4);
        built.inputs[nextInput++].first->set(buffer);
        keep.push_back(buffer);
      } else if (slot.kind == Kind::ConvStateRead) {
        Halide::Buffer<float> buffer(conv->channels, conv->slots);
        std::memcpy(buffer.data(), conv->ring.data(), conv->ring.size() * 4);
        built.inputs[nextInput++].first->set(buffer);
        keep.push_back(buffer);
      } else if (slot.kind == Kind::ConvStateWrite) {
        // Written in place: the slots the call does not write keep their
        // contents.
        Halide::Buffer<float> buffer(conv->channels, conv->slots);
        std::memcpy(buffer.data(), conv->ring.data(), conv->ring.size() * 4);
        outputs.push_back(buffer);
      } else if (slot.kind == Kind::OutputTensor) {
        auto type = cast<RankedTensorType>(kernel.getResultTypes()[slot.index]);
        std::vector<int> sizes;
        for (int64_t d : llvm::reverse(type.getShape())) {
          sizes.push_back(ShapedType::isDynamic(d) ? tokens : int(d));
        }
        outputs.push_back(Halide::Buffer<>(type.getElementType().isInteger(32)
                                               ? Halide::Int(32)
                                               : Halide::Float(32),
                                           sizes));
      } else {
        Halide::Buffer<float> window(cache->headDim, tokens, cache->kvHeads);
        window.set_min(0, position, 0);
        outputs.push_back(window);
      }
    }
    Halide::Realization realization(outputs);
    built.pipeline.realize(realization,
                           jitTarget.with_feature(Halide::Target::JIT));
    size_t o = 0;
    for (const KernelAbiSlot &slot : *abi) {
      using Kind = KernelAbiSlot::Kind;
      if (slot.kind == Kind::OutputTensor) {
        Halide::Buffer<> &b = outputs[o++];
        Vec v(b.number_of_elements());
        if (b.type() == Halide::Int(32)) {
          for (size_t i = 0; i < v.size(); ++i) {
            v[i] = float(static_cast<int32_t *>(b.data())[i]);
          }
        } else {
          std::memcpy(v.data(), b.data(), v.size() * 4);
        }
        results.push_back(v);
      } else if (slot.kind == Kind::ConvStateWrite) {
        Halide::Buffer<float> ring(outputs[o++]);
        std::memcpy(conv->ring.data(), ring.data(), conv->ring.size() * 4);
      } else if (slot.kind == Kind::CacheKeysWrite ||
                 slot.kind == Kind::CacheValuesWrite) {
        Halide::Buffer<float> window(outputs[o++]);
        Vec &dst =
            slot.kind == Kind::CacheKeysWrite ? cache->keys : cache->values;
        for (int h = 0; h < cache->kvHeads; ++h) {
          for (int p = position; p < position + tokens; ++p) {
            for (int d = 0; d < cache->headDim; ++d) {
              dst[(h * cache->capacity + p) * cache->headDim + d] =
                  window(d, p, h);
            }
          }
        }
      }
    }
    return results;
  }

  /// The kernel's assembly as `moec compile` makes it for the target it was
  /// built for, to check which instructions the schedules select.
  std::string assembly() {
    llvm::SmallString<128> path;
    llvm::sys::fs::createTemporaryFile("kernel", "s", path);
    built.pipeline.compile_to_assembly(
        path.str().str(), built.arguments, "kernel",
        Halide::Target(
            cpu::kernelHalideTarget(description, cpu::usesInt8Dot(kernel))));
    auto buffer = llvm::MemoryBuffer::getFile(path);
    llvm::sys::fs::remove(path);
    return buffer ? (*buffer)->getBuffer().str() : "";
  }

  /// Halide's lowered statement of the kernel, to check which algorithm a
  /// strategy selected (every strategy computes the same values).
  std::string statement() {
    llvm::SmallString<128> path;
    llvm::sys::fs::createTemporaryFile("kernel", "stmt", path);
    built.pipeline.compile_to_lowered_stmt(path.str().str(), built.arguments,
                                           Halide::StmtOutputFormat::Text,
                                           jitTarget);
    auto buffer = llvm::MemoryBuffer::getFile(path);
    llvm::sys::fs::remove(path);
    return buffer ? (*buffer)->getBuffer().str() : "";
  }

  bool ok = false;

private:
  MLIRContext context;
  OwningOpRef<ModuleOp> module;
  KernelOp kernel;
  cpu::BuiltKernel built;
  TargetDescription description;
  Halide::Target jitTarget;
};

/// Substitutes the token dimension `T` (always spelled `tensor<T...`)
/// into an IR template.
inline std::string withTokens(std::string ir, const std::string &tokens) {
  return std::regex_replace(ir, std::regex("<T"), "<" + tokens);
}

inline void expectClose(const Vec &got, const Vec &want, double tol,
                        const std::string &what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_NEAR(got[i], want[i], tol * std::max(1.0, std::abs(double(want[i]))))
        << what << " at " << i;
  }
}

/// The three schedules of every kernel: (IR token dimension, tokens run).
inline const std::vector<std::pair<std::string, int>> kSchedules = {
    {"?", 5}, {"?", 1}, {"1", 1}};

/// The weights `E` matrices of packed codes stand for (moe.dequantize's
/// definition, code by code): [E, N, K] row-major. `offsetBinary` codes
/// are unsigned minus 2^(bits-1); `offsets` (asymmetric codes, the scales'
/// shape) are added after the scales.
inline Vec decodePacked(const Vec &codes, const Vec &scale, int E, int N, int K,
                        int bits, int group, bool lowFirst, bool offsetBinary,
                        const Vec *offsets = nullptr) {
  int B = (N * K * bits + 7) / 8, G = group ? (K + group - 1) / group : 1;
  int perByte = 8 / bits, half = 1 << (bits - 1);
  Vec out(E * N * K);
  for (int e = 0; e < E; ++e) {
    for (int i = 0; i < N * K; ++i) {
      int byte = int(codes[e * B + i / perByte]);
      int slot = i % perByte;
      int shift = (lowFirst ? slot : perByte - 1 - slot) * bits;
      int raw = (byte >> shift) & ((1 << bits) - 1);
      float q = bits == 1      ? (raw ? 1.0f : -1.0f)
                : offsetBinary ? float(raw - half)
                : raw >= half  ? float(raw - 2 * half)
                               : float(raw);
      int row = i / K, col = i % K;
      int at = group ? (e * N + row) * G + col / group : e * N + row;
      out[e * N * K + i] = q * scale[at] + (offsets ? (*offsets)[at] : 0.0f);
    }
  }
  return out;
}

} // namespace moe::kernel_test

#endif // MOE_TEST_TARGETS_CPU_KERNELS_KERNELHARNESS_H
