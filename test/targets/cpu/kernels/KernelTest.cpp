//===- KernelTest.cpp - CPU kernels against naive references --------------===//
//
// Each test writes a `moe.kernel` as IR, builds and JIT-runs it through
// KernelHarness.h and compares every output with Reference.h. Sizes are
// awkward on purpose (not multiples of any vector width, 1 where legal),
// and every kernel runs in both its schedules: a dynamic token count
// (matrix-matrix tiles, here with 5 tokens and with 1) and a static single
// token (matrix-vector).
//
//===----------------------------------------------------------------------===//

#include "test/targets/cpu/kernels/KernelHarness.h"

using namespace moe::kernel_test;

namespace {

//===----------------------------------------------------------------------===//

TEST(CpuKernels, Embed) {
  const int V = 7, D = 13;
  Vec table = randomValues(V * D, 1);
  for (auto [t, T] : kSchedules) {
    Kernel k(withTokens(R"(
      moe.kernel @k(%t: tensor<7x13xf32>, %i: tensor<Txi32>) -> tensor<Tx13xf32> {
        %0 = moe.embed %t[%i] {scale = 2.0 : f64} : tensor<7x13xf32>, tensor<Txi32> -> tensor<Tx13xf32>
        moe.yield %0 : tensor<Tx13xf32>
      })",
                        t));
    Vec ids;
    for (int i = 0; i < T; ++i) {
      ids.push_back(float((i * 3) % V));
    }
    std::vector<Vec> out = k.run({{table, {V, D}}, {ids, {T}}}, T);
    ASSERT_EQ(out.size(), 1u);
    Vec want;
    for (int i = 0; i < T; ++i) {
      for (int d = 0; d < D; ++d) {
        want.push_back(2.0f * table[int(ids[i]) * D + d]);
      }
    }
    expectClose(out[0], want, 1e-6, "embed T=" + t);
  }
}

TEST(CpuKernels, RmsNormOverWidthAndHeads) {
  for (auto [t, T] : kSchedules) {
    Kernel k(withTokens(R"(
      moe.kernel @k(%x: tensor<Tx13xf32>, %w: tensor<13xf32>, %h: tensor<Tx3x5xf32>, %hw: tensor<3x5xf32>)
          -> (tensor<Tx13xf32>, tensor<Tx3x5xf32>) {
        %0 = moe.rms_norm %x, %w eps(1.0e-5) : tensor<Tx13xf32>, tensor<13xf32>
        %1 = moe.rms_norm %h, %hw eps(1.0e-6) : tensor<Tx3x5xf32>, tensor<3x5xf32>
        moe.yield %0, %1 : tensor<Tx13xf32>, tensor<Tx3x5xf32>
      })",
                        t));
    Vec x = randomValues(T * 13, 2), w = randomValues(13, 3);
    Vec h = randomValues(T * 15, 4), hw = randomValues(15, 5);
    std::vector<Vec> out =
        k.run({{x, {T, 13}}, {w, {13}}, {h, {T, 3, 5}}, {hw, {3, 5}}}, T);
    ASSERT_EQ(out.size(), 2u);
    expectClose(out[0], ref::rmsNorm(x, w, T, 13, 1, 1e-5), 1e-5, "rms");
    expectClose(out[1], ref::rmsNorm(h, hw, T * 3, 5, 3, 1e-6), 1e-5,
                "rms per head");
  }
}

TEST(CpuKernels, LayerNorm) {
  for (auto [t, T] : kSchedules) {
    Kernel k(withTokens(R"(
      moe.kernel @k(%x: tensor<Tx2x7xf32>, %y: tensor<Tx9xf32>, %w: tensor<9xf32>, %b: tensor<9xf32>)
          -> (tensor<Tx2x7xf32>, tensor<Tx9xf32>) {
        %0 = moe.layer_norm %x eps(1.0e-5) : tensor<Tx2x7xf32>
        %1 = moe.layer_norm %y weight %w bias %b eps(1.0e-5) : tensor<Tx9xf32>, tensor<9xf32>, tensor<9xf32>
        moe.yield %0, %1 : tensor<Tx2x7xf32>, tensor<Tx9xf32>
      })",
                        t));
    Vec x = randomValues(T * 14, 6, -3, 5), y = randomValues(T * 9, 7);
    Vec w = randomValues(9, 8), b = randomValues(9, 9);
    std::vector<Vec> out =
        k.run({{x, {T, 2, 7}}, {y, {T, 9}}, {w, {9}}, {b, {9}}}, T);
    ASSERT_EQ(out.size(), 2u);
    expectClose(out[0], ref::layerNorm(x, nullptr, nullptr, T * 2, 7, 1e-5),
                1e-5, "layer norm");
    expectClose(out[1], ref::layerNorm(y, &w, &b, T, 9, 1e-5), 1e-5,
                "layer norm affine");
  }
}

