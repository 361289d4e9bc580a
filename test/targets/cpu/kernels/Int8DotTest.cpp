//===- Int8DotTest.cpp - Int8-input projections against references --------===//
//
// The kernels of ops with `int8_activations(32)` (Int8Dot.h), for every
// packed format and packing option, per-row and grouped scales in f16 and
// f32, at awkward sizes (N = 37 outputs: no multiple of any vector width),
// in every schedule, with the code order of the target under test
// ($MOE_KERNEL_TEST_TARGET: dot(4) for VNNI and NEON, dot(2) for pmaddwd).
//
// Two kinds of inputs:
//   * on a grid (k/16, with one element of each block at +-127/16): every
//     block's int8 quantization is exact, so the kernel must equal the
//     naive f32 product of the dequantized weights;
//   * random: the kernel may differ from the naive product by at most the
//     quantization's own bound, sum_k |w[n,k]| * scale(k's block) / 2.
//
//===----------------------------------------------------------------------===//

#include "test/targets/cpu/kernels/KernelHarness.h"

using namespace moe::kernel_test;

namespace {

const TargetDescription &testTarget() {
  static const TargetDescription target = [] {
    const char *name = std::getenv("MOE_KERNEL_TEST_TARGET");
    auto found = lookupTarget(name ? name : "host");
    if (!found) {
      llvm::consumeError(found.takeError());
      return TargetDescription();
    }
    return *found;
  }();
  return target;
}

int dotBytes() { return testTarget().int8Dot.dotBytes; }

struct Format {
  const char *name;
  PackedFormat packed;
  int bits;
};
const Format kFormats[] = {{"sign1", PackedFormat::Sign1, 1},
                           {"int2", PackedFormat::Int2, 2},
                           {"int4", PackedFormat::Int4, 4},
                           {"int8", PackedFormat::Int8, 8}};

/// `E` random packed matrices [N, K] and what they stand for: the codes in
/// the target's dot order, the scales (and with `asymmetric` the offsets)
/// in stored order, the f32 weights.
struct Packed {
  Vec stored, scales, offsets, weights;
  std::vector<int> codesShape, scalesShape;
  std::string codesType, scalesType, attrs;
  bool asymmetric = false;

