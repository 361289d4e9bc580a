// RUN: moe-opt %s --moe-plan-weights | FileCheck %s
// RUN: moe-opt %s --moe-plan-weights="alignment=256" | FileCheck %s --check-prefix=ALIGN

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
