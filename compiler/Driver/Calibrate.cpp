//===- Calibrate.cpp - Input statistics for GPTQ quantization -------------===//

#include "compiler/Driver/Calibrate.h"

#include "compiler/Driver/Toolchain.h"
#include "compiler/Driver/WeightWriter.h"
#include "dialects/MoE/Utils/ParallelFor.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/raw_ostream.h"

#include "moert/text.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>

namespace mlir::moe {

namespace fe = ::moe::frontend;

std::string calibrationKey(WeightOp op) {
  std::string key;
  llvm::raw_string_ostream os(key);
  os << op.getSourcesAttr();
  if (Attribute rows = op.getRowsAttr()) {
    os << " rows " << rows;
  }
  return key;
}

namespace {

/// The float weight op behind `value`; null for a packed (dequantized)
/// weight, which keeps its checkpoint codes and needs no statistics.
WeightOp floatWeight(Value value) {
  return value ? value.getDefiningOp<WeightOp>() : WeightOp();
}

/// The dump name of `value`, given to its defining op if it has none.
std::string dumpName(Value value, int64_t &counter) {
  auto result = cast<OpResult>(value);
  Operation *op = result.getOwner();
  Builder b(op->getContext());
  SmallVector<Attribute> names(op->getNumResults(), b.getStringAttr(""));
  if (auto existing = op->getAttrOfType<ArrayAttr>("moe.dump")) {
    for (auto [i, name] : llvm::enumerate(existing)) {
      names[i] = name;
    }
  }
  unsigned index = result.getResultNumber();
  StringRef name = cast<StringAttr>(names[index]).getValue();
  if (!name.empty()) {
    return name.str();
  }
  std::string fresh = "calibration" + std::to_string(counter++);
  names[index] = b.getStringAttr(fresh);
  op->setAttr("moe.dump", b.getArrayAttr(names));
  return fresh;
}

/// Values per token of `value` ([T, ...]): the product of its other dims.
int64_t valuesPerToken(Value value) {
  return ShapedType::getNumElements(
      cast<RankedTensorType>(value.getType()).getShape().drop_front());
}

/// Adds x x^T of `rows` rows of width n to the upper triangle of `h`.
void addOuterProducts(const float *x, int64_t rows, int64_t n, float *h) {
  for (int64_t t = 0; t < rows; ++t) {
    const float *row = x + t * n;
    for (int64_t i = 0; i < n; ++i) {
      float xi = row[i];
      float *out = h + i * n;
      for (int64_t j = i; j < n; ++j) {
        out[j] += xi * row[j];
      }
    }
  }
}

/// Copies the upper triangle of each [n, n] matrix to its lower one.
void mirrorUpper(std::vector<float> &h, int64_t n) {
  for (size_t m = 0; m < h.size() / (n * n); ++m) {
    float *a = h.data() + m * n * n;
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j < i; ++j) {
        a[i * n + j] = a[j * n + i];
      }
    }
  }
}

float activate(Activation activation, float x) {
  switch (activation) {
  case Activation::Silu:
    return x / (1 + std::exp(-x));
  case Activation::Gelu:
    return 0.5f * x * (1 + std::erf(x / std::sqrt(2.0f)));
  case Activation::GeluTanh:
    return 0.5f * x *
           (1 + std::tanh(0.7978845608f * (x + 0.044715f * x * x * x)));
  case Activation::Relu:
    return x > 0 ? x : 0;
  }
  return x;
}

/// The dumped rows of `name`: `tokens` rows of `width` values.
FailureOr<std::vector<char>> readDump(const std::string &dir,
                                      const std::string &name,
                                      const char *suffix, int64_t tokens,
                                      int64_t width) {
  std::string path = dir + "/" + name + suffix;
  auto buffer = llvm::MemoryBuffer::getFile(path);
  int64_t expected = tokens * width * 4;
  if (!buffer || static_cast<int64_t>((*buffer)->getBufferSize()) != expected) {
    llvm::errs() << "moec: error: --quant-calibration: the float build's dump "
                 << path << " "
                 << (buffer
                         ? "has " + std::to_string((*buffer)->getBufferSize()) +
                               " bytes, expected " + std::to_string(expected)
                         : "is missing: " + buffer.getError().message())
                 << "\n";
    return failure();
  }
  return std::vector<char>((*buffer)->getBufferStart(),
                           (*buffer)->getBufferEnd());
}

