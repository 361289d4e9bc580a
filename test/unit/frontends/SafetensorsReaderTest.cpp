//===- SafetensorsReaderTest.cpp - The safetensors reader -----------------===//
//
// Valid files of every dtype, and one test per way a file can be wrong:
// each must be refused with a message naming the file, the tensor and what
// was expected.
//
//===----------------------------------------------------------------------===//

#include "frontends/safetensors/SafetensorsReader.h"
#include "test/unit/frontends/SafetensorsBuilder.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/raw_ostream.h"

#include <gtest/gtest.h>

using namespace moe::frontend;
using moe::test::safetensorsBytes;
using moe::test::safetensorsOf;

namespace {

/// Parses `bytes` and returns the error text ("" on success).
std::string parseError(const std::vector<uint8_t> &bytes) {
  auto file = SafetensorsFile::parse(bytes, "model.safetensors");
  if (file) {
    return "";
  }
  return llvm::toString(file.takeError());
}

std::string header(const std::string &entries) { return "{" + entries + "}"; }

TEST(SafetensorsReader, ReadsTensorsAndMetadata) {
  std::vector<uint8_t> bytes =
      safetensorsOf({{"b", {2, 3}, {1, 2, 3, 4, 5, 6}}, {"a", {1}, {7}}},
                    "{\"format\":\"pt\"}");
  auto file = SafetensorsFile::parse(bytes, "m.safetensors");
  ASSERT_TRUE(static_cast<bool>(file)) << llvm::toString(file.takeError());
  ASSERT_EQ((*file)->tensors().size(), 2u);
  // Sorted by name.
  EXPECT_EQ((*file)->tensors()[0].name, "a");
  const TensorInfo *b = (*file)->find("b");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->dtype, DType::F32);
  EXPECT_EQ(b->numElements(), 6);
  float values[6];
  std::memcpy(values, b->bytes.data(), sizeof(values));
  EXPECT_EQ(values[5], 6.0f);
  EXPECT_EQ((*file)->find("missing"), nullptr);
  EXPECT_EQ((*file)->metadata().at("format"), "pt");
}

TEST(SafetensorsReader, EveryDtypeParses) {
  struct Case {
    const char *dtype;
    int count;
    int bytes;
  };
  for (Case c :
       {Case{"BOOL", 3, 3},    Case{"U8", 3, 3},      Case{"I8", 3, 3},
        Case{"F8_E5M2", 2, 2}, Case{"F8_E4M3", 2, 2}, Case{"F8_E8M0", 2, 2},
        Case{"I16", 2, 4},     Case{"U16", 2, 4},     Case{"F16", 2, 4},
        Case{"BF16", 2, 4},    Case{"I32", 2, 8},     Case{"U32", 2, 8},
        Case{"F32", 2, 8},     Case{"C64", 2, 16},    Case{"F64", 2, 16},
        Case{"I64", 2, 16},    Case{"U64", 2, 16},    Case{"F4", 4, 2},
        Case{"F6_E2M3", 4, 3}, Case{"F6_E3M2", 4, 3}}) {
    std::string h =
        header("\"t\":{\"dtype\":\"" + std::string(c.dtype) + "\",\"shape\":[" +
               std::to_string(c.count) + "],\"data_offsets\":[0," +
               std::to_string(c.bytes) + "]}");
    std::vector<uint8_t> data(c.bytes, 0);
    EXPECT_EQ(parseError(safetensorsBytes(h, data)), "") << c.dtype;
  }
}

TEST(SafetensorsReader, EmptyTensorAndEmptyFile) {
  EXPECT_EQ(parseError(safetensorsBytes(
                header("\"t\":{\"dtype\":\"F32\",\"shape\":[0,4],"
                       "\"data_offsets\":[0,0]}"),
                {})),
            "");
  EXPECT_EQ(parseError(safetensorsBytes("{}", {})), "");
}

TEST(SafetensorsReader, RejectsTooShort) {
  EXPECT_NE(parseError({1, 2, 3}).find("model.safetensors: file has 3 bytes, "
                                       "too short for the 8-byte header "
                                       "length"),
            std::string::npos);
}

