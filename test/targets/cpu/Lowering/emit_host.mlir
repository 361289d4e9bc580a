// RUN: moe-opt %s --split-input-file --moe-cpu-emit-host --verify-diagnostics | FileCheck %s

!cache = !moe.kv_cache<layers = 2, kv_heads = 2, head_dim = 8, element = f32>
!view = !moe.kv_cache<layers = 1, kv_heads = 2, head_dim = 8, element = f32>

// Kernels become external declarations with the ABI signature (user
// context, then buffers and the int32 position); each call describes its
// buffers and returns the kernel's status on failure.
// CHECK: emitc.include "moert/host_abi.h"
// CHECK: emitc.func private @embed_k(!emitc.ptr<!emitc.opaque<"void">>, !emitc.ptr<!emitc.opaque<"halide_buffer_t">>, !emitc.ptr<!emitc.opaque<"halide_buffer_t">>, !emitc.ptr<!emitc.opaque<"halide_buffer_t">>) -> i32 attributes {specifiers = ["extern"]}
// CHECK: emitc.func private @attend_k(!emitc.ptr<!emitc.opaque<"void">>, !emitc.ptr<!emitc.opaque<"halide_buffer_t">>, !emitc.ptr<!emitc.opaque<"halide_buffer_t">>, !emitc.ptr<!emitc.opaque<"halide_buffer_t">>, i32, !emitc.ptr<!emitc.opaque<"halide_buffer_t">>)
// CHECK-LABEL: emitc.func @moe_prefill(
// CHECK: call_opaque "moert_weight_at"(%{{.+}}) {args = [0 : index, 128]}
// CHECK: call_opaque "moert_buffer"({{.+}}) {args = [0 : index, 1 : index, 2 : i32, 32 : i32, 2 : i32, 8 : i32, 10 : i32, 1 : i32, 1 : i32]}
// CHECK: call_opaque "moert_buffer"({{.+}}) {args = [0 : index, 1 : index, 0 : i32, 32 : i32, 1 : i32, 2 : index, 1 : i32, 1 : i32, 1 : i32]}
// CHECK: %[[S:.+]] = call @embed_k(
// CHECK: call_opaque "MOERT_CHECK"(%[[S]])
// A transposed [8, 8] weight is described as stored.
// CHECK: call_opaque "moert_weight_at"(%{{.+}}) {args = [0 : index, 0]}
// The entry's result goes to the caller's logits; computed at the call's
// position from the KV cache, every row is (no moert_logits_rows).
// CHECK: call_opaque "moert_logits_at"
// CHECK-NOT: moert_logits_rows
// Layer 1's keys (0) and values (1), the whole capacity.
// CHECK: call_opaque "moert_kv_buffer"({{.+}}) {args = [0 : index, 1 : index, 1 : i32, 0 : i32, 1 : i32, 4 : i32, 0 : i32, 2 : index]}
// CHECK: call_opaque "moert_kv_buffer"({{.+}}) {args = [0 : index, 1 : index, 1 : i32, 1 : i32, 1 : i32, 4 : i32, 0 : i32, 2 : index]}
// CHECK: call @attend_k(
// CHECK: return
// CHECK: emitc.verbatim "const moert_model_desc_t moert_model = {
// CHECK-NOT: moe.
module attributes {moe.family = "test", moe.vocab = 10 : i64, moe.prefill_chunk = 4 : i64, moe.arena_bytes = 256 : i64, moe.weights_bytes = 448 : i64} {
  moe.kernel @embed_k(%t: tensor<10x8xf32>, %ids: tensor<?xi32>) -> tensor<?x8xf32> {
    %0 = moe.embed %t[%ids] : tensor<10x8xf32>, tensor<?xi32> -> tensor<?x8xf32>
    moe.yield %0 : tensor<?x8xf32>
  }
  moe.kernel @heads_k(%x: tensor<?x8xf32>, %w: tensor<8x8xf32>) -> tensor<?x2x4xf32> {
    %0 = moe.linear %x, %w : tensor<?x8xf32>, tensor<8x8xf32> -> tensor<?x2x4xf32>
    moe.yield %0 : tensor<?x2x4xf32>
  }
  moe.kernel @attend_k(%q: tensor<?x2x4xf32>, %c: !moe.kv_cache<layers = 1, kv_heads = 1, head_dim = 4, element = f32> {moe.cache_access = "read"}, %p: index) -> tensor<?x2x4xf32> {
    %0 = moe.cached_attention %q cache(%c[0]) at %p scale(0.5) : tensor<?x2x4xf32>, !moe.kv_cache<layers = 1, kv_heads = 1, head_dim = 4, element = f32> -> tensor<?x2x4xf32>
    moe.yield %0 : tensor<?x2x4xf32>
  }
  func.func @prefill(%ids: tensor<?xi32>, %p: index, %c: !moe.kv_cache<layers = 2, kv_heads = 1, head_dim = 4, element = f32>) -> tensor<?x2x4xf32> attributes {moe.entry = "prefill"} {
    %w = moe.weight ["embed"] {moe.offset = 128 : i64} : tensor<10x8xf32>
    %x = moe.call @embed_k(%w, %ids) {moe.arena = array<i64: 0>} : (tensor<10x8xf32>, tensor<?xi32>) -> tensor<?x8xf32>
    %wq = moe.weight ["q"] layout transposed {moe.offset = 0 : i64} : tensor<8x8xf32>
    %q = moe.call @heads_k(%x, %wq) {moe.arena = array<i64: 128>} : (tensor<?x8xf32>, tensor<8x8xf32>) -> tensor<?x2x4xf32>
    %v = moe.kv_cache_layer %c[1] : !moe.kv_cache<layers = 2, kv_heads = 1, head_dim = 4, element = f32> -> !moe.kv_cache<layers = 1, kv_heads = 1, head_dim = 4, element = f32>
    %o = moe.call @attend_k(%q, %v, %p) {moe.arena = array<i64: -1>} : (tensor<?x2x4xf32>, !moe.kv_cache<layers = 1, kv_heads = 1, head_dim = 4, element = f32>, index) -> tensor<?x2x4xf32>
    return %o : tensor<?x2x4xf32>
  }
}

