//===- MoEBase.td - The moe dialect ------------------------*- tablegen -*-===//
//
// The dialect definition and the base classes of its ops, types and
// attributes. The description is the dialect's rationale: read it first.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_DIALECTS_MOE_IR_MOEBASE_TD
#define MOE_DIALECTS_MOE_IR_MOEBASE_TD

include "mlir/IR/OpBase.td"
include "mlir/IR/AttrTypeBase.td"
include "mlir/IR/EnumAttr.td"

def MoE_Dialect : Dialect {
  let name = "moe";
  let cppNamespace = "::mlir::moe";
  let summary = "Decoder-only Mixture-of-Experts language models, op by op.";
  let description = [{
    The `moe` dialect holds a language model at the level its authors think
    about it: an embedding, norms, projections, rotary embeddings, attention
    over a KV cache, a router, an expert dispatch and the output logits. One
    op is one step of the model's published forward pass, and every way in
    which the seed families differ is an attribute or an operand of that op,
    never a separate code path:

    * where the families differ in *what* they compute (RoPE layout and
      rotated span, norm kind and epsilon, QK-norm placement, router scoring,
      selection bias, renormalisation, capacity rule, expert activation,
      logit scale), the op carries it as an attribute that the verifier
      checks and `--emit=moe` prints;
    * where they differ in *order* (QK-norm before RoPE in moe100m-physics,
      after it in linnet), the importer emits the ops in that order; this is
      why QK-norm is not an attribute of `moe.attention`;
    * weights are `moe.weight` ops that name checkpoint tensors. Their bytes
      never enter the IR: a compiled model keeps them in a side file.

    Activations are ranked tensors whose first dimension is the token
    dimension `T`. It is dynamic (`?`) in the prefill entry point and `1` in
    the decode entry point; every other dimension is static. Session state
    (KV cache, convolution state) is a typed handle that ops read and write
    through declared memory effects, so the IR stays in value semantics for
    activations and explicit about state.

    What the dialect leaves out on purpose: training-only parts (dropout,
    auxiliary losses, router noise), batching over sequences (a session holds
    one sequence), and anything target-specific. Layout and scheduling
    decisions appear only at the kernel level (`moe.fused`, `moe.kernel`,
    `moe.call`), which the `moe-lower-pipeline` forms and a target's
    pipelines (`moe-cpu-kernel-pipeline`, `moe-cpu-host-pipeline`) turn into
    Halide kernels and host code.
  }];
  let useDefaultTypePrinterParser = 1;
  let useDefaultAttributePrinterParser = 1;
  let extraClassDeclaration = [{
  private:
    /// Registers the types and attributes (MoETypes.cpp).
    void registerTypesAndAttributes();
  public:
  }];
}

class MoE_Op<string mnemonic, list<Trait> traits = []>
    : Op<MoE_Dialect, mnemonic, traits>;

class MoE_Type<string name, string typeMnemonic, list<Trait> traits = []>
    : TypeDef<MoE_Dialect, name, traits> {
  let mnemonic = typeMnemonic;
}

class MoE_EnumAttr<EnumAttrInfo enumInfo, string name>
    : EnumAttr<MoE_Dialect, enumInfo, name> {
  let assemblyFormat = "`<` $value `>`";
}

#endif // MOE_DIALECTS_MOE_IR_MOEBASE_TD
