//===- TorchCheckpointTest.cpp - The torch.save reader --------------------===//
//
// Valid state dicts and training checkpoints as torch.save writes them, and
// one test per way a file can be wrong or hostile: each must be refused
// with a message naming the file and what was expected, and no pickle may
// get anything executed.
//
//===----------------------------------------------------------------------===//

#include "frontends/torch/TorchCheckpoint.h"
#include "frontends/torch/Pickle.h"
#include "test/unit/frontends/TorchSaveBuilder.h"

#include <gtest/gtest.h>

using namespace moe::frontend;
using namespace moe::test;

namespace {

std::string parseError(const Bytes &bytes) {
  auto file = TorchCheckpoint::parse(bytes, "model.pt");
  if (file) {
    return "";
  }
  return llvm::toString(file.takeError());
}

/// {"w": f32 [2, 3] at storage "0", "tied": the same storage,
///  "tail": f32 [2] at offset 4 of it}.
Bytes stateDict(Pickler p = Pickler()) {
  p.orderedDict().mark();
  p.string("w").tensor("FloatStorage", "0", 6, 0, {2, 3}, {3, 1});
  p.string("tied").tensor("FloatStorage", "0", 6, 0, {2, 3}, {3, 1});
  p.string("tail").tensor("FloatStorage", "0", 6, 4, {2}, {1});
  p.setItems();
  return p.bytes;
}

Bytes withStop(Bytes pickle) {
  pickle.push_back('.');
  return pickle;
}

const Bytes kSixFloats = f32Bytes({1, 2, 3, 4, 5, 6});

TEST(TorchCheckpoint, ReadsAStateDictWithSharedStorage) {
  // The reader keeps views into the bytes: they must outlive it.
  Bytes bytes = torchSaveOf(withStop(stateDict()), {{"0", kSixFloats}});
  auto file = TorchCheckpoint::parse(bytes, "m.bin");
  ASSERT_TRUE(static_cast<bool>(file)) << llvm::toString(file.takeError());
  ASSERT_EQ((*file)->tensors().size(), 3u);
  const TensorInfo *w = (*file)->find("w");
  const TensorInfo *tied = (*file)->find("tied");
  const TensorInfo *tail = (*file)->find("tail");
  ASSERT_TRUE(w && tied && tail);
  EXPECT_EQ(w->dtype, DType::F32);
  EXPECT_EQ(w->shape, (llvm::SmallVector<int64_t, 4>{2, 3}));
  EXPECT_EQ(w->bytes.data(), tied->bytes.data());
  float values[2];
  ASSERT_EQ(tail->bytes.size(), sizeof(values));
  std::memcpy(values, tail->bytes.data(), sizeof(values));
  EXPECT_EQ(values[0], 5.0f);
  EXPECT_EQ(values[1], 6.0f);
  EXPECT_TRUE((*file)->notes().empty());
}

TEST(TorchCheckpoint, FindsTheStateDictOfATrainingCheckpoint) {
  // {"model": state dict, "optimizer": {"state": {0: {"exp_avg": t}}},
  //  "step": 12, "model_cfg": {"eps": 1e-08, "k": 2, "name": "x",
  //  "dtype": torch.bfloat16, "betas": (0.9, -3)}}
  Pickler p;
  p.emptyDict().mark();
  p.string("model");
  p.bytes = stateDict(std::move(p));
  p.string("optimizer").emptyDict().mark().string("state").emptyDict();
  p.mark().integer(0).emptyDict().mark().string("exp_avg");
  p.tensor("FloatStorage", "1", 2, 0, {2}, {1});
  p.setItems().setItems().setItems();
  p.string("step").integer(12);
  p.string("model_cfg").emptyDict().mark();
  p.string("eps").real(1e-8).string("k").integer(2).string("name").string("x");
  p.string("dtype").global("torch", "bfloat16");
  p.string("betas").mark().real(0.9).integer(-3).tuple();
  p.setItems();
  p.setItems().stop();
  Bytes bytes =
      torchSaveOf(p.bytes, {{"0", kSixFloats}, {"1", f32Bytes({0, 0})}});
  auto file = TorchCheckpoint::parse(bytes, "best.pt");
  ASSERT_TRUE(static_cast<bool>(file)) << llvm::toString(file.takeError());
  EXPECT_EQ((*file)->tensors().size(), 3u);
  EXPECT_EQ((*file)->metadata().at("step"), "12");
  EXPECT_EQ((*file)->metadata().at("model_cfg"),
            "{\"betas\":[0.9,-3],\"dtype\":\"torch.bfloat16\",\"eps\":1e-08,"
            "\"k\":2,\"name\":\"x\"}");
  EXPECT_EQ((*file)->metadata().count("optimizer"), 0u);
  std::string notes;
  for (const std::string &note : (*file)->notes()) {
    notes += note + "\n";
  }
  EXPECT_NE(notes.find("the state dict is entry 'model'"), std::string::npos);
  EXPECT_NE(notes.find("ignored entry 'optimizer'"), std::string::npos);
}

TEST(TorchCheckpoint, LeavesOutWhatItCannotUse) {
  Pickler p;
  p.orderedDict().mark();
  p.string("w").tensor("FloatStorage", "0", 6, 0, {2, 3}, {3, 1});
  // A transposed view, a complex64 buffer and a complex128 one.
  p.string("wT").tensor("FloatStorage", "0", 6, 0, {3, 2}, {1, 3});
  p.string("freqs").tensor("ComplexFloatStorage", "1", 2, 0, {2}, {1});
  p.string("c128").tensor("ComplexDoubleStorage", "2", 1, 0, {1}, {1});
  p.setItems().stop();
  Bytes bytes = torchSaveOf(
      p.bytes, {{"0", kSixFloats}, {"1", Bytes(16)}, {"2", Bytes(16)}});
  auto file = TorchCheckpoint::parse(bytes, "m.bin");
  ASSERT_TRUE(static_cast<bool>(file)) << llvm::toString(file.takeError());
  EXPECT_TRUE((*file)->find("w"));
  EXPECT_FALSE((*file)->find("wT"));
  ASSERT_TRUE((*file)->find("freqs"));
  EXPECT_EQ((*file)->find("freqs")->dtype, DType::C64);
  EXPECT_FALSE((*file)->find("c128"));
  ASSERT_EQ((*file)->notes().size(), 2u);
  EXPECT_NE((*file)->notes()[0].find("'wT' (a non-contiguous view"),
            std::string::npos);
}

// The classic exploit: os.system("...") through GLOBAL + REDUCE. Python's
// pickle.loads would run the command; the reader must refuse at the GLOBAL
// and name it.
TEST(TorchCheckpoint, RefusesGlobalsThatRunCode) {
  struct Case {
    const char *module, *name;
  };
  for (Case c :
       {Case{"os", "system"}, Case{"posix", "system"}, Case{"builtins", "eval"},
        Case{"subprocess", "Popen"}, Case{"torch", "load"},
        Case{"torch._utils", "_rebuild_qtensor"},
        Case{"collections", "defaultdict"}}) {
    Pickler p;
    p.global(c.module, c.name).mark().string("touch /tmp/pwned").tuple();
    p.reduce().stop();
    std::string error = parseError(torchSaveOf(p.bytes));
    std::string global = std::string(c.module) + "." + c.name;
    EXPECT_NE(error.find("refuses the global '" + global + "'"),
              std::string::npos)
        << error;
  }
  // The same through STACK_GLOBAL (protocol 4), where the names are strings
  // on the stack.
  Pickler p;
  p.string("os").string("system").op(0x93).stop();
  EXPECT_NE(parseError(torchSaveOf(p.bytes)).find("'os.system'"),
            std::string::npos);
}

TEST(TorchCheckpoint, RefusesOpcodesAndCallsTorchNeverWrites) {
  struct Case {
    Bytes pickle;
    const char *message;
  };
  Pickler inst; // INST: protocol 0's import-and-call
  inst.op('i');
  Pickler newobj; // NEWOBJ on an allowed class
  newobj.global("collections", "OrderedDict").emptyTuple().op(0x81).stop();
  Pickler callDType; // calling something that is data, not a builder
  callDType.global("torch", "float32").emptyTuple().reduce().stop();
  Pickler buildTensor; // BUILD on a tensor (sets arbitrary state)
  buildTensor.tensor("FloatStorage", "0", 6, 0, {6}, {1}).emptyDict().build();
  Pickler persistent; // a persistent id that is not a storage
  persistent.mark().string("module").string("x").tuple().op('Q').stop();
  for (const Case &c :
       {Case{inst.bytes, "opcode 0x69"}, Case{newobj.bytes, "opcode 0x81"},
        Case{callDType.bytes, "calls 'torch.float32'"},
        Case{buildTensor.bytes, "not an OrderedDict"},
        Case{persistent.bytes, "persistent id"}}) {
    std::string error = parseError(torchSaveOf(c.pickle, {{"0", kSixFloats}}));
    EXPECT_NE(error.find(c.message), std::string::npos) << error;
  }
}

TEST(TorchCheckpoint, RefusesMalformedPickles) {
  struct Case {
    Bytes pickle;
    const char *message;
  };
  Bytes cut = stateDict(); // no STOP
  Pickler emptyPop;
  emptyPop.op('0');
  Pickler badMemo;
  badMemo.get(7);
  Pickler twoValues;
  twoValues.none().none().stop();
  Pickler protocol9;
  protocol9.bytes = {0x80, 9};
  Pickler longString;
  longString.op('X');
  appendLE(longString.bytes, 1u << 30, 4);
  Pickler notDict;
  notDict.mark().integer(1).list().stop();
  Pickler hugeInt;
  hugeInt.op(0x8a).byte(9);
  for (const Case &c :
       {Case{cut, "without a STOP"}, Case{emptyPop.bytes, "empty stack"},
        Case{badMemo.bytes, "memo slot 7"},
        Case{twoValues.bytes, "2 values on the stack"},
        Case{protocol9.bytes, "protocol 9"},
        Case{longString.bytes, "runs past the end"},
        Case{notDict.bytes, "not a dict"},
        Case{hugeInt.bytes, "9-byte integer"}}) {
    std::string error = parseError(torchSaveOf(c.pickle, {{"0", kSixFloats}}));
    EXPECT_NE(error.find(c.message), std::string::npos) << error;
    EXPECT_EQ(error.rfind("model.pt: ", 0), 0u) << error;
  }
}

TEST(TorchCheckpoint, RefusesTensorsOutsideTheirStorage) {
  struct Case {
    Bytes file;
    const char *message;
  };
  Pickler beyond;
  beyond.orderedDict().mark().string("w");
  beyond.tensor("FloatStorage", "0", 6, 4, {3}, {1}).setItems().stop();
  Pickler hugeShape;
  hugeShape.orderedDict().mark().string("w");
  hugeShape.tensor("FloatStorage", "0", 6, 0, {1ll << 40, 1ll << 40},
                   {1ll << 40, 1});
  hugeShape.setItems().stop();
  for (const Case &c : {
           Case{torchSaveOf(withStop(stateDict()), {}), "is missing"},
           Case{torchSaveOf(withStop(stateDict()), {{"0", Bytes(20)}}),
                "should hold 6 elements of 4 bytes but has 20"},
           Case{torchSaveOf(beyond.bytes, {{"0", kSixFloats}}),
                "lie outside its storage of 6"},
           Case{torchSaveOf(hugeShape.bytes, {{"0", kSixFloats}}),
                "shape overflows"},
       }) {
    std::string error = parseError(c.file);
    EXPECT_NE(error.find(c.message), std::string::npos) << error;
    EXPECT_NE(error.find("tensor 'w'"), std::string::npos) << error;
  }
}

TEST(TorchCheckpoint, RefusesBrokenArchives) {
  Bytes good = torchSaveOf(withStop(stateDict()), {{"0", kSixFloats}});
  struct Case {
    Bytes file;
    const char *message;
  };
  Bytes truncated(good.begin(), good.begin() + good.size() / 2);
  Bytes corrupt = good;
  // The first opcode after PROTO of archive/data.pkl (after its 30-byte
  // local header and 16-byte name).
  corrupt[30 + 16 + 2] ^= 0x40;
  Bytes legacy = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46,
                  0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e};
  Bytes compressed = good;
  compressed[8] = 8; // the local header's method; the directory's below
  for (size_t i = 0; i + 4 <= compressed.size(); ++i) {
    if (compressed[i] == 0x50 && compressed[i + 1] == 0x4b &&
        compressed[i + 2] == 0x01 && compressed[i + 3] == 0x02) {
      compressed[i + 10] = 8;
      break;
    }
  }
  Bytes twoRecords = storedZip({{"a/data.pkl", withStop(stateDict())},
                                {"b/data.pkl", withStop(stateDict())}});
  Bytes bigEndian = storedZip({{"archive/data.pkl", withStop(stateDict())},
                               {"archive/byteorder", Bytes{'b', 'i', 'g'}}});
  for (const Case &c :
       {Case{truncated, "end-of-central-directory"}, Case{corrupt, "CRC-32"},
        Case{legacy, "legacy (pre-zip) torch.save file"},
        Case{Bytes{'h', 'e', 'l', 'l', 'o'}, "not a torch.save file"},
        Case{compressed, "is compressed"},
        Case{twoRecords, "with 2 '<folder>/data.pkl' members"},
        Case{bigEndian, "'big' byte order"}}) {
    std::string error = parseError(c.file);
    EXPECT_NE(error.find(c.message), std::string::npos) << error;
  }
}

TEST(TorchCheckpoint, AllowedGlobalsAreExactlyTheStateDictOnes) {
  EXPECT_TRUE(isAllowedGlobal("torch._utils", "_rebuild_tensor_v2"));
  EXPECT_TRUE(isAllowedGlobal("torch", "BFloat16Storage"));
  EXPECT_TRUE(isAllowedGlobal("collections", "OrderedDict"));
  EXPECT_FALSE(isAllowedGlobal("torch", "save"));
  EXPECT_FALSE(isAllowedGlobal("torch.nn.modules.linear", "Linear"));
  EXPECT_FALSE(isAllowedGlobal("numpy.core.multiarray", "_reconstruct"));
  EXPECT_FALSE(isAllowedGlobal("", ""));
  EXPECT_EQ(storageDType("HalfStorage"), DType::F16);
  EXPECT_EQ(storageDType("Storage"), std::nullopt);
}

} // namespace
