//===- GpuSchedule.cpp - Schedules a kernel's pipeline for a GPU ----------===//
//
// Algorithm (see GpuSchedule.h for the rules):
//   1. Collect every Func the outputs call, transitively.
//   2. Decide which are materialised at root; leave the rest inline.
//   3. Give each stage of a root Func one loop of GPU blocks over its fused
//      pure dimensions, or a single GPU thread when it has none.
//
// Why so uniform: a decode step on a GPU is bound by reading the weights,
// and one thread per output element, its reduction serial, reads each
// weight once. Neighbouring threads take neighbouring output features, so
// a weight stored with the output feature innermost (the transposed
// layouts moe-cpu-assign-weight-layouts picks for projections and
// experts) is read coalesced. One token's projection has only as many
// outputs as features, far too few threads to keep a GPU's memory busy,
// so one-token kernels split their long reductions into chunks with
// threads of their own. Everything stays on the device between stages:
// nothing is ever scheduled on the host, so no stage copies a buffer
// back. None of this has been measured on a GPU yet.
//
// Compiled with exceptions on: Halide reports schedule errors as
// exceptions.
//
//===----------------------------------------------------------------------===//

#include "targets/cuda/kernels/GpuSchedule.h"

#include <optional>

using namespace Halide;

namespace mlir::moe::gpu {

namespace {

/// The pure dimensions of stage `stage` of `function` (0: the pure
/// definition), innermost first: those of its left-hand side that are the
/// Func's own variable at their own position, so threads over them never
/// write the same element.
std::vector<std::string> pureDimensions(const Internal::Function &function,
                                        int stage) {
  const std::vector<std::string> &vars = function.args();
  if (stage == 0) {
    return vars;
  }
  std::vector<std::string> pure;
  const std::vector<Expr> &lhs = function.update(stage - 1).args();
  for (size_t i = 0; i < lhs.size() && i < vars.size(); ++i) {
    const auto *var = lhs[i].as<Internal::Variable>();
    if (var && var->name == vars[i]) {
      pure.push_back(vars[i]);
    }
  }
  return pure;
}

void scheduleStage(Stage stage, const std::vector<std::string> &pure,
                   const GpuScheduleOptions &options) {
  if (pure.empty()) {
    if (options.onHost) {
      stage.unscheduled();
    } else {
      stage.gpu_single_thread();
    }
    return;
  }
  VarOrRVar fused = Var(pure[0]);
  for (size_t i = 1; i < pure.size(); ++i) {
    Var next(pure[0] + "_" + std::to_string(i));
    stage.fuse(fused, Var(pure[i]), next);
    fused = next;
  }
  Var block, thread;
  if (options.onHost) {
    stage
        .split(fused, block, thread, options.threads, TailStrategy::GuardWithIf)
        .parallel(block);
  } else {
    stage.gpu_tile(fused, block, thread, options.threads,
                   TailStrategy::GuardWithIf);
  }
}

/// Schedules `f` at root, each stage as scheduleStage says.
void scheduleRoot(Func f, const GpuScheduleOptions &options) {
  const Internal::Function &function = f.function();
  f.compute_root();
  scheduleStage(f, pureDimensions(function, 0), options);
  for (int u = 0; u < f.num_update_definitions(); ++u) {
    scheduleStage(f.update(u), pureDimensions(function, u + 1), options);
  }
}

/// Splits update `u` of `f` over its outermost reduction dimension when
/// that is long (GpuScheduleOptions::splitReductions); returns the Func of
/// the chunks' partial results, or nothing when the update is short or not
/// one Halide can split (its rfactor check refuses: not associative).
std::optional<Func> splitReduction(Func f, int u,
                                   const GpuScheduleOptions &options) {
  const Internal::Function &function = f.function();
  if (options.splitReductions <= 0 || pureDimensions(function, u + 1).empty()) {
    return std::nullopt;
  }
  const std::vector<Internal::ReductionVariable> &rvars =
      function.update(u).schedule().rvars();
  if (rvars.empty()) {
    return std::nullopt;
  }
  const Internal::ReductionVariable &outer = rvars.back();
  const int64_t *extent = Internal::as_const_int(outer.extent);
  int chunk = options.splitReductions;
  if (!extent || *extent < 8 * int64_t(chunk)) {
    return std::nullopt;
  }
  try {
    RVar chunks, within;
    Var part(function.name() + "_part");
    Stage stage = f.update(u);
    stage.split(RVar(outer.var), chunks, within, chunk,
                TailStrategy::GuardWithIf);
    return stage.rfactor(chunks, part);
  } catch (const Halide::Error &) {
    return std::nullopt;
  }
}

} // namespace

void scheduleForGpu(const std::vector<Func> &outputs,
                    const std::set<std::string> &materialise,
                    const GpuScheduleOptions &options) {
  std::vector<Internal::Function> roots;
  std::set<std::string> outputNames;
  for (const Func &out : outputs) {
    roots.push_back(out.function());
    outputNames.insert(out.name());
  }
  std::map<std::string, Internal::Function> env =
      Internal::build_environment(roots);
  for (auto &[name, function] : env) {
    bool root = outputNames.count(name) || materialise.count(name) ||
                function.has_update_definition();
    if (!root) {
      continue;
    }
    Func f(function);
    for (int u = 0; u < f.num_update_definitions(); ++u) {
      if (std::optional<Func> partial = splitReduction(f, u, options)) {
        scheduleRoot(*partial, options);
      }
    }
    scheduleRoot(f, options);
  }
}

} // namespace mlir::moe::gpu
