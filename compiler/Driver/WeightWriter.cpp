//===- WeightWriter.cpp - Writing a compiled model's weight file ----------===//
//
// Weights are produced one at a time in offset order and hashed as they are
// written; padding between weights is zeros and part of the hash, exactly as
// the runtime hashes the data region. Two scratch buffers sized for the
// largest weight are reused for every weight (fresh allocations cost a page
// fault per 4 KiB and a zero fill, which dominated writing 1 GB), and an f32
// tensor stored as the checkpoint has it is written straight from the
// mapping.
//
//===----------------------------------------------------------------------===//

#include "compiler/Driver/WeightWriter.h"

#include "dialects/MoE/IR/MoEOps.h"
#include "dialects/MoE/Utils/Quantize.h"

#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/raw_ostream.h"

#include "moert/hash.h"
#include "moert/weights_format.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <memory>

namespace mlir::moe {

namespace fe = ::moe::frontend;

namespace {

std::string shapeText(ArrayRef<int64_t> shape) {
  std::string text = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    text += (i ? ", " : "") + std::to_string(shape[i]);
  }
  return text + "]";
}

/// The checkpoint tensor `name` that `op` reads; null, with a diagnostic on
/// `op`, when the checkpoint lacks it.
const fe::TensorInfo *sourceTensor(WeightOp op, StringRef name,
                                   const fe::TensorSource &tensors) {
  const fe::TensorInfo *tensor = tensors.find(name);
  if (!tensor) {
    op.emitOpError("checkpoint tensor '")
        << name << "' is missing from " << tensors.path();
  }
  return tensor;
}

/// The float tensor the names of `op` select: its result, or what a
/// quantized weight stands for.
ArrayRef<int64_t> selectedShape(WeightOp op) {
  if (std::optional<ArrayRef<int64_t>> shape = op.getQuantShape()) {
    return *shape;
  }
  return op.getResult().getType().getShape();
}

/// The index of the first NaN or infinity among `count` f32 values at
/// `bytes` (any alignment), or -1. It tests exponent bits, so it means the
/// same under any floating-point flags, and scans in chunks the compiler
/// vectorises: a 1 GB checkpoint costs about 0.1 s.
int64_t firstNonFinite(const uint8_t *bytes, int64_t count) {
  constexpr int64_t kChunk = 4096;
  constexpr uint32_t kExponent = 0x7f800000u;
  for (int64_t begin = 0; begin < count; begin += kChunk) {
    int64_t end = std::min(count, begin + kChunk);
    uint32_t any = 0;
    for (int64_t i = begin; i < end; ++i) {
      uint32_t bits;
      std::memcpy(&bits, bytes + 4 * i, 4);
      any |= (bits & kExponent) == kExponent;
    }
    if (any) {
      for (int64_t i = begin; i < end; ++i) {
        uint32_t bits;
        std::memcpy(&bits, bytes + 4 * i, 4);
        if ((bits & kExponent) == kExponent) {
          return i;
        }
      }
    }
  }
  return -1;
}

/// Refuses a NaN or infinite weight, naming the checkpoint, the tensor and
/// the element (`first` is the index of values[0] in the checkpoint
/// tensor; `values` may be unaligned): a model with one computes NaN from the
/// first token it reaches, and a quantizer has no code for it.
LogicalResult checkFinite(WeightOp op, const fe::TensorSource &tensors,
                          StringRef name, const void *values, int64_t count,
                          int64_t first) {
  const auto *bytes = static_cast<const uint8_t *>(values);
  int64_t bad = firstNonFinite(bytes, count);
  if (bad < 0) {
    return success();
  }
  float value;
  std::memcpy(&value, bytes + 4 * bad, 4);
  Location file = FileLineColLoc::get(op.getContext(), tensors.path(), 0, 0);
  const char *what = std::isnan(value) ? "NaN"
                     : value > 0       ? "+infinity"
                                       : "-infinity";
  return emitError(file) << "tensor '" << name << "' holds " << what
                         << " at element " << first + bad
                         << ": a weight must be finite (a model with a NaN "
                            "or infinite weight computes NaN)";
}

/// The tensor the names of `op` select, as f32 in its logical shape
/// (row-major), into `values` (which holds at least its element count).
LogicalResult logicalValues(WeightOp op, const fe::TensorSource &tensors,
                            float *values) {
  ArrayRef<int64_t> shape = selectedShape(op);
  bool stacked = op.getSources().size() > 1;
  std::vector<int64_t> sliceShape(shape.begin() + (stacked ? 1 : 0),
                                  shape.end());
  std::optional<ArrayRef<int64_t>> rows = op.getRows();
  size_t at = 0;
  for (Attribute nameAttr : op.getSources()) {
    StringRef name = cast<StringAttr>(nameAttr).getValue();
    const fe::TensorInfo *tensor = sourceTensor(op, name, tensors);
    if (!tensor) {
      return failure();
    }
    if (!fe::isConvertibleToF32(tensor->dtype)) {
      return op.emitOpError("checkpoint tensor '")
             << name << "' has dtype " << fe::dtypeName(tensor->dtype)
             << ", which is not a float type";
    }
    // The tensor holds sliceShape, or more rows of it when `rows` selects.
    std::vector<int64_t> expected = sliceShape;
    int64_t rowBegin = 0;
    if (rows) {
      rowBegin = (*rows)[0];
      if (tensor->shape.empty() || tensor->shape[0] < (*rows)[1]) {
        return op.emitOpError("checkpoint tensor '")
               << name << "' of shape " << shapeText(tensor->shape)
               << " has no rows [" << (*rows)[0] << ", " << (*rows)[1] << ")";
      }
      expected[0] = tensor->shape[0];
    }
    if (ArrayRef<int64_t>(tensor->shape) != ArrayRef<int64_t>(expected)) {
      return op.emitOpError("checkpoint tensor '")
             << name << "' has shape " << shapeText(tensor->shape)
             << ", the model expects " << shapeText(expected);
    }
    int64_t rowElements = 1;
    for (size_t i = 1; i < tensor->shape.size(); ++i) {
      rowElements *= tensor->shape[i];
    }
    int64_t count = ShapedType::getNumElements(sliceShape);
    size_t elementBytes = fe::dtypeBits(tensor->dtype) / 8;
    const uint8_t *src =
        tensor->bytes.data() + rowBegin * rowElements * elementBytes;
    fe::convertToF32(tensor->dtype, src, count, values + at);
    if (failed(checkFinite(op, tensors, name, values + at, count,
                           rowBegin * rowElements))) {
      return failure();
    }
    at += count;
  }
  return success();
}

/// The bytes of a packed (ui8) weight: each source's U8 bytes as they are,
/// whatever shape the checkpoint gives them (a flat packbits array), one
/// source per leading index.
LogicalResult packedBytes(WeightOp op, const fe::TensorSource &tensors,
                          int64_t totalBytes, std::vector<uint8_t> &out) {
  int64_t perSource = totalBytes / static_cast<int64_t>(op.getSources().size());
  out.clear();
  for (Attribute nameAttr : op.getSources()) {
    StringRef name = cast<StringAttr>(nameAttr).getValue();
    const fe::TensorInfo *tensor = sourceTensor(op, name, tensors);
    if (!tensor) {
      return failure();
    }
    if (tensor->dtype != fe::DType::U8 || tensor->numElements() != perSource) {
      return op.emitOpError("checkpoint tensor '")
             << name << "' is " << fe::dtypeName(tensor->dtype) << " "
             << shapeText(tensor->shape) << "; the model expects " << perSource
             << " packed bytes (U8)";
    }
    out.insert(out.end(), tensor->bytes.begin(), tensor->bytes.end());
  }
  return success();
}

/// Writes into `out` the transpose of the last two dimensions of `values`
/// (logical shape `shape`).
void transposeLastTwo(const float *values, ArrayRef<int64_t> shape,
                      float *out) {
  int64_t rows = shape[shape.size() - 2], cols = shape.back();
  int64_t total = 1;
  for (int64_t d : shape) {
    total *= d;
  }
  int64_t batch = total / (rows * cols);
  constexpr int64_t kBlock = 64; // cache-sized tiles
  for (int64_t b = 0; b < batch; ++b) {
    const float *src = values + b * rows * cols;
    float *dst = out + b * rows * cols;
    for (int64_t r0 = 0; r0 < rows; r0 += kBlock) {
      for (int64_t c0 = 0; c0 < cols; c0 += kBlock) {
        for (int64_t r = r0; r < std::min(rows, r0 + kBlock); ++r) {
          for (int64_t c = c0; c < std::min(cols, c0 + kBlock); ++c) {
            dst[c * rows + r] = src[r * cols + c];
          }
        }
      }
    }
  }
}

/// Writes into `out` the last two dimensions of `values` (logical shape
/// `shape`, [.., N, K]) in panels of `panel` rows: [.., N / panel, K,
/// panel], each panel the transpose of its `panel` rows.
void panelLastTwo(const float *values, ArrayRef<int64_t> shape, int64_t panel,
                  float *out) {
  int64_t rows = shape[shape.size() - 2], cols = shape.back();
  int64_t total = 1;
  for (int64_t d : shape) {
    total *= d;
  }
  for (int64_t b = 0; b < total / (rows * cols); ++b) {
    const float *src = values + b * rows * cols;
    float *dst = out + b * rows * cols;
    for (int64_t r = 0; r < rows; ++r) {
      float *column = dst + (r / panel) * cols * panel + r % panel;
      for (int64_t c = 0; c < cols; ++c) {
        column[c * panel] = src[r * cols + c];
      }
    }
  }
}

/// The checkpoint's bytes of `op`, when they are already what the weight
/// file wants: one f32 source, all rows, row-major.
const fe::TensorInfo *writableAsIs(WeightOp op,
                                   const fe::TensorSource &tensors) {
  if (op.getSources().size() != 1 || op.getRows() ||
      op.getLayout().value_or(WeightLayout::RowMajor) !=
          WeightLayout::RowMajor) {
    return nullptr;
  }
  const fe::TensorInfo *tensor =
      tensors.find(cast<StringAttr>(op.getSources()[0]).getValue());
  if (!tensor || tensor->dtype != fe::DType::F32 ||
      ArrayRef<int64_t>(tensor->shape) != op.getResult().getType().getShape()) {
    return nullptr;
  }
  return tensor;
}

/// Quantizes the weights of `quantize(..)` ops. The codes, the scales and
/// the offsets of one tensor are two or three ops, usually planned next to
/// each other: the last result is kept for the others.
class Quantizer {
public:
  Quantizer(const fe::TensorSource &tensors, float *scratch,
            const CalibrationData *calibration)
      : tensors(tensors), scratch(scratch), calibration(calibration) {}

