// RUN: moe-opt %s --split-input-file --moe-fuse-gated-ffn | FileCheck %s

// CHECK-LABEL: func.func @gated
// CHECK: %[[A:.+]] = moe.fused "gated_ffn" -> (tensor<?x6xf32>) {
// CHECK:   %[[G:.+]] = moe.linear
// CHECK:   %[[U:.+]] = moe.linear
// CHECK:   %[[R:.+]] = moe.glu %[[G]], %[[U]] activation(silu)
// CHECK:   moe.yield %[[R]]
// CHECK: moe.linear %[[A]]
func.func @gated(%h: tensor<?x8xf32>, %wg: tensor<6x8xf32>, %wu: tensor<6x8xf32>, %wd: tensor<8x6xf32>) -> tensor<?x8xf32> {
  %g = moe.linear %h, %wg : tensor<?x8xf32>, tensor<6x8xf32> -> tensor<?x6xf32>
  %u = moe.linear %h, %wu : tensor<?x8xf32>, tensor<6x8xf32> -> tensor<?x6xf32>
  %a = moe.glu %g, %u activation(silu) : tensor<?x6xf32>
  %d = moe.linear %a, %wd : tensor<?x6xf32>, tensor<8x6xf32> -> tensor<?x8xf32>
  return %d : tensor<?x8xf32>
}

// -----

// Weights defined between the projections are hoisted above the group.
// CHECK-LABEL: func.func @hoist
// CHECK: moe.weight ["u"]
// CHECK: moe.fused "gated_ffn"
func.func @hoist(%h: tensor<?x8xf32>, %wg: tensor<6x8xf32>) -> tensor<?x6xf32> {
  %g = moe.linear %h, %wg : tensor<?x8xf32>, tensor<6x8xf32> -> tensor<?x6xf32>
  %wu = moe.weight ["u"] : tensor<6x8xf32>
  %u = moe.linear %h, %wu : tensor<?x8xf32>, tensor<6x8xf32> -> tensor<?x6xf32>
  %a = moe.glu %g, %u activation(silu) : tensor<?x6xf32>
  return %a : tensor<?x6xf32>
}

// -----

// Projections of different inputs do not fuse.
// CHECK-LABEL: func.func @different_inputs
// CHECK-NOT: moe.fused
func.func @different_inputs(%h: tensor<?x8xf32>, %h2: tensor<?x8xf32>, %w: tensor<6x8xf32>) -> tensor<?x6xf32> {
  %g = moe.linear %h, %w : tensor<?x8xf32>, tensor<6x8xf32> -> tensor<?x6xf32>
  %u = moe.linear %h2, %w : tensor<?x8xf32>, tensor<6x8xf32> -> tensor<?x6xf32>
  %a = moe.glu %g, %u activation(silu) : tensor<?x6xf32>
  return %a : tensor<?x6xf32>
}

// -----

// A gate projection with another use must stay visible: no fusion.
// CHECK-LABEL: func.func @shared_gate
// CHECK-NOT: moe.fused
func.func @shared_gate(%h: tensor<?x8xf32>, %w: tensor<6x8xf32>) -> (tensor<?x6xf32>, tensor<?x6xf32>) {
  %g = moe.linear %h, %w : tensor<?x8xf32>, tensor<6x8xf32> -> tensor<?x6xf32>
  %u = moe.linear %h, %w : tensor<?x8xf32>, tensor<6x8xf32> -> tensor<?x6xf32>
  %a = moe.glu %g, %u activation(silu) : tensor<?x6xf32>
  return %a, %g : tensor<?x6xf32>, tensor<?x6xf32>
}

// -----

// An operand computed between the projections, by an op that cannot move,
// blocks the fusion: it would have to run inside the group.
// CHECK-LABEL: func.func @dominance
// CHECK-NOT: moe.fused
func.func @dominance(%h: tensor<?x8xf32>, %w: tensor<6x8xf32>, %x: tensor<6x8xf32>, %m: tensor<8x8xf32>) -> tensor<?x6xf32> {
  %g = moe.linear %h, %w : tensor<?x8xf32>, tensor<6x8xf32> -> tensor<?x6xf32>
  %wu = moe.linear %x, %m : tensor<6x8xf32>, tensor<8x8xf32> -> tensor<6x8xf32>
  %u = moe.linear %h, %wu : tensor<?x8xf32>, tensor<6x8xf32> -> tensor<?x6xf32>
  %a = moe.glu %g, %u activation(silu) : tensor<?x6xf32>
  return %a : tensor<?x6xf32>
}
