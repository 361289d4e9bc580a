// Every op of the moe dialect in its custom form: it must print as written
// and survive a round trip through the printer and the generic form.
// RUN: moe-opt %s | FileCheck %s
// RUN: moe-opt %s | moe-opt | FileCheck %s
// RUN: moe-opt %s --mlir-print-op-generic | moe-opt | FileCheck %s

!cache = !moe.kv_cache<layers = 2, kv_heads = 2, head_dim = 16, element = f32>
!view = !moe.kv_cache<layers = 1, kv_heads = 2, head_dim = 16, element = f32>
!conv = !moe.conv_state<layers = 2, channels = 64, width = 3, element = f32>

// CHECK-LABEL: func.func @weights
func.func @weights() -> (tensor<64x64xf32>, tensor<32x64xf32>, tensor<3x8x4xf32>, tensor<64x32xf32>, tensor<3x8x4xf32>) {
  // CHECK: moe.weight ["embed.weight"] : tensor<64x64xf32>
  %a = moe.weight ["embed.weight"] : tensor<64x64xf32>
  // CHECK: moe.weight ["c_attn"] rows [64, 96] : tensor<32x64xf32>
  %b = moe.weight ["c_attn"] rows [64, 96] : tensor<32x64xf32>
  // CHECK: moe.weight ["e.0.w", "e.1.w", "e.2.w"] : tensor<3x8x4xf32>
  %c = moe.weight ["e.0.w", "e.1.w", "e.2.w"] : tensor<3x8x4xf32>
  // CHECK: moe.weight ["k"] layout transposed : tensor<64x32xf32>
  %d = moe.weight ["k"] layout transposed : tensor<64x32xf32>
  // CHECK: moe.weight ["e.0.w", "e.1.w", "e.2.w"] layout panels(4) : tensor<3x8x4xf32>
  %e = moe.weight ["e.0.w", "e.1.w", "e.2.w"] layout panels(4) : tensor<3x8x4xf32>
  return %a, %b, %c, %d, %e : tensor<64x64xf32>, tensor<32x64xf32>, tensor<3x8x4xf32>, tensor<64x32xf32>, tensor<3x8x4xf32>
}

// The codes and scales of quantized weights: one matrix, rows of a fused
// tensor, a stack; groups need not divide the row (40 = 32 + 8).
// CHECK-LABEL: func.func @quantized_weights
func.func @quantized_weights() -> tensor<3x4x40xf32> {
  // CHECK: moe.weight ["w"] quantize(int4, group 32, shape [8, 40]) : tensor<160xui8>
  %a = moe.weight ["w"] quantize(int4, group 32, shape [8, 40]) : tensor<160xui8>
  // CHECK: moe.weight ["w"] quantize(int4, group 32, shape [8, 40]) : tensor<8x2xf32>
  %b = moe.weight ["w"] quantize(int4, group 32, shape [8, 40]) : tensor<8x2xf32>
  // CHECK: moe.weight ["qkv"] rows [8, 12] quantize(sign1, group 40, shape [4, 40]) : tensor<20xui8>
  %c = moe.weight ["qkv"] rows [8, 12] quantize(sign1, group 40, shape [4, 40]) : tensor<20xui8>
  // CHECK: moe.weight ["e.0", "e.1", "e.2"] quantize(int8, group 16, shape [3, 4, 40]) : tensor<3x4x3xf32>
  %d = moe.weight ["e.0", "e.1", "e.2"] quantize(int8, group 16, shape [3, 4, 40]) : tensor<3x4x3xf32>
  %e = moe.weight ["e.0", "e.1", "e.2"] quantize(int8, group 16, shape [3, 4, 40]) : tensor<3x160xui8>
  // CHECK: moe.dequantize {{.+}} format(int8) cols(40) group(16) : tensor<3x160xui8>, tensor<3x4x3xf32> -> tensor<3x4x40xf32>
  %f = moe.dequantize %e, %d format(int8) cols(40) group(16) : tensor<3x160xui8>, tensor<3x4x3xf32> -> tensor<3x4x40xf32>
  // Codes in the CPU layout: 4x40 int4 in runs of 16 codes (8 bytes), 10 runs.
  // CHECK: moe.weight ["e.0", "e.1", "e.2"] quantize(int4, group 16, shape [3, 4, 40]) layout transposed : tensor<3x80xui8>
  %g = moe.weight ["e.0", "e.1", "e.2"] quantize(int4, group 16, shape [3, 4, 40]) layout transposed : tensor<3x80xui8>
  // CHECK: moe.dequantize {{.+}} format(int4) cols(40) group(16) transposed lanes(8) : tensor<3x80xui8>, tensor<3x4x3xf32> -> tensor<3x4x40xf32>
  %h = moe.dequantize %g, %d format(int4) cols(40) group(16) transposed lanes(8) : tensor<3x80xui8>, tensor<3x4x3xf32> -> tensor<3x4x40xf32>
  // Asymmetric codes: an offset beside every scale.
  // CHECK: moe.weight ["e.0", "e.1", "e.2"] quantize(int8, group 16, shape [3, 4, 40]) asymmetric offsets : tensor<3x4x3xf32>
  %o = moe.weight ["e.0", "e.1", "e.2"] quantize(int8, group 16, shape [3, 4, 40]) asymmetric offsets : tensor<3x4x3xf32>
  // CHECK: moe.dequantize %{{.+}}, %{{.+}} offset(%{{.+}}) format(int8) cols(40) group(16) : tensor<3x160xui8>, tensor<3x4x3xf32>, tensor<3x4x3xf32> -> tensor<3x4x40xf32>
  %i = moe.dequantize %e, %d offset(%o) format(int8) cols(40) group(16) : tensor<3x160xui8>, tensor<3x4x3xf32>, tensor<3x4x3xf32> -> tensor<3x4x40xf32>
  return %f : tensor<3x4x40xf32>
}

