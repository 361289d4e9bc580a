//===- Quantize.cpp - Float matrices into moe.dequantize's codes ----------===//

#include "dialects/MoE/Utils/Quantize.h"

#include "dialects/MoE/IR/MoEOps.h"
#include "frontends/checkpoint/DType.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <thread>
#include <vector>

namespace mlir::moe {

namespace {

/// `w ~ scale * q + offset` (offset 0 for symmetric codes).
struct AffineFit {
  double scale = 0, offset = 0;
};

/// Squared error of `n` values against `scale * q + offset`.
double affineError(const float *w, const int *q, int64_t n, AffineFit f) {
  double error = 0;
  for (int64_t i = 0; i < n; ++i) {
    double e = w[i] - (f.scale * q[i] + f.offset);
    error += e * e;
  }
  return error;
}

/// The least-squares scale (and, when `withOffset`, offset) for fixed
/// codes; nullopt when it is not defined (all codes zero, or all equal
/// with an offset).
std::optional<AffineFit> refit(const float *w, const int *q, int64_t n,
                               bool withOffset) {
  double sq = 0, sqq = 0, sw = 0, sqw = 0;
  for (int64_t i = 0; i < n; ++i) {
    sq += q[i];
    sqq += static_cast<double>(q[i]) * q[i];
    sw += w[i];
    sqw += static_cast<double>(q[i]) * w[i];
  }
  if (!withOffset) {
    return sqq > 0 ? std::optional(AffineFit{sqw / sqq, 0}) : std::nullopt;
  }
  double count = static_cast<double>(n), det = count * sqq - sq * sq;
  if (det <= 0) {
    return std::nullopt;
  }
  double scale = (count * sqw - sq * sw) / det;
  return AffineFit{scale, (sw - scale * sq) / count};
}

/// The candidate of least error among those offered, and its codes.
class BestFit {
public:
  BestFit(const float *w, int64_t n, int *q) : w(w), n(n), q(q) {}

  /// Keeps `fit` with codes `trial` if it beats every earlier offer.
  void offer(AffineFit fit, const int *trial) {
    double e = affineError(w, trial, n, fit);
    if (e < error) {
      error = e;
      best = fit;
      std::copy(trial, trial + n, q);
    }
  }
  AffineFit fit() const { return best; }

private:
  const float *w;
  int64_t n;
  int *q;
  AffineFit best;
  double error = INFINITY;
};

/// The scale and codes of one group of an integer format of `bits`;
/// `trial` is scratch for n codes.
double quantizeIntGroup(const float *w, int64_t n, int bits, int *q,
                        int *trial) {
  int qmin = -(1 << (bits - 1)), qmax = (1 << (bits - 1)) - 1;
  float extreme = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (std::fabs(w[i]) > std::fabs(extreme)) {
      extreme = w[i];
    }
  }
  if (extreme == 0) {
    std::fill(q, q + n, 0);
    return 0;
  }
  // The extreme value lands exactly on qmin, so the range is used from
  // both ends: its sign decides which end has the extra code. For 4 bits
  // and fewer, nearby scales are tried, each refitted for its codes.
  BestFit best(w, n, q);
  auto tryScale = [&](int step) {
    double d = extreme / (qmin + 0.1 * step);
    for (int64_t i = 0; i < n; ++i) {
      trial[i] =
          std::clamp(static_cast<int>(std::lround(w[i] / d)), qmin, qmax);
    }
    if (step == 0) {
      best.offer({d, 0}, trial);
    } else if (std::optional<AffineFit> fit = refit(w, trial, n, false)) {
      best.offer(*fit, trial);
    }
  };
  tryScale(0); // first: it wins ties
  for (int step = -10; step <= 10 && bits <= 4; ++step) {
    if (step != 0) {
      tryScale(step);
    }
  }
  return best.fit().scale;
}

/// Signs (+1 / -1) and the group's mean magnitude.
double quantizeSignGroup(const float *w, int64_t n, int *q) {
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    sum += std::fabs(w[i]);
    q[i] = w[i] >= 0 ? 1 : -1;
  }
  return sum / static_cast<double>(n);
}

