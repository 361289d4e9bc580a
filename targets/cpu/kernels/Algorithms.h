//===- Algorithms.h - Halide algorithms of the moe ops ----------*- C++ -*-===//
//
// One function per moe op: it builds the Halide Funcs that compute the op
// from the Funcs of its operands (the algorithm), and returns how to
// schedule its result when the result is materialised (the schedule). The
// kernel builder composes them into one pipeline per kernel.
//
// Conventions. A tensor of shape [s0, .., s(r-1)] is a Func of r variables
// in Halide order, innermost first: f(x0, .., x(r-1)) is
// tensor[x(r-1), .., x0]. The token dimension T is therefore the last Func
// variable. All arithmetic is f32.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_TARGETS_CPU_KERNELS_ALGORITHMS_H
#define MOE_TARGETS_CPU_KERNELS_ALGORITHMS_H

#include "targets/common/TargetDescription.h"

#include <Halide.h>

#include <algorithm>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace mlir::moe::cpu {

/// A tensor as a Halide Func, with its shape in tensor order (-1: the
/// token dimension, dynamic).
struct TensorFunc {
  Halide::Func func;
  std::vector<int64_t> shape;
  /// Bits one element occupies in memory: 32 for f32, the code width of a
  /// packed weight read through moe.dequantize (what a loop over it reads).
  int storedBits = 32;

  int rank() const { return static_cast<int>(shape.size()); }
  /// The element at tensor-order indices.
  Halide::Expr at(const std::vector<Halide::Expr> &indices) const;
};

/// What every algorithm of one kernel shares.
struct KernelEnv {
  const TargetDescription *target = nullptr;
  /// f32 lanes of a vector register, and how many vector registers there
  /// are (from the target description).
  int lanes = 4;
  int registers = 16;
  /// The target's int8 dot product (TargetDescription::Int8Dot).
  int dotBytes = 4;
  bool unsignedCodes = false;
  /// Whether the kernel runs on a GPU: the algorithms then apply no CPU
  /// loop schedule (the RootSchedules are not called, and an algorithm
  /// that schedules a helper Func itself only asks for it at root);
  /// targets/cuda/kernels/GpuSchedule.h schedules the whole pipeline.
  bool gpu = false;

  /// Vectors of output features in a matrix-matrix register tile of `rows`
  /// tokens (mlir::moe::tileVectors, which also sets the panel width).
  int tileVectors(int rows) const {
    return ::mlir::moe::tileVectors(registers, rows);
  }
  /// The number of tokens of this call, and whether it is known to be 1
  /// (decode), which changes schedules from matrix-matrix to matrix-vector.
  Halide::Expr tokens;
  bool singleToken = false;
  /// The cache position of the first token.
  Halide::Expr position;

  /// Whether a loop that reads `bytes` of weights is worth splitting over
  /// threads. Always with several tokens; for one token (decode) only from
  /// kParallelMinBytes: below it, waking the thread pool costs more than
  /// the loop (measured on a 2-core VM: SSMoELM decodes 1600 tokens/s with
  /// every projection split over 2 threads, 2850 with none).
  static constexpr int64_t kParallelMinBytes = 1 << 20;
  bool worthThreads(int64_t bytes) const {
    return !singleToken || bytes >= kParallelMinBytes;
  }

  /// Computes `f` once per call, before its consumers; on a GPU it is then
  /// one of the Funcs GpuSchedule materialises (`atRoot` names them).
  void computeRoot(Halide::Func f) const {
    f.compute_root();
    materialise(f);
  }
  /// Names `f` as computed once on every target: the CPU schedules store
  /// it (a RootSchedule does), and a GPU schedule must too, not inline it.
  /// Either because recomputing it costs (an activation read by a whole
  /// projection), or because every reader must see the same value (the
  /// capacity rule compares one weight with all the others: inlined, two
  /// evaluations of one weight may round apart).
  void materialise(Halide::Func f) const { atRoot->insert(f.name()); }
  std::shared_ptr<std::set<std::string>> atRoot =
      std::make_shared<std::set<std::string>>();

  /// A name unique within the kernel, for Funcs and embedded buffers
  /// (Halide requires unique buffer names; unique Func names keep the
  /// statement listings readable).
  std::string name(const std::string &base) const {
    return base + "_" + std::to_string((*counter)++);
  }
  std::shared_ptr<int> counter = std::make_shared<int>(0);
};

/// A materialisation schedule, applied when the kernel builder computes a
/// result at root (as a kernel output or before a reduction reads it).
using RootSchedule = std::function<void(Halide::Func &)>;

/// The result of one op: its values, and for each one how to schedule it at
/// root. `elementwise` results are cheap enough to inline into consumers.
struct OpFuncs {
  std::vector<TensorFunc> values;
  std::vector<RootSchedule> schedules;
  bool elementwise = false;
};

enum class ActivationKind { Silu, GeluTanh, Relu };
enum class ScoringKind { Softmax, Sigmoid };

