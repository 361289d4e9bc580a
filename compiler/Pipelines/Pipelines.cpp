//===- Pipelines.cpp - The named pass pipelines of moec -------------------===//

#include "compiler/Pipelines/Pipelines.h"

#include "dialects/MoE/Transforms/Passes.h"
#include "targets/cpu/Lowering/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Pass/PassRegistry.h"
#include "mlir/Transforms/Passes.h"

namespace mlir::moe {

void buildMoEModelPipeline(OpPassManager &pm,
                           const MoEModelPipelineOptions &options) {
  // Weights and norms are pure: identical ones (a tied embedding read by
  // the embedding and the logits) are merged, dead ones dropped.
  pm.addPass(createCSEPass());
  pm.addPass(createCanonicalizerPass());
  // After the merge, so a tied embedding is quantized once, for both uses.
  if (!options.quant.empty() || !options.quantPolicy.empty()) {
    pm.nest<func::FuncOp>().addPass(
        createMoEQuantizeWeightsPass(MoEQuantizeWeightsPassOptions{
            options.quant.empty() ? std::string("none")
                                  : std::string(options.quant),
            options.quantPolicy, options.quantGroup, options.quantScale}));
  }
  // After quantization, which decides which weights are packed.
  if (options.activations == "int8") {
    pm.nest<func::FuncOp>().addPass(createMoEQuantizeActivationsPass());
  }
}

void buildMoELowerPipeline(OpPassManager &pm,
                           const MoELowerPipelineOptions &options) {
  OpPassManager &func = pm.nest<func::FuncOp>();
  // Decode and prefill visit experts differently; choose before fusing.
  func.addPass(createMoESelectDispatchPass(
      MoESelectDispatchPassOptions{options.prefillStrategy, 1}));
  // The cache write must be its own op to fuse with the K/V producers.
  func.addPass(createMoESplitAttentionPass());
  // Likewise the convolution's state write, so no kernel reads and writes it.
  func.addPass(createMoESplitCausalConvPass());
  if (!options.fuse) {
    return;
  }
  func.addPass(createMoEFuseAttentionProloguePass());
  // Gated FFNs first, so that the norm fusion below can absorb them whole.
  func.addPass(createMoEFuseGatedFfnPass());
  func.addPass(createMoEFuseNormProjectionPass());
  func.addPass(createMoEFuseResidualAddPass());
}

void buildMoECpuKernelPipeline(OpPassManager &pm,
                               const MoECpuKernelPipelineOptions &options) {
  // Layouts are chosen while the users of each weight are still visible.
  pm.addPass(cpu::createMoECpuAssignWeightLayoutsPass(
      cpu::MoECpuAssignWeightLayoutsPassOptions{options.lanes, options.dot,
                                                options.panel}));
  pm.addPass(createMoEOutlineKernelsPass());
  if (options.traceKernels) {
    pm.addPass(createMoETraceKernelsPass());
  }
  // The views outlining made for each call collapse to one per layer.
  pm.addPass(createCSEPass());
  pm.addPass(createMoEPlanArenaPass());
  pm.addPass(createMoEPlanWeightsPass());
}

void buildMoECpuHostPipeline(OpPassManager &pm) {
  pm.addPass(cpu::createMoECpuEmitHostPass());
}

void registerMoEPipelines() {
  static bool registered = false;
  if (registered) {
    return;
  }
  registered = true;
  PassPipelineRegistration<MoEModelPipelineOptions>(
      "moe-model-pipeline",
      "Verifies and cleans imported moe IR; quantizes weights when asked",
      buildMoEModelPipeline);
  PassPipelineRegistration<MoELowerPipelineOptions>(
      "moe-lower-pipeline",
      "Splits attention, chooses dispatch strategies, forms fused groups",
      buildMoELowerPipeline);
  PassPipelineRegistration<MoECpuKernelPipelineOptions>(
      "moe-cpu-kernel-pipeline",
      "Assigns CPU weight layouts, outlines kernels, plans arena and weights",
      buildMoECpuKernelPipeline);
  PassPipelineRegistration<>("moe-cpu-host-pipeline",
                             "Emits the CPU host code as EmitC",
                             buildMoECpuHostPipeline);
}

} // namespace mlir::moe
