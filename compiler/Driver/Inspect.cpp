//===- Inspect.cpp - `moec inspect`: what moec recognised in a model ------===//
//
// Loads and recognises a model without compiling it and reports what the
// recogniser decided: the family and its description file, sizes, the
// variant of every step, parameter counts, how the checkpoint stores its
// tensors, and every assumption (the notes), as text or JSON.
//
//===----------------------------------------------------------------------===//

#include "compiler/Driver/Driver.h"
#include "compiler/Driver/TextInterface.h"

#include "frontends/family/LoadModel.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/raw_ostream.h"

#include <cstdio>
#include <map>

namespace fe = ::moe::frontend;

namespace mlir::moe {

namespace {

/// A setting as a person writes it: 1e-06, 50000, 0.125.
std::string num(double value) {
  char text[32];
  std::snprintf(text, sizeof(text), "%g", value);
  return text;
}

std::string normText(const fe::NormDesc &n) {
  return llvm::formatv("{0} norm eps {1}",
                       n.kind == fe::NormKind::Rms ? "rms" : "layer",
                       num(n.eps))
      .str();
}

std::string attentionText(const fe::ModelDescription &model,
                          const fe::AttentionDesc &a) {
  std::vector<std::string> parts{normText(a.norm)};
  if (a.conv) {
    parts.push_back(
        llvm::formatv("causal depthwise conv width {0}", a.conv->shape.back()));
  }
  parts.push_back(llvm::formatv("{0} heads, {1} KV heads, head_dim {2}",
                                model.nHeads, model.nKvHeads, model.headDim));
  std::string qk;
  if (a.qkNorm) {
    qk = llvm::formatv("QK {0} norm eps {1}{2}",
                       a.qkNorm->kind == fe::NormKind::Rms ? "rms" : "layer",
                       num(a.qkNorm->eps),
                       a.qkNorm->qGain ? " with per-head gains" : "");
  }
  if (a.qkNorm && a.qkNorm->beforeRope) {
    parts.push_back(qk + " before RoPE");
  }
  if (a.rope) {
    parts.push_back(llvm::formatv("RoPE {0} over {1} dims, theta {2}",
                                  a.rope->layout == fe::RopeLayout::HalfSplit
                                      ? "half-split"
                                      : "interleaved",
                                  a.rope->dims, num(a.rope->theta)));
  } else {
    parts.push_back("no RoPE");
  }
  if (a.qkNorm && !a.qkNorm->beforeRope) {
    parts.push_back(qk + " after RoPE");
  }
  if (a.vScale) {
    parts.push_back("per-KV-head V scale");
  }
  parts.push_back("scale " + num(a.scale));
  return llvm::join(parts, "; ");
}

const char *activationName(fe::Activation a) {
  switch (a) {
  case fe::Activation::Silu:
    return "silu";
  case fe::Activation::Gelu:
    return "gelu";
  case fe::Activation::GeluTanh:
    return "gelu_tanh";
  case fe::Activation::Relu:
    return "relu";
  }
  return "?";
}

std::string ffnText(const fe::LayerDesc &layer) {
  std::vector<std::string> parts{normText(layer.ffnNorm)};
  auto ffn = [](const fe::FfnDesc &f) {
    return llvm::formatv("{0}{1} width {2}", f.gate ? "gated " : "",
                         activationName(f.activation),
                         f.up.shape[f.up.shape.size() - 2])
        .str();
  };
  if (layer.dense) {
    parts.push_back("dense " + ffn(*layer.dense));
    return llvm::join(parts, "; ");
  }
  const fe::RouterDesc &r = layer.moe->router;
  parts.push_back(llvm::formatv(
      "{0} experts ({1}), top-{2} of a {3}{4}{5}", r.weight.shape[0],
      ffn(layer.moe->experts), r.topK,
      r.scoring == fe::RouterScoring::Softmax ? "softmax" : "sigmoid",
      r.renormalize ? ", renormalised" : ", not renormalised",
      r.bias ? ", selection bias" : ""));
  if (r.capacity == fe::CapacityRule::DropLowestGate) {
    parts.push_back(llvm::formatv(
        "capacity rule: drop the lowest gates over ceil(T*k*{0}/E)",
        num(r.capacityFactor)));
  }
  if (layer.moe->shared) {
    parts.push_back("shared expert (" + ffn(*layer.moe->shared) + ")");
  }
  return llvm::join(parts, "; ");
}

} // namespace

LogicalResult runInspect(const DriverOptions &options, bool json) {
  fe::LoadOptions loadOptions;
  loadOptions.family = options.family;
  llvm::Expected<fe::LoadedModel> loaded =
      fe::loadModel(options.modelPath, loadOptions);
  if (!loaded) {
    llvm::errs() << "moec: error: " << llvm::toString(loaded.takeError())
                 << "\n";
    return failure();
  }
  // What the executable would embed, as a note (a broken tokenizer file is
  // an error here as in compile).
  if (llvm::Error err = attachTextInterface(*loaded, options.tokenizerPath)) {
    llvm::errs() << "moec: error: " << llvm::toString(std::move(err)) << "\n";
    return failure();
  }
  const fe::ModelDescription &model = loaded->description;

  // Storage: the checkpoint's tensors by dtype, and the packed weights.
  std::map<std::string, std::pair<int64_t, uint64_t>> byDtype;
  for (const fe::TensorInfo &t : loaded->tensors->tensors()) {
    auto &entry = byDtype[fe::dtypeName(t.dtype).str()];
    entry.first += 1;
    entry.second += t.bytes.size();
  }
  std::map<std::string, int64_t> packed;
  fe::forEachWeight(model, [&](const fe::WeightRef &w, double) {
    if (w.packed) {
      packed[w.packed->format == fe::PackedFormat::Sign1 ? "1-bit" : "4-bit"] +=
          static_cast<int64_t>(w.sources.size());
    }
  });
  std::vector<std::string> storage;
  for (const auto &[dtype, entry] : byDtype) {
    storage.push_back(llvm::formatv("{0}: {1} tensors ({2:f1} MB)", dtype,
                                    entry.first, entry.second / 1e6));
  }
  for (const auto &[format, count] : packed) {
    storage.push_back(
        llvm::formatv("{0} packed matrices: {1}", format, count).str());
  }
  int64_t moeLayers = 0;
  for (const fe::LayerDesc &layer : model.layers) {
    moeLayers += layer.moe ? 1 : 0;
  }
  // Runs of layers described alike, e.g. "layers 1-5".
  std::vector<std::string> layerLines;
  for (size_t begin = 0; begin < model.layers.size();) {
    auto text = [&](size_t i) {
      return "  attention: " + attentionText(model, model.layers[i].attention) +
             "\n  ffn: " + ffnText(model.layers[i]);
    };
    size_t end = begin + 1;
    while (end < model.layers.size() && text(end) == text(begin)) {
      ++end;
    }
    std::string range =
        end - begin == 1
            ? llvm::formatv("layer {0}", begin).str()
            : llvm::formatv("layers {0}-{1}", begin, end - 1).str();
    layerLines.push_back(range + ":\n" + text(begin));
    begin = end;
  }

  if (json) {
    llvm::json::Array notes, layers, formats;
    for (const std::string &n : model.notes) {
      notes.push_back(n);
    }
    for (const std::string &l : layerLines) {
      layers.push_back(l);
    }
    for (const std::string &s : storage) {
      formats.push_back(s);
    }
    llvm::json::Object out{
        {"checkpoint", model.checkpointPath},
        {"family", model.family},
        {"description", model.descriptionSource},
        {"layers", static_cast<int64_t>(model.layers.size())},
        {"moe_layers", moeLayers},
        {"d_model", model.dModel},
        {"vocab", model.vocab},
        {"n_heads", model.nHeads},
        {"n_kv_heads", model.nKvHeads},
        {"head_dim", model.headDim},
        {"context", model.contextLength},
        {"total_params", model.totalParams},
        {"active_params", model.activeParams},
        {"layer_variants", std::move(layers)},
        {"storage", std::move(formats)},
        {"assumptions", std::move(notes)}};
    llvm::outs() << llvm::formatv("{0:2}\n", llvm::json::Value(std::move(out)));
    return success();
  }
  llvm::raw_ostream &os = llvm::outs();
  os << "checkpoint:  " << model.checkpointPath << "\n";
  os << "family:      " << model.family << " (" << model.descriptionSource
     << ")\n";
  os << llvm::formatv("layers:      {0} ({1} MoE, {2} dense)\n",
                      model.layers.size(), moeLayers,
                      model.layers.size() - moeLayers);
  os << llvm::formatv("dims:        d_model {0}, vocab {1}, {2} heads x {3} "
                      "({4} KV heads), context {5}\n",
                      model.dModel, model.vocab, model.nHeads, model.headDim,
                      model.nKvHeads, model.contextLength);
  os << llvm::formatv("parameters:  {0} total, {1} active ({2:f2}M / "
                      "{3:f2}M)\n",
                      model.totalParams, model.activeParams,
                      model.totalParams / 1e6, model.activeParams / 1e6);
  os << "storage:     " << llvm::join(storage, "; ") << "\n";
  for (const std::string &l : layerLines) {
    os << l << "\n";
  }
  os << "assumptions:\n";
  for (const std::string &n : model.notes) {
    os << "  - " << n << "\n";
  }
  return success();
}

} // namespace mlir::moe
