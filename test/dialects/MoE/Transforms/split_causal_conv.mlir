// RUN: moe-opt %s --split-input-file --verify-diagnostics --moe-split-causal-conv | FileCheck %s

!conv = !moe.conv_state<layers = 2, channels = 8, width = 3, element = f32>

// The read comes before the write, which overwrites slots the read needs.
// CHECK-LABEL: func.func @split
// CHECK-SAME: (%[[X:.+]]: tensor<?x8xf32>, %[[W:.+]]: tensor<8x1x3xf32>, %[[S:.+]]: !moe.conv_state<{{.+}}>, %[[P:.+]]: index)
// CHECK-NOT: moe.causal_conv1d
// CHECK: %[[Y:.+]] = moe.cached_conv1d %[[X]], %[[W]] state(%[[S]][1]) at %[[P]]
// CHECK-NEXT: moe.conv_state_write %[[X]] into(%[[S]][1]) at %[[P]]
// CHECK-NEXT: return %[[Y]]
func.func @split(%x: tensor<?x8xf32>, %w: tensor<8x1x3xf32>, %s: !conv, %p: index) -> tensor<?x8xf32> {
  %0 = moe.causal_conv1d %x, %w state(%s[1]) at %p : tensor<?x8xf32>, tensor<8x1x3xf32>, !conv
  return %0 : tensor<?x8xf32>
}

// -----

// A width-1 convolution keeps no rows: there is no state to split off.
!conv1 = !moe.conv_state<layers = 1, channels = 8, width = 1, element = f32>
func.func @width1(%x: tensor<?x8xf32>, %w: tensor<8x1x1xf32>, %s: !conv1, %p: index) -> tensor<?x8xf32> {
  // expected-error @+1 {{'moe.causal_conv1d' op of width 1 keeps no state}}
  %0 = moe.causal_conv1d %x, %w state(%s[0]) at %p : tensor<?x8xf32>, tensor<8x1x1xf32>, !conv1
  return %0 : tensor<?x8xf32>
}
