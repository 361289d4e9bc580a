// RUN: moe-opt %s --split-input-file --moe-split-attention | FileCheck %s

!cache = !moe.kv_cache<layers = 2, kv_heads = 2, head_dim = 8, element = f32>

// CHECK-LABEL: func.func @split
// CHECK-SAME: (%[[Q:.+]]: tensor<?x4x8xf32>, %[[K:.+]]: tensor<?x2x8xf32>, %[[V:.+]]: tensor<?x2x8xf32>, %[[C:.+]]: !moe.kv_cache<{{.+}}>, %[[P:.+]]: index)
// CHECK-NOT: moe.attention
// CHECK: moe.kv_cache_write %[[K]], %[[V]] into(%[[C]][1]) at %[[P]]
// CHECK: %[[O:.+]] = moe.cached_attention %[[Q]] cache(%[[C]][1]) at %[[P]] scale(1.250000e-01)
// CHECK: return %[[O]]
func.func @split(%q: tensor<?x4x8xf32>, %k: tensor<?x2x8xf32>, %v: tensor<?x2x8xf32>, %c: !cache, %p: index) -> tensor<?x4x8xf32> {
  %0 = moe.attention %q, %k, %v cache(%c[1]) at %p scale(0.125) : tensor<?x4x8xf32>, tensor<?x2x8xf32>, tensor<?x2x8xf32>, !cache -> tensor<?x4x8xf32>
  return %0 : tensor<?x4x8xf32>
}

// -----

// Nothing to split: the IR is left alone.
// CHECK-LABEL: func.func @none
// CHECK-NEXT: return
func.func @none(%x: tensor<?x4xf32>) -> tensor<?x4xf32> {
  return %x : tensor<?x4xf32>
}
