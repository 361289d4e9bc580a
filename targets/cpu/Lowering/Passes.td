//===- Passes.td - CPU lowering passes ---------------------*- tablegen -*-===//
//
// Passes that know how the CPU kernels want their data laid out and how the
// host code of a CPU executable looks.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_TARGETS_CPU_LOWERING_PASSES_TD
#define MOE_TARGETS_CPU_LOWERING_PASSES_TD

include "mlir/Pass/PassBase.td"

def MoECpuAssignWeightLayoutsPass
    : Pass<"moe-cpu-assign-weight-layouts", "ModuleOp"> {
  let summary = "Chooses how each weight is stored for the CPU kernels.";
  let description = [{
    Sets `layout` on every `moe.weight`. Projection weights (`moe.linear`,
    `moe.logits`, expert gate/up/down) are stored transposed, so the CPU
    kernels vectorise over consecutive output features and stream each
    weight row once per tile of tokens. Embedding tables, routers, norms and
    scales stay row-major. A weight op with users that want different
    layouts is duplicated, one per layout.

    Before:  %w = moe.weight ["q"] : tensor<64x64xf32>
             %q = moe.linear %h, %w ...
    After:   %w = moe.weight ["q"] layout transposed : tensor<64x64xf32>

    With `panel=P` (the CPU targets' projection tile), a float projection
    weight whose P divides its output features is cut into panels instead:
    `[N, K]` stored as `[N / P, K, P]`, so that each tile of P outputs
    streams one contiguous block. Transposed, a tile reads P features of
    every row, a row apart: on a 1024-wide matrix each read is in another
    4 KiB page, where the hardware prefetchers stop, and a one-token
    projection ran at half the DRAM bandwidth it gets from panels.

    After:   %w = moe.weight ["q"] layout panels(64) : tensor<64x64xf32>

    A packed weight read by a projection is stored the same way: its
    `moe.dequantize` becomes `transposed` (and `lanes(L)` for codes
    narrower than a byte, L the target's f32 vector lanes, so a vector of
    output features is a vector of consecutive bytes), and its codes and
    group scales weights `layout transposed`. Its other readers (a tied
    embedding) read the same codes: one copy.

    Before:  %w = moe.dequantize %c, %s format(int4) cols(64) group(32) : ...
    After:   %w = moe.dequantize %c, %s format(int4) cols(64) group(32) transposed lanes(16) : ...

    A packed weight read by a projection with `int8_activations` is stored
    for the target's integer dot products instead: `dot(D)`, D = `dot`
    bytes per 32-bit lane (4 for VNNI and NEON dot products, 2 for
    `pmaddwd`), its group scales transposed, and (with `panel` > 0, CPU
    targets) its rows in `panels(L)` when L divides them: a kernel tile (whole vectors of L features) then
    reads each of its panels' codes as one contiguous run, where without
    panels its next block is a whole row of blocks away (often another
    page, where the prefetchers stop). Every reader of it, an embedding
    included, reads that order.

    Before:  %w = moe.dequantize %q4, %s format(int4) cols(64) group(32) : ...
    After:   %w = moe.dequantize %q4, %s format(int4) cols(64) group(32) dot(4) panels(16) : ...
  }];
  let options = [
    Option<"lanes", "lanes", "int64_t", /*default=*/"16",
           "f32 lanes of the target's vectors (runs of packed codes)">,
    Option<"dot", "dot", "int64_t", /*default=*/"4",
           "bytes per lane of the target's int8 dot products (2 or 4)">,
    Option<"panel", "panel", "int64_t", /*default=*/"0",
           "output features per panel of float projection weights (0: "
           "transposed, no panels)">
  ];
  let dependentDialects = ["::mlir::moe::MoEDialect"];
}

def MoECpuEmitHostPass : Pass<"moe-cpu-emit-host", "ModuleOp"> {
  let summary = "Turns the host functions into EmitC calling the kernels.";
  let description = [{
    Converts every entry function (kernel calls over an arena plan and a
    weight plan) into an `emitc.func` that builds a Halide buffer
    descriptor for each kernel argument (weights in the mapped weight file,
    tensors in the arena, KV-cache windows) and calls the kernel, returning
    its status on failure. Kernels become external declarations; the
    model's descriptor (sizes, entry points) becomes a global. The result is
    printed as C by `mlir-translate --mlir-to-cpp` semantics.

    Before:  %0 = moe.call @embed_1a2b(%w, %tokens) {moe.arena = array<i64: 0>} : ...
    After:   %b0 = emitc.call_opaque "moert_buffer_2d"(...) ...
             %rc = emitc.call_opaque "embed_1a2b3c4d5e6f7a8b"(%ctx, %b0, ...) ...
  }];
  let dependentDialects = ["::mlir::emitc::EmitCDialect"];
}

#endif // MOE_TARGETS_CPU_LOWERING_PASSES_TD
