//===- Reference.h - Naive references of the CPU kernels --------*- C++ -*-===//
//
// The test oracles: each op written as plainly as possible, in double
// precision, on row-major tensors. Never used by compiled models.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_TEST_TARGETS_CPU_KERNELS_REFERENCE_H
#define MOE_TEST_TARGETS_CPU_KERNELS_REFERENCE_H

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace moe::reference {

using Vec = std::vector<float>;

/// y[t, n] = sum_k x[t, k] w[n, k] (+ b[n]), times scale.
inline Vec linear(const Vec &x, const Vec &w, const Vec *b, int T, int K, int N,
                  double scale = 1.0) {
  Vec y(T * N);
  for (int t = 0; t < T; ++t) {
    for (int n = 0; n < N; ++n) {
      double acc = b ? (*b)[n] : 0.0;
      for (int k = 0; k < K; ++k) {
        acc += double(x[t * K + k]) * w[n * K + k];
      }
      y[t * N + n] = float(acc * scale);
    }
  }
  return y;
}

/// RMS norm of each row of `rows` x `width`; weight indexed by row % groups.
inline Vec rmsNorm(const Vec &x, const Vec &w, int rows, int width, int groups,
                   double eps) {
  Vec y(x.size());
  for (int r = 0; r < rows; ++r) {
    double ss = 0;
    for (int i = 0; i < width; ++i) {
      ss += double(x[r * width + i]) * x[r * width + i];
    }
    double inv = 1.0 / std::sqrt(ss / width + eps);
    int g = r % groups;
    for (int i = 0; i < width; ++i) {
      y[r * width + i] = float(x[r * width + i] * inv * w[g * width + i]);
    }
  }
  return y;
}

inline Vec layerNorm(const Vec &x, const Vec *w, const Vec *b, int rows,
                     int width, double eps) {
  Vec y(x.size());
  for (int r = 0; r < rows; ++r) {
    double mean = 0, var = 0;
    for (int i = 0; i < width; ++i) {
      mean += x[r * width + i];
    }
    mean /= width;
    for (int i = 0; i < width; ++i) {
      double d = x[r * width + i] - mean;
      var += d * d;
    }
    var /= width;
    for (int i = 0; i < width; ++i) {
      double v = (x[r * width + i] - mean) / std::sqrt(var + eps);
      if (w) {
        v *= (*w)[i];
      }
      if (b) {
        v += (*b)[i];
      }
      y[r * width + i] = float(v);
    }
  }
  return y;
}

/// RoPE on x [T, H, D], rotating the first `dims` of each head.
inline Vec rope(const Vec &x, int T, int H, int D, int dims, double theta,
                bool interleaved, int position) {
  Vec y = x;
  int half = dims / 2;
  for (int t = 0; t < T; ++t) {
    for (int h = 0; h < H; ++h) {
      const float *in = &x[(t * H + h) * D];
      float *out = &y[(t * H + h) * D];
      for (int j = 0; j < half; ++j) {
        double angle = double(position + t) *
                       double(float(1.0 / std::pow(theta, 2.0 * j / dims)));
        double c = std::cos(angle), s = std::sin(angle);
        int a = interleaved ? 2 * j : j;
        int b = interleaved ? 2 * j + 1 : j + half;
        out[a] = float(in[a] * c - in[b] * s);
        out[b] = float(in[b] * c + in[a] * s);
      }
    }
  }
  return y;
}

inline double activate(int kind, double x) {
  switch (kind) {
  case 0: // silu
    return x / (1 + std::exp(-x));
  case 1: // gelu (tanh)
    return 0.5 * x *
           (1 + std::tanh(std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
  default: // relu
    return std::max(x, 0.0);
  }
}

/// Causal GQA attention of q [T, Hq, D] over keys/values [P, Hkv, D] where
/// query t sees positions 0 .. position + t.
inline Vec attention(const Vec &q, const Vec &k, const Vec &v, int T, int Hq,
                     int Hkv, int D, int position, double scale) {
  Vec out(T * Hq * D);
  int group = Hq / Hkv;
  for (int t = 0; t < T; ++t) {
    for (int h = 0; h < Hq; ++h) {
      int kh = h / group;
      int visible = position + t + 1;
      std::vector<double> s(visible);
      double best = -1e300;
      for (int p = 0; p < visible; ++p) {
        double dot = 0;
        for (int d = 0; d < D; ++d) {
          dot += double(q[(t * Hq + h) * D + d]) * k[(p * Hkv + kh) * D + d];
        }
        s[p] = dot * scale;
        best = std::max(best, s[p]);
      }
      double total = 0;
      for (double &e : s) {
        e = std::exp(e - best);
        total += e;
      }
      for (int d = 0; d < D; ++d) {
        double acc = 0;
        for (int p = 0; p < visible; ++p) {
          acc += s[p] * v[(p * Hkv + kh) * D + d];
        }
        out[(t * Hq + h) * D + d] = float(acc / total);
      }
    }
  }
  return out;
}

} // namespace moe::reference

#endif // MOE_TEST_TARGETS_CPU_KERNELS_REFERENCE_H