/// Schedules a [.., T] elementwise-ish result: vectorised innermost,
/// parallel over tokens (or over the outermost non-token dimension for one
/// token).
RootSchedule pointwiseSchedule(const KernelEnv &env, int rank);

/// Helpers the algorithms share.
///
/// Fresh variables for a Func of `rank` dimensions, innermost first (the
/// last one is the token dimension "t").
std::vector<Halide::Var> makeVars(int rank);
/// The largest tile of a static dimension of `extent` that is a multiple
/// of `lanes` when it can be, at most `vectors` vectors, and never larger
/// than `extent` (so ShiftInwards tiles stay inside it).
int staticTile(int64_t extent, int lanes, int vectors);
/// Token `t` clamped to [0, T): every read of a token-indexed input inside
/// a GuardWithIf tile goes through it.
Halide::Expr clampToken(const KernelEnv &env, Halide::Expr t);
Halide::Expr activate(ActivationKind kind, Halide::Expr x);
/// `x` as f32: an f16 widened with integer operations that vectorise
/// (Halide 14 widens f16 in software with a select per case; scales are
/// finite, so only normal and subnormal halves need handling), anything
/// else cast.
Halide::Expr widenToFloat(Halide::Expr x);
/// `input` ([T, ...]) as x(k, t), its trailing dimensions flattened into
/// the k features a projection reduces over.
Halide::Func flattenFeatures(const KernelEnv &env, const TensorFunc &input);
/// The [T, N] result y(n, t) of a projection as a Func of `resultShape`
/// ([T, H, D] for a head projection); y itself when it is 2-d.
TensorFunc viewAs(const KernelEnv &env, Halide::Func y,
                  const std::vector<int64_t> &resultShape);

/// Materialises a projection's result `y`(n, t) of `n` features at root:
/// for one token, tiles of up to 4 vectors of features, in parallel when
/// its `weightBytes` are worth it; for several, tiles of `vectors` vectors
/// by 4 tokens, in parallel over tokens. Returns the tile loop, where the
/// reduction is computed, and the vector width.
std::pair<Halide::Var, int> tileProjection(const KernelEnv &env, Halide::Func y,
                                           int64_t n, int vectors,
                                           int64_t weightBytes);

/// Materialises `f`(feature, row, block) at root in tiles of one block
/// of rows by a tile of at most `vectors` vectors of `extent` features,
/// feature tiles in parallel and the blocks inside them; a tile's
/// producers are computed at `blockVar` (the grouped dispatch: one block
/// is one expert's).
void tileBlockRows(Halide::Func f, Halide::Var row, Halide::Var blockVar,
                   Halide::Var feature, int extent, int lanes, int vectors);

/// Materialises the gather dispatch's hidden activations `hid`(f, j, t)
/// at root in vector tiles of F, each streaming its expert's gate and up
/// rows once: for one token, the tiles of all k slots in one parallel loop
/// (when worth threads), else in parallel over tokens. Returns the tile
/// loop (where the projections are computed) and the vector width.
std::pair<Halide::Var, int> tileGatheredHidden(const KernelEnv &env,
                                               Halide::Func hid, int hidden,
                                               int64_t weightBytes);

/// The grouped dispatch's counting sort of the T*k (token, slot)
/// assignments by expert into buckets padded to whole blocks of `block`
/// rows. Assignment a is (token a / k, slot a % k).
struct ExpertBuckets {
  int block = 8;
  Halide::Expr rows;                // an upper bound on the padded rows
  Halide::Func slot;                // slot(a): the row of assignment a
  Halide::Func rowToken;            // rowToken(s): its token (padding rows: 0)
  Halide::Func blockExpert;         // blockExpert(b): the expert of block b
  std::vector<Halide::Func> stages; // every Func of the sort
  /// Computes the sort once per call, at root.
  void schedule();
};
ExpertBuckets bucketByExpert(const KernelEnv &env, const TensorFunc &indices,
                             int experts, int block);

/// How a packed weight stores its codes (moe.dequantize's attributes).
struct PackedCodes {
  int bits = 1;      // 1, 2, 4 or 8 per code
  bool sign1 = true; // 1 bit: +1/-1; else signed integers
  int group = 0;     // columns per scale; 0: one scale per row
  bool lowBitsFirst = false;
  bool offsetBinary = false;
  bool transposed = false; // codes column by column, group scales [G, N]
  int lanes = 0;           // sub-byte codes in runs of this many bytes
  int dot = 0;    // codes in blocks for dot products of this many bytes
  int panels = 0; // with dot: the rows in panels of this many
};

/// The f32 weight [.., N, K] of packed codes `packed` ([.., B] bytes, the
/// codes of each matrix row-major) and `scale` ([.., N] per row, or
/// [.., N, ceil(K / group)]), plus `offset` (the scales' shape) when not
/// null; elementwise, so consumers read the codes directly. `unscaled`:
/// the codes alone (+1/-1 for signs), for a reader that applies a per-row
/// scale once per row (linear's `rowScale`); `scale` is then unused.
OpFuncs dequantize(const KernelEnv &env, const TensorFunc &packed,
                   const TensorFunc &scale, const TensorFunc *offset,
                   const PackedCodes &codes, std::vector<int64_t> resultShape,
                   bool unscaled = false);

