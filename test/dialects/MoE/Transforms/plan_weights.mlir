// RUN: moe-opt %s --split-input-file --moe-plan-weights | FileCheck %s
// RUN: moe-opt %s --split-input-file --moe-plan-weights | FileCheck %s --check-prefix=QUANT
// RUN: moe-opt %s --split-input-file --moe-plan-weights="alignment=256" | FileCheck %s --check-prefix=ALIGN

// Every distinct weight gets one aligned offset; the same tensor read twice
// shares it, the same tensor in another layout is another weight.
// CHECK: module attributes {moe.weights_bytes = 192 : i64}
// CHECK: moe.weight ["a"] {moe.offset = 0 : i64}
// CHECK: moe.weight ["b"] {moe.offset = 64 : i64}
// CHECK: moe.weight ["a"] {moe.offset = 0 : i64}
// CHECK: moe.weight ["a"] layout transposed {moe.offset = 128 : i64}
// ALIGN: moe.weight ["b"] {moe.offset = 256 : i64}
func.func @weights() -> (tensor<2x2xf32>, tensor<3xf32>, tensor<2x2xf32>, tensor<2x2xf32>) {
  %0 = moe.weight ["a"] : tensor<2x2xf32>
  %1 = moe.weight ["b"] : tensor<3xf32>
  %2 = moe.weight ["a"] : tensor<2x2xf32>
  %3 = moe.weight ["a"] layout transposed : tensor<2x2xf32>
  return %0, %1, %2, %3 : tensor<2x2xf32>, tensor<3xf32>, tensor<2x2xf32>, tensor<2x2xf32>
}

// -----

// The scales and the offsets of one asymmetric quantization, and the
// scales of a symmetric one, have one type but are three weights.
// QUANT: module attributes {moe.weights_bytes = 448 : i64}
// QUANT: moe.weight ["w"] quantize(int4, group 32, shape [8, 64]) asymmetric {moe.offset = 0 : i64} : tensor<256xui8>
// QUANT: moe.weight ["w"] quantize(int4, group 32, shape [8, 64]) asymmetric {moe.offset = 256 : i64} : tensor<8x2xf16>
// QUANT: moe.weight ["w"] quantize(int4, group 32, shape [8, 64]) asymmetric offsets {moe.offset = 320 : i64} : tensor<8x2xf16>
// QUANT: moe.weight ["w"] quantize(int4, group 32, shape [8, 64]) {moe.offset = 384 : i64} : tensor<8x2xf16>
func.func @asymmetric() -> (tensor<256xui8>, tensor<8x2xf16>, tensor<8x2xf16>, tensor<8x2xf16>) {
  %c = moe.weight ["w"] quantize(int4, group 32, shape [8, 64]) asymmetric : tensor<256xui8>
  %s = moe.weight ["w"] quantize(int4, group 32, shape [8, 64]) asymmetric : tensor<8x2xf16>
  %o = moe.weight ["w"] quantize(int4, group 32, shape [8, 64]) asymmetric offsets : tensor<8x2xf16>
  %t = moe.weight ["w"] quantize(int4, group 32, shape [8, 64]) : tensor<8x2xf16>
  return %c, %s, %o, %t : tensor<256xui8>, tensor<8x2xf16>, tensor<8x2xf16>, tensor<8x2xf16>
}
