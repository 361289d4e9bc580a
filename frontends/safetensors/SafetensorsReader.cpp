//===- SafetensorsReader.cpp - Bounds-checked safetensors reader ----------===//
//
// Validation happens in three passes: the 8-byte prefix and header bounds,
// the JSON (parsed with a callback that rejects duplicate keys and nesting
// deeper than the format ever needs), then the tensor table against the
// data region. Nothing is kept from a file that fails any of them.
//
// This file is compiled with exceptions on (nlohmann_json reports parse and
// type errors that way); none escapes it.
//
//===----------------------------------------------------------------------===//

#include "frontends/safetensors/SafetensorsReader.h"

#include "frontends/checkpoint/Errors.h"

#include "llvm/ADT/SmallString.h"
#include "llvm/Support/FormatVariadic.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <set>
#include <vector>

namespace moe::frontend {

using json = nlohmann::json;

namespace {

/// Thrown by the JSON callback; caught in parseHeader.
struct HeaderShapeError {
  std::string message;
};

/// The deepest nesting a valid header has: {"t": {"shape": [..]}}.
constexpr int kMaxDepth = 3;
/// No checkpoint tensor has more dimensions than this.
constexpr size_t kMaxRank = 16;

class Failure {
public:
  explicit Failure(llvm::StringRef path) : path(path) {}
  llvm::Error operator()(const llvm::Twine &what) const {
    return makeError(path + ": " + what);
  }

private:
  llvm::StringRef path;
};

/// Parses the JSON header, rejecting duplicate keys in any object and
/// nesting deeper than kMaxDepth.
llvm::Expected<json> parseHeader(llvm::StringRef text, const Failure &fail) {
  std::vector<std::set<std::string>> openObjects;
  auto callback = [&](int depth, json::parse_event_t event, json &parsed) {
    switch (event) {
    case json::parse_event_t::object_start:
    case json::parse_event_t::array_start:
      if (depth >= kMaxDepth) {
        throw HeaderShapeError{llvm::formatv("header nests deeper than {0} "
                                             "levels, which no tensor table "
                                             "needs",
                                             kMaxDepth)};
      }
      if (event == json::parse_event_t::object_start) {
        openObjects.emplace_back();
      }
      break;
    case json::parse_event_t::object_end:
      if (!openObjects.empty()) {
        openObjects.pop_back();
      }
      break;
    case json::parse_event_t::key:
      if (!openObjects.empty() &&
          !openObjects.back().insert(parsed.get<std::string>()).second) {
        throw HeaderShapeError{"header repeats the key '" +
                               parsed.get<std::string>() + "'"};
      }
      break;
    default:
      break;
    }
    return true;
  };
  try {
    return json::parse(text.begin(), text.end(), callback);
  } catch (const HeaderShapeError &error) {
    return fail(error.message);
  } catch (const json::exception &error) {
    return fail(llvm::Twine("header is not valid JSON: ") + error.what());
  }
}

/// Reads a JSON array of non-negative integers.
bool readUnsignedArray(const json &value, std::vector<uint64_t> &out) {
  if (!value.is_array()) {
    return false;
  }
  for (const json &element : value) {
    if (!element.is_number_unsigned()) {
      return false;
    }
    out.push_back(element.get<uint64_t>());
  }
  return true;
}

} // namespace

llvm::Expected<std::unique_ptr<SafetensorsFile>>
SafetensorsFile::open(llvm::StringRef path) {
  return openFile<SafetensorsFile>(path);
}

llvm::Expected<std::unique_ptr<SafetensorsFile>>
SafetensorsFile::parse(llvm::ArrayRef<uint8_t> bytes, llvm::StringRef name) {
  Failure fail(name);

  // 1. Prefix and header bounds.
  if (bytes.size() < 8) {
    return fail(llvm::formatv("file has {0} bytes, too short for the 8-byte "
                              "header length of a safetensors file",
                              bytes.size()));
  }
  uint64_t headerBytes = 0;
  for (int i = 7; i >= 0; --i) {
    headerBytes = (headerBytes << 8) | bytes[i];
  }
  if (headerBytes > kMaxHeaderBytes) {
    return fail(llvm::formatv("header length {0} exceeds the format's limit "
                              "of {1} bytes (not a safetensors file, or a "
                              "corrupt one)",
                              headerBytes, kMaxHeaderBytes));
  }
  if (headerBytes > bytes.size() - 8) {
    return fail(llvm::formatv("header length {0} points past the end of the "
                              "file ({1} bytes): the file is truncated",
                              headerBytes, bytes.size()));
  }
  llvm::StringRef headerText(reinterpret_cast<const char *>(bytes.data() + 8),
                             headerBytes);
  if (headerText.empty() || headerText.front() != '{') {
    return fail("header does not start with '{'");
  }
  llvm::ArrayRef<uint8_t> data = bytes.drop_front(8 + headerBytes);

  // 2. JSON.
  auto parsed = parseHeader(headerText, fail);
  if (!parsed) {
    return parsed.takeError();
  }
  const json &header = *parsed;
  if (!header.is_object()) {
    return fail("header is not a JSON object");
  }

  // 3. Tensor table.
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->filePath = name.str();
  struct Extent {
    uint64_t begin, end;
    size_t index;
  };
  std::vector<Extent> extents;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string &key = it.key();
    const json &entry = it.value();
    if (key == "__metadata__") {
      if (!entry.is_object()) {
        return fail("__metadata__ is not an object of strings");
      }
      for (auto m = entry.begin(); m != entry.end(); ++m) {
        if (!m.value().is_string()) {
          return fail("__metadata__ key '" + m.key() +
                      "' does not hold a string");
        }
        file->meta[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    auto bad = [&](const llvm::Twine &what) {
      return fail("tensor '" + key + "': " + what);
    };
    if (key.empty()) {
      return fail("a tensor has an empty name");
    }
    if (!entry.is_object()) {
      return bad("entry is not an object with dtype, shape and data_offsets");
    }
    for (auto field = entry.begin(); field != entry.end(); ++field) {
      if (field.key() != "dtype" && field.key() != "shape" &&
          field.key() != "data_offsets") {
        return bad("unexpected field '" + field.key() + "'");
      }
    }
    auto dtypeField = entry.find("dtype");
    if (dtypeField == entry.end() || !dtypeField->is_string()) {
      return bad("missing string field 'dtype'");
    }
    std::string dtypeText = dtypeField->get<std::string>();
    std::optional<DType> dtype = parseDTypeName(dtypeText);
    if (!dtype) {
      return bad("dtype '" + dtypeText +
                 "' is not a safetensors dtype "
                 "(expected one of " +
                 allDTypeNames() + ")");
    }
    std::vector<uint64_t> shape, offsets;
    auto shapeField = entry.find("shape");
    if (shapeField == entry.end() || !readUnsignedArray(*shapeField, shape)) {
      return bad("'shape' must be an array of non-negative integers");
    }
    if (shape.size() > kMaxRank) {
      return bad(llvm::formatv("rank {0} exceeds {1}", shape.size(), kMaxRank));
    }
    auto offsetsField = entry.find("data_offsets");
    if (offsetsField == entry.end() ||
        !readUnsignedArray(*offsetsField, offsets) || offsets.size() != 2) {
      return bad("'data_offsets' must be two non-negative integers "
                 "[begin, end]");
    }
    if (offsets[0] > offsets[1]) {
      return bad(llvm::formatv("data_offsets [{0}, {1}] end before they "
                               "begin",
                               offsets[0], offsets[1]));
    }
    // Element count and byte size, refusing overflow at every step.
    uint64_t elements = 1;
    for (uint64_t d : shape) {
      if (d > static_cast<uint64_t>(INT64_MAX) ||
          __builtin_mul_overflow(elements, d, &elements)) {
        return bad("shape has more elements than fit in 64 bits");
      }
    }
    uint64_t bits;
    if (__builtin_mul_overflow(elements, uint64_t(dtypeBits(*dtype)), &bits) ||
        elements > static_cast<uint64_t>(INT64_MAX)) {
      return bad("byte size overflows 64 bits");
    }
    if (bits % 8 != 0) {
      return bad(llvm::formatv("{0} elements of {1} ({2} bits) do not fill "
                               "whole bytes",
                               elements, dtypeText, bits));
    }
    uint64_t expectedBytes = bits / 8;
    if (offsets[1] - offsets[0] != expectedBytes) {
      return bad(llvm::formatv("data_offsets [{0}, {1}] hold {2} bytes, but "
                               "shape and dtype {3} need {4}",
                               offsets[0], offsets[1], offsets[1] - offsets[0],
                               dtypeText, expectedBytes));
    }
    if (offsets[1] > data.size()) {
      return bad(llvm::formatv("data_offsets [{0}, {1}] point past the end "
                               "of the data region ({2} bytes): the file is "
                               "truncated",
                               offsets[0], offsets[1], data.size()));
    }
    TensorInfo info;
    info.name = key;
    info.dtype = *dtype;
    for (uint64_t d : shape) {
      info.shape.push_back(static_cast<int64_t>(d));
    }
    info.bytes = data.slice(offsets[0], offsets[1] - offsets[0]);
    extents.push_back({offsets[0], offsets[1], file->all.size()});
    file->all.push_back(std::move(info));
  }

  // The data region must be tiled exactly: no overlap, gap or tail.
  std::sort(extents.begin(), extents.end(),
            [](const Extent &a, const Extent &b) {
              return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
            });
  uint64_t cursor = 0;
  for (const Extent &e : extents) {
    const std::string &key = file->all[e.index].name;
    if (e.begin < cursor) {
      return fail(llvm::formatv("tensor '{0}': data_offsets [{1}, {2}] "
                                "overlap another tensor",
                                key, e.begin, e.end));
    }
    if (e.begin > cursor) {
      return fail(llvm::formatv("tensor '{0}': data_offsets [{1}, {2}] leave "
                                "a gap of {3} bytes after offset {4}",
                                key, e.begin, e.end, e.begin - cursor, cursor));
    }
    cursor = e.end;
  }
  if (cursor != data.size()) {
    return fail(llvm::formatv("the data region has {0} bytes but its tensors "
                              "cover {1}: the file is corrupt",
                              data.size(), cursor));
  }

  std::sort(
      file->all.begin(), file->all.end(),
      [](const TensorInfo &a, const TensorInfo &b) { return a.name < b.name; });
  return file;
}

} // namespace moe::frontend
