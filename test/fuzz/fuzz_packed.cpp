//===- fuzz_packed.cpp - libFuzzer target of SSMoELM's packed format ------===//
//
// The input is a safetensors file read as an SSMoELM checkpoint (seeds:
// the fixture preset `fuzz`, whose config.json is packed-config.json):
// 1-bit and 4-bit codes with per-row scales, named `{key}__bin`/`__int4`
// and `{key}__scale`. The container and the built-in description must
// refuse it with a message naming a file, or accept it with every packed
// weight holding exactly the code bytes and scales its logical shape needs,
// which the weight writer then copies without looking again: computed here
// from the shape alone, so a recogniser that accepted too little is caught.
//
//===----------------------------------------------------------------------===//

#include "frontends/family/LoadModel.h"
#include "frontends/family/Recognizer.h"
#include "frontends/safetensors/SafetensorsReader.h"
#include "test/fuzz/FuzzChecks.h"

#include "llvm/Support/MemoryBuffer.h"

#include <cstdio>

using namespace moe::frontend;

namespace {

const nlohmann::json &tinyConfig() {
  static const nlohmann::json config = [] {
    auto buffer = llvm::MemoryBuffer::getFile(MOE_FUZZ_PACKED_CONFIG);
    if (!buffer) {
      fprintf(stderr, "fuzz_packed: cannot read %s\n", MOE_FUZZ_PACKED_CONFIG);
      abort();
    }
    return nlohmann::json::parse((*buffer)->getBuffer().str());
  }();
  return config;
}

[[noreturn]] void fail(const std::string &what) {
  fprintf(stderr, "fuzz_packed: accepted a packed weight that %s\n",
          what.c_str());
  abort();
}

/// Aborts unless packed `ref` has, for each source, code bytes for its
/// matrix and one float scale per row.
void expectWholePacked(const TensorSource &tensors, const WeightRef &ref) {
  const PackedWeight &packed = *ref.packed;
  if (ref.shape.size() < 2 ||
      packed.scaleSources.size() != ref.sources.size()) {
    fail(ref.role + " has no matrix shape or no scale per source");
  }
  int64_t rows = ref.shape[ref.shape.size() - 2], cols = ref.shape.back();
  int64_t bits = packed.format == PackedFormat::Sign1 ? 1 : 4;
  // np.packbits of the flattened matrix: whole bytes, the last one padded.
  int64_t codeBytes = (rows * cols * bits + 7) / 8;
  for (size_t i = 0; i < ref.sources.size(); ++i) {
    const TensorInfo *codes = tensors.find(ref.sources[i]);
    const TensorInfo *scales = tensors.find(packed.scaleSources[i]);
    if (!codes || !scales) {
      fail(ref.role + " names a tensor the file lacks");
    }
    if (static_cast<int64_t>(codes->bytes.size()) != codeBytes ||
        packed.bytes != codeBytes) {
      fail(ref.role + " has " + std::to_string(codes->bytes.size()) +
           " code bytes where its shape needs " + std::to_string(codeBytes));
    }
    int64_t count = 1;
    for (int64_t d : scales->shape) {
      count *= d;
    }
    if (!isConvertibleToF32(scales->dtype) || count != rows) {
      fail(ref.role + " has " + std::to_string(count) +
           " scales (or not floats) for " + std::to_string(rows) + " rows");
    }
  }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  llvm::ArrayRef<uint8_t> bytes(data, size);
  auto file = SafetensorsFile::parse(bytes, "fuzz.safetensors");
  if (!file) {
    moe::fuzz::expectNamedError(file.takeError(), {"fuzz.safetensors"});
    return 0;
  }
  static const FamilyDescription family =
      llvm::cantFail(resolveFamily("ssmoelm"));
  auto model = recognizeModel(family, **file, &tinyConfig(), "config.json");
  if (!model) {
    moe::fuzz::expectNamedError(
        model.takeError(), {"fuzz.safetensors", "config.json", family.source});
    return 0;
  }
  forEachWeight(*model, [&](const WeightRef &ref, double) {
    if (ref.packed) {
      expectWholePacked(**file, ref);
    }
  });
  return 0;
}
