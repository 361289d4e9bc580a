//===- DTypeTest.cpp - Element types and their conversion to f32 ----------===//

#include "frontends/checkpoint/DType.h"

#include <cmath>
#include <gtest/gtest.h>

using namespace moe::frontend;

TEST(DType, NamesRoundTrip) {
  for (const char *name :
       {"BOOL",    "F4",      "F6_E2M3", "F6_E3M2", "U8",  "I8",   "F8_E5M2",
        "F8_E4M3", "F8_E8M0", "I16",     "U16",     "F16", "BF16", "I32",
        "U32",     "F32",     "C64",     "F64",     "I64", "U64"}) {
    std::optional<DType> type = parseDTypeName(name);
    ASSERT_TRUE(type.has_value()) << name;
    EXPECT_EQ(dtypeName(*type), name);
  }
  EXPECT_FALSE(parseDTypeName("f32").has_value());
  EXPECT_EQ(dtypeBits(DType::F4), 4u);
  EXPECT_EQ(dtypeBits(DType::C64), 64u);
}

TEST(DType, HalfConversion) {
  EXPECT_EQ(halfToFloat(0x3c00), 1.0f);
  EXPECT_EQ(halfToFloat(0xc000), -2.0f);
  EXPECT_EQ(halfToFloat(0x7bff), 65504.0f);
  EXPECT_EQ(halfToFloat(0x0001), std::ldexp(1.0f, -24)); // smallest subnormal
  EXPECT_TRUE(std::isinf(halfToFloat(0x7c00)));
  EXPECT_TRUE(std::isnan(halfToFloat(0x7e00)));
  EXPECT_EQ(halfToFloat(0x3555), 0.333251953125f);
}

TEST(DType, FloatToHalf) {
  // Every finite half survives the round trip.
  for (uint32_t h = 0; h < 0x10000; ++h) {
    if ((h & 0x7c00u) != 0x7c00u) {
      EXPECT_EQ(floatToHalf(halfToFloat(static_cast<uint16_t>(h))), h) << h;
    }
  }
  // Ties round to even; beyond the range, infinity; tiny, zero.
  EXPECT_EQ(floatToHalf(1.0f + std::ldexp(1.0f, -11)), 0x3c00);
  EXPECT_EQ(floatToHalf(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);
  EXPECT_EQ(floatToHalf(65520.0f), 0x7c00);
  EXPECT_EQ(floatToHalf(-1e6f), 0xfc00);
  EXPECT_EQ(floatToHalf(std::ldexp(1.0f, -26)), 0x0000);
  EXPECT_EQ(floatToHalf(std::ldexp(3.0f, -26)), 0x0001);
  EXPECT_TRUE(std::isnan(halfToFloat(floatToHalf(NAN))));
}

TEST(DType, BFloat16AndFp8) {
  EXPECT_EQ(bfloat16ToFloat(0x3f80), 1.0f);
  EXPECT_EQ(bfloat16ToFloat(0xc0a0), -5.0f);
  EXPECT_EQ(f8e4m3ToFloat(0x38), 1.0f);   // 0.0111.000
  EXPECT_EQ(f8e4m3ToFloat(0x7e), 448.0f); // largest finite
  EXPECT_TRUE(std::isnan(f8e4m3ToFloat(0x7f)));
  EXPECT_EQ(f8e4m3ToFloat(0x01), std::ldexp(1.0f, -9)); // subnormal
  EXPECT_EQ(f8e5m2ToFloat(0x3c), 1.0f);
  EXPECT_EQ(f8e5m2ToFloat(0xc0), -2.0f);
}

TEST(DType, BulkConversionIsUnalignedSafe) {
  // Two F16 values starting at an odd address.
  uint8_t bytes[5] = {0xff, 0x00, 0x3c, 0x00, 0xc0};
  float out[2];
  convertToF32(DType::F16, bytes + 1, 2, out);
  EXPECT_EQ(out[0], 1.0f);
  EXPECT_EQ(out[1], -2.0f);
  EXPECT_TRUE(isConvertibleToF32(DType::BF16));
  EXPECT_FALSE(isConvertibleToF32(DType::I32));
}
