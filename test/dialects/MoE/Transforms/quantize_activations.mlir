// RUN: moe-opt %s --split-input-file --moe-quantize-activations | FileCheck %s
// RUN: moe-opt %s --split-input-file --moe-quantize-activations=block=64 | FileCheck %s --check-prefix=BLOCK64
// RUN: not moe-opt %s --split-input-file --moe-quantize-activations=block=16 2>&1 | FileCheck %s --check-prefix=BAD

// BAD: moe-quantize-activations: block must be a multiple of 32 in [32, 4096], got 16

// Projections of packed weights get int8 inputs; a float weight, and a
// packed weight whose groups are smaller than a block, keep f32 inputs.
// An expert dispatch converts only when all its weights are packed.
// CHECK-LABEL: func.func @select
// CHECK: moe.linear %{{.+}}, %[[P:.+]] int8_activations(32) : tensor<?x64xf32>, tensor<8x64xf32>
// CHECK: moe.linear %{{.+}}, %{{.+}} : tensor<?x64xf32>, tensor<8x64xf32>
// CHECK: moe.linear %{{.+}}, %{{.+}} : tensor<?x64xf32>, tensor<8x64xf32>
// CHECK: moe.logits %{{.+}}, %[[P]] int8_activations(32) :
// CHECK: moe.expert_dispatch {{.+}} activation(relu) int8_activations(32) :
// CHECK: moe.expert_dispatch {{.+}} activation(relu) :
// BLOCK64-LABEL: func.func @select
// BLOCK64: moe.linear %{{.+}}, %{{.+}} int8_activations(64) :
// BLOCK64: moe.logits %{{.+}}, %{{.+}} int8_activations(64) :
// BLOCK64: moe.expert_dispatch {{.+}} activation(relu) :
func.func @select(%x: tensor<?x64xf32>, %i: tensor<?x2xi32>, %g: tensor<?x2xf32>) -> (tensor<?x8xf32>, tensor<?x8xf32>, tensor<?x8xf32>, tensor<?x8xf32>, tensor<?x64xf32>, tensor<?x64xf32>) {
  %c = moe.weight ["p"] quantize(int4, group 64, shape [8, 64]) : tensor<256xui8>
  %s = moe.weight ["p"] quantize(int4, group 64, shape [8, 64]) : tensor<8x1xf16>
  %p = moe.dequantize %c, %s format(int4) cols(64) group(64) : tensor<256xui8>, tensor<8x1xf16> -> tensor<8x64xf32>
  %a = moe.linear %x, %p : tensor<?x64xf32>, tensor<8x64xf32> -> tensor<?x8xf32>
  %f = moe.weight ["f"] : tensor<8x64xf32>
  %b = moe.linear %x, %f : tensor<?x64xf32>, tensor<8x64xf32> -> tensor<?x8xf32>
  %c16 = moe.weight ["q"] quantize(int4, group 16, shape [8, 64]) : tensor<256xui8>
  %s16 = moe.weight ["q"] quantize(int4, group 16, shape [8, 64]) : tensor<8x4xf16>
  %q = moe.dequantize %c16, %s16 format(int4) cols(64) group(16) : tensor<256xui8>, tensor<8x4xf16> -> tensor<8x64xf32>
  %d = moe.linear %x, %q : tensor<?x64xf32>, tensor<8x64xf32> -> tensor<?x8xf32>
  %l = moe.logits %x, %p : tensor<?x64xf32>, tensor<8x64xf32> -> tensor<?x8xf32>
  %uc = moe.weight ["u"] : tensor<3x256xui8>
  %us = moe.weight ["u.scale"] : tensor<3x32xf32>
  %u = moe.dequantize %uc, %us format(sign1) cols(64) : tensor<3x256xui8>, tensor<3x32xf32> -> tensor<3x32x64xf32>
  %dc = moe.weight ["d"] : tensor<3x256xui8>
  %ds = moe.weight ["d.scale"] : tensor<3x64xf32>
  %dd = moe.dequantize %dc, %ds format(sign1) cols(32) : tensor<3x256xui8>, tensor<3x64xf32> -> tensor<3x64x32xf32>
  %e = moe.expert_dispatch %x, experts(%i, %g) up %u down %dd activation(relu) : (tensor<?x64xf32>, tensor<?x2xi32>, tensor<?x2xf32>, tensor<3x32x64xf32>, tensor<3x64x32xf32>) -> tensor<?x64xf32>
  %fd = moe.weight ["fd"] : tensor<3x64x32xf32>
  %e2 = moe.expert_dispatch %x, experts(%i, %g) up %u down %fd activation(relu) : (tensor<?x64xf32>, tensor<?x2xi32>, tensor<?x2xf32>, tensor<3x32x64xf32>, tensor<3x64x32xf32>) -> tensor<?x64xf32>
  return %a, %b, %d, %l, %e, %e2 : tensor<?x8xf32>, tensor<?x8xf32>, tensor<?x8xf32>, tensor<?x8xf32>, tensor<?x64xf32>, tensor<?x64xf32>
}
