//===- Quantize.cpp - Float matrices into moe.dequantize's codes ----------===//

#include "dialects/MoE/Utils/Quantize.h"

#include "dialects/MoE/IR/MoEOps.h"
#include "dialects/MoE/Utils/DotBlocks.h"
#include "dialects/MoE/Utils/ParallelFor.h"
#include "frontends/checkpoint/DType.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <functional>
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

/// Sum of x[i] * y[i]: four partial sums, which the compiler keeps in
/// vector registers (one sum would be a chain of dependent adds).
double dot(const double *x, const double *y, int64_t n) {
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    s0 += x[i] * y[i];
    s1 += x[i + 1] * y[i + 1];
    s2 += x[i + 2] * y[i + 2];
    s3 += x[i + 3] * y[i + 3];
  }
  for (; i < n; ++i) {
    s0 += x[i] * y[i];
  }
  return (s0 + s1) + (s2 + s3);
}

/// Lower Cholesky factor of the symmetric [n, n] `a` in place, row by row
/// (each entry a dot product of two rows); the upper triangle is left as
/// it was. False when `a` is not positive definite.
bool choleskyLower(std::vector<double> &a, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    double *ri = a.data() + i * n;
    for (int64_t j = 0; j < i; ++j) {
      const double *rj = a.data() + j * n;
      ri[j] = (ri[j] - dot(ri, rj, j)) / rj[j];
    }
    double d = ri[i] - dot(ri, ri, i);
    if (!(d > 0)) {
      return false;
    }
    ri[i] = std::sqrt(d);
  }
  return true;
}

/// U, upper triangular with U^T U = (H + lambda I)^-1, row-major [n, n]:
/// what GPTQ's column-by-column error feedback reads; empty when it cannot
/// be computed. lambda is 1% of H's mean diagonal (GPTQ's damping), grown
/// tenfold while H + lambda I is not positive definite; an input never
/// seen (a zero diagonal) counts as 1.
///
/// One factorisation: with J reversing the order of rows and columns,
/// J (H + lambda I) J = M M^T gives (H + lambda I)^-1 = J M^-T M^-1 J =
/// U^T U for U = J M^-1 J, upper triangular. (Inverting H and factoring
/// the inverse, as GPTQ's code does, took 5x longer.)
std::vector<double> inverseHessianFactor(const float *h, int64_t n) {
  double meanDiagonal = 0;
  for (int64_t i = 0; i < n; ++i) {
    meanDiagonal += h[i * n + i];
  }
  meanDiagonal = meanDiagonal > 0 ? meanDiagonal / static_cast<double>(n) : 1;
  std::vector<double> m(n * n);
  for (double damp = 0.01;; damp *= 10) {
    if (!std::isfinite(damp * meanDiagonal)) {
      return {};
    }
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        m[i * n + j] = h[(n - 1 - i) * n + (n - 1 - j)];
      }
      double &d = m[i * n + i];
      d = (d > 0 ? d : 1) + damp * meanDiagonal;
    }
    if (choleskyLower(m, n)) {
      break;
    }
  }
  // X = M^-1, row by row: row i is (e_i - sum_{k<i} M[i][k] X[k]) / M[i][i].
  std::vector<double> x(n * n, 0);
  for (int64_t i = 0; i < n; ++i) {
    double *xi = x.data() + i * n;
    const double *mi = m.data() + i * n;
    xi[i] = 1;
    for (int64_t k = 0; k < i; ++k) {
      const double *xk = x.data() + k * n;
      double f = mi[k];
      for (int64_t c = 0; c <= k; ++c) {
        xi[c] -= f * xk[c];
      }
    }
    for (int64_t c = 0; c <= i; ++c) {
      xi[c] /= mi[i];
    }
  }
  std::vector<double> u(n * n, 0);
  for (int64_t a = 0; a < n; ++a) {
    for (int64_t b = a; b < n; ++b) {
      u[a * n + b] = x[(n - 1 - a) * n + (n - 1 - b)];
    }
  }
  return u;
}

} // namespace

