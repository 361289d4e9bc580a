//===- SafetensorsReader.h - Bounds-checked safetensors reader --*- C++ -*-===//
//
// Reads the safetensors format (an 8-byte little-endian header length N, N
// bytes of JSON, then the data region) from a memory mapping, and validates
// all of it before anything trusts it:
//
//   * the header fits in the file and in 100 MB, is a JSON object without
//     duplicate keys or deep nesting, and every entry has exactly a known
//     dtype, a shape of non-negative integers and two data offsets;
//   * every tensor's byte size equals shape x dtype bits / 8 (no overflow);
//   * the offsets tile the data region exactly: sorted, contiguous from 0,
//     without overlap, gap or trailing bytes;
//   * `__metadata__`, if present, maps strings to strings.
//
// Every error names the file and the key at fault. The reader never aborts
// and never reads outside the mapping, whatever the bytes (it is fuzzed:
// test/frontends/safetensors/fuzz_safetensors.cpp).
//
//===----------------------------------------------------------------------===//

#ifndef MOE_FRONTENDS_SAFETENSORS_SAFETENSORSREADER_H
#define MOE_FRONTENDS_SAFETENSORS_SAFETENSORSREADER_H

#include "frontends/checkpoint/TensorSource.h"

#include "llvm/Support/Error.h"

#include <memory>

namespace moe::frontend {

/// A validated safetensors file. Immutable; thread-compatible.
class SafetensorsFile : public MappedTensorSource {
public:
  /// The format's own limit on the JSON header.
  static constexpr uint64_t kMaxHeaderBytes = 100'000'000;

  /// Maps and validates the file at `path`.
  static llvm::Expected<std::unique_ptr<SafetensorsFile>>
  open(llvm::StringRef path);

  /// Validates `bytes`, which must outlive the result; `name` is used in
  /// messages in place of a path.
  static llvm::Expected<std::unique_ptr<SafetensorsFile>>
  parse(llvm::ArrayRef<uint8_t> bytes, llvm::StringRef name);

  const std::string &path() const override { return filePath; }
  llvm::ArrayRef<TensorInfo> tensors() const override { return all; }
  const std::map<std::string, std::string> &metadata() const override {
    return meta;
  }

private:
  SafetensorsFile() = default;
  std::string filePath;
  std::vector<TensorInfo> all;
  std::map<std::string, std::string> meta;
};

} // namespace moe::frontend

#endif // MOE_FRONTENDS_SAFETENSORS_SAFETENSORSREADER_H
