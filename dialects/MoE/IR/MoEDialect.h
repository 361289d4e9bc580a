//===- MoEDialect.h - The moe dialect, its types and attributes -*- C++ -*-===//
//
// Include this to use the dialect's types and enum attributes; include
// MoEOps.h for the ops.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_DIALECTS_MOE_IR_MOEDIALECT_H
#define MOE_DIALECTS_MOE_IR_MOEDIALECT_H

#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/Dialect.h"
#include "mlir/IR/DialectImplementation.h"

#include "dialects/MoE/IR/MoEDialect.h.inc"
#include "dialects/MoE/IR/MoEEnums.h.inc"

#define GET_ATTRDEF_CLASSES
#include "dialects/MoE/IR/MoEAttrs.h.inc"

#define GET_TYPEDEF_CLASSES
#include "dialects/MoE/IR/MoETypes.h.inc"

#endif // MOE_DIALECTS_MOE_IR_MOEDIALECT_H