  /// The quantized form of the tensor `op` stands for, with its scales
  /// rounded to f16 when `halfScales`; null on error.
  const QuantizedMatrices *get(WeightOp op, bool halfScales) {
    Key key{op.getSourcesAttr(), op.getRowsAttr(),
            *op.getQuantize(),   static_cast<int64_t>(*op.getQuantGroup()),
            halfScales,          op.getQuantAsymmetric()};
    if (cached && key == cachedKey) {
      return &*cached;
    }
    cached.reset();
    if (failed(logicalValues(op, tensors, scratch))) {
      return nullptr;
    }
    ArrayRef<int64_t> shape = *op.getQuantShape();
    size_t lead = shape.size() - 2;
    int64_t rows = shape[lead], cols = shape[lead + 1];
    int64_t count = ShapedType::getNumElements(shape) / (rows * cols);
    FailureOr<const float *> hessians = hessiansOf(op, count, cols);
    if (failed(hessians)) {
      return nullptr;
    }
    cached = quantizeMatrices(scratch, count, rows, cols, key.format, key.group,
                              key.halfScales, key.asymmetric, *hessians,
                              factorsFor(op, count, cols));
    for (const std::vector<float> *values :
         {&cached->scales, &cached->offsets}) {
      for (float value : *values) {
        if (!std::isfinite(value)) {
          op.emitOpError("cannot quantize ")
              << op.getSources() << ": "
              << (values == &cached->scales ? "a scale" : "an offset") << " ("
              << value << ") is beyond f16; use --quant-scale=f32";
          cached.reset();
          return nullptr;
        }
      }
    }
    cachedKey = key;
    return &*cached;
  }

private:
  /// Where quantizeMatrices keeps GPTQ's factors of `op`'s Hessians: the
  /// factors of the last weight when `op` shares its Hessians (Q, K and V
  /// read one input, as gate and up do, and are quantized one after the
  /// other), emptied for new ones; null without calibration or when all
  /// of them would take more than kKeptFactorBytes.
  std::vector<std::vector<double>> *factorsFor(WeightOp op, int64_t count,
                                               int64_t cols) {
    static constexpr int64_t kKeptFactorBytes = int64_t(256) << 20;
    const std::vector<float> *source = hessianSource(op);
    if (!source ||
        count * cols * cols * int64_t(sizeof(double)) > kKeptFactorBytes) {
      factors.clear();
      factorSource = nullptr;
      return nullptr;
    }
    if (source != factorSource || count != factorCount) {
      factors.clear();
      factorSource = source;
      factorCount = count;
    }
    return &factors;
  }

