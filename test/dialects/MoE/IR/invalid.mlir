// Every verifier message of the moe dialect, one case each.
// RUN: moe-opt %s --split-input-file --verify-diagnostics

func.func @weight_no_sources() {
  // expected-error @+1 {{'moe.weight' op expects at least one source tensor name}}
  %0 = moe.weight [] : tensor<4xf32>
  return
}

// -----

func.func @weight_empty_name() {
  // expected-error @+1 {{'moe.weight' op expects non-empty source tensor names}}
  %0 = moe.weight [""] : tensor<4xf32>
  return
}

// -----

func.func @weight_dynamic() {
  // expected-error @+1 {{'moe.weight' op expects a static shape, got 'tensor<?xf32>'}}
  %0 = moe.weight ["w"] : tensor<?xf32>
  return
}

// -----

func.func @weight_bad_stack() {
  // expected-error @+1 {{'moe.weight' op expects stacking 2 tensors to give a leading dimension of that size, got 'tensor<3x4xf32>'}}
  %0 = moe.weight ["a", "b"] : tensor<3x4xf32>
  return
}

// -----

func.func @weight_bad_rows() {
  // expected-error @+1 {{'moe.weight' op expects rows [begin, end] with 0 <= begin < end}}
  %0 = moe.weight ["w"] rows [5, 5] : tensor<4x4xf32>
  return
}

// -----

func.func @weight_rows_count() {
  // expected-error @+1 {{'moe.weight' op expects rows [0, 3] to select 3 rows, got 'tensor<4x4xf32>'}}
  %0 = moe.weight ["w"] rows [0, 3] : tensor<4x4xf32>
  return
}

// -----

func.func @weight_transposed_vector() {
  // expected-error @+1 {{'moe.weight' op expects a transposed layout only for rank >= 2, got 'tensor<4xf32>'}}
  %0 = moe.weight ["w"] layout transposed : tensor<4xf32>
  return
}

// -----

func.func @weight_panels_without_width() {
  // expected-error @+1 {{'moe.weight' op expects layout panels(P) with its panel width P}}
  %0 = moe.weight ["w"] layout panels : tensor<8x4xf32>
  return
}

// -----

func.func @weight_panels_not_dividing() {
  // expected-error @+1 {{'moe.weight' op expects a panel width that divides the 12 output features, got 8}}
  %0 = moe.weight ["w"] layout panels(8) : tensor<12x4xf32>
  return
}

// -----

func.func @weight_panels_of_codes() {
  // expected-error @+1 {{'moe.weight' op expects layout panels only for a float weight of rank >= 2, got 'tensor<64xui8>'}}
  %0 = moe.weight ["w"] layout panels(8) : tensor<64xui8>
  return
}

// -----

func.func @weight_width_without_panels() {
  // expected-error @+1 {{'moe.weight' op expects a panel width only with layout panels}}
  %0 = moe.weight ["w"] layout transposed(8) : tensor<8x4xf32>
  return
}

// -----

func.func @embed_result(%t: tensor<100x64xf32>, %ids: tensor<?xi32>) {
  // expected-error @+1 {{'moe.embed' op expects result of shape ?x64, got ?x32}}
  %0 = moe.embed %t[%ids] : tensor<100x64xf32>, tensor<?xi32> -> tensor<?x32xf32>
  return
}

// -----

func.func @embed_element(%t: tensor<100x64xf32>, %ids: tensor<?xi32>) {
  // expected-error @+1 {{'moe.embed' op expects the result element type to match the table}}
  %0 = moe.embed %t[%ids] : tensor<100x64xf32>, tensor<?xi32> -> tensor<?x64xf16>
  return
}

// -----

func.func @embed_dynamic_table(%t: tensor<?x64xf32>, %ids: tensor<?xi32>) {
  // expected-error @+1 {{'moe.embed' op expects table to have a static shape, got 'tensor<?x64xf32>'}}
  %0 = moe.embed %t[%ids] : tensor<?x64xf32>, tensor<?xi32> -> tensor<?x64xf32>
  return
}

// -----

func.func @activation_rank0(%x: tensor<f32>, %w: tensor<4xf32>) {
  // expected-error @+1 {{'moe.head_scale' op expects input to have a token dimension, got rank 0}}
  %0 = moe.head_scale %x, %w : tensor<f32>, tensor<4xf32>
  return
}

// -----

func.func @activation_dynamic(%x: tensor<?x?xf32>, %w: tensor<4xf32>) {
  // expected-error @+1 {{'moe.rms_norm' op expects input to be static in every dimension but the first, got 'tensor<?x?xf32>'}}
  %0 = moe.rms_norm %x, %w eps(1.0e-6) : tensor<?x?xf32>, tensor<4xf32>
  return
}

// -----

func.func @rms_weight_rank(%x: tensor<?x4xf32>, %w: tensor<3x4xf32>) {
  // expected-error @+1 {{'moe.rms_norm' op expects the weight rank (2) to be below the input rank (2)}}
  %0 = moe.rms_norm %x, %w eps(1.0e-6) : tensor<?x4xf32>, tensor<3x4xf32>
  return
}

// -----

func.func @rms_weight_shape(%x: tensor<?x4x8xf32>, %w: tensor<4x4xf32>) {
  // expected-error @+1 {{'moe.rms_norm' op expects the weight shape 4x4 to match the trailing input dimensions 4x8}}
  %0 = moe.rms_norm %x, %w eps(1.0e-6) : tensor<?x4x8xf32>, tensor<4x4xf32>
  return
}

