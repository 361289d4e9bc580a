// RUN: moe-opt %s --split-input-file --moe-select-dispatch | FileCheck %s
// RUN: moe-opt %s --split-input-file --moe-select-dispatch="prefill-strategy=gather" | FileCheck %s --check-prefix=GATHER
// RUN: not moe-opt %s --split-input-file --moe-select-dispatch="prefill-strategy=best" 2>&1 | FileCheck %s --check-prefix=BAD

// BAD: moe-select-dispatch: prefill-strategy must be 'gather' or 'grouped', got 'best'

// One token (decode) gathers its experts' weights.
// CHECK-LABEL: func.func @decode
// CHECK: moe.expert_dispatch {{.+}} activation(silu) strategy(gather)
func.func @decode(%h: tensor<1x8xf32>, %i: tensor<1x2xi32>, %w: tensor<1x2xf32>, %u: tensor<4x6x8xf32>, %d: tensor<4x8x6xf32>) -> tensor<1x8xf32> {
  %0 = moe.expert_dispatch %h, experts(%i, %w) gate %u up %u down %d activation(silu) : (tensor<1x8xf32>, tensor<1x2xi32>, tensor<1x2xf32>, tensor<4x6x8xf32>, tensor<4x6x8xf32>, tensor<4x8x6xf32>) -> tensor<1x8xf32>
  return %0 : tensor<1x8xf32>
}

// -----

// A dynamic token count (prefill) takes the prefill strategy.
// CHECK-LABEL: func.func @prefill
// CHECK: strategy(grouped)
// GATHER-LABEL: func.func @prefill
// GATHER: strategy(gather)
func.func @prefill(%h: tensor<?x8xf32>, %i: tensor<?x2xi32>, %w: tensor<?x2xf32>, %u: tensor<4x6x8xf32>, %d: tensor<4x8x6xf32>) -> tensor<?x8xf32> {
  %0 = moe.expert_dispatch %h, experts(%i, %w) up %u down %d activation(relu) : (tensor<?x8xf32>, tensor<?x2xi32>, tensor<?x2xf32>, tensor<4x6x8xf32>, tensor<4x8x6xf32>) -> tensor<?x8xf32>
  return %0 : tensor<?x8xf32>
}

// -----

// A strategy chosen earlier is kept.
// CHECK-LABEL: func.func @chosen
// CHECK: strategy(gather)
func.func @chosen(%h: tensor<?x8xf32>, %i: tensor<?x2xi32>, %w: tensor<?x2xf32>, %u: tensor<4x6x8xf32>, %d: tensor<4x8x6xf32>) -> tensor<?x8xf32> {
  %0 = moe.expert_dispatch %h, experts(%i, %w) up %u down %d activation(relu) strategy(gather) : (tensor<?x8xf32>, tensor<?x2xi32>, tensor<?x2xf32>, tensor<4x6x8xf32>, tensor<4x8x6xf32>) -> tensor<?x8xf32>
  return %0 : tensor<?x8xf32>
}

// -----

// A static count above gather-max-tokens is not decode.
// CHECK-LABEL: func.func @static_many
// CHECK: strategy(grouped)
func.func @static_many(%h: tensor<4x8xf32>, %i: tensor<4x2xi32>, %w: tensor<4x2xf32>, %u: tensor<4x6x8xf32>, %d: tensor<4x8x6xf32>) -> tensor<4x8xf32> {
  %0 = moe.expert_dispatch %h, experts(%i, %w) up %u down %d activation(relu) : (tensor<4x8xf32>, tensor<4x2xi32>, tensor<4x2xf32>, tensor<4x6x8xf32>, tensor<4x8x6xf32>) -> tensor<4x8xf32>
  return %0 : tensor<4x8xf32>
}