  /// The sums calibration gathered for `op`, or null.
  const std::vector<float> *hessianSource(WeightOp op) const {
    if (!calibration) {
      return nullptr;
    }
    auto found = calibration->hessians.find(calibrationKey(op));
    return found == calibration->hessians.end() ? nullptr : found->second.get();
  }

  /// The calibration's [count, cols, cols] sums for `op` (one matrix
  /// broadcast to every matrix of a weight that shares its input), or null
  /// when there are none.
  FailureOr<const float *> hessiansOf(WeightOp op, int64_t count,
                                      int64_t cols) {
    const std::vector<float> *source = hessianSource(op);
    if (!source) {
      return static_cast<const float *>(nullptr);
    }
    const std::vector<float> &h = *source;
    int64_t square = cols * cols;
    if (static_cast<int64_t>(h.size()) == count * square) {
      return h.data();
    }
    if (static_cast<int64_t>(h.size()) == square) {
      broadcast.resize(count * square);
      for (int64_t m = 0; m < count; ++m) {
        std::copy(h.begin(), h.end(), broadcast.begin() + m * square);
      }
      return static_cast<const float *>(broadcast.data());
    }
    return op.emitOpError("calibration statistics of ")
           << op.getSources() << " hold " << h.size() << " values, expected "
           << count << " x " << cols << " x " << cols;
  }

