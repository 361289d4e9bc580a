//===- KernelBuilder.cpp - A moe.kernel as a Halide pipeline --------------===//
//
// Algorithm:
//   1. Create the pipeline's parameters from the kernel ABI: an ImageParam
//      per tensor argument with its static extents and dense strides
//      declared (so codegen sees constants), a Param per position, two
//      ImageParams per KV-cache layer read, one per conv-state layer read.
//   2. Walk the body, mapping each value to a TensorFunc built by the op's
//      algorithm (Algorithms.h).
//   3. Materialise what must be: every kernel output, and every result that
//      is not elementwise (a norm, a projection, a routing) since its
//      consumers would otherwise recompute a reduction per element.
//      Elementwise results stay inline.
//   4. The pipeline's outputs are the kernel results, then the KV-cache
//      windows and conv-state rings written, in ABI order.
//
// Compiled with exceptions on: Halide reports user errors as exceptions.
//
//===----------------------------------------------------------------------===//

#include "targets/cpu/kernels/KernelBuilder.h"

#include "targets/common/KernelAbi.h"
#include "targets/cpu/kernels/Algorithms.h"
#include "targets/cpu/kernels/Int8Dot.h"
#include "targets/cuda/kernels/GpuSchedule.h"

#include "mlir/Dialect/Arith/IR/Arith.h"

#include "llvm/ADT/TypeSwitch.h"

using namespace Halide;

namespace mlir::moe::cpu {

namespace {

Halide::Type halideType(mlir::Type type) {
  if (type.isF32()) {
    return Float(32);
  }
  if (type.isF16()) {
    return Float(16);
  }
  if (type.isInteger(32)) {
    return Int(32);
  }
  if (type.isUnsignedInteger(8)) {
    return UInt(8);
  }
  return Halide::Type();
}

std::vector<int64_t> shapeOf(mlir::Type type) {
  ArrayRef<int64_t> shape = cast<RankedTensorType>(type).getShape();
  return std::vector<int64_t>(shape.begin(), shape.end());
}

ActivationKind activationKind(moe::Activation activation, bool &ok) {
  ok = true;
  switch (activation) {
  case moe::Activation::Silu:
    return ActivationKind::Silu;
  case moe::Activation::GeluTanh:
    return ActivationKind::GeluTanh;
  case moe::Activation::Relu:
    return ActivationKind::Relu;
  case moe::Activation::Gelu:
    break;
  }
  ok = false;
  return ActivationKind::Silu;
}

/// The last two dimensions of `w` swapped, as a view: how a stored-
/// transposed weight reads, for a weight computed in the kernel.
TensorFunc transposedView(const TensorFunc &w) {
  int rank = w.rank();
  std::vector<Var> v;
  for (int i = 0; i < rank; ++i) {
    v.push_back(Var());
  }
  std::vector<Expr> swapped(v.begin(), v.end());
  std::swap(swapped[0], swapped[1]);
  Func view;
  view(v) = w.func(swapped);
  std::vector<int64_t> shape = w.shape;
  std::swap(shape[rank - 1], shape[rank - 2]);
  return TensorFunc{view, shape, w.storedBits};
}

/// Declares a dense layout with static extents on every dimension but the
/// token one (always outermost), so strides are compile-time constants.
void constrainDense(ImageParam &param, const std::vector<int64_t> &shape) {
  int rank = static_cast<int>(shape.size());
  int stride = 1;
  for (int i = 0; i < rank; ++i) {
    int64_t extent = shape[rank - 1 - i];
    param.dim(i).set_min(0).set_stride(stride);
    if (ShapedType::isDynamic(extent)) {
      break;
    }
    param.dim(i).set_extent(static_cast<int>(extent));
    stride *= static_cast<int>(extent);
  }
}

/// Elements of a one-token GPU kernel's long reduction one thread sums:
/// a 1024-long projection becomes 32 chunks, 32 times the threads.
constexpr int kGpuReductionChunk = 32;

class Builder {
public:
  Builder(KernelOp kernel, const TargetDescription &target,
          const KernelBuildOptions &options)
      : kernel(kernel), target(target), options(options) {}

