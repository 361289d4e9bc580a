//===- Registration.h - Everything moe tools register -----------*- C++ -*-===//
//
// One place that lists the dialects moe IR may contain and registers every
// moe pass and pipeline, shared by moe-opt and moec.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_COMPILER_PIPELINES_REGISTRATION_H
#define MOE_COMPILER_PIPELINES_REGISTRATION_H

#include "mlir/IR/DialectRegistry.h"

namespace mlir::moe {

/// Adds the dialects that moe IR can contain at any stage: moe, func, arith,
/// tensor (shape casts), emitc (host code).
void registerAllDialects(DialectRegistry &registry);

/// Registers every moe pass and named pipeline with the global registry, so
/// that `--<pass>` and `--pass-pipeline` find them. Idempotent.
void registerAllPassesAndPipelines();

} // namespace mlir::moe

#endif // MOE_COMPILER_PIPELINES_REGISTRATION_H