  struct Key {
    Attribute sources, rows;
    PackedFormat format;
    int64_t group;
    bool halfScales;
    bool asymmetric;
    bool operator==(const Key &o) const {
      return sources == o.sources && rows == o.rows && format == o.format &&
             group == o.group && halfScales == o.halfScales &&
             asymmetric == o.asymmetric;
    }
  };
  const fe::TensorSource &tensors;
  float *scratch;
  const CalibrationData *calibration;
  std::vector<float> broadcast;
  // GPTQ's factors of the Hessians at factorSource (factorCount matrices).
  std::vector<std::vector<double>> factors;
  const std::vector<float> *factorSource = nullptr;
  int64_t factorCount = 0;
  std::optional<QuantizedMatrices> cached;
  Key cachedKey{};
};

/// The moe.dequantize that reads each codes weight: directly, or through
/// the calls of the kernel it was outlined into.
llvm::DenseMap<Operation *, DequantizeOp> codeReaders(ModuleOp module) {
  llvm::DenseMap<Operation *, DequantizeOp> readers;
  llvm::StringMap<SmallVector<CallOp>> calls;
  module.walk([&](CallOp call) { calls[call.getCallee()].push_back(call); });
  module.walk([&](DequantizeOp dequantize) {
    Value packed = dequantize.getPacked();
    if (auto weight = packed.getDefiningOp<WeightOp>()) {
      readers[weight] = dequantize;
      return;
    }
    auto arg = dyn_cast<BlockArgument>(packed);
    auto kernel =
        arg ? dyn_cast<KernelOp>(arg.getOwner()->getParentOp()) : KernelOp();
    if (!kernel) {
      return;
    }
    for (CallOp call : calls.lookup(kernel.getSymName())) {
      if (auto weight =
              call.getOperand(arg.getArgNumber()).getDefiningOp<WeightOp>()) {
        readers[weight] = dequantize;
      }
    }
  });
  return readers;
}

/// `codes` (the default order) in the order of the transposed or dot-
/// blocked `reader`.
std::vector<uint8_t> transposedCodes(const uint8_t *codes,
                                     DequantizeOp reader) {
  ArrayRef<int64_t> shape = reader.getResult().getType().getShape();
  int64_t rows = shape[shape.size() - 2], cols = shape.back();
  return transposeCodes(
      codes, ShapedType::getNumElements(shape) / (rows * cols), rows, cols,
      reader.getFormat(), reader.getLowBitsFirst(),
      reader.getLanes().value_or(0), reader.getDot().value_or(0),
      reader.getPanels().value_or(0));
}

/// What the report says of a quantized weight.
QuantizedWeightReport reportOf(WeightOp op, const QuantizedMatrices &q,
                               bool halfScales) {
  QuantizedWeightReport report;
  report.calibrated = q.errorFeedback;
  report.name = cast<StringAttr>(op.getSources()[0]).getValue().str();
  if (op.getSources().size() > 1) {
    report.name +=
        " (+" + std::to_string(op.getSources().size() - 1) + " stacked)";
  }
  report.format = stringifyPackedFormat(*op.getQuantize()).str();
  if (op.getQuantAsymmetric()) {
    report.format += "a";
  }
  report.scale = halfScales ? "f16" : "f32";
  report.group = *op.getQuantGroup();
  report.params = ShapedType::getNumElements(*op.getQuantShape());
  report.bytes = q.codes.size() +
                 (q.scales.size() + q.offsets.size()) * (halfScales ? 2 : 4);
  report.relativeError =
      q.sumSquares > 0 ? std::sqrt(q.sumSquaredError / q.sumSquares) : 0.0;
  return report;
}

} // namespace