// Codes in blocks for dot products (4 bytes: 8 int4 columns per row), f16
// scales, read by projections with int8 inputs.
// CHECK-LABEL: func.func @int8_activations
func.func @int8_activations(%x: tensor<?x64xf32>, %i: tensor<?x2xi32>, %g: tensor<?x2xf32>) -> (tensor<?x2x4xf32>, tensor<?x8xf32>, tensor<?x64xf32>) {
  %c = moe.weight ["w"] quantize(int4, group 32, shape [8, 64]) layout transposed : tensor<256xui8>
  %s = moe.weight ["w"] quantize(int4, group 32, shape [8, 64]) layout transposed : tensor<8x2xf16>
  // CHECK: moe.dequantize {{.+}} format(int4) cols(64) group(32) dot(4) : tensor<256xui8>, tensor<8x2xf16> -> tensor<8x64xf32>
  %w = moe.dequantize %c, %s format(int4) cols(64) group(32) dot(4) : tensor<256xui8>, tensor<8x2xf16> -> tensor<8x64xf32>
  // CHECK: moe.linear {{.+}} int8_activations(32) : tensor<?x64xf32>, tensor<8x64xf32> -> tensor<?x2x4xf32>
  %y = moe.linear %x, %w int8_activations(32) : tensor<?x64xf32>, tensor<8x64xf32> -> tensor<?x2x4xf32>
  // CHECK: moe.logits {{.+}} int8_activations(32) {scale = 5.000000e-01 : f64}
  %l = moe.logits %x, %w int8_activations(32) {scale = 0.5 : f64} : tensor<?x64xf32>, tensor<8x64xf32> -> tensor<?x8xf32>
  %ec = moe.weight ["e"] : tensor<3x256xui8>
  %es = moe.weight ["e.scale"] : tensor<3x32xf32>
  // CHECK: moe.dequantize {{.+}} format(sign1) cols(64) dot(4) panels(16) : tensor<3x256xui8>
  %ed = moe.dequantize %ec, %es format(sign1) cols(64) dot(4) panels(16) : tensor<3x256xui8>, tensor<3x32xf32> -> tensor<3x32x64xf32>
  %dc = moe.weight ["d"] : tensor<3x256xui8>
  %ds = moe.weight ["d.scale"] : tensor<3x64xf32>
  %dd = moe.dequantize %dc, %ds format(sign1) cols(32) dot(4) : tensor<3x256xui8>, tensor<3x64xf32> -> tensor<3x64x32xf32>
  // CHECK: moe.expert_dispatch {{.+}} activation(relu) int8_activations(32) :
  %e = moe.expert_dispatch %x, experts(%i, %g) up %ed down %dd activation(relu) int8_activations(32) : (tensor<?x64xf32>, tensor<?x2xi32>, tensor<?x2xf32>, tensor<3x32x64xf32>, tensor<3x64x32xf32>) -> tensor<?x64xf32>
  return %y, %l, %e : tensor<?x2x4xf32>, tensor<?x8xf32>, tensor<?x64xf32>
}

