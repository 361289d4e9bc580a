//===- DType.cpp - Element types of checkpoint tensors --------------------===//

#include "frontends/checkpoint/DType.h"

#include "llvm/ADT/StringSwitch.h"

#include <cmath>
#include <cstring>
#include <string>

namespace moe::frontend {

namespace {
struct DTypeRow {
  DType type;
  const char *name;
  unsigned bits;
};
// One row per type; the order is the enum's.
constexpr DTypeRow kDTypes[] = {
    {DType::Bool, "BOOL", 8},      {DType::F4, "F4", 4},
    {DType::F6E2M3, "F6_E2M3", 6}, {DType::F6E3M2, "F6_E3M2", 6},
    {DType::U8, "U8", 8},          {DType::I8, "I8", 8},
    {DType::F8E5M2, "F8_E5M2", 8}, {DType::F8E4M3, "F8_E4M3", 8},
    {DType::F8E8M0, "F8_E8M0", 8}, {DType::I16, "I16", 16},
    {DType::U16, "U16", 16},       {DType::F16, "F16", 16},
    {DType::BF16, "BF16", 16},     {DType::I32, "I32", 32},
    {DType::U32, "U32", 32},       {DType::F32, "F32", 32},
    {DType::C64, "C64", 64},       {DType::F64, "F64", 64},
    {DType::I64, "I64", 64},       {DType::U64, "U64", 64},
};
const DTypeRow &row(DType type) { return kDTypes[static_cast<int>(type)]; }
} // namespace

llvm::StringRef dtypeName(DType type) { return row(type).name; }
unsigned dtypeBits(DType type) { return row(type).bits; }

std::optional<DType> parseDTypeName(llvm::StringRef name) {
  for (const DTypeRow &r : kDTypes) {
    if (name == r.name) {
      return r.type;
    }
  }
  return std::nullopt;
}

std::string allDTypeNames() {
  std::string names;
  for (const DTypeRow &r : kDTypes) {
    if (!names.empty()) {
      names += ", ";
    }
    names += r.name;
  }
  return names;
}

bool isConvertibleToF32(DType type) {
  switch (type) {
  case DType::F16:
  case DType::BF16:
  case DType::F32:
  case DType::F64:
  case DType::F8E4M3:
  case DType::F8E5M2:
    return true;
  default:
    return false;
  }
}

uint16_t floatToHalf(float value) {
  uint32_t x;
  std::memcpy(&x, &value, sizeof(x));
  uint32_t sign = (x >> 16) & 0x8000u;
  uint32_t exponent = (x >> 23) & 0xffu, mantissa = x & 0x7fffffu;
  if (exponent == 0xffu) {
    return static_cast<uint16_t>(sign | 0x7c00u | (mantissa ? 0x200u : 0u));
  }
  int e = static_cast<int>(exponent) - 127 + 15;
  if (e >= 31) {
    return static_cast<uint16_t>(sign | 0x7c00u);
  }
  // Keeps the top bits of `m` above bit `shift`, rounding to nearest even
  // (a carry into the exponent is the right result).
  auto round = [](uint32_t m, int shift) {
    uint32_t kept = m >> shift, rest = m & ((1u << shift) - 1);
    uint32_t half = 1u << (shift - 1);
    return kept + (rest > half || (rest == half && (kept & 1u)) ? 1u : 0u);
  };
  if (e <= 0) {
    if (e < -10) {
      return static_cast<uint16_t>(sign);
    }
    return static_cast<uint16_t>(sign | round(mantissa | 0x800000u, 14 - e));
  }
  return static_cast<uint16_t>(
      sign + ((static_cast<uint32_t>(e) << 10) | (mantissa >> 13)) +
      (round(mantissa, 13) - (mantissa >> 13)));
}

float halfToFloat(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exponent = (h >> 10) & 0x1fu;
  uint32_t mantissa = h & 0x3ffu;
  float magnitude;
  if (exponent == 0) {
    magnitude = std::ldexp(static_cast<float>(mantissa), -24); // subnormal
  } else if (exponent == 31) {
    magnitude = mantissa ? NAN : INFINITY;
  } else {
    magnitude = std::ldexp(static_cast<float>(mantissa | 0x400u),
                           static_cast<int>(exponent) - 25);
  }
  float result = magnitude;
  if (sign) {
    result = -result;
  }
  return result;
}

float bfloat16ToFloat(uint16_t bits) {
  uint32_t word = static_cast<uint32_t>(bits) << 16;
  float result;
  std::memcpy(&result, &word, sizeof(result));
  return result;
}

float f8e4m3ToFloat(uint8_t bits) {
  // 1 sign, 4 exponent (bias 7), 3 mantissa; S.1111.111 is NaN, no inf.
  bool negative = bits & 0x80u;
  unsigned exponent = (bits >> 3) & 0xfu;
  unsigned mantissa = bits & 0x7u;
  float magnitude;
  if (exponent == 0xf && mantissa == 0x7) {
    magnitude = NAN;
  } else if (exponent == 0) {
    magnitude = std::ldexp(static_cast<float>(mantissa), -9);
  } else {
    magnitude = std::ldexp(static_cast<float>(mantissa | 0x8u),
                           static_cast<int>(exponent) - 10);
  }
  return negative ? -magnitude : magnitude;
}

float f8e5m2ToFloat(uint8_t bits) {
  // The upper byte of an IEEE half.
  return halfToFloat(static_cast<uint16_t>(bits) << 8);
}

template <typename T>
static T loadLittleEndian(const uint8_t *p) {
  T value;
  std::memcpy(&value, p, sizeof(T)); // unaligned-safe; hosts are little-endian
  return value;
}

void convertToF32(DType type, const uint8_t *src, size_t count, float *dst) {
  switch (type) {
  case DType::F32:
    std::memcpy(dst, src, count * sizeof(float));
    return;
  case DType::F16:
    for (size_t i = 0; i < count; ++i) {
      dst[i] = halfToFloat(loadLittleEndian<uint16_t>(src + 2 * i));
    }
    return;
  case DType::BF16:
    for (size_t i = 0; i < count; ++i) {
      dst[i] = bfloat16ToFloat(loadLittleEndian<uint16_t>(src + 2 * i));
    }
    return;
  case DType::F64:
    for (size_t i = 0; i < count; ++i) {
      dst[i] = static_cast<float>(loadLittleEndian<double>(src + 8 * i));
    }
    return;
  case DType::F8E4M3:
    for (size_t i = 0; i < count; ++i) {
      dst[i] = f8e4m3ToFloat(src[i]);
    }
    return;
  case DType::F8E5M2:
    for (size_t i = 0; i < count; ++i) {
      dst[i] = f8e5m2ToFloat(src[i]);
    }
    return;
  default:
    // Callers check isConvertibleToF32 and report the dtype by name.
    for (size_t i = 0; i < count; ++i) {
      dst[i] = NAN;
    }
    return;
  }
}

} // namespace moe::frontend
