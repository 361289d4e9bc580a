//===- Quantize.h - Float matrices into moe.dequantize's codes --*- C++ -*-===//
//
// The other half of `moe.dequantize`: symmetric codes (row-major, slots
// from the most significant end, two's complement; bit 1 = +1 for signs)
// and one scale per group of columns of a row, so that
// `scale[r, c / G] * code(r, c)` approximates the weight.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_DIALECTS_MOE_UTILS_QUANTIZE_H
#define MOE_DIALECTS_MOE_UTILS_QUANTIZE_H

#include "dialects/MoE/IR/MoEDialect.h"

#include <cstdint>
#include <optional>
#include <vector>

namespace mlir::moe {

struct QuantizedMatrices {
  /// Each matrix's codes, DequantizeOp::codeBytes apart.
  std::vector<uint8_t> codes;
  /// [matrices, rows, ceil(cols / group)].
  std::vector<float> scales;
  /// Asymmetric only: one offset per scale, added after it.
  std::vector<float> offsets;
  /// Sums over all elements of w^2 and (w - dequantized)^2.
  double sumSquares = 0, sumSquaredError = 0;
  /// Codes chosen by GPTQ (for at least one matrix).
  bool errorFeedback = false;
};

/// Quantizes `count` matrices of [rows, cols] (row-major, one after the
/// other in `values`) to `format` with one scale per `group` columns. With
/// `halfScales`, every scale is rounded to the nearest f16 (what the
/// weight file will hold) before the error is measured.
///
/// Integer codes of b bits use the whole range [-2^(b-1), 2^(b-1) - 1]: the
/// largest magnitude of a group maps to -2^(b-1), and for b <= 4 a few
/// nearby scales are tried and refitted by least squares, keeping the one
/// with the smallest error. Signs take the group's mean magnitude, the
/// least-squares scale for fixed signs.
///
/// `asymmetric` adds an offset per group (`scale * code + offset`): integer
/// codes span the group from its least to its largest value (for b <= 4,
/// nearby spans are tried too), each candidate's scale and offset refitted
/// by least squares; signs choose between two levels, the means of the
/// values on either side of their midpoint.
///
/// `hessians`, when given, holds one [cols, cols] matrix per matrix (the
/// sum of x x^T over the inputs x the matrix is multiplied with on a
/// calibration text): codes are then chosen by GPTQ (Frantar et al.,
/// 2022), column by column with each rounding error fed forward into the
/// columns not yet quantized, which minimises the error of the matrix's
/// outputs on those inputs rather than of the weights themselves. Each
/// group's scale (and offset) is fitted as above to its values after the
/// earlier groups' feedback.
///
/// `factors`, when given with `hessians`, keeps what GPTQ derives from each
/// Hessian ([count] upper factors of its damped inverse, the costliest part
/// for short matrices): an empty vector is filled, a filled one is used as
/// it is. Weights that share an input (Q, K and V; gate and up) share their
/// Hessians, so the caller passes the same factors to each.
QuantizedMatrices
quantizeMatrices(const float *values, int64_t count, int64_t rows, int64_t cols,
                 PackedFormat format, int64_t group, bool halfScales = false,
                 bool asymmetric = false, const float *hessians = nullptr,
                 std::vector<std::vector<double>> *factors = nullptr);

/// The codes of `count` [rows, cols] matrices, each in the default order
/// (row-major, slots from the most significant end of a byte, or from the
/// least with `lowBitsFirst`), rearranged into the order a `transposed`
/// moe.dequantize with `lanes` (0: none) reads, or with `dot` > 0 the
/// order of `dot(D)` (in `panels(P)` when `panels` > 0), with the same
/// slot convention. Code values are kept bit for bit.
std::vector<uint8_t> transposeCodes(const uint8_t *codes, int64_t count,
                                    int64_t rows, int64_t cols,
                                    PackedFormat format, bool lowBitsFirst,
                                    int64_t lanes, int64_t dot = 0,
                                    int64_t panels = 0);

} // namespace mlir::moe

#endif // MOE_DIALECTS_MOE_UTILS_QUANTIZE_H
