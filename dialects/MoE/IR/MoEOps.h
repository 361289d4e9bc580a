//===- MoEOps.h - Operations of the moe dialect -----------------*- C++ -*-===//
//
// The generated op classes. See MoEOps.td for what each op means.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_DIALECTS_MOE_IR_MOEOPS_H
#define MOE_DIALECTS_MOE_IR_MOEOPS_H

#include "dialects/MoE/IR/MoEDialect.h"

#include "mlir/Bytecode/BytecodeOpInterface.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/OpImplementation.h"
#include "mlir/IR/SymbolTable.h"
#include "mlir/Interfaces/CallInterfaces.h"
#include "mlir/Interfaces/ControlFlowInterfaces.h"
#include "mlir/Interfaces/FunctionInterfaces.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

#define GET_OP_CLASSES
#include "dialects/MoE/IR/MoEOps.h.inc"

namespace mlir::moe {

/// The shape a weight of logical type `type` has where it is stored (the
/// weight file, kernel buffers): a float tensor stored transposed has its
/// last two dimensions swapped, [.., N, K] -> [.., K, N]; in panels of
/// `panel` features, [.., N / panel, K, panel]. Codes (ui8) keep theirs,
/// since their order is the reading moe.dequantize's.
SmallVector<int64_t> storedWeightShape(RankedTensorType type,
                                       std::optional<WeightLayout> layout,
                                       int64_t panel = 0);

} // namespace mlir::moe

#endif // MOE_DIALECTS_MOE_IR_MOEOPS_H
