//===- DType.h - Element types of checkpoint tensors ------------*- C++ -*-===//
//
// Every element type a safetensors file (or a torch checkpoint) can declare,
// with its size in bits and a conversion to f32 for the types a model's
// float weights can be stored in.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_FRONTENDS_CHECKPOINT_DTYPE_H
#define MOE_FRONTENDS_CHECKPOINT_DTYPE_H

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/StringRef.h"

#include <cstdint>
#include <optional>
#include <string>

namespace moe::frontend {

/// Element types, named as safetensors names them.
enum class DType : uint8_t {
  Bool,
  F4,     // float4 e2m1 (OCP MX), two per byte
  F6E2M3, // float6 (OCP MX), packed
  F6E3M2, // float6 (OCP MX), packed
  U8,
  I8,
  F8E5M2,
  F8E4M3, // the OCP "fn" variant: no infinities, one NaN pattern
  F8E8M0, // unsigned power-of-two scale (OCP MX)
  I16,
  U16,
  F16,
  BF16,
  I32,
  U32,
  F32,
  C64, // complex64: two f32
  F64,
  I64,
  U64,
};

/// The safetensors spelling, e.g. "BF16", "F8_E4M3".
llvm::StringRef dtypeName(DType type);

/// Parses a safetensors dtype string; std::nullopt if unknown.
std::optional<DType> parseDTypeName(llvm::StringRef name);

/// All names parseDTypeName accepts, for error messages.
std::string allDTypeNames();

/// Size of one element in bits (4 for F4, 6 for F6_*, 64 for C64).
unsigned dtypeBits(DType type);

/// True for the real floating-point types a weight can be read from as f32:
/// F16, BF16, F32, F64, F8_E4M3, F8_E5M2.
bool isConvertibleToF32(DType type);

/// Converts `count` elements of `type` from `src` (little-endian, possibly
/// unaligned) to f32 in `dst`. `type` must satisfy isConvertibleToF32.
void convertToF32(DType type, const uint8_t *src, size_t count, float *dst);

/// Scalar conversions, exposed for tests (and for moec's f16 scales).
float halfToFloat(uint16_t bits);
/// f32 to IEEE binary16, rounding to nearest even; beyond the f16 range,
/// infinity; NaN stays NaN.
uint16_t floatToHalf(float value);
float bfloat16ToFloat(uint16_t bits);
float f8e4m3ToFloat(uint8_t bits);
float f8e5m2ToFloat(uint8_t bits);

} // namespace moe::frontend

#endif // MOE_FRONTENDS_CHECKPOINT_DTYPE_H