TEST(SafetensorsReader, RejectsHeaderPastEnd) {
  std::string error = parseError(safetensorsBytes("{}", {}, 500));
  EXPECT_NE(error.find("header length 500 points past the end of the file"),
            std::string::npos)
      << error;
}

TEST(SafetensorsReader, RejectsHugeHeader) {
  std::string error = parseError(safetensorsBytes("{}", {}, 1ull << 40));
  EXPECT_NE(error.find("exceeds the format's limit"), std::string::npos)
      << error;
}

TEST(SafetensorsReader, RejectsBadJson) {
  EXPECT_NE(parseError(safetensorsBytes("{\"a\":", {})).find("not valid JSON"),
            std::string::npos);
  EXPECT_NE(
      parseError(safetensorsBytes("[1,2]", {})).find("does not start with '{'"),
      std::string::npos);
}

TEST(SafetensorsReader, RejectsDuplicateKeys) {
  std::string t =
      "\"t\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}";
  std::string error = parseError(safetensorsBytes(header(t + "," + t), {0}));
  EXPECT_NE(error.find("repeats the key 't'"), std::string::npos) << error;
  std::string inner = "\"t\":{\"dtype\":\"U8\",\"dtype\":\"U8\",\"shape\":[1],"
                      "\"data_offsets\":[0,1]}";
  EXPECT_NE(parseError(safetensorsBytes(header(inner), {0}))
                .find("repeats the key 'dtype'"),
            std::string::npos);
}

TEST(SafetensorsReader, RejectsDeepNesting) {
  std::string error = parseError(safetensorsBytes("{\"t\":[[[[1]]]]}", {}));
  EXPECT_NE(error.find("nests deeper"), std::string::npos) << error;
}

TEST(SafetensorsReader, RejectsUnknownDtype) {
  std::string error = parseError(safetensorsBytes(
      header("\"w\":{\"dtype\":\"F33\",\"shape\":[1],\"data_offsets\":[0,4]}"),
      {0, 0, 0, 0}));
  EXPECT_NE(error.find("tensor 'w': dtype 'F33' is not a safetensors dtype "
                       "(expected one of BOOL,"),
            std::string::npos)
      << error;
}

TEST(SafetensorsReader, RejectsBadShapes) {
  for (const char *shape : {"[-1]", "[1.5]", "\"4\"", "[\"4\"]"}) {
    std::string error = parseError(safetensorsBytes(
        header("\"w\":{\"dtype\":\"U8\",\"shape\":" + std::string(shape) +
               ",\"data_offsets\":[0,1]}"),
        {0}));
    EXPECT_NE(error.find("tensor 'w': 'shape' must be an array of non-negative "
                         "integers"),
              std::string::npos)
        << shape << ": " << error;
  }
}

TEST(SafetensorsReader, RejectsOverflowingShape) {
  std::string error = parseError(safetensorsBytes(
      header("\"w\":{\"dtype\":\"F64\",\"shape\":[4294967296,4294967296],"
             "\"data_offsets\":[0,8]}"),
      std::vector<uint8_t>(8)));
  EXPECT_NE(error.find("64 bits"), std::string::npos) << error;
  error = parseError(safetensorsBytes(
      header("\"w\":{\"dtype\":\"F64\",\"shape\":[2305843009213693952,2],"
             "\"data_offsets\":[0,8]}"),
      std::vector<uint8_t>(8)));
  EXPECT_NE(error.find("64 bits"), std::string::npos) << error;
}

TEST(SafetensorsReader, RejectsSubByteRemainder) {
  std::string error = parseError(safetensorsBytes(
      header("\"w\":{\"dtype\":\"F4\",\"shape\":[3],\"data_offsets\":[0,2]}"),
      {0, 0}));
  EXPECT_NE(error.find("do not fill whole bytes"), std::string::npos) << error;
}

