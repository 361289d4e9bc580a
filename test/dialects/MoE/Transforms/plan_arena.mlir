// RUN: moe-opt %s --split-input-file --moe-plan-arena | FileCheck %s
// RUN: not moe-opt %s --split-input-file --moe-plan-arena="alignment=48" 2>&1 | FileCheck %s --check-prefix=ALIGN

// ALIGN: moe-plan-arena: alignment must be a power of two

// Each tensor takes chunk x 16 x 4 bytes = 4096 bytes at prefill_chunk 64.
// A call never writes over its own input; a tensor whose last use has
// passed leaves its slot to the next one; the returned tensor goes to the
// caller's output (-1).
// CHECK: module attributes {moe.arena_bytes = 8192 : i64
// CHECK-LABEL: func.func @chain
// CHECK: moe.call @k(%{{.+}}) {moe.arena = array<i64: 0>}
// CHECK: moe.call @k(%{{.+}}) {moe.arena = array<i64: 4096>}
// CHECK: moe.call @k(%{{.+}}) {moe.arena = array<i64: 0>}
// CHECK: moe.call @k(%{{.+}}) {moe.arena = array<i64: -1>}
module attributes {moe.prefill_chunk = 64 : i64} {
  moe.kernel @k(%x: tensor<?x16xf32>) -> tensor<?x16xf32> {
    moe.yield %x : tensor<?x16xf32>
  }
  func.func @chain(%x: tensor<?x16xf32>) -> tensor<?x16xf32> {
    %0 = moe.call @k(%x) : (tensor<?x16xf32>) -> tensor<?x16xf32>
    %1 = moe.call @k(%0) : (tensor<?x16xf32>) -> tensor<?x16xf32>
    %2 = moe.call @k(%1) : (tensor<?x16xf32>) -> tensor<?x16xf32>
    %3 = moe.call @k(%2) : (tensor<?x16xf32>) -> tensor<?x16xf32>
    return %3 : tensor<?x16xf32>
  }
}

// -----

// A tensor read much later keeps its slot while others come and go.
// CHECK: module attributes {moe.arena_bytes = 192 : i64
// CHECK-LABEL: func.func @long_lived
// CHECK: moe.call @k(%{{.+}}) {moe.arena = array<i64: 0>}
// CHECK: moe.call @k(%{{.+}}) {moe.arena = array<i64: 64>}
// CHECK: moe.call @k(%{{.+}}) {moe.arena = array<i64: 128>}
// CHECK: moe.call @k2(%{{.+}}, %{{.+}}) {moe.arena = array<i64: 64>}
module attributes {moe.prefill_chunk = 64 : i64} {
  moe.kernel @k(%x: tensor<1x16xf32>) -> tensor<1x16xf32> {
    moe.yield %x : tensor<1x16xf32>
  }
  moe.kernel @k2(%x: tensor<1x16xf32>, %y: tensor<1x16xf32>) -> tensor<1x16xf32> {
    moe.yield %x : tensor<1x16xf32>
  }
  func.func @long_lived(%x: tensor<1x16xf32>) -> tensor<1x16xf32> {
    %0 = moe.call @k(%x) : (tensor<1x16xf32>) -> tensor<1x16xf32>
    %1 = moe.call @k(%0) : (tensor<1x16xf32>) -> tensor<1x16xf32>
    %2 = moe.call @k(%1) : (tensor<1x16xf32>) -> tensor<1x16xf32>
    %3 = moe.call @k2(%0, %2) : (tensor<1x16xf32>, tensor<1x16xf32>) -> tensor<1x16xf32>
    %4 = moe.call @k(%3) : (tensor<1x16xf32>) -> tensor<1x16xf32>
    return %4 : tensor<1x16xf32>
  }
}
