//===- fuzz_family.cpp - libFuzzer target of family descriptions, configs -===//
//
// The first byte picks the input: even, a family description applied to a
// small physics checkpoint with its config; odd, a config.json for that
// checkpoint under the built-in physics description. Either must give a
// model description or a message naming the description or config.json:
// never a crash, an overflow or an exception that escapes. See
// test/fuzz/README.md.
//
//===----------------------------------------------------------------------===//

#include "frontends/family/LoadModel.h"
#include "frontends/family/Recognizer.h"
#include "test/fuzz/FuzzChecks.h"
#include "test/unit/frontends/TinyCheckpoints.h"

using namespace moe::frontend;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) {
    return 0;
  }
  static const MemoryTensors tensors = physics();
  static const FamilyDescription builtinPhysics =
      llvm::cantFail(resolveFamily("moe100m-physics"));
  llvm::StringRef text(reinterpret_cast<const char *>(data + 1), size - 1);
  if ((data[0] & 1) == 0) {
    auto family = parseFamilyDescription(text, "fuzz-family.json");
    if (!family) {
      moe::fuzz::expectNamedError(family.takeError(), {"fuzz-family.json"});
      return 0;
    }
    nlohmann::json config = tinyConfig();
    auto model = recognizeModel(*family, tensors, &config, "config.json");
    if (!model) {
      moe::fuzz::expectNamedError(
          model.takeError(),
          {"fuzz-family.json", "config.json", tensors.path()});
    }
    return 0;
  }
  nlohmann::json config =
      nlohmann::json::parse(text.begin(), text.end(), nullptr, false);
  if (config.is_discarded()) {
    return 0; // moec reports JSON syntax errors before this point
  }
  auto model = recognizeModel(builtinPhysics, tensors, &config, "config.json");
  if (!model) {
    moe::fuzz::expectNamedError(
        model.takeError(),
        {"config.json", tensors.path(), builtinPhysics.source});
  }
  return 0;
}
