// RUN: moe-opt %s --moe-trace-kernels | FileCheck %s

// Every tensor result of every call gets a trace name in call order, the
// kernel named without its content hash (`_89abcdef`; `_0123abcg` is no
// hash), so that builds for two targets name the same call alike. A name
// the family gave (moe.dump) stays beside it; each function counts its own
// calls. A result of 8-bit or index elements is not traced (dump files hold
// 4-byte values; an index has no fixed width).
// CHECK-LABEL: func.func @prefill
// CHECK: moe.call @norm_projection_89abcdef(%{{.+}}) {moe.trace = ["prefill.000.norm_projection.0", "prefill.000.norm_projection.1"]}
// CHECK: moe.call @add_7(%{{.+}}) {moe.dump = ["layer0.hidden"], moe.trace = ["prefill.001.add_7.0"]}
// CHECK: moe.call @glu_0123abcg(%{{.+}}) {moe.trace = ["prefill.002.glu_0123abcg.0", ""]}
// CHECK: moe.call @positions_2(%{{.+}}) {moe.trace = [""]}
// CHECK-LABEL: func.func @decode
// CHECK: moe.call @norm_projection_89abcdef(%{{.+}}) {moe.trace = ["decode.000.norm_projection.0", "decode.000.norm_projection.1"]}
module {
  moe.kernel @norm_projection_89abcdef(%x: tensor<?x16xf32>) -> (tensor<?x16xf32>, tensor<?x4xi32>) {
    %i = arith.constant dense<0> : tensor<1x4xi32>
    %c = tensor.cast %i : tensor<1x4xi32> to tensor<?x4xi32>
    moe.yield %x, %c : tensor<?x16xf32>, tensor<?x4xi32>
  }
  moe.kernel @add_7(%x: tensor<?x16xf32>) -> tensor<?x16xf32> {
    moe.yield %x : tensor<?x16xf32>
  }
  moe.kernel @glu_0123abcg(%x: tensor<?x16xf32>) -> (tensor<?x16xf32>, tensor<?x16xi8>) {
    %i = arith.constant dense<0> : tensor<1x16xi8>
    %c = tensor.cast %i : tensor<1x16xi8> to tensor<?x16xi8>
    moe.yield %x, %c : tensor<?x16xf32>, tensor<?x16xi8>
  }
  moe.kernel @positions_2(%x: tensor<?x16xf32>) -> tensor<?xindex> {
    %i = arith.constant dense<0> : tensor<1xindex>
    %c = tensor.cast %i : tensor<1xindex> to tensor<?xindex>
    moe.yield %c : tensor<?xindex>
  }
  func.func @prefill(%x: tensor<?x16xf32>) -> tensor<?x16xf32> {
    %0:2 = moe.call @norm_projection_89abcdef(%x) : (tensor<?x16xf32>) -> (tensor<?x16xf32>, tensor<?x4xi32>)
    %1 = moe.call @add_7(%0#0) {moe.dump = ["layer0.hidden"]} : (tensor<?x16xf32>) -> tensor<?x16xf32>
    %2:2 = moe.call @glu_0123abcg(%1) : (tensor<?x16xf32>) -> (tensor<?x16xf32>, tensor<?x16xi8>)
    %3 = moe.call @positions_2(%2#0) : (tensor<?x16xf32>) -> tensor<?xindex>
    return %2#0 : tensor<?x16xf32>
  }
  func.func @decode(%x: tensor<?x16xf32>) -> tensor<?x16xf32> {
    %0:2 = moe.call @norm_projection_89abcdef(%x) : (tensor<?x16xf32>) -> (tensor<?x16xf32>, tensor<?x4xi32>)
    return %0#0 : tensor<?x16xf32>
  }
}