TEST(CpuKernels, LinearEveryShapeAndLayout) {
  // N = 37 spans several vector tiles with a tail, N = 5 is below one
  // vector, and a [T, 3, 4] result is a head projection.
  for (auto [t, T] : kSchedules) {
    Kernel k(withTokens(R"(
      moe.kernel @k(%x: tensor<Tx13xf32>,
                    %w1: tensor<37x13xf32> {moe.layout = #moe.weight_layout<transposed>},
                    %w2: tensor<5x13xf32> {moe.layout = #moe.weight_layout<transposed>},
                    %w3: tensor<12x13xf32> {moe.layout = #moe.weight_layout<transposed>},
                    %b: tensor<5xf32>,
                    %w4: tensor<5x13xf32>)
          -> (tensor<Tx37xf32>, tensor<Tx5xf32>, tensor<Tx3x4xf32>, tensor<Tx5xf32>) {
        %0 = moe.linear %x, %w1 : tensor<Tx13xf32>, tensor<37x13xf32> -> tensor<Tx37xf32>
        %1 = moe.linear %x, %w2 bias %b : tensor<Tx13xf32>, tensor<5x13xf32>, tensor<5xf32> -> tensor<Tx5xf32>
        %2 = moe.linear %x, %w3 : tensor<Tx13xf32>, tensor<12x13xf32> -> tensor<Tx3x4xf32>
        %3 = moe.linear %x, %w4 : tensor<Tx13xf32>, tensor<5x13xf32> -> tensor<Tx5xf32>
        moe.yield %0, %1, %2, %3 : tensor<Tx37xf32>, tensor<Tx5xf32>, tensor<Tx3x4xf32>, tensor<Tx5xf32>
      })",
                        t));
    Vec x = randomValues(T * 13, 10);
    Vec w1 = randomValues(37 * 13, 11), w2 = randomValues(5 * 13, 12);
    Vec w3 = randomValues(12 * 13, 13), b = randomValues(5, 14);
    Vec w4 = randomValues(5 * 13, 15);
    std::vector<Vec> out = k.run({{x, {T, 13}},
                                  {transposed(w1, 1, 37, 13), {13, 37}},
                                  {transposed(w2, 1, 5, 13), {13, 5}},
                                  {transposed(w3, 1, 12, 13), {13, 12}},
                                  {b, {5}},
                                  {w4, {5, 13}}},
                                 T);
    ASSERT_EQ(out.size(), 4u);
    expectClose(out[0], ref::linear(x, w1, nullptr, T, 13, 37), 1e-5, "N=37");
    expectClose(out[1], ref::linear(x, w2, &b, T, 13, 5), 1e-5, "N=5 bias");
    expectClose(out[2], ref::linear(x, w3, nullptr, T, 13, 12), 1e-5, "heads");
    expectClose(out[3], ref::linear(x, w4, nullptr, T, 13, 5), 1e-5,
                "row-major");
  }
}

TEST(CpuKernels, LinearFromPanels) {
  // Weights in panels of P features ([N / P, K, P]): three panels of the
  // target's tile, K = 13, and a head projection; then panels narrower
  // than the tile (8), where one tile reads several panels.
  for (int P : {targetPanel(), 8}) {
    int N = 3 * P;
    for (auto [t, T] : kSchedules) {
      std::string ir = R"(
        moe.kernel @k(%x: tensor<Tx13xf32>, %w: tensor<NNx13xf32> ATTRS,
                      %b: tensor<NNxf32>)
            -> (tensor<Tx3xPPxf32>, tensor<TxNNxf32>) {
          %0 = moe.linear %x, %w : tensor<Tx13xf32>, tensor<NNx13xf32> -> tensor<Tx3xPPxf32>
          %1 = moe.linear %x, %w bias %b : tensor<Tx13xf32>, tensor<NNx13xf32>, tensor<NNxf32> -> tensor<TxNNxf32>
          moe.yield %0, %1 : tensor<Tx3xPPxf32>, tensor<TxNNxf32>
        })";
      ir = std::regex_replace(ir, std::regex("NN"), std::to_string(N));
      ir = std::regex_replace(ir, std::regex("PP"), std::to_string(P));
      ir = std::regex_replace(ir, std::regex("ATTRS"), panelAttrs(P));
      Kernel k(withTokens(ir, t));
      Vec x = randomValues(T * 13, 50), w = randomValues(N * 13, 51);
      Vec b = randomValues(N, 52);
      std::vector<Vec> out = k.run(
          {{x, {T, 13}}, {panels(w, 1, N, 13, P), {N / P, 13, P}}, {b, {N}}},
          T);
      ASSERT_EQ(out.size(), 2u);
      std::string what = "P=" + std::to_string(P) + " T=" + t;
      expectClose(out[0], ref::linear(x, w, nullptr, T, 13, N), 1e-5,
                  "heads " + what);
      expectClose(out[1], ref::linear(x, w, &b, T, 13, N), 1e-5,
                  "bias " + what);
    }
  }
}

TEST(CpuKernels, LongReductions) {
  // K = 300: a GPU schedule splits one token's reductions of at least 256
  // into chunks of 32 (rfactor; here with a tail), so the chunks' partial
  // sums and their reduction are checked too.
  for (auto [t, T] : kSchedules) {
    Kernel k(withTokens(R"(
      moe.kernel @k(%x: tensor<Tx300xf32>, %g: tensor<300xf32>,
                    %w: tensor<37x300xf32> {moe.layout = #moe.weight_layout<transposed>})
          -> (tensor<Tx300xf32>, tensor<Tx37xf32>) {
        %0 = moe.rms_norm %x, %g eps(1.0e-5) : tensor<Tx300xf32>, tensor<300xf32>
        %1 = moe.linear %0, %w : tensor<Tx300xf32>, tensor<37x300xf32> -> tensor<Tx37xf32>
        moe.yield %0, %1 : tensor<Tx300xf32>, tensor<Tx37xf32>
      })",
                        t));
    Vec x = randomValues(T * 300, 40), g = randomValues(300, 41);
    Vec w = randomValues(37 * 300, 42);
    std::vector<Vec> out = k.run(
        {{x, {T, 300}}, {g, {300}}, {transposed(w, 1, 37, 300), {300, 37}}}, T);
    ASSERT_EQ(out.size(), 2u);
    const char *target = std::getenv("MOE_KERNEL_TEST_TARGET");
    if (target && std::string(target) == "cuda") {
      // Halide names the partial sums of a split reduction <func>_intm.
      EXPECT_EQ(k.statement().find("_intm") != std::string::npos, t == "1")
          << "T=" << t;
    }
    Vec normed = ref::rmsNorm(x, g, T, 300, 1, 1e-5);
    expectClose(out[0], normed, 1e-5, "rms over 300");
    expectClose(out[1], ref::linear(normed, w, nullptr, T, 300, 37), 1e-4,
                "K=300");
  }
}

TEST(CpuKernels, LinearOfHeads) {
  // The output projection reads [T, H, D] as [T, H*D].
  for (auto [t, T] : kSchedules) {
    Kernel k(withTokens(R"(
      moe.kernel @k(%x: tensor<Tx3x5xf32>, %w: tensor<7x15xf32> {moe.layout = #moe.weight_layout<transposed>})
          -> tensor<Tx7xf32> {
        %0 = moe.linear %x, %w : tensor<Tx3x5xf32>, tensor<7x15xf32> -> tensor<Tx7xf32>
        moe.yield %0 : tensor<Tx7xf32>
      })",
                        t));
    Vec x = randomValues(T * 15, 16), w = randomValues(7 * 15, 17);
    std::vector<Vec> out =
        k.run({{x, {T, 3, 5}}, {transposed(w, 1, 7, 15), {15, 7}}}, T);
    ASSERT_EQ(out.size(), 1u);
    expectClose(out[0], ref::linear(x, w, nullptr, T, 15, 7), 1e-5, "heads in");
  }
}

TEST(CpuKernels, LogitsWithBiasAndScale) {
  for (auto [t, T] : kSchedules) {
    Kernel k(withTokens(R"(
      moe.kernel @k(%x: tensor<Tx9xf32>, %w: tensor<23x9xf32> {moe.layout = #moe.weight_layout<transposed>}, %b: tensor<23xf32>)
          -> tensor<Tx23xf32> {
        %0 = moe.logits %x, %w bias %b {scale = 0.75 : f64} : tensor<Tx9xf32>, tensor<23x9xf32>, tensor<23xf32> -> tensor<Tx23xf32>
        moe.yield %0 : tensor<Tx23xf32>
      })",
                        t));
    Vec x = randomValues(T * 9, 18), w = randomValues(23 * 9, 19);
    Vec b = randomValues(23, 20);
    std::vector<Vec> out =
        k.run({{x, {T, 9}}, {transposed(w, 1, 23, 9), {9, 23}}, {b, {23}}}, T);
    ASSERT_EQ(out.size(), 1u);
    expectClose(out[0], ref::linear(x, w, &b, T, 9, 23, 0.75), 1e-5, "logits");
  }
}

TEST(CpuKernels, RopeBothLayoutsAndHeadScale) {
  const int H = 3, D = 10;
  for (auto [t, T] : kSchedules) {
    Kernel k(withTokens(R"(
      moe.kernel @k(%x: tensor<Tx3x10xf32>, %p: index, %s: tensor<3x1xf32>, %s2: tensor<3xf32>)
          -> (tensor<Tx3x10xf32>, tensor<Tx3x10xf32>, tensor<Tx3x10xf32>) {
        %0 = moe.rope %x at %p layout(interleaved) dims(6) theta(10000.0) : tensor<Tx3x10xf32>
        %1 = moe.rope %x at %p layout(half_split) dims(10) theta(500.0) : tensor<Tx3x10xf32>
        %2 = moe.head_scale %x, %s : tensor<Tx3x10xf32>, tensor<3x1xf32>
        %3 = moe.head_scale %2, %s2 : tensor<Tx3x10xf32>, tensor<3xf32>
        moe.yield %0, %1, %3 : tensor<Tx3x10xf32>, tensor<Tx3x10xf32>, tensor<Tx3x10xf32>
      })",
                        t));
    Vec x = randomValues(T * H * D, 21), s = randomValues(3, 22);
    Vec s2 = randomValues(3, 23);
    const int position = 37;
    std::vector<Vec> out =
        k.run({{x, {T, H, D}}, {s, {3, 1}}, {s2, {3}}}, T, position);
    ASSERT_EQ(out.size(), 3u);
    expectClose(out[0], ref::rope(x, T, H, D, 6, 10000.0, true, position), 1e-5,
                "interleaved");
    expectClose(out[1], ref::rope(x, T, H, D, 10, 500.0, false, position), 1e-5,
                "half split");
    Vec scaled(x.size());
    for (size_t i = 0; i < x.size(); ++i) {
      int h = (i / D) % H;
      scaled[i] = x[i] * s[h] * s2[h];
    }
    expectClose(out[2], scaled, 1e-6, "head scale");
  }
}

TEST(CpuKernels, GluAndAdd) {
  for (auto [t, T] : kSchedules) {
    Kernel k(withTokens(R"(
      moe.kernel @k(%g: tensor<Tx11xf32>, %u: tensor<Tx11xf32>)
          -> (tensor<Tx11xf32>, tensor<Tx11xf32>, tensor<Tx11xf32>, tensor<Tx11xf32>) {
        %0 = moe.glu %g, %u activation(silu) : tensor<Tx11xf32>
        %1 = moe.glu %g, %u activation(gelu_tanh) : tensor<Tx11xf32>
        %2 = moe.glu %g, %u activation(relu) : tensor<Tx11xf32>
        %3 = arith.addf %g, %u : tensor<Tx11xf32>
        moe.yield %0, %1, %2, %3 : tensor<Tx11xf32>, tensor<Tx11xf32>, tensor<Tx11xf32>, tensor<Tx11xf32>
      })",
                        t));
    Vec g = randomValues(T * 11, 24, -4, 4), u = randomValues(T * 11, 25);
    std::vector<Vec> out = k.run({{g, {T, 11}}, {u, {T, 11}}}, T);
    ASSERT_EQ(out.size(), 4u);
    for (int kind = 0; kind < 3; ++kind) {
      Vec want(g.size());
      for (size_t i = 0; i < g.size(); ++i) {
        want[i] = float(ref::activate(kind, g[i]) * u[i]);
      }
      expectClose(out[kind], want, 1e-5, "activation " + std::to_string(kind));
    }
    Vec sum(g.size());
    for (size_t i = 0; i < g.size(); ++i) {
      sum[i] = g[i] + u[i];
    }
    expectClose(out[3], sum, 0, "add");
  }
}

TEST(CpuKernels, CacheWriteThenAttention) {
  // GQA 6 query heads over 2 KV heads of 6 dims; 5 tokens written at
  // position 3 of an 11-position cache whose first 3 positions hold
  // earlier tokens, then each query attends causally.
  const int Hq = 6, Hkv = 2, D = 6, capacity = 11;
  for (auto [t, T] : kSchedules) {
    const int position = 3;
    Kernel write(withTokens(R"(
      moe.kernel @k(%k: tensor<Tx2x6xf32>, %v: tensor<Tx2x6xf32>, %p: index,
                    %c: !moe.kv_cache<layers = 1, kv_heads = 2, head_dim = 6, element = f32> {moe.cache_access = "write"}) {
        moe.kv_cache_write %k, %v into(%c[0]) at %p : tensor<Tx2x6xf32>, tensor<Tx2x6xf32>, !moe.kv_cache<layers = 1, kv_heads = 2, head_dim = 6, element = f32>
        moe.yield
      })",
                            t));
    Kernel attend(withTokens(R"(
      moe.kernel @k(%q: tensor<Tx6x6xf32>, %c: !moe.kv_cache<layers = 1, kv_heads = 2, head_dim = 6, element = f32> {moe.cache_access = "read"}, %p: index)
          -> tensor<Tx6x6xf32> {
        %0 = moe.cached_attention %q cache(%c[0]) at %p scale(0.4) : tensor<Tx6x6xf32>, !moe.kv_cache<layers = 1, kv_heads = 2, head_dim = 6, element = f32> -> tensor<Tx6x6xf32>
        moe.yield %0 : tensor<Tx6x6xf32>
      })",
                             t));
    Kernel::Cache cache{capacity, Hkv, D, Vec(Hkv * capacity * D, NAN),
                        Vec(Hkv * capacity * D, NAN)};
    // Earlier positions; later ones stay NaN, which attention must not read.
    Vec pastK = randomValues(position * Hkv * D, 26);
    Vec pastV = randomValues(position * Hkv * D, 27);
    for (int p = 0; p < position; ++p) {
      for (int h = 0; h < Hkv; ++h) {
        for (int d = 0; d < D; ++d) {
          cache.keys[(h * capacity + p) * D + d] = pastK[(p * Hkv + h) * D + d];
          cache.values[(h * capacity + p) * D + d] =
              pastV[(p * Hkv + h) * D + d];
        }
      }
    }
    Vec k = randomValues(T * Hkv * D, 28), v = randomValues(T * Hkv * D, 29);
    write.run({{k, {T, Hkv, D}}, {v, {T, Hkv, D}}}, T, position, &cache);
    Vec q = randomValues(T * Hq * D, 30, -2, 2);
    std::vector<Vec> out = attend.run({{q, {T, Hq, D}}}, T, position, &cache);
    ASSERT_EQ(out.size(), 1u);
    Vec allK = pastK, allV = pastV;
    allK.insert(allK.end(), k.begin(), k.end());
    allV.insert(allV.end(), v.begin(), v.end());
    expectClose(out[0],
                ref::attention(q, allK, allV, T, Hq, Hkv, D, position, 0.4),
                2e-5, "attention T=" + t);
  }
}