  /// The kernel's inputs for it: codes, scales, offsets.
  std::vector<std::pair<Vec, std::vector<int>>> inputs() const {
    std::vector<std::pair<Vec, std::vector<int>>> in{{stored, codesShape},
                                                     {scales, scalesShape}};
    if (asymmetric) {
      in.push_back({offsets, scalesShape});
    }
    return in;
  }
};

/// The f16 value nearest each of `values`.
void roundToHalf(Vec &values) {
  for (float &v : values) {
    v = ::moe::frontend::halfToFloat(::moe::frontend::floatToHalf(v));
  }
}

Packed makePacked(const Format &format, int E, int N, int K, int group,
                  bool lowFirst, bool offset, bool half, uint32_t seed,
                  bool asymmetric = false, int panels = 0) {
  int B = (N * K * format.bits + 7) / 8;
  int G = group ? K / group : 1;
  Vec codes = randomValues(E * B, seed, 0, 255.99f);
  std::vector<uint8_t> bytes(codes.size());
  for (size_t i = 0; i < codes.size(); ++i) {
    codes[i] = std::floor(codes[i]);
    bytes[i] = uint8_t(codes[i]);
  }
  Packed p;
  std::vector<uint8_t> stored = transposeCodes(
      bytes.data(), E, N, K, format.packed, lowFirst, 0, dotBytes(), panels);
  p.stored.assign(stored.begin(), stored.end());
  Vec scale = randomValues(E * N * G, seed + 1, 0.01f, 0.2f);
  // Offsets as large as the weights, of either sign.
  Vec offsets = randomValues(E * N * G, seed + 2, -0.5f, 0.5f);
  if (half) {
    roundToHalf(scale);
    roundToHalf(offsets);
  }
  p.asymmetric = asymmetric;
  p.weights = decodePacked(codes, scale, E, N, K, format.bits, group, lowFirst,
                           offset, asymmetric ? &offsets : nullptr);
  p.scales = group ? transposed(scale, E, N, G) : scale;
  if (asymmetric) {
    p.offsets = group ? transposed(offsets, E, N, G) : offsets;
  }
  std::string e = E > 1 ? std::to_string(E) + "x" : "";
  int S = int(stored.size()) / E;
  p.codesShape = E > 1 ? std::vector<int>{E, S} : std::vector<int>{S};
  p.scalesShape = group ? std::vector<int>{G, N} : std::vector<int>{N};
  if (E > 1) {
    p.scalesShape.insert(p.scalesShape.begin(), E);
  }
  std::string element = half ? "f16" : "f32";
  p.codesType = "tensor<" + e + std::to_string(S) + "xui8>";
  p.scalesType = "tensor<" + e + std::to_string(N) +
                 (group ? "x" + std::to_string(G) : "") + "x" + element + ">";
  p.attrs = std::string(format.name) + ") cols(" + std::to_string(K) + ")" +
            (group ? " group(" + std::to_string(group) + ")" : "") + " dot(" +
            std::to_string(dotBytes()) + ")" +
            (panels ? " panels(" + std::to_string(panels) + ")" : "");
  if (lowFirst || offset) {
    p.attrs += std::string(" {") + (lowFirst ? "low_bits_first" : "") +
               (lowFirst && offset ? ", " : "") +
               (offset ? "offset_binary" : "") + "}";
  }
  return p;
}

/// Kernel arguments of packed weight `name`: its codes, scales and
/// offsets.
std::string packedArgs(const Packed &p, const std::string &name, int group) {
  std::string layout = " {moe.layout = #moe.weight_layout<transposed>}";
  std::string args = "%" + name + "c: " + p.codesType + layout + ", %" + name +
                     "s: " + p.scalesType + (group ? layout : "");
  if (p.asymmetric) {
    args += ", %" + name + "o: " + p.scalesType + (group ? layout : "");
  }
  return args;
}

std::string dequantize(const Packed &p, const std::string &name,
                       const std::string &result) {
  std::string offset = p.asymmetric ? " offset(%" + name + "o)" : "";
  std::string offsetType = p.asymmetric ? ", " + p.scalesType : "";
  return "  %" + name + " = moe.dequantize %" + name + "c, %" + name + "s" +
         offset + " format(" + p.attrs + " : " + p.codesType + ", " +
         p.scalesType + offsetType + " -> " + result + "\n";
}

/// `head` followed by the inputs of `packed`, in order.
std::vector<std::pair<Vec, std::vector<int>>>
withPacked(std::vector<std::pair<Vec, std::vector<int>>> head,
           std::initializer_list<const Packed *> packed) {
  for (const Packed *p : packed) {
    for (auto &input : p->inputs()) {
      head.push_back(std::move(input));
    }
  }
  return head;
}

/// Inputs on the grid: each block's quantization is exact.
Vec gridInputs(int rows, int K, uint32_t seed) {
  Vec x = randomValues(rows * K, seed, -127.49f, 127.49f);
  for (int i = 0; i < rows * K; ++i) {
    x[i] = std::round(x[i]) / 16.0f;
    if (i % 32 == 0) {
      x[i] = (i / 32) % 2 ? 127.0f / 16.0f : -127.0f / 16.0f;
    }
  }
  return x;
}

/// The most an int8 projection of `x` by `w` ([N, K]) may differ from the
/// f32 product: half a quantization step of every input, times |w|.
Vec quantizationBound(const Vec &x, const Vec &w, int T, int K, int N) {
  Vec bound(T * N);
  for (int t = 0; t < T; ++t) {
    std::vector<double> step(K / 32);
    for (int b = 0; b < K / 32; ++b) {
      double amax = 0;
      for (int i = 0; i < 32; ++i) {
        amax = std::max(amax, std::abs(double(x[t * K + b * 32 + i])));
      }
      step[b] = amax / 127.0;
    }
    for (int n = 0; n < N; ++n) {
      double sum = 0;
      for (int k = 0; k < K; ++k) {
        sum += std::abs(double(w[n * K + k])) * step[k / 32] / 2;
      }
      bound[t * N + n] = float(sum * 1.0001 + 1e-5);
    }
  }
  return bound;
}

/// What f32 rounding may add to a product of `x` by `w` ([N, K]) whose
/// terms cancel: a few ulps of sum_k |x[k] w[n,k]|.
Vec roundingBound(const Vec &x, const Vec &w, int T, int K, int N) {
  Vec bound(T * N);
  for (int t = 0; t < T; ++t) {
    for (int n = 0; n < N; ++n) {
      double sum = 0;
      for (int k = 0; k < K; ++k) {
        sum += std::abs(double(x[t * K + k]) * w[n * K + k]);
      }
      bound[t * N + n] = float(sum * 1e-6 + 1e-6);
    }
  }
  return bound;
}

void expectWithin(const Vec &got, const Vec &want, const Vec &bound,
                  const std::string &what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_LE(std::abs(double(got[i]) - want[i]), bound[i])
        << what << " at " << i << ": got " << got[i] << ", want " << want[i];
  }
}