// -----

// A kernel of tensors alone that writes the logits runs on the rows the
// session wants (the last alone for generation): its per-token operands
// start moert_logits_rows rows before the end, weights as they are.
// CHECK-LABEL: // -----
// CHECK-LABEL: emitc.func @moe_prefill(
// CHECK: %[[ROWS:.+]] = call_opaque "moert_logits_rows"(%arg0, %arg1)
// CHECK: %[[X:.+]] = call_opaque "moert_ref_last_rows"({{.+}}, %arg1, %[[ROWS]]) {args = [0 : index, 1 : index, 2 : index, 32]}
// CHECK: call_opaque "moert_buffer"({{.+}}%[[X]], %[[ROWS]]) {args = [0 : index, 1 : index, 2 : i32, 32 : i32, 2 : i32, 8 : i32, 2 : index, 1 : i32, 1 : i32]}
// CHECK: call_opaque "moert_buffer"({{.+}}) {args = [0 : index, 1 : index, 2 : i32, 32 : i32, 2 : i32, 8 : i32, 10 : i32, 1 : i32, 1 : i32]}
// CHECK: %[[L:.+]] = call_opaque "moert_ref_last_rows"({{.+}}, %arg1, %[[ROWS]]) {args = [0 : index, 1 : index, 2 : index, 40]}
// CHECK: call_opaque "moert_buffer"({{.+}}%[[L]], %[[ROWS]])
// CHECK: call @head_k(
module attributes {moe.family = "test", moe.vocab = 10 : i64, moe.prefill_chunk = 4 : i64, moe.arena_bytes = 128 : i64, moe.weights_bytes = 640 : i64} {
  moe.kernel @embed_k(%t: tensor<10x8xf32>, %ids: tensor<?xi32>) -> tensor<?x8xf32> {
    %0 = moe.embed %t[%ids] : tensor<10x8xf32>, tensor<?xi32> -> tensor<?x8xf32>
    moe.yield %0 : tensor<?x8xf32>
  }
  moe.kernel @head_k(%x: tensor<?x8xf32>, %w: tensor<10x8xf32>) -> tensor<?x10xf32> {
    %0 = moe.logits %x, %w : tensor<?x8xf32>, tensor<10x8xf32> -> tensor<?x10xf32>
    moe.yield %0 : tensor<?x10xf32>
  }
  func.func @prefill(%ids: tensor<?xi32>, %p: index) -> tensor<?x10xf32> attributes {moe.entry = "prefill"} {
    %w = moe.weight ["embed"] {moe.offset = 0 : i64} : tensor<10x8xf32>
    %x = moe.call @embed_k(%w, %ids) {moe.arena = array<i64: 0>} : (tensor<10x8xf32>, tensor<?xi32>) -> tensor<?x8xf32>
    %l = moe.call @head_k(%x, %w) {moe.arena = array<i64: -1>} : (tensor<?x8xf32>, tensor<10x8xf32>) -> tensor<?x10xf32>
    return %l : tensor<?x10xf32>
  }
}