/// Experts' [E, F, D] weights as [E, D, F].
std::vector<float> transposeExperts(const std::vector<float> &w, int64_t E,
                                    int64_t F, int64_t D) {
  std::vector<float> out(w.size());
  for (int64_t e = 0; e < E; ++e) {
    for (int64_t f = 0; f < F; ++f) {
      for (int64_t i = 0; i < D; ++i) {
        out[(e * D + i) * F + f] = w[(e * F + f) * D + i];
      }
    }
  }
  return out;
}

} // namespace

FailureOr<CalibrationPlan> planCalibration(ModuleOp module,
                                           const fe::TensorSource &tensors) {
  CalibrationPlan plan;
  int64_t counter = 0;
  llvm::DenseMap<Value, size_t> denseOf;
  auto addDense = [&](Value input, WeightOp weight) {
    if (!weight) {
      return;
    }
    auto [it, inserted] = denseOf.try_emplace(input, plan.dense.size());
    if (inserted) {
      plan.dense.push_back(
          {dumpName(input, counter), valuesPerToken(input), {}});
    }
    std::vector<std::string> &weights = plan.dense[it->second].weights;
    std::string key = calibrationKey(weight);
    if (!llvm::is_contained(weights, key)) {
      weights.push_back(key);
    }
  };
  LogicalResult result = success();
  // The calibration runs prefill only (decode's ops are never run).
  func::FuncOp prefill;
  module.walk([&](func::FuncOp func) {
    auto entry = func->getAttrOfType<StringAttr>("moe.entry");
    if (entry && entry.getValue() == "prefill") {
      prefill = func;
    }
  });
  if (!prefill) {
    return module.emitError("no prefill entry point to calibrate with");
  }
  prefill.walk([&](Operation *op) {
    if (auto linear = dyn_cast<LinearOp>(op)) {
      addDense(linear.getInput(), floatWeight(linear.getWeight()));
    } else if (auto logits = dyn_cast<LogitsOp>(op)) {
      addDense(logits.getInput(), floatWeight(logits.getWeight()));
    } else if (auto dispatch = dyn_cast<ExpertDispatchOp>(op)) {
      WeightOp gate = floatWeight(dispatch.getGate()),
               up = floatWeight(dispatch.getUp()),
               down = floatWeight(dispatch.getDown());
      if (!up || !down || (dispatch.getGate() && !gate)) {
        return; // packed experts stay as published
      }
      CalibrationPlan::Experts e;
      e.input = dumpName(dispatch.getInput(), counter);
      e.indices = dumpName(dispatch.getIndices(), counter);
      e.topK = valuesPerToken(dispatch.getIndices());
      ArrayRef<int64_t> shape =
          cast<RankedTensorType>(dispatch.getUp().getType()).getShape();
      e.experts = shape[0];
      e.hidden = shape[1];
      e.width = shape[2];
      e.activation = dispatch.getActivation();
      e.up = calibrationKey(up);
      e.down = calibrationKey(down);
      FailureOr<std::vector<float>> upValues = readWeightValues(up, tensors);
      if (failed(upValues)) {
        result = failure();
        return;
      }
      e.upValues = transposeExperts(*upValues, e.experts, e.hidden, e.width);
      if (gate) {
        e.gate = calibrationKey(gate);
        FailureOr<std::vector<float>> gateValues =
            readWeightValues(gate, tensors);
        if (failed(gateValues)) {
          result = failure();
          return;
        }
        e.gateValues =
            transposeExperts(*gateValues, e.experts, e.hidden, e.width);
      }
      plan.experts.push_back(std::move(e));
    }
  });
  if (failed(result)) {
    return failure();
  }
  return plan;
}

