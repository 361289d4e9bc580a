//===- Passes.td - Passes of the moe dialect ---------------*- tablegen -*-===//
//
// Target-independent passes: they split, group and outline moe ops, and plan
// memory, but never decide how a kernel is computed on a machine.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_DIALECTS_MOE_TRANSFORMS_PASSES_TD
#define MOE_DIALECTS_MOE_TRANSFORMS_PASSES_TD

include "mlir/Pass/PassBase.td"

//===----------------------------------------------------------------------===//
// Lowering model-level ops
//===----------------------------------------------------------------------===//

def MoEQuantizeWeightsPass : Pass<"moe-quantize-weights", "func::FuncOp"> {
  let summary = "Rewrites float projection weights into packed codes and scales.";
  let description = [{
    Every float weight read by a projection (`moe.linear`, `moe.logits`),
    the embedding (`moe.embed`) or the experts (`moe.expert_dispatch`)
    becomes `moe.dequantize` of two quantized `moe.weight`s, its codes and
    its scales, at the precision the policy gives its role: `embedding`
    (with the head when tied), `head`, `attention` (projections that reach
    or read an attention), `ffn` (every other projection) or `experts`.
    `mode` is q8, q4, q2 or q1 for every role, `mixed` for
    "embedding=q8,head=q8,attention=q4a,ffn=q8,experts=q4a", or `none`;
    `rules` (`key=precision,...`, key a role or a glob on checkpoint names,
    precision q8|q4|q2|q1|f32) override it. Codes are symmetric, one
    scale (`scale-type`, f16 by default) per `group` columns; a precision
    with an `a` (q8a, q4a, q2a, q1a) is asymmetric: a third weight, marked
    `offsets`, holds an offset per scale, read by `moe.dequantize ..
    offset(..)`. Norms, routers, biases and already packed weights are left
    as they are.

    Before:  %w = moe.weight ["wq"] : tensor<64x96xf32>
             %q = moe.linear %x, %w : tensor<?x96xf32>, tensor<64x96xf32> -> tensor<?x64xf32>
    After:   %c = moe.weight ["wq"] quantize(int4, group 32, shape [64, 96]) : tensor<3072xui8>
             %s = moe.weight ["wq"] quantize(int4, group 32, shape [64, 96]) : tensor<64x3xf16>
             %w = moe.dequantize %c, %s format(int4) cols(96) group(32) : ...
             %q = moe.linear %x, %w : ...
  }];
  let options = [
    Option<"mode", "mode", "std::string", /*default=*/"\"q8\"",
           "precision of every role: q8|q4|q2|q1 (symmetric), q8a|q4a|q2a|q1a "
           "(asymmetric), mixed or none">,
    Option<"rules", "rules", "std::string", /*default=*/"\"\"",
           "overrides: role=precision or glob=precision, comma-separated">,
    Option<"group", "group", "int64_t", /*default=*/"32",
           "columns per scale">,
    Option<"scaleType", "scale-type", "std::string", /*default=*/"\"f16\"",
           "element type of the scales: f16|f32">
  ];
  let statistics = [
    Statistic<"numQuantized", "num-quantized", "weights quantized">
  ];
}

def MoEQuantizeActivationsPass
    : Pass<"moe-quantize-activations", "func::FuncOp"> {
  let summary = "Computes projections of packed weights with int8 inputs.";
  let description = [{
    Sets `int8_activations(block)` on every `moe.linear`, `moe.logits` and
    `moe.expert_dispatch` whose weights are all packed (`moe.dequantize`)
    and whose columns and scale groups are whole blocks: the input is then
    quantized to int8 per block of `block` features and multiplied by the
    codes in integers, as llama.cpp pairs Q8_0 activations with packed
    weights. Float weights, and projections whose sizes do not divide into
    blocks, keep f32 inputs (`num-kept-float` counts them).

    Before:  %w = moe.dequantize %c, %s format(int4) cols(96) group(32) : ...
             %q = moe.linear %x, %w : ...
    After:   %q = moe.linear %x, %w int8_activations(32) : ...
  }];
  let options = [
    Option<"block", "block", "int64_t", /*default=*/"32",
           "input features per int8 scale">
  ];
  let statistics = [
    Statistic<"numInt8", "num-int8", "projections given int8 inputs">,
    Statistic<"numKeptFloat", "num-kept-float",
              "packed projections whose sizes keep f32 inputs">
  ];
}