/// The int8 linear of packed `p` ([N, K]) under every schedule, against the
/// f32 reference on grid inputs (exact up to the block scales' rounding)
/// and, with `noisy`, on random ones (within the inputs' quantization).
void checkInt8Linear(const Packed &p, int N, int K, int group, uint32_t seed,
                     bool noisy) {
  std::string w = "tensor<" + std::to_string(N) + "x" + std::to_string(K) +
                  "xf32>",
              x = "tensor<Tx" + std::to_string(K) + "xf32>",
              y = "tensor<Tx" + std::to_string(N) + "xf32>";
  for (auto [t, T] : kSchedules) {
    Kernel k(withTokens(
        "moe.kernel @k(%x: " + x + ", " + packedArgs(p, "w", group) + ") -> " +
            y + " {\n" + dequantize(p, "w", w) +
            "  %y = moe.linear %x, %w int8_activations(32) : " + x + ", " + w +
            " -> " + y + "\n  moe.yield %y : " + y + "\n}\n",
        t));
    std::string what = p.attrs + (p.asymmetric ? " offsets" : "") + " T=" + t +
                       std::to_string(T);
    Vec grid = gridInputs(T, K, seed);
    std::vector<Vec> out = k.run(withPacked({{grid, {T, K}}}, {&p}), T);
    ASSERT_EQ(out.size(), 1u) << what;
    expectWithin(out[0], ref::linear(grid, p.weights, nullptr, T, K, N),
                 roundingBound(grid, p.weights, T, K, N), "grid " + what);
    if (noisy) {
      Vec random = randomValues(T * K, seed + 1, -3, 3);
      out = k.run(withPacked({{random, {T, K}}}, {&p}), T);
      expectWithin(out[0], ref::linear(random, p.weights, nullptr, T, K, N),
                   quantizationBound(random, p.weights, T, K, N),
                   "random " + what);
    }
  }
}

TEST(Int8Dot, ProjectionEveryFormatAndPacking) {
  const int N = 37, K = 128;
  for (const Format &format : kFormats) {
    for (int group : {0, 32, 64}) {
      // Slot orders and offset codes with group 32 only: they change how
      // the codes are read, not how the scales apply.
      // Asymmetric codes (offsets) with every format and grouping, in the
      // default slot order.
      for (int variant = 0; variant < 5; ++variant) {
        bool lowFirst = variant == 1 || variant == 3;
        bool offset = variant == 2 || variant == 3;
        bool asymmetric = variant == 4;
        if ((format.bits == 1 && offset) ||
            (group != 32 && (lowFirst || offset))) {
          continue;
        }
        Packed p = makePacked(format, 1, N, K, group, lowFirst, offset,
                              /*half=*/group == 32, 71 + group, asymmetric);
        checkInt8Linear(p, N, K, group, 72, /*noisy=*/true);
      }
    }
  }
}