/// Dequantizes random codes of a stack of 3 matrices [5, 12] (60 codes:
/// not a whole number of bytes per row below 8 bits) with every format and
/// packing option, per-row and in groups of 5 columns (the last group of a
/// row is short), and compares with unpacking by hand, code by code.
TEST(CpuKernels, DequantizeEveryPacking) {
  const int E = 3, N = 5, K = 12;
  const std::pair<const char *, int> formats[] = {
      {"sign1", 1}, {"int2", 2}, {"int4", 4}, {"int8", 8}};
  for (auto [format, bits] : formats) {
    for (int group : {0, 5}) {
      for (bool lowFirst : {false, true}) {
        for (bool offset : {false, true}) {
          if (bits == 1 && offset) {
            continue;
          }
          int B = (N * K * bits + 7) / 8,
              G = group ? (K + group - 1) / group : 1;
          std::string attrs =
              std::string(format) + ") cols(12)" + (group ? " group(5)" : "") +
              (lowFirst || offset ? " {" : "") +
              (lowFirst ? "low_bits_first" : "") +
              (lowFirst && offset ? ", " : "") +
              (offset ? "offset_binary" : "") + (lowFirst || offset ? "}" : "");
          std::string bytes = "tensor<3x" + std::to_string(B) + "xui8>";
          std::string scales = group
                                   ? "tensor<3x5x" + std::to_string(G) + "xf32>"
                                   : std::string("tensor<3x5xf32>");
          Kernel kernel("moe.kernel @k(%c: " + bytes + ", %s: " + scales +
                        ") -> tensor<3x5x12xf32> {\n"
                        "  %0 = moe.dequantize %c, %s format(" +
                        attrs + " : " + bytes + ", " + scales +
                        " -> tensor<3x5x12xf32>\n"
                        "  moe.yield %0 : tensor<3x5x12xf32>\n}\n");
          Vec codes = randomValues(E * B, 51, 0, 255.99f);
          for (float &c : codes) {
            c = std::floor(c);
          }
          Vec scale = randomValues(E * N * G, 52, 0.1f, 2.0f);
          std::vector<int> scaleShape{E, N};
          if (group) {
            scaleShape.push_back(G);
          }
          std::vector<Vec> out =
              kernel.run({{codes, {E, B}}, {scale, scaleShape}}, 1);
          ASSERT_EQ(out.size(), 1u);
          Vec want = decodePacked(codes, scale, E, N, K, bits, group, lowFirst,
                                  offset);
          expectClose(out[0], want, 0, "dequantize " + attrs);
        }
      }
    }
  }
}

