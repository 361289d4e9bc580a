// RUN: moe-opt %s --split-input-file --moe-cpu-assign-weight-layouts | FileCheck %s

// Projection weights are stored transposed; norms, embeddings and routers
// stay row-major.
// CHECK-LABEL: func.func @layouts
// CHECK: moe.weight ["norm"] : tensor<8xf32>
// CHECK: moe.weight ["q"] layout transposed : tensor<8x8xf32>
// CHECK: moe.weight ["router"] : tensor<4x8xf32>
// CHECK: moe.weight ["experts"] layout transposed : tensor<4x6x8xf32>
func.func @layouts(%x: tensor<?x8xf32>, %i: tensor<?x2xi32>, %g: tensor<?x2xf32>, %d: tensor<4x8x6xf32>) -> (tensor<?x8xf32>, tensor<?x2xi32>, tensor<?x8xf32>) {
  %n = moe.weight ["norm"] : tensor<8xf32>
  %h = moe.rms_norm %x, %n eps(1.0e-6) : tensor<?x8xf32>, tensor<8xf32>
  %wq = moe.weight ["q"] : tensor<8x8xf32>
  %q = moe.linear %h, %wq : tensor<?x8xf32>, tensor<8x8xf32> -> tensor<?x8xf32>
  %r = moe.weight ["router"] : tensor<4x8xf32>
  %ri, %rw = moe.route %h, %r scoring(softmax) top_k(2) : tensor<?x8xf32>, tensor<4x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  %e = moe.weight ["experts"] : tensor<4x6x8xf32>
  %y = moe.expert_dispatch %h, experts(%i, %g) up %e down %d activation(relu) : (tensor<?x8xf32>, tensor<?x2xi32>, tensor<?x2xf32>, tensor<4x6x8xf32>, tensor<4x8x6xf32>) -> tensor<?x8xf32>
  return %q, %ri, %y : tensor<?x8xf32>, tensor<?x2xi32>, tensor<?x8xf32>
}

// -----

// A tied embedding read by the embedding (row-major) and the logits
// (transposed) becomes two weights.
// CHECK-LABEL: func.func @tied
// CHECK-DAG: %[[ROW:.+]] = moe.weight ["embed"] : tensor<10x8xf32>
// CHECK-DAG: %[[T:.+]] = moe.weight ["embed"] layout transposed : tensor<10x8xf32>
// CHECK: moe.embed %[[ROW]]
// CHECK: moe.logits %{{.+}}, %[[T]]
func.func @tied(%ids: tensor<1xi32>) -> tensor<1x10xf32> {
  %e = moe.weight ["embed"] : tensor<10x8xf32>
  %x = moe.embed %e[%ids] : tensor<10x8xf32>, tensor<1xi32> -> tensor<1x8xf32>
  %l = moe.logits %x, %e : tensor<1x8xf32>, tensor<10x8xf32> -> tensor<1x10xf32>
  return %l : tensor<1x10xf32>
}

// -----

// Packed weights read by projections: the dequantize reads its codes column
// by column in runs of 8 bytes (lanes=8), the codes weight is padded to
// whole runs (a 40x96 int4 matrix is 1920 bytes; runs of 16 codes: 240
// runs of 8 bytes), group scales are stored transposed; a tied packed
// embedding keeps one copy, read by the embedding too. Int8 codes need no
// runs; per-row scales no layout.
// RUN: moe-opt %s --split-input-file --moe-cpu-assign-weight-layouts=lanes=8 | FileCheck %s --check-prefix=PACKED
// PACKED-LABEL: func.func @packed
// PACKED-DAG: %[[C:.+]] = moe.weight ["up"] quantize(int4, group 32, shape [40, 96]) layout transposed : tensor<1920xui8>
// PACKED-DAG: %[[S:.+]] = moe.weight ["up"] quantize(int4, group 32, shape [40, 96]) layout transposed : tensor<40x3xf32>
// PACKED-DAG: moe.dequantize %[[C]], %[[S]] format(int4) cols(96) group(32) transposed lanes(8) :
// PACKED-DAG: %[[EC:.+]] = moe.weight ["emb"] quantize(int8, group 32, shape [10, 96]) layout transposed : tensor<960xui8>
// PACKED-DAG: %[[E:.+]] = moe.dequantize %[[EC]], %{{.+}} format(int8) cols(96) group(32) transposed :
// PACKED-DAG: %[[BC:.+]] = moe.weight ["bits"] layout transposed : tensor<120xui8>
// PACKED-DAG: %[[BS:.+]] = moe.weight ["bits.scale"] : tensor<10xf32>
// PACKED-DAG: moe.dequantize %[[BC]], %[[BS]] format(sign1) cols(96) transposed lanes(8) :
// PACKED-DAG: moe.embed %[[E]]
// PACKED-DAG: moe.logits %{{.+}}, %[[E]]
func.func @packed(%ids: tensor<1xi32>) -> (tensor<1x10xf32>, tensor<1x40xf32>, tensor<1x10xf32>) {
  %ec = moe.weight ["emb"] quantize(int8, group 32, shape [10, 96]) : tensor<960xui8>
  %es = moe.weight ["emb"] quantize(int8, group 32, shape [10, 96]) : tensor<10x3xf32>
  %e = moe.dequantize %ec, %es format(int8) cols(96) group(32) : tensor<960xui8>, tensor<10x3xf32> -> tensor<10x96xf32>
  %x = moe.embed %e[%ids] : tensor<10x96xf32>, tensor<1xi32> -> tensor<1x96xf32>
  %l = moe.logits %x, %e : tensor<1x96xf32>, tensor<10x96xf32> -> tensor<1x10xf32>
  %uc = moe.weight ["up"] quantize(int4, group 32, shape [40, 96]) : tensor<1920xui8>
  %us = moe.weight ["up"] quantize(int4, group 32, shape [40, 96]) : tensor<40x3xf32>
  %u = moe.dequantize %uc, %us format(int4) cols(96) group(32) : tensor<1920xui8>, tensor<40x3xf32> -> tensor<40x96xf32>
  %y = moe.linear %x, %u : tensor<1x96xf32>, tensor<40x96xf32> -> tensor<1x40xf32>
  %bc = moe.weight ["bits"] : tensor<120xui8>
  %bs = moe.weight ["bits.scale"] : tensor<10xf32>
  %b = moe.dequantize %bc, %bs format(sign1) cols(96) : tensor<120xui8>, tensor<10xf32> -> tensor<10x96xf32>
  %z = moe.linear %x, %b : tensor<1x96xf32>, tensor<10x96xf32> -> tensor<1x10xf32>
  return %l, %y, %z : tensor<1x10xf32>, tensor<1x40xf32>, tensor<1x10xf32>
}

