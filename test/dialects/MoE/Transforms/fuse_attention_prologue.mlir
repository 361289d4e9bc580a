// RUN: moe-opt %s --split-input-file --moe-fuse-attention-prologue | FileCheck %s

!cache = !moe.kv_cache<layers = 1, kv_heads = 2, head_dim = 8, element = f32>

// QK-norm, gain, RoPE and the V scale fuse with the cache write; the query
// leaves the group for the attention that reads the same layer.
// CHECK-LABEL: func.func @prologue
// CHECK: %[[Q:.+]] = moe.fused "attention_prologue" -> (tensor<?x4x8xf32>) {
// CHECK-DAG: moe.rms_norm
// CHECK-DAG: moe.head_scale
// CHECK-DAG: moe.rope
// CHECK:   moe.kv_cache_write
// CHECK:   moe.yield
// CHECK: moe.cached_attention %[[Q]]
func.func @prologue(%q: tensor<?x4x8xf32>, %k: tensor<?x2x8xf32>, %v: tensor<?x2x8xf32>, %c: !cache, %p: index,
                    %qn: tensor<4x8xf32>, %kn: tensor<2x8xf32>, %s: tensor<2xf32>) -> tensor<?x4x8xf32> {
  %q1 = moe.rms_norm %q, %qn eps(1.0e-6) : tensor<?x4x8xf32>, tensor<4x8xf32>
  %k1 = moe.rms_norm %k, %kn eps(1.0e-6) : tensor<?x2x8xf32>, tensor<2x8xf32>
  %q2 = moe.rope %q1 at %p layout(interleaved) dims(4) theta(10000.0) : tensor<?x4x8xf32>
  %k2 = moe.rope %k1 at %p layout(interleaved) dims(4) theta(10000.0) : tensor<?x2x8xf32>
  %v1 = moe.head_scale %v, %s : tensor<?x2x8xf32>, tensor<2xf32>
  moe.kv_cache_write %k2, %v1 into(%c[0]) at %p : tensor<?x2x8xf32>, tensor<?x2x8xf32>, !cache
  %o = moe.cached_attention %q2 cache(%c[0]) at %p scale(0.25) : tensor<?x4x8xf32>, !cache -> tensor<?x4x8xf32>
  return %o : tensor<?x4x8xf32>
}

// -----

!cache = !moe.kv_cache<layers = 1, kv_heads = 2, head_dim = 8, element = f32>

// Keys and values straight from the projections: nothing to fuse.
// CHECK-LABEL: func.func @plain
// CHECK-NOT: moe.fused
func.func @plain(%k: tensor<?x2x8xf32>, %v: tensor<?x2x8xf32>, %c: !cache, %p: index) {
  moe.kv_cache_write %k, %v into(%c[0]) at %p : tensor<?x2x8xf32>, tensor<?x2x8xf32>, !cache
  return
}

// -----

!cache = !moe.kv_cache<layers = 1, kv_heads = 2, head_dim = 8, element = f32>

// A rotated key that is also returned stays out of the group; the write
// still fuses with the V scale.
// CHECK-LABEL: func.func @escaping
// CHECK: moe.rope
// CHECK: moe.fused "attention_prologue"
// CHECK-NEXT: moe.head_scale
// CHECK-NEXT: moe.kv_cache_write
func.func @escaping(%k: tensor<?x2x8xf32>, %v: tensor<?x2x8xf32>, %c: !cache, %p: index, %s: tensor<2xf32>) -> tensor<?x2x8xf32> {
  %k1 = moe.rope %k at %p layout(half_split) dims(8) theta(10000.0) : tensor<?x2x8xf32>
  %v1 = moe.head_scale %v, %s : tensor<?x2x8xf32>, tensor<2xf32>
  moe.kv_cache_write %k1, %v1 into(%c[0]) at %p : tensor<?x2x8xf32>, tensor<?x2x8xf32>, !cache
  return %k1 : tensor<?x2x8xf32>
}
