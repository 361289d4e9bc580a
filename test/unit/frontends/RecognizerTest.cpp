//===- RecognizerTest.cpp - Family descriptions applied to checkpoints ----===//
//
// Runs the built-in physics description, and edited copies of it, on small
// in-memory checkpoints: sizes from shapes, prefixes, config trust, and a
// named error for every way a checkpoint can disagree with its family.
//
//===----------------------------------------------------------------------===//

#include "frontends/family/Recognizer.h"
#include "test/unit/frontends/TinyCheckpoints.h"

#include <functional>
#include <gtest/gtest.h>

using namespace moe::frontend;
using json = nlohmann::json;

namespace {

const FamilyDescription &physicsFamily() {
  for (const FamilyDescription &family : builtinFamilies()) {
    if (family.name == "moe100m-physics") {
      return family;
    }
  }
  ADD_FAILURE() << "no built-in physics family";
  static FamilyDescription none;
  return none;
}

std::string recognitionError(const FamilyDescription &family,
                             const TensorSource &tensors, const json *config) {
  auto model = recognizeModel(family, tensors, config, "fixture/config.json");
  if (model) {
    return "";
  }
  return llvm::toString(model.takeError());
}

bool hasNote(const ModelDescription &model, const std::string &text) {
  for (const std::string &note : model.notes) {
    if (note.find(text) != std::string::npos) {
      return true;
    }
  }
  return false;
}

TEST(Recognizer, BuiltinFamiliesParse) {
  ASSERT_FALSE(builtinFamilies().empty());
  for (const FamilyDescription &family : builtinFamilies()) {
    EXPECT_FALSE(family.name.empty());
    EXPECT_EQ(family.source.rfind("built-in:", 0), 0u);
  }
}

TEST(Recognizer, PhysicsFromShapes) {
  MemoryTensors tensors = physics();
  json config = tinyConfig();
  auto model =
      recognizeModel(physicsFamily(), tensors, &config, "fixture/config.json");
  ASSERT_TRUE(static_cast<bool>(model)) << llvm::toString(model.takeError());
  EXPECT_EQ(model->family, "moe100m-physics");
  EXPECT_EQ(model->vocab, 50);
  EXPECT_EQ(model->dModel, 32);
  EXPECT_EQ(model->nHeads, 4);
  EXPECT_EQ(model->nKvHeads, 2);
  EXPECT_EQ(model->headDim, 8);
  EXPECT_EQ(model->contextLength, 64);
  ASSERT_EQ(model->layers.size(), 3u);
  EXPECT_TRUE(model->layers[0].dense.has_value());
  EXPECT_FALSE(model->layers[0].moe.has_value());
  ASSERT_TRUE(model->layers[1].moe.has_value());
  const MoEDesc &moe = *model->layers[1].moe;
  EXPECT_EQ(moe.router.scoring, RouterScoring::Sigmoid);
  EXPECT_EQ(moe.router.topK, 2);
  EXPECT_TRUE(moe.router.renormalize);
  EXPECT_DOUBLE_EQ(moe.router.renormEps, 1e-9);
  ASSERT_TRUE(moe.router.bias.has_value());
  ASSERT_TRUE(moe.shared.has_value());
  const AttentionDesc &attn = model->layers[2].attention;
  ASSERT_TRUE(attn.rope.has_value());
  EXPECT_EQ(attn.rope->layout, RopeLayout::Interleaved);
  EXPECT_EQ(attn.rope->dims, 4);
  EXPECT_DOUBLE_EQ(attn.rope->theta, 500.0);
  ASSERT_TRUE(attn.qkNorm.has_value());
  EXPECT_TRUE(attn.qkNorm->beforeRope);
  EXPECT_TRUE(attn.vScale.has_value());
  EXPECT_DOUBLE_EQ(attn.scale, 1.0 / std::sqrt(8.0));
  EXPECT_DOUBLE_EQ(model->logitScale, std::sqrt(8.0 / 32.0));
  EXPECT_EQ(model->logitsWeight.sources.front(), "embed.weight");
  EXPECT_TRUE(hasNote(*model, "agrees with the tensors"));
  EXPECT_TRUE(hasNote(*model, "rope_theta = 500 (config 'rope_theta')"));
  // Parameters: every tensor once (the tied head is the embedding), and a
  // routed expert counts top_k / E towards the active ones.
  int64_t total = 0;
  for (const TensorInfo &t : tensors.tensors()) {
    total += t.numElements();
  }
  EXPECT_EQ(model->totalParams, total);
  int64_t routed = 2 * 3 * 4 * 12 * 32;
  EXPECT_EQ(model->activeParams, total - routed / 2);
}

TEST(Recognizer, StripsPrefixesButKeepsCheckpointNames) {
  MemoryTensors tensors = physics("_orig_mod.");
  json config = tinyConfig();
  auto model = recognizeModel(physicsFamily(), tensors, &config, "config.json");
  ASSERT_TRUE(static_cast<bool>(model)) << llvm::toString(model.takeError());
  EXPECT_EQ(model->embedding.sources.front(), "_orig_mod.embed.weight");
  EXPECT_TRUE(hasNote(*model, "stripped the prefix '_orig_mod.' from"));
  EXPECT_TRUE(missingMatchTensors(physicsFamily(), tensors).empty());
}

TEST(Recognizer, RefusesPrefixCollisions) {
  MemoryTensors tensors = physics();
  tensors.add("module.embed.weight", {50, 32});
  std::string error = recognitionError(physicsFamily(), tensors, nullptr);
  EXPECT_NE(error.find("are the same tensor once the prefixes"),
            std::string::npos)
      << error;
}

TEST(Recognizer, UntrustedConfigFallsBackToDefaults) {
  MemoryTensors tensors = physics();
  json config = tinyConfig();
  config["n_layers"] = 16; // the scaffold's dataclass default
  // Defaults (rope_partial 32) no longer fit head_dim 8: a named error.
  std::string error = recognitionError(physicsFamily(), tensors, &config);
  EXPECT_NE(
      error.find("rotary dims = 32 must be even and in (0, head_dim = 8]"),
      std::string::npos)
      << error;
}

TEST(Recognizer, ConfigSizeOfTheWrongTypeIsAnError) {
  MemoryTensors tensors = physics();
  json config = tinyConfig();
  config["n_layers"] = "three";
  EXPECT_EQ(
      recognitionError(physicsFamily(), tensors, &config),
      "fixture/config.json: 'n_layers' should be a number, got \"three\"");
  config["n_layers"] = nullptr; // null is absent, as Hugging Face writes it
  EXPECT_EQ(recognitionError(physicsFamily(), tensors, &config), "");
}

TEST(Recognizer, NoConfigUsesDefaults) {
  MemoryTensors tensors;
  // head_dim 64 fits the default partial RoPE of 32.
  tensors.add("embed.weight", {50, 128});
  tensors.add("final_norm.weight", {128});
  std::string b = "blocks.0.";
  for (auto [name, shape] :
       std::vector<std::pair<std::string, std::vector<int64_t>>>{
           {"attn_norm.weight", {128}},
           {"attn.q_proj.weight", {128, 128}},
           {"attn.k_proj.weight", {64, 128}},
           {"attn.v_proj.weight", {64, 128}},
           {"attn.o_proj.weight", {128, 128}},
           {"attn.q_norm.weight", {2, 64}},
           {"attn.q_norm.gain", {2, 1}},
           {"attn.k_norm.weight", {1, 64}},
           {"attn.k_norm.gain", {1, 1}},
           {"attn.smear", {1}},
           {"ffn_norm.weight", {128}},
           {"ffn.gate.weight", {16, 128}},
           {"ffn.up.weight", {16, 128}},
           {"ffn.down.weight", {128, 16}}}) {
    tensors.add(b + name, shape);
  }
  auto model = recognizeModel(physicsFamily(), tensors, nullptr, "config.json");
  ASSERT_TRUE(static_cast<bool>(model)) << llvm::toString(model.takeError());
  EXPECT_TRUE(hasNote(*model, "no config.json"));
  EXPECT_TRUE(hasNote(*model, "rope_theta = 10000 (family default"));
  EXPECT_EQ(model->layers[0].attention.rope->dims, 32);
  EXPECT_EQ(model->contextLength, 1024);
}

TEST(Recognizer, MissingTensorIsNamed) {
  MemoryTensors tensors = physics();
  tensors.remove("blocks.1.attn.k_proj.weight");
  json config = tinyConfig();
  std::string error = recognitionError(physicsFamily(), tensors, &config);
  EXPECT_EQ(error, "fixture/model.safetensors: missing tensor "
                   "'blocks.1.attn.k_proj.weight' (layer 1: k)");
}

TEST(Recognizer, WrongShapeIsNamed) {
  MemoryTensors tensors = physics();
  tensors.remove("blocks.2.attn.k_proj.weight");
  tensors.add("blocks.2.attn.k_proj.weight", {24, 32});
  json config = tinyConfig();
  std::string error = recognitionError(physicsFamily(), tensors, &config);
  EXPECT_EQ(error, "fixture/model.safetensors: tensor "
                   "'blocks.2.attn.k_proj.weight' (layer 2: k) has shape "
                   "[24, 32], expected [n_kv_heads * head_dim, d_model] = "
                   "[16, 32]");
}

TEST(Recognizer, WrongDtypeIsNamed) {
  MemoryTensors tensors = physics();
  tensors.remove("final_norm.weight");
  tensors.add("final_norm.weight", {32}, DType::I32);
  json config = tinyConfig();
  std::string error = recognitionError(physicsFamily(), tensors, &config);
  EXPECT_NE(error.find("tensor 'final_norm.weight' (final_norm) has dtype "
                       "I32; expected a float dtype"),
            std::string::npos)
      << error;
}

TEST(Recognizer, WarnsAboutUnusedTensors) {
  MemoryTensors tensors = physics();
  tensors.add("blocks.1.attn.rotary.inv_freq", {4});
  json config = tinyConfig();
  auto model = recognizeModel(physicsFamily(), tensors, &config, "config.json");
  ASSERT_TRUE(static_cast<bool>(model)) << llvm::toString(model.takeError());
  EXPECT_TRUE(hasNote(*model, "warning: 1 checkpoint tensor(s) are not used "
                              "by family moe100m-physics: "
                              "blocks.1.attn.rotary.inv_freq"));
}

TEST(Recognizer, NoLayers) {
  MemoryTensors tensors;
  tensors.add("embed.weight", {50, 32});
  std::string error = recognitionError(physicsFamily(), tensors, nullptr);
  EXPECT_NE(
      error.find("no layers: no tensor matches 'blocks.0.attn_norm.weight'"),
      std::string::npos)
      << error;
  EXPECT_EQ(missingMatchTensors(physicsFamily(), tensors).size(), 2u);
}

/// The physics description with `edit` applied to its JSON.
FamilyDescription edited(const std::function<void(json &)> &edit) {
  FamilyDescription family = physicsFamily();
  edit(family.root);
  family.source = "edited.json";
  return family;
}

TEST(Recognizer, DescriptionErrorsNameTheField) {
  MemoryTensors tensors = physics();
  json config = tinyConfig();
  std::string error =
      recognitionError(edited([](json &root) {
                         root["architecture"]["attention"]["rope"]["layout"] =
                             "sideways";
                       }),
                       tensors, &config);
  EXPECT_EQ(error, "edited.json: architecture.attention.rope.layout: expected "
                   "one of 'half_split', 'interleaved', got \"sideways\"");

  error = recognitionError(
      edited([](json &root) { root["dims"]["d_model"] = "d_model + 1"; }),
      tensors, &config);
  EXPECT_NE(error.find("'d_model' is defined in terms of itself"),
            std::string::npos)
      << error;

  error = recognitionError(edited([](json &root) {
                             root["architecture"]["attention"]["q"] = "query";
                           }),
                           tensors, &config);
  EXPECT_NE(error.find("architecture.attention.q: names the role 'query', "
                       "which is not in 'tensors' or 'layer_tensors'"),
            std::string::npos)
      << error;

  error =
      recognitionError(edited([](json &root) {
                         root["architecture"]["ffn"]["moe"]["router"]["top_k"] =
                             9;
                       }),
                       tensors, &config);
  EXPECT_NE(error.find("top_k = 9 must be in [1, 4]"), std::string::npos)
      << error;

  // A setting the description lacks: the expression using it is named.
  error = recognitionError(
      edited([](json &root) { root["settings"].erase("rope_theta"); }), tensors,
      &config);
  EXPECT_EQ(error, "edited.json: architecture.attention.rope.theta: in "
                   "expression 'rope_theta' at column 11: unknown name "
                   "'rope_theta' (not in dims or settings)");

  // A layer pattern without {i} names one tensor for every layer: an
  // error, not an endless count (a fuzz_family timeout).
  error = recognitionError(edited([](json &root) {
                             root["layer_count_from"] =
                                 "blocks.{e}.attn_norm.weight";
                           }),
                           tensors, &config);
  EXPECT_EQ(error, "edited.json: layer_count_from: "
                   "'blocks.{e}.attn_norm.weight' has no {i} for the layer "
                   "index");

  // A stacked role's one pattern may be spelled as a list.
  error = recognitionError(edited([](json &root) {
                             json &gate = root["layer_tensors"]["expert_gate"];
                             gate["name"] = json::array({gate["name"]});
                           }),
                           tensors, &config);
  EXPECT_EQ(error, "") << error;
}

TEST(Recognizer, ParseDescriptionChecksSections) {
  auto bad = parseFamilyDescription("{\"family\": \"x\"}", "x.json");
  ASSERT_FALSE(static_cast<bool>(bad));
  EXPECT_EQ(llvm::toString(bad.takeError()),
            "x.json: 'match' must be an array of tensor names");
  auto notJson = parseFamilyDescription("{", "y.json");
  ASSERT_FALSE(static_cast<bool>(notJson));
  EXPECT_NE(llvm::toString(notJson.takeError()).find("y.json: not valid JSON"),
            std::string::npos);
}

} // namespace
