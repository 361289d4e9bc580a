//===- Algorithms.cpp - Halide algorithms of the moe ops ------------------===//
//
// Each function builds Funcs for one op and a schedule for materialising its
// result. Schedules only look at the KernelEnv (vector lanes from the target
// description, whether the call is a single token) and the op's shapes.
//
// Two rules keep every schedule inside its buffers (house-style pitfall: a
// producer computed inside a GuardWithIf tile reads past its input):
//   * tiles over a static dimension use ShiftInwards with a tile no larger
//     than the dimension, so they never leave it;
//   * tiles over the dynamic token dimension use GuardWithIf, and every
//     read of a token-indexed input clamps the token to [0, T).
//
//===----------------------------------------------------------------------===//

#include "targets/cpu/kernels/Algorithms.h"

#include "dialects/MoE/Utils/DotBlocks.h"

#include <cmath>
#include <limits>

using namespace Halide;

namespace mlir::moe::cpu {

Expr TensorFunc::at(const std::vector<Expr> &indices) const {
  std::vector<Expr> reversed(indices.rbegin(), indices.rend());
  return func(reversed);
}

std::vector<Var> makeVars(int rank) {
  static const char *names[] = {"x", "y", "z", "w"};
  std::vector<Var> vars;
  for (int i = 0; i < rank; ++i) {
    vars.push_back(i == rank - 1 ? Var("t") : Var(names[i % 4]));
  }
  return vars;
}

int staticTile(int64_t extent, int lanes, int vectors) {
  int64_t tile = static_cast<int64_t>(lanes) * vectors;
  while (tile > extent && tile > lanes) {
    tile -= lanes;
  }
  return static_cast<int>(std::min<int64_t>(tile, extent));
}

Expr clampToken(const KernelEnv &env, Expr t) {
  if (env.singleToken) {
    return 0;
  }
  return clamp(t, 0, env.tokens - 1);
}

Expr activate(ActivationKind kind, Expr x) {
  switch (kind) {
  case ActivationKind::Silu:
    return x / (1.0f + exp(-x));
  case ActivationKind::GeluTanh: {
    const float k = std::sqrt(2.0f / static_cast<float>(M_PI));
    return 0.5f * x * (1.0f + tanh(k * (x + 0.044715f * x * x * x)));
  }
  case ActivationKind::Relu:
    return max(x, 0.0f);
  }
  return x;
}

Expr widenToFloat(Expr x) {
  if (x.type().element_of() != Float(16)) {
    return cast<float>(x);
  }
  // The half's exponent and mantissa, shifted into an f32's, read as an
  // f32 2^112 times too small (a half subnormal becomes an f32 subnormal
  // of the same significand); then the sign.
  Expr bits = cast<uint32_t>(reinterpret<uint16_t>(x));
  Expr magnitude =
      reinterpret<float>((bits & 0x7fffu) << 13) * 5.192296858534828e33f;
  return reinterpret<float>(reinterpret<uint32_t>(magnitude) |
                            ((bits & 0x8000u) << 16));
}

Func flattenFeatures(const KernelEnv &env, const TensorFunc &input) {
  Var kv("k"), t("t");
  std::vector<Expr> index;
  Expr remaining = kv;
  for (int i = input.rank() - 1; i >= 1; --i) {
    int extent = static_cast<int>(input.shape[i]);
    index.push_back(i == 1 ? remaining : remaining % extent);
    remaining = remaining / extent;
  }
  index.push_back(t);
  Func x(env.name("proj_input"));
  x(kv, t) = input.func(index);
  return x;
}

TensorFunc viewAs(const KernelEnv &env, Func y,
                  const std::vector<int64_t> &resultShape) {
  if (resultShape.size() == 2) {
    return {y, resultShape};
  }
  std::vector<Var> v = makeVars(static_cast<int>(resultShape.size()));
  Expr flatN = v[0];
  Expr stride = static_cast<int>(resultShape.back());
  for (size_t i = 1; i + 1 < resultShape.size(); ++i) {
    flatN = flatN + v[i] * stride;
    stride = stride * static_cast<int>(resultShape[resultShape.size() - 1 - i]);
  }
  Func view(env.name("proj_view"));
  view(v) = y(flatN, v.back());
  return {view, resultShape};
}

namespace {

std::vector<Expr> asExprs(const std::vector<Var> &vars) {
  return std::vector<Expr>(vars.begin(), vars.end());
}

/// Schedules the gate and up projections of expert FFNs inside a tile of
/// `consumer` (at its loop `tile`): vectorised over the hidden units `f`,
/// with the reduction over the model width outermost, so each weight vector
/// is loaded once per tile. `rows`, when given, are the tile's token rows:
/// unrolled, so that one weight load serves all of them.
void scheduleExpertProjections(const std::vector<Func> &projections,
                               Func consumer, Var tile, Var f, int vec,
                               RDom reduction, std::optional<Var> rows) {
  for (Func proj : projections) {
    Var po("po"), pi("pi");
    proj.compute_at(consumer, tile).vectorize(f, vec);
    Stage update = proj.update().split(f, po, pi, vec);
    if (rows) {
      update.reorder(pi, po, *rows, reduction.x).unroll(*rows);
    } else {
      update.reorder(pi, po, reduction.x);
    }
    update.vectorize(pi).unroll(po);
  }
}

} // namespace

RootSchedule pointwiseSchedule(const KernelEnv &env, int rank) {
  int lanes = env.lanes;
  bool single = env.singleToken;
  return [lanes, rank, single](Func &f) {
    std::vector<Var> args = f.args();
    f.compute_root();
    f.vectorize(args[0], lanes, TailStrategy::GuardWithIf);
    // One token's elementwise result is a few vectors: never worth threads.
    if (rank >= 2 && !single) {
      f.parallel(args[rank - 1]);
    }
  };
}

//===----------------------------------------------------------------------===//
// Packed weights
//===----------------------------------------------------------------------===//

OpFuncs dequantize(const KernelEnv &env, const TensorFunc &packed,
                   const TensorFunc &scale, const TensorFunc *offset,
                   const PackedCodes &codes, std::vector<int64_t> resultShape,
                   bool unscaled) {
  int rank = static_cast<int>(resultShape.size());
  int cols = static_cast<int>(resultShape[rank - 1]);
  std::vector<Var> v = makeVars(rank);
  // Halide order: v[0] = column, v[1] = row, v[2..] = stacked matrices.
  std::vector<Var> lead(v.begin() + 2, v.end());
  auto at = [&](const TensorFunc &f, Expr inner) {
    std::vector<Expr> args{inner};
    args.insert(args.end(), lead.begin(), lead.end());
    return f.func(args);
  };
  int rows = static_cast<int>(resultShape[rank - 2]);
  // Code (row v[1], column v[0]) of the matrix, in storage order.
  Expr index = codes.transposed ? v[0] * rows + v[1] : v[1] * cols + v[0];
  // Code `index` is slot index % perByte of byte index / perByte; in runs
  // of `lanes` bytes, code j of a run is slot j / lanes of byte j % lanes,
  // so a vector of consecutive codes is consecutive bytes (with a shift
  // that is the same for the whole vector when it is aligned to the run).
  // Slots count from the most significant end unless lowBitsFirst.
  int perByte = 8 / codes.bits;
  Expr byteIndex, slot;
  if (codes.dot > 0) {
    // dot(D): blocks of D * perByte columns, D bytes per row in a block.
    int columns = codes.dot * perByte;
    Expr within = v[0] % columns;
    byteIndex = dotBlockByte<Expr>(v[0] / columns, v[1], rows, cols / columns,
                                   codes.dot, codes.panels) +
                within % codes.dot;
    slot = within / codes.dot;
  } else if (codes.lanes > 0 && perByte > 1) {
    int run = codes.lanes * perByte;
    Expr j = index % run;
    byteIndex = index / run * codes.lanes + j % codes.lanes;
    slot = j / codes.lanes;
  } else {
    byteIndex = index / perByte;
    slot = index % perByte;
  }
  Expr byte = cast<int32_t>(at(packed, byteIndex));
  Expr shift = (codes.lowBitsFirst ? slot : perByte - 1 - slot) * codes.bits;
  Expr raw = (byte >> shift) & ((1 << codes.bits) - 1);
  // The scale (and offset) of the element: group scales are [.., N, G],
  // or [.., G, N] transposed; f16 widens in registers.
  auto perGroup = [&](const TensorFunc &f) {
    if (codes.group <= 0) {
      return widenToFloat(at(f, v[1]));
    }
    std::vector<Expr> args{v[0] / codes.group, v[1]};
    if (codes.transposed || codes.dot > 0) {
      std::swap(args[0], args[1]);
    }
    args.insert(args.end(), lead.begin(), lead.end());
    return widenToFloat(f.func(args));
  };
  // Unscaled codes multiply by 1, which Halide's simplifier drops.
  Expr s = unscaled ? Expr(1.0f) : perGroup(scale);
  Expr value;
  if (codes.sign1) {
    // A sign picks the scale or its negation: no multiply. Code 0 flips
    // the scale's sign bit (the bit moved to the top of the lane, then
    // one xor): a compare and a blend did the same in more instructions.
    Expr flip = (cast<uint32_t>(~byte) << cast<uint32_t>(31 - shift)) &
                Halide::Internal::make_const(UInt(32), 0x80000000u);
    value = reinterpret<float>(reinterpret<uint32_t>(s) ^ flip);
  } else if (codes.offsetBinary) {
    value = cast<float>(raw - (1 << (codes.bits - 1))) * s;
  } else {
    // Two's complement: the field moved to the top of the 32-bit lane and
    // shifted back arithmetically is the signed code, in two shifts where
    // a mask, a compare and a select took four. The left shift is unsigned:
    // Halide takes signed overflow to be impossible.
    Expr top = cast<uint32_t>(byte) << cast<uint32_t>(32 - codes.bits - shift);
    Expr code = reinterpret<int32_t>(top) >> (32 - codes.bits);
    value = cast<float>(code) * s;
  }
  Func out(env.name("dequantize"));
  out(v) = offset ? value + perGroup(*offset) : value;
  return {
      {{out, resultShape, codes.bits}}, {pointwiseSchedule(env, rank)}, true};
}

//===----------------------------------------------------------------------===//
// Embedding
//===----------------------------------------------------------------------===//

OpFuncs embed(const KernelEnv &env, const TensorFunc &table,
              const TensorFunc &tokens, double scale) {
  Var d("d"), t("t");
  Func out(env.name("embed"));
  // An id outside [0, V) was rejected by the runtime before the call; the
  // clamp keeps the kernel in bounds whatever it is given.
  Expr id = clamp(tokens.func(t), 0, static_cast<int>(table.shape[0]) - 1);
  out(d, t) = table.func(d, id) * static_cast<float>(scale);
  return {{{out, {tokens.shape[0], table.shape[1]}}},
          {pointwiseSchedule(env, 2)},
          false};
}

//===----------------------------------------------------------------------===//
// Norms
//===----------------------------------------------------------------------===//

OpFuncs rmsNorm(const KernelEnv &env, const TensorFunc &input,
                const TensorFunc &weight, double eps) {
  int rank = input.rank();
  std::vector<Var> v = makeVars(rank);
  std::vector<Expr> outer(v.begin() + 1, v.end());
  int64_t width = input.shape.back();
  RDom r(0, static_cast<int>(width), "rd");
  Func sumSq(env.name("sum_sq"));
  std::vector<Expr> reduced{r.x};
  reduced.insert(reduced.end(), outer.begin(), outer.end());
  sumSq(outer) = 0.0f;
  sumSq(outer) += input.func(reduced) * input.func(reduced);
  Func out(env.name("rms_norm"));
  std::vector<Expr> w(v.begin(), v.begin() + weight.rank());
  out(v) = input.func(asExprs(v)) *
           (1.0f / sqrt(sumSq(outer) / static_cast<float>(width) +
                        static_cast<float>(eps))) *
           weight.func(w);
  RootSchedule pointwise = pointwiseSchedule(env, rank);
  return {{{out, input.shape}},
          {[pointwise, sumSq, rank](Func &f) mutable {
            pointwise(f);
            sumSq.compute_at(f, f.args()[rank - 1]);
          }},
          false};
}

OpFuncs layerNorm(const KernelEnv &env, const TensorFunc &input,
                  const TensorFunc *weight, const TensorFunc *bias,
                  double eps) {
  int rank = input.rank();
  std::vector<Var> v = makeVars(rank);
  std::vector<Expr> outer(v.begin() + 1, v.end());
  int64_t width = input.shape.back();
  float n = static_cast<float>(width);
  RDom r(0, static_cast<int>(width), "rd");
  std::vector<Expr> reduced{r.x};
  reduced.insert(reduced.end(), outer.begin(), outer.end());
  Func mean(env.name("ln_mean")), var("ln_var");
  mean(outer) = 0.0f;
  mean(outer) += input.func(reduced) / n;
  // Two passes (mean, then squared deviations) as PyTorch computes it.
  var(outer) = 0.0f;
  var(outer) += (input.func(reduced) - mean(outer)) *
                (input.func(reduced) - mean(outer)) / n;
  Func out(env.name("layer_norm"));
  Expr y = (input.func(asExprs(v)) - mean(outer)) /
           sqrt(var(outer) + static_cast<float>(eps));
  if (weight) {
    y = y * weight->func(v[0]);
  }
  if (bias) {
    y = y + bias->func(v[0]);
  }
  out(v) = y;
  RootSchedule pointwise = pointwiseSchedule(env, rank);
  return {{{out, input.shape}},
          {[pointwise, mean, var, rank](Func &f) mutable {
            pointwise(f);
            mean.compute_at(f, f.args()[rank - 1]);
            var.compute_at(f, f.args()[rank - 1]);
          }},
          false};
}

//===----------------------------------------------------------------------===//
// Projections
//===----------------------------------------------------------------------===//

OpFuncs linear(const KernelEnv &env, const TensorFunc &input,
               const TensorFunc &weight, bool transposed,
               const TensorFunc *bias, std::vector<int64_t> resultShape,
               double scale, const TensorFunc *rowScale) {
  int64_t n = transposed ? weight.shape[1] : weight.shape[0];
  int64_t k = transposed ? weight.shape[0] : weight.shape[1];
  Var nv("n"), t("t");

  // The input as [T, K], whatever its trailing dimensions.
  Func x = flattenFeatures(env, input);

  RDom r(0, static_cast<int>(k), "rk");
  Expr w = transposed ? weight.func(nv, r.x) : weight.func(r.x, nv);
  Func prod(env.name("proj_acc"));
  prod(nv, t) = bias && !rowScale ? bias->func(nv) : Expr(0.0f);
  prod(nv, t) += w * x(r.x, clampToken(env, t));
  Expr sum = prod(nv, t);
  if (rowScale) {
    sum = sum * widenToFloat(rowScale->func(nv));
    if (bias) {
      sum = sum + bias->func(nv);
    }
  }
  Func y(env.name("proj"));
  y(nv, t) = scale == 1.0 ? sum : sum * static_cast<float>(scale);

  // The result in its own shape ([T, H, D] for a head projection).
  TensorFunc result = viewAs(env, y, resultShape);

  int gemmVectors = env.tileVectors(4);
  bool single = env.singleToken;
  bool reshaped = resultShape.size() != 2;
  KernelEnv tileEnv = env;
  int rank = static_cast<int>(resultShape.size());
  RootSchedule pointwise = pointwiseSchedule(env, rank);
  RootSchedule schedule = [=](Func &f) mutable {
    Func target = y;
    if (reshaped) {
      pointwise(f);
    }
    auto [no, vec] = tileProjection(tileEnv, target, n, gemmVectors,
                                    n * k * weight.storedBits / 8);
    Var nvo("nvo"), nvi("nvi");
    prod.compute_at(target, no).vectorize(nv, vec);
    prod.update()
        .split(nv, nvo, nvi, vec)
        .reorder(nvi, nvo, t, r.x)
        .vectorize(nvi)
        .unroll(nvo);
    if (!single) {
      prod.unroll(t);
      prod.update().unroll(t);
    }
  };
  return {{result}, {schedule}, false};
}

//===----------------------------------------------------------------------===//
// Per-head ops
//===----------------------------------------------------------------------===//

OpFuncs headScale(const KernelEnv &env, const TensorFunc &input,
                  const TensorFunc &scale) {
  Var d("d"), h("h"), t("t");
  Func out(env.name("head_scale"));
  Expr s = scale.rank() == 1 ? scale.func(h) : scale.func(0, h);
  out(d, h, t) = input.func(d, h, t) * s;
  return {{{out, input.shape}}, {pointwiseSchedule(env, 3)}, true};
}

OpFuncs rope(const KernelEnv &env, const TensorFunc &input, bool interleaved,
             int64_t rotaryDims, double theta) {
  int half = static_cast<int>(rotaryDims / 2);
  int dims = static_cast<int>(rotaryDims);
  int headDim = static_cast<int>(input.shape[2]);
  // Inverse frequencies in double, rounded once to f32, as the references
  // compute theta^(-2j/R) before casting.
  Buffer<float> invFreq(half, env.name("rope_inv_freq"));
  for (int j = 0; j < half; ++j) {
    invFreq(j) = static_cast<float>(
        1.0 / std::pow(theta, 2.0 * j / static_cast<double>(rotaryDims)));
  }
  Var j("j"), t("t"), d("d"), h("h");
  Func angleCos(env.name("rope_cos")), angleSin("rope_sin");
  // The angle of an integer position, in f32 like the references.
  Expr angle = cast<float>(env.position + t) * invFreq(j);
  angleCos(j, t) = cos(angle);
  angleSin(j, t) = sin(angle);

  Expr x = input.func(d, h, t);
  Expr rotated;
  if (interleaved) {
    Expr pair = clamp(d / 2, 0, half - 1);
    Expr even = input.func(clamp(pair * 2, 0, headDim - 1), h, t);
    Expr odd = input.func(clamp(pair * 2 + 1, 0, headDim - 1), h, t);
    Expr c = angleCos(pair, t), s = angleSin(pair, t);
    rotated = select(d % 2 == 0, even * c - odd * s, odd * c + even * s);
  } else {
    Expr first = d < half;
    Expr pair = clamp(select(first, d, d - half), 0, half - 1);
    Expr partner = input.func(
        clamp(select(first, d + half, d - half), 0, headDim - 1), h, t);
    Expr c = angleCos(pair, t), s = angleSin(pair, t);
    rotated = select(first, x * c - partner * s, x * c + partner * s);
  }
  Func out(env.name("rope"));
  out(d, h, t) = select(d < dims, rotated, x);
  // The tables are [R/2, T]: computed once per call.
  env.computeRoot(angleCos);
  env.computeRoot(angleSin);
  return {{{out, input.shape}}, {pointwiseSchedule(env, 3)}, true};
}

//===----------------------------------------------------------------------===//
// Elementwise
//===----------------------------------------------------------------------===//

OpFuncs glu(const KernelEnv &env, const TensorFunc &gate, const TensorFunc &up,
            ActivationKind activation) {
  std::vector<Var> v = makeVars(gate.rank());
  Func out(env.name("glu"));
  out(v) = activate(activation, gate.func(v)) * up.func(v);
  return {{{out, gate.shape}}, {pointwiseSchedule(env, gate.rank())}, true};
}

OpFuncs add(const KernelEnv &env, const TensorFunc &lhs,
            const TensorFunc &rhs) {
  std::vector<Var> v = makeVars(lhs.rank());
  Func out(env.name("add"));
  out(v) = lhs.func(v) + rhs.func(v);
  return {{{out, lhs.shape}}, {pointwiseSchedule(env, lhs.rank())}, true};
}

//===----------------------------------------------------------------------===//
// Attention
//===----------------------------------------------------------------------===//

OpFuncs kvCacheWrite(const KernelEnv &env, const TensorFunc &key,
                     const TensorFunc &value) {
  Var d("d"), p("p"), h("h");
  Func keys(env.name("kv_write_keys")), values("kv_write_values");
  keys(d, p, h) = key.func(d, h, p - env.position);
  values(d, p, h) = value.func(d, h, p - env.position);
  int lanes = env.lanes;
  bool single = env.singleToken;
  RootSchedule schedule = [lanes, single](Func &f) {
    std::vector<Var> args = f.args();
    f.compute_root();
    f.vectorize(args[0], lanes, TailStrategy::GuardWithIf);
    if (!single) {
      f.parallel(args[2]);
    }
  };
  std::vector<int64_t> shape = key.shape;
  return {{{keys, shape}, {values, shape}}, {schedule, schedule}, false};
}

OpFuncs cachedAttention(const KernelEnv &env, const TensorFunc &query,
                        const Func &keys, const Func &values, Expr capacity,
                        int64_t kvHeads, double scale) {
  int headDim = static_cast<int>(query.shape[2]);
  int group = static_cast<int>(query.shape[1] / kvHeads);
  Var d("d"), h("h"), t("t"), p("p");
  RDom rd(0, headDim, "rd");
  Func scores(env.name("attn_scores"));
  scores(p, h, t) = 0.0f;
  scores(p, h, t) += query.func(rd, h, t) * keys(rd, p, h / group);
  Func scaled(env.name("attn_scaled"));
  scaled(p, h, t) = scores(p, h, t) * static_cast<float>(scale);

  // Query t sees positions 0 .. position + t.
  RDom rp(0, capacity, "rp");
  rp.where(rp <= env.position + t);
  Func best(env.name("attn_max"));
  best(h, t) = -std::numeric_limits<float>::infinity();
  best(h, t) = max(best(h, t), scaled(rp, h, t));
  Func weight(env.name("attn_exp"));
  weight(p, h, t) = exp(scaled(p, h, t) - best(h, t));
  env.materialise(weight);
  Func total(env.name("attn_sum"));
  total(h, t) = 0.0f;
  total(h, t) += weight(rp, h, t);
  Func mixed(env.name("attn_mix"));
  mixed(d, h, t) = 0.0f;
  mixed(d, h, t) += weight(rp, h, t) * values(d, rp, h / group);
  Func out(env.name("attention"));
  out(d, h, t) = mixed(d, h, t) / total(h, t);

  int lanes = env.lanes;
  bool single = env.singleToken;
  // One token's heads read (position + 1) keys and values each: worth
  // threads only once the context is long.
  Expr cacheBytes = (env.position + 1) * static_cast<int>(kvHeads) * headDim *
                    2 * static_cast<int>(sizeof(float));
  RootSchedule schedule = [=](Func &f) mutable {
    Var ht("ht");
    f.compute_root();
    f.vectorize(d, std::min(lanes, headDim), TailStrategy::GuardWithIf)
        .fuse(h, t, ht);
    if (single) {
      f.specialize(cacheBytes >= static_cast<int>(KernelEnv::kParallelMinBytes))
          .parallel(ht);
    } else {
      f.parallel(ht);
    }
    // One (head, token) at a time: its scores over the visible positions,
    // then the weighted sum of values, vectorised over head_dim.
    scores.compute_at(f, ht);
    scores.update().reorder(rd, p);
    weight.compute_at(f, ht);
    best.compute_at(f, ht);
    total.compute_at(f, ht);
    mixed.compute_at(f, ht).vectorize(d, std::min(lanes, headDim),
                                      TailStrategy::GuardWithIf);
    mixed.update().reorder(d, rp).vectorize(d, std::min(lanes, headDim),
                                            TailStrategy::GuardWithIf);
  };
  return {{{out, query.shape}}, {schedule}, false};
}

//===----------------------------------------------------------------------===//
// Causal convolution
//===----------------------------------------------------------------------===//

OpFuncs cachedConv1d(const KernelEnv &env, const TensorFunc &input,
                     const TensorFunc &weight, const Func &state) {
  int width = static_cast<int>(weight.shape[2]);
  int ring = width - 1;
  Var c("c"), t("t");
  // Row r of the window, relative to the first new token: r >= 0 is an
  // input row, r < 0 the saved row of position `position + r` (zero before
  // position 0: the left padding).
  auto row = [&](Expr r) {
    Expr q = env.position + r;
    Expr saved = select(q >= 0, state(c, clamp(q % ring, 0, ring - 1)), 0.0f);
    return select(r >= 0, input.func(c, clampToken(env, r)), saved);
  };
  Func out(env.name("causal_conv"));
  // Tap K-1 multiplies the current row, as PyTorch's cross-correlation
  // after K-1 rows of left padding.
  Expr sum = 0.0f;
  for (int i = 0; i < width; ++i) {
    sum += weight.func(i, 0, c) * row(t - (width - 1) + i);
  }
  out(c, t) = sum;
  return {{{out, input.shape}}, {pointwiseSchedule(env, 2)}, false};
}

OpFuncs convStateWrite(const KernelEnv &env, const TensorFunc &input,
                       int64_t width) {
  int ring = static_cast<int>(width - 1);
  Var c("c"), s("s");
  Func out(env.name("conv_state_write"));
  // Only the slots of the last min(T, K-1) positions change; the others
  // hold earlier positions the next call still reads, so the pure
  // definition leaves the buffer as it is.
  out(c, s) = undef<float>();
  Expr kept = min(env.tokens, ring);
  RDom r(0, kept, "rs");
  Expr q = env.position + env.tokens - kept + r.x;
  out(c, q % ring) = input.func(c, clampToken(env, q - env.position));
  int lanes = env.lanes;
  int64_t channels = input.shape[1];
  RootSchedule schedule = [lanes, channels, c](Func &f) {
    f.compute_root();
    f.update().vectorize(c,
                         static_cast<int>(std::min<int64_t>(lanes, channels)),
                         TailStrategy::GuardWithIf);
  };
  return {{{out, {width - 1, channels}}}, {schedule}, false};
}

//===----------------------------------------------------------------------===//
// Mixture of experts
//===----------------------------------------------------------------------===//

OpFuncs route(const KernelEnv &env, const TensorFunc &input,
              const TensorFunc &router, const TensorFunc *bias,
              const RouteOptions &options) {
  int experts = static_cast<int>(router.shape[0]);
  int width = static_cast<int>(router.shape[1]);
  Var e("e"), t("t"), j("j");
  RDom rd(0, width, "rd");
  Func logits(env.name("router_logits"));
  logits(e, t) = 0.0f;
  logits(e, t) += router.func(rd, e) * input.func(rd, t);

  RDom re(0, experts, "re");
  Func scores(env.name("router_scores"));
  std::vector<Func> helpers;
  if (options.scoring == ScoringKind::Sigmoid) {
    scores(e, t) = 1.0f / (1.0f + exp(-logits(e, t)));
  } else {
    Func peak(env.name("router_max")), sum("router_sum");
    peak(t) = maximum(logits(re, t));
    sum(t) = Halide::sum(exp(logits(re, t) - peak(t)));
    scores(e, t) = exp(logits(e, t) - peak(t)) / sum(t);
    helpers = {peak, sum};
  }
  Func select_(env.name("router_select"));
  if (bias) {
    select_(e, t) =
        (options.biasOnScores ? scores(e, t) : logits(e, t)) + bias->func(e);
  } else {
    select_(e, t) = scores(e, t);
  }

  // Top-k by repeated argmax; strict '>' keeps the lower index on ties.
  std::vector<Func> picks;
  std::vector<Expr> chosen, gates;
  const float neg = -std::numeric_limits<float>::infinity();
  for (int64_t k = 0; k < options.topK; ++k) {
    Func masked(env.name("router_masked"));
    Expr taken = Internal::const_false();
    for (const Expr &c : chosen) {
      taken = taken || e == c;
    }
    masked(e, t) = select(taken, neg, select_(e, t));
    Func pick(env.name("router_pick"));
    pick(t) = Tuple(neg, -1);
    pick(t) = tuple_select(masked(re, t) > pick(t)[0],
                           Tuple(masked(re, t), re.x), pick(t));
    picks.push_back(pick);
    Expr index = clamp(pick(t)[1], 0, experts - 1);
    chosen.push_back(index);
    gates.push_back(scores(index, t));
  }
  Expr totalGate = 0.0f;
  for (const Expr &g : gates) {
    totalGate = totalGate + g;
  }
  std::vector<Expr> weights;
  for (const Expr &g : gates) {
    Expr w = options.renormalize
                 ? g / (totalGate + static_cast<float>(options.renormEps))
                 : g;
    weights.push_back(w * static_cast<float>(options.scaling));
  }
  Func indices(env.name("route_indices")), gateWeights("route_weights");
  indices(j, t) = mux(j, chosen);
  std::vector<Func> capacityStages;
  if (options.capacityFactor > 0) {
    // The capacity rule: rank each assignment among those of its expert in
    // this call (higher weight first, then flattened order t * k + j) and
    // drop it at rank >= cap. cap is computed in f64, as the reference's
    // Python arithmetic does.
    Func weight(env.name("route_weight_uncapped"));
    weight(j, t) = mux(j, weights);
    int64_t k = options.topK;
    // ((T * k) * factor) / E, in the reference's order of operations, so
    // an exact integer quotient is not rounded up by a stray ulp.
    Expr assignments = cast<double>(env.tokens * static_cast<int>(k));
    Expr cap = max(cast<int>(ceil(assignments * Expr(options.capacityFactor) /
                                  Expr(static_cast<double>(experts)))),
                   1);
    RDom other(0, static_cast<int>(k), 0, env.tokens, "other");
    Expr sameExpert = indices(other.x, other.y) == indices(j, t);
    Expr earlier =
        other.y * static_cast<int>(k) + other.x < t * static_cast<int>(k) + j;
    Expr ahead = weight(other.x, other.y) > weight(j, t) ||
                 (weight(other.x, other.y) == weight(j, t) && earlier);
    Func rank(env.name("route_capacity_rank"));
    rank(j, t) = Halide::sum(select(sameExpert && ahead, 1, 0));
    gateWeights(j, t) = select(rank(j, t) < cap, weight(j, t), 0.0f);
    capacityStages = {indices, weight, rank};
  } else {
    gateWeights(j, t) = mux(j, weights);
  }

  bool single = env.singleToken;
  // Both outputs read the picks, so everything is computed once at root;
  // per token it is a few values (the capacity rank: T * k compares).
  std::vector<Func> stages{logits, scores, select_};
  stages.insert(stages.end(), helpers.begin(), helpers.end());
  stages.insert(stages.end(), picks.begin(), picks.end());
  stages.insert(stages.end(), capacityStages.begin(), capacityStages.end());
  for (const Func &stage : stages) {
    env.materialise(stage);
  }
  RootSchedule schedule = [=](Func &f) mutable {
    f.compute_root();
    for (Func &stage : stages) {
      stage.compute_root();
      if (!single) {
        Var t = stage.args().back();
        stage.parallel(t);
        for (int u = 0; u < stage.num_update_definitions(); ++u) {
          stage.update(u).parallel(t);
        }
      }
    }
  };
  std::vector<int64_t> shape{input.shape[0], options.topK};
  return {
      {{indices, shape}, {gateWeights, shape}}, {schedule, schedule}, false};
}

OpFuncs expertDispatchGather(const KernelEnv &env, const TensorFunc &input,
                             const TensorFunc &indices,
                             const TensorFunc &weights, const TensorFunc *gate,
                             const TensorFunc &up, const TensorFunc &down,
                             ActivationKind activation) {
  int experts = static_cast<int>(up.shape[0]);
  int width = static_cast<int>(up.shape[1]);  // D (stored [E, D, F])
  int hidden = static_cast<int>(up.shape[2]); // F
  int topK = static_cast<int>(indices.shape[1]);
  Var f("f"), j("j"), t("t"), d("d");
  Expr expert = clamp(indices.func(j, t), 0, experts - 1);
  RDom rd(0, width, "rd");
  Func upProj(env.name("expert_up"));
  upProj(f, j, t) = 0.0f;
  upProj(f, j, t) += up.func(f, rd, expert) * input.func(rd, t);
  Func gateProj(env.name("expert_gate"));
  Expr act;
  if (gate) {
    gateProj(f, j, t) = 0.0f;
    gateProj(f, j, t) += gate->func(f, rd, expert) * input.func(rd, t);
    act = activate(activation, gateProj(f, j, t)) * upProj(f, j, t);
  } else {
    act = activate(activation, upProj(f, j, t));
  }
  Func hid(env.name("expert_hidden"));
  hid(f, j, t) = act;
  env.materialise(hid);

  RDom r(0, hidden, 0, topK, "rfj");
  Expr chosen = clamp(indices.func(r.y, t), 0, experts - 1);
  Func out(env.name("expert_dispatch"));
  out(d, t) = 0.0f;
  out(d, t) +=
      weights.func(r.y, t) * down.func(d, r.x, chosen) * hid(r.x, r.y, t);

  int lanes = env.lanes;
  bool single = env.singleToken;
  bool gated = gate != nullptr;
  int64_t model = input.shape[1];
  KernelEnv tileEnv = env;
  RootSchedule schedule = [=](Func &o) mutable {
    Var dox("do"), di("di");
    int64_t bits = up.storedBits;
    auto [fo, fvec] = tileGatheredHidden(tileEnv, hid, hidden,
                                         int64_t(gated ? 2 : 1) * topK *
                                             hidden * width * bits / 8);
    scheduleExpertProjections(gated ? std::vector<Func>{upProj, gateProj}
                                    : std::vector<Func>{upProj},
                              hid, fo, f, fvec, rd, std::nullopt);
    // Down projection: vectorised over D, summing over (f, slot).
    int dtile = staticTile(model, lanes, 4);
    int dvec = std::min(lanes, dtile);
    o.compute_root();
    o.vectorize(d, dvec, TailStrategy::GuardWithIf);
    o.update()
        .split(d, dox, di, dtile, TailStrategy::GuardWithIf)
        .reorder(di, r.x, r.y, dox, t)
        .vectorize(di, dvec, TailStrategy::GuardWithIf);
    if (!single) {
      o.update().parallel(t);
    } else if (tileEnv.worthThreads(int64_t(topK) * hidden * model *
                                    down.storedBits / 8)) {
      o.update().parallel(dox);
    }
  };
  return {{{out, input.shape}}, {schedule}, false};
}

} // namespace mlir::moe::cpu