/// The CPU layout of packed weights: codes rearranged by transposeCodes
/// (column by column, in runs of `lanes` bytes) and group scales stored
/// transposed read as the same weights as the default order, for every
/// format, slot order and run width, at sizes where runs cross rows and
/// matrices (N = 5) and where they align (N = 32).
TEST(CpuKernels, DequantizeTransposedCodesInRuns) {
  const int E = 3, K = 12;
  const std::tuple<const char *, PackedFormat, int> formats[] = {
      {"sign1", PackedFormat::Sign1, 1},
      {"int2", PackedFormat::Int2, 2},
      {"int4", PackedFormat::Int4, 4},
      {"int8", PackedFormat::Int8, 8}};
  for (auto [format, packed, bits] : formats) {
    for (int N : {5, 32}) {
      for (int group : {0, 5}) {
        for (bool lowFirst : {false, true}) {
          for (int lanes : {0, 4, 16}) {
            // Offsets (asymmetric codes) are stored as the scales are.
            bool asymmetric = group && !lowFirst;
            int B = (N * K * bits + 7) / 8,
                G = group ? (K + group - 1) / group : 1;
            Vec codes = randomValues(E * B, 53, 0, 255.99f);
            std::vector<uint8_t> bytes(codes.size());
            for (size_t i = 0; i < codes.size(); ++i) {
              codes[i] = std::floor(codes[i]);
              bytes[i] = uint8_t(codes[i]);
            }
            std::vector<uint8_t> stored =
                transposeCodes(bytes.data(), E, N, K, packed, lowFirst, lanes);
            int S = int(stored.size()) / E;
            Vec scale = randomValues(E * N * G, 54, 0.1f, 2.0f);
            Vec offsets = randomValues(E * N * G, 55, -1.0f, 1.0f);
            std::string n = std::to_string(N), g = std::to_string(G);
            std::string codesType = "tensor<3x" + std::to_string(S) + "xui8>";
            std::string scaleType = group ? "tensor<3x" + n + "x" + g + "xf32>"
                                          : "tensor<3x" + n + "xf32>";
            std::string attrs =
                std::string(format) + ") cols(12)" +
                (group ? " group(5)" : "") + " transposed" +
                (lanes ? " lanes(" + std::to_string(lanes) + ")" : "") +
                (lowFirst ? " {low_bits_first}" : "");
            std::string scaleLayout =
                group ? " {moe.layout = #moe.weight_layout<transposed>}" : "";
            Kernel kernel(
                "moe.kernel @k(%c: " + codesType +
                " {moe.layout = #moe.weight_layout<transposed>}, %s: " +
                scaleType + scaleLayout +
                (asymmetric ? ", %o: " + scaleType + scaleLayout : "") +
                ") -> tensor<3x" + n +
                "x12xf32> {\n"
                "  %0 = moe.dequantize %c, %s" +
                (asymmetric ? " offset(%o)" : "") + " format(" + attrs + " : " +
                codesType + ", " + scaleType +
                (asymmetric ? ", " + scaleType : "") + " -> tensor<3x" + n +
                "x12xf32>\n  moe.yield %0 : tensor<3x" + n + "x12xf32>\n}\n");
            // Group scales go in stored ([E, G, N]) order.
            Vec storedScale = group ? transposed(scale, E, N, G) : scale;
            std::vector<int> scaleShape =
                group ? std::vector<int>{E, G, N} : std::vector<int>{E, N};
            std::vector<std::pair<Vec, std::vector<int>>> inputs{
                {Vec(stored.begin(), stored.end()), {E, S}},
                {storedScale, scaleShape}};
            if (asymmetric) {
              inputs.push_back({transposed(offsets, E, N, G), scaleShape});
            }
            std::vector<Vec> out = kernel.run(inputs, 1);
            ASSERT_EQ(out.size(), 1u) << attrs;
            expectClose(
                out[0],
                decodePacked(codes, scale, E, N, K, bits, group, lowFirst,
                             false, asymmetric ? &offsets : nullptr),
                asymmetric ? 1e-6 : 0, "transposed " + attrs + " N=" + n);
          }
        }
      }
    }
  }
}

/// Transposed codes with groups read their scales, and offsets, in stored
/// [E, G, N] order: a kernel whose scales or offsets are not marked stored
/// so is refused with an error naming moe.layout, never built wrong.
TEST(CpuKernels, TransposedGroupCodesNeedTransposedScalesAndOffsets) {
  const char *transposedLayout =
      " {moe.layout = #moe.weight_layout<transposed>}";
  for (bool offsetOnly : {false, true}) {
    std::string scaleLayout = offsetOnly ? transposedLayout : "";
    std::string ir =
        "moe.kernel @k(%c: tensor<1x30xui8>" + std::string(transposedLayout) +
        ", %s: tensor<1x5x3xf32>" + scaleLayout +
        ", %o: tensor<1x5x3xf32>) -> tensor<1x5x12xf32> {\n"
        "  %0 = moe.dequantize %c, %s offset(%o) format(int4) cols(12) "
        "group(5) transposed : tensor<1x30xui8>, tensor<1x5x3xf32>, "
        "tensor<1x5x3xf32> -> tensor<1x5x12xf32>\n"
        "  moe.yield %0 : tensor<1x5x12xf32>\n}\n";
    DialectRegistry registry;
    registerAllDialects(registry);
    MLIRContext context(registry);
    context.loadAllAvailableDialects();
    OwningOpRef<ModuleOp> module = parseSourceString<ModuleOp>(ir, &context);
    ASSERT_TRUE(module) << ir;
    std::string message;
    ScopedDiagnosticHandler handler(&context, [&](Diagnostic &diag) {
      message += diag.str();
      return success();
    });
    auto target = lookupTarget("host");
    ASSERT_TRUE(bool(target));
    EXPECT_TRUE(failed(
        cpu::buildKernel(*module->getOps<KernelOp>().begin(), *target, {})))
        << (offsetOnly ? "offsets" : "scales") << " not transposed";
    EXPECT_NE(message.find("transposed codes whose group scales or offsets "
                           "are not stored transposed (moe.layout)"),
              std::string::npos)
        << message;
  }
}