/// The scale, offset and codes of one group of an integer format of
/// `bits`, asymmetric: the codes span the group from its least to its
/// largest value. For b <= 4 bits, 20 nearby spans are also tried; every
/// candidate's scale and offset are refitted for its codes.
AffineFit quantizeAffineIntGroup(const float *w, int64_t n, int bits, int *q,
                                 int *trial) {
  int qmin = -(1 << (bits - 1)), qmax = (1 << (bits - 1)) - 1;
  auto [lo, hi] = std::minmax_element(w, w + n);
  double least = *lo, span = static_cast<double>(*hi) - *lo;
  if (span == 0) {
    std::fill(q, q + n, 0);
    return {0, least};
  }
  BestFit best(w, n, q);
  int steps = bits > 4 ? 0 : 10;
  for (int step = -steps; step <= steps; ++step) {
    double d = span / (qmax - qmin + 0.1 * step);
    for (int64_t i = 0; i < n; ++i) {
      trial[i] = std::clamp(
          static_cast<int>(std::lround((w[i] - least) / d)) + qmin, qmin, qmax);
    }
    best.offer(
        refit(w, trial, n, true).value_or(AffineFit{d, least - d * qmin}),
        trial);
  }
  return best.fit();
}

/// Two levels per group, `o - d` and `o + d`: the means of the values on
/// either side of their midpoint (a few Lloyd iterations from the mean).
AffineFit quantizeAffineSignGroup(const float *w, int64_t n, int *q) {
  double threshold = 0;
  for (int64_t i = 0; i < n; ++i) {
    threshold += w[i];
  }
  threshold /= static_cast<double>(n);
  AffineFit fit{0, threshold};
  for (int iteration = 0; iteration < 4; ++iteration) {
    double sums[2] = {0, 0};
    int64_t counts[2] = {0, 0};
    for (int64_t i = 0; i < n; ++i) {
      int side = w[i] >= threshold ? 1 : 0;
      q[i] = side ? 1 : -1;
      sums[side] += w[i];
      ++counts[side];
    }
    if (counts[0] == 0 || counts[1] == 0) {
      std::fill(q, q + n, 1);
      return {0, threshold};
    }
    double low = sums[0] / counts[0], high = sums[1] / counts[1];
    fit = {(high - low) / 2, (high + low) / 2};
    threshold = fit.offset;
  }
  return fit;
}

/// The fit of one group of `n` values: its scale and offset, and in `q`
/// its codes; `trial` is scratch for n codes.
AffineFit fitGroup(const float *w, int64_t n, PackedFormat format, int bits,
                   bool asymmetric, int *q, int *trial) {
  if (asymmetric) {
    return format == PackedFormat::Sign1
               ? quantizeAffineSignGroup(w, n, q)
               : quantizeAffineIntGroup(w, n, bits, q, trial);
  }
  return {format == PackedFormat::Sign1
              ? quantizeSignGroup(w, n, q)
              : quantizeIntGroup(w, n, bits, q, trial),
          0};
}

/// The code of `w` under a fixed fit: the nearest level.
int codeOf(double w, AffineFit fit, PackedFormat format, int bits) {
  if (format == PackedFormat::Sign1) {
    return w >= fit.offset ? 1 : -1;
  }
  if (fit.scale == 0) {
    return 0;
  }
  int qmin = -(1 << (bits - 1)), qmax = (1 << (bits - 1)) - 1;
  return static_cast<int>(std::clamp(std::lround((w - fit.offset) / fit.scale),
                                     static_cast<long>(qmin),
                                     static_cast<long>(qmax)));
}

/// Lower Cholesky factor of the symmetric [n, n] `a` in place (the upper
/// triangle is left as it was); false when `a` is not positive definite.
bool choleskyInPlace(std::vector<double> &a, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    double d = a[j * n + j];
    for (int64_t k = 0; k < j; ++k) {
      d -= a[j * n + k] * a[j * n + k];
    }
    if (!(d > 0)) {
      return false;
    }
    d = std::sqrt(d);
    a[j * n + j] = d;
    for (int64_t i = j + 1; i < n; ++i) {
      double s = a[i * n + j];
      for (int64_t k = 0; k < j; ++k) {
        s -= a[i * n + k] * a[j * n + k];
      }
      a[i * n + j] = s / d;
    }
  }
  return true;
}