// -----

// Packed weights read with int8 inputs: codes in blocks for the target's dot
// products (dot=2: pmaddwd; 2 bytes of int4 hold 4 columns of a row), group
// scales (and offsets) transposed. The tied embedding reads the same
// blocked codes.
// RUN: moe-opt %s --split-input-file --moe-cpu-assign-weight-layouts="lanes=8 dot=2" | FileCheck %s --check-prefix=DOT
// DOT-LABEL: func.func @int8
// DOT-DAG: %[[C:.+]] = moe.weight ["emb"] quantize(int4, group 32, shape [10, 64]) asymmetric layout transposed : tensor<320xui8>
// DOT-DAG: %[[S:.+]] = moe.weight ["emb"] quantize(int4, group 32, shape [10, 64]) asymmetric layout transposed : tensor<10x2xf16>
// DOT-DAG: %[[O:.+]] = moe.weight ["emb"] quantize(int4, group 32, shape [10, 64]) asymmetric offsets layout transposed : tensor<10x2xf16>
// DOT-DAG: %[[E:.+]] = moe.dequantize %[[C]], %[[S]] offset(%[[O]]) format(int4) cols(64) group(32) dot(2) :
// DOT-DAG: moe.embed %[[E]]
// DOT-DAG: moe.logits %{{.+}}, %[[E]] int8_activations(32) :
func.func @int8(%ids: tensor<1xi32>) -> tensor<1x10xf32> {
  %ec = moe.weight ["emb"] quantize(int4, group 32, shape [10, 64]) asymmetric : tensor<320xui8>
  %es = moe.weight ["emb"] quantize(int4, group 32, shape [10, 64]) asymmetric : tensor<10x2xf16>
  %eo = moe.weight ["emb"] quantize(int4, group 32, shape [10, 64]) asymmetric offsets : tensor<10x2xf16>
  %e = moe.dequantize %ec, %es offset(%eo) format(int4) cols(64) group(32) : tensor<320xui8>, tensor<10x2xf16>, tensor<10x2xf16> -> tensor<10x64xf32>
  %x = moe.embed %e[%ids] : tensor<10x64xf32>, tensor<1xi32> -> tensor<1x64xf32>
  %l = moe.logits %x, %e int8_activations(32) : tensor<1x64xf32>, tensor<10x64xf32> -> tensor<1x10xf32>
  return %l : tensor<1x10xf32>
}

// -----