/// moec --quant: the quantizer's codes and scales, read back by the
/// kernels, give the weights whose error the quantizer reports, within the
/// bound of the format; a projection of them matches the naive product at
/// awkward sizes (N = 37, K = 45: neither a multiple of the vector width
/// nor of the group) in every schedule. Group K is one scale per row, which
/// the projection applies once per row sum instead of once per code.
TEST(CpuKernels, QuantizedProjectionOfTheQuantizersCodes) {
  const int N = 37, K = 45;
  struct Case {
    const char *format;
    PackedFormat packed;
    int bits;
    double bound; // relative error of uniform weights
  };
  const Case cases[] = {{"int8", PackedFormat::Int8, 8, 0.01},
                        {"int4", PackedFormat::Int4, 4, 0.12},
                        {"int2", PackedFormat::Int2, 2, 0.5},
                        {"sign1", PackedFormat::Sign1, 1, 0.6}};
  Vec w = randomValues(N * K, 61);
  for (const Case &c : cases) {
    for (int group : {32, 7, K}) {
      for (bool asymmetric : {false, true}) {
        QuantizedMatrices q = quantizeMatrices(w.data(), 1, N, K, c.packed,
                                               group, false, asymmetric);
        Vec codes(q.codes.begin(), q.codes.end());
        Vec scales(q.scales.begin(), q.scales.end());
        Vec offsets(q.offsets.begin(), q.offsets.end());
        Vec decoded = decodePacked(codes, scales, 1, N, K, c.bits, group, false,
                                   false, asymmetric ? &offsets : nullptr);
        double error = 0, norm = 0;
        for (int i = 0; i < N * K; ++i) {
          error += (double(w[i]) - decoded[i]) * (double(w[i]) - decoded[i]);
          norm += double(w[i]) * w[i];
        }
        std::string what = std::string(c.format) + (asymmetric ? "a" : "") +
                           " group " + std::to_string(group);
        EXPECT_NEAR(std::sqrt(error / norm),
                    std::sqrt(q.sumSquaredError / q.sumSquares), 1e-6)
            << what;
        EXPECT_LT(std::sqrt(error / norm), c.bound) << what;

        int B = int(q.codes.size()), G = (K + group - 1) / group;
        bool perRow = group == K;
        std::string scaleType =
            perRow ? "tensor<37xf32>"
                   : "tensor<37x" + std::to_string(G) + "xf32>";
        std::vector<int> scaleShape =
            perRow ? std::vector<int>{N} : std::vector<int>{N, G};
        std::string types = "tensor<" + std::to_string(B) + "xui8>, " +
                            scaleType + (asymmetric ? ", " + scaleType : "");
        for (auto [t, T] : kSchedules) {
          Kernel k(withTokens(
              "moe.kernel @k(%x: tensor<Tx45xf32>, %c: tensor<" +
                  std::to_string(B) + "xui8>, %s: " + scaleType +
                  (asymmetric ? ", %o: " + scaleType : "") +
                  ") -> tensor<Tx37xf32> {\n"
                  "  %w = moe.dequantize %c, %s" +
                  (asymmetric ? " offset(%o)" : "") + " format(" + c.format +
                  ") cols(45)" +
                  (perRow ? "" : " group(" + std::to_string(group) + ")") +
                  " : " + types +
                  " -> tensor<37x45xf32>\n"
                  "  %y = moe.linear %x, %w : tensor<Tx45xf32>, "
                  "tensor<37x45xf32> -> tensor<Tx37xf32>\n"
                  "  moe.yield %y : tensor<Tx37xf32>\n}\n",
              t));
          Vec x = randomValues(T * K, 62);
          std::vector<std::pair<Vec, std::vector<int>>> inputs{
              {x, {T, K}}, {codes, {B}}, {scales, scaleShape}};
          if (asymmetric) {
            inputs.push_back({offsets, scaleShape});
          }
          std::vector<Vec> out = k.run(inputs, T);
          ASSERT_EQ(out.size(), 1u);
          expectClose(out[0], ref::linear(x, decoded, nullptr, T, K, N), 1e-5,
                      what + " T=" + t);
        }
      }
    }
  }
}

/// Weights not centred on zero (uniform in [0.2, 1.2]) are what offsets are
/// for: symmetric codes must span [-1.2, 1.2], asymmetric ones [0.2, 1.2],
/// so their steps, and errors, are 0.42 as large; every format gains.
TEST(CpuKernels, AsymmetricCodesFitWeightsOffZero) {
  const int N = 16, K = 64;
  Vec w = randomValues(N * K, 63, 0.2f, 1.2f);
  for (PackedFormat format : {PackedFormat::Int8, PackedFormat::Int4,
                              PackedFormat::Int2, PackedFormat::Sign1}) {
    auto relativeError = [&](bool asymmetric) {
      QuantizedMatrices q =
          quantizeMatrices(w.data(), 1, N, K, format, 32, true, asymmetric);
      return std::sqrt(q.sumSquaredError / q.sumSquares);
    };
    double symmetric = relativeError(false), asymmetric = relativeError(true);
    EXPECT_LT(asymmetric, 0.6 * symmetric)
        << stringifyPackedFormat(format).str() << ": " << asymmetric << " vs "
        << symmetric;
  }
}

