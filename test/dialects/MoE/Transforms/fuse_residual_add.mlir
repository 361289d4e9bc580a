// RUN: moe-opt %s --split-input-file --moe-fuse-residual-add | FileCheck %s

// CHECK-LABEL: func.func @residual
// CHECK-SAME: (%[[X:[a-z0-9]+]]: tensor<?x8xf32>
// CHECK: %[[R:.+]] = moe.fused "projection_residual" -> (tensor<?x8xf32>) {
// CHECK:   %[[P:.+]] = moe.linear
// CHECK:   %[[S:.+]] = arith.addf %[[X]], %[[P]]
// CHECK:   moe.yield %[[S]]
// CHECK: return %[[R]]
func.func @residual(%x: tensor<?x8xf32>, %o: tensor<?x8xf32>, %w: tensor<8x8xf32>) -> tensor<?x8xf32> {
  %p = moe.linear %o, %w : tensor<?x8xf32>, tensor<8x8xf32> -> tensor<?x8xf32>
  %s = arith.addf %x, %p : tensor<?x8xf32>
  return %s : tensor<?x8xf32>
}

// -----

// A chain of additions (routed + shared expert, then the residual) is one group.
// CHECK-LABEL: func.func @chain
// CHECK: moe.fused "projection_residual"
// CHECK:   moe.linear
// CHECK:   arith.addf
// CHECK:   arith.addf
// CHECK:   moe.yield
// CHECK-NOT: arith.addf
func.func @chain(%x: tensor<?x8xf32>, %y: tensor<?x8xf32>, %h: tensor<?x6xf32>, %w: tensor<8x6xf32>) -> tensor<?x8xf32> {
  %p = moe.linear %h, %w : tensor<?x6xf32>, tensor<8x6xf32> -> tensor<?x8xf32>
  %a = arith.addf %y, %p : tensor<?x8xf32>
  %b = arith.addf %x, %a : tensor<?x8xf32>
  return %b : tensor<?x8xf32>
}

// -----

// A projection whose result has another use is left alone.
// CHECK-LABEL: func.func @two_uses
// CHECK-NOT: moe.fused
func.func @two_uses(%x: tensor<?x8xf32>, %w: tensor<8x8xf32>) -> (tensor<?x8xf32>, tensor<?x8xf32>) {
  %p = moe.linear %x, %w : tensor<?x8xf32>, tensor<8x8xf32> -> tensor<?x8xf32>
  %s = arith.addf %x, %p : tensor<?x8xf32>
  return %s, %p : tensor<?x8xf32>, tensor<?x8xf32>
}