namespace mlir::moe::cpu {

ExpertBuckets bucketByExpert(const KernelEnv &env, const TensorFunc &indices,
                             int experts, int block) {
  const int topK = static_cast<int>(indices.shape[1]);
  ExpertBuckets buckets;
  buckets.block = block;
  Expr assignments = env.tokens * topK;
  // Upper bound on the padded rows: every expert may waste block - 1.
  Expr rows = assignments + experts * (block - 1);
  buckets.rows = rows;

  Var a("a"), e("e"), s("s"), bk("b");
  Func expertOf(env.name("assignment_expert"));
  expertOf(a) = clamp(indices.func(a % topK, a / topK), 0, experts - 1);
  RDom ra(0, assignments, "ra");
  Func count(env.name("expert_count"));
  count(e) = 0;
  count(expertOf(ra)) += 1;
  Func padded(env.name("expert_padded"));
  padded(e) = (count(e) + block - 1) / block * block;
  RDom re(0, experts, "re");
  Func start(env.name("expert_start"));
  start(e) = sum(select(re < e, padded(re), 0));
  // The rank of an assignment among those of its expert, in order.
  RDom rb(0, assignments, "rb");
  rb.where(rb < a);
  Func rank(env.name("assignment_rank"));
  rank(a) = 0;
  rank(a) += select(expertOf(rb) == expertOf(a), 1, 0);
  Func slot(env.name("assignment_row"));
  slot(a) = clamp(start(expertOf(a)) + rank(a), 0, rows - 1);
  // Which token each row holds (padding rows: none, read as token 0), and
  // which expert each block belongs to: the number of experts whose rows
  // end at or before it.
  Func rowToken(env.name("row_token"));
  rowToken(s) = 0;
  rowToken(slot(ra)) = ra / topK;
  Func blockExpert(env.name("block_expert"));
  blockExpert(bk) = clamp(
      sum(select(start(re) + padded(re) <= bk * block, 1, 0)), 0, experts - 1);
  buckets.slot = slot;
  buckets.rowToken = rowToken;
  buckets.blockExpert = blockExpert;
  buckets.stages = {expertOf, count, padded,   start,
                    rank,     slot,  rowToken, blockExpert};
  for (const Func &stage : buckets.stages) {
    env.materialise(stage);
  }
  return buckets;
}

std::pair<Var, int> tileGatheredHidden(const KernelEnv &env, Func hid,
                                       int hidden, int64_t weightBytes) {
  std::vector<Var> args = hid.args(); // (f, j, t)
  Var fo("fo"), fi("fi");
  int ftile = staticTile(hidden, env.lanes, 4);
  int fvec = std::min(env.lanes, ftile);
  hid.compute_root()
      .split(args[0], fo, fi, ftile, TailStrategy::ShiftInwards)
      .vectorize(fi, fvec)
      .reorder(fi, fo, args[1], args[2]);
  if (!env.singleToken) {
    hid.parallel(args[2]);
  } else if (env.worthThreads(weightBytes)) {
    // One parallel loop over every selected expert's tiles, not one per
    // expert: a decode step wakes the thread pool once for all k experts.
    Var tile("fj");
    hid.fuse(fo, args[1], tile).parallel(tile);
    return {tile, fvec};
  }
  return {fo, fvec};
}

std::pair<Var, int> tileProjection(const KernelEnv &env, Func y, int64_t n,
                                   int vectors, int64_t weightBytes) {
  std::vector<Var> args = y.args(); // (n, t)
  Var no("no"), ni("ni"), to("to"), ti("ti");
  int lanes = env.lanes;
  y.compute_root();
  if (env.singleToken) {
    // Matrix-vector: tiles of output features (in parallel when worth
    // it); inside a tile, stream each weight row once with the tile's
    // accumulators in registers.
    int tile = staticTile(n, lanes, 4);
    int vec = std::min(lanes, tile);
    y.split(args[0], no, ni, tile, TailStrategy::ShiftInwards)
        .vectorize(ni, vec);
    if (env.worthThreads(weightBytes)) {
      y.parallel(no);
    }
    return {no, vec};
  }
  // Matrix-matrix: tiles of (features x 4 tokens); each weight vector
  // loaded once per tile serves 4 tokens.
  int tile = staticTile(n, lanes, vectors);
  int vec = std::min(lanes, tile);
  y.split(args[0], no, ni, tile, TailStrategy::ShiftInwards)
      .split(args[1], to, ti, 4, TailStrategy::GuardWithIf)
      .reorder(ni, ti, no, to)
      .vectorize(ni, vec)
      .parallel(to);
  return {no, vec};
}

void tileBlockRows(Func f, Var row, Var blockVar, Var feature, int extent,
                   int lanes, int vectors) {
  Var fo("fo"), fi("fi");
  int tile = staticTile(extent, lanes, vectors);
  // Blocks inside feature tiles: consecutive blocks are mostly one
  // expert's, so a tile's weights (K x tile) stay in L2 across them,
  // instead of each block streaming all of its expert's weights again
  // (physics f32 prefill x1.1 over blocks outermost).
  f.compute_root()
      .split(feature, fo, fi, tile, TailStrategy::ShiftInwards)
      .reorder(fi, row, blockVar, fo)
      .vectorize(fi, std::min(lanes, tile))
      .parallel(fo);
}

void ExpertBuckets::schedule() {
  // A few values per assignment, computed once per call; the rank is a
  // quadratic count, so it runs in parallel.
  for (Func stage : stages) {
    stage.compute_root();
  }
  Func rank = stages[4];
  Var a = rank.args()[0];
  rank.parallel(a);
  rank.update().parallel(a);
}

OpFuncs expertDispatchGrouped(const KernelEnv &env, const TensorFunc &input,
                              const TensorFunc &indices,
                              const TensorFunc &weights, const TensorFunc *gate,
                              const TensorFunc &up, const TensorFunc &down,
                              ActivationKind activation) {
  const int experts = static_cast<int>(up.shape[0]);
  const int width = static_cast<int>(up.shape[1]);  // D (stored [E, D, F])
  const int hidden = static_cast<int>(up.shape[2]); // F
  const int topK = static_cast<int>(indices.shape[1]);
  // Rows per block: one block is one expert's matrix-matrix tile, of eight
  // rows by as many vectors of features as the registers allow.
  const int block = 8;
  const int blockVectors = env.tileVectors(block);

  // 1. Counting sort of the assignments by expert.
  ExpertBuckets buckets = bucketByExpert(env, indices, experts, block);
  Func slot = buckets.slot, rowToken = buckets.rowToken,
       blockExpert = buckets.blockExpert;
  // Rows are addressed as (row si of block b): the expert is then a
  // function of b alone, so one weight vector loaded per reduction step
  // serves the whole block. (Indexed by row s, Halide cannot tell that the
  // eight rows of a tile share s / 8, and loaded each row's weights.)
  // Measured, with tileBlockRows' loop order: full-size physics prefill
  // (128 tokens, f32, 1 thread) 357 -> about 500 tokens/s, q8 x1.16.
  Var si("si"), b("b"), k("k"), f("f"), d("d"), t("t");
  Expr expert = blockExpert(b);

  // 2. The block's input rows, gathered into one contiguous tile.
  Func rows(env.name("grouped_rows"));
  rows(k, si, b) =
      input.func(k, clamp(rowToken(b * block + si), 0, env.tokens - 1));

  // 3. Per row: hidden = act(gate x) * (up x), then y = down hidden.
  RDom rd(0, width, "rd");
  Func upProj(env.name("grouped_up"));
  upProj(f, si, b) = 0.0f;
  upProj(f, si, b) += up.func(f, rd, expert) * rows(rd, si, b);
  Func gateProj(env.name("grouped_gate"));
  Expr act;
  if (gate) {
    gateProj(f, si, b) = 0.0f;
    gateProj(f, si, b) += gate->func(f, rd, expert) * rows(rd, si, b);
    act = activate(activation, gateProj(f, si, b)) * upProj(f, si, b);
  } else {
    act = activate(activation, upProj(f, si, b));
  }
  Func hid(env.name("grouped_hidden"));
  hid(f, si, b) = act;
  env.materialise(hid);
  RDom rf(0, hidden, "rf");
  Func rowOut(env.name("grouped_down"));
  rowOut(d, si, b) = 0.0f;
  rowOut(d, si, b) += down.func(d, rf, expert) * hid(rf, si, b);

  // 4. Each token sums its k rows with its routing weights.
  RDom rj(0, topK, "rj");
  Func out(env.name("expert_dispatch"));
  Expr row = slot(t * topK + rj);
  out(d, t) = 0.0f;
  out(d, t) += weights.func(rj, t) * rowOut(d, row % block, row / block);

  int lanes = env.lanes;
  int64_t model = input.shape[1];
  bool gated = gate != nullptr;
  RootSchedule schedule = [=](Func &o) mutable {
    buckets.schedule();
    // Hidden rows: tiles of one block (one expert) by a vector tile of F;
    // each weight vector loaded once serves the block's rows, read from
    // the block's gathered inputs.
    tileBlockRows(hid, si, b, f, hidden, lanes, blockVectors);
    rows.compute_root()
        .vectorize(k, lanes, TailStrategy::GuardWithIf)
        .parallel(b);
    int fvec = std::min(lanes, staticTile(hidden, lanes, blockVectors));
    scheduleExpertProjections(gated ? std::vector<Func>{upProj, gateProj}
                                    : std::vector<Func>{upProj},
                              hid, b, f, fvec, rd, si);
    int dtile = staticTile(model, lanes, blockVectors);
    int dvec = std::min(lanes, dtile);
    Var ro("ro"), ri("ri"), dox("do"), di("di");
    tileBlockRows(rowOut, si, b, d, model, lanes, blockVectors);
    rowOut.update()
        .split(d, dox, di, dtile, TailStrategy::GuardWithIf)
        .split(di, ro, ri, dvec)
        .reorder(ri, ro, si, rf, b, dox)
        .vectorize(ri)
        .unroll(ro)
        .unroll(si)
        .parallel(dox);
    o.compute_root().vectorize(d, lanes, TailStrategy::GuardWithIf).parallel(t);
    o.update().vectorize(d, lanes, TailStrategy::GuardWithIf).parallel(t);
  };
  return {{{out, input.shape}}, {schedule}, false};
}

} // namespace mlir::moe::cpu
