// RUN: moe-opt %s --split-input-file --moe-quantize-weights="mode=q4" | FileCheck %s
// RUN: moe-opt %s --split-input-file --moe-quantize-weights="mode=mixed" | FileCheck %s --check-prefix=MIXED
// RUN: moe-opt %s --split-input-file --moe-quantize-weights="mode=q8 group=16 rules=attention=f32,*.wo=q1 scale-type=f32" | FileCheck %s --check-prefix=RULES
// RUN: moe-opt %s --split-input-file --moe-quantize-weights="mode=q4a rules=ffn=q8,*.wo=q1a" | FileCheck %s --check-prefix=ASYM
// RUN: not moe-opt %s --split-input-file --moe-quantize-weights="scale-type=bf16" 2>&1 | FileCheck %s --check-prefix=BAD-SCALE
// RUN: not moe-opt %s --split-input-file --moe-quantize-weights="mode=q3" 2>&1 | FileCheck %s --check-prefix=BAD-MODE
// RUN: not moe-opt %s --split-input-file --moe-quantize-weights="mode=q4 rules=router=q8" 2>&1 | FileCheck %s --check-prefix=BAD-RULE

// BAD-SCALE: moe-quantize-weights: scale-type must be f16 or f32, got 'bf16'
// BAD-MODE: moe-quantize-weights: 'q3': expected q8, q4, q2, q1, q8a, q4a, q2a, q1a, mixed or none
// BAD-RULE: moe-quantize-weights: 'router' is neither a role (embedding, head, attention, ffn, experts) nor a glob on tensor names

// An attention block, a dense FFN and a tied head: every projection and the
// embedding become codes, scales and a dequantize; the norm stays float.
// CHECK-LABEL: func.func @dense
// CHECK-DAG: %[[EC:.+]] = moe.weight ["emb"] quantize(int4, group 32, shape [64, 96]) : tensor<3072xui8>
// CHECK-DAG: %[[ES:.+]] = moe.weight ["emb"] quantize(int4, group 32, shape [64, 96]) : tensor<64x3xf16>
// CHECK-DAG: %[[E:.+]] = moe.dequantize %[[EC]], %[[ES]] format(int4) cols(96) group(32) : tensor<3072xui8>, tensor<64x3xf16> -> tensor<64x96xf32>
// CHECK-DAG: moe.weight ["norm"] : tensor<96xf32>
// CHECK-DAG: moe.weight ["wq"] quantize(int4, group 32, shape [96, 96]) : tensor<4608xui8>
// CHECK-DAG: moe.weight ["blk.wo"] quantize(int4, group 32, shape [96, 96]) : tensor<96x3xf16>
// CHECK-DAG: moe.weight ["up"] quantize(int4, group 32, shape [40, 96]) : tensor<1920xui8>
// CHECK-DAG: moe.weight ["down"] quantize(int4, group 32, shape [96, 40]) : tensor<96x2xf16>
// CHECK: moe.embed %[[E]]
// CHECK: moe.logits %{{.+}}, %[[E]]
// CHECK-NOT: moe.weight ["emb"] :
// The embedding is q8 under mixed even though the head reads it too;
// attention is q4a (asymmetric), the dense FFN q8.
// MIXED-LABEL: func.func @dense
// MIXED-DAG: moe.weight ["emb"] quantize(int8, group 32, shape [64, 96]) : tensor<6144xui8>
// MIXED-DAG: moe.weight ["wq"] quantize(int4, group 32, shape [96, 96]) asymmetric : tensor<4608xui8>
// MIXED-DAG: moe.weight ["blk.wo"] quantize(int4, group 32, shape [96, 96]) asymmetric : tensor<4608xui8>
// MIXED-DAG: moe.weight ["up"] quantize(int8, group 32, shape [40, 96]) : tensor<3840xui8>
// A role kept in float, and a glob that wins over its role.
// RULES-LABEL: func.func @dense
// RULES-DAG: moe.weight ["wq"] : tensor<96x96xf32>
// RULES-DAG: moe.weight ["wk"] : tensor<32x96xf32>
// RULES-DAG: moe.weight ["blk.wo"] quantize(sign1, group 16, shape [96, 96]) : tensor<1152xui8>
// RULES-DAG: moe.weight ["blk.wo"] quantize(sign1, group 16, shape [96, 96]) : tensor<96x6xf32>
// RULES-DAG: moe.weight ["up"] quantize(int8, group 16, shape [40, 96]) : tensor<3840xui8>
// Asymmetric: a third weight holds the offsets, read by offset(..); a
// symmetric rule beside it gets none.
// ASYM-LABEL: func.func @dense
// ASYM-DAG: %[[QC:.+]] = moe.weight ["wq"] quantize(int4, group 32, shape [96, 96]) asymmetric : tensor<4608xui8>
// ASYM-DAG: %[[QS:.+]] = moe.weight ["wq"] quantize(int4, group 32, shape [96, 96]) asymmetric : tensor<96x3xf16>
// ASYM-DAG: %[[QO:.+]] = moe.weight ["wq"] quantize(int4, group 32, shape [96, 96]) asymmetric offsets : tensor<96x3xf16>
// ASYM-DAG: moe.dequantize %[[QC]], %[[QS]] offset(%[[QO]]) format(int4) cols(96) group(32) : tensor<4608xui8>, tensor<96x3xf16>, tensor<96x3xf16> -> tensor<96x96xf32>
// ASYM-DAG: moe.weight ["blk.wo"] quantize(sign1, group 32, shape [96, 96]) asymmetric offsets : tensor<96x3xf16>
// ASYM-DAG: moe.weight ["up"] quantize(int8, group 32, shape [40, 96]) : tensor<40x3xf16>
// ASYM-NOT: moe.weight ["up"] {{.*}}offsets
func.func @dense(%tokens: tensor<?xi32>, %pos: index, %cache: !moe.kv_cache<layers = 1, kv_heads = 2, head_dim = 16, element = f32>) -> tensor<?x64xf32> {
  %emb = moe.weight ["emb"] : tensor<64x96xf32>
  %norm = moe.weight ["norm"] : tensor<96xf32>
  %wq = moe.weight ["wq"] : tensor<96x96xf32>
  %wk = moe.weight ["wk"] : tensor<32x96xf32>
  %wv = moe.weight ["wv"] : tensor<32x96xf32>
  %wo = moe.weight ["blk.wo"] : tensor<96x96xf32>
  %up = moe.weight ["up"] : tensor<40x96xf32>
  %down = moe.weight ["down"] : tensor<96x40xf32>
  %x = moe.embed %emb[%tokens] : tensor<64x96xf32>, tensor<?xi32> -> tensor<?x96xf32>
  %h = moe.rms_norm %x, %norm eps(1.0e-5) : tensor<?x96xf32>, tensor<96xf32>
  %q = moe.linear %h, %wq : tensor<?x96xf32>, tensor<96x96xf32> -> tensor<?x6x16xf32>
  %k = moe.linear %h, %wk : tensor<?x96xf32>, tensor<32x96xf32> -> tensor<?x2x16xf32>
  %v = moe.linear %h, %wv : tensor<?x96xf32>, tensor<32x96xf32> -> tensor<?x2x16xf32>
  %qr = moe.rope %q at %pos layout(interleaved) dims(16) theta(10000.0) : tensor<?x6x16xf32>
  %a = moe.attention %qr, %k, %v cache(%cache[0]) at %pos scale(0.25) : tensor<?x6x16xf32>, tensor<?x2x16xf32>, tensor<?x2x16xf32>, !moe.kv_cache<layers = 1, kv_heads = 2, head_dim = 16, element = f32> -> tensor<?x6x16xf32>
  %o = moe.linear %a, %wo : tensor<?x6x16xf32>, tensor<96x96xf32> -> tensor<?x96xf32>
  %u = moe.linear %o, %up : tensor<?x96xf32>, tensor<40x96xf32> -> tensor<?x40xf32>
  %d = moe.linear %u, %down : tensor<?x40xf32>, tensor<96x40xf32> -> tensor<?x96xf32>
  %l = moe.logits %d, %emb : tensor<?x96xf32>, tensor<64x96xf32> -> tensor<?x64xf32>
  return %l : tensor<?x64xf32>
}

