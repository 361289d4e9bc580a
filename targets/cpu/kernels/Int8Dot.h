//===- Int8Dot.h - Projections of packed codes by int8 inputs ---*- C++ -*-===//
//
// The algorithms of the ops with `int8_activations(B)`: the input of a
// projection is quantized to int8 per block of B features, and each block's
// products with the packed codes are summed exactly in i32 by the target's
// dot-product instruction before the block's two scales apply in f32:
//
//   y[n] = sum_b xs[b] * ws[n, b] * sum_{k in b} xq[k] * code[n, k]
//
// The codes are read in their `dot(D)` order (moe.dequantize): a vector of
// 32-bit lanes loads D consecutive codes of as many rows, which Halide's
// VectorReduce of D products per lane turns into `vpdpbusd` (VNNI: u8 codes
// by s8 inputs, D = 4), `sdot` (NEON: s8 by s8, D = 4) or `pmaddwd` (s16
// pairs, D = 2). Unsigned codes are the stored ones offset to be
// non-negative; the offset times the block's input sum is subtracted once
// per block.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_TARGETS_CPU_KERNELS_INT8DOT_H
#define MOE_TARGETS_CPU_KERNELS_INT8DOT_H

#include "targets/cpu/kernels/Algorithms.h"

namespace mlir::moe::cpu {

/// A packed weight as an int8 projection reads it: the operands and
/// attributes of its moe.dequantize, which stores the codes in `dot(D)`
/// order and group scales transposed ([.., G, N]).
struct PackedWeight {
  TensorFunc codes;                  // [.., bytes] u8
  TensorFunc scales;                 // [.., N] or [.., G, N], f32 or f16
  std::optional<TensorFunc> offsets; // asymmetric codes: as the scales
  PackedCodes layout;
  int rows = 0; // N
  int cols = 0; // K
};

/// An input quantized for int8 projections: q(k, rows..) in [-127, 127],
/// scale(b, rows..) = max |x| / 127 over block b, and sum(b, rows..) of the
/// block's codes (for unsigned code operands).
struct Int8Input {
  Halide::Func q, scale, sum;
  int block = 32;
};

/// Quantizes `x`(k, rows..), whose k runs over `width` features, per block
/// of `block`; every Func is computed at root, vectorised over k and
/// parallel over the last row variable when there are several tokens.
Int8Input quantizeInput(const KernelEnv &env, Halide::Func x, int width,
                        int block, int rowDims);

/// The input of a projection ([T, ...], its trailing dimensions holding
/// `width` features) quantized for int8 projections, per token: what every
/// projection of that input in a kernel reads (q, k and v share it).
Int8Input quantizeProjectionInput(const KernelEnv &env, const TensorFunc &input,
                                  int width, int block);

/// One int8 projection: `result`(n, rows..) = the sum above, with its
/// update over `blocks`; `dot`(n, b, rows..) is one block's i32 sum, its
/// update over `inner` (the D products of a lane, then the block's steps
/// of D). Codes in panels: `dot`(n, panel, b, rows..), n within the panel.
struct Int8Projection {
  Halide::Func result, dot;
  Halide::RDom blocks, inner;
  Halide::Var n, panel;
  bool panelled = false;
};

/// Builds the projection of `input` (rows `inputRows`, in terms of the
/// result's `rows`) by `weight`, whose matrix `lead` selects (an expert,
/// or nothing).
Int8Projection int8Project(const KernelEnv &env, const PackedWeight &weight,
                           const Int8Input &input,
                           const std::vector<Halide::Var> &rows,
                           const std::vector<Halide::Expr> &inputRows,
                           const std::vector<Halide::Expr> &lead);

/// Schedules `p` inside a tile of its consumer: `result` at `at`,
/// vectorised by `vec` over n with the tile's vectors unrolled, and the
/// `rows` (each with the tile's extent in it) unrolled; each block's `dot`
/// computed there, its D products vectorised into the dot-product
/// instruction.
void scheduleInt8Projection(
    Int8Projection &p, Halide::LoopLevel at, int vec,
    const std::vector<std::pair<Halide::Var, int>> &rows);

/// moe.linear / moe.logits with int8 inputs (see linear()), reading the
/// quantized input `in` (quantizeProjectionInput).
OpFuncs int8Linear(const KernelEnv &env, const Int8Input &in,
                   const PackedWeight &weight, const TensorFunc *bias,
                   std::vector<int64_t> resultShape, double scale = 1.0);

/// moe.expert_dispatch with int8 inputs: the gather strategy (every token
/// through its k experts) and the grouped one (tokens sorted into expert
/// blocks), as expertDispatchGather / expertDispatchGrouped.
OpFuncs int8ExpertDispatch(const KernelEnv &env, const TensorFunc &input,
                           const TensorFunc &indices, const TensorFunc &weights,
                           const PackedWeight *gate, const PackedWeight &up,
                           const PackedWeight &down, ActivationKind activation,
                           int block, bool grouped);

} // namespace mlir::moe::cpu

#endif // MOE_TARGETS_CPU_KERNELS_INT8DOT_H