// -----

// A conv-state view is the layer's whole ring ({channels, width - 1}),
// read or written; the descriptor records the state's channels and width.
// CHECK-LABEL: // -----
// CHECK-LABEL: emitc.func @moe_prefill(
// CHECK: call_opaque "moert_conv_buffer"({{.+}}) {args = [0 : index, 1 : index, 1 : i32, 8 : i32, 2 : i32]}
// CHECK: call @conv_k(
// CHECK: call_opaque "moert_conv_buffer"({{.+}}) {args = [0 : index, 1 : index, 1 : i32, 8 : i32, 2 : i32]}
// CHECK: call @save_k(
// CHECK: emitc.verbatim "{{.*}}/*conv_channels=*/8, /*conv_width=*/3,
module attributes {moe.family = "test", moe.vocab = 8 : i64, moe.prefill_chunk = 4 : i64, moe.arena_bytes = 256 : i64, moe.weights_bytes = 96 : i64} {
  moe.kernel @conv_k(%x: tensor<?x8xf32>, %w: tensor<8x1x3xf32>, %s: !moe.conv_state<layers = 1, channels = 8, width = 3, element = f32> {moe.cache_access = "read"}, %p: index) -> tensor<?x8xf32> {
    %0 = moe.cached_conv1d %x, %w state(%s[0]) at %p : tensor<?x8xf32>, tensor<8x1x3xf32>, !moe.conv_state<layers = 1, channels = 8, width = 3, element = f32>
    moe.yield %0 : tensor<?x8xf32>
  }
  moe.kernel @save_k(%x: tensor<?x8xf32>, %p: index, %s: !moe.conv_state<layers = 1, channels = 8, width = 3, element = f32> {moe.cache_access = "write"}) {
    moe.conv_state_write %x into(%s[0]) at %p : tensor<?x8xf32>, !moe.conv_state<layers = 1, channels = 8, width = 3, element = f32>
    moe.yield
  }
  moe.kernel @embed_k(%t: tensor<10x8xf32>, %ids: tensor<?xi32>) -> tensor<?x8xf32> {
    %0 = moe.embed %t[%ids] : tensor<10x8xf32>, tensor<?xi32> -> tensor<?x8xf32>
    moe.yield %0 : tensor<?x8xf32>
  }
  func.func @prefill(%ids: tensor<?xi32>, %p: index, %c: !moe.kv_cache<layers = 2, kv_heads = 1, head_dim = 4, element = f32>, %s: !moe.conv_state<layers = 2, channels = 8, width = 3, element = f32>) -> tensor<?x8xf32> attributes {moe.entry = "prefill"} {
    %t = moe.weight ["embed"] {moe.offset = 128 : i64} : tensor<10x8xf32>
    %x = moe.call @embed_k(%t, %ids) {moe.arena = array<i64: 0>} : (tensor<10x8xf32>, tensor<?xi32>) -> tensor<?x8xf32>
    %w = moe.weight ["conv"] {moe.offset = 0 : i64} : tensor<8x1x3xf32>
    %v = moe.conv_state_layer %s[1] : !moe.conv_state<layers = 2, channels = 8, width = 3, element = f32> -> !moe.conv_state<layers = 1, channels = 8, width = 3, element = f32>
    %y = moe.call @conv_k(%x, %w, %v, %p) {moe.arena = array<i64: -1>} : (tensor<?x8xf32>, tensor<8x1x3xf32>, !moe.conv_state<layers = 1, channels = 8, width = 3, element = f32>, index) -> tensor<?x8xf32>
    moe.call @save_k(%x, %p, %v) {moe.arena = array<i64>} : (tensor<?x8xf32>, index, !moe.conv_state<layers = 1, channels = 8, width = 3, element = f32>) -> ()
    return %y : tensor<?x8xf32>
  }
}

// -----

module {
  func.func @prefill(%ids: tensor<?xi32>) -> tensor<10x8xf32> attributes {moe.entry = "prefill"} {
    // expected-error @+1 {{'moe.weight' op has no moe.offset; run moe-plan-weights before moe-cpu-emit-host}}
    %w = moe.weight ["embed"] : tensor<10x8xf32>
    return %w : tensor<10x8xf32>
  }
}

// -----

module {
  // expected-error @+1 {{'func.func' op is not an entry point (no moe.entry)}}
  func.func @helper() {
    return
  }
}
