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

/// Squared error of `group` values with codes `q` and scale `d`.
double groupError(const float *w, const int *q, int64_t n, double d) {
  double error = 0;
  for (int64_t i = 0; i < n; ++i) {
    double e = w[i] - d * q[i];
    error += e * e;
  }
  return error;
}

/// Codes of `n` values for scale `d` (0: all zero), in [qmin, qmax].
void roundCodes(const float *w, int64_t n, double d, int qmin, int qmax,
                int *q) {
  for (int64_t i = 0; i < n; ++i) {
    q[i] = d == 0 ? 0
                  : std::clamp(static_cast<int>(std::lround(w[i] / d)), qmin,
                               qmax);
  }
}

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
  // The extreme value lands exactly on qmin, so the range is used from
  // both ends: its sign decides which end has the extra code.
  double best = extreme / static_cast<double>(qmin);
  roundCodes(w, n, best, qmin, qmax, q);
  if (bits > 4 || extreme == 0) {
    return best;
  }
  double bestError = groupError(w, q, n, best);
  for (int step = -10; step <= 10; ++step) {
    if (step == 0) {
      continue;
    }
    double d = extreme / (qmin + 0.1 * step);
    roundCodes(w, n, d, qmin, qmax, trial);
    // For fixed codes the best scale is sum(w q) / sum(q^2).
    double wq = 0, qq = 0;
    for (int64_t i = 0; i < n; ++i) {
      wq += static_cast<double>(w[i]) * trial[i];
      qq += static_cast<double>(trial[i]) * trial[i];
    }
    if (qq == 0) {
      continue;
    }
    double refit = wq / qq;
    double error = groupError(w, trial, n, refit);
    if (error < bestError) {
      bestError = error;
      best = refit;
      std::copy(trial, trial + n, q);
    }
  }
  return best;
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

} // namespace

QuantizedMatrices quantizeMatrices(const float *values, int64_t count,
                                   int64_t rows, int64_t cols,
                                   PackedFormat format, int64_t group,
                                   bool halfScales) {
  int bits = static_cast<int>(DequantizeOp::bitsOf(format));
  int64_t groups = DequantizeOp::scalesPerRow(cols, group);
  int64_t bytes = DequantizeOp::codeBytes(format, rows, cols);
  int perByte = 8 / bits;
  QuantizedMatrices out;
  out.codes.assign(count * bytes, 0);
  out.scales.resize(count * rows * groups);

  // Work in chunks of kChunkRows rows of one matrix, on every core. A
  // chunk starts at a multiple of 8 rows, so at a whole byte of codes: no
  // two chunks write one byte. Each chunk sums its own errors and the sums
  // are added in chunk order, so the report does not depend on the number
  // of threads.
  constexpr int64_t kChunkRows = 256;
  int64_t chunksPerMatrix = (rows + kChunkRows - 1) / kChunkRows;
  int64_t chunks = count * chunksPerMatrix;
  std::vector<double> squares(chunks, 0), errors(chunks, 0);
  auto quantizeChunk = [&](int64_t chunk, int *q, int *trial) {
    int64_t m = chunk / chunksPerMatrix;
    int64_t first = chunk % chunksPerMatrix * kChunkRows;
    uint8_t *codes = out.codes.data() + m * bytes;
    for (int64_t r = first; r < std::min(rows, first + kChunkRows); ++r) {
      const float *row = values + (m * rows + r) * cols;
      for (int64_t g = 0; g < groups; ++g) {
        int64_t begin = g * group, n = std::min(group, cols - begin);
        const float *w = row + begin;
        double d = format == PackedFormat::Sign1
                       ? quantizeSignGroup(w, n, q)
                       : quantizeIntGroup(w, n, bits, q, trial);
        float scale = static_cast<float>(d);
        if (halfScales) {
          scale =
              ::moe::frontend::halfToFloat(::moe::frontend::floatToHalf(scale));
        }
        out.scales[(m * rows + r) * groups + g] = scale;
        for (int64_t i = 0; i < n; ++i) {
          double e = w[i] - static_cast<double>(scale) * q[i];
          squares[chunk] += static_cast<double>(w[i]) * w[i];
          errors[chunk] += e * e;
          // Code i of the matrix: slot i % perByte of byte i / perByte,
          // from the most significant end; signs store 1 for +1.
          int64_t index = r * cols + begin + i;
          unsigned raw = format == PackedFormat::Sign1
                             ? (q[i] > 0 ? 1u : 0u)
                             : static_cast<unsigned>(q[i]) & ((1u << bits) - 1);
          int shift = (perByte - 1 - static_cast<int>(index % perByte)) * bits;
          codes[index / perByte] |= static_cast<uint8_t>(raw << shift);
        }
      }
    }
  };
  std::atomic<int64_t> next{0};
  auto worker = [&] {
    std::vector<int> q(group), trial(group);
    for (int64_t chunk = next++; chunk < chunks; chunk = next++) {
      quantizeChunk(chunk, q.data(), trial.data());
    }
  };
  int64_t threads = std::min<int64_t>(
      chunks, std::max(1u, std::thread::hardware_concurrency()));
  std::vector<std::thread> pool;
  for (int64_t t = 1; t < threads; ++t) {
    pool.emplace_back(worker);
  }
  worker();
  for (std::thread &thread : pool) {
    thread.join();
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
