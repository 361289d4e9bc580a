// The stage-3 pipeline on one decoder layer: attention split, dispatch
// chosen, four fusions. Checks the groups, not every op.
// RUN: moe-opt %s --moe-lower-pipeline | FileCheck %s
// RUN: moe-opt %s --moe-lower-pipeline --moe-cpu-kernel-pipeline | FileCheck %s --check-prefix=KERNELS
// Without fusion (the float build of --quant-calibration), every op is
// its own kernel, so each projection's input is some kernel's output.
// RUN: moe-opt %s --moe-lower-pipeline="fuse=false" | FileCheck %s --check-prefix=UNFUSED
// RUN: moe-opt %s --moe-lower-pipeline="fuse=false" --moe-cpu-kernel-pipeline | FileCheck %s --check-prefix=UNFUSED-KERNELS

!cache = !moe.kv_cache<layers = 1, kv_heads = 2, head_dim = 8, element = f32>

// CHECK-LABEL: func.func @decode
// CHECK: moe.fused "norm_projection"
// CHECK: moe.fused "attention_prologue"
// CHECK: moe.cached_attention
// CHECK: moe.fused "projection_residual"
// CHECK: moe.fused "norm_projection"
// CHECK: moe.expert_dispatch {{.+}} strategy(gather)
// CHECK: moe.fused "projection_residual"
// CHECK-NOT: moe.attention

// UNFUSED-LABEL: func.func @decode
// UNFUSED-NOT: moe.fused
// UNFUSED: moe.rms_norm
// UNFUSED: moe.linear
// UNFUSED: moe.kv_cache_write
// UNFUSED: moe.cached_attention
// UNFUSED: moe.expert_dispatch {{.+}} strategy(gather)
// UNFUSED-NOT: moe.fused
// UNFUSED-KERNELS-COUNT-14: moe.kernel @
// UNFUSED-KERNELS-NOT: moe.fused

// KERNELS: module attributes {moe.arena_bytes = {{[0-9]+}} : i64, moe.prefill_chunk = 4 : i64, moe.weights_bytes = {{[0-9]+}} : i64}
// KERNELS-COUNT-6: moe.kernel @
// KERNELS-LABEL: func.func @decode
// KERNELS-NOT: moe.fused
// KERNELS: moe.kv_cache_layer
// KERNELS-COUNT-6: moe.call
module attributes {moe.prefill_chunk = 4 : i64} {
  func.func @decode(%x: tensor<1x16xf32>, %p: index, %c: !cache) -> tensor<1x16xf32> attributes {moe.entry = "decode"} {
    %n = moe.weight ["n"] : tensor<16xf32>
    %h = moe.rms_norm %x, %n eps(1.0e-6) : tensor<1x16xf32>, tensor<16xf32>
    %wq = moe.weight ["q"] : tensor<32x16xf32>
    %wk = moe.weight ["k"] : tensor<16x16xf32>
    %q = moe.linear %h, %wq : tensor<1x16xf32>, tensor<32x16xf32> -> tensor<1x4x8xf32>
    %k = moe.linear %h, %wk : tensor<1x16xf32>, tensor<16x16xf32> -> tensor<1x2x8xf32>
    %v = moe.linear %h, %wk : tensor<1x16xf32>, tensor<16x16xf32> -> tensor<1x2x8xf32>
    %qr = moe.rope %q at %p layout(half_split) dims(8) theta(10000.0) : tensor<1x4x8xf32>
    %kr = moe.rope %k at %p layout(half_split) dims(8) theta(10000.0) : tensor<1x2x8xf32>
    %o = moe.attention %qr, %kr, %v cache(%c[0]) at %p scale(0.35) : tensor<1x4x8xf32>, tensor<1x2x8xf32>, tensor<1x2x8xf32>, !cache -> tensor<1x4x8xf32>
    %wo = moe.weight ["o"] : tensor<16x32xf32>
    %a = moe.linear %o, %wo : tensor<1x4x8xf32>, tensor<16x32xf32> -> tensor<1x16xf32>
    %x1 = arith.addf %x, %a : tensor<1x16xf32>
    %n2 = moe.weight ["n2"] : tensor<16xf32>
    %h2 = moe.rms_norm %x1, %n2 eps(1.0e-6) : tensor<1x16xf32>, tensor<16xf32>
    %r = moe.weight ["r"] : tensor<4x16xf32>
    %i, %g = moe.route %h2, %r scoring(softmax) top_k(2) {renormalize} : tensor<1x16xf32>, tensor<4x16xf32> -> tensor<1x2xi32>, tensor<1x2xf32>
    %eg = moe.weight ["eg"] : tensor<4x6x16xf32>
    %ed = moe.weight ["ed"] : tensor<4x16x6xf32>
    %y = moe.expert_dispatch %h2, experts(%i, %g) gate %eg up %eg down %ed activation(silu) : (tensor<1x16xf32>, tensor<1x2xi32>, tensor<1x2xf32>, tensor<4x6x16xf32>, tensor<4x6x16xf32>, tensor<4x16x6xf32>) -> tensor<1x16xf32>
    %sg = moe.weight ["sg"] : tensor<6x16xf32>
    %sd = moe.weight ["sd"] : tensor<16x6xf32>
    %s1 = moe.linear %h2, %sg : tensor<1x16xf32>, tensor<6x16xf32> -> tensor<1x6xf32>
    %s2 = moe.linear %h2, %sg : tensor<1x16xf32>, tensor<6x16xf32> -> tensor<1x6xf32>
    %s3 = moe.glu %s1, %s2 activation(silu) : tensor<1x6xf32>
    %s4 = moe.linear %s3, %sd : tensor<1x6xf32>, tensor<16x6xf32> -> tensor<1x16xf32>
    %m = arith.addf %y, %s4 : tensor<1x16xf32>
    %x2 = arith.addf %x1, %m : tensor<1x16xf32>
    return %x2 : tensor<1x16xf32>
  }
}