// -----

func.func @rms_eps(%x: tensor<?x4xf32>, %w: tensor<4xf32>) {
  // expected-error @+1 {{'moe.rms_norm' op expects a non-negative eps}}
  %0 = moe.rms_norm %x, %w eps(-1.0) : tensor<?x4xf32>, tensor<4xf32>
  return
}

// -----

func.func @rms_dynamic_weight(%x: tensor<?x4xf32>, %w: tensor<?xf32>) {
  // expected-error @+1 {{'moe.rms_norm' op expects weight to have a static shape, got 'tensor<?xf32>'}}
  %0 = moe.rms_norm %x, %w eps(1.0e-6) : tensor<?x4xf32>, tensor<?xf32>
  return
}

// -----

func.func @layer_norm_weight(%x: tensor<?x4xf32>, %w: tensor<5xf32>) {
  // expected-error @+1 {{'moe.layer_norm' op expects weight of shape 4, got 5}}
  %0 = moe.layer_norm %x weight %w eps(1.0e-5) : tensor<?x4xf32>, tensor<5xf32>
  return
}

// -----

func.func @layer_norm_eps(%x: tensor<?x4xf32>) {
  // expected-error @+1 {{'moe.layer_norm' op expects a non-negative eps}}
  %0 = moe.layer_norm %x eps(-1.0) : tensor<?x4xf32>
  return
}

// -----

func.func @layer_norm_bias_only(%x: tensor<?x4xf32>, %b: tensor<4xf32>) {
  // expected-error @+1 {{'moe.layer_norm' op expects a weight when a bias is given}}
  %0 = "moe.layer_norm"(%x, %b) <{eps = 1.0e-5 : f64, operandSegmentSizes = array<i32: 1, 0, 1>}> : (tensor<?x4xf32>, tensor<4xf32>) -> tensor<?x4xf32>
  return
}

// -----

func.func @linear_rank(%x: tensor<?xf32>, %w: tensor<4x4xf32>) {
  // expected-error @+1 {{'moe.linear' op expects input and result of rank >= 2 ([T, ...])}}
  %0 = moe.linear %x, %w : tensor<?xf32>, tensor<4x4xf32> -> tensor<?x4xf32>
  return
}

// -----

func.func @linear_k(%x: tensor<?x8xf32>, %w: tensor<4x6xf32>) {
  // expected-error @+1 {{'moe.linear' op expects the input features (8) to hold K = 6 elements of the weight [4, 6]}}
  %0 = moe.linear %x, %w : tensor<?x8xf32>, tensor<4x6xf32> -> tensor<?x4xf32>
  return
}

// -----

func.func @linear_n(%x: tensor<?x6xf32>, %w: tensor<4x6xf32>) {
  // expected-error @+1 {{'moe.linear' op expects the result features (2x3) to hold N = 4 elements of the weight [4, 6]}}
  %0 = moe.linear %x, %w : tensor<?x6xf32>, tensor<4x6xf32> -> tensor<?x2x3xf32>
  return
}

// -----

func.func @linear_bias(%x: tensor<?x6xf32>, %w: tensor<4x6xf32>, %b: tensor<6xf32>) {
  // expected-error @+1 {{'moe.linear' op expects bias of shape 4, got 6}}
  %0 = moe.linear %x, %w bias %b : tensor<?x6xf32>, tensor<4x6xf32>, tensor<6xf32> -> tensor<?x4xf32>
  return
}

// -----

func.func @linear_tokens(%x: tensor<?x6xf32>, %w: tensor<4x6xf32>) {
  // expected-error @+1 {{'moe.linear' op expects input and result to have the same token dimension, got ? and 1}}
  %0 = moe.linear %x, %w : tensor<?x6xf32>, tensor<4x6xf32> -> tensor<1x4xf32>
  return
}

// -----

func.func @head_scale_rank(%x: tensor<?x8xf32>, %s: tensor<8xf32>) {
  // expected-error @+1 {{'moe.head_scale' op expects input [T, H, D], got 'tensor<?x8xf32>'}}
  %0 = moe.head_scale %x, %s : tensor<?x8xf32>, tensor<8xf32>
  return
}

// -----

func.func @head_scale_shape(%x: tensor<?x4x8xf32>, %s: tensor<4x2xf32>) {
  // expected-error @+1 {{'moe.head_scale' op expects one scale per head ([4] or [4, 1]), got 4x2}}
  %0 = moe.head_scale %x, %s : tensor<?x4x8xf32>, tensor<4x2xf32>
  return
}

// -----

func.func @rope_dims(%x: tensor<?x4x8xf32>, %p: index) {
  // expected-error @+1 {{'moe.rope' op expects rotary dims to be even and in (0, 8], got 5}}
  %0 = moe.rope %x at %p layout(interleaved) dims(5) theta(10000.0) : tensor<?x4x8xf32>
  return
}

// -----

func.func @rope_dims_large(%x: tensor<?x4x8xf32>, %p: index) {
  // expected-error @+1 {{'moe.rope' op expects rotary dims to be even and in (0, 8], got 10}}
  %0 = moe.rope %x at %p layout(half_split) dims(10) theta(10000.0) : tensor<?x4x8xf32>
  return
}

// -----

func.func @rope_theta(%x: tensor<?x4x8xf32>, %p: index) {
  // expected-error @+1 {{'moe.rope' op expects a positive theta}}
  %0 = moe.rope %x at %p layout(half_split) dims(8) theta(0.0) : tensor<?x4x8xf32>
  return
}

// -----