FailureOr<std::vector<float>>
readWeightValues(WeightOp op, const fe::TensorSource &tensors) {
  std::vector<float> values(ShapedType::getNumElements(selectedShape(op)));
  if (failed(logicalValues(op, tensors, values.data()))) {
    return failure();
  }
  return values;
}

FailureOr<WeightFileInfo> writeWeightFile(ModuleOp module,
                                          const fe::TensorSource &tensors,
                                          StringRef family, StringRef path,
                                          const CalibrationData *calibration) {
  auto bytesAttr = module->getAttrOfType<IntegerAttr>("moe.weights_bytes");
  if (!bytesAttr) {
    return module.emitError("no weight plan: run moe-plan-weights first");
  }
  std::map<int64_t, WeightOp> byOffset;
  WalkResult walk = module.walk([&](WeightOp op) {
    auto offset = op->getAttrOfType<IntegerAttr>("moe.offset");
    if (!offset) {
      op.emitOpError("has no moe.offset");
      return WalkResult::interrupt();
    }
    byOffset.try_emplace(offset.getInt(), op);
    return WalkResult::advance();
  });
  if (walk.wasInterrupted()) {
    return failure();
  }

  std::error_code ec;
  llvm::raw_fd_ostream os(path, ec);
  if (ec) {
    return module.emitError("cannot write ") << path << ": " << ec.message();
  }
  std::vector<char> zeros(MOERT_WEIGHTS_DATA_OFFSET, 0);
  os.write(zeros.data(), zeros.size());

  moert_hash_t hash;
  moert_hash_init(&hash, 0);
  uint64_t written = 0;
  auto pad = [&](uint64_t to) {
    while (written < to) {
      uint64_t n = std::min<uint64_t>(to - written, zeros.size());
      os.write(zeros.data(), n);
      moert_hash_update(&hash, zeros.data(), n);
      written += n;
    }
  };
  int64_t largest = 0;
  for (auto &[offset, op] : byOffset) {
    largest = std::max(largest, ShapedType::getNumElements(selectedShape(op)));
  }
  std::unique_ptr<float[]> logical(new float[largest]);
  std::unique_ptr<float[]> stored(new float[largest]);
  std::unique_ptr<float[]> quantScratch;
  std::optional<Quantizer> quantizer;
  std::vector<uint8_t> packed, repacked;
  std::vector<uint16_t> halves;
  llvm::DenseMap<Operation *, DequantizeOp> readers = codeReaders(module);
  WeightFileInfo info;
  for (auto &[offset, op] : byOffset) {
    pad(static_cast<uint64_t>(offset));
    const void *data;
    size_t bytes = op.getResult().getType().getNumElements() * sizeof(float);
    bool isCodes =
        op.getResult().getType().getElementType().isUnsignedInteger(8);
    // Codes stored transposed take the order of the dequantize that reads
    // them.
    DequantizeOp reader;
    if (isCodes && op.getLayout() == WeightLayout::Transposed) {
      reader = readers.lookup(op);
      if (!reader || (!reader.getTransposed() && !reader.getDot())) {
        return op.emitOpError("is stored transposed but no transposed or "
                              "dot-blocked moe.dequantize reads it");
      }
    }
    if (op.getQuantize()) {
      if (!quantizer) {
        quantScratch.reset(new float[largest]);
        quantizer.emplace(tensors, quantScratch.get(), calibration);
      }
      // The codes weight does not say its scales' type; the moe.dequantize
      // reading it does.
      DequantizeOp codesReader = isCodes ? readers.lookup(op) : DequantizeOp();
      bool halfScales =
          isCodes ? codesReader &&
                        cast<RankedTensorType>(codesReader.getScale().getType())
                            .getElementType()
                            .isF16()
                  : op.getResult().getType().getElementType().isF16();
      const QuantizedMatrices *q = quantizer->get(op, halfScales);
      if (!q) {
        return failure();
      }
      if (isCodes) {
        data = q->codes.data();
        bytes = q->codes.size();
        info.quantized.push_back(reportOf(op, *q, halfScales));
      } else {
        // The scales, or the offsets beside them.
        const std::vector<float> &perGroup =
            op.getQuantOffsets() ? q->offsets : q->scales;
        const float *scales = perGroup.data();
        if (op.getLayout() == WeightLayout::Transposed) {
          transposeLastTwo(scales, op.getResult().getType().getShape(),
                           stored.get());
          scales = stored.get();
        }
        data = scales;
        bytes = perGroup.size() * sizeof(float);
        if (halfScales) {
          halves.resize(perGroup.size());
          for (size_t i = 0; i < halves.size(); ++i) {
            halves[i] = fe::floatToHalf(scales[i]);
          }
          data = halves.data();
          bytes = halves.size() * sizeof(uint16_t);
        }
      }
    } else if (isCodes) {
      // The checkpoint's codes are in the default order.
      int64_t checkpointBytes = op.getResult().getType().getNumElements();
      if (reader) {
        ArrayRef<int64_t> shape = reader.getResult().getType().getShape();
        int64_t rows = shape[shape.size() - 2], cols = shape.back();
        checkpointBytes =
            ShapedType::getNumElements(shape) / (rows * cols) *
            DequantizeOp::codeBytes(reader.getFormat(), rows, cols);
      }
      if (failed(packedBytes(op, tensors, checkpointBytes, packed))) {
        return failure();
      }
      data = packed.data();
      bytes = packed.size();
    } else if (const fe::TensorInfo *tensor = writableAsIs(op, tensors)) {
      data = tensor->bytes.data();
      if (failed(checkFinite(
              op, tensors, cast<StringAttr>(op.getSources()[0]).getValue(),
              data, ShapedType::getNumElements(tensor->shape), 0))) {
        return failure();
      }
    } else {
      if (failed(logicalValues(op, tensors, logical.get()))) {
        return failure();
      }
      data = logical.get();
      if (op.getLayout() == WeightLayout::Transposed) {
        transposeLastTwo(logical.get(), op.getResult().getType().getShape(),
                         stored.get());
        data = stored.get();
      } else if (op.getLayout() == WeightLayout::Panels) {
        panelLastTwo(logical.get(), op.getResult().getType().getShape(),
                     *op.getPanel(), stored.get());
        data = stored.get();
      }
    }
    if (reader) {
      repacked = transposedCodes(static_cast<const uint8_t *>(data), reader);
      data = repacked.data();
      bytes = repacked.size();
    }
    Type element = op.getResult().getType().getElementType();
    size_t elementBytes = isCodes ? 1 : element.isF16() ? 2 : sizeof(float);
    if (bytes !=
        static_cast<size_t>(op.getResult().getType().getNumElements()) *
            elementBytes) {
      return op.emitOpError("has ")
             << bytes << " bytes to write, its plan expects "
             << op.getResult().getType();
    }
    os.write(static_cast<const char *>(data), bytes);
    moert_hash_update(&hash, data, bytes);
    written += bytes;
  }
  uint64_t dataBytes = static_cast<uint64_t>(bytesAttr.getInt());
  pad(dataBytes);

  moert_weights_header_t header;
  std::memset(&header, 0, sizeof(header));
  std::memcpy(header.magic, MOERT_WEIGHTS_MAGIC, 8);
  header.version = MOERT_WEIGHTS_VERSION;
  header.data_offset = MOERT_WEIGHTS_DATA_OFFSET;
  header.data_bytes = dataBytes;
  header.data_hash = moert_hash_final(&hash);
  std::strncpy(header.family, family.str().c_str(), sizeof(header.family) - 1);
  os.seek(0);
  os.write(reinterpret_cast<const char *>(&header), sizeof(header));
  os.close();
  if (os.has_error()) {
    os.clear_error();
    return module.emitError("cannot write ") << path;
  }
  info.dataBytes = dataBytes;
  info.hash = header.data_hash;
  return info;
}

