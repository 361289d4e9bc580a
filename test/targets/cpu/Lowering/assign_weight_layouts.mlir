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
