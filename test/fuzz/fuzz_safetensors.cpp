//===- fuzz_safetensors.cpp - libFuzzer target of the safetensors reader --===//
//
// Any byte string must either parse into tensors that lie inside it, or be
// refused with a message naming the file: never crash, hang, leak or read
// out of bounds (built with ASan + UBSan). See test/fuzz/README.md.
//
//===----------------------------------------------------------------------===//

#include "frontends/safetensors/SafetensorsReader.h"
#include "test/fuzz/FuzzChecks.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  llvm::ArrayRef<uint8_t> bytes(data, size);
  auto file = moe::frontend::SafetensorsFile::parse(bytes, "fuzz.safetensors");
  if (!file) {
    moe::fuzz::expectNamedError(file.takeError(), {"fuzz.safetensors"});
    return 0;
  }
  moe::fuzz::expectTensorsInside(**file, data, size);
  return 0;
}
