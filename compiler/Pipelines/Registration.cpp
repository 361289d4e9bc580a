//===- Registration.cpp - Everything moe tools register -------------------===//

#include "compiler/Pipelines/Registration.h"

#include "compiler/Pipelines/Pipelines.h"
#include "dialects/MoE/IR/MoEDialect.h"
#include "dialects/MoE/Transforms/Passes.h"
#include "targets/cpu/Lowering/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/EmitC/IR/EmitC.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"

namespace mlir::moe {

void registerAllDialects(DialectRegistry &registry) {
  registry.insert<MoEDialect, func::FuncDialect, arith::ArithDialect,
                  tensor::TensorDialect, emitc::EmitCDialect>();
}

void registerAllPassesAndPipelines() {
  static bool registered = false;
  if (registered) {
    return;
  }
  registered = true;
  registerMoEPasses();
  cpu::registerMoECpuPasses();
  registerMoEPipelines();
}

} // namespace mlir::moe