QuantizedMatrices quantizeMatrices(const float *values, int64_t count,
                                   int64_t rows, int64_t cols,
                                   PackedFormat format, int64_t group,
                                   bool halfScales, bool asymmetric,
                                   const float *hessians,
                                   std::vector<std::vector<double>> *factors) {
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
  // of threads. With Hessians, matrices are visited a core's worth at a
  // time: their [cols, cols] factors in parallel, then their chunks.
  constexpr int64_t kChunkRows = 256;
  int64_t chunksPerMatrix = (rows + kChunkRows - 1) / kChunkRows;
  int64_t chunks = count * chunksPerMatrix;
  std::vector<double> squares(chunks, 0), errors(chunks, 0);
  struct Scratch {
    std::vector<int> q, trial, codes;
    std::vector<float> group;
    std::vector<double> row;
    std::vector<AffineFit> fits;
  };
  // The fit of group g of `w` (a row), its scale and offset rounded as
  // stored, and its codes into s.codes.
  auto fitStored = [&](const float *w, int64_t g, Scratch &s) {
    int64_t begin = g * group, n = std::min(group, cols - begin);
    AffineFit fit = fitGroup(w + begin, n, format, bits, asymmetric,
                             s.codes.data() + begin, s.trial.data());
    s.fits[g] = {stored(fit.scale), stored(fit.offset)};
  };
  // GPTQ on one row: its columns in order, each rounded with its group's
  // fit and its error spread over the columns not yet rounded, weighted by
  // the inverse Hessian, so that the row's output error on the calibration
  // inputs, not its own error, is minimised. A group is fitted to its
  // weights after the earlier groups' feedback. (GPTQ's act-order, columns
  // by decreasing input energy with every group fitted first, measured
  // worse on the bundled model: see docs/quantization.md.)
  auto feedBack = [&](const float *row, const std::vector<double> &factor,
                      Scratch &s) {
    s.row.assign(row, row + cols);
    for (int64_t j = 0; j < cols; ++j) {
      int64_t g = j / group;
      if (j % group == 0) {
        int64_t n = std::min(group, cols - j);
        for (int64_t i = 0; i < n; ++i) {
          s.group[i] = static_cast<float>(s.row[j + i]);
        }
        AffineFit fit = fitGroup(s.group.data(), n, format, bits, asymmetric,
                                 s.q.data(), s.trial.data());
        s.fits[g] = {stored(fit.scale), stored(fit.offset)};
      }
      AffineFit fit = s.fits[g];
      s.codes[j] = codeOf(s.row[j], fit, format, bits);
      double error = (s.row[j] - (fit.scale * s.codes[j] + fit.offset)) /
                     factor[j * cols + j];
      for (int64_t k = j + 1; k < cols; ++k) {
        s.row[k] -= error * factor[j * cols + k];
      }
    }
  };
  // `factor`: GPTQ's for the chunk's matrix; empty: round to nearest.
  auto quantizeChunk = [&](int64_t chunk, const std::vector<double> &factor) {
    Scratch s{std::vector<int>(group),
              std::vector<int>(group),
              std::vector<int>(cols),
              std::vector<float>(group),
              {},
              std::vector<AffineFit>(groups)};
    int64_t m = chunk / chunksPerMatrix;
    int64_t first = chunk % chunksPerMatrix * kChunkRows;
    uint8_t *codes = out.codes.data() + m * bytes;
    for (int64_t r = first; r < std::min(rows, first + kChunkRows); ++r) {
      const float *row = values + (m * rows + r) * cols;
      if (!factor.empty()) {
        feedBack(row, factor, s);
      } else {
        for (int64_t g = 0; g < groups; ++g) {
          fitStored(row, g, s);
        }
      }
      for (int64_t g = 0; g < groups; ++g) {
        float scale = static_cast<float>(s.fits[g].scale),
              offset = static_cast<float>(s.fits[g].offset);
        out.scales[(m * rows + r) * groups + g] = scale;
        if (asymmetric) {
          out.offsets[(m * rows + r) * groups + g] = offset;
        }
      }
      for (int64_t c = 0; c < cols; ++c) {
        const AffineFit &fit = s.fits[c / group];
        double e = row[c] - (static_cast<float>(fit.scale) *
                                 static_cast<double>(s.codes[c]) +
                             static_cast<float>(fit.offset));
        squares[chunk] += static_cast<double>(row[c]) * row[c];
        errors[chunk] += e * e;
        // Code c of the row: slot c % perByte of byte c / perByte of the
        // matrix, from the most significant end; signs store 1 for +1.
        int64_t index = r * cols + c;
        unsigned raw =
            format == PackedFormat::Sign1
                ? (s.codes[c] > 0 ? 1u : 0u)
                : static_cast<unsigned>(s.codes[c]) & ((1u << bits) - 1);
        int shift = (perByte - 1 - static_cast<int>(index % perByte)) * bits;
        codes[index / perByte] |= static_cast<uint8_t>(raw << shift);
      }
    }
  };
  // GPTQ's [cols, cols] factors: kept by the caller when it passes
  // `factors` (weights sharing these Hessians come next; computed all at
  // once unless it already has them), else computed a core's worth of
  // matrices at a time, so that no more are alive at once. Without
  // Hessians every factor is empty: round to nearest.
  std::vector<std::vector<double>> batchFactors;
  const bool keep = hessians && factors;
  std::vector<std::vector<double>> &batchOf = keep ? *factors : batchFactors;
  const bool have = keep && static_cast<int64_t>(factors->size()) == count;
  int64_t batch =
      hessians && !keep
          ? std::max<int64_t>(1, std::thread::hardware_concurrency())
          : count;
  for (int64_t first = 0; first < count; first += batch) {
    int64_t n = std::min(batch, count - first);
    if (!have) {
      batchOf.assign(n, {});
      if (hessians) {
        parallelFor(n, [&](int64_t i) {
          batchOf[i] =
              inverseHessianFactor(hessians + (first + i) * cols * cols, cols);
        });
      }
    }
    for (const std::vector<double> &factor : batchOf) {
      out.errorFeedback |= !factor.empty();
    }
    parallelFor(n * chunksPerMatrix, [&](int64_t i) {
      quantizeChunk(first * chunksPerMatrix + i, batchOf[i / chunksPerMatrix]);
    });
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
                                    int64_t lanes, int64_t dot,
                                    int64_t panels) {
  assert((panels == 0 || (dot > 0 && rows % panels == 0)) &&
         "panels(P) need dot(D) and P dividing the rows (the verifier's)");
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
          int64_t columns = dot * perByte;
          int64_t block = c / columns, within = c % columns;
          byte = dotBlockByte<int64_t>(block, r, static_cast<int>(rows),
                                       static_cast<int>(cols / columns),
                                       static_cast<int>(dot),
                                       static_cast<int>(panels)) +
                 within % dot;
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