FailureOr<std::vector<int32_t>>
calibrationTokens(const std::optional<std::string> &textBlob,
                  const std::string &path, int64_t maxTokens) {
  auto fail = [&](const llvm::Twine &message) {
    llvm::errs() << "moec: error: --quant-calibration=" << path << ": "
                 << message << "\n";
    return failure();
  };
  if (!textBlob) {
    return fail("the model has no tokenizer to encode the text with");
  }
  auto buffer = llvm::MemoryBuffer::getFile(path, /*IsText=*/true);
  if (!buffer) {
    return fail(buffer.getError().message());
  }
  moert_text_interface text;
  char error[512] = "";
  if (moert_text_interface_open(textBlob->data(), textBlob->size(), &text,
                                error, sizeof(error)) != MOERT_STATUS_OK) {
    return fail(llvm::Twine("the model's tokenizer does not load: ") + error);
  }
  llvm::StringRef content = (*buffer)->getBuffer();
  moert_token_list ids = {};
  moert_status_t status = moert_tokenizer_encode(
      text.tokenizer, content.data(), content.size(), /*special=*/0, &ids);
  std::vector<int32_t> tokens;
  if (status == MOERT_STATUS_OK) {
    size_t count = std::min<size_t>(ids.count, maxTokens);
    tokens.assign(ids.ids, ids.ids + count);
  }
  moert_token_list_free(&ids);
  moert_text_interface_close(&text);
  if (status != MOERT_STATUS_OK) {
    return fail("out of memory while encoding");
  }
  if (tokens.empty()) {
    return fail("the text is empty");
  }
  return tokens;
}