!cache = !moe.kv_cache<layers = 2, kv_heads = 2, head_dim = 8, element = f32>
func.func @attention_layer(%q: tensor<?x4x8xf32>, %k: tensor<?x2x8xf32>, %c: !cache, %p: index) {
  // expected-error @+1 {{'moe.attention' op expects layer in [0, 2), got 2}}
  %0 = moe.attention %q, %k, %k cache(%c[2]) at %p scale(0.25) : tensor<?x4x8xf32>, tensor<?x2x8xf32>, tensor<?x2x8xf32>, !cache -> tensor<?x4x8xf32>
  return
}

// -----

!cache = !moe.kv_cache<layers = 2, kv_heads = 2, head_dim = 8, element = f32>
func.func @attention_cache_heads(%q: tensor<?x4x8xf32>, %k: tensor<?x4x8xf32>, %c: !cache, %p: index) {
  // expected-error @+1 {{'moe.attention' op expects the cache to hold 4 KV heads of 8 dims, got '!moe.kv_cache<layers = 2, kv_heads = 2, head_dim = 8, element = f32>'}}
  %0 = moe.attention %q, %k, %k cache(%c[0]) at %p scale(0.25) : tensor<?x4x8xf32>, tensor<?x4x8xf32>, tensor<?x4x8xf32>, !cache -> tensor<?x4x8xf32>
  return
}

// -----

!cache = !moe.kv_cache<layers = 2, kv_heads = 2, head_dim = 8, element = f32>
func.func @attention_kv_types(%q: tensor<?x4x8xf32>, %k: tensor<?x2x8xf32>, %v: tensor<1x2x8xf32>, %c: !cache, %p: index) {
  // expected-error @+1 {{'moe.attention' op expects key and value of the same type, got 'tensor<?x2x8xf32>' and 'tensor<1x2x8xf32>'}}
  %0 = moe.attention %q, %k, %v cache(%c[0]) at %p scale(0.25) : tensor<?x4x8xf32>, tensor<?x2x8xf32>, tensor<1x2x8xf32>, !cache -> tensor<?x4x8xf32>
  return
}

// -----

!cache = !moe.kv_cache<layers = 2, kv_heads = 2, head_dim = 8, element = f32>
func.func @attention_head_dim(%q: tensor<?x4x4xf32>, %k: tensor<?x2x8xf32>, %c: !cache, %p: index) {
  // expected-error @+1 {{'moe.attention' op expects query heads of 8 dims, got 4}}
  %0 = moe.attention %q, %k, %k cache(%c[0]) at %p scale(0.25) : tensor<?x4x4xf32>, tensor<?x2x8xf32>, tensor<?x2x8xf32>, !cache -> tensor<?x4x4xf32>
  return
}

// -----

!cache = !moe.kv_cache<layers = 2, kv_heads = 2, head_dim = 8, element = f32>
func.func @attention_groups(%q: tensor<?x3x8xf32>, %k: tensor<?x2x8xf32>, %c: !cache, %p: index) {
  // expected-error @+1 {{'moe.attention' op expects the query heads (3) to be a multiple of the KV heads (2)}}
  %0 = moe.attention %q, %k, %k cache(%c[0]) at %p scale(0.25) : tensor<?x3x8xf32>, tensor<?x2x8xf32>, tensor<?x2x8xf32>, !cache -> tensor<?x3x8xf32>
  return
}

// -----

!cache = !moe.kv_cache<layers = 2, kv_heads = 2, head_dim = 8, element = f32>
func.func @attention_scale(%q: tensor<?x4x8xf32>, %k: tensor<?x2x8xf32>, %c: !cache, %p: index) {
  // expected-error @+1 {{'moe.attention' op expects a positive scale}}
  %0 = moe.attention %q, %k, %k cache(%c[0]) at %p scale(0.0) : tensor<?x4x8xf32>, tensor<?x2x8xf32>, tensor<?x2x8xf32>, !cache -> tensor<?x4x8xf32>
  return
}

// -----

!cache = !moe.kv_cache<layers = 2, kv_heads = 2, head_dim = 8, element = f32>
func.func @attention_tokens(%q: tensor<1x4x8xf32>, %k: tensor<?x2x8xf32>, %c: !cache, %p: index) {
  // expected-error @+1 {{'moe.attention' op expects query and key to have the same token dimension, got 1 and ?}}
  %0 = moe.attention %q, %k, %k cache(%c[0]) at %p scale(0.25) : tensor<1x4x8xf32>, tensor<?x2x8xf32>, tensor<?x2x8xf32>, !cache -> tensor<1x4x8xf32>
  return
}

// -----

!cache = !moe.kv_cache<layers = 2, kv_heads = 2, head_dim = 8, element = f32>
func.func @attention_result(%q: tensor<?x4x8xf32>, %k: tensor<?x2x8xf32>, %c: !cache, %p: index) {
  // expected-error @+1 {{'moe.attention' op expects the result type to match the query, got 'tensor<?x4x4xf32>'}}
  %0 = moe.attention %q, %k, %k cache(%c[0]) at %p scale(0.25) : tensor<?x4x8xf32>, tensor<?x2x8xf32>, tensor<?x2x8xf32>, !cache -> tensor<?x4x4xf32>
  return
}

// -----

!cache = !moe.kv_cache<layers = 2, kv_heads = 2, head_dim = 8, element = f32>
func.func @cache_write_layer(%k: tensor<?x2x8xf32>, %c: !cache, %p: index) {
  // expected-error @+1 {{'moe.kv_cache_write' op expects layer in [0, 2), got 5}}
  moe.kv_cache_write %k, %k into(%c[5]) at %p : tensor<?x2x8xf32>, tensor<?x2x8xf32>, !cache
  return
}

