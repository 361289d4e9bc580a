//===- MoEDialect.cpp - The moe dialect -----------------------------------===//

#include "dialects/MoE/IR/MoEDialect.h"
#include "dialects/MoE/IR/MoEOps.h"

using namespace mlir;
using namespace mlir::moe;

#include "dialects/MoE/IR/MoEDialect.cpp.inc"

void MoEDialect::initialize() {
  addOperations<
#define GET_OP_LIST
#include "dialects/MoE/IR/MoEOps.cpp.inc"
      >();
  registerTypesAndAttributes();
}
