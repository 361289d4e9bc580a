//===- fuzz_safetensors.cpp - libFuzzer target of the safetensors reader --===//
//
// Any byte string must either parse into tensors that lie inside it, or be
// refused with a message: never crash, hang, leak or read out of bounds
// (built with ASan + UBSan). CI runs it for a bounded time from the seed
// corpus beside this file; run it longer by hand:
//
//   build/bin/fuzz_safetensors -max_total_time=600
//   test/frontends/safetensors/corpus
//
//===----------------------------------------------------------------------===//

#include "frontends/safetensors/SafetensorsReader.h"

#include <cstdint>
#include <cstdlib>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  llvm::ArrayRef<uint8_t> bytes(data, size);
  auto file = moe::frontend::SafetensorsFile::parse(bytes, "fuzz.safetensors");
  if (!file) {
    std::string message = llvm::toString(file.takeError());
    if (message.rfind("fuzz.safetensors: ", 0) != 0) {
      abort(); // every error names the file
    }
    return 0;
  }
  // Every accepted tensor lies inside the input and has the size its shape
  // and dtype say.
  for (const moe::frontend::TensorInfo &tensor : (*file)->tensors()) {
    if (tensor.bytes.data() < data ||
        tensor.bytes.data() + tensor.bytes.size() > data + size) {
      abort();
    }
    uint64_t bits = static_cast<uint64_t>(tensor.numElements()) *
                    moe::frontend::dtypeBits(tensor.dtype);
    if (bits / 8 != tensor.bytes.size()) {
      abort();
    }
    volatile uint8_t sink = 0;
    for (uint8_t b : tensor.bytes) {
      sink ^= b;
    }
    (void)sink;
  }
  return 0;
}