/// U, upper triangular with U^T U = (H + lambda I)^-1, row-major [n, n]:
/// what GPTQ's column-by-column error feedback reads; empty when it cannot
/// be computed. lambda is 1% of H's
/// mean diagonal (GPTQ's damping), grown tenfold while H + lambda I is not
/// positive definite; an input never seen (a zero diagonal) counts as 1.
std::vector<double> inverseHessianFactor(const float *h, int64_t n) {
  double meanDiagonal = 0;
  for (int64_t i = 0; i < n; ++i) {
    meanDiagonal += h[i * n + i];
  }
  meanDiagonal = meanDiagonal > 0 ? meanDiagonal / static_cast<double>(n) : 1;
  std::vector<double> l(n * n);
  for (double damp = 0.01;; damp *= 10) {
    for (int64_t i = 0; i < n * n; ++i) {
      l[i] = h[i];
    }
    for (int64_t i = 0; i < n; ++i) {
      if (!(l[i * n + i] > 0)) {
        l[i * n + i] = 1;
      }
      l[i * n + i] += damp * meanDiagonal;
    }
    if (choleskyInPlace(l, n)) {
      break;
    }
  }
  // L^-1 (lower), then (H + lambda I)^-1 = L^-T L^-1.
  std::vector<double> inv(n * n, 0);
  for (int64_t j = 0; j < n; ++j) {
    inv[j * n + j] = 1 / l[j * n + j];
    for (int64_t i = j + 1; i < n; ++i) {
      double s = 0;
      for (int64_t k = j; k < i; ++k) {
        s += l[i * n + k] * inv[k * n + j];
      }
      inv[i * n + j] = -s / l[i * n + i];
    }
  }
  std::vector<double> a(n * n);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j <= i; ++j) {
      double s = 0;
      for (int64_t k = i; k < n; ++k) {
        s += inv[k * n + i] * inv[k * n + j];
      }
      a[i * n + j] = a[j * n + i] = s;
    }
  }
  // Its lower factor M (M M^T = A); U = M^T. The inverse of a positive
  // definite matrix is one, but rounding may say otherwise for an
  // ill-conditioned H: then no factor, and the codes are rounded to nearest.
  if (!choleskyInPlace(a, n)) {
    return {};
  }
  std::vector<double> u(n * n, 0);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j <= i; ++j) {
      u[j * n + i] = a[i * n + j];
    }
  }
  return u;
}

} // namespace

QuantizedMatrices quantizeMatrices(const float *values, int64_t count,
                                   int64_t rows, int64_t cols,
                                   PackedFormat format, int64_t group,
                                   bool halfScales, bool asymmetric,
                                   const float *hessians) {
  int bits = static_cast<int>(DequantizeOp::bitsOf(format));
  int64_t groups = DequantizeOp::scalesPerRow(cols, group);
  int64_t bytes = DequantizeOp::codeBytes(format, rows, cols);
  int perByte = 8 / bits;
  QuantizedMatrices out;
  out.codes.assign(count * bytes, 0);
  out.scales.resize(count * rows * groups);
  if (asymmetric) {
    out.offsets.resize(count * rows * groups);
  }
  auto stored = [&](double value) {
    float v = static_cast<float>(value);
    return halfScales
               ? ::moe::frontend::halfToFloat(::moe::frontend::floatToHalf(v))
               : v;
  };

  // Work in chunks of kChunkRows rows of one matrix, on every core. A
  // chunk starts at a multiple of 8 rows, so at a whole byte of codes: no
  // two chunks write one byte. Each chunk sums its own errors and the sums
  // are added in chunk order, so the report does not depend on the number
  // of threads. With Hessians, the matrices are visited one at a time
  // (each needs its own [cols, cols] factor).
  constexpr int64_t kChunkRows = 256;
  int64_t chunksPerMatrix = (rows + kChunkRows - 1) / kChunkRows;
  int64_t chunks = count * chunksPerMatrix;
  std::vector<double> squares(chunks, 0), errors(chunks, 0);
  // GPTQ's factor of the matrix being visited; empty: round to nearest.
  std::vector<double> factor;
  struct Scratch {
    std::vector<int> q, trial;
    std::vector<float> group;
    std::vector<double> row;
  };
  auto quantizeChunk = [&](int64_t chunk, Scratch &s) {
    int64_t m = chunk / chunksPerMatrix;
    int64_t first = chunk % chunksPerMatrix * kChunkRows;
    uint8_t *codes = out.codes.data() + m * bytes;
    bool feedback = !factor.empty();
    for (int64_t r = first; r < std::min(rows, first + kChunkRows); ++r) {
      const float *row = values + (m * rows + r) * cols;
      // GPTQ: each column's rounding error is spread over the columns not
      // yet quantized, weighted by the inverse Hessian, so the row's output
      // error on the calibration inputs, not its own error, is minimised.
      if (feedback) {
        s.row.assign(row, row + cols);
      }
      for (int64_t g = 0; g < groups; ++g) {
        int64_t begin = g * group, n = std::min(group, cols - begin);
        const float *w = row + begin;
        if (feedback) {
          // The group's fit from its values after the earlier groups'
          // feedback (GPTQ with groups), then its codes column by column.
          for (int64_t i = 0; i < n; ++i) {
            s.group[i] = static_cast<float>(s.row[begin + i]);
          }
        }
        AffineFit fit = fitGroup(feedback ? s.group.data() : w, n, format, bits,
                                 asymmetric, s.q.data(), s.trial.data());
        float scale = stored(fit.scale), offset = stored(fit.offset);
        out.scales[(m * rows + r) * groups + g] = scale;
        if (asymmetric) {
          out.offsets[(m * rows + r) * groups + g] = offset;
        }
        for (int64_t i = 0; feedback && i < n; ++i) {
          int64_t j = begin + i;
          s.q[i] = codeOf(s.row[j], {scale, offset}, format, bits);
          double error =
              (s.row[j] - (static_cast<double>(scale) * s.q[i] + offset)) /
              factor[j * cols + j];
          for (int64_t k = j + 1; k < cols; ++k) {
            s.row[k] -= error * factor[j * cols + k];
          }
        }
        for (int64_t i = 0; i < n; ++i) {
          double e = w[i] - (static_cast<double>(scale) * s.q[i] + offset);
          squares[chunk] += static_cast<double>(w[i]) * w[i];
          errors[chunk] += e * e;
          // Code i of the matrix: slot i % perByte of byte i / perByte,
          // from the most significant end; signs store 1 for +1.
          int64_t index = r * cols + begin + i;
          unsigned raw =
              format == PackedFormat::Sign1
                  ? (s.q[i] > 0 ? 1u : 0u)
                  : static_cast<unsigned>(s.q[i]) & ((1u << bits) - 1);
          int shift = (perByte - 1 - static_cast<int>(index % perByte)) * bits;
          codes[index / perByte] |= static_cast<uint8_t>(raw << shift);
        }
      }
    }
  };
  auto runChunks = [&](int64_t begin, int64_t end) {
    std::atomic<int64_t> next{begin};
    auto worker = [&] {
      Scratch s{std::vector<int>(group),
                std::vector<int>(group),
                std::vector<float>(group),
                {}};
      for (int64_t chunk = next++; chunk < end; chunk = next++) {
        quantizeChunk(chunk, s);
      }
    };
    int64_t threads = std::min<int64_t>(
        end - begin, std::max(1u, std::thread::hardware_concurrency()));
    std::vector<std::thread> pool;
    for (int64_t t = 1; t < threads; ++t) {
      pool.emplace_back(worker);
    }
    worker();
    for (std::thread &thread : pool) {
      thread.join();
    }
  };
  if (hessians) {
    for (int64_t m = 0; m < count; ++m) {
      factor = inverseHessianFactor(hessians + m * cols * cols, cols);
      out.errorFeedback |= !factor.empty();
      runChunks(m * chunksPerMatrix, (m + 1) * chunksPerMatrix);
    }
  } else {
    runChunks(0, chunks);
  }
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    out.sumSquares += squares[chunk];
    out.sumSquaredError += errors[chunk];
  }
  return out;
}