/// Codes in panels of one vector of rows (as AssignWeightLayouts stores
/// them), over several panels and tiles, symmetric and asymmetric.
TEST(Int8Dot, ProjectionInPanels) {
  const int lanes = testTarget().floatLanes();
  const int N = 6 * lanes, K = 96;
  for (const Format &format : kFormats) {
    if (K % (dotBytes() * 8 / format.bits) != 0) {
      continue;
    }
    for (int group : {0, 32}) {
      for (bool asymmetric : {false, true}) {
        Packed p = makePacked(format, 1, N, K, group, false, false, true,
                              171 + group, asymmetric, lanes);
        checkInt8Linear(p, N, K, group, 172, /*noisy=*/false);
      }
    }
  }
}

/// Codes in dot blocks and panels read as plain weights (what a tied
/// embedding's lookup does with the head's codes), for every format,
/// across stacked matrices, with and without panels.
TEST(Int8Dot, DequantizeDotBlocksInPanels) {
  const int lanes = testTarget().floatLanes();
  const int E = 2, N = 3 * lanes, K = 64;
  for (const Format &format : kFormats) {
    for (int panels : {0, lanes}) {
      Packed p = makePacked(format, E, N, K, 32, false, false, true,
                            181 + panels, /*asymmetric=*/true, panels);
      std::string w = "tensor<2x" + std::to_string(N) + "x64xf32>";
      Kernel k("moe.kernel @k(" + packedArgs(p, "w", 32) + ") -> " + w +
               " {\n" + dequantize(p, "w", w) + "  moe.yield %w : " + w +
               "\n}\n");
      std::vector<Vec> out = k.run(withPacked({}, {&p}), 1);
      ASSERT_EQ(out.size(), 1u) << p.attrs;
      expectClose(out[0], p.weights, 1e-6, "dequantize " + p.attrs);
    }
  }
}

/// The logits (bias, scale) and a head projection ([T, 2, 64] in, [T, 3, 5]
/// out), and a zero input block (its scale is 0, not NaN).
TEST(Int8Dot, LogitsAndHeadProjections) {
  const int N = 15, K = 128;
  Packed p = makePacked(kFormats[2], 1, N, K, 32, false, false, true, 81);
  for (auto [t, T] : kSchedules) {
    Kernel k(withTokens(
        "moe.kernel @k(%x: tensor<Tx128xf32>, %h: tensor<Tx2x64xf32>, " +
            packedArgs(p, "w", 32) +
            ", %b: tensor<15xf32>) -> (tensor<Tx15xf32>, tensor<Tx3x5xf32>) "
            "{\n" +
            dequantize(p, "w", "tensor<15x128xf32>") +
            "  %l = moe.logits %x, %w bias %b int8_activations(32) "
            "{scale = 0.5 : f64} : tensor<Tx128xf32>, tensor<15x128xf32>, "
            "tensor<15xf32> -> tensor<Tx15xf32>\n"
            "  %y = moe.linear %h, %w int8_activations(32) : "
            "tensor<Tx2x64xf32>, tensor<15x128xf32> -> tensor<Tx3x5xf32>\n"
            "  moe.yield %l, %y : tensor<Tx15xf32>, tensor<Tx3x5xf32>\n}\n",
        t));
    Vec x = gridInputs(T, K, 82), h = gridInputs(T, K, 83);
    for (int i = 32; i < 64; ++i) {
      x[i] = 0; // the second block of token 0
    }
    Vec bias = randomValues(N, 84);
    std::vector<Vec> out = k.run({{x, {T, K}},
                                  {h, {T, 2, 64}},
                                  {p.stored, p.codesShape},
                                  {p.scales, p.scalesShape},
                                  {bias, {N}}},
                                 T);
    ASSERT_EQ(out.size(), 2u);
    std::string what = std::string("T=") + t + std::to_string(T);
    Vec bound = roundingBound(x, p.weights, T, K, N);
    for (float &b : bound) {
      b *= 0.5f;
    }
    expectWithin(out[0], ref::linear(x, p.weights, &bias, T, K, N, 0.5), bound,
                 "logits " + what);
    expectWithin(out[1], ref::linear(h, p.weights, nullptr, T, K, N),
                 roundingBound(h, p.weights, T, K, N), "heads " + what);
  }
}