  FailureOr<BuiltKernel> build();

private:
  LogicalResult buildOp(Operation *op);
  /// The packed weight behind `weight` (a moe.dequantize in dot(D)
  /// order), as an int8 projection reads it; fails on the op `user`.
  FailureOr<PackedWeight> packedWeight(Operation *user, Value weight);
  /// moe.linear / moe.logits `op` with int8_activations(`block`).
  LogicalResult int8Projection(Operation *op, Value input, Value weight,
                               Value bias, uint64_t block, double scale);
  /// moe.linear / moe.logits `op` with f32 inputs.
  void floatProjection(Operation *op, Value input, Value weight, Value bias,
                       double scale);
  const TensorFunc *lookup(Value value) {
    auto it = values.find(value);
    return it == values.end() ? nullptr : &it->second;
  }
  /// How weight argument `weightArg` is stored, and its panel width.
  std::pair<std::optional<WeightLayout>, int64_t> storage(Value weightArg) {
    auto arg = dyn_cast<BlockArgument>(weightArg);
    if (!arg) {
      return {std::nullopt, 0};
    }
    unsigned index = arg.getArgNumber();
    auto layout =
        kernel.getArgAttrOfType<WeightLayoutAttr>(index, "moe.layout");
    auto panel = kernel.getArgAttrOfType<IntegerAttr>(index, "moe.panel");
    return {layout ? std::optional(layout.getValue()) : std::nullopt,
            panel ? panel.getInt() : 0};
  }
  /// Whether the algorithms read weight `weightArg` transposed: stored so,
  /// or in panels, which its Func shows as a transposed view.
  bool transposed(Value weightArg) {
    std::optional<WeightLayout> layout = storage(weightArg).first;
    return layout == WeightLayout::Transposed || layout == WeightLayout::Panels;
  }
  /// Whether the group scales of `d`, and its offsets if any, are stored
  /// transposed, as transposed or dot-blocked codes with groups read them.
  bool groupParamsTransposed(DequantizeOp d) {
    return transposed(d.getScale()) &&
           (!d.getOffset() || transposed(d.getOffset()));
  }
  void record(Operation *op, const OpFuncs &funcs, unsigned firstResult = 0) {
    for (size_t i = 0; i < funcs.values.size(); ++i) {
      Value result = op->getResult(firstResult + i);
      values[result] = funcs.values[i];
      schedules[result] = funcs.schedules[i];
      elementwise[result] = funcs.elementwise;
    }
  }

