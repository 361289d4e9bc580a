//===- fuzz_torch.cpp - libFuzzer target of the torch checkpoint reader ---===//
//
// torch.save files are zip archives holding a pickle, or a legacy pickle
// stream: both are parsed without running any of the pickle's code (a
// GLOBAL other than the tensor rebuilders is refused). Any byte string must
// either give tensors inside it or a message naming the file. See
// test/fuzz/README.md.
//
//===----------------------------------------------------------------------===//

#include "frontends/torch/TorchCheckpoint.h"
#include "test/fuzz/FuzzChecks.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  llvm::ArrayRef<uint8_t> bytes(data, size);
  auto checkpoint = moe::frontend::TorchCheckpoint::parse(bytes, "fuzz.pt");
  if (!checkpoint) {
    moe::fuzz::expectNamedError(checkpoint.takeError(), {"fuzz.pt"});
    return 0;
  }
  moe::fuzz::expectTensorsInside(**checkpoint, data, size);
  return 0;
}