FailureOr<CalibrationData> runCalibration(const std::string &exe,
                                          const CalibrationPlan &plan,
                                          const std::vector<int32_t> &tokens,
                                          int64_t window,
                                          const std::string &workDir) {
  CalibrationData data;
  std::string dumpDir = workDir + "/dump", logits = workDir + "/logits.f32";
  for (size_t begin = 0; begin < tokens.size(); begin += window) {
    size_t end = std::min(tokens.size(), begin + window);
    int64_t count = static_cast<int64_t>(end - begin);
    std::string ids;
    for (size_t i = begin; i < end; ++i) {
      ids += (i > begin ? "," : "") + std::to_string(tokens[i]);
    }
    auto runStart = std::chrono::steady_clock::now();
    if (llvm::Error err = runProgram({exe, "--tokens", ids, "--logits-out",
                                      logits, "--dump-activations", dumpDir},
                                     "run the calibration build")) {
      llvm::errs() << "moec: error: --quant-calibration: "
                   << llvm::toString(std::move(err)) << "\n";
      return failure();
    }
    auto sumStart = std::chrono::steady_clock::now();
    data.runSeconds +=
        std::chrono::duration<double>(sumStart - runStart).count();
    // Read every dump, then sum on every core: one job per shared input
    // and one per expert, each adding to its own matrices only. Jobs add
    // in token order, so the sums do not depend on the number of threads.
    std::vector<std::vector<char>> inputs;
    std::vector<std::function<void()>> jobs;
    llvm::DenseMap<std::vector<float> *, size_t> jobOf;
    auto read = [&](const std::string &name, const char *suffix,
                    int64_t width) -> const char * {
      FailureOr<std::vector<char>> bytes =
          readDump(dumpDir, name, suffix, count, width);
      if (failed(bytes)) {
        return nullptr;
      }
      inputs.push_back(std::move(*bytes));
      return inputs.back().data();
    };
    inputs.reserve(plan.dense.size() + 2 * plan.experts.size());
    for (const CalibrationPlan::Dense &dense : plan.dense) {
      int64_t n = dense.width;
      const char *x = read(dense.dump, ".f32", n);
      if (!x) {
        return failure();
      }
      // Weights reading one input share its sums: add them once.
      std::vector<float> &h = data.sumsOf(dense.weights.front());
      h.resize(n * n, 0);
      std::function<void()> job = [x, count, n, &h] {
        addOuterProducts(reinterpret_cast<const float *>(x), count, n,
                         h.data());
      };
      // A weight read with two inputs (shared across layers) gets one job.
      auto [it, inserted] = jobOf.try_emplace(&h, jobs.size());
      if (inserted) {
        jobs.push_back(std::move(job));
      } else {
        jobs[it->second] = [first = std::move(jobs[it->second]),
                            second = std::move(job)] {
          first();
          second();
        };
      }
    }
    for (const CalibrationPlan::Experts &e : plan.experts) {
      int64_t k = e.topK;
      const char *xBytes = read(e.input, ".f32", e.width);
      const char *idxBytes = read(e.indices, ".i32", k);
      if (!xBytes || !idxBytes) {
        return failure();
      }
      const float *x = reinterpret_cast<const float *>(xBytes);
      const int32_t *idx = reinterpret_cast<const int32_t *>(idxBytes);
      int64_t D = e.width, F = e.hidden;
      std::vector<float> &hIn = data.sumsOf(e.up);
      std::vector<float> &hDown = data.sumsOf(e.down);
      hIn.resize(e.experts * D * D, 0);
      hDown.resize(e.experts * F * F, 0);
      for (int64_t expert = 0; expert < e.experts; ++expert) {
        jobs.push_back([=, &e, &hIn, &hDown] {
          std::vector<float> hidden(F), up(F), gate(F);
          for (int64_t t = 0; t < count; ++t) {
            // An index outside [0, E) is a dropped assignment (capacity
            // rule): it matches no expert.
            if (std::find(idx + t * k, idx + (t + 1) * k, expert) ==
                idx + (t + 1) * k) {
              continue;
            }
            const float *row = x + t * D;
            addOuterProducts(row, 1, D, hIn.data() + expert * D * D);
            // hidden = act(gate x) * (up x), as sums of the weights' rows
            // (stored [D, F]) scaled by x's elements: contiguous, and
            // vectorised without reordering any sum.
            const float *u = e.upValues.data() + expert * D * F;
            const float *g = e.gateValues.empty()
                                 ? nullptr
                                 : e.gateValues.data() + expert * D * F;
            std::fill(up.begin(), up.end(), 0.0f);
            std::fill(gate.begin(), gate.end(), 0.0f);
            for (int64_t i = 0; i < D; ++i) {
              float xi = row[i];
              for (int64_t f = 0; f < F; ++f) {
                up[f] += xi * u[i * F + f];
              }
              for (int64_t f = 0; g && f < F; ++f) {
                gate[f] += xi * g[i * F + f];
              }
            }
            for (int64_t f = 0; f < F; ++f) {
              hidden[f] = g ? activate(e.activation, gate[f]) * up[f]
                            : activate(e.activation, up[f]);
            }
            addOuterProducts(hidden.data(), 1, F,
                             hDown.data() + expert * F * F);
          }
        });
      }
    }
    {
      // Joined before the function returns: the kernel compiler forks
      // later, which is only safe without other threads.
      parallelFor(static_cast<int64_t>(jobs.size()),
                  [&](int64_t i) { jobs[i](); });
    }
    data.sumSeconds += std::chrono::duration<double>(
                           std::chrono::steady_clock::now() - sumStart)
                           .count();
    data.tokens += count;
  }
  // Weights sharing an input share its sums; then make each symmetric.
  for (const CalibrationPlan::Dense &dense : plan.dense) {
    mirrorUpper(data.sumsOf(dense.weights.front()), dense.width);
    std::shared_ptr<std::vector<float>> shared =
        data.hessians[dense.weights.front()];
    for (size_t i = 1; i < dense.weights.size(); ++i) {
      data.hessians[dense.weights[i]] = shared;
    }
  }
  for (const CalibrationPlan::Experts &e : plan.experts) {
    mirrorUpper(data.sumsOf(e.up), e.width);
    mirrorUpper(data.sumsOf(e.down), e.hidden);
    if (!e.gate.empty()) {
      std::shared_ptr<std::vector<float>> shared = data.hessians[e.up];
      data.hessians[e.gate] = shared;
    }
  }
  llvm::sys::fs::remove_directories(dumpDir);
  llvm::sys::fs::remove(logits);
  return data;
}

} // namespace mlir::moe
