//===- MoETypes.td - Types of the moe dialect --------------*- tablegen -*-===//
//
// Session state handles. Activations and weights use builtin tensors.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_DIALECTS_MOE_IR_MOETYPES_TD
#define MOE_DIALECTS_MOE_IR_MOETYPES_TD

include "dialects/MoE/IR/MoEBase.td"
include "mlir/IR/BuiltinTypeInterfaces.td"

def MoE_KVCacheType : MoE_Type<"KVCache", "kv_cache"> {
  let summary = "The keys and values a session has attended to so far.";
  let description = [{
    A handle to one session's KV cache for all attention layers. Its
    capacity in positions is a run-time choice (`-c`), so it is not part of
    the type. The element type is the precision the cache stores.

    ```mlir
    !moe.kv_cache<layers = 14, kv_heads = 2, head_dim = 64, element = f32>
    ```
  }];
  let parameters = (ins "int64_t":$layers, "int64_t":$kvHeads,
                        "int64_t":$headDim, "::mlir::Type":$elementType);
  let assemblyFormat = [{
    `<` `layers` `=` $layers `,` `kv_heads` `=` $kvHeads `,`
        `head_dim` `=` $headDim `,` `element` `=` $elementType `>`
  }];
  let genVerifyDecl = 1;
}

def MoE_ConvStateType : MoE_Type<"ConvState", "conv_state"> {
  let summary = "The last inputs a causal convolution needs in decode.";
  let description = [{
    A handle to one session's causal-convolution state: for every layer, the
    last `width - 1` input rows, so that decoding one token can convolve over
    the inputs it does not see again.

    ```mlir
    !moe.conv_state<layers = 12, channels = 768, width = 3, element = f32>
    ```
  }];
  let parameters = (ins "int64_t":$layers, "int64_t":$channels,
                        "int64_t":$width, "::mlir::Type":$elementType);
  let assemblyFormat = [{
    `<` `layers` `=` $layers `,` `channels` `=` $channels `,`
        `width` `=` $width `,` `element` `=` $elementType `>`
  }];
  let genVerifyDecl = 1;
}

#endif // MOE_DIALECTS_MOE_IR_MOETYPES_TD