def MoESelectDispatchPass : Pass<"moe-select-dispatch", "func::FuncOp"> {
  let summary = "Chooses how each expert dispatch visits tokens and experts.";
  let description = [{
    Sets the `strategy` of every `moe.expert_dispatch` whose strategy is
    `auto`: `gather` when the token dimension is static and at most
    `gather-max-tokens` (decode), else `prefill-strategy`. A strategy chosen
    earlier (by hand or by another pass) is kept.

    Before:  moe.expert_dispatch %h, ... activation(silu) : (tensor<1x64xf32>, ...)
    After:   moe.expert_dispatch %h, ... activation(silu) strategy(gather) : (tensor<1x64xf32>, ...)
  }];
  let options = [
    Option<"prefillStrategy", "prefill-strategy", "std::string",
           /*default=*/"\"grouped\"",
           "strategy for a dynamic or large token dimension: gather|grouped">,
    Option<"gatherMaxTokens", "gather-max-tokens", "int64_t", /*default=*/"1",
           "largest static token count that uses the gather strategy">
  ];
  let statistics = [
    Statistic<"numGather", "num-gather", "dispatches set to gather">,
    Statistic<"numGrouped", "num-grouped", "dispatches set to grouped">
  ];
}

def MoESplitAttentionPass : Pass<"moe-split-attention", "func::FuncOp"> {
  let summary = "Splits attention into its KV-cache write and its read.";
  let description = [{
    Rewrites every `moe.attention` into `moe.kv_cache_write` followed by
    `moe.cached_attention`. The two run as different kernels: the write can
    then fuse with the ops that produce the keys and values, and the read
    sees the cache as an input.

    Before:  %o = moe.attention %q, %k, %v cache(%c[0]) at %p scale(0.25) : ...
    After:   moe.kv_cache_write %k, %v into(%c[0]) at %p : ...
             %o = moe.cached_attention %q cache(%c[0]) at %p scale(0.25) : ...
  }];
}

def MoESplitCausalConvPass : Pass<"moe-split-causal-conv", "func::FuncOp"> {
  let summary = "Splits a causal convolution into its state read and write.";
  let description = [{
    Rewrites every `moe.causal_conv1d` into `moe.cached_conv1d` (reads the
    saved rows of earlier positions) followed by `moe.conv_state_write`
    (saves the last K-1 input rows for the next call). As two ops, no kernel
    reads and writes the same state, and the state stays a ring of K-1 rows
    per layer whatever the context length.

    Before:  %u = moe.causal_conv1d %h, %w state(%s[0]) at %p : ...
    After:   %u = moe.cached_conv1d %h, %w state(%s[0]) at %p : ...
             moe.conv_state_write %h into(%s[0]) at %p : ...
  }];
}

//===----------------------------------------------------------------------===//
// Fusion: grouping ops that run as one kernel
//===----------------------------------------------------------------------===//

def MoEFuseAttentionProloguePass
    : Pass<"moe-fuse-attention-prologue", "func::FuncOp"> {
  let summary = "Fuses per-head key/query/value ops with the cache write.";
  let description = [{
    Groups each `moe.kv_cache_write` with the chains of per-head ops
    (`rms_norm`/`layer_norm` over heads, `head_scale`, `rope`) that produce
    its key and value and the query its layer attends with, so that QK-norm,
    RoPE and the V scale run in the kernel that stores the cache.

    Before:  %q1 = moe.rope %q0 ...; %k1 = moe.rope %k0 ...
             moe.kv_cache_write %k1, %v0 into(...) ...
    After:   %q1 = moe.fused "attention_prologue" -> (...) {
               %q1 = moe.rope %q0 ...; %k1 = moe.rope %k0 ...
               moe.kv_cache_write %k1, %v0 into(...) ...
               moe.yield %q1 : ...
             }
  }];
  let dependentDialects = ["::mlir::moe::MoEDialect"];
  let statistics = [
    Statistic<"numFused", "num-fused", "prologues fused">
  ];
}

