//===- FuzzChecks.h - What every reader fuzz target checks ------*- C++ -*-===//
//
// A reader given any bytes either accepts them, with every tensor inside
// the input and of the size its shape and dtype say, or refuses them with a
// message that starts with the name it was given. Anything else aborts,
// which libFuzzer reports as a crash.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_TEST_FUZZ_FUZZCHECKS_H
#define MOE_TEST_FUZZ_FUZZCHECKS_H

#include "frontends/checkpoint/TensorSource.h"

#include "llvm/Support/Error.h"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <initializer_list>

namespace moe::fuzz {

/// Aborts unless `err`'s message starts with "<name>:" for one of `names`
/// (the files the input stands for; "<name>:<line>:" names a line too).
inline void expectNamedError(llvm::Error err,
                             std::initializer_list<llvm::StringRef> names) {
  std::string message = llvm::toString(std::move(err));
  for (llvm::StringRef name : names) {
    if (llvm::StringRef(message).starts_with((name + ":").str())) {
      return;
    }
  }
  fprintf(stderr, "an error that names no input file: %s\n", message.c_str());
  abort();
}

/// Aborts unless every tensor of `source` lies inside [data, data + size)
/// and holds the bytes its shape and dtype say; reads them all.
inline void expectTensorsInside(const frontend::TensorSource &source,
                                const uint8_t *data, size_t size) {
  for (const frontend::TensorInfo &tensor : source.tensors()) {
    if (tensor.bytes.data() < data ||
        tensor.bytes.data() + tensor.bytes.size() > data + size) {
      abort();
    }
    uint64_t bits = static_cast<uint64_t>(tensor.numElements()) *
                    frontend::dtypeBits(tensor.dtype);
    if (bits / 8 != tensor.bytes.size()) {
      abort();
    }
    volatile uint8_t sink = 0;
    for (uint8_t b : tensor.bytes) {
      sink ^= b;
    }
    (void)sink;
  }
}

} // namespace moe::fuzz

#endif // MOE_TEST_FUZZ_FUZZCHECKS_H
