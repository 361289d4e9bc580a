//===- MoEOps.td - Operations of the moe dialect -----------*- tablegen -*-===//
//
// Model-level ops (one step of a published forward pass each), lowered ops
// (attention split into its cache write and its read), and kernel-level ops
// (fused groups, outlined kernels and the calls to them).
//
//===----------------------------------------------------------------------===//

#ifndef MOE_DIALECTS_MOE_IR_MOEOPS_TD
#define MOE_DIALECTS_MOE_IR_MOEOPS_TD

include "dialects/MoE/IR/MoEBase.td"
include "dialects/MoE/IR/MoEAttrs.td"
include "dialects/MoE/IR/MoETypes.td"
include "mlir/IR/SymbolInterfaces.td"
include "mlir/Interfaces/CallInterfaces.td"
include "mlir/Interfaces/ControlFlowInterfaces.td"
include "mlir/Interfaces/FunctionInterfaces.td"
include "mlir/Interfaces/SideEffectInterfaces.td"
include "mlir/IR/OpAsmInterface.td"

// Activations: ranked float tensors whose dimension 0 is the token dimension.
def MoE_Activations : RankedTensorOf<[AnyFloat]>;
def MoE_FloatTensor : RankedTensorOf<[AnyFloat]>;
def MoE_TokenIds : 1DTensorOf<[I32]>;

//===----------------------------------------------------------------------===//
// Weights
//===----------------------------------------------------------------------===//

def MoE_WeightOp : MoE_Op<"weight", [Pure]> {
  let summary = "A tensor of the checkpoint, referenced by name.";
  let description = [{
    Names the checkpoint tensor(s) that hold a weight. The bytes never enter
    the IR; a compiled model stores them in its weight file.

    * One name: the result is that tensor. Names are the checkpoint's own
      keys, prefixes such as `_orig_mod.` included, so the IR says exactly
      which bytes a weight comes from.
    * Several names: the tensors are stacked along a new leading dimension,
      which is how per-expert tensors (`experts.{e}.w1`) become the stacked
      `[E, F, D]` operand of `moe.expert_dispatch`.
    * `rows [b, e]` keeps rows `b..e-1` of dimension 0 of each named tensor,
      for checkpoints that fuse several projections into one tensor (linnet's
      `c_attn` holds Q, K and V).
    * `layout` is how the compiled weight file stores it, chosen by the
      target (absent: row-major as in the checkpoint). `layout panels(P)`
      stores a `[.., N, K]` float weight as `[.., N / P, K, P]`.
    * `quantize(format, group G, shape S)` quantizes, when the weight file
      is written, the float tensor of logical shape S (`[.., N, K]`) that
      the names select: symmetric codes of `format`, one scale per G
      columns of a row. The result is either part of it, as
      `moe.dequantize` reads them: the codes (`ui8 [.., B]`) or the scales
      (`f16` or `f32` `[.., N, ceil(K / G)]`, as the element type says).
      With `asymmetric`, every group also has an offset (codes span the
      group from its least to its largest weight, not around zero), and a
      third part, marked `offsets`, holds them: the scales' shape and type.

    ```mlir
    %wq = moe.weight ["blocks.0.attn.q_proj.weight"] : tensor<640x640xf32>
    %wk = moe.weight ["h.0.attn.c_attn.weight"] rows [768, 1024] : tensor<256x768xf32>
    %q4 = moe.weight ["wq"] quantize(int4, group 32, shape [256, 768]) : tensor<98304xui8>
    %s4 = moe.weight ["wq"] quantize(int4, group 32, shape [256, 768]) : tensor<256x24xf16>
    %o4 = moe.weight ["wq"] quantize(int4, group 32, shape [256, 768]) asymmetric offsets
        : tensor<256x24xf16>
    ```
  }];
  let arguments = (ins StrArrayAttr:$sources,
                       OptionalAttr<DenseI64ArrayAttr>:$rows,
                       OptionalAttr<MoE_WeightLayoutAttr>:$layout,
                       OptionalAttr<MoE_PackedFormatAttr>:$quantize,
                       OptionalAttr<I64Attr>:$quant_group,
                       OptionalAttr<DenseI64ArrayAttr>:$quant_shape,
                       UnitAttr:$quant_asymmetric, UnitAttr:$quant_offsets,
                       OptionalAttr<I64Attr>:$panel);
  let results = (outs AnyRankedTensor:$result);
  let assemblyFormat = [{
    $sources (`rows` $rows^)?
    (`quantize` `(` custom<BareEnum>($quantize)^ `,` `group` $quant_group `,`
     `shape` $quant_shape `)`)? (`asymmetric` $quant_asymmetric^)?
    (`offsets` $quant_offsets^)?
    (`layout` custom<WeightLayout>($layout, $panel)^)? attr-dict `:`
    type($result)
  }];
  let builders = [
    // A whole checkpoint tensor (or stack of them) as its checkpoint holds it.
    OpBuilder<(ins "Type":$type, "ArrayAttr":$sources), [{
      build($_builder, $_state, type, sources, /*rows=*/nullptr,
            /*layout=*/nullptr, /*quantize=*/nullptr, /*quant_group=*/nullptr,
            /*quant_shape=*/nullptr, /*quant_asymmetric=*/nullptr,
            /*quant_offsets=*/nullptr, /*panel=*/nullptr);
    }]>
  ];
  let extraClassDeclaration = [{
    /// Whether this is the codes part of a quantized weight (else, with
    /// `quantize`, its scales or, with `offsets`, its offsets).
    bool isQuantizedCodes() {
      return getQuantize() &&
             getResult().getType().getElementType().isUnsignedInteger(8);
    }

    /// The `quantize` rules of the verifier.
    LogicalResult verifyQuantized();
    /// The `layout` rules of the verifier.
    LogicalResult verifyLayout();
    /// Stores this weight as `layout`; `panel` is P for `panels`.
    void setStorage(WeightLayout layout, int64_t panel = 0);
  }];
  let hasVerifier = 1;
}

