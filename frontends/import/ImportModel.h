//===- ImportModel.h - ModelDescription to moe IR ---------------*- C++ -*-===//
//
// Emits a recognised model as a `moe` module: one function per entry point,
// `@prefill` over T tokens and `@decode` over one, whose bodies are the
// model's forward pass as moe ops, with weights as `moe.weight` references
// to the checkpoint. Module attributes record the model (family, sizes,
// checkpoint, every assumption the recogniser made).
//
//===----------------------------------------------------------------------===//

#ifndef MOE_FRONTENDS_IMPORT_IMPORTMODEL_H
#define MOE_FRONTENDS_IMPORT_IMPORTMODEL_H

#include "frontends/family/ModelDescription.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"

namespace mlir::moe {

struct ImportOptions {
  /// The largest number of tokens one prefill call takes; longer prompts are
  /// run in chunks by the runtime. Kernels and the arena are sized for it.
  int64_t prefillChunk = 256;
  /// Whether how a sequence is split into prefill calls changes the result
  /// (a routers' capacity rule): the runtime then prefills a chat's whole
  /// conversation each turn, as the publisher's generate sees it.
  bool prefillWholeSequence = false;
};

/// Builds the module. Emits a diagnostic and fails for a model the dialect
/// cannot express yet (the message names the feature and the layer).
FailureOr<OwningOpRef<ModuleOp>>
importModel(MLIRContext &context,
            const ::moe::frontend::ModelDescription &model,
            const ImportOptions &options);

} // namespace mlir::moe

#endif // MOE_FRONTENDS_IMPORT_IMPORTMODEL_H