  KernelOp kernel;
  const TargetDescription &target;
  KernelBuildOptions options;
  KernelEnv env;
  DenseMap<Value, TensorFunc> values;
  DenseMap<Value, RootSchedule> schedules;
  DenseMap<Value, bool> elementwise;
  // KV-cache arguments: read buffers, or the windows a write produces.
  DenseMap<unsigned, std::pair<Func, Func>> cacheReads;
  DenseMap<unsigned, Expr> cacheCapacity;
  DenseMap<unsigned, std::pair<Func, Func>> cacheWrites;
  DenseMap<unsigned, RootSchedule> cacheWriteSchedules;
  // Conv-state arguments: the ring read, or the ring a write produces.
  DenseMap<unsigned, Func> convReads;
  DenseMap<unsigned, std::pair<Func, RootSchedule>> convWrites;
  // Inputs quantized for int8 projections, by (input, block).
  DenseMap<std::pair<Value, uint64_t>, Int8Input> int8Inputs;
};

/// The attributes of `d` that say how its codes are stored.
PackedCodes packedCodes(DequantizeOp d) {
  PackedCodes codes;
  codes.bits = static_cast<int>(DequantizeOp::bitsOf(d.getFormat()));
  codes.sign1 = d.getFormat() == PackedFormat::Sign1;
  codes.group = d.getGroup() ? static_cast<int>(*d.getGroup()) : 0;
  codes.lowBitsFirst = d.getLowBitsFirst();
  codes.offsetBinary = d.getOffsetBinary();
  codes.transposed = d.getTransposed();
  codes.lanes = d.getLanes() ? static_cast<int>(*d.getLanes()) : 0;
  codes.dot = d.getDot() ? static_cast<int>(*d.getDot()) : 0;
  codes.panels = d.getPanels() ? static_cast<int>(*d.getPanels()) : 0;
  return codes;
}

FailureOr<PackedWeight> Builder::packedWeight(Operation *user, Value weight) {
  auto d = weight.getDefiningOp<DequantizeOp>();
  if (!d || !d.getDot() || static_cast<int>(*d.getDot()) != env.dotBytes) {
    return user->emitOpError("cannot be compiled for the CPU target: "
                             "int8_activations reads packed codes in "
                             "dot(")
           << env.dotBytes
           << ") order (run moe-cpu-assign-weight-layouts with the target's "
              "dot bytes)";
  }
  PackedWeight packed;
  packed.codes = *lookup(d.getPacked());
  packed.scales = *lookup(d.getScale());
  if (Value offset = d.getOffset()) {
    packed.offsets = *lookup(offset);
  }
  packed.layout = packedCodes(d);
  ArrayRef<int64_t> shape = d.getResult().getType().getShape();
  packed.rows = static_cast<int>(shape[shape.size() - 2]);
  packed.cols = static_cast<int>(shape.back());
  if (packed.layout.group > 0 && !groupParamsTransposed(d)) {
    return user->emitOpError("cannot be compiled for the CPU target: "
                             "int8_activations reads group scales and "
                             "offsets stored transposed (moe.layout)");
  }
  return packed;
}

LogicalResult Builder::int8Projection(Operation *op, Value input, Value weight,
                                      Value bias, uint64_t block,
                                      double scale) {
  FailureOr<PackedWeight> w = packedWeight(op, weight);
  if (failed(w)) {
    return failure();
  }
  // Projections of one input (q, k, v; a gate and its up) share its
  // quantization.
  auto key = std::make_pair(input, block);
  auto quantized = int8Inputs.find(key);
  if (quantized == int8Inputs.end()) {
    quantized =
        int8Inputs
            .try_emplace(key,
                         quantizeProjectionInput(env, *lookup(input), w->cols,
                                                 static_cast<int>(block)))
            .first;
  }
  record(op,
         int8Linear(env, quantized->second, *w, bias ? lookup(bias) : nullptr,
                    shapeOf(op->getResult(0).getType()), scale));
  return success();
}

void Builder::floatProjection(Operation *op, Value input, Value weight,
                              Value bias, double scale) {
  const TensorFunc *w = lookup(weight);
  const TensorFunc *rowScale = nullptr;
  // A moe.dequantize with one scale per row and no offsets is read as its
  // codes alone, and each row's sum is multiplied by its scale once, not
  // every code: one multiply fewer a code in the loop.
  std::optional<TensorFunc> codes;
  auto d = weight.getDefiningOp<DequantizeOp>();
  if (d && !d.getOffset()) {
    PackedCodes packed = packedCodes(d);
    const TensorFunc *scales = lookup(d.getScale());
    if (packed.group <= 0 && scales->rank() == 1) {
      codes = dequantize(env, *lookup(d.getPacked()), *scales, nullptr, packed,
                         shapeOf(d.getResult().getType()), /*unscaled=*/true)
                  .values[0];
      w = &*codes;
      rowScale = scales;
    }
  }
  record(op, linear(env, *lookup(input), *w, transposed(weight),
                    bias ? lookup(bias) : nullptr,
                    shapeOf(op->getResult(0).getType()), scale, rowScale));
}

LogicalResult Builder::buildOp(Operation *op) {
  auto need = [&](Value v) -> const TensorFunc & {
    const TensorFunc *f = lookup(v);
    assert(f && "operands are built before their users");
    return *f;
  };
  auto unsupported = [&](const Twine &what) {
    return op->emitOpError("cannot be compiled for the CPU target: ") << what;
  };
  return llvm::TypeSwitch<Operation *, LogicalResult>(op)
      .Case<DequantizeOp>([&](DequantizeOp d) -> LogicalResult {
        PackedCodes codes = packedCodes(d);
        if ((codes.transposed || codes.dot) && codes.group > 0 &&
            !groupParamsTransposed(d)) {
          return unsupported("transposed codes whose group scales or "
                             "offsets are not stored transposed (moe.layout)");
        }
        record(d, dequantize(env, need(d.getPacked()), need(d.getScale()),
                             d.getOffset() ? &need(d.getOffset()) : nullptr,
                             codes, shapeOf(d.getResult().getType())));
        return success();
      })
      .Case<EmbedOp>([&](EmbedOp e) {
        record(e, embed(env, need(e.getTable()), need(e.getTokens()),
                        e.getScale().convertToDouble()));
        return success();
      })
      .Case<RmsNormOp>([&](RmsNormOp n) {
        record(n, rmsNorm(env, need(n.getInput()), need(n.getWeight()),
                          n.getEps().convertToDouble()));
        return success();
      })
      .Case<LayerNormOp>([&](LayerNormOp n) {
        record(n, layerNorm(env, need(n.getInput()),
                            n.getWeight() ? &need(n.getWeight()) : nullptr,
                            n.getBias() ? &need(n.getBias()) : nullptr,
                            n.getEps().convertToDouble()));
        return success();
      })
      .Case<LinearOp>([&](LinearOp l) -> LogicalResult {
        if (std::optional<uint64_t> block = l.getInt8Activations()) {
          return int8Projection(l, l.getInput(), l.getWeight(), l.getBias(),
                                *block, 1.0);
        }
        floatProjection(l, l.getInput(), l.getWeight(), l.getBias(), 1.0);
        return success();
      })
      .Case<LogitsOp>([&](LogitsOp l) -> LogicalResult {
        if (std::optional<uint64_t> block = l.getInt8Activations()) {
          return int8Projection(l, l.getInput(), l.getWeight(), l.getBias(),
                                *block, l.getScale().convertToDouble());
        }
        floatProjection(l, l.getInput(), l.getWeight(), l.getBias(),
                        l.getScale().convertToDouble());
        return success();
      })
      .Case<HeadScaleOp>([&](HeadScaleOp h) {
        record(h, headScale(env, need(h.getInput()), need(h.getScale())));
        return success();
      })
      .Case<RopeOp>([&](RopeOp r) {
        record(r, rope(env, need(r.getInput()),
                       r.getLayout() == RopeLayout::Interleaved,
                       r.getRotaryDims(), r.getTheta().convertToDouble()));
        return success();
      })
      .Case<GluOp>([&](GluOp g) -> LogicalResult {
        bool ok;
        ActivationKind kind = activationKind(g.getActivation(), ok);
        if (!ok) {
          return unsupported("activation '" +
                             stringifyActivation(g.getActivation()) + "'");
        }
        record(g, glu(env, need(g.getGate()), need(g.getUp()), kind));
        return success();
      })
      .Case<arith::AddFOp>([&](arith::AddFOp a) {
        record(a, add(env, need(a.getLhs()), need(a.getRhs())));
        return success();
      })
      .Case<KVCacheWriteOp>([&](KVCacheWriteOp w) {
        OpFuncs funcs = kvCacheWrite(env, need(w.getKey()), need(w.getValue()));
        unsigned arg = cast<BlockArgument>(w.getCache()).getArgNumber();
        cacheWrites[arg] = {funcs.values[0].func, funcs.values[1].func};
        cacheWriteSchedules[arg] = funcs.schedules[0];
        return success();
      })
      .Case<CachedAttentionOp>([&](CachedAttentionOp a) {
        unsigned arg = cast<BlockArgument>(a.getCache()).getArgNumber();
        auto [keys, vals] = cacheReads.lookup(arg);
        record(a, cachedAttention(env, need(a.getQuery()), keys, vals,
                                  cacheCapacity.lookup(arg),
                                  a.getCache().getType().getKvHeads(),
                                  a.getScale().convertToDouble()));
        return success();
      })
      .Case<CachedConv1dOp>([&](CachedConv1dOp c) {
        unsigned arg = cast<BlockArgument>(c.getState()).getArgNumber();
        record(c, cachedConv1d(env, need(c.getInput()), need(c.getWeight()),
                               convReads.lookup(arg)));
        return success();
      })
      .Case<ConvStateWriteOp>([&](ConvStateWriteOp w) {
        OpFuncs funcs = convStateWrite(env, need(w.getInput()),
                                       w.getState().getType().getWidth());
        unsigned arg = cast<BlockArgument>(w.getState()).getArgNumber();
        convWrites[arg] = {funcs.values[0].func, funcs.schedules[0]};
        return success();
      })
      .Case<RouteOp>([&](RouteOp r) -> LogicalResult {
        RouteOptions options;
        if (r.getCapacity() == CapacityRule::DropLowestGate) {
          options.capacityFactor = r.getCapacityFactor().convertToDouble();
        }
        options.scoring = r.getScoring() == RouterScoring::Sigmoid
                              ? ScoringKind::Sigmoid
                              : ScoringKind::Softmax;
        options.topK = r.getTopK();
        options.renormalize = r.getRenormalize();
        options.renormEps = r.getRenormEps().convertToDouble();
        options.biasOnScores = r.getSelectionBias() == SelectionBias::Scores;
        options.scaling = r.getScaling().convertToDouble();
        if (transposed(r.getRouter())) {
          return unsupported("a transposed router weight");
        }
        record(r, route(env, need(r.getInput()), need(r.getRouter()),
                        r.getBias() ? &need(r.getBias()) : nullptr, options));
        return success();
      })
      .Case<ExpertDispatchOp>([&](ExpertDispatchOp e) -> LogicalResult {
        bool ok;
        ActivationKind kind = activationKind(e.getActivation(), ok);
        if (!ok) {
          return unsupported("activation '" +
                             stringifyActivation(e.getActivation()) + "'");
        }
        // One token has nothing to group: the gather kernel is its GEMV.
        bool grouped =
            e.getStrategy() == DispatchStrategy::Grouped && !env.singleToken;
        if (std::optional<uint64_t> block = e.getInt8Activations()) {
          std::optional<PackedWeight> gate;
          if (e.getGate()) {
            FailureOr<PackedWeight> w = packedWeight(e, e.getGate());
            if (failed(w)) {
              return failure();
            }
            gate = *w;
          }
          FailureOr<PackedWeight> up = packedWeight(e, e.getUp());
          FailureOr<PackedWeight> down = packedWeight(e, e.getDown());
          if (failed(up) || failed(down)) {
            return failure();
          }
          record(e, int8ExpertDispatch(
                        env, need(e.getInput()), need(e.getIndices()),
                        need(e.getWeights()), gate ? &*gate : nullptr, *up,
                        *down, kind, static_cast<int>(*block), grouped));
          return success();
        }
        auto usable = [&](Value w) {
          return transposed(w) || w.getDefiningOp<DequantizeOp>();
        };
        if (!usable(e.getUp()) || !usable(e.getDown()) ||
            (e.getGate() && !usable(e.getGate()))) {
          return unsupported("expert weights that are not stored transposed "
                             "(run moe-cpu-assign-weight-layouts)");
        }
        // Packed experts are dequantized where they are read: any layout
        // is a view.
        std::optional<TensorFunc> gate, up, down;
        for (auto [w, view] :
             {std::pair(e.getGate(), &gate), std::pair(e.getUp(), &up),
              std::pair(e.getDown(), &down)}) {
          if (w) {
            *view = w.getDefiningOp<DequantizeOp>() ? transposedView(need(w))
                                                    : need(w);
          }
        }
        auto dispatch = grouped ? expertDispatchGrouped : expertDispatchGather;
        record(e, dispatch(env, need(e.getInput()), need(e.getIndices()),
                           need(e.getWeights()), gate ? &*gate : nullptr, *up,
                           *down, kind));
        return success();
      })
      .Default([&](Operation *other) -> LogicalResult {
        return unsupported("no CPU kernel for this op");
      });
}

FailureOr<BuiltKernel> Builder::build() {
  FailureOr<SmallVector<KernelAbiSlot>> abi = kernelAbi(kernel);
  if (failed(abi)) {
    return failure();
  }
  Block &body = kernel.getBody().front();
  env.target = &target;
  env.lanes = target.floatLanes();
  env.registers = target.vectorRegisters;
  env.dotBytes = target.int8Dot.dotBytes;
  env.unsignedCodes = target.int8Dot.unsignedCodes;
  env.gpu = target.isGpu();

  // The token count: the extent of the token dimension of a tensor input,
  // or 1 when every tensor has a static one.
  BuiltKernel built;
  std::vector<Param<int32_t>> scalarParams;
  Expr tokens;
  bool dynamicTokens = false;
  for (const KernelAbiSlot &slot : *abi) {
    using Kind = KernelAbiSlot::Kind;
    if (slot.isOutput()) {
      continue;
    }
    BlockArgument arg = body.getArgument(slot.index);
    std::string name = "arg" + std::to_string(slot.index);
    switch (slot.kind) {
    case Kind::InputTensor: {
      Halide::Type type =
          halideType(cast<RankedTensorType>(arg.getType()).getElementType());
      if (type.bits() == 0) {
        return kernel.emitOpError("argument ")
               << slot.index << " has an element type the CPU kernels do not "
               << "take: " << arg.getType();
      }
      auto argType = cast<RankedTensorType>(arg.getType());
      auto [layout, panel] = storage(arg);
      SmallVector<int64_t> stored = storedWeightShape(argType, layout, panel);
      std::vector<int64_t> shape(stored.begin(), stored.end());
      ImageParam param(type, static_cast<int>(shape.size()), name);
      constrainDense(param, shape);
      Func f(name);
      std::vector<Var> vars;
      for (int i = 0; i < param.dimensions(); ++i) {
        vars.push_back(Var());
      }
      if (layout == WeightLayout::Panels) {
        // Panels [.., N / P, K, P] read as the transposed [.., K, N]: with
        // tiles of output features that are whole panels, Halide reduces
        // the n % P and n / P to the tile's offsets (dense vector loads).
        vars.pop_back();
        std::vector<Expr> at(vars.begin(), vars.end());
        Expr n = vars[0];
        at[0] = n % static_cast<int>(panel);
        at.insert(at.begin() + 2, n / static_cast<int>(panel));
        f(vars) = param(at);
        SmallVector<int64_t> view =
            storedWeightShape(argType, WeightLayout::Transposed);
        shape.assign(view.begin(), view.end());
      } else {
        f(vars) = param(vars);
      }
      // Algorithms see the Func's shape: the stored one, or the transposed
      // view of panels.
      values[arg] = TensorFunc{f, shape};
      built.inputs.push_back({param, std::nullopt});
      if (!shape.empty() && ShapedType::isDynamic(shape.front()) &&
          !dynamicTokens) {
        dynamicTokens = true;
        tokens = param.dim(param.dimensions() - 1).extent();
      }
      built.arguments.push_back(param);
      break;
    }
    case Kind::Scalar: {
      scalarParams.emplace_back("position");
      env.position = scalarParams.back();
      built.arguments.push_back(scalarParams.back());
      built.inputs.push_back({std::nullopt, scalarParams.back()});
      break;
    }
    case Kind::CacheKeysRead:
    case Kind::CacheValuesRead: {
      bool keys = slot.kind == Kind::CacheKeysRead;
      auto type = cast<KVCacheType>(arg.getType());
      ImageParam param(Float(32), 3, name + (keys ? "_keys" : "_values"));
      param.dim(0)
          .set_min(0)
          .set_extent(static_cast<int>(type.getHeadDim()))
          .set_stride(1);
      param.dim(1).set_min(0).set_stride(static_cast<int>(type.getHeadDim()));
      param.dim(2).set_min(0).set_extent(static_cast<int>(type.getKvHeads()));
      Func f(param.name() + "_f");
      Var d, p, h;
      f(d, p, h) = param(d, p, h);
      auto &entry = cacheReads[slot.index];
      (keys ? entry.first : entry.second) = f;
      cacheCapacity[slot.index] = param.dim(1).extent();
      built.arguments.push_back(param);
      built.inputs.push_back({param, std::nullopt});
      break;
    }
    case Kind::ConvStateRead: {
      auto type = cast<ConvStateType>(arg.getType());
      ImageParam param(Float(32), 2, name + "_conv_state");
      constrainDense(param, {type.getWidth() - 1, type.getChannels()});
      Func f(param.name() + "_f");
      Var c, ring;
      f(c, ring) = param(c, ring);
      convReads[slot.index] = f;
      built.arguments.push_back(param);
      built.inputs.push_back({param, std::nullopt});
      break;
    }
    default:
      break;
    }
  }
  env.tokens = dynamicTokens ? tokens : Expr(1);
  env.singleToken = !dynamicTokens;
  if (!env.position.defined()) {
    env.position = 0;
  }

  for (Operation &op : body.without_terminator()) {
    if (failed(buildOp(&op))) {
      return failure();
    }
  }

  // Outputs, in ABI order.
  auto yield = cast<YieldOp>(body.getTerminator());
  std::vector<Func> outputs;
  llvm::DenseSet<Value> materialised;
  for (const KernelAbiSlot &slot : *abi) {
    using Kind = KernelAbiSlot::Kind;
    if (slot.kind == Kind::OutputTensor) {
      Value value = yield.getValues()[slot.index];
      const TensorFunc *tf = lookup(value);
      if (!tf) {
        return kernel.emitOpError("result ")
               << slot.index << " is not computed by the kernel";
      }
      Func out = tf->func;
      // A value yielded twice, or an argument passed through, is copied so
      // that every output is its own Func.
      if (materialised.contains(value) || isa<BlockArgument>(value)) {
        Func copy("copy_" + std::to_string(slot.index));
        copy(out.args()) = out(out.args());
        out = copy;
        if (!env.gpu) {
          pointwiseSchedule(env, tf->rank())(out);
        }
      } else {
        materialised.insert(value);
        if (!env.gpu) {
          schedules[value](out);
        }
      }
      int rank = tf->rank();
      std::vector<int64_t> shape = tf->shape;
      OutputImageParam buffer = out.output_buffer();
      buffer.dim(0).set_stride(1);
      for (int i = 0; i < rank; ++i) {
        buffer.dim(i).set_min(0);
        int64_t extent = shape[rank - 1 - i];
        if (!ShapedType::isDynamic(extent)) {
          buffer.dim(i).set_extent(static_cast<int>(extent));
        }
      }
      outputs.push_back(out);
    } else if (slot.kind == Kind::CacheKeysWrite ||
               slot.kind == Kind::CacheValuesWrite) {
      auto found = cacheWrites.find(slot.index);
      if (found == cacheWrites.end()) {
        return kernel.emitOpError("cache argument ")
               << slot.index << " is marked written but nothing writes it";
      }
      Func out = slot.kind == Kind::CacheKeysWrite ? found->second.first
                                                   : found->second.second;
      if (!env.gpu) {
        cacheWriteSchedules[slot.index](out);
      }
      auto type = cast<KVCacheType>(body.getArgument(slot.index).getType());
      OutputImageParam buffer = out.output_buffer();
      buffer.dim(0).set_min(0).set_stride(1).set_extent(
          static_cast<int>(type.getHeadDim()));
      buffer.dim(1).set_stride(static_cast<int>(type.getHeadDim()));
      buffer.dim(2).set_min(0).set_extent(static_cast<int>(type.getKvHeads()));
      outputs.push_back(out);
    } else if (slot.kind == Kind::ConvStateWrite) {
      auto found = convWrites.find(slot.index);
      if (found == convWrites.end()) {
        return kernel.emitOpError("conv-state argument ")
               << slot.index << " is marked written but nothing writes it";
      }
      Func out = found->second.first;
      if (!env.gpu) {
        found->second.second(out);
      }
      auto type = cast<ConvStateType>(body.getArgument(slot.index).getType());
      OutputImageParam buffer = out.output_buffer();
      buffer.dim(0).set_min(0).set_stride(1).set_extent(
          static_cast<int>(type.getChannels()));
      buffer.dim(1)
          .set_min(0)
          .set_stride(static_cast<int>(type.getChannels()))
          .set_extent(static_cast<int>(type.getWidth() - 1));
      outputs.push_back(out);
    }
  }

  // Internal results that are not elementwise are materialised once.
  std::set<std::string> gpuRoots = *env.atRoot;
  for (auto &[value, tf] : values) {
    if (materialised.contains(value) || isa<BlockArgument>(value)) {
      continue;
    }
    if (!elementwise.lookup(value) && schedules.count(value)) {
      Func f = tf.func;
      if (env.gpu) {
        gpuRoots.insert(f.name());
      } else {
        schedules[value](f);
      }
    }
  }
  if (env.gpu) {
    gpu::GpuScheduleOptions gpuOptions;
    gpuOptions.threads = target.gpu.blockThreads;
    // One token: split the projections' sums over threads of their own.
    gpuOptions.splitReductions = env.singleToken ? kGpuReductionChunk : 0;
    gpuOptions.onHost = options.gpuLoopsOnHost;
    gpu::scheduleForGpu(outputs, gpuRoots, gpuOptions);
  }

  built.pipeline = Pipeline(outputs);
  return built;
}

} // namespace

FailureOr<BuiltKernel> buildKernel(KernelOp kernel,
                                   const TargetDescription &target,
                                   const KernelBuildOptions &options) {
  try {
    return Builder(kernel, target, options).build();
  } catch (const Halide::Error &error) {
    return kernel.emitOpError("Halide rejected the kernel: ") << error.what();
  }
}

} // namespace mlir::moe::cpu