// -----

!cache = !moe.kv_cache<layers = 2, kv_heads = 2, head_dim = 8, element = f32>
func.func @cached_attention_result(%q: tensor<?x4x8xf32>, %c: !cache, %p: index) {
  // expected-error @+1 {{'moe.cached_attention' op expects the result type to match the query, got 'tensor<1x4x8xf32>'}}
  %0 = moe.cached_attention %q cache(%c[0]) at %p scale(0.25) : tensor<?x4x8xf32>, !cache -> tensor<1x4x8xf32>
  return
}

// -----

!cache = !moe.kv_cache<layers = 2, kv_heads = 2, head_dim = 8, element = f32>
!view = !moe.kv_cache<layers = 1, kv_heads = 2, head_dim = 8, element = f32>
func.func @cache_layer_range(%c: !cache) {
  // expected-error @+1 {{'moe.kv_cache_layer' op expects layer in [0, 2), got 3}}
  %0 = moe.kv_cache_layer %c[3] : !cache -> !view
  return
}

// -----

!cache = !moe.kv_cache<layers = 2, kv_heads = 2, head_dim = 8, element = f32>
func.func @cache_layer_view(%c: !cache) {
  // expected-error @+1 {{'moe.kv_cache_layer' op expects a one-layer view of the same heads and element type, got '!moe.kv_cache<layers = 2, kv_heads = 2, head_dim = 8, element = f32>'}}
  %0 = moe.kv_cache_layer %c[1] : !cache -> !cache
  return
}

// -----

// expected-error @+1 {{!moe.kv_cache expects kv_heads to be positive, got 0}}
func.func @cache_type_sizes(%c: !moe.kv_cache<layers = 2, kv_heads = 0, head_dim = 8, element = f32>) {
  return
}

// -----

// expected-error @+1 {{!moe.kv_cache expects a float element type, got 'i32'}}
func.func @cache_type_element(%c: !moe.kv_cache<layers = 2, kv_heads = 2, head_dim = 8, element = i32>) {
  return
}

// -----

// expected-error @+1 {{!moe.conv_state expects width to be positive, got -1}}
func.func @conv_type(%s: !moe.conv_state<layers = 2, channels = 4, width = -1, element = f32>) {
  return
}

// -----

!conv = !moe.conv_state<layers = 2, channels = 4, width = 3, element = f32>
func.func @conv_weight(%x: tensor<?x4xf32>, %w: tensor<4x1x2xf32>, %s: !conv, %p: index) {
  // expected-error @+1 {{'moe.causal_conv1d' op expects weight of shape 4x1x3, got 4x1x2}}
  %0 = moe.causal_conv1d %x, %w state(%s[0]) at %p : tensor<?x4xf32>, tensor<4x1x2xf32>, !conv
  return
}

// -----

!conv = !moe.conv_state<layers = 2, channels = 8, width = 3, element = f32>
func.func @conv_channels(%x: tensor<?x4xf32>, %w: tensor<4x1x3xf32>, %s: !conv, %p: index) {
  // expected-error @+1 {{'moe.causal_conv1d' op expects the state to hold 4 channels, got '!moe.conv_state<layers = 2, channels = 8, width = 3, element = f32>'}}
  %0 = moe.causal_conv1d %x, %w state(%s[0]) at %p : tensor<?x4xf32>, tensor<4x1x3xf32>, !conv
  return
}

// -----

!conv = !moe.conv_state<layers = 2, channels = 4, width = 3, element = f32>
func.func @conv_layer(%x: tensor<?x4xf32>, %w: tensor<4x1x3xf32>, %s: !conv, %p: index) {
  // expected-error @+1 {{'moe.causal_conv1d' op expects layer in [0, 2), got 2}}
  %0 = moe.causal_conv1d %x, %w state(%s[2]) at %p : tensor<?x4xf32>, tensor<4x1x3xf32>, !conv
  return
}

// -----

func.func @route_router(%h: tensor<?x64xf32>, %r: tensor<4x32xf32>) {
  // expected-error @+1 {{'moe.route' op expects router [E, 64], got 4x32}}
  %i, %w = moe.route %h, %r scoring(softmax) top_k(2) : tensor<?x64xf32>, tensor<4x32xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  return
}

// -----

func.func @route_bias(%h: tensor<?x64xf32>, %r: tensor<4x64xf32>, %b: tensor<5xf32>) {
  // expected-error @+1 {{'moe.route' op expects bias of shape 4, got 5}}
  %i, %w = moe.route %h, %r bias %b scoring(sigmoid) top_k(2) : tensor<?x64xf32>, tensor<4x64xf32>, tensor<5xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  return
}

// -----

func.func @route_top_k(%h: tensor<?x64xf32>, %r: tensor<4x64xf32>) {
  // expected-error @+1 {{'moe.route' op expects top_k in [1, 4], got 5}}
  %i, %w = moe.route %h, %r scoring(softmax) top_k(5) : tensor<?x64xf32>, tensor<4x64xf32> -> tensor<?x5xi32>, tensor<?x5xf32>
  return
}

// -----

func.func @route_indices(%h: tensor<?x64xf32>, %r: tensor<4x64xf32>) {
  // expected-error @+1 {{'moe.route' op expects indices of shape ?x2, got ?x3}}
  %i, %w = moe.route %h, %r scoring(softmax) top_k(2) : tensor<?x64xf32>, tensor<4x64xf32> -> tensor<?x3xi32>, tensor<?x2xf32>
  return
}

