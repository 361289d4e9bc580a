//===- moe-opt.cpp - Runs moe passes and pipelines on IR ------------------===//
//
// mlir-opt for the moe dialect: registers only the dialects moe IR can
// contain, and every moe pass and pipeline, so that lit tests and users run
// exactly the code `moec` runs.
//
//===----------------------------------------------------------------------===//

#include "compiler/Pipelines/Registration.h"

#include "mlir/Tools/mlir-opt/MlirOptMain.h"

int main(int argc, char **argv) {
  mlir::DialectRegistry registry;
  mlir::moe::registerAllDialects(registry);
  mlir::moe::registerAllPassesAndPipelines();
  return mlir::asMainReturnCode(
      mlir::MlirOptMain(argc, argv, "moe optimizer driver\n", registry));
}