// CHECK-LABEL: func.func @layer
func.func @layer(%tokens: tensor<?xi32>, %pos: index, %cache: !cache,
                 %table: tensor<100x64xf32>, %w: tensor<64xf32>,
                 %wq: tensor<64x64xf32>, %wk: tensor<32x64xf32>,
                 %qn: tensor<4x16xf32>, %qg: tensor<4x1xf32>, %smear: tensor<2xf32>)
    -> tensor<?x64xf32> {
  // CHECK: %[[X:.+]] = moe.embed %{{.+}}[%{{.+}}] : tensor<100x64xf32>, tensor<?xi32> -> tensor<?x64xf32>
  %x = moe.embed %table[%tokens] : tensor<100x64xf32>, tensor<?xi32> -> tensor<?x64xf32>
  // CHECK: moe.embed %{{.+}}[%{{.+}}] {scale = 8.000000e+00 : f64}
  %xs = moe.embed %table[%tokens] {scale = 8.0 : f64} : tensor<100x64xf32>, tensor<?xi32> -> tensor<?x64xf32>
  // CHECK: %[[H:.+]] = moe.rms_norm %[[X]], %{{.+}} eps(9.9999999999999995E-7) : tensor<?x64xf32>, tensor<64xf32>
  %h = moe.rms_norm %x, %w eps(1.0e-6) : tensor<?x64xf32>, tensor<64xf32>
  // CHECK: moe.linear %[[H]], %{{.+}} : tensor<?x64xf32>, tensor<64x64xf32> -> tensor<?x4x16xf32>
  %q = moe.linear %h, %wq : tensor<?x64xf32>, tensor<64x64xf32> -> tensor<?x4x16xf32>
  // CHECK: moe.linear %{{.+}}, %{{.+}} bias %{{.+}} : tensor<?x64xf32>, tensor<64x64xf32>, tensor<64xf32> -> tensor<?x64xf32>
  %qb = moe.linear %h, %wq bias %w : tensor<?x64xf32>, tensor<64x64xf32>, tensor<64xf32> -> tensor<?x64xf32>
  %k = moe.linear %h, %wk : tensor<?x64xf32>, tensor<32x64xf32> -> tensor<?x2x16xf32>
  // CHECK: moe.rms_norm %{{.+}}, %{{.+}} eps(9.9999999999999995E-7) : tensor<?x4x16xf32>, tensor<4x16xf32>
  %qn1 = moe.rms_norm %q, %qn eps(1.0e-6) : tensor<?x4x16xf32>, tensor<4x16xf32>
  // CHECK: moe.head_scale %{{.+}}, %{{.+}} : tensor<?x4x16xf32>, tensor<4x1xf32>
  %qs = moe.head_scale %qn1, %qg : tensor<?x4x16xf32>, tensor<4x1xf32>
  // CHECK: moe.rope %{{.+}} at %{{.+}} layout(interleaved) dims(8) theta(1.000000e+04) : tensor<?x4x16xf32>
  %qr = moe.rope %qs at %pos layout(interleaved) dims(8) theta(10000.0) : tensor<?x4x16xf32>
  // CHECK: moe.rope %{{.+}} at %{{.+}} layout(half_split) dims(16) theta(5.000000e+04) : tensor<?x2x16xf32>
  %kr = moe.rope %k at %pos layout(half_split) dims(16) theta(50000.0) : tensor<?x2x16xf32>
  // CHECK: moe.layer_norm %{{.+}} eps(1.000000e-05) : tensor<?x2x16xf32>
  %kl = moe.layer_norm %kr eps(1.0e-5) : tensor<?x2x16xf32>
  // CHECK: moe.layer_norm %{{.+}} weight %{{.+}} bias %{{.+}} eps(1.000000e-05) : tensor<?x64xf32>, tensor<64xf32>, tensor<64xf32>
  %ln = moe.layer_norm %x weight %w bias %w eps(1.0e-5) : tensor<?x64xf32>, tensor<64xf32>, tensor<64xf32>
  // CHECK: moe.head_scale %{{.+}}, %{{.+}} : tensor<?x2x16xf32>, tensor<2xf32>
  %v = moe.head_scale %kl, %smear : tensor<?x2x16xf32>, tensor<2xf32>
  // CHECK: moe.attention %{{.+}}, %{{.+}}, %{{.+}} cache(%{{.+}}[1]) at %{{.+}} scale(2.500000e-01) : tensor<?x4x16xf32>, tensor<?x2x16xf32>, tensor<?x2x16xf32>, !moe.kv_cache<layers = 2, kv_heads = 2, head_dim = 16, element = f32> -> tensor<?x4x16xf32>
  %o = moe.attention %qr, %kl, %v cache(%cache[1]) at %pos scale(0.25) : tensor<?x4x16xf32>, tensor<?x2x16xf32>, tensor<?x2x16xf32>, !cache -> tensor<?x4x16xf32>
  // CHECK: moe.kv_cache_write %{{.+}}, %{{.+}} into(%{{.+}}[0]) at %{{.+}} : tensor<?x2x16xf32>, tensor<?x2x16xf32>, !moe.kv_cache
  moe.kv_cache_write %kl, %v into(%cache[0]) at %pos : tensor<?x2x16xf32>, tensor<?x2x16xf32>, !cache
  // CHECK: moe.cached_attention %{{.+}} cache(%{{.+}}[0]) at %{{.+}} scale(2.500000e-01) : tensor<?x4x16xf32>, !moe.kv_cache
  %o2 = moe.cached_attention %qr cache(%cache[0]) at %pos scale(0.25) : tensor<?x4x16xf32>, !cache -> tensor<?x4x16xf32>
  // CHECK: moe.kv_cache_layer %{{.+}}[1] : !moe.kv_cache<layers = 2, {{.+}}> -> !moe.kv_cache<layers = 1, {{.+}}>
  %view = moe.kv_cache_layer %cache[1] : !cache -> !view
  %a = moe.linear %o, %wq : tensor<?x4x16xf32>, tensor<64x64xf32> -> tensor<?x64xf32>
  // CHECK: moe.glu %{{.+}}, %{{.+}} activation(silu) : tensor<?x64xf32>
  %g = moe.glu %a, %x activation(silu) : tensor<?x64xf32>
  // CHECK: moe.glu %{{.+}}, %{{.+}} activation(gelu_tanh) : tensor<?x64xf32>
  %g2 = moe.glu %a, %x activation(gelu_tanh) : tensor<?x64xf32>
  return %g : tensor<?x64xf32>
}