/// GPTQ (quantizeMatrices with Hessians): on inputs with correlated
/// features of unequal size, the error of the outputs x W^T, which is what
/// the feedback minimises, falls well below round-to-nearest's for every
/// format, symmetric or not, over two matrices each with its own inputs
/// (as stacked experts have); the reported weight error still matches the
/// codes read back.
TEST(CpuKernels, ErrorFeedbackCutsOutputErrorOnCalibrationInputs) {
  const int E = 2, N = 24, K = 70, T = 400;
  Vec w = randomValues(E * N * K, 71);
  // Inputs: 8 random sources mixed into K features, plus a little noise,
  // with feature scales from 0.2 to 3.
  std::vector<Vec> x;
  Vec hessians(E * K * K, 0);
  for (int e = 0; e < E; ++e) {
    Vec sources = randomValues(T * 8, 72 + e),
        mix = randomValues(8 * K, 74 + e);
    Vec noise = randomValues(T * K, 76 + e, -0.1f, 0.1f);
    Vec xe(T * K);
    for (int t = 0; t < T; ++t) {
      for (int k = 0; k < K; ++k) {
        float v = noise[t * K + k];
        for (int j = 0; j < 8; ++j) {
          v += sources[t * 8 + j] * mix[j * K + k];
        }
        xe[t * K + k] = v * (0.2f + 2.8f * k / K);
      }
    }
    for (int t = 0; t < T; ++t) {
      for (int i = 0; i < K; ++i) {
        for (int j = 0; j < K; ++j) {
          hessians[(e * K + i) * K + j] += xe[t * K + i] * xe[t * K + j];
        }
      }
    }
    x.push_back(std::move(xe));
  }
  const struct {
    PackedFormat format;
    int bits;
  } formats[] = {{PackedFormat::Int8, 8},
                 {PackedFormat::Int4, 4},
                 {PackedFormat::Int2, 2},
                 {PackedFormat::Sign1, 1}};
  for (const auto &f : formats) {
    PackedFormat format = f.format;
    int bits = f.bits;
    for (bool asymmetric : {false, true}) {
      auto outputError = [&](const float *h) {
        QuantizedMatrices q = quantizeMatrices(w.data(), E, N, K, format, 32,
                                               true, asymmetric, h);
        Vec codes(q.codes.begin(), q.codes.end());
        Vec scales(q.scales.begin(), q.scales.end());
        Vec offsets(q.offsets.begin(), q.offsets.end());
        Vec decoded = decodePacked(codes, scales, E, N, K, bits, 32, false,
                                   false, asymmetric ? &offsets : nullptr);
        double weightError = 0, error = 0;
        for (int i = 0; i < E * N * K; ++i) {
          weightError += (double(w[i]) - decoded[i]) * (w[i] - decoded[i]);
        }
        EXPECT_NEAR(weightError, q.sumSquaredError, 1e-6 * q.sumSquares);
        for (int e = 0; e < E; ++e) {
          for (int t = 0; t < T; ++t) {
            for (int n = 0; n < N; ++n) {
              double d = 0;
              for (int k = 0; k < K; ++k) {
                int i = (e * N + n) * K + k;
                d += x[e][t * K + k] * (double(w[i]) - decoded[i]);
              }
              error += d * d;
            }
          }
        }
        return error;
      };
      double nearest = outputError(nullptr);
      double feedback = outputError(hessians.data());
      EXPECT_LT(feedback, 0.8 * nearest)
          << stringifyPackedFormat(format).str() << (asymmetric ? "a" : "")
          << ": " << feedback << " vs " << nearest;

      // Factors kept by the caller (weights sharing these Hessians): the
      // first call fills them, the next uses them; both quantize as a
      // call that computes its own.
      QuantizedMatrices own = quantizeMatrices(
          w.data(), E, N, K, format, 32, true, asymmetric, hessians.data());
      std::vector<std::vector<double>> factors;
      for (int call = 0; call < 2; ++call) {
        QuantizedMatrices kept =
            quantizeMatrices(w.data(), E, N, K, format, 32, true, asymmetric,
                             hessians.data(), &factors);
        ASSERT_EQ(factors.size(), size_t(E));
        EXPECT_EQ(kept.codes, own.codes) << "call " << call;
        EXPECT_EQ(kept.scales, own.scales) << "call " << call;
        EXPECT_EQ(kept.offsets, own.offsets) << "call " << call;
        EXPECT_TRUE(kept.errorFeedback);
      }
    }
  }
}

/// Runs a causal convolution of width `K` over 7 channels through a
/// sequence of calls of `lengths` tokens, each a conv kernel reading the
/// state ring then a kernel writing it, and compares every output row with
/// the convolution of the whole sequence with K-1 zero rows of left
/// padding. Single-token calls use the decode (static T = 1) kernels.
void checkCausalConv(int K, const std::vector<int> &lengths) {
  const int C = 7;
  std::string state =
      "!moe.conv_state<layers = 1, channels = 7, width = " + std::to_string(K) +
      ", element = f32>";
  std::string weight = "tensor<7x1x" + std::to_string(K) + "xf32>";
  auto convIr = [&](const std::string &t) {
    return withTokens(
        "moe.kernel @k(%x: tensor<Tx7xf32>, %w: " + weight + ", %s: " + state +
            " {moe.cache_access = \"read\"}, %p: index) -> "
            "tensor<Tx7xf32> {\n"
            "  %0 = moe.cached_conv1d %x, %w state(%s[0]) at %p "
            ": tensor<Tx7xf32>, " +
            weight + ", " + state + "\n  moe.yield %0 : tensor<Tx7xf32>\n}\n",
        t);
  };
  auto writeIr = [&](const std::string &t) {
    return withTokens(
        "moe.kernel @k(%x: tensor<Tx7xf32>, %p: index, %s: " + state +
            " {moe.cache_access = \"write\"}) {\n"
            "  moe.conv_state_write %x into(%s[0]) at %p : "
            "tensor<Tx7xf32>, " +
            state + "\n  moe.yield\n}\n",
        t);
  };
  Kernel convMany(convIr("?")), convOne(convIr("1"));
  Kernel writeMany(writeIr("?")), writeOne(writeIr("1"));
  int total = 0;
  for (int length : lengths) {
    total += length;
  }
  Vec x = randomValues(total * C, 41, -2, 2), w = randomValues(C * K, 42);
  // Never-written slots are NaN: reading one (instead of the zero padding
  // or a saved row) poisons the output.
  Kernel::ConvState ring{C, K - 1, Vec((K - 1) * C, NAN)};
  int position = 0;
  for (int T : lengths) {
    Vec chunk(x.begin() + position * C, x.begin() + (position + T) * C);
    Kernel &conv = T == 1 ? convOne : convMany;
    Kernel &write = T == 1 ? writeOne : writeMany;
    std::vector<Vec> out = conv.run({{chunk, {T, C}}, {w, {C, 1, K}}}, T,
                                    position, nullptr, &ring);
    write.run({{chunk, {T, C}}}, T, position, nullptr, &ring);
    ASSERT_EQ(out.size(), 1u);
    Vec want(T * C);
    for (int t = 0; t < T; ++t) {
      for (int c = 0; c < C; ++c) {
        double sum = 0;
        for (int i = 0; i < K; ++i) {
          int q = position + t - (K - 1) + i;
          sum += q < 0 ? 0.0 : double(w[c * K + i]) * x[q * C + c];
        }
        want[t * C + c] = float(sum);
      }
    }
    expectClose(out[0], want, 1e-5,
                "conv K=" + std::to_string(K) + " at " +
                    std::to_string(position) + ", T=" + std::to_string(T));
    position += T;
  }
}

TEST(CpuKernels, CausalConvCarriesItsStateAcrossCalls) {
  // Width 3 (linnet): prefill, then decode, then chunks of K-1 and more.
  checkCausalConv(3, {5, 1, 1, 2, 1, 4, 1});
  // Width 4: a ring of 3 slots, written partly (T < K-1) and wrapping.
  checkCausalConv(4, {1, 2, 1, 1, 5, 2, 1, 3});
}