def MoE_DequantizeOp : MoE_Op<"dequantize", [Pure]> {
  let summary = "A weight from packed low-bit codes and their scales.";
  let description = [{
    `result[.., r, c] = scale[.., r, c / G] * code(i)` where `i = r * K + c`
    indexes the codes of one matrix `[N, K]` flattened row-major, packed
    into the bytes of `packed` (`[.., B]`, B = ceil(N * K * bits / 8)).
    Without `group(G)` there is one scale per row (`scale [.., N]`); with
    it one per G consecutive columns of a row (`scale [.., N, ceil(K / G)]`).
    Scales are f32 or f16.

    With `offset(%o)` (asymmetric codes, as llama.cpp's Q4_1), each scale
    has an offset beside it, of the scale's shape, type and layout:
    `result[.., r, c] = scale[.., r, c / G] * code(i) + offset[.., r, c / G]`.
    A group whose weights are not centred on zero then uses all its codes.

    Code `i` of a `bits`-wide format is bits-slot `i % (8 / bits)` of byte
    `i / (8 / bits)`, slots counted from the most significant end (from the
    least with `low_bits_first`), as `np.packbits`-style writers lay them
    out:

    * `sign1`: 1 bit; 1 is +1 and 0 is -1.
    * `int2`, `int4`, `int8`: two's complement codes, or the unsigned slot
      minus 2^(bits-1) with `offset_binary`.

    Leading dimensions stack matrices (experts). The op is pure and cheap
    per element: kernels recompute it where the weight is read, so a packed
    weight is never materialised in f32.

    Targets choose how codes are stored for their kernels (the weight file
    is written in that order):

    * `transposed`: the codes enumerate the matrix column by column,
      `i = c * N + r`, so that consecutive output features are adjacent;
      group scales are stored transposed too (their `moe.weight` has
      `layout transposed`: `[.., ceil(K / G), N]` in memory).
    * `lanes(L)` (codes narrower than a byte): each run of `L * 8 / bits`
      consecutive codes fills L consecutive bytes, code j of the run in
      slot j / L of byte j % L. A vector of L output features then reads L
      consecutive bytes and one shift, instead of gathering. The bytes of a
      matrix are rounded up to whole runs.
    * `dot(D)` (D = 2 or 4), for readers with `int8_activations`: columns
      in blocks of `D * 8 / bits`; block j of row r is D bytes at byte
      `(j * N + r) * D`, column `c = j * D * 8 / bits + s * D + i` in slot
      s of byte i. A vector register of whole D-byte lanes then holds D
      consecutive columns of as many rows, as D-way integer dot products
      (`vpdpbusd`, `sdot`: D = 4; `pmaddwd`: D = 2) take them. K is a
      multiple of the block; group scales are stored transposed, as with
      `transposed`.
    * `panels(P)`, with `dot(D)`: the rows in panels of P (P divides N),
      each panel's blocks one after another: block j of row r is D bytes at
      byte `((r / P * J + j) * P + r % P) * D`, J the blocks of a row. A
      kernel tile of whole panels then reads its codes as contiguous runs,
      where `dot(D)` alone puts a tile's next block a whole row of blocks
      (often a page) away.

    ```mlir
    %w = moe.dequantize %codes, %scale format(sign1) cols(768)
        : tensor<8x24576xui8>, tensor<8x256xf32> -> tensor<8x256x768xf32>
    %v = moe.dequantize %q4, %s format(int4) cols(768) group(32)
        : tensor<98304xui8>, tensor<256x24xf32> -> tensor<256x768xf32>
    %t = moe.dequantize %q4, %s format(int4) cols(768) group(32) transposed lanes(16)
        : tensor<98304xui8>, tensor<256x24xf32> -> tensor<256x768xf32>
    %d = moe.dequantize %q4, %s format(int4) cols(768) group(32) dot(4)
        : tensor<98304xui8>, tensor<256x24xf16> -> tensor<256x768xf32>
    %p = moe.dequantize %q4, %s format(int4) cols(768) group(32) dot(4) panels(16)
        : tensor<98304xui8>, tensor<256x24xf16> -> tensor<256x768xf32>
    %a = moe.dequantize %q4, %s offset(%o) format(int4) cols(768) group(32)
        : tensor<98304xui8>, tensor<256x24xf16>, tensor<256x24xf16> -> tensor<256x768xf32>
    ```
  }];
  let arguments = (ins RankedTensorOf<[UI8]>:$packed,
                       RankedTensorOf<[F32, F16]>:$scale,
                       Optional<RankedTensorOf<[F32, F16]>>:$offset,
                       MoE_PackedFormatAttr:$format, I64Attr:$cols,
                       OptionalAttr<I64Attr>:$group,
                       UnitAttr:$low_bits_first, UnitAttr:$offset_binary,
                       UnitAttr:$transposed, OptionalAttr<I64Attr>:$lanes,
                       OptionalAttr<I64Attr>:$dot,
                       OptionalAttr<I64Attr>:$panels);
  let results = (outs RankedTensorOf<[F32]>:$result);
  let assemblyFormat = [{
    $packed `,` $scale (`offset` `(` $offset^ `)`)? `format` `(` custom<BareEnum>($format) `)`
    `cols` `(` $cols `)` (`group` `(` $group^ `)`)? (`transposed` $transposed^)?
    (`lanes` `(` $lanes^ `)`)? (`dot` `(` $dot^ `)`)?
    (`panels` `(` $panels^ `)`)? attr-dict `:` type($packed) `,`
    type($scale) (`,` type($offset)^)? `->` type($result)
  }];
  let extraClassDeclaration = [{
    /// Bits per code of `format`.
    static int64_t bitsOf(PackedFormat format);
    /// Bytes that hold the codes of one [rows, cols] matrix, in runs of
    /// `lanes` bytes when given, or in blocks for `dot` products.
    static int64_t codeBytes(PackedFormat format, int64_t rows, int64_t cols,
                             std::optional<int64_t> lanes = std::nullopt,
                             std::optional<int64_t> dot = std::nullopt);
    /// Columns of one `dot(D)` block: D bytes of codes.
    static int64_t dotBlockColumns(PackedFormat format, int64_t depth) {
      return depth * (8 / bitsOf(format));
    }
    /// Scales per row: one, or one per `group` columns.
    static int64_t scalesPerRow(int64_t cols, std::optional<int64_t> group);
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Embedding, norms, projections
//===----------------------------------------------------------------------===//

def MoE_EmbedOp : MoE_Op<"embed", [Pure]> {
  let summary = "Looks up the embedding row of every token.";
  let description = [{
    `result[t, :] = table[tokens[t], :] * scale`. A token id outside
    `[0, V)` is a run-time error of the compiled model, never a wild read.

    ```mlir
    %x = moe.embed %table[%tokens] : tensor<512x640xf32>, tensor<?xi32> -> tensor<?x640xf32>
    ```
  }];
  let arguments = (ins 2DTensorOf<[AnyFloat]>:$table, MoE_TokenIds:$tokens,
                       DefaultValuedAttr<F64Attr, "1.0">:$scale);
  let results = (outs 2DTensorOf<[AnyFloat]>:$result);
  let assemblyFormat = [{
    $table `[` $tokens `]` attr-dict `:` type($table) `,` type($tokens) `->` type($result)
  }];
  let hasVerifier = 1;
}

def MoE_RmsNormOp : MoE_Op<"rms_norm",
    [Pure, AllTypesMatch<["input", "result"]>]> {
  let summary = "Root-mean-square norm over the trailing dimension(s).";
  let description = [{
    Normalises over the trailing `rank(weight)` dimensions of `input`:
    `y = x * rsqrt(mean(x^2) + eps) * weight`, computed in f32. A weight of
    shape `[H, D]` on an input `[T, H, D]` normalises each head over `D` with
    its own per-head weight (physics QK-norm); the mean is always over the
    last dimension only.

    ```mlir
    %h = moe.rms_norm %x, %w eps(1.000000e-06) : tensor<?x640xf32>, tensor<640xf32>
    ```
  }];
  let arguments = (ins MoE_Activations:$input, MoE_FloatTensor:$weight,
                       F64Attr:$eps);
  let results = (outs MoE_Activations:$result);
  let assemblyFormat = [{
    $input `,` $weight `eps` `(` $eps `)` attr-dict `:` type($input) `,` type($weight)
  }];
  let hasVerifier = 1;
}

def MoE_LayerNormOp : MoE_Op<"layer_norm",
    [Pure, AllTypesMatch<["input", "result"]>, AttrSizedOperandSegments]> {
  let summary = "Layer norm over the last dimension, with optional affine.";
  let description = [{
    `y = (x - mean(x)) * rsqrt(var(x) + eps) [* weight] [+ bias]` over the
    last dimension, computed in f32 (biased variance, as PyTorch). Without
    weight and bias it is linnet's QK-norm (`elementwise_affine=False`).

    ```mlir
    %k = moe.layer_norm %k0 eps(1.000000e-05) : tensor<?x4x64xf32>
    ```
  }];
  let arguments = (ins MoE_Activations:$input,
                       Optional<MoE_FloatTensor>:$weight,
                       Optional<MoE_FloatTensor>:$bias, F64Attr:$eps);
  let results = (outs MoE_Activations:$result);
  let assemblyFormat = [{
    $input (`weight` $weight^)? (`bias` $bias^)? `eps` `(` $eps `)` attr-dict
    `:` type($input) (`,` type($weight)^)? (`,` type($bias)^)?
  }];
  let hasVerifier = 1;
}

def MoE_LinearOp : MoE_Op<"linear", [Pure]> {
  let summary = "A projection y = x W^T (+ b) of every token.";
  let description = [{
    `weight` is `[N, K]` as PyTorch stores it. The input is `[T, ...]` whose
    trailing dimensions hold `K` elements; the result is `[T, ...]` whose
    trailing dimensions hold `N`. Splitting or joining heads is therefore
    part of the projection: a query projection can produce `[T, H, D]`
    directly, and the output projection can consume it.

    With `int8_activations(B)`, the weight is a `moe.dequantize` of packed
    codes and the product is computed in integers: each token's input is
    quantized per block of B consecutive features to int8 (symmetric,
    scale max|x| / 127, round half to even), each block's sum of code
    products is exact in i32, then scaled in f32 by the block's input scale
    and the weight's scale. See `Int8Activations` in the dialect docs.

    ```mlir
    %q = moe.linear %h, %wq : tensor<?x640xf32>, tensor<640x640xf32> -> tensor<?x10x64xf32>
    %k = moe.linear %h, %wk4 int8_activations(32) : tensor<?x640xf32>, tensor<128x640xf32> -> tensor<?x2x64xf32>
    ```
  }];
  let arguments = (ins MoE_Activations:$input, 2DTensorOf<[AnyFloat]>:$weight,
                       Optional<1DTensorOf<[AnyFloat]>>:$bias,
                       OptionalAttr<I64Attr>:$int8_activations);
  let results = (outs MoE_Activations:$result);
  let assemblyFormat = [{
    $input `,` $weight (`bias` $bias^)?
    (`int8_activations` `(` $int8_activations^ `)`)? attr-dict
    `:` type($input) `,` type($weight) (`,` type($bias)^)? `->` type($result)
  }];
  let hasVerifier = 1;
}

def MoE_HeadScaleOp : MoE_Op<"head_scale",
    [Pure, AllTypesMatch<["input", "result"]>]> {
  let summary = "Multiplies every head by its own scalar.";
  let description = [{
    `result[t, h, :] = input[t, h, :] * scale[h]`, with `scale` of shape
    `[H]` or `[H, 1]`. It is physics' per-head QK-norm gain and its per
    KV-head V multiplier (`smear`).

    ```mlir
    %v2 = moe.head_scale %v, %smear : tensor<?x2x64xf32>, tensor<2xf32>
    ```
  }];
  let arguments = (ins MoE_Activations:$input, MoE_FloatTensor:$scale);
  let results = (outs MoE_Activations:$result);
  let assemblyFormat = [{
    $input `,` $scale attr-dict `:` type($input) `,` type($scale)
  }];
  let hasVerifier = 1;
}

def MoE_RopeOp : MoE_Op<"rope", [Pure, AllTypesMatch<["input", "result"]>]> {
  let summary = "Rotary position embedding of every head.";
  let description = [{
    Rotates the first `rotary_dims` dimensions of every head of `input`
    (`[T, H, D]`) by the angle `(position + t) * theta^(-2j / rotary_dims)`
    for pair `j`; dimensions `rotary_dims..D-1` pass through unchanged. The
    `layout` says which dimensions form pair `j`: `(2j, 2j+1)` for
    `interleaved`, `(j, j + rotary_dims/2)` for `half_split`. Angles are
    computed in f32 from the integer position, like the references.

    ```mlir
    %q = moe.rope %q0 at %pos layout(interleaved) dims(32) theta(1.000000e+04) : tensor<?x10x64xf32>
    ```
  }];
  let arguments = (ins 3DTensorOf<[AnyFloat]>:$input, Index:$position,
                       MoE_RopeLayoutAttr:$layout, I64Attr:$rotary_dims,
                       F64Attr:$theta);
  let results = (outs 3DTensorOf<[AnyFloat]>:$result);
  let assemblyFormat = [{
    $input `at` $position `layout` `(` custom<BareEnum>($layout) `)` `dims` `(` $rotary_dims `)`
    `theta` `(` $theta `)` attr-dict `:` type($input)
  }];
  let hasVerifier = 1;
}

def MoE_GluOp : MoE_Op<"glu", [Pure, AllTypesMatch<["gate", "up", "result"]>]> {
  let summary = "Gated linear unit: activation(gate) * up.";
  let description = [{
    The elementwise core of a SwiGLU/GeGLU feed-forward network.

    ```mlir
    %a = moe.glu %g, %u activation(silu) : tensor<?x1024xf32>
    ```
  }];
  let arguments = (ins MoE_Activations:$gate, MoE_Activations:$up,
                       MoE_ActivationAttr:$activation);
  let results = (outs MoE_Activations:$result);
  let assemblyFormat = [{
    $gate `,` $up `activation` `(` custom<BareEnum>($activation) `)` attr-dict `:` type($result)
  }];
}

//===----------------------------------------------------------------------===//
// Sequence mixing
//===----------------------------------------------------------------------===//

def MoE_AttentionOp : MoE_Op<"attention", [
    DeclareOpInterfaceMethods<MemoryEffectsOpInterface>]> {
  let summary = "Causal grouped-query attention through a KV cache.";
  let description = [{
    Appends `key` and `value` (`[T, Hkv, D]`) to layer `layer` of `cache` at
    positions `position .. position+T-1`, then lets every query token `t`
    (`[T, Hq, D]`) attend to cache positions `0 .. position+t` with softmax
    scale `scale`. Query head `h` reads KV head `h / (Hq / Hkv)`. Keys and
    values are cached exactly as given, so ops that transform them (RoPE,
    QK-norm, V scale) come before this op.

    ```mlir
    %o = moe.attention %q, %k, %v cache(%cache[0]) at %pos scale(1.250000e-01)
        : tensor<?x10x64xf32>, tensor<?x2x64xf32>, tensor<?x2x64xf32>,
          !moe.kv_cache<layers = 14, kv_heads = 2, head_dim = 64, element = f32>
        -> tensor<?x10x64xf32>
    ```
  }];
  let arguments = (ins 3DTensorOf<[AnyFloat]>:$query,
                       3DTensorOf<[AnyFloat]>:$key,
                       3DTensorOf<[AnyFloat]>:$value, MoE_KVCacheType:$cache,
                       Index:$position, I64Attr:$layer, F64Attr:$scale);
  let results = (outs 3DTensorOf<[AnyFloat]>:$result);
  let assemblyFormat = [{
    $query `,` $key `,` $value `cache` `(` $cache `[` $layer `]` `)` `at` $position
    `scale` `(` $scale `)` attr-dict `:` type($query) `,` type($key) `,` type($value)
    `,` qualified(type($cache)) `->` type($result)
  }];
  let hasVerifier = 1;
}

def MoE_CausalConv1dOp : MoE_Op<"causal_conv1d", [
    AllTypesMatch<["input", "result"]>,
    DeclareOpInterfaceMethods<MemoryEffectsOpInterface>]> {
  let summary = "Depthwise causal convolution along time, with decode state.";
  let description = [{
    `result[t, c] = sum_i weight[c, 0, i] * x[t - (K-1) + i, c]` where `x` is
    the layer's saved state (the `K-1` rows before `position`) followed by
    `input`; afterwards the state holds the last `K-1` rows. At position 0
    the state reads as zeros, which is linnet's left padding.

    ```mlir
    %u = moe.causal_conv1d %h, %w state(%conv[0]) at %pos
        : tensor<?x768xf32>, tensor<768x1x3xf32>,
          !moe.conv_state<layers = 12, channels = 768, width = 3, element = f32>
    ```
  }];
  let arguments = (ins 2DTensorOf<[AnyFloat]>:$input,
                       3DTensorOf<[AnyFloat]>:$weight, MoE_ConvStateType:$state,
                       Index:$position, I64Attr:$layer);
  let results = (outs 2DTensorOf<[AnyFloat]>:$result);
  let assemblyFormat = [{
    $input `,` $weight `state` `(` $state `[` $layer `]` `)` `at` $position attr-dict
    `:` type($input) `,` type($weight) `,` qualified(type($state))
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Mixture of experts
//===----------------------------------------------------------------------===//

def MoE_RouteOp : MoE_Op<"route", [Pure]> {
  let summary = "Picks the top-k experts of every token and their weights.";
  let description = [{
    Computes router logits `l = x R^T` (f32) and scores `s = scoring(l)`
    (`softmax` over all experts, or elementwise `sigmoid`). Selection takes
    the `top_k` largest of `s`, or of `l + bias` / `s + bias` when a
    `bias` operand is given (`selection_bias` says which); the bias never
    changes the weights. Weights are the selected unbiased scores, divided
    by `sum + renorm_eps` when `renormalize` is set, then multiplied by
    `scaling`. Ties pick the lower expert index. Under the
    `drop_lowest_gate` capacity rule, an expert that receives more than
    `max(ceil(T * top_k * capacity_factor / E), 1)` assignments keeps the
    ones with the highest weights and the others get weight 0.

    ```mlir
    %idx, %gates = moe.route %h, %r bias %b scoring(sigmoid) top_k(2)
        {renormalize, renorm_eps = 1.000000e-09 : f64}
        : tensor<?x640xf32>, tensor<8x640xf32>, tensor<8xf32>
        -> tensor<?x2xi32>, tensor<?x2xf32>
    ```
  }];
  let arguments = (ins 2DTensorOf<[AnyFloat]>:$input,
                       2DTensorOf<[AnyFloat]>:$router,
                       Optional<1DTensorOf<[AnyFloat]>>:$bias,
                       MoE_RouterScoringAttr:$scoring, I64Attr:$top_k,
                       UnitAttr:$renormalize,
                       DefaultValuedAttr<F64Attr, "0.0">:$renorm_eps,
                       DefaultValuedAttr<MoE_SelectionBiasAttr,
                           "::mlir::moe::SelectionBias::Logits">:$selection_bias,
                       DefaultValuedAttr<F64Attr, "1.0">:$scaling,
                       DefaultValuedAttr<MoE_CapacityRuleAttr,
                           "::mlir::moe::CapacityRule::Dropless">:$capacity,
                       DefaultValuedAttr<F64Attr, "0.0">:$capacity_factor);
  let results = (outs 2DTensorOf<[I32]>:$indices,
                      2DTensorOf<[AnyFloat]>:$weights);
  let assemblyFormat = [{
    $input `,` $router (`bias` $bias^)? `scoring` `(` custom<BareEnum>($scoring) `)`
    `top_k` `(` $top_k `)` attr-dict `:` type($input) `,` type($router)
    (`,` type($bias)^)? `->` type($indices) `,` type($weights)
  }];
  let hasVerifier = 1;
}

def MoE_ExpertDispatchOp : MoE_Op<"expert_dispatch", [Pure]> {
  let summary = "Runs every token through its routed experts and sums them.";
  let description = [{
    `result[t] = sum_j weights[t, j] * expert(indices[t, j], input[t])`,
    where expert `e` is `down[e] (act(gate[e] x) * (up[e] x))` when `gate`
    is given (SwiGLU-style), else `down[e] act(up[e] x)`. Expert weights are
    stacked: `gate`/`up` `[E, F, D]`, `down` `[E, D, F]`. An index outside
    `[0, E)` is a run-time error. `strategy` is how a target visits tokens
    and experts (see `DispatchStrategy`); it never changes the result.
    With `int8_activations(B)`, every expert weight is a `moe.dequantize`
    and each of the expert's projections quantizes its input (the token,
    then the hidden activations) to int8 per block of B, as `moe.linear`
    does.

    ```mlir
    %y = moe.expert_dispatch %h, experts(%idx, %gates) gate %wg up %wu down %wd
        activation(silu) strategy(gather)
        : (tensor<1x640xf32>, tensor<1x2xi32>, tensor<1x2xf32>, tensor<8x1024x640xf32>,
           tensor<8x1024x640xf32>, tensor<8x640x1024xf32>) -> tensor<1x640xf32>
    ```
  }];
  let arguments = (ins 2DTensorOf<[AnyFloat]>:$input,
                       2DTensorOf<[I32]>:$indices,
                       2DTensorOf<[AnyFloat]>:$weights,
                       Optional<3DTensorOf<[AnyFloat]>>:$gate,
                       3DTensorOf<[AnyFloat]>:$up, 3DTensorOf<[AnyFloat]>:$down,
                       MoE_ActivationAttr:$activation,
                       DefaultValuedAttr<MoE_DispatchStrategyAttr,
                           "::mlir::moe::DispatchStrategy::Auto">:$strategy,
                       OptionalAttr<I64Attr>:$int8_activations);
  let results = (outs 2DTensorOf<[AnyFloat]>:$result);
  let assemblyFormat = [{
    $input `,` `experts` `(` $indices `,` $weights `)` (`gate` $gate^)? `up` $up
    `down` $down `activation` `(` custom<BareEnum>($activation) `)`
    (`strategy` `(` custom<BareEnum>($strategy)^ `)`)?
    (`int8_activations` `(` $int8_activations^ `)`)?
    attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Output
//===----------------------------------------------------------------------===//

def MoE_LogitsOp : MoE_Op<"logits", [Pure]> {
  let summary = "Next-token logits of every position.";
  let description = [{
    `result = (x W^T + bias) * scale` with `W` of shape `[V, D]`: the
    embedding table itself when the model ties its head (a bias, as in
    Moonlight, is never tied), else the head's own weight.
    `int8_activations(B)` as for `moe.linear`.

    ```mlir
    %l = moe.logits %x, %emb {scale = 8.944272e-01 : f64}
        : tensor<?x640xf32>, tensor<512x640xf32> -> tensor<?x512xf32>
    ```
  }];
  let arguments = (ins 2DTensorOf<[AnyFloat]>:$input,
                       2DTensorOf<[AnyFloat]>:$weight,
                       Optional<1DTensorOf<[AnyFloat]>>:$bias,
                       DefaultValuedAttr<F64Attr, "1.0">:$scale,
                       OptionalAttr<I64Attr>:$int8_activations);
  let results = (outs 2DTensorOf<[AnyFloat]>:$result);
  let assemblyFormat = [{
    $input `,` $weight (`bias` $bias^)?
    (`int8_activations` `(` $int8_activations^ `)`)? attr-dict `:` type($input) `,`
    type($weight) (`,` type($bias)^)? `->` type($result)
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Lowered ops: attention split into its two memory phases
//===----------------------------------------------------------------------===//

def MoE_KVCacheWriteOp : MoE_Op<"kv_cache_write", [
    DeclareOpInterfaceMethods<MemoryEffectsOpInterface>]> {
  let summary = "Stores the keys and values of T new positions.";
  let description = [{
    The first half of `moe.attention`: writes `key` and `value`
    (`[T, Hkv, D]`) to layer `layer` of `cache` at positions
    `position .. position+T-1`. Splitting it out lets the producers of `key`
    and `value` (norms, RoPE) fuse into the kernel that writes the cache.

    ```mlir
    moe.kv_cache_write %k, %v into(%cache[0]) at %pos
        : tensor<?x2x64xf32>, tensor<?x2x64xf32>,
          !moe.kv_cache<layers = 14, kv_heads = 2, head_dim = 64, element = f32>
    ```
  }];
  let arguments = (ins 3DTensorOf<[AnyFloat]>:$key,
                       3DTensorOf<[AnyFloat]>:$value, MoE_KVCacheType:$cache,
                       Index:$position, I64Attr:$layer);
  let assemblyFormat = [{
    $key `,` $value `into` `(` $cache `[` $layer `]` `)` `at` $position attr-dict
    `:` type($key) `,` type($value) `,` qualified(type($cache))
  }];
  let hasVerifier = 1;
}

def MoE_CachedAttentionOp : MoE_Op<"cached_attention", [
    DeclareOpInterfaceMethods<MemoryEffectsOpInterface>]> {
  let summary = "Causal attention of T queries over the cached positions.";
  let description = [{
    The second half of `moe.attention`: query token `t` attends to positions
    `0 .. position+t` of layer `layer` of `cache`, which must already hold
    them.

    ```mlir
    %o = moe.cached_attention %q cache(%cache[0]) at %pos scale(1.250000e-01)
        : tensor<?x10x64xf32>,
          !moe.kv_cache<layers = 14, kv_heads = 2, head_dim = 64, element = f32>
        -> tensor<?x10x64xf32>
    ```
  }];
  let arguments = (ins 3DTensorOf<[AnyFloat]>:$query, MoE_KVCacheType:$cache,
                       Index:$position, I64Attr:$layer, F64Attr:$scale);
  let results = (outs 3DTensorOf<[AnyFloat]>:$result);
  let assemblyFormat = [{
    $query `cache` `(` $cache `[` $layer `]` `)` `at` $position
    `scale` `(` $scale `)` attr-dict `:` type($query) `,` qualified(type($cache))
    `->` type($result)
  }];
  let hasVerifier = 1;
}

def MoE_KVCacheLayerOp : MoE_Op<"kv_cache_layer", [Pure]> {
  let summary = "A one-layer view of a KV cache.";
  let description = [{
    The keys and values of layer `layer` of `cache`, as a cache of one
    layer. Kernels take these views instead of the whole cache, so that one
    kernel serves every layer and the host code picks the layer.

    ```mlir
    %l3 = moe.kv_cache_layer %cache[3]
        : !moe.kv_cache<layers = 14, kv_heads = 2, head_dim = 64, element = f32>
        -> !moe.kv_cache<layers = 1, kv_heads = 2, head_dim = 64, element = f32>
    ```
  }];
  let arguments = (ins MoE_KVCacheType:$cache, I64Attr:$layer);
  let results = (outs MoE_KVCacheType:$result);
  let assemblyFormat = [{
    $cache `[` $layer `]` attr-dict `:` qualified(type($cache)) `->` qualified(type($result))
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Lowered ops: the causal convolution split into its state read and write
//===----------------------------------------------------------------------===//

def MoE_CachedConv1dOp : MoE_Op<"cached_conv1d", [
    AllTypesMatch<["input", "result"]>,
    DeclareOpInterfaceMethods<MemoryEffectsOpInterface>]> {
  let summary = "Causal depthwise convolution reading its decode state.";
  let description = [{
    The first half of `moe.causal_conv1d`: the convolution itself. Rows
    before `position` come from layer `layer` of `state`, which holds the
    input row of position `q` in slot `q mod (K-1)`; positions below 0 read
    as zeros. The state is only read.

    ```mlir
    %u = moe.cached_conv1d %h, %w state(%conv[0]) at %pos
        : tensor<?x768xf32>, tensor<768x1x3xf32>,
          !moe.conv_state<layers = 12, channels = 768, width = 3, element = f32>
    ```
  }];
  let arguments = (ins 2DTensorOf<[AnyFloat]>:$input,
                       3DTensorOf<[AnyFloat]>:$weight, MoE_ConvStateType:$state,
                       Index:$position, I64Attr:$layer);
  let results = (outs 2DTensorOf<[AnyFloat]>:$result);
  let assemblyFormat = [{
    $input `,` $weight `state` `(` $state `[` $layer `]` `)` `at` $position attr-dict
    `:` type($input) `,` type($weight) `,` qualified(type($state))
  }];
  let hasVerifier = 1;
}

def MoE_ConvStateWriteOp : MoE_Op<"conv_state_write", [
    DeclareOpInterfaceMethods<MemoryEffectsOpInterface>]> {
  let summary = "Saves the last K-1 input rows of a causal convolution.";
  let description = [{
    The second half of `moe.causal_conv1d`, after the convolution has read
    the old state: stores the rows of `input` (positions `position ..
    position+T-1`) that the next call needs, the last `K-1` of them, each
    in slot `q mod (K-1)` of layer `layer`. Slots holding older positions
    that are still needed are left as they are.

    ```mlir
    moe.conv_state_write %h into(%conv[0]) at %pos
        : tensor<?x768xf32>,
          !moe.conv_state<layers = 12, channels = 768, width = 3, element = f32>
    ```
  }];
  let arguments = (ins 2DTensorOf<[AnyFloat]>:$input, MoE_ConvStateType:$state,
                       Index:$position, I64Attr:$layer);
  let assemblyFormat = [{
    $input `into` `(` $state `[` $layer `]` `)` `at` $position attr-dict
    `:` type($input) `,` qualified(type($state))
  }];
  let hasVerifier = 1;
}

def MoE_ConvStateLayerOp : MoE_Op<"conv_state_layer", [Pure]> {
  let summary = "A one-layer view of a convolution state.";
  let description = [{
    The saved rows of layer `layer` of `state`, as a state of one layer;
    the convolution's counterpart of `moe.kv_cache_layer`.

    ```mlir
    %l3 = moe.conv_state_layer %conv[3]
        : !moe.conv_state<layers = 12, channels = 768, width = 3, element = f32>
        -> !moe.conv_state<layers = 1, channels = 768, width = 3, element = f32>
    ```
  }];
  let arguments = (ins MoE_ConvStateType:$state, I64Attr:$layer);
  let results = (outs MoE_ConvStateType:$result);
  let assemblyFormat = [{
    $state `[` $layer `]` attr-dict `:` qualified(type($state)) `->` qualified(type($result))
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Kernel level
//===----------------------------------------------------------------------===//

def MoE_FusedOp : MoE_Op<"fused", [
    SingleBlockImplicitTerminator<"YieldOp">,
    RecursiveMemoryEffects]> {
  let summary = "A group of ops that will run as one kernel.";
  let description = [{
    The fusion passes wrap ops that should run as one kernel in a
    `moe.fused` region; the region uses values from above and yields the
    values used after it. `name` says which fusion formed the group.
    `moe-outline-kernels` turns each group into a `moe.kernel` and a
    `moe.call`.

    ```mlir
    %q, %k, %v = moe.fused "norm_projection" -> (tensor<?x640xf32>, tensor<?x128xf32>, tensor<?x128xf32>) {
      %h = moe.rms_norm %x, %w eps(1.000000e-06) : tensor<?x640xf32>, tensor<640xf32>
      ...
      moe.yield %q0, %k0, %v0 : tensor<?x640xf32>, tensor<?x128xf32>, tensor<?x128xf32>
    }
    ```
  }];
  let arguments = (ins StrAttr:$name);
  let results = (outs Variadic<AnyType>:$results);
  let regions = (region SizedRegion<1>:$body);
  let assemblyFormat = [{
    $name (`->` `(` type($results)^ `)`)? $body attr-dict
  }];
  let hasVerifier = 1;
  let skipDefaultBuilders = 1;
  let builders = [
    OpBuilder<(ins "::llvm::StringRef":$name, "::mlir::TypeRange":$results)>
  ];
}

def MoE_KernelOp : MoE_Op<"kernel", [
    FunctionOpInterface, IsolatedFromAbove, Symbol,
    SingleBlockImplicitTerminator<"YieldOp">]> {
  let summary = "A kernel: a fused group with its concrete shapes.";
  let description = [{
    The body of one kernel, isolated from the function it came from. Its
    arguments are the tensors and state it reads (and the position), its
    results the tensors it produces. A target compiles every `moe.kernel` to
    one machine function (a Halide pipeline specialised with these shapes)
    named after the symbol. Identical kernels (same body and signature) are
    outlined once and called many times.

    The printed form is the one of `func.func`, with a custom printer
    because the declarative format cannot express a function signature.

    ```mlir
    moe.kernel @k0(%x: tensor<?x640xf32>, %w: tensor<640xf32>) -> tensor<?x640xf32> {
      %0 = moe.rms_norm %x, %w eps(1.000000e-06) : tensor<?x640xf32>, tensor<640xf32>
      moe.yield %0 : tensor<?x640xf32>
    }
    ```
  }];
  let arguments = (ins SymbolNameAttr:$sym_name,
                       TypeAttrOf<FunctionType>:$function_type,
                       OptionalAttr<DictArrayAttr>:$arg_attrs,
                       OptionalAttr<DictArrayAttr>:$res_attrs);
  let regions = (region SizedRegion<1>:$body);
  let hasCustomAssemblyFormat = 1;
  let hasVerifier = 1;
  let skipDefaultBuilders = 1;
  let builders = [
    OpBuilder<(ins "::llvm::StringRef":$name, "::mlir::FunctionType":$type)>
  ];
  let extraClassDeclaration = [{
    /// FunctionOpInterface: the argument and result types.
    ::llvm::ArrayRef<::mlir::Type> getArgumentTypes() {
      return getFunctionType().getInputs();
    }
    ::llvm::ArrayRef<::mlir::Type> getResultTypes() {
      return getFunctionType().getResults();
    }
    ::mlir::Region *getCallableRegion() { return &getBody(); }
  }];
}

def MoE_CallOp : MoE_Op<"call", [
    CallOpInterface, DeclareOpInterfaceMethods<SymbolUserOpInterface>,
    DeclareOpInterfaceMethods<MemoryEffectsOpInterface>]> {
  let summary = "Runs a kernel.";
  let description = [{
    Calls the `moe.kernel` named `callee`. It writes the state operands
    (KV cache, convolution state) its kernel writes, so it declares reads and
    writes of every state operand.

    ```mlir
    %h = moe.call @k0(%x, %w) : (tensor<?x640xf32>, tensor<640xf32>) -> tensor<?x640xf32>
    ```
  }];
  let arguments = (ins FlatSymbolRefAttr:$callee, Variadic<AnyType>:$operands,
                       OptionalAttr<DictArrayAttr>:$arg_attrs,
                       OptionalAttr<DictArrayAttr>:$res_attrs);
  let results = (outs Variadic<AnyType>:$results);
  let assemblyFormat = [{
    $callee `(` $operands `)` attr-dict `:` functional-type($operands, $results)
  }];
  let extraClassDeclaration = [{
    ::mlir::CallInterfaceCallable getCallableForCallee() {
      return (*this)->getAttrOfType<::mlir::SymbolRefAttr>("callee");
    }
    void setCalleeFromCallable(::mlir::CallInterfaceCallable callee) {
      (*this)->setAttr("callee", ::llvm::cast<::mlir::SymbolRefAttr>(callee));
    }
    ::mlir::Operation::operand_range getArgOperands() { return getOperands(); }
    ::mlir::MutableOperandRange getArgOperandsMutable() {
      return getOperandsMutable();
    }
  }];
}

def MoE_YieldOp : MoE_Op<"yield", [
    Pure, Terminator, ReturnLike, ParentOneOf<["FusedOp", "KernelOp"]>]> {
  let summary = "Yields the results of a fused group or kernel.";
  let description = [{
    ```mlir
    moe.yield %0 : tensor<?x640xf32>
    ```
  }];
  let arguments = (ins Variadic<AnyType>:$values);
  let builders = [OpBuilder<(ins), [{ /* nothing to yield */ }]>];
  let assemblyFormat = "($values^ `:` type($values))? attr-dict";
}

#endif // MOE_DIALECTS_MOE_IR_MOEOPS_TD