def MoEFuseGatedFfnPass : Pass<"moe-fuse-gated-ffn", "func::FuncOp"> {
  let summary = "Fuses the gate and up projections with their activation.";
  let description = [{
    Groups `moe.glu %g, %u` with the `moe.linear` ops producing `%g` and
    `%u` when they read the same input, so that both projections and the
    activation run in one loop nest and the `[T, F]` gate and up tensors
    never reach memory.

    Before:  %g = moe.linear %h, %wg ...; %u = moe.linear %h, %wu ...
             %a = moe.glu %g, %u activation(silu) ...
    After:   %a = moe.fused "gated_ffn" -> (tensor<?x40xf32>) { ... }
  }];
  let dependentDialects = ["::mlir::moe::MoEDialect"];
  let statistics = [
    Statistic<"numFused", "num-fused", "gated FFNs fused">
  ];
}

def MoEFuseNormProjectionPass
    : Pass<"moe-fuse-norm-projection", "func::FuncOp"> {
  let summary = "Fuses a norm with the projections that read it.";
  let description = [{
    Groups every `moe.rms_norm`/`moe.layer_norm` over the model width with
    the projections that consume it (`moe.linear`, `moe.route`,
    `moe.logits`, and fused groups whose projections read it), so the
    normalised activation is computed once per token inside the kernel that
    projects it. Other users of the norm read the group's result.

    Before:  %h = moe.rms_norm %x, %w ...
             %q = moe.linear %h, %wq ...; %k = moe.linear %h, %wk ...
    After:   %h, %q, %k = moe.fused "norm_projection" -> (...) { ... }
  }];
  let dependentDialects = ["::mlir::moe::MoEDialect"];
  let statistics = [
    Statistic<"numFused", "num-fused", "norms fused with projections">
  ];
}