std::vector<uint8_t> transposeCodes(const uint8_t *codes, int64_t count,
                                    int64_t rows, int64_t cols,
                                    PackedFormat format, bool lowBitsFirst,
                                    int64_t lanes, int64_t dot) {
  int bits = static_cast<int>(DequantizeOp::bitsOf(format));
  int perByte = 8 / bits;
  unsigned mask = (1u << bits) - 1;
  std::optional<int64_t> runLanes;
  if (lanes > 0) {
    runLanes = lanes;
  }
  int64_t srcBytes = DequantizeOp::codeBytes(format, rows, cols);
  std::optional<int64_t> dotDepth;
  if (dot > 0) {
    dotDepth = dot;
    runLanes.reset();
  }
  int64_t dstBytes =
      DequantizeOp::codeBytes(format, rows, cols, runLanes, dotDepth);
  auto shiftOf = [&](int64_t slot) {
    return (lowBitsFirst ? slot : perByte - 1 - slot) * bits;
  };
  std::vector<uint8_t> out(count * dstBytes, 0);
  for (int64_t m = 0; m < count; ++m) {
    const uint8_t *src = codes + m * srcBytes;
    uint8_t *dst = out.data() + m * dstBytes;
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) {
        int64_t i = r * cols + c;
        unsigned raw = (src[i / perByte] >> shiftOf(i % perByte)) & mask;
        int64_t j = c * rows + r, byte, slot;
        if (dotDepth) {
          // Blocks of dot * perByte columns; D bytes per row in a block.
          int64_t block = c / (dot * perByte), within = c % (dot * perByte);
          byte = (block * rows + r) * dot + within % dot;
          slot = within / dot;
        } else if (runLanes && perByte > 1) {
          int64_t run = lanes * perByte, within = j % run;
          byte = j / run * lanes + within % lanes;
          slot = within / lanes;
        } else {
          byte = j / perByte;
          slot = j % perByte;
        }
        dst[byte] |= static_cast<uint8_t>(raw << shiftOf(slot));
      }
    }
  }
  return out;
}

} // namespace mlir::moe
