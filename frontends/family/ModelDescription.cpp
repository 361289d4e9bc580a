//===- ModelDescription.cpp - Walking a recognised model ------------------===//

#include "frontends/family/ModelDescription.h"

namespace moe::frontend {

void forEachWeight(const ModelDescription &model,
                   const std::function<void(const WeightRef &,
                                            double activeFraction)> &visit) {
  auto optional = [&](const std::optional<WeightRef> &w, double fraction) {
    if (w) {
      visit(*w, fraction);
    }
  };
  auto norm = [&](const NormDesc &n) {
    optional(n.weight, 1);
    optional(n.bias, 1);
  };
  auto ffn = [&](const FfnDesc &f, double fraction) {
    optional(f.gate, fraction);
    visit(f.up, fraction);
    visit(f.down, fraction);
  };
  visit(model.embedding, 1);
  for (const LayerDesc &layer : model.layers) {
    const AttentionDesc &a = layer.attention;
    norm(a.norm);
    optional(a.conv, 1);
    for (const WeightRef *w : {&a.q, &a.k, &a.v, &a.o}) {
      visit(*w, 1);
    }
    if (a.qkNorm) {
      for (const auto *w : {&a.qkNorm->qWeight, &a.qkNorm->qGain,
                            &a.qkNorm->kWeight, &a.qkNorm->kGain}) {
        optional(*w, 1);
      }
    }
    optional(a.vScale, 1);
    norm(layer.ffnNorm);
    if (layer.dense) {
      ffn(*layer.dense, 1);
    }
    if (layer.moe) {
      const RouterDesc &r = layer.moe->router;
      visit(r.weight, 1);
      optional(r.bias, 1);
      // A token runs top_k of the E routed experts.
      ffn(layer.moe->experts,
          static_cast<double>(r.topK) / static_cast<double>(r.weight.shape[0]));
      if (layer.moe->shared) {
        ffn(*layer.moe->shared, 1);
      }
    }
  }
  norm(model.finalNorm);
  visit(model.logitsWeight, 1);
  optional(model.logitsBias, 1);
}

} // namespace moe::frontend
