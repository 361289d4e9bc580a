// RUN: moe-opt %s --split-input-file --moe-outline-kernels --verify-diagnostics | FileCheck %s

!cache = !moe.kv_cache<layers = 2, kv_heads = 2, head_dim = 8, element = f32>
!view = !moe.kv_cache<layers = 1, kv_heads = 2, head_dim = 8, element = f32>

// The same computation on two layers is one kernel, called with each
// layer's cache view; the ops inside address layer 0 of the view.
// CHECK-LABEL: moe.kernel @cached_attention_{{[0-9a-f]+}}
// CHECK-SAME: (%{{.+}}: tensor<?x4x8xf32>, %{{.+}}: !moe.kv_cache<layers = 1, kv_heads = 2, head_dim = 8, element = f32> {moe.cache_access = "read"}, %{{.+}}: index) -> tensor<?x4x8xf32>
// CHECK: moe.cached_attention %{{.+}} cache(%{{.+}}[0])
// CHECK-NOT: moe.kernel @cached_attention
// CHECK-LABEL: func.func @layers
// CHECK: %[[V0:.+]] = moe.kv_cache_layer %{{.+}}[0]
// CHECK: %[[A:.+]] = moe.call @[[K:cached_attention_[0-9a-f]+]](%{{.+}}, %[[V0]], %{{.+}})
// CHECK: %[[V1:.+]] = moe.kv_cache_layer %{{.+}}[1]
// CHECK: moe.call @[[K]](%[[A]], %[[V1]], %{{.+}})
func.func @layers(%q: tensor<?x4x8xf32>, %c: !cache, %p: index) -> tensor<?x4x8xf32> {
  %0 = moe.cached_attention %q cache(%c[0]) at %p scale(0.25) : tensor<?x4x8xf32>, !cache -> tensor<?x4x8xf32>
  %1 = moe.cached_attention %0 cache(%c[1]) at %p scale(0.25) : tensor<?x4x8xf32>, !cache -> tensor<?x4x8xf32>
  return %1 : tensor<?x4x8xf32>
}

// -----

// A fused group becomes a kernel named after it; weight arguments carry
// their layout, the written cache view its access.
!cache = !moe.kv_cache<layers = 2, kv_heads = 2, head_dim = 8, element = f32>
// CHECK-LABEL: moe.kernel @attention_prologue_{{[0-9a-f]+}}
// CHECK-SAME: tensor<2xf32> {moe.layout = #moe.weight_layout<row_major>}
// CHECK-SAME: {moe.cache_access = "write"}
// CHECK: moe.head_scale
// CHECK: moe.kv_cache_write %{{.+}}, %{{.+}} into(%{{.+}}[0])
// CHECK-LABEL: func.func @group
// CHECK: %[[W:.+]] = moe.weight ["smear"]
// CHECK: moe.call @attention_prologue_{{[0-9a-f]+}}(%{{.+}}, %[[W]], %{{.+}}, %{{.+}})
// CHECK-NOT: moe.fused
func.func @group(%k: tensor<?x2x8xf32>, %v: tensor<?x2x8xf32>, %c: !cache, %p: index) {
  %s = moe.weight ["smear"] : tensor<2xf32>
  moe.fused "attention_prologue" {
    %v1 = moe.head_scale %v, %s : tensor<?x2x8xf32>, tensor<2xf32>
    moe.kv_cache_write %k, %v1 into(%c[1]) at %p : tensor<?x2x8xf32>, tensor<?x2x8xf32>, !cache
    moe.yield
  }
  return
}

// -----

// Different shapes are different kernels.
// CHECK-LABEL: func.func @shapes
// CHECK: moe.call @[[A:embed_[0-9a-f]+]]
// CHECK: moe.call @[[B:embed_[0-9a-f]+]]
// CHECK-NOT: moe.call @[[A]]
func.func @shapes(%t: tensor<10x4xf32>, %u: tensor<10x8xf32>, %i: tensor<?xi32>) -> (tensor<?x4xf32>, tensor<?x8xf32>) {
  %0 = moe.embed %t[%i] : tensor<10x4xf32>, tensor<?xi32> -> tensor<?x4xf32>
  %1 = moe.embed %u[%i] : tensor<10x8xf32>, tensor<?xi32> -> tensor<?x8xf32>
  return %0, %1 : tensor<?x4xf32>, tensor<?x8xf32>
}

// -----

!cache = !moe.kv_cache<layers = 2, kv_heads = 2, head_dim = 8, element = f32>
func.func @unsplit(%q: tensor<?x4x8xf32>, %k: tensor<?x2x8xf32>, %c: !cache, %p: index) -> tensor<?x4x8xf32> {
  // expected-error @+1 {{'moe.attention' op must be split by moe-split-attention before kernels are outlined}}
  %0 = moe.attention %q, %k, %k cache(%c[0]) at %p scale(0.25) : tensor<?x4x8xf32>, tensor<?x2x8xf32>, tensor<?x2x8xf32>, !cache -> tensor<?x4x8xf32>
  return %0 : tensor<?x4x8xf32>
}

// -----