OpFuncs embed(const KernelEnv &env, const TensorFunc &table,
              const TensorFunc &tokens, double scale);

OpFuncs rmsNorm(const KernelEnv &env, const TensorFunc &input,
                const TensorFunc &weight, double eps);

OpFuncs layerNorm(const KernelEnv &env, const TensorFunc &input,
                  const TensorFunc *weight, const TensorFunc *bias, double eps);

/// `weight` is stored transposed ([K, N], Halide w(n, k)) when `transposed`,
/// else as [N, K] (Halide w(k, n)). The result has `resultShape`. With
/// `rowScale` ([N]), `weight` holds unscaled codes and row n's sum is
/// multiplied by rowScale[n] once, not every code by it.
OpFuncs linear(const KernelEnv &env, const TensorFunc &input,
               const TensorFunc &weight, bool transposed,
               const TensorFunc *bias, std::vector<int64_t> resultShape,
               double scale = 1.0, const TensorFunc *rowScale = nullptr);

OpFuncs headScale(const KernelEnv &env, const TensorFunc &input,
                  const TensorFunc &scale);

OpFuncs rope(const KernelEnv &env, const TensorFunc &input, bool interleaved,
             int64_t rotaryDims, double theta);

OpFuncs glu(const KernelEnv &env, const TensorFunc &gate, const TensorFunc &up,
            ActivationKind activation);

OpFuncs add(const KernelEnv &env, const TensorFunc &lhs, const TensorFunc &rhs);

/// Keys and values of T new tokens as the cache window outputs: Funcs over
/// (d, p, h) whose position p runs from env.position.
OpFuncs kvCacheWrite(const KernelEnv &env, const TensorFunc &key,
                     const TensorFunc &value);

/// Causal attention of `query` over cache buffers `keys`/`values` given as
/// Funcs over (d, p, h) with `capacity` positions.
OpFuncs cachedAttention(const KernelEnv &env, const TensorFunc &query,
                        const Halide::Func &keys, const Halide::Func &values,
                        Halide::Expr capacity, int64_t kvHeads, double scale);

/// Depthwise causal convolution of `input` [T, C] with `weight` [C, 1, K]
/// (Halide w(k, 0, c)); the K-1 rows before env.position come from `state`
/// (a Func over (c, slot), position q in slot q mod (K-1)), zero below
/// position 0.
OpFuncs cachedConv1d(const KernelEnv &env, const TensorFunc &input,
                     const TensorFunc &weight, const Halide::Func &state);

/// The new contents of a convolution state ring of K-1 = `width` - 1 slots
/// after `input`: the last min(T, K-1) rows, each in its slot; the other
/// slots are not written.
OpFuncs convStateWrite(const KernelEnv &env, const TensorFunc &input,
                       int64_t width);

struct RouteOptions {
  ScoringKind scoring = ScoringKind::Softmax;
  int64_t topK = 1;
  bool renormalize = false;
  double renormEps = 0;
  bool biasOnScores = false;
  double scaling = 1;
  /// When > 0, the capacity rule of this call: an expert keeps at most
  /// max(ceil(T * k * capacityFactor / E), 1) of its assignments, those
  /// with the highest weights (ties: the earlier token, then the earlier
  /// slot); the others get weight 0.
  double capacityFactor = 0;
};

/// Router logits from `router` ([E, D] row-major, Halide r(d, e)); returns
/// indices (i32) and weights.
OpFuncs route(const KernelEnv &env, const TensorFunc &input,
              const TensorFunc &router, const TensorFunc *bias,
              const RouteOptions &options);

/// Gather dispatch: every token runs through its k experts. Expert weights
/// are stored transposed: gate/up as [E, D, F] (Halide g(f, d, e)), down as
/// [E, F, D] (Halide w(d, f, e)).
OpFuncs expertDispatchGather(const KernelEnv &env, const TensorFunc &input,
                             const TensorFunc &indices,
                             const TensorFunc &weights, const TensorFunc *gate,
                             const TensorFunc &up, const TensorFunc &down,
                             ActivationKind activation);

/// Grouped dispatch: the T*k (token, slot) assignments are sorted by expert
/// into buckets padded to whole blocks of rows (a counting sort), every
/// block runs the hidden and down projections of its one expert as a
/// matrix-matrix product, and each token gathers its k rows back with its
/// routing weights. Same layouts as the gather dispatch.
OpFuncs expertDispatchGrouped(const KernelEnv &env, const TensorFunc &input,
                              const TensorFunc &indices,
                              const TensorFunc &weights, const TensorFunc *gate,
                              const TensorFunc &up, const TensorFunc &down,
                              ActivationKind activation);

} // namespace mlir::moe::cpu

#endif // MOE_TARGETS_CPU_KERNELS_ALGORITHMS_H
