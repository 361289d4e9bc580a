//===- MoEAttrs.td - Enum attributes of the moe dialect ----*- tablegen -*-===//
//
// The choices in which the seed families differ. Each enum lists every
// variant one of the five families needs, even where only some lower yet; a
// lowering that meets a variant it does not implement reports it by name.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_DIALECTS_MOE_IR_MOEATTRS_TD
#define MOE_DIALECTS_MOE_IR_MOEATTRS_TD

include "dialects/MoE/IR/MoEBase.td"

def MoE_RopeLayout : I32EnumAttr<"RopeLayout",
    "which pairs of dimensions a rotary embedding rotates together", [
  // (j, j + rotary_dims/2): NeoX / HF `rotate_half` (linnet, MLX default).
  I32EnumAttrCase<"HalfSplit", 0, "half_split">,
  // (2j, 2j + 1): GPT-J / Meta LLaMA complex form (Moonlight, physics).
  I32EnumAttrCase<"Interleaved", 1, "interleaved">
]> {
  let genSpecializedAttr = 0;
  let cppNamespace = "::mlir::moe";
}
def MoE_RopeLayoutAttr : MoE_EnumAttr<MoE_RopeLayout, "rope_layout">;

def MoE_RouterScoring : I32EnumAttr<"RouterScoring",
    "how router logits become expert scores", [
  I32EnumAttrCase<"Softmax", 0, "softmax">,
  I32EnumAttrCase<"Sigmoid", 1, "sigmoid">
]> {
  let genSpecializedAttr = 0;
  let cppNamespace = "::mlir::moe";
}
def MoE_RouterScoringAttr : MoE_EnumAttr<MoE_RouterScoring, "router_scoring">;

def MoE_SelectionBias : I32EnumAttr<"SelectionBias",
    "what a router's selection-only bias is added to", [
  // physics: top-k over logits + bias; weights from unbiased scores.
  I32EnumAttrCase<"Logits", 0, "logits">,
  // DeepSeek-V3 style: top-k over scores + bias.
  I32EnumAttrCase<"Scores", 1, "scores">
]> {
  let genSpecializedAttr = 0;
  let cppNamespace = "::mlir::moe";
}
def MoE_SelectionBiasAttr : MoE_EnumAttr<MoE_SelectionBias, "selection_bias">;

def MoE_CapacityRule : I32EnumAttr<"CapacityRule",
    "what a router does when an expert receives too many tokens", [
  I32EnumAttrCase<"Dropless", 0, "dropless">,
  // Moonlight: per call, capacity = max(ceil(T*k*factor/E), 1); an expert
  // keeps its `capacity` highest-gate assignments and drops the rest.
  I32EnumAttrCase<"DropLowestGate", 1, "drop_lowest_gate">
]> {
  let genSpecializedAttr = 0;
  let cppNamespace = "::mlir::moe";
}
def MoE_CapacityRuleAttr : MoE_EnumAttr<MoE_CapacityRule, "capacity_rule">;

def MoE_Activation : I32EnumAttr<"Activation",
    "the nonlinearity of a feed-forward network", [
  I32EnumAttrCase<"Silu", 0, "silu">,
  I32EnumAttrCase<"Gelu", 1, "gelu">,
  I32EnumAttrCase<"GeluTanh", 2, "gelu_tanh">,
  I32EnumAttrCase<"Relu", 3, "relu">
]> {
  let genSpecializedAttr = 0;
  let cppNamespace = "::mlir::moe";
}
def MoE_ActivationAttr : MoE_EnumAttr<MoE_Activation, "activation">;

def MoE_DispatchStrategy : I32EnumAttr<"DispatchStrategy",
    "how an expert dispatch visits tokens and experts", [
  // Not chosen yet; `moe-select-dispatch` picks one per entry point.
  I32EnumAttrCase<"Auto", 0, "auto">,
  // Each token reads the weights of its k experts (GEMV per expert): best
  // when T is small, as in decode.
  I32EnumAttrCase<"Gather", 1, "gather">,
  // Tokens are bucketed by expert (counting sort, buckets padded to a block)
  // and each block runs a GEMM against one expert's weights, then the
  // results are gathered back per token with the routing weights.
  I32EnumAttrCase<"Grouped", 2, "grouped">
]> {
  let genSpecializedAttr = 0;
  let cppNamespace = "::mlir::moe";
}
def MoE_DispatchStrategyAttr
    : MoE_EnumAttr<MoE_DispatchStrategy, "dispatch_strategy">;

def MoE_WeightLayout : I32EnumAttr<"WeightLayout",
    "how a weight's elements are laid out in the compiled weight file", [
  // As the checkpoint holds it: row-major over the logical shape.
  I32EnumAttrCase<"RowMajor", 0, "row_major">,
  // The last two logical dimensions swapped: a [N, K] projection stored as
  // [K, N], so that consecutive output features are adjacent in memory.
  I32EnumAttrCase<"Transposed", 1, "transposed">,
  // Transposed and cut into panels of P output features: a [N, K]
  // projection stored as [N / P, K, P] (`panel` on the moe.weight gives P).
  // A kernel tile of P outputs then reads one contiguous block, which the
  // CPU's prefetchers stream at full DRAM speed; transposed, the same tile
  // reads P features of each row, one row (often a page) apart.
  I32EnumAttrCase<"Panels", 2, "panels">
]> {
  let genSpecializedAttr = 0;
  let cppNamespace = "::mlir::moe";
}
def MoE_WeightLayoutAttr : MoE_EnumAttr<MoE_WeightLayout, "weight_layout">;

def MoE_PackedFormat : I32EnumAttr<"PackedFormat",
    "how a quantized weight packs its codes into bytes", [
  // 1 bit per weight: bit 1 is +1, bit 0 is -1 (BitNet-style sign).
  I32EnumAttrCase<"Sign1", 0, "sign1">,
  // 4 bits per weight: a signed code in [-8, 7] (two's complement, or
  // offset binary with `offset_binary`).
  I32EnumAttrCase<"Int4", 1, "int4">,
  // 2 bits per weight: a signed code in [-2, 1] (or offset binary).
  I32EnumAttrCase<"Int2", 2, "int2">,
  // 8 bits per weight: a signed code in [-128, 127] (or offset binary).
  I32EnumAttrCase<"Int8", 3, "int8">
]> {
  let genSpecializedAttr = 0;
  let cppNamespace = "::mlir::moe";
}
def MoE_PackedFormatAttr : MoE_EnumAttr<MoE_PackedFormat, "packed_format">;

#endif // MOE_DIALECTS_MOE_IR_MOEATTRS_TD