// CHECK-LABEL: func.func @moe_block
func.func @moe_block(%h: tensor<?x64xf32>, %r: tensor<4x64xf32>, %b: tensor<4xf32>,
                     %gate: tensor<4x40x64xf32>, %down: tensor<4x64x40xf32>) -> tensor<?x64xf32> {
  // CHECK: moe.route %{{.+}}, %{{.+}} bias %{{.+}} scoring(sigmoid) top_k(2) {renorm_eps = 1.000000e-09 : f64, renormalize}
  %idx, %w = moe.route %h, %r bias %b scoring(sigmoid) top_k(2) {renormalize, renorm_eps = 1.0e-9 : f64}
      : tensor<?x64xf32>, tensor<4x64xf32>, tensor<4xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  // CHECK: moe.route %{{.+}}, %{{.+}} scoring(softmax) top_k(2) {capacity = #moe.capacity_rule<drop_lowest_gate>, capacity_factor = 1.250000e+00 : f64}
  %idx2, %w2 = moe.route %h, %r scoring(softmax) top_k(2) {capacity = #moe.capacity_rule<drop_lowest_gate>, capacity_factor = 1.25 : f64}
      : tensor<?x64xf32>, tensor<4x64xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  // CHECK: moe.route %{{.+}}, %{{.+}} bias %{{.+}} scoring(sigmoid) top_k(1) {scaling = 2.500000e+00 : f64, selection_bias = #moe.selection_bias<scores>}
  %idx3, %w3 = moe.route %h, %r bias %b scoring(sigmoid) top_k(1) {selection_bias = #moe.selection_bias<scores>, scaling = 2.5 : f64}
      : tensor<?x64xf32>, tensor<4x64xf32>, tensor<4xf32> -> tensor<?x1xi32>, tensor<?x1xf32>
  // CHECK: moe.expert_dispatch %{{.+}}, experts(%{{.+}}, %{{.+}}) gate %{{.+}} up %{{.+}} down %{{.+}} activation(silu) strategy(gather)
  %y = moe.expert_dispatch %h, experts(%idx, %w) gate %gate up %gate down %down activation(silu) strategy(gather)
      : (tensor<?x64xf32>, tensor<?x2xi32>, tensor<?x2xf32>, tensor<4x40x64xf32>, tensor<4x40x64xf32>, tensor<4x64x40xf32>) -> tensor<?x64xf32>
  // The default strategy is not printed; a dispatch without gate is a plain MLP.
  // CHECK: moe.expert_dispatch %{{.+}}, experts(%{{.+}}, %{{.+}}) up %{{.+}} down %{{.+}} activation(relu) :
  %z = moe.expert_dispatch %h, experts(%idx2, %w2) up %gate down %down activation(relu)
      : (tensor<?x64xf32>, tensor<?x2xi32>, tensor<?x2xf32>, tensor<4x40x64xf32>, tensor<4x64x40xf32>) -> tensor<?x64xf32>
  return %y : tensor<?x64xf32>
}

// CHECK-LABEL: func.func @output
func.func @output(%x: tensor<1x64xf32>, %emb: tensor<100x64xf32>, %bias: tensor<100xf32>) -> tensor<1x100xf32> {
  // CHECK: moe.logits %{{.+}}, %{{.+}} {scale = 0.89442719999999998 : f64} : tensor<1x64xf32>, tensor<100x64xf32> -> tensor<1x100xf32>
  %l = moe.logits %x, %emb {scale = 0.8944272 : f64} : tensor<1x64xf32>, tensor<100x64xf32> -> tensor<1x100xf32>
  // CHECK: moe.logits %{{.+}}, %{{.+}} bias %{{.+}} : tensor<1x64xf32>, tensor<100x64xf32>, tensor<100xf32> -> tensor<1x100xf32>
  %l2 = moe.logits %x, %emb bias %bias : tensor<1x64xf32>, tensor<100x64xf32>, tensor<100xf32> -> tensor<1x100xf32>
  return %l : tensor<1x100xf32>
}

// CHECK-LABEL: func.func @conv
func.func @conv(%x: tensor<?x64xf32>, %w: tensor<64x1x3xf32>, %state: !conv, %pos: index) -> tensor<?x64xf32> {
  // CHECK: moe.causal_conv1d %{{.+}}, %{{.+}} state(%{{.+}}[1]) at %{{.+}} : tensor<?x64xf32>, tensor<64x1x3xf32>, !moe.conv_state<layers = 2, channels = 64, width = 3, element = f32>
  %y = moe.causal_conv1d %x, %w state(%state[1]) at %pos : tensor<?x64xf32>, tensor<64x1x3xf32>, !conv
  return %y : tensor<?x64xf32>
}

// CHECK-LABEL: func.func @dequantize
func.func @dequantize(%codes: tensor<4x60xui8>, %scale: tensor<4x40xf32>, %c4: tensor<120xui8>, %s4: tensor<40xf32>) -> (tensor<4x40x12xf32>, tensor<40x6xf32>) {
  // CHECK: moe.dequantize %{{.+}}, %{{.+}} format(sign1) cols(12) : tensor<4x60xui8>, tensor<4x40xf32> -> tensor<4x40x12xf32>
  %0 = moe.dequantize %codes, %scale format(sign1) cols(12) : tensor<4x60xui8>, tensor<4x40xf32> -> tensor<4x40x12xf32>
  // CHECK: moe.dequantize %{{.+}}, %{{.+}} format(int4) cols(6) {low_bits_first, offset_binary} : tensor<120xui8>, tensor<40xf32> -> tensor<40x6xf32>
  %1 = moe.dequantize %c4, %s4 format(int4) cols(6) {low_bits_first, offset_binary} : tensor<120xui8>, tensor<40xf32> -> tensor<40x6xf32>
  return %0, %1 : tensor<4x40x12xf32>, tensor<40x6xf32>
}

// Group scales (32 columns each; 70 columns make 3 groups, the last short)
// and the 8- and 2-bit formats.
// CHECK-LABEL: func.func @dequantize_groups
func.func @dequantize_groups(%q8: tensor<3x700xui8>, %s8: tensor<3x10x3xf32>, %q2: tensor<175xui8>, %s2: tensor<10x3xf32>) -> (tensor<3x10x70xf32>, tensor<10x70xf32>) {
  // CHECK: moe.dequantize %{{.+}}, %{{.+}} format(int8) cols(70) group(32) : tensor<3x700xui8>, tensor<3x10x3xf32> -> tensor<3x10x70xf32>
  %0 = moe.dequantize %q8, %s8 format(int8) cols(70) group(32) : tensor<3x700xui8>, tensor<3x10x3xf32> -> tensor<3x10x70xf32>
  // CHECK: moe.dequantize %{{.+}}, %{{.+}} format(int2) cols(70) group(32) {low_bits_first} : tensor<175xui8>, tensor<10x3xf32> -> tensor<10x70xf32>
  %1 = moe.dequantize %q2, %s2 format(int2) cols(70) group(32) {low_bits_first} : tensor<175xui8>, tensor<10x3xf32> -> tensor<10x70xf32>
  return %0, %1 : tensor<3x10x70xf32>, tensor<10x70xf32>
}

// CHECK-LABEL: func.func @conv_split
func.func @conv_split(%x: tensor<?x64xf32>, %w: tensor<64x1x3xf32>, %state: !conv, %pos: index) -> tensor<?x64xf32> {
  // CHECK: moe.cached_conv1d %{{.+}}, %{{.+}} state(%{{.+}}[1]) at %{{.+}} : tensor<?x64xf32>, tensor<64x1x3xf32>, !moe.conv_state<layers = 2, channels = 64, width = 3, element = f32>
  %y = moe.cached_conv1d %x, %w state(%state[1]) at %pos : tensor<?x64xf32>, tensor<64x1x3xf32>, !conv
  // CHECK: moe.conv_state_write %{{.+}} into(%{{.+}}[1]) at %{{.+}} : tensor<?x64xf32>, !moe.conv_state<layers = 2, channels = 64, width = 3, element = f32>
  moe.conv_state_write %x into(%state[1]) at %pos : tensor<?x64xf32>, !conv
  // CHECK: moe.conv_state_layer %{{.+}}[1] : !moe.conv_state<layers = 2, {{.+}}> -> !moe.conv_state<layers = 1, {{.+}}>
  %view = moe.conv_state_layer %state[1] : !conv -> !moe.conv_state<layers = 1, channels = 64, width = 3, element = f32>
  return %y : tensor<?x64xf32>
}

// CHECK-LABEL: moe.kernel @norm_kernel(
// CHECK-SAME: %{{.+}}: tensor<?x64xf32>, %{{.+}}: tensor<64xf32> {moe.layout = #moe.weight_layout<row_major>}) -> tensor<?x64xf32>
moe.kernel @norm_kernel(%x: tensor<?x64xf32>, %w: tensor<64xf32> {moe.layout = #moe.weight_layout<row_major>}) -> tensor<?x64xf32> {
  // CHECK: moe.rms_norm
  %0 = moe.rms_norm %x, %w eps(1.0e-6) : tensor<?x64xf32>, tensor<64xf32>
  // CHECK: moe.yield %{{.+}} : tensor<?x64xf32>
  moe.yield %0 : tensor<?x64xf32>
}

// CHECK-LABEL: func.func @groups
func.func @groups(%x: tensor<?x64xf32>, %w: tensor<64xf32>, %wq: tensor<64x64xf32>) -> tensor<?x64xf32> {
  // CHECK: %[[G:.+]]:2 = moe.fused "norm_projection" -> (tensor<?x64xf32>, tensor<?x64xf32>) {
  %h, %q = moe.fused "norm_projection" -> (tensor<?x64xf32>, tensor<?x64xf32>) {
    %0 = moe.rms_norm %x, %w eps(1.0e-6) : tensor<?x64xf32>, tensor<64xf32>
    %1 = moe.linear %0, %wq : tensor<?x64xf32>, tensor<64x64xf32> -> tensor<?x64xf32>
    // CHECK: moe.yield %{{.+}}, %{{.+}} : tensor<?x64xf32>, tensor<?x64xf32>
    moe.yield %0, %1 : tensor<?x64xf32>, tensor<?x64xf32>
  }
  // CHECK: moe.call @norm_kernel(%[[G]]#1, %{{.+}}) : (tensor<?x64xf32>, tensor<64xf32>) -> tensor<?x64xf32>
  %n = moe.call @norm_kernel(%q, %w) : (tensor<?x64xf32>, tensor<64xf32>) -> tensor<?x64xf32>
  return %n : tensor<?x64xf32>
}