/// Routes with options and checks indices and weights against a naive
/// top-k (and, with a capacity factor, a naive capacity rule: per expert,
/// keep the `cap` highest weights, the earlier assignment first on ties).
void checkRoute(const std::string &attrs, bool sigmoid, bool withBias,
                bool biasOnScores, int topK, bool renormalize, double eps,
                double scaling, double capacityFactor = 0) {
  const int E = 5, D = 7;
  std::vector<std::pair<std::string, int>> schedules = kSchedules;
  schedules.push_back({"?", 13});
  for (auto [t, T] : schedules) {
    std::string k = std::to_string(topK);
    std::string ir = R"(
      moe.kernel @k(%x: tensor<Tx7xf32>, %r: tensor<5x7xf32>)";
    ir += withBias ? ", %b: tensor<5xf32>" : "";
    ir += ") -> (tensor<TxKxi32>, tensor<TxKxf32>) {\n";
    ir += "  %i, %w = moe.route %x, %r ";
    ir += withBias ? "bias %b " : "";
    ir += std::string("scoring(") + (sigmoid ? "sigmoid" : "softmax") +
          ") top_k(K) " + attrs + " : tensor<Tx7xf32>, tensor<5x7xf32>";
    ir += withBias ? ", tensor<5xf32>" : "";
    ir += " -> tensor<TxKxi32>, tensor<TxKxf32>\n";
    ir += "  moe.yield %i, %w : tensor<TxKxi32>, tensor<TxKxf32>\n}\n";
    ir = std::regex_replace(ir, std::regex("\\bK\\b"), k);
    ir = std::regex_replace(ir, std::regex("TxK"), "Tx" + k);
    Kernel kernel(withTokens(ir, t));
    Vec x = randomValues(T * D, 31, -2, 2), r = randomValues(E * D, 32);
    Vec b = randomValues(E, 33, -1, 1);
    std::vector<std::pair<Vec, std::vector<int>>> inputs{{x, {T, D}},
                                                         {r, {E, D}}};
    if (withBias) {
      inputs.push_back({b, {E}});
    }
    std::vector<Vec> out = kernel.run(inputs, T);
    ASSERT_EQ(out.size(), 2u);
    std::vector<int> wantExpert(T * topK);
    std::vector<double> wantWeight(T * topK);
    for (int tok = 0; tok < T; ++tok) {
      std::vector<double> logits(E), scores(E), select(E);
      for (int e = 0; e < E; ++e) {
        for (int d = 0; d < D; ++d) {
          logits[e] += double(r[e * D + d]) * x[tok * D + d];
        }
      }
      double peak = *std::max_element(logits.begin(), logits.end()), sum = 0;
      for (int e = 0; e < E; ++e) {
        scores[e] = sigmoid ? 1 / (1 + std::exp(-logits[e]))
                            : std::exp(logits[e] - peak);
        sum += scores[e];
      }
      for (int e = 0; e < E; ++e) {
        if (!sigmoid) {
          scores[e] /= sum;
        }
        select[e] = withBias ? (biasOnScores ? scores[e] : logits[e]) + b[e]
                             : scores[e];
      }
      std::vector<int> order(E);
      for (int e = 0; e < E; ++e) {
        order[e] = e;
      }
      // Descending, the lower index first on ties.
      std::sort(order.begin(), order.end(), [&](int a, int c) {
        return select[a] != select[c] ? select[a] > select[c] : a < c;
      });
      double total = 0;
      for (int j = 0; j < topK; ++j) {
        total += scores[order[j]];
      }
      for (int j = 0; j < topK; ++j) {
        double w = scores[order[j]];
        if (renormalize) {
          w /= total + eps;
        }
        wantExpert[tok * topK + j] = order[j];
        wantWeight[tok * topK + j] = w * scaling;
      }
    }
    int dropped = 0;
    if (capacityFactor > 0) {
      int cap = std::max(1, int(std::ceil(T * topK * capacityFactor / E)));
      for (int e = 0; e < E; ++e) {
        std::vector<int> mine;
        for (int a = 0; a < T * topK; ++a) {
          if (wantExpert[a] == e) {
            mine.push_back(a);
          }
        }
        std::sort(mine.begin(), mine.end(), [&](int a, int c) {
          return wantWeight[a] != wantWeight[c] ? wantWeight[a] > wantWeight[c]
                                                : a < c;
        });
        for (size_t rank = cap; rank < mine.size(); ++rank) {
          wantWeight[mine[rank]] = 0;
          ++dropped;
        }
      }
      // The rule must bind on the longer calls, or this tests nothing.
      if (T == 13) {
        EXPECT_GT(dropped, 0) << attrs;
      }
    }
    for (int a = 0; a < T * topK; ++a) {
      EXPECT_EQ(int(out[0][a]), wantExpert[a]) << attrs << " T=" << t;
      EXPECT_NEAR(out[1][a], wantWeight[a], 1e-5) << attrs << " T=" << T;
    }
  }
}

TEST(CpuKernels, RouteSoftmax) {
  checkRoute("", false, false, false, 2, false, 0, 1);
  checkRoute("{renormalize}", false, false, false, 3, true, 0, 1);
  checkRoute("{scaling = 2.5 : f64}", false, false, false, 1, false, 0, 2.5);
}

TEST(CpuKernels, RouteCapacityDropsTheLowestWeights) {
  // Moonlight's rule (softmax, not renormalised) and a renormalised one.
  checkRoute("{capacity = #moe.capacity_rule<drop_lowest_gate>, "
             "capacity_factor = 6.0e-01 : f64}",
             false, false, false, 2, false, 0, 1, 0.6);
  checkRoute("{renormalize, capacity = #moe.capacity_rule<drop_lowest_gate>, "
             "capacity_factor = 1.0 : f64}",
             false, false, false, 3, true, 0, 1, 1.0);
}

TEST(CpuKernels, RouteSigmoidWithSelectionBias) {
  checkRoute("{renormalize, renorm_eps = 1.0e-9 : f64}", true, true, false, 2,
             true, 1e-9, 1);
  checkRoute("{selection_bias = #moe.selection_bias<scores>}", true, true, true,
             2, false, 0, 1);
}

