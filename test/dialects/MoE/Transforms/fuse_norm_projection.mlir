// RUN: moe-opt %s --split-input-file --moe-fuse-norm-projection | FileCheck %s

// Q, K and V read one norm: one group yields all three.
// CHECK-LABEL: func.func @qkv
// CHECK: %[[G:.+]]:3 = moe.fused "norm_projection" -> (tensor<?x4x4xf32>, tensor<?x2x4xf32>, tensor<?x2x4xf32>) {
// CHECK:   moe.rms_norm
// CHECK-COUNT-3: moe.linear
// CHECK:   moe.yield
// CHECK: return %[[G]]#0, %[[G]]#1, %[[G]]#2
func.func @qkv(%x: tensor<?x16xf32>, %n: tensor<16xf32>, %wq: tensor<16x16xf32>, %wk: tensor<8x16xf32>) -> (tensor<?x4x4xf32>, tensor<?x2x4xf32>, tensor<?x2x4xf32>) {
  %h = moe.rms_norm %x, %n eps(1.0e-6) : tensor<?x16xf32>, tensor<16xf32>
  %q = moe.linear %h, %wq : tensor<?x16xf32>, tensor<16x16xf32> -> tensor<?x4x4xf32>
  %k = moe.linear %h, %wk : tensor<?x16xf32>, tensor<8x16xf32> -> tensor<?x2x4xf32>
  %v = moe.linear %h, %wk : tensor<?x16xf32>, tensor<8x16xf32> -> tensor<?x2x4xf32>
  return %q, %k, %v : tensor<?x4x4xf32>, tensor<?x2x4xf32>, tensor<?x2x4xf32>
}

// -----

// The router and a gated FFN group read the norm: they join it, and the
// expert dispatch, which is not a projection, reads the yielded norm.
// CHECK-LABEL: func.func @moe_layer
// CHECK: %[[G:.+]]:4 = moe.fused "norm_projection"
// CHECK:   moe.rms_norm
// CHECK:   moe.route
// CHECK:   moe.linear
// CHECK:   moe.linear
// CHECK:   moe.glu
// CHECK: moe.expert_dispatch %[[G]]#0, experts(%[[G]]#1, %[[G]]#2)
func.func @moe_layer(%x: tensor<?x16xf32>, %n: tensor<16xf32>, %r: tensor<4x16xf32>, %w: tensor<6x16xf32>, %up: tensor<4x6x16xf32>, %down: tensor<4x16x6xf32>) -> (tensor<?x16xf32>, tensor<?x6xf32>) {
  %h = moe.rms_norm %x, %n eps(1.0e-6) : tensor<?x16xf32>, tensor<16xf32>
  %i, %g = moe.route %h, %r scoring(softmax) top_k(2) : tensor<?x16xf32>, tensor<4x16xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  %y = moe.expert_dispatch %h, experts(%i, %g) up %up down %down activation(relu) : (tensor<?x16xf32>, tensor<?x2xi32>, tensor<?x2xf32>, tensor<4x6x16xf32>, tensor<4x16x6xf32>) -> tensor<?x16xf32>
  %a = moe.fused "gated_ffn" -> (tensor<?x6xf32>) {
    %0 = moe.linear %h, %w : tensor<?x16xf32>, tensor<6x16xf32> -> tensor<?x6xf32>
    %1 = moe.linear %h, %w : tensor<?x16xf32>, tensor<6x16xf32> -> tensor<?x6xf32>
    %2 = moe.glu %0, %1 activation(silu) : tensor<?x6xf32>
    moe.yield %2 : tensor<?x6xf32>
  }
  return %y, %a : tensor<?x16xf32>, tensor<?x6xf32>
}

// -----

// The final norm and the logits.
// CHECK-LABEL: func.func @logits
// CHECK: moe.fused "norm_projection"
// CHECK:   moe.rms_norm
// CHECK:   moe.logits
func.func @logits(%x: tensor<1x16xf32>, %n: tensor<16xf32>, %e: tensor<10x16xf32>) -> tensor<1x10xf32> {
  %h = moe.rms_norm %x, %n eps(1.0e-6) : tensor<1x16xf32>, tensor<16xf32>
  %l = moe.logits %h, %e : tensor<1x16xf32>, tensor<10x16xf32> -> tensor<1x10xf32>
  return %l : tensor<1x10xf32>
}

// -----

// A norm no projection reads stays alone.
// CHECK-LABEL: func.func @no_projection
// CHECK-NOT: moe.fused
func.func @no_projection(%x: tensor<?x16xf32>, %n: tensor<16xf32>) -> tensor<?x16xf32> {
  %h = moe.rms_norm %x, %n eps(1.0e-6) : tensor<?x16xf32>, tensor<16xf32>
  return %h : tensor<?x16xf32>
}

// -----

// Per-head norms (QK-norm) are not over the model width: not this fusion.
// CHECK-LABEL: func.func @per_head
// CHECK-NOT: moe.fused
func.func @per_head(%x: tensor<?x2x8xf32>, %n: tensor<2x8xf32>, %w: tensor<16x16xf32>) -> tensor<?x2x8xf32> {
  %h = moe.rms_norm %x, %n eps(1.0e-6) : tensor<?x2x8xf32>, tensor<2x8xf32>
  %p = moe.linear %h, %w : tensor<?x2x8xf32>, tensor<16x16xf32> -> tensor<?x2x8xf32>
  return %p : tensor<?x2x8xf32>
}