void printQuantizationReport(const WeightFileInfo &info,
                             llvm::raw_ostream &os) {
  size_t width = 6;
  for (const QuantizedWeightReport &r : info.quantized) {
    width = std::max(width, r.name.size());
  }
  os << llvm::formatv("{0} {1,-17} {2,11} {3,11} {4,6} {5,9}\n",
                      llvm::left_justify("tensor", width), "format", "params",
                      "bytes", "bits/w", "rel.error");
  int64_t params = 0;
  uint64_t bytes = 0;
  double weightedSquaredError = 0;
  for (const QuantizedWeightReport &r : info.quantized) {
    double bits = 8.0 * static_cast<double>(r.bytes) / r.params;
    // format/group scale-type, e.g. "int4/32 f16" ("int4a": asymmetric).
    os << llvm::formatv("{0} {1,-17} {2,11} {3,11} {4,6:f2} {5,9:f4}\n",
                        llvm::left_justify(r.name, width),
                        r.format + "/" + std::to_string(r.group) + " " +
                            r.scale + (r.calibrated ? " gptq" : ""),
                        r.params, r.bytes, bits, r.relativeError);
    params += r.params;
    bytes += r.bytes;
    weightedSquaredError += r.relativeError * r.relativeError * r.params;
  }
  // The same file with every quantized tensor stored as f32.
  uint64_t before = info.dataBytes - bytes + 4 * static_cast<uint64_t>(params);
  os << llvm::formatv(
      "{0} tensors, {1} parameters: {2:f2} bits per weight, rms relative "
      "error {3:f4}\nweights: {4:f2} MB as f32 -> {5:f2} MB ({6:f2}x "
      "smaller)\n",
      info.quantized.size(), params, 8.0 * bytes / std::max<int64_t>(params, 1),
      std::sqrt(weightedSquaredError / std::max<int64_t>(params, 1)),
      before / 1e6, info.dataBytes / 1e6,
      static_cast<double>(before) / std::max<uint64_t>(info.dataBytes, 1));
}

} // namespace mlir::moe
