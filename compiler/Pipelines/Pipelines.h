//===- Pipelines.h - The named pass pipelines of moec -----------*- C++ -*-===//
//
// Each stage of DESIGN.md §3 is a pipeline builder registered under a flag,
// so `moe-opt --moe-lower-pipeline` runs exactly what `moec compile` runs at
// that stage, and `--emit=<stage>` prints the IR after it.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_COMPILER_PIPELINES_PIPELINES_H
#define MOE_COMPILER_PIPELINES_PIPELINES_H

#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassOptions.h"

namespace mlir::moe {

struct MoEModelPipelineOptions
    : public PassPipelineOptions<MoEModelPipelineOptions> {
  Option<std::string> quant{
      *this, "quant",
      llvm::cl::desc("quantize weights: q8|q4|q2|q1|mixed|none (empty: keep "
                     "float)"),
      llvm::cl::init("")};
  Option<std::string> quantPolicy{
      *this, "quant-policy",
      llvm::cl::desc("per-role or per-name precisions over --quant"),
      llvm::cl::init("")};
  Option<int64_t> quantGroup{*this, "quant-group",
                             llvm::cl::desc("columns per quantization scale"),
                             llvm::cl::init(32)};
  Option<std::string> quantScale{
      *this, "quant-scale",
      llvm::cl::desc("element type of quantization scales: f16|f32"),
      llvm::cl::init("f16")};
  Option<std::string> activations{
      *this, "activations",
      llvm::cl::desc("inputs of packed projections: f32|int8 (int8: "
                     "quantized per block of 32, integer dot products)"),
      llvm::cl::init("f32")};
};

/// Stage 2, model level: verification and clean-up of imported IR, then
/// weight quantization and int8 activations when asked. Flag:
/// --moe-model-pipeline.
void buildMoEModelPipeline(OpPassManager &pm,
                           const MoEModelPipelineOptions &options);

struct MoELowerPipelineOptions
    : public PassPipelineOptions<MoELowerPipelineOptions> {
  Option<std::string> prefillStrategy{
      *this, "prefill-strategy",
      llvm::cl::desc("expert dispatch for prefill: gather|grouped"),
      llvm::cl::init("grouped")};
  Option<bool> fuse{
      *this, "fuse",
      llvm::cl::desc("form fused groups (false: every op its own kernel, "
                     "so every value a kernel reads is one's output, as "
                     "the float build of --quant-calibration needs)"),
      llvm::cl::init(true)};
};

/// Stage 3, fusion and dispatch: attention split, dispatch strategies,
/// fused groups. Flag: --moe-lower-pipeline.
void buildMoELowerPipeline(OpPassManager &pm,
                           const MoELowerPipelineOptions &options);

struct MoECpuKernelPipelineOptions
    : public PassPipelineOptions<MoECpuKernelPipelineOptions> {
  Option<int64_t> lanes{
      *this, "lanes",
      llvm::cl::desc("f32 lanes of the target's vectors (packed-code runs)"),
      llvm::cl::init(16)};
  Option<int64_t> dot{
      *this, "dot",
      llvm::cl::desc("bytes per lane of the target's int8 dot products "
                     "(codes read by int8_activations projections)"),
      llvm::cl::init(4)};
  Option<int64_t> panel{
      *this, "panel",
      llvm::cl::desc("output features per panel of float projection "
                     "weights (0: transposed, no panels)"),
      llvm::cl::init(0)};
  Option<bool> traceKernels{
      *this, "trace-kernels",
      llvm::cl::desc("name every kernel call's results for "
                     "--dump-activations (moe-trace-kernels)"),
      llvm::cl::init(false)};
};

/// Stage 4 for CPU targets: weight layouts, kernels, memory plans.
/// Flag: --moe-cpu-kernel-pipeline.
void buildMoECpuKernelPipeline(OpPassManager &pm,
                               const MoECpuKernelPipelineOptions &options);

/// Stage 5 for CPU targets: host code as EmitC. Flag: --moe-cpu-host-pipeline.
void buildMoECpuHostPipeline(OpPassManager &pm);

/// Registers the pipelines above with the global registry. Idempotent.
void registerMoEPipelines();

} // namespace mlir::moe

#endif // MOE_COMPILER_PIPELINES_PIPELINES_H