// On a CPU target (panel > 0), rows that divide into panels of one vector
// (lanes=8) get `panels(8)` beside the dot blocks; 12 rows do not and keep
// plain dot blocks. A GPU target (panel=0) keeps plain dot blocks.
// RUN: moe-opt %s --split-input-file --moe-cpu-assign-weight-layouts="lanes=8 dot=4 panel=32" | FileCheck %s --check-prefix=DOTPANELS
// RUN: moe-opt %s --split-input-file --moe-cpu-assign-weight-layouts="lanes=8 dot=4" | FileCheck %s --check-prefix=GPU
// GPU-LABEL: func.func @int8_panels
// GPU-NOT: panels(
// GPU: func.func
// DOTPANELS-LABEL: func.func @int8_panels
// DOTPANELS-DAG: moe.dequantize {{.+}} format(int4) cols(64) group(32) dot(4) panels(8) : tensor<512xui8>, tensor<16x2xf16> -> tensor<16x64xf32>
// DOTPANELS-DAG: moe.dequantize {{.+}} format(int4) cols(64) group(32) dot(4) : tensor<384xui8>, tensor<12x2xf16> -> tensor<12x64xf32>
func.func @int8_panels(%x: tensor<1x64xf32>) -> (tensor<1x16xf32>, tensor<1x12xf32>) {
  %qc = moe.weight ["q"] quantize(int4, group 32, shape [16, 64]) : tensor<512xui8>
  %qs = moe.weight ["q"] quantize(int4, group 32, shape [16, 64]) : tensor<16x2xf16>
  %q = moe.dequantize %qc, %qs format(int4) cols(64) group(32) : tensor<512xui8>, tensor<16x2xf16> -> tensor<16x64xf32>
  %y = moe.linear %x, %q int8_activations(32) : tensor<1x64xf32>, tensor<16x64xf32> -> tensor<1x16xf32>
  %oc = moe.weight ["o"] quantize(int4, group 32, shape [12, 64]) : tensor<384xui8>
  %os = moe.weight ["o"] quantize(int4, group 32, shape [12, 64]) : tensor<12x2xf16>
  %o = moe.dequantize %oc, %os format(int4) cols(64) group(32) : tensor<384xui8>, tensor<12x2xf16> -> tensor<12x64xf32>
  %w = moe.linear %x, %o int8_activations(32) : tensor<1x64xf32>, tensor<12x64xf32> -> tensor<1x12xf32>
  return %y, %w : tensor<1x16xf32>, tensor<1x12xf32>
}

// -----

// With panel=4 (a CPU target's tile), float projection weights whose
// output features divide into panels are stored in them; others (6 rows)
// stay transposed, and so do the scales of packed weights.
// RUN: moe-opt %s --split-input-file --moe-cpu-assign-weight-layouts=panel=4 | FileCheck %s --check-prefix=PANELS
// PANELS-LABEL: func.func @panels
// PANELS-DAG: moe.weight ["q"] layout panels(4) : tensor<8x8xf32>
// PANELS-DAG: moe.weight ["odd"] layout transposed : tensor<6x8xf32>
// PANELS-DAG: moe.weight ["experts"] layout panels(4) : tensor<4x8x8xf32>
// PANELS-DAG: moe.weight ["router"] : tensor<4x8xf32>
// PANELS-DAG: moe.weight ["up"] quantize(int8, group 32, shape [8, 64]) layout transposed : tensor<8x2xf32>
func.func @panels(%x: tensor<?x8xf32>, %y: tensor<?x64xf32>, %i: tensor<?x2xi32>, %g: tensor<?x2xf32>) -> (tensor<?x8xf32>, tensor<?x6xf32>, tensor<?x8xf32>, tensor<?x2xi32>, tensor<?x8xf32>) {
  %wq = moe.weight ["q"] : tensor<8x8xf32>
  %q = moe.linear %x, %wq : tensor<?x8xf32>, tensor<8x8xf32> -> tensor<?x8xf32>
  %wo = moe.weight ["odd"] : tensor<6x8xf32>
  %o = moe.linear %x, %wo : tensor<?x8xf32>, tensor<6x8xf32> -> tensor<?x6xf32>
  %uc = moe.weight ["up"] quantize(int8, group 32, shape [8, 64]) : tensor<512xui8>
  %us = moe.weight ["up"] quantize(int8, group 32, shape [8, 64]) : tensor<8x2xf32>
  %u = moe.dequantize %uc, %us format(int8) cols(64) group(32) : tensor<512xui8>, tensor<8x2xf32> -> tensor<8x64xf32>
  %p = moe.linear %y, %u : tensor<?x64xf32>, tensor<8x64xf32> -> tensor<?x8xf32>
  %r = moe.weight ["router"] : tensor<4x8xf32>
  %ri, %rw = moe.route %x, %r scoring(softmax) top_k(2) : tensor<?x8xf32>, tensor<4x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  %e = moe.weight ["experts"] : tensor<4x8x8xf32>
  %z = moe.expert_dispatch %x, experts(%i, %g) up %e down %e activation(relu) : (tensor<?x8xf32>, tensor<?x2xi32>, tensor<?x2xf32>, tensor<4x8x8xf32>, tensor<4x8x8xf32>) -> tensor<?x8xf32>
  return %q, %o, %p, %ri, %z : tensor<?x8xf32>, tensor<?x6xf32>, tensor<?x8xf32>, tensor<?x2xi32>, tensor<?x8xf32>
}