/// Experts: 5 of 64 hidden units over 96 features, 2 per token, gated
/// (SwiGLU) and not (ReLU), gathered and grouped. The token inputs are on
/// the grid; the hidden activations are quantized as they come, so the
/// result may differ from the f32 experts by the down projection's bound.
void checkInt8Experts(const std::string &strategy,
                      const std::vector<std::pair<std::string, int>> &runs) {
  const int E = 5, F = 64, D = 96, K = 2;
  // Gate and down in panels of a vector of rows, as AssignWeightLayouts
  // stores them; up without.
  const int panels = testTarget().floatLanes();
  Packed g = makePacked(kFormats[0], E, F, D, 0, false, false, false, 91, false,
                        panels);
  // Up has asymmetric codes: offsets beside its group scales.
  Packed u = makePacked(kFormats[2], E, F, D, 32, false, false, true, 92, true);
  Packed dn =
      makePacked(kFormats[3], E, D, F, 32, true, true, true, 93, false, panels);
  for (auto [t, T] : runs) {
    std::string ir =
        "moe.kernel @k(%x: tensor<Tx96xf32>, %i: tensor<Tx2xi32>, %r: "
        "tensor<Tx2xf32>, " +
        packedArgs(g, "g", 0) + ", " + packedArgs(u, "u", 32) + ", " +
        packedArgs(dn, "d", 32) +
        ") -> (tensor<Tx96xf32>, tensor<Tx96xf32>) {\n" +
        dequantize(g, "g", "tensor<5x64x96xf32>") +
        dequantize(u, "u", "tensor<5x64x96xf32>") +
        dequantize(dn, "d", "tensor<5x96x64xf32>") +
        "  %0 = moe.expert_dispatch %x, experts(%i, %r) gate %g up %u down %d "
        "activation(silu) strategy(" +
        strategy +
        ") int8_activations(32) : (tensor<Tx96xf32>, tensor<Tx2xi32>, "
        "tensor<Tx2xf32>, tensor<5x64x96xf32>, tensor<5x64x96xf32>, "
        "tensor<5x96x64xf32>) -> tensor<Tx96xf32>\n"
        "  %1 = moe.expert_dispatch %x, experts(%i, %r) up %u down %d "
        "activation(relu) strategy(" +
        strategy +
        ") int8_activations(32) : (tensor<Tx96xf32>, tensor<Tx2xi32>, "
        "tensor<Tx2xf32>, tensor<5x64x96xf32>, tensor<5x96x64xf32>) -> "
        "tensor<Tx96xf32>\n"
        "  moe.yield %0, %1 : tensor<Tx96xf32>, tensor<Tx96xf32>\n}\n";
    Kernel k(withTokens(ir, t));
    Vec x = gridInputs(T, D, 94), w = randomValues(T * K, 95, 0, 1);
    Vec idx;
    for (int tok = 0; tok < T; ++tok) {
      idx.push_back(float((tok * 2 + 1) % E));
      idx.push_back(float((tok * 3 + 4) % E));
    }
    std::vector<Vec> out = k.run(
        withPacked({{x, {T, D}}, {idx, {T, K}}, {w, {T, K}}}, {&g, &u, &dn}),
        T);
    ASSERT_EQ(out.size(), 2u);
    for (int gated = 1; gated >= 0; --gated) {
      Vec want(T * D, 0), bound(T * D, 1e-4f);
      for (int tok = 0; tok < T; ++tok) {
        for (int j = 0; j < K; ++j) {
          int e = int(idx[tok * K + j]);
          Vec xt(x.begin() + tok * D, x.begin() + (tok + 1) * D);
          Vec ge(g.weights.begin() + e * F * D,
                 g.weights.begin() + (e + 1) * F * D);
          Vec ue(u.weights.begin() + e * F * D,
                 u.weights.begin() + (e + 1) * F * D);
          Vec de(dn.weights.begin() + e * D * F,
                 dn.weights.begin() + (e + 1) * D * F);
          Vec gp = ref::linear(xt, ge, nullptr, 1, D, F);
          Vec up = ref::linear(xt, ue, nullptr, 1, D, F);
          Vec hidden(F);
          for (int f = 0; f < F; ++f) {
            hidden[f] = gated ? float(ref::activate(0, gp[f]) * up[f])
                              : float(ref::activate(2, up[f]));
          }
          Vec y = ref::linear(hidden, de, nullptr, 1, F, D);
          Vec b = quantizationBound(hidden, de, 1, F, D);
          for (int o = 0; o < D; ++o) {
            want[tok * D + o] += w[tok * K + j] * y[o];
            bound[tok * D + o] += w[tok * K + j] * b[o] * 1.001f;
          }
        }
      }
      expectWithin(out[gated ? 0 : 1], want, bound,
                   strategy + (gated ? " gated" : " relu") + " T=" + t +
                       std::to_string(T));
    }
  }
}