// -----

func.func @route_renorm_eps(%h: tensor<?x64xf32>, %r: tensor<4x64xf32>) {
  // expected-error @+1 {{'moe.route' op expects a non-negative renorm_eps}}
  %i, %w = moe.route %h, %r scoring(softmax) top_k(2) {renormalize, renorm_eps = -1.0 : f64} : tensor<?x64xf32>, tensor<4x64xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  return
}

// -----

func.func @route_capacity(%h: tensor<?x64xf32>, %r: tensor<4x64xf32>) {
  // expected-error @+1 {{'moe.route' op expects a positive capacity_factor with the drop_lowest_gate rule}}
  %i, %w = moe.route %h, %r scoring(softmax) top_k(2) {capacity = #moe.capacity_rule<drop_lowest_gate>} : tensor<?x64xf32>, tensor<4x64xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  return
}

// -----

func.func @dispatch_up(%h: tensor<?x64xf32>, %i: tensor<?x2xi32>, %w: tensor<?x2xf32>, %up: tensor<4x40x32xf32>, %down: tensor<4x64x40xf32>) {
  // expected-error @+1 {{'moe.expert_dispatch' op expects up [E, F, 64], got 4x40x32}}
  %0 = moe.expert_dispatch %h, experts(%i, %w) up %up down %down activation(relu) : (tensor<?x64xf32>, tensor<?x2xi32>, tensor<?x2xf32>, tensor<4x40x32xf32>, tensor<4x64x40xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @dispatch_gate(%h: tensor<?x64xf32>, %i: tensor<?x2xi32>, %w: tensor<?x2xf32>, %g: tensor<4x30x64xf32>, %up: tensor<4x40x64xf32>, %down: tensor<4x64x40xf32>) {
  // expected-error @+1 {{'moe.expert_dispatch' op expects gate of shape 4x40x64, got 4x30x64}}
  %0 = moe.expert_dispatch %h, experts(%i, %w) gate %g up %up down %down activation(silu) : (tensor<?x64xf32>, tensor<?x2xi32>, tensor<?x2xf32>, tensor<4x30x64xf32>, tensor<4x40x64xf32>, tensor<4x64x40xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @dispatch_down(%h: tensor<?x64xf32>, %i: tensor<?x2xi32>, %w: tensor<?x2xf32>, %up: tensor<4x40x64xf32>, %down: tensor<4x40x64xf32>) {
  // expected-error @+1 {{'moe.expert_dispatch' op expects down of shape 4x64x40, got 4x40x64}}
  %0 = moe.expert_dispatch %h, experts(%i, %w) up %up down %down activation(relu) : (tensor<?x64xf32>, tensor<?x2xi32>, tensor<?x2xf32>, tensor<4x40x64xf32>, tensor<4x40x64xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @dispatch_weights(%h: tensor<?x64xf32>, %i: tensor<?x2xi32>, %w: tensor<?x3xf32>, %up: tensor<4x40x64xf32>, %down: tensor<4x64x40xf32>) {
  // expected-error @+1 {{'moe.expert_dispatch' op expects weights of shape ?x2, got ?x3}}
  %0 = moe.expert_dispatch %h, experts(%i, %w) up %up down %down activation(relu) : (tensor<?x64xf32>, tensor<?x2xi32>, tensor<?x3xf32>, tensor<4x40x64xf32>, tensor<4x64x40xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @dispatch_tokens(%h: tensor<?x64xf32>, %i: tensor<1x2xi32>, %w: tensor<1x2xf32>, %up: tensor<4x40x64xf32>, %down: tensor<4x64x40xf32>) {
  // expected-error @+1 {{'moe.expert_dispatch' op expects input and indices to have the same token dimension, got ? and 1}}
  %0 = moe.expert_dispatch %h, experts(%i, %w) up %up down %down activation(relu) : (tensor<?x64xf32>, tensor<1x2xi32>, tensor<1x2xf32>, tensor<4x40x64xf32>, tensor<4x64x40xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @dispatch_result(%h: tensor<?x64xf32>, %i: tensor<?x2xi32>, %w: tensor<?x2xf32>, %up: tensor<4x40x64xf32>, %down: tensor<4x64x40xf32>) {
  // expected-error @+1 {{'moe.expert_dispatch' op expects the result type to match the input, got 'tensor<?x40xf32>'}}
  %0 = moe.expert_dispatch %h, experts(%i, %w) up %up down %down activation(relu) : (tensor<?x64xf32>, tensor<?x2xi32>, tensor<?x2xf32>, tensor<4x40x64xf32>, tensor<4x64x40xf32>) -> tensor<?x40xf32>
  return
}

// -----

func.func @logits_weight(%x: tensor<1x64xf32>, %w: tensor<100x32xf32>) {
  // expected-error @+1 {{'moe.logits' op expects weight [V, 64], got 100x32}}
  %0 = moe.logits %x, %w : tensor<1x64xf32>, tensor<100x32xf32> -> tensor<1x100xf32>
  return
}

// -----

func.func @logits_bias(%x: tensor<1x64xf32>, %w: tensor<100x64xf32>, %b: tensor<64xf32>) {
  // expected-error @+1 {{'moe.logits' op expects bias of shape 100, got 64}}
  %0 = moe.logits %x, %w bias %b : tensor<1x64xf32>, tensor<100x64xf32>, tensor<64xf32> -> tensor<1x100xf32>
  return
}

// -----

func.func @logits_result(%x: tensor<1x64xf32>, %w: tensor<100x64xf32>) {
  // expected-error @+1 {{'moe.logits' op expects result of shape 1x100, got 1x64}}
  %0 = moe.logits %x, %w : tensor<1x64xf32>, tensor<100x64xf32> -> tensor<1x64xf32>
  return
}

// -----

func.func @fused_name(%x: tensor<?x4xf32>) {
  // expected-error @+1 {{'moe.fused' op expects a fusion name}}
  %0 = moe.fused "" -> (tensor<?x4xf32>) {
    moe.yield %x : tensor<?x4xf32>
  }
  return
}

// -----

func.func @fused_yield(%x: tensor<?x4xf32>) {
  // expected-error @+1 {{'moe.fused' op expects moe.yield of the result types}}
  %0 = moe.fused "g" -> (tensor<?x8xf32>) {
    moe.yield %x : tensor<?x4xf32>
  }
  return
}

// -----

// expected-error @+1 {{'moe.kernel' op expects moe.yield of the result types}}
moe.kernel @bad_kernel(%x: tensor<?x4xf32>) -> tensor<?x8xf32> {
  moe.yield %x : tensor<?x4xf32>
}

// -----

func.func @call_unknown(%x: tensor<?x4xf32>) {
  // expected-error @+1 {{'moe.call' op expects 'nope' to name a moe.kernel}}
  %0 = moe.call @nope(%x) : (tensor<?x4xf32>) -> tensor<?x4xf32>
  return
}

// -----

moe.kernel @identity(%x: tensor<?x4xf32>) -> tensor<?x4xf32> {
  moe.yield %x : tensor<?x4xf32>
}
func.func @call_types(%x: tensor<1x4xf32>) {
  // expected-error @+1 {{'moe.call' op expects the types of 'identity': '(tensor<?x4xf32>) -> tensor<?x4xf32>'}}
  %0 = moe.call @identity(%x) : (tensor<1x4xf32>) -> tensor<1x4xf32>
  return
}

// -----

!conv = !moe.conv_state<layers = 2, channels = 4, width = 3, element = f32>
func.func @conv_write_channels(%x: tensor<?x5xf32>, %s: !conv, %p: index) {
  // expected-error @+1 {{'moe.conv_state_write' op expects the state to hold 5 channels, got '!moe.conv_state<layers = 2, channels = 4, width = 3, element = f32>'}}
  moe.conv_state_write %x into(%s[0]) at %p : tensor<?x5xf32>, !conv
  return
}

// -----

!conv = !moe.conv_state<layers = 2, channels = 4, width = 3, element = f32>
func.func @cached_conv_layer(%x: tensor<?x4xf32>, %w: tensor<4x1x3xf32>, %s: !conv, %p: index) {
  // expected-error @+1 {{'moe.cached_conv1d' op expects layer in [0, 2), got 5}}
  %0 = moe.cached_conv1d %x, %w state(%s[5]) at %p : tensor<?x4xf32>, tensor<4x1x3xf32>, !conv
  return
}

// -----

!conv = !moe.conv_state<layers = 2, channels = 4, width = 3, element = f32>
func.func @conv_view(%s: !conv) {
  // expected-error @+1 {{'moe.conv_state_layer' op expects a one-layer view of the same channels, width and element type, got '!moe.conv_state<layers = 1, channels = 4, width = 2, element = f32>'}}
  %0 = moe.conv_state_layer %s[1] : !conv -> !moe.conv_state<layers = 1, channels = 4, width = 2, element = f32>
  return
}

// -----

func.func @dequantize_bytes(%c: tensor<59xui8>, %s: tensor<40xf32>) {
  // expected-error @+1 {{'moe.dequantize' op expects 60 bytes of sign1 codes per matrix, got 59}}
  %0 = moe.dequantize %c, %s format(sign1) cols(12) : tensor<59xui8>, tensor<40xf32> -> tensor<40x12xf32>
  return
}

// -----

func.func @dequantize_scales(%c: tensor<240xui8>, %s: tensor<41xf32>) {
  // expected-error @+1 {{'moe.dequantize' op expects scales for 40 rows, got 41}}
  %0 = moe.dequantize %c, %s format(int4) cols(12) : tensor<240xui8>, tensor<41xf32> -> tensor<40x12xf32>
  return
}

// -----

func.func @dequantize_offset(%c: tensor<60xui8>, %s: tensor<40xf32>) {
  // expected-error @+1 {{'moe.dequantize' op offset_binary applies to int2, int4 and int8 codes}}
  %0 = moe.dequantize %c, %s format(sign1) cols(12) {offset_binary} : tensor<60xui8>, tensor<40xf32> -> tensor<40x12xf32>
  return
}

// -----

// 12 columns in groups of 5: 3 scales a row (the last group is short).
func.func @dequantize_groups(%c: tensor<480xui8>, %s: tensor<40x2xf32>) {
  // expected-error @+1 {{'moe.dequantize' op expects 3 scales per row (ceil(12 / 5)), got 2}}
  %0 = moe.dequantize %c, %s format(int8) cols(12) group(5) : tensor<480xui8>, tensor<40x2xf32> -> tensor<40x12xf32>
  return
}

// -----

func.func @dequantize_group_rank(%c: tensor<120xui8>, %s: tensor<40xf32>) {
  // expected-error @+1 {{'moe.dequantize' op expects packed [.., B], scale [.., N, groups] and result [.., N, K] with the same leading dimensions}}
  %0 = moe.dequantize %c, %s format(int2) cols(12) group(4) : tensor<120xui8>, tensor<40xf32> -> tensor<40x12xf32>
  return
}

// -----

func.func @dequantize_group_zero(%c: tensor<120xui8>, %s: tensor<40x1xf32>) {
  // expected-error @+1 {{'moe.dequantize' op expects group(G) with G >= 1, got 0}}
  %0 = moe.dequantize %c, %s format(int2) cols(12) group(0) : tensor<120xui8>, tensor<40x1xf32> -> tensor<40x12xf32>
  return
}

// -----

func.func @dequantize_int2_bytes(%c: tensor<119xui8>, %s: tensor<40xf32>) {
  // expected-error @+1 {{'moe.dequantize' op expects 120 bytes of int2 codes per matrix, got 119}}
  %0 = moe.dequantize %c, %s format(int2) cols(12) : tensor<119xui8>, tensor<40xf32> -> tensor<40x12xf32>
  return
}

// -----

func.func @dequantize_offsets_type(%c: tensor<240xui8>, %s: tensor<40xf32>, %o: tensor<40xf16>) {
  // expected-error @+1 {{'moe.dequantize' op expects offsets of the scales' type 'tensor<40xf32>', got 'tensor<40xf16>'}}
  %0 = moe.dequantize %c, %s offset(%o) format(int4) cols(12) : tensor<240xui8>, tensor<40xf32>, tensor<40xf16> -> tensor<40x12xf32>
  return
}

// -----

func.func @quantized_offsets_symmetric() {
  // expected-error @+1 {{'moe.weight' op expects offsets only of an asymmetric quantization}}
  %0 = moe.weight ["w"] quantize(int4, group 32, shape [8, 40]) offsets : tensor<8x2xf32>
  return
}

// -----

func.func @quantized_offsets_codes() {
  // expected-error @+1 {{'moe.weight' op expects offsets of f32 or f16, got 'tensor<160xui8>'}}
  %0 = moe.weight ["w"] quantize(int4, group 32, shape [8, 40]) asymmetric offsets : tensor<160xui8>
  return
}

// -----

func.func @asymmetric_unquantized() {
  // expected-error @+1 {{'moe.weight' op expects quantize(..) with a quantization group, shape, asymmetric or offsets}}
  %0 = moe.weight ["w"] asymmetric : tensor<8x40xf32>
  return
}

// -----

func.func @quantized_codes_size() {
  // expected-error @+1 {{'moe.weight' op expects codes of shape 160 for int4 8x40 in groups of 32, got 'tensor<159xui8>'}}
  %0 = moe.weight ["w"] quantize(int4, group 32, shape [8, 40]) : tensor<159xui8>
  return
}

// -----

func.func @quantized_scales_shape() {
  // expected-error @+1 {{'moe.weight' op expects scales of shape 8x2 for int4 8x40 in groups of 32, got 'tensor<8x1xf32>'}}
  %0 = moe.weight ["w"] quantize(int4, group 32, shape [8, 40]) : tensor<8x1xf32>
  return
}

// -----

func.func @quantized_element() {
  // expected-error @+1 {{'moe.weight' op expects the codes (ui8) or the scales (f32 or f16) of a quantized weight, got 'tensor<8x2xbf16>'}}
  %0 = moe.weight ["w"] quantize(int4, group 32, shape [8, 40]) : tensor<8x2xbf16>
  return
}

// -----

func.func @quantized_group() {
  // expected-error @+1 {{'moe.weight' op expects a quantization group >= 1}}
  %0 = moe.weight ["w"] quantize(int4, group 0, shape [8, 40]) : tensor<160xui8>
  return
}

// -----

func.func @quantized_stack() {
  // expected-error @+1 {{'moe.weight' op expects a quantized shape [N, K] or [E, N, K] with E = the number of sources}}
  %0 = moe.weight ["a", "b"] quantize(int8, group 8, shape [8, 8]) : tensor<2x64xui8>
  return
}

// -----

func.func @quantized_rows() {
  // expected-error @+1 {{'moe.weight' op expects rows [0, 3] to select 3 rows, got [8, 40]}}
  %0 = moe.weight ["w"] rows [0, 3] quantize(int8, group 8, shape [8, 40]) : tensor<320xui8>
  return
}

// -----

func.func @quantized_padded_row_major() {
  // expected-error @+1 {{'moe.weight' op expects codes of shape 160 for int4 8x40 in groups of 32, got 'tensor<176xui8>'}}
  %0 = moe.weight ["w"] quantize(int4, group 32, shape [8, 40]) : tensor<176xui8>
  return
}

// -----

// 5x12 int4 codes in runs of 4 bytes (8 codes): 8 runs, 32 bytes.
func.func @dequantize_lanes_bytes(%c: tensor<30xui8>, %s: tensor<5xf32>) {
  // expected-error @+1 {{'moe.dequantize' op expects 32 bytes of int4 codes per matrix, got 30}}
  %0 = moe.dequantize %c, %s format(int4) cols(12) transposed lanes(4) : tensor<30xui8>, tensor<5xf32> -> tensor<5x12xf32>
  return
}

// -----

func.func @dequantize_lanes_range(%c: tensor<30xui8>, %s: tensor<5xf32>) {
  // expected-error @+1 {{'moe.dequantize' op expects lanes(L) with 1 <= L <= 256, got 0}}
  %0 = moe.dequantize %c, %s format(int4) cols(12) transposed lanes(0) : tensor<30xui8>, tensor<5xf32> -> tensor<5x12xf32>
  return
}

// -----

func.func @int8_float_weight(%x: tensor<?x64xf32>, %w: tensor<8x64xf32>) -> tensor<?x8xf32> {
  // expected-error @+1 {{'moe.linear' op expects packed weights (moe.dequantize) with int8_activations}}
  %y = moe.linear %x, %w int8_activations(32) : tensor<?x64xf32>, tensor<8x64xf32> -> tensor<?x8xf32>
  return %y : tensor<?x8xf32>
}

// -----

func.func @int8_block_size(%x: tensor<?x64xf32>, %c: tensor<256xui8>, %s: tensor<8x2xf32>) -> tensor<?x8xf32> {
  %w = moe.dequantize %c, %s format(int4) cols(64) group(32) : tensor<256xui8>, tensor<8x2xf32> -> tensor<8x64xf32>
  // expected-error @+1 {{'moe.linear' op expects int8_activations(B) with B a multiple of 4 in [4, 4096], got 6}}
  %y = moe.linear %x, %w int8_activations(6) : tensor<?x64xf32>, tensor<8x64xf32> -> tensor<?x8xf32>
  return %y : tensor<?x8xf32>
}

// -----

func.func @int8_block_group(%x: tensor<?x64xf32>, %c: tensor<256xui8>, %s: tensor<8x4xf32>) -> tensor<?x8xf32> {
  %w = moe.dequantize %c, %s format(int4) cols(64) group(16) : tensor<256xui8>, tensor<8x4xf32> -> tensor<8x64xf32>
  // expected-error @+1 {{'moe.logits' op expects int8_activations(32) to divide the weight's 64 columns and its group of 16}}
  %y = moe.logits %x, %w int8_activations(32) : tensor<?x64xf32>, tensor<8x64xf32> -> tensor<?x8xf32>
  return %y : tensor<?x8xf32>
}

// -----

func.func @int8_dot_blocks(%x: tensor<?x64xf32>, %i: tensor<?x2xi32>, %g: tensor<?x2xf32>, %c: tensor<3x256xui8>, %s: tensor<3x32xf32>, %dc: tensor<3x256xui8>, %ds: tensor<3x64xf32>) -> tensor<?x64xf32> {
  %u = moe.dequantize %c, %s format(sign1) cols(64) dot(4) : tensor<3x256xui8>, tensor<3x32xf32> -> tensor<3x32x64xf32>
  %d = moe.dequantize %dc, %ds format(sign1) cols(32) dot(4) : tensor<3x256xui8>, tensor<3x64xf32> -> tensor<3x64x32xf32>
  // expected-error @+1 {{'moe.expert_dispatch' op expects int8_activations(16) to hold whole dot(4) blocks of 32 columns}}
  %y = moe.expert_dispatch %x, experts(%i, %g) up %u down %d activation(relu) int8_activations(16) : (tensor<?x64xf32>, tensor<?x2xi32>, tensor<?x2xf32>, tensor<3x32x64xf32>, tensor<3x64x32xf32>) -> tensor<?x64xf32>
  return %y : tensor<?x64xf32>
}

// -----

func.func @dot_depth(%c: tensor<256xui8>, %s: tensor<8xf32>) -> tensor<8x64xf32> {
  // expected-error @+1 {{'moe.dequantize' op expects dot(D) with D = 2 or 4, got 3}}
  %w = moe.dequantize %c, %s format(int4) cols(64) dot(3) : tensor<256xui8>, tensor<8xf32> -> tensor<8x64xf32>
  return %w : tensor<8x64xf32>
}

// -----

func.func @dot_and_transposed(%c: tensor<256xui8>, %s: tensor<8xf32>) -> tensor<8x64xf32> {
  // expected-error @+1 {{'moe.dequantize' op expects dot(D) without transposed or lanes: they are other orders of the codes}}
  %w = moe.dequantize %c, %s format(int4) cols(64) transposed dot(4) : tensor<256xui8>, tensor<8xf32> -> tensor<8x64xf32>
  return %w : tensor<8x64xf32>
}

// -----

func.func @panels_without_dot(%c: tensor<256xui8>, %s: tensor<8xf32>) -> tensor<8x64xf32> {
  // expected-error @+1 {{'moe.dequantize' op expects panels(P) only with dot(D): panels order the dot-product blocks}}
  %w = moe.dequantize %c, %s format(int4) cols(64) panels(4) : tensor<256xui8>, tensor<8xf32> -> tensor<8x64xf32>
  return %w : tensor<8x64xf32>
}

// -----

func.func @panels_not_dividing_rows(%c: tensor<256xui8>, %s: tensor<8xf32>) -> tensor<8x64xf32> {
  // expected-error @+1 {{'moe.dequantize' op expects panels(P) with P >= 1 dividing the 8 rows, got 3}}
  %w = moe.dequantize %c, %s format(int4) cols(64) dot(4) panels(3) : tensor<256xui8>, tensor<8xf32> -> tensor<8x64xf32>
  return %w : tensor<8x64xf32>
}

// -----

func.func @dot_columns(%c: tensor<24xui8>, %s: tensor<8xf32>) -> tensor<8x24xf32> {
  // expected-error @+1 {{'moe.dequantize' op expects dot(4) blocks of 32 sign1 columns to divide cols(24)}}
  %w = moe.dequantize %c, %s format(sign1) cols(24) dot(4) : tensor<24xui8>, tensor<8xf32> -> tensor<8x24xf32>
  return %w : tensor<8x24xf32>
}
