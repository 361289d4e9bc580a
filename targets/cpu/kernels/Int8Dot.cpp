//===- Int8Dot.cpp - Projections of packed codes by int8 inputs -----------===//
//
// Schedules, and why (measured on a 2-core Zen with AVX-512 VNNI):
//   * A block's dot product is computed for a whole tile of outputs before
//     the next block: its D products per lane are one VectorReduce that
//     Halide turns into one `vpdpbusd` per 64 bytes of codes, with the four
//     input bytes broadcast from memory; the steps of the block and the
//     tile's vectors are unrolled, so one input broadcast serves them all.
//   * The block's f32 update (convert, two scales, add) runs once per
//     B / D dot-product instructions, so it costs little; int and f32
//     accumulators of a tile share the registers, so tiles are half as wide
//     as the f32 projections'.
//   * Inputs are quantized once per call, at root: T * K values, against
//     the N * K products that use them.
//
//===----------------------------------------------------------------------===//

#include "targets/cpu/kernels/Int8Dot.h"

using namespace Halide;

namespace mlir::moe::cpu {

namespace {

/// The largest code magnitude of the unsigned operand's offset: the stored
/// code is `operand - offset` (int formats) or `2 * operand - 1` (signs).
int offsetOf(const PackedCodes &codes) { return 1 << (codes.bits - 1); }

/// Code `slot` of `byte` (u8), unsigned, as stored.
Expr rawCode(const PackedCodes &codes, Expr byte, int slot) {
  int perByte = 8 / codes.bits;
  int shift = (codes.lowBitsFirst ? slot : perByte - 1 - slot) * codes.bits;
  Expr raw = shift == 0 ? byte : byte >> cast<uint8_t>(shift);
  if (codes.bits < 8) {
    raw = raw & cast<uint8_t>((1 << codes.bits) - 1);
  }
  return raw;
}

/// The code operand of the dot product: u8 `raw` offset to be
/// non-negative, or the signed code as i8.
Expr codeOperand(const KernelEnv &env, const PackedCodes &codes, Expr raw) {
  int offset = offsetOf(codes);
  if (env.unsignedCodes) {
    // Two's complement with its sign bit flipped is offset binary.
    if (codes.sign1 || codes.offsetBinary) {
      return raw;
    }
    return raw ^ cast<uint8_t>(offset);
  }
  if (codes.sign1) {
    return cast<int8_t>(raw) * cast<int8_t>(2) - cast<int8_t>(1);
  }
  if (codes.offsetBinary) {
    // Eight bits: flipping the top bit is the subtraction, in range.
    return codes.bits == 8 ? cast<int8_t>(raw ^ cast<uint8_t>(offset))
                           : cast<int8_t>(raw) - cast<int8_t>(offset);
  }
  if (codes.bits == 8) {
    return cast<int8_t>(raw);
  }
  // Sign-extend the low `bits` bits.
  int up = 8 - codes.bits;
  return cast<int8_t>(raw << cast<uint8_t>(up)) >> cast<int8_t>(up);
}

} // namespace

Int8Input quantizeInput(const KernelEnv &env, Func x, int width, int block,
                        int rowDims) {
  std::vector<Var> rows;
  for (int i = 0; i < rowDims; ++i) {
    rows.push_back(Var("r" + std::to_string(i)));
  }
  Var k("k"), b("b");
  auto args = [&](Expr first) {
    std::vector<Expr> a{first};
    a.insert(a.end(), rows.begin(), rows.end());
    return a;
  };
  RDom rb(0, block, "rq");
  Func amax(env.name("int8_amax"));
  amax(args(b)) = maximum(abs(x(args(b * block + rb))));
  Int8Input in;
  in.block = block;
  in.scale = Func(env.name("int8_scale"));
  in.scale(args(b)) = amax(args(b)) / 127.0f;
  // q = round(x * 127 / max|x|), half to even; an all-zero block is zeros.
  Expr inverse = select(amax(args(k / block)) > 0.0f,
                        127.0f / amax(args(k / block)), 0.0f);
  in.q = Func(env.name("int8_input"));
  in.q(args(k)) =
      cast<int8_t>(clamp(round(x(args(k)) * inverse), -127.0f, 127.0f));
  in.sum = Func(env.name("int8_sum"));
  in.sum(args(b)) = sum(cast<int32_t>(in.q(args(b * block + rb))));

  // Bytes of one vector register of codes.
  int bytes = env.lanes * 4;
  bool parallel = rowDims > 0 && !env.singleToken;
  for (Func f : {amax, in.scale, in.q, in.sum}) {
    env.computeRoot(f);
  }
  if (env.gpu) {
    return in;
  }
  amax.vectorize(b, std::min(8, width / block), TailStrategy::GuardWithIf);
  in.q.vectorize(k, std::min(bytes, width), TailStrategy::GuardWithIf);
  if (parallel) {
    amax.parallel(rows.back());
    in.q.parallel(rows.back());
  }
  return in;
}

Int8Input quantizeProjectionInput(const KernelEnv &env, const TensorFunc &input,
                                  int width, int block) {
  Func x = flattenFeatures(env, input);
  Func clamped(env.name("int8_proj_input"));
  Var k("k"), t("t");
  clamped(k, t) = x(k, clampToken(env, t));
  return quantizeInput(env, clamped, width, block, 1);
}

Int8Projection int8Project(const KernelEnv &env, const PackedWeight &weight,
                           const Int8Input &input, const std::vector<Var> &rows,
                           const std::vector<Expr> &inputRows,
                           const std::vector<Expr> &lead) {
  const PackedCodes &codes = weight.layout;
  const int depth = codes.dot;
  const int block = input.block;
  const int perByte = 8 / codes.bits;
  const int columnsPerDot = depth * perByte;
  Int8Projection p;
  p.n = Var("n");
  p.panel = Var("pn");
  p.panelled = codes.panels > 0;
  Var n = p.n, b("b");
  auto withRows = [&](std::vector<Expr> first) {
    first.insert(first.end(), rows.begin(), rows.end());
    return first;
  };
  auto inputAt = [&](const Func &f, Expr first) {
    std::vector<Expr> a{first};
    a.insert(a.end(), inputRows.begin(), inputRows.end());
    return f(a);
  };
  auto weightAt = [&](const TensorFunc &f, std::vector<Expr> first) {
    first.insert(first.end(), lead.begin(), lead.end());
    return f.func(first);
  };

  // One block: lane i of step s holds column b * B + s * D + i, which is
  // in dot block (b * B + s * D) / (D * perByte), slot s % perByte.
  p.inner = RDom(0, depth, 0, block / depth, "ri");
  RVar lane = p.inner.x, step = p.inner.y;
  Expr dotBlock = b * (block / columnsPerDot) + step / perByte;
  // In panels(P), the dot product runs over (row n of panel pn): the
  // codes of a tile are then addressed without a division, and Halide
  // loads them as it does without panels (a / and % of a vectorised row
  // nested in the dot product's lanes made it gather, 3x slower). The
  // result reads dot(n % P, n / P), which folds into the tile's offsets
  // when tiles hold whole panels (every tile is a multiple of the vector,
  // the panel width AssignWeightLayouts chooses).
  const int panels = codes.panels;
  const int blocksPerRow = weight.cols / columnsPerDot;
  Var pn = p.panel;
  Expr byte = weightAt(
      weight.codes,
      {panels > 0 ? ((pn * blocksPerRow + dotBlock) * panels + n) * depth + lane
                  : (dotBlock * weight.rows + n) * depth + lane});
  // The slot is a constant once the steps are unrolled.
  Expr slot = step % perByte;
  Expr raw = rawCode(codes, byte, 0);
  for (int s = 1; s < perByte; ++s) {
    raw = select(slot == s, rawCode(codes, byte, s), raw);
  }
  Expr operand = codeOperand(env, codes, raw);
  Expr column = b * block + step * depth + lane;
  p.dot = Func(env.name("int8_dot"));
  std::vector<Expr> dotArgs =
      panels > 0 ? std::vector<Expr>{n, pn, b} : std::vector<Expr>{n, b};
  p.dot(withRows(dotArgs)) = 0;
  p.dot(withRows(dotArgs)) +=
      cast<int32_t>(operand) * cast<int32_t>(inputAt(input.q, column));

  // The block's exact sum of code products, then its scales.
  p.blocks = RDom(0, weight.cols / block, "rb");
  Expr blockIndex = p.blocks.x;
  Expr sum = panels > 0 ? p.dot(withRows({n % panels, n / panels, blockIndex}))
                        : p.dot(withRows({n, blockIndex}));
  if (env.unsignedCodes) {
    Expr inputSum = inputAt(input.sum, blockIndex);
    sum = codes.sign1 ? 2 * sum - inputSum : sum - offsetOf(codes) * inputSum;
  }
  auto perGroup = [&](const TensorFunc &f) {
    return widenToFloat(codes.group > 0
                            ? weightAt(f, {n, blockIndex * block / codes.group})
                            : weightAt(f, {n}));
  };
  // Asymmetric codes: sum_k xs xq[k] (s code[k] + o) adds o * xs * sum xq,
  // the block's input sum (a group holds whole blocks: the verifier of
  // int8_activations checks it).
  Expr products = cast<float>(sum) * perGroup(weight.scales);
  if (weight.offsets) {
    products +=
        cast<float>(inputAt(input.sum, blockIndex)) * perGroup(*weight.offsets);
  }
  p.result = Func(env.name("int8_proj"));
  p.result(withRows({n})) = 0.0f;
  p.result(withRows({n})) += products * inputAt(input.scale, blockIndex);
  return p;
}

void scheduleInt8Projection(Int8Projection &p, LoopLevel at, int vec,
                            const std::vector<std::pair<Var, int>> &rows) {
  Var n = p.n;
  std::vector<Var> unrolled;
  for (auto [row, extent] : rows) {
    unrolled.push_back(row);
    // A fixed extent, even in a tile cut short by the last tokens, so the
    // rows unroll and the tile's accumulators are registers, not a heap
    // allocation per block; the inputs of the extra rows are clamped.
    p.result.bound_extent(row, extent);
    p.dot.bound_extent(row, extent);
  }
  p.result.compute_at(at).vectorize(n, vec);
  Var no("no"), ni("ni");
  Stage update = p.result.update();
  std::vector<VarOrRVar> order{ni, no};
  for (const Var &row : unrolled) {
    order.push_back(row);
  }
  order.push_back(p.blocks.x);
  update.split(n, no, ni, vec).reorder(order).vectorize(ni).unroll(no);
  for (const Var &row : unrolled) {
    update.unroll(row);
  }

  // Each block's products, for the whole tile, where the tile's f32 update
  // of that block reads them.
  p.dot.compute_at(p.result, p.blocks.x).vectorize(n, vec);
  if (p.panelled) {
    p.dot.unroll(p.panel);
  }
  for (const Var &row : unrolled) {
    p.dot.unroll(row);
  }
  Var dno("dno"), dni("dni");
  Stage dot = p.dot.update();
  std::vector<VarOrRVar> dotOrder{p.inner.x, dni, dno};
  if (p.panelled) {
    dotOrder.push_back(p.panel);
  }
  for (const Var &row : unrolled) {
    dotOrder.push_back(row);
  }
  dotOrder.push_back(p.inner.y);
  dot.split(n, dno, dni, vec)
      .reorder(dotOrder)
      .atomic()
      .vectorize(p.inner.x)
      .vectorize(dni)
      .unroll(dno)
      .unroll(p.inner.y);
  if (p.panelled) {
    dot.unroll(p.panel);
  }
  for (const Var &row : unrolled) {
    dot.unroll(row);
  }
}

OpFuncs int8Linear(const KernelEnv &env, const Int8Input &in,
                   const PackedWeight &weight, const TensorFunc *bias,
                   std::vector<int64_t> resultShape, double scale) {
  Var t("t");
  Int8Projection p = int8Project(env, weight, in, {t}, {t}, {});
  Var n = p.n;
  Func y(env.name("int8_linear"));
  Expr value = p.result(n, t);
  if (bias) {
    value = value + bias->func(n);
  }
  y(n, t) = scale == 1.0 ? value : value * static_cast<float>(scale);
  TensorFunc result = viewAs(env, y, resultShape);

  int64_t rows = weight.rows;
  bool single = env.singleToken;
  bool reshaped = resultShape.size() != 2;
  KernelEnv tileEnv = env;
  // Int and f32 accumulators share the registers: half the f32 tiles.
  int gemmVectors = std::max(1, env.tileVectors(4) / 2);
  RootSchedule pointwise =
      pointwiseSchedule(env, static_cast<int>(resultShape.size()));
  RootSchedule schedule = [=](Func &f) mutable {
    if (reshaped) {
      pointwise(f);
    }
    auto [no, vec] =
        tileProjection(tileEnv, y, rows, gemmVectors,
                       int64_t(rows) * weight.cols * weight.layout.bits / 8);
    scheduleInt8Projection(p, LoopLevel(y, no), vec,
                           single ? std::vector<std::pair<Var, int>>{}
                                  : std::vector<std::pair<Var, int>>{{t, 4}});
  };
  return {{result}, {schedule}, false};
}

OpFuncs int8ExpertDispatch(const KernelEnv &env, const TensorFunc &input,
                           const TensorFunc &indices, const TensorFunc &weights,
                           const PackedWeight *gate, const PackedWeight &up,
                           const PackedWeight &down, ActivationKind activation,
                           int block, bool grouped) {
  const int experts = static_cast<int>(up.codes.shape[0]);
  const int width = up.cols;   // D
  const int hidden = up.rows;  // F
  const int model = down.rows; // D
  const int topK = static_cast<int>(indices.shape[1]);
  const int lanes = env.lanes;
  const bool single = env.singleToken;
  Var d("d"), t("t"), k("k");

  // The tokens' inputs, quantized once.
  Func x(env.name("int8_dispatch_input"));
  x(k, t) = input.func(k, clampToken(env, t));
  Int8Input xin = quantizeInput(env, x, width, block, 1);

  // The hidden activations of rows `rows` (each a token `token` through
  // `expert`): act(gate x) * (up x), or act(up x); returns them over
  // (f, rows..) with their projections, to be scheduled.
  struct Hidden {
    Func hid;
    Int8Projection up;
    std::optional<Int8Projection> gate;
  };
  auto hiddenOf = [&](const std::vector<Var> &rows, Expr token, Expr expert,
                      const std::string &name) {
    Hidden h{Func(env.name(name)),
             int8Project(env, up, xin, rows, {token}, {expert}), std::nullopt};
    if (gate) {
      h.gate = int8Project(env, *gate, xin, rows, {token}, {expert});
    }
    std::vector<Expr> at{h.up.n};
    at.insert(at.end(), rows.begin(), rows.end());
    Expr upValue = h.up.result(at);
    h.hid(at) = h.gate ? activate(activation, h.gate->result(at)) * upValue
                       : activate(activation, upValue);
    env.materialise(h.hid);
    return h;
  };

  if (!grouped) {
    // Gather: row (j, t) is token t through its j-th expert.
    Var j("j");
    Expr expert = clamp(indices.func(j, t), 0, experts - 1);
    Hidden h = hiddenOf({j, t}, t, expert, "int8_expert_hidden");
    Func hid = h.hid;
    Int8Input hin = quantizeInput(env, hid, hidden, block, 2);
    Int8Projection downP =
        int8Project(env, down, hin, {j, t}, {j, t}, {expert});
    Func rowOut(env.name("int8_expert_down"));
    rowOut(d, j, t) = downP.result(d, j, t);
    RDom rj(0, topK, "rj");
    Func out(env.name("expert_dispatch"));
    out(d, t) = 0.0f;
    out(d, t) += weights.func(rj, t) * rowOut(d, rj, t);

    KernelEnv tileEnv = env;
    RootSchedule schedule = [=](Func &o) mutable {
      Var dox("do"), di("di");
      const int64_t hiddenBytes =
          int64_t(gate ? 2 : 1) * topK * hidden * width * up.layout.bits / 8;
      const int64_t dispatchBytes =
          hiddenBytes + int64_t(topK) * model * hidden * down.layout.bits / 8;
      auto [fo, fvec] = tileGatheredHidden(tileEnv, hid, hidden, hiddenBytes);
      scheduleInt8Projection(h.up, LoopLevel(hid, fo), fvec, {});
      if (h.gate) {
        scheduleInt8Projection(*h.gate, LoopLevel(hid, fo), fvec, {});
      }
      int dtile = staticTile(model, lanes, 4);
      int dvec = std::min(lanes, dtile);
      Var rd = rowOut.args()[0];
      rowOut.compute_root()
          .split(rd, dox, di, dtile, TailStrategy::ShiftInwards)
          .vectorize(di, dvec);
      Var downTile = dox;
      if (!single) {
        rowOut.parallel(rowOut.args()[2]);
      } else if (tileEnv.worthThreads(dispatchBytes)) {
        // Split with the hidden tiles: the pool is awake for them already,
        // and the down rows alone (655 KB at physics q4) would run on one
        // thread while the other waits.
        downTile = Var("dj");
        rowOut.fuse(dox, rowOut.args()[1], downTile).parallel(downTile);
      }
      scheduleInt8Projection(downP, LoopLevel(rowOut, downTile), dvec, {});
      o.compute_root().vectorize(d, lanes, TailStrategy::GuardWithIf);
      o.update().vectorize(d, lanes, TailStrategy::GuardWithIf);
      if (!single) {
        o.parallel(t);
        o.update().parallel(t);
      }
    };
    return {{{out, input.shape}}, {schedule}, false};
  }

  // Grouped: rows sorted by expert, in blocks of one expert, addressed as
  // (row si of block b) so that the expert, a function of b, is the same
  // for every row of a tile (see expertDispatchGrouped).
  const int rowBlock = 8;
  ExpertBuckets buckets = bucketByExpert(env, indices, experts, rowBlock);
  Var si("si"), bk("bk");
  Expr expert = buckets.blockExpert(bk);
  Expr token = clamp(buckets.rowToken(bk * rowBlock + si), 0, env.tokens - 1);
  Hidden h = hiddenOf({si, bk}, token, expert, "grouped_hidden");
  Func hid = h.hid;
  Var f = h.up.n;
  Int8Input hin = quantizeInput(env, hid, hidden, block, 2);
  Int8Projection downP =
      int8Project(env, down, hin, {si, bk}, {si, bk}, {expert});
  Func rowOut(env.name("grouped_down"));
  rowOut(d, si, bk) = downP.result(d, si, bk);
  RDom rj(0, topK, "rj");
  Func out(env.name("expert_dispatch"));
  Expr row = buckets.slot(t * topK + rj);
  out(d, t) = 0.0f;
  out(d, t) += weights.func(rj, t) * rowOut(d, row % rowBlock, row / rowBlock);

  // Int and f32 accumulators of eight rows share the registers.
  int blockVectors = std::max(1, env.tileVectors(rowBlock) / 2);
  RootSchedule schedule = [=](Func &o) mutable {
    ExpertBuckets sort = buckets;
    sort.schedule();
    tileBlockRows(hid, si, bk, f, hidden, lanes, blockVectors);
    int fvec = std::min(lanes, staticTile(hidden, lanes, blockVectors));
    scheduleInt8Projection(h.up, LoopLevel(hid, bk), fvec, {{si, rowBlock}});
    if (h.gate) {
      scheduleInt8Projection(*h.gate, LoopLevel(hid, bk), fvec,
                             {{si, rowBlock}});
    }
    tileBlockRows(rowOut, si, bk, d, model, lanes, blockVectors);
    int dvec = std::min(lanes, staticTile(model, lanes, blockVectors));
    scheduleInt8Projection(downP, LoopLevel(rowOut, bk), dvec,
                           {{si, rowBlock}});
    o.compute_root().vectorize(d, lanes, TailStrategy::GuardWithIf).parallel(t);
    o.update().vectorize(d, lanes, TailStrategy::GuardWithIf).parallel(t);
  };
  return {{{out, input.shape}}, {schedule}, false};
}

} // namespace mlir::moe::cpu