TEST(Int8Dot, ExpertDispatchGather) { checkInt8Experts("gather", kSchedules); }

TEST(Int8Dot, ExpertDispatchGrouped) {
  checkInt8Experts("grouped", {{"?", 5}, {"?", 1}, {"?", 17}});
}

/// The instructions the schedules are for, in the assembly `moec compile`
/// makes for each target: VNNI's `vpdpbusd` on 512-bit registers, and
/// never an instruction of AVX512-FP16 or a VEX-encoded (AVX-VNNI) dot
/// product, which AMD Zen 4 lacks although Halide's avx512_sapphirerapids
/// allows them; NEON's `sdot`; `pmaddwd` where there is no dot product.
TEST(Int8Dot, DotProductInstructions) {
  const std::pair<const char *, const char *> expected[] = {
      {"x86-64-avx512-vnni", "vpdpbusd\\s.*%zmm"},
      {"aarch64-dotprod", "sdot\\s+v[0-9]+\\.4s"},
      {"x86-64-avx2", "vpmaddwd\\s.*%ymm"},
      {"x86-64-avx512", "vpmaddwd\\s.*%zmm"}};
  for (auto [target, instruction] : expected) {
    auto description = lookupTarget(target);
    ASSERT_TRUE(bool(description)) << target;
    int dot = description->int8Dot.dotBytes;
    for (auto [t, T] : kSchedules) {
      std::string codes = "tensor<4096xui8>", scales = "tensor<64x4xf16>";
      Kernel k(withTokens("moe.kernel @k(%x: tensor<Tx128xf32>, %c: " + codes +
                              " {moe.layout = "
                              "#moe.weight_layout<transposed>}, %s: " +
                              scales +
                              " {moe.layout = "
                              "#moe.weight_layout<transposed>}) -> "
                              "tensor<Tx64xf32> {\n"
                              "  %w = moe.dequantize %c, %s format(int4) "
                              "cols(128) group(32) dot(" +
                              std::to_string(dot) + ") : " + codes + ", " +
                              scales +
                              " -> tensor<64x128xf32>\n"
                              "  %y = moe.linear %x, %w int8_activations(32) "
                              ": tensor<Tx128xf32>, tensor<64x128xf32> -> "
                              "tensor<Tx64xf32>\n"
                              "  moe.yield %y : tensor<Tx64xf32>\n}\n",
                          t),
               target);
      std::string assembly = k.assembly();
      std::string what = std::string(target) + " T=" + t;
      EXPECT_TRUE(std::regex_search(assembly, std::regex(instruction))) << what;
      EXPECT_EQ(assembly.find("{vex}"), std::string::npos) << what;
      EXPECT_FALSE(std::regex_search(
          assembly, std::regex("\\bv[a-z0-9]*(ph|sh|psx|phx)\\s")))
          << "an AVX512-FP16 instruction: " << what;
    }
  }
}

} // namespace