// -----

// Stacked experts are quantized matrix by matrix; the router stays float.
// An already packed weight is left as it is.
// CHECK-LABEL: func.func @experts
// CHECK-DAG: moe.weight ["r"] : tensor<4x96xf32>
// CHECK-DAG: %[[UC:.+]] = moe.weight ["e0.up", "e1.up", "e2.up", "e3.up"] quantize(int4, group 32, shape [4, 40, 96]) : tensor<4x1920xui8>
// CHECK-DAG: %[[US:.+]] = moe.weight ["e0.up", "e1.up", "e2.up", "e3.up"] quantize(int4, group 32, shape [4, 40, 96]) : tensor<4x40x3xf16>
// CHECK-DAG: %[[U:.+]] = moe.dequantize %[[UC]], %[[US]] format(int4) cols(96) group(32) : tensor<4x1920xui8>, tensor<4x40x3xf16> -> tensor<4x40x96xf32>
// CHECK-DAG: moe.weight ["down"] quantize(int4, group 32, shape [4, 96, 40]) : tensor<4x96x2xf16>
// CHECK-DAG: moe.dequantize %{{.+}}, %{{.+}} format(sign1) cols(96) :
// CHECK: moe.expert_dispatch {{.+}} up %[[U]]
func.func @experts(%h: tensor<?x96xf32>, %packed: tensor<4x480xui8>, %pscale: tensor<4x40xf32>) -> tensor<?x96xf32> {
  %r = moe.weight ["r"] : tensor<4x96xf32>
  %up = moe.weight ["e0.up", "e1.up", "e2.up", "e3.up"] : tensor<4x40x96xf32>
  %down = moe.weight ["down"] : tensor<4x96x40xf32>
  %gate = moe.dequantize %packed, %pscale format(sign1) cols(96) : tensor<4x480xui8>, tensor<4x40xf32> -> tensor<4x40x96xf32>
  %i, %w = moe.route %h, %r scoring(softmax) top_k(2) : tensor<?x96xf32>, tensor<4x96xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  %y = moe.expert_dispatch %h, experts(%i, %w) gate %gate up %up down %down activation(silu) : (tensor<?x96xf32>, tensor<?x2xi32>, tensor<?x2xf32>, tensor<4x40x96xf32>, tensor<4x40x96xf32>, tensor<4x96x40xf32>) -> tensor<?x96xf32>
  return %y : tensor<?x96xf32>
}
