//===- Passes.h - CPU lowering passes ---------------------------*- C++ -*-===//

#ifndef MOE_TARGETS_CPU_LOWERING_PASSES_H
#define MOE_TARGETS_CPU_LOWERING_PASSES_H

#include "dialects/MoE/IR/MoEOps.h"

#include "mlir/Dialect/EmitC/IR/EmitC.h"
#include "mlir/Pass/Pass.h"

namespace mlir::moe::cpu {

#define GEN_PASS_DECL
#include "targets/cpu/Lowering/Passes.h.inc"

/// The layout the CPU kernels want for operand `operandIndex` of `user`.
WeightLayout preferredLayout(Operation *user, unsigned operandIndex);

#define GEN_PASS_REGISTRATION
#include "targets/cpu/Lowering/Passes.h.inc"

} // namespace mlir::moe::cpu

#endif // MOE_TARGETS_CPU_LOWERING_PASSES_H