!cache = !moe.kv_cache<layers = 2, kv_heads = 2, head_dim = 8, element = f32>
func.func @read_write(%q: tensor<?x4x8xf32>, %k: tensor<?x2x8xf32>, %c: !cache, %p: index) -> tensor<?x4x8xf32> {
  %0 = moe.fused "both" -> (tensor<?x4x8xf32>) {
    moe.kv_cache_write %k, %k into(%c[0]) at %p : tensor<?x2x8xf32>, tensor<?x2x8xf32>, !cache
    // expected-error @+1 {{'moe.cached_attention' op a kernel cannot both read and write the same state layer}}
    %1 = moe.cached_attention %q cache(%c[0]) at %p scale(0.25) : tensor<?x4x8xf32>, !cache -> tensor<?x4x8xf32>
    moe.yield %1 : tensor<?x4x8xf32>
  }
  return %0 : tensor<?x4x8xf32>
}

// -----

// A convolution state is passed like a cache: a one-layer view per layer,
// read by the convolution kernel and written by the state-write kernel;
// both layers share each kernel.
!conv = !moe.conv_state<layers = 2, channels = 8, width = 3, element = f32>
// CHECK-LABEL: moe.kernel @cached_conv1d_{{[0-9a-f]+}}
// CHECK-SAME: !moe.conv_state<layers = 1, channels = 8, width = 3, element = f32> {moe.cache_access = "read"}
// CHECK: moe.cached_conv1d %{{.+}}, %{{.+}} state(%{{.+}}[0])
// CHECK-LABEL: moe.kernel @conv_state_write_{{[0-9a-f]+}}
// CHECK-SAME: !moe.conv_state<layers = 1, channels = 8, width = 3, element = f32> {moe.cache_access = "write"}
// CHECK: moe.conv_state_write %{{.+}} into(%{{.+}}[0])
// CHECK-NOT: moe.kernel
// CHECK-LABEL: func.func @conv
// CHECK: %[[V0:.+]] = moe.conv_state_layer %{{.+}}[0]
// CHECK: %[[Y:.+]] = moe.call @[[C:cached_conv1d_[0-9a-f]+]](%{{.+}}, %{{.+}}, %[[V0]], %{{.+}})
// CHECK: moe.call @[[W:conv_state_write_[0-9a-f]+]](%{{.+}}, %{{.+}}, %{{.+}})
// CHECK: %[[V1:.+]] = moe.conv_state_layer %{{.+}}[1]
// CHECK: moe.call @[[C]](%[[Y]], %{{.+}}, %[[V1]], %{{.+}})
// CHECK: moe.call @[[W]]
func.func @conv(%x: tensor<?x8xf32>, %s: !conv, %p: index) -> tensor<?x8xf32> {
  %w = moe.weight ["conv"] : tensor<8x1x3xf32>
  %0 = moe.cached_conv1d %x, %w state(%s[0]) at %p : tensor<?x8xf32>, tensor<8x1x3xf32>, !conv
  moe.conv_state_write %x into(%s[0]) at %p : tensor<?x8xf32>, !conv
  %1 = moe.cached_conv1d %0, %w state(%s[1]) at %p : tensor<?x8xf32>, tensor<8x1x3xf32>, !conv
  moe.conv_state_write %0 into(%s[1]) at %p : tensor<?x8xf32>, !conv
  return %1 : tensor<?x8xf32>
}

// -----

!conv = !moe.conv_state<layers = 2, channels = 8, width = 3, element = f32>
func.func @unsplit_conv(%x: tensor<?x8xf32>, %w: tensor<8x1x3xf32>, %s: !conv, %p: index) -> tensor<?x8xf32> {
  // expected-error @+1 {{'moe.causal_conv1d' op must be split by moe-split-causal-conv before kernels are outlined}}
  %0 = moe.causal_conv1d %x, %w state(%s[0]) at %p : tensor<?x8xf32>, tensor<8x1x3xf32>, !conv
  return %0 : tensor<?x8xf32>
}

// -----

// A packed weight is dequantized inside every kernel that reads it: its
// codes and scales are the kernel's arguments, and no host-side dequantize
// (no f32 copy) is left.
// CHECK-LABEL: moe.kernel @embed_{{[0-9a-f]+}}
// CHECK-SAME: (%{{.+}}: tensor<30xui8> {moe.layout = #moe.weight_layout<row_major>}, %{{.+}}: tensor<10xf32> {{.*}}, %{{.+}}: tensor<?xi32>)
// CHECK: moe.dequantize
// CHECK: moe.embed
// CHECK-LABEL: moe.kernel @logits_{{[0-9a-f]+}}
// CHECK: moe.dequantize
// CHECK: moe.logits
// CHECK-LABEL: func.func @packed
// CHECK-NOT: moe.dequantize
// CHECK: moe.call @embed_
// CHECK: moe.call @logits_
func.func @packed(%ids: tensor<?xi32>) -> tensor<?x10xf32> {
  %codes = moe.weight ["emb__int4"] : tensor<30xui8>
  %scale = moe.weight ["emb__scale"] : tensor<10xf32>
  %w = moe.dequantize %codes, %scale format(int4) cols(6) : tensor<30xui8>, tensor<10xf32> -> tensor<10x6xf32>
  %x = moe.embed %w[%ids] : tensor<10x6xf32>, tensor<?xi32> -> tensor<?x6xf32>
  %l = moe.logits %x, %w : tensor<?x6xf32>, tensor<10x6xf32> -> tensor<?x10xf32>
  return %l : tensor<?x10xf32>
}