/// 5 experts of 7 hidden units over 9 features (with `panel`: of 2 x panel
/// hidden units over panel features, weights stored in panels), 2 per
/// token, with and without a gate projection, under `strategy`. `routing`
/// picks the experts of token t.
void checkExpertDispatch(const std::string &strategy,
                         const std::vector<std::pair<std::string, int>> &runs,
                         const std::function<int(int, int)> &routing,
                         int panel = 0) {
  const int E = 5, K = 2;
  const int F = panel ? 2 * panel : 7, D = panel ? panel : 9;
  for (auto [t, T] : runs) {
    std::string ir = R"(
      moe.kernel @k(%x: tensor<TxDDxf32>, %i: tensor<Tx2xi32>, %w: tensor<Tx2xf32>,
                    %g: tensor<5xFFxDDxf32> LAYOUT,
                    %u: tensor<5xFFxDDxf32> LAYOUT,
                    %d: tensor<5xDDxFFxf32> LAYOUT)
          -> (tensor<TxDDxf32>, tensor<TxDDxf32>) {
        %0 = moe.expert_dispatch %x, experts(%i, %w) gate %g up %u down %d activation(silu) strategy(STRATEGY)
            : (tensor<TxDDxf32>, tensor<Tx2xi32>, tensor<Tx2xf32>, tensor<5xFFxDDxf32>, tensor<5xFFxDDxf32>, tensor<5xDDxFFxf32>) -> tensor<TxDDxf32>
        %1 = moe.expert_dispatch %x, experts(%i, %w) up %u down %d activation(relu) strategy(STRATEGY)
            : (tensor<TxDDxf32>, tensor<Tx2xi32>, tensor<Tx2xf32>, tensor<5xFFxDDxf32>, tensor<5xDDxFFxf32>) -> tensor<TxDDxf32>
        moe.yield %0, %1 : tensor<TxDDxf32>, tensor<TxDDxf32>
      })";
    ir = std::regex_replace(ir, std::regex("STRATEGY"), strategy);
    ir = std::regex_replace(ir, std::regex("FF"), std::to_string(F));
    ir = std::regex_replace(ir, std::regex("DD"), std::to_string(D));
    ir = std::regex_replace(
        ir, std::regex("LAYOUT"),
        panel ? panelAttrs(panel)
              : std::string("{moe.layout = #moe.weight_layout<transposed>}"));
    Kernel k(withTokens(ir, t));
    // A grouped dispatch of several tokens sorts them into expert blocks;
    // one token (static) always gathers.
    bool grouped = strategy == "grouped" && t == "?";
    std::string stmt = k.statement();
    EXPECT_EQ(stmt.find("grouped_hidden") != std::string::npos, grouped)
        << strategy << " T=" << t;
    Vec x = randomValues(T * D, 34), w = randomValues(T * K, 35, 0, 1);
    Vec g = randomValues(E * F * D, 36), u = randomValues(E * F * D, 37);
    Vec d = randomValues(E * D * F, 38);
    // [E, rows, cols] as the kernel reads it, with its stored shape.
    auto stored = [&](const Vec &m, int rows,
                      int cols) -> std::pair<Vec, std::vector<int>> {
      if (panel) {
        return {panels(m, E, rows, cols, panel),
                {E, rows / panel, cols, panel}};
      }
      return {transposed(m, E, rows, cols), {E, cols, rows}};
    };
    Vec idx;
    for (int tok = 0; tok < T; ++tok) {
      idx.push_back(float(routing(tok, 0)));
      idx.push_back(float(routing(tok, 1)));
    }
    std::vector<Vec> out = k.run({{x, {T, D}},
                                  {idx, {T, K}},
                                  {w, {T, K}},
                                  stored(g, F, D),
                                  stored(u, F, D),
                                  stored(d, D, F)},
                                 T);
    ASSERT_EQ(out.size(), 2u);
    for (int gated = 1; gated >= 0; --gated) {
      Vec want(T * D, 0);
      for (int tok = 0; tok < T; ++tok) {
        for (int j = 0; j < K; ++j) {
          int e = int(idx[tok * K + j]);
          std::vector<double> hidden(F);
          for (int f = 0; f < F; ++f) {
            double gp = 0, up = 0;
            for (int i = 0; i < D; ++i) {
              gp += double(g[(e * F + f) * D + i]) * x[tok * D + i];
              up += double(u[(e * F + f) * D + i]) * x[tok * D + i];
            }
            hidden[f] =
                gated ? ref::activate(0, gp) * up : ref::activate(2, up);
          }
          for (int o = 0; o < D; ++o) {
            double acc = 0;
            for (int f = 0; f < F; ++f) {
              acc += double(d[(e * D + o) * F + f]) * hidden[f];
            }
            want[tok * D + o] += float(w[tok * K + j] * acc);
          }
        }
      }
      // Sums of 64-128 f32 products (panels) round further from the
      // double reference than those of 7-9.
      expectClose(out[gated ? 0 : 1], want, panel ? 1e-4 : 1e-5,
                  strategy + (gated ? " gated experts" : " relu experts") +
                      " T=" + std::to_string(T));
    }
  }
}

int spreadRouting(int tok, int j) {
  return j == 0 ? (tok * 2 + 1) % 5 : (tok * 3 + 4) % 5;
}

TEST(CpuKernels, ExpertDispatchGather) {
  checkExpertDispatch("gather", kSchedules, spreadRouting);
}

TEST(CpuKernels, ExpertDispatchGrouped) {
  // 17 and 29 tokens put more than one block of rows on some experts.
  checkExpertDispatch("grouped", {{"?", 5}, {"?", 1}, {"?", 17}, {"?", 29}},
                      spreadRouting);
}

TEST(CpuKernels, ExpertDispatchFromPanels) {
  // Both strategies, and each number of tokens, reading panels of the
  // target's tile width, and narrower ones.
  for (int panel : {targetPanel(), 8}) {
    checkExpertDispatch("gather", kSchedules, spreadRouting, panel);
    checkExpertDispatch("grouped", {{"?", 5}, {"?", 17}}, spreadRouting, panel);
  }
}

TEST(CpuKernels, ExpertDispatchGroupedUnevenExperts) {
  // Experts 1 and 3 get nothing, expert 0 gets every token.
  checkExpertDispatch("grouped", {{"?", 13}}, [](int tok, int j) {
    return j == 0 ? 0 : (tok % 3 == 0 ? 4 : 2);
  });
}

TEST(CpuKernels, FusedNormProjectionGroup) {
  // A whole fused group as outlined from a dense layer: the norm is
  // computed once and read by two projections and the activation.
  for (auto [t, T] : kSchedules) {
    Kernel k(withTokens(R"(
      moe.kernel @k(%x: tensor<Tx13xf32>, %n: tensor<13xf32>,
                    %wg: tensor<6x13xf32> {moe.layout = #moe.weight_layout<transposed>},
                    %wu: tensor<6x13xf32> {moe.layout = #moe.weight_layout<transposed>})
          -> (tensor<Tx13xf32>, tensor<Tx6xf32>) {
        %h = moe.rms_norm %x, %n eps(1.0e-6) : tensor<Tx13xf32>, tensor<13xf32>
        %g = moe.linear %h, %wg : tensor<Tx13xf32>, tensor<6x13xf32> -> tensor<Tx6xf32>
        %u = moe.linear %h, %wu : tensor<Tx13xf32>, tensor<6x13xf32> -> tensor<Tx6xf32>
        %a = moe.glu %g, %u activation(silu) : tensor<Tx6xf32>
        moe.yield %h, %a : tensor<Tx13xf32>, tensor<Tx6xf32>
      })",
                        t));
    Vec x = randomValues(T * 13, 39), n = randomValues(13, 40);
    Vec wg = randomValues(6 * 13, 41), wu = randomValues(6 * 13, 42);
    std::vector<Vec> out = k.run({{x, {T, 13}},
                                  {n, {13}},
                                  {transposed(wg, 1, 6, 13), {13, 6}},
                                  {transposed(wu, 1, 6, 13), {13, 6}}},
                                 T);
    ASSERT_EQ(out.size(), 2u);
    Vec h = ref::rmsNorm(x, n, T, 13, 1, 1e-6);
    Vec g = ref::linear(h, wg, nullptr, T, 13, 6);
    Vec u = ref::linear(h, wu, nullptr, T, 13, 6);
    Vec a(g.size());
    for (size_t i = 0; i < a.size(); ++i) {
      a[i] = float(ref::activate(0, g[i]) * u[i]);
    }
    expectClose(out[0], h, 1e-5, "norm");
    expectClose(out[1], a, 1e-5, "gated");
  }
}

} // namespace