TEST(SafetensorsReader, RejectsBadOffsets) {
  std::string error = parseError(safetensorsBytes(
      header("\"w\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[2,0]}"),
      {0, 0}));
  EXPECT_NE(error.find("end before they begin"), std::string::npos) << error;
  error = parseError(safetensorsBytes(
      header("\"w\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0]}"),
      {0, 0}));
  EXPECT_NE(error.find("'data_offsets' must be two non-negative integers"),
            std::string::npos)
      << error;
  error = parseError(safetensorsBytes(
      header("\"w\":{\"dtype\":\"U8\",\"shape\":[2]}"), {0, 0}));
  EXPECT_NE(error.find("'data_offsets' must be"), std::string::npos) << error;
}

TEST(SafetensorsReader, RejectsSizeMismatch) {
  std::string error = parseError(safetensorsBytes(
      header("\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}"),
      {0, 0, 0, 0}));
  EXPECT_NE(error.find("tensor 'w': data_offsets [0, 4] hold 4 bytes, but "
                       "shape and dtype F32 need 8"),
            std::string::npos)
      << error;
}

TEST(SafetensorsReader, RejectsTruncatedData) {
  std::string error = parseError(safetensorsBytes(
      header("\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}"),
      std::vector<uint8_t>(10)));
  EXPECT_NE(error.find("point past the end of the data region (10 bytes): the "
                       "file is truncated"),
            std::string::npos)
      << error;
}

TEST(SafetensorsReader, RejectsOverlapGapAndTail) {
  std::string two =
      "\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]},"
      "\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[1,3]}";
  EXPECT_NE(
      parseError(safetensorsBytes(header(two), {0, 0, 0})).find("overlap"),
      std::string::npos);
  std::string gap =
      "\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
      "\"b\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[2,3]}";
  EXPECT_NE(
      parseError(safetensorsBytes(header(gap), {0, 0, 0})).find("leave a gap"),
      std::string::npos);
  std::string one =
      "\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}";
  EXPECT_NE(parseError(safetensorsBytes(header(one), {0, 0})).find("cover 1"),
            std::string::npos);
}

TEST(SafetensorsReader, RejectsMalformedEntries) {
  EXPECT_NE(parseError(safetensorsBytes(header("\"w\":4"), {}))
                .find("entry is not an object"),
            std::string::npos);
  EXPECT_NE(
      parseError(safetensorsBytes(header("\"\":{\"dtype\":\"U8\",\"shape\":[1],"
                                         "\"data_offsets\":[0,1]}"),
                                  {0}))
          .find("a tensor has an empty name"),
      std::string::npos);
  EXPECT_NE(parseError(
                safetensorsBytes(header("\"w\":{\"dtype\":\"U8\",\"shape\":[1],"
                                        "\"data_offsets\":[0,1],\"extra\":1}"),
                                 {0}))
                .find("unexpected field 'extra'"),
            std::string::npos);
  EXPECT_NE(
      parseError(safetensorsBytes(header("\"__metadata__\":{\"a\":1}"), {}))
          .find("__metadata__ key 'a' does not hold a string"),
      std::string::npos);
}

TEST(SafetensorsReader, OpenNamesThePath) {
  auto missing = SafetensorsFile::open("/nonexistent/model.safetensors");
  ASSERT_FALSE(static_cast<bool>(missing));
  std::string error = llvm::toString(missing.takeError());
  EXPECT_NE(error.find("/nonexistent/model.safetensors: No such file"),
            std::string::npos)
      << error;

  llvm::SmallString<128> path;
  ASSERT_FALSE(
      llvm::sys::fs::createTemporaryFile("empty", "safetensors", path));
  auto empty = SafetensorsFile::open(path);
  ASSERT_FALSE(static_cast<bool>(empty));
  EXPECT_NE(llvm::toString(empty.takeError()).find("file is empty"),
            std::string::npos);

  std::vector<uint8_t> bytes = safetensorsOf({{"x", {2}, {1, 2}}});
  {
    std::error_code ec;
    llvm::raw_fd_ostream os(path, ec);
    os.write(reinterpret_cast<const char *>(bytes.data()), bytes.size());
  }
  auto file = SafetensorsFile::open(path);
  ASSERT_TRUE(static_cast<bool>(file)) << llvm::toString(file.takeError());
  EXPECT_EQ((*file)->path(), path.str().str());
  llvm::sys::fs::remove(path);
}

} // namespace
