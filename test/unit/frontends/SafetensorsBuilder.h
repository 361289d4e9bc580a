//===- SafetensorsBuilder.h - Safetensors bytes for tests -------*- C++ -*-===//
//
// Builds safetensors files byte by byte, including malformed ones, so that
// reader tests state exactly which byte is wrong.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_TEST_UNIT_FRONTENDS_SAFETENSORSBUILDER_H
#define MOE_TEST_UNIT_FRONTENDS_SAFETENSORSBUILDER_H

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace moe::test {

/// The bytes of a file: 8-byte little-endian header length, the header
/// text as given, then `data`.
inline std::vector<uint8_t> safetensorsBytes(const std::string &header,
                                             const std::vector<uint8_t> &data,
                                             uint64_t declaredLength = ~0ull) {
  uint64_t length = declaredLength == ~0ull ? header.size() : declaredLength;
  std::vector<uint8_t> bytes(8);
  for (int i = 0; i < 8; ++i) {
    bytes[i] = static_cast<uint8_t>(length >> (8 * i));
  }
  bytes.insert(bytes.end(), header.begin(), header.end());
  bytes.insert(bytes.end(), data.begin(), data.end());
  return bytes;
}

/// A well-formed file holding f32 tensors given as (name, shape, values).
struct F32Tensor {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<float> values;
};

inline std::vector<uint8_t> safetensorsOf(const std::vector<F32Tensor> &tensors,
                                          const std::string &metadata = "") {
  std::string header = "{";
  std::vector<uint8_t> data;
  bool first = true;
  if (!metadata.empty()) {
    header += "\"__metadata__\":" + metadata;
    first = false;
  }
  for (const F32Tensor &t : tensors) {
    size_t begin = data.size();
    size_t bytes = t.values.size() * 4;
    data.resize(begin + bytes);
    std::memcpy(data.data() + begin, t.values.data(), bytes);
    header += first ? "" : ",";
    first = false;
    header += "\"" + t.name + "\":{\"dtype\":\"F32\",\"shape\":[";
    for (size_t i = 0; i < t.shape.size(); ++i) {
      header += (i ? "," : "") + std::to_string(t.shape[i]);
    }
    header += "],\"data_offsets\":[" + std::to_string(begin) + "," +
              std::to_string(begin + bytes) + "]}";
  }
  header += "}";
  while ((8 + header.size()) % 8 != 0) {
    header += ' ';
  }
  return safetensorsBytes(header, data);
}

} // namespace moe::test

#endif // MOE_TEST_UNIT_FRONTENDS_SAFETENSORSBUILDER_H
