//===- ModelDescription.h - A recognised model as plain data ----*- C++ -*-===//
//
// What the recogniser learned about a checkpoint: its sizes, and for every
// layer which checkpoint tensors play which role and which variant of each
// step the model uses. It is plain C++ (no MLIR), so readers, tests and
// `moec inspect` can use it without a context; the importer turns it into
// `moe` IR without knowing which family it came from.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_FRONTENDS_FAMILY_MODELDESCRIPTION_H
#define MOE_FRONTENDS_FAMILY_MODELDESCRIPTION_H

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace moe::frontend {

enum class PackedFormat { Sign1, Int4 };

/// How a packed weight stores its codes (the `moe.dequantize` op's
/// attributes): `sources` of the WeightRef are the code bytes.
struct PackedWeight {
  PackedFormat format = PackedFormat::Sign1;
  /// The per-row scales (`{key}__scale`), one per source.
  std::vector<std::string> scaleSources;
  /// Code bytes of one matrix.
  int64_t bytes = 0;
  /// The first code in the low bits of its byte (else the high bits).
  bool lowBitsFirst = false;
  /// int4 codes are the nibble minus 8 (else two's complement).
  bool offsetBinary = false;
};

/// A weight: one checkpoint tensor, or several stacked along a new leading
/// dimension, optionally restricted to a range of rows of each.
struct WeightRef {
  /// The checkpoint's own keys (prefixes included).
  std::vector<std::string> sources;
  /// Rows [begin, end) of dimension 0 of every source, when set.
  std::optional<std::array<int64_t, 2>> rows;
  /// The shape of the weight as the model uses it.
  std::vector<int64_t> shape;
  /// Where it came from in the description, e.g. "layer 3: q", for messages.
  std::string role;
  /// Set when the sources hold packed low-bit codes, not floats.
  std::optional<PackedWeight> packed;

  int64_t numElements() const {
    int64_t n = 1;
    for (int64_t d : shape) {
      n *= d;
    }
    return n;
  }
};

enum class NormKind { Rms, Layer };
enum class RopeLayout { HalfSplit, Interleaved };
enum class Activation { Silu, Gelu, GeluTanh, Relu };
enum class RouterScoring { Softmax, Sigmoid };
enum class SelectionBias { Logits, Scores };
enum class CapacityRule { Dropless, DropLowestGate };

struct NormDesc {
  NormKind kind = NormKind::Rms;
  double eps = 0;
  std::optional<WeightRef> weight;
  std::optional<WeightRef> bias;
};

struct RopeDesc {
  RopeLayout layout = RopeLayout::HalfSplit;
  int64_t dims = 0;
  double theta = 0;
};

/// Normalisation of every query and key head over head_dim.
struct QkNormDesc {
  NormKind kind = NormKind::Rms;
  double eps = 0;
  /// Before RoPE (physics) or after it (linnet).
  bool beforeRope = true;
  std::optional<WeightRef> qWeight, qGain, kWeight, kGain;
};

struct AttentionDesc {
  NormDesc norm;
  /// Depthwise causal convolution [D, 1, K] of the normed input, feeding
  /// Q, K and V (linnet); its last K-1 inputs are carried across calls.
  std::optional<WeightRef> conv;
  WeightRef q, k, v, o;
  std::optional<QkNormDesc> qkNorm;
  std::optional<RopeDesc> rope; // absent: NoPE
  /// Per-KV-head multiplier on V (physics `smear`).
  std::optional<WeightRef> vScale;
  double scale = 0;
};

/// A feed-forward network: down(act(gate x) * up x), or down(act(up x))
/// without a gate. Routed experts use the same description with stacked
/// weights: gate/up [E, F, D], down [E, D, F].
struct FfnDesc {
  std::optional<WeightRef> gate;
  WeightRef up, down;
  Activation activation = Activation::Silu;
};

struct RouterDesc {
  WeightRef weight;
  std::optional<WeightRef> bias;
  RouterScoring scoring = RouterScoring::Softmax;
  SelectionBias selectionBias = SelectionBias::Logits;
  int64_t topK = 0;
  bool renormalize = false;
  double renormEps = 0;
  double scaling = 1;
  CapacityRule capacity = CapacityRule::Dropless;
  double capacityFactor = 0;
};

struct MoEDesc {
  RouterDesc router;
  FfnDesc experts; // stacked
  std::optional<FfnDesc> shared;
};

struct LayerDesc {
  AttentionDesc attention;
  NormDesc ffnNorm;
  /// Exactly one of these is set.
  std::optional<FfnDesc> dense;
  std::optional<MoEDesc> moe;
};

struct ModelDescription {
  std::string family;
  /// The family description file (or "built-in:<name>").
  std::string descriptionSource;
  /// The weights file the tensors come from.
  std::string checkpointPath;

  int64_t vocab = 0, dModel = 0, nHeads = 0, nKvHeads = 0, headDim = 0;
  /// Default KV-cache capacity of a compiled model.
  int64_t contextLength = 0;

  WeightRef embedding;
  double embeddingScale = 1;
  std::vector<LayerDesc> layers;
  NormDesc finalNorm;
  WeightRef logitsWeight;
  std::optional<WeightRef> logitsBias;
  double logitScale = 1;

  /// Every dim and setting by its description name, for `--info`/inspect.
  std::map<std::string, double> values;
  /// Every assumption the recogniser made, in words, in order.
  std::vector<std::string> notes;

  int64_t totalParams = 0;
  int64_t activeParams = 0;
};

/// Calls `visit` with every weight the model reads, once per use (a tied
/// weight twice), and the fraction of it a token computes with: top_k / E
/// for routed experts, else 1.
void forEachWeight(
    const ModelDescription &model,
    const std::function<void(const WeightRef &, double activeFraction)> &visit);

} // namespace moe::frontend

#endif // MOE_FRONTENDS_FAMILY_MODELDESCRIPTION_H