def MoEFuseResidualAddPass : Pass<"moe-fuse-residual-add", "func::FuncOp"> {
  let summary = "Fuses a projection with the additions of its result.";
  let description = [{
    Groups a `moe.linear` (or fused group) with the chain of `arith.addf`
    that adds its result to other tensors (residual connections, the shared
    expert's output), so the sum is written once.

    Before:  %a = moe.linear %o, %wo ...; %x1 = arith.addf %x, %a ...
    After:   %x1 = moe.fused "projection_residual" -> (...) { ... }
  }];
  let dependentDialects = ["::mlir::moe::MoEDialect"];
  let statistics = [
    Statistic<"numFused", "num-fused", "projections fused with additions">
  ];
}

//===----------------------------------------------------------------------===//
// Kernel formation and memory planning
//===----------------------------------------------------------------------===//

def MoEOutlineKernelsPass : Pass<"moe-outline-kernels", "ModuleOp"> {
  let summary = "Outlines every fused group and compute op into a kernel.";
  let description = [{
    Every `moe.fused` group, and every compute op left at function level,
    becomes a `moe.kernel` (isolated, with the group's concrete shapes) and a
    `moe.call`. KV-cache operands are replaced by one-layer views
    (`moe.kv_cache_layer`) and the ops inside refer to layer 0, so the same
    computation on different layers is one kernel. Identical kernels are
    outlined once: the symbol ends with a hash of the kernel's body and
    signature, which is also what targets cache compiled kernels by.

    Weight arguments carry their layout (`moe.layout`, and `moe.panel` for
    panels) and cache arguments their access (`moe.cache_access = "read" |
    "write"`) as argument attributes, because a target compiles the kernel
    from its signature alone.

    Before:  %h = moe.fused "norm_projection" -> (...) { ... }
    After:   moe.kernel @norm_projection_1a2b3c4d(...) -> (...) { ... }
             %h = moe.call @norm_projection_1a2b3c4d(...) : ...
  }];
  let dependentDialects = ["::mlir::moe::MoEDialect"];
  let statistics = [
    Statistic<"numCalls", "num-calls", "kernel calls formed">,
    Statistic<"numKernels", "num-kernels", "distinct kernels">
  ];
}

def MoETraceKernelsPass : Pass<"moe-trace-kernels", "ModuleOp"> {
  let summary = "Names every kernel call's results, so that dumps trace them.";
  let description = [{
    Gives each tensor result of every `moe.call` a trace name (`moe.trace`),
    `<function>.<call index>.<kernel>.<result>` with the kernel's content
    hash left out, so that `--dump-activations` writes the outputs of every
    kernel call (those of 32-bit elements, what the dump files hold), in
    call order, besides the results a family names
    (`moe.dump`, kept). `moec compile --trace-kernels` runs it after
    outlining; comparing two builds' traces call by call
    (test/reference/compare_traces.py: a GPU build against the host's) finds
    the first kernel that differs.

    Before:  %0 = moe.call @norm_projection_1a2b3c4d(%x) : ...
    After:   %0 = moe.call @norm_projection_1a2b3c4d(%x)
                 {moe.trace = ["prefill.000.norm_projection.0"]} : ...
  }];
  let statistics = [
    Statistic<"numNamed", "num-named", "kernel results given a trace name">
  ];
}

def MoEPlanArenaPass : Pass<"moe-plan-arena", "ModuleOp"> {
  let summary = "Assigns every intermediate tensor an offset in one arena.";
  let description = [{
    Plans the scratch memory of every entry point at compile time: each
    tensor a `moe.call` produces gets a byte offset into one arena,
    allocated once per session, sized for the largest token count
    (`moe.prefill_chunk` for a dynamic dimension). Tensors whose lifetimes
    do not overlap share memory (first fit over a linear scan; lifetimes are
    exact because entry points are straight-line). The entry's returned
    tensor is written to the caller's output instead (offset -1).

    The plan is recorded as `moe.arena = array<i64: ...>` on each call (one
    offset per result) and `moe.arena_bytes` on the module, the size the
    runtime allocates.

    Before:  %0 = moe.call @k(%x) : (tensor<?x64xf32>) -> tensor<?x64xf32>
    After:   %0 = moe.call @k(%x) {moe.arena = array<i64: 0>} : ...
  }];
  let options = [
    Option<"alignment", "alignment", "int64_t", /*default=*/"64",
           "byte alignment of every arena slot">
  ];
  let statistics = [
    Statistic<"numSlots", "num-slots", "tensors placed in the arena">
  ];
}

def MoEPlanWeightsPass : Pass<"moe-plan-weights", "ModuleOp"> {
  let summary = "Lays out the compiled model's weight file.";
  let description = [{
    Gives every distinct weight (same sources, rows and layout) one byte
    offset in the weight file, recorded as `moe.offset` on each
    `moe.weight`, and the file's data size as `moe.weights_bytes` on the
    module. Float weights are stored as f32 in their `layout`, packed codes
    (`ui8`) as bytes; the codes and scales of a quantized tensor are two
    weights.

    Before:  %w = moe.weight ["w"] layout transposed : tensor<64x40xf32>
    After:   %w = moe.weight ["w"] layout transposed {moe.offset = 4096 : i64} : tensor<64x40xf32>
  }];
  let options = [
    Option<"alignment", "alignment", "int64_t", /*default=*/"64",
           "byte alignment of every weight">
  ];
}

#endif // MOE_DIALECTS_MOE_TRANSFORMS_PASSES_TD
