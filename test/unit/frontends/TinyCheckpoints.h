//===- TinyCheckpoints.h - Small checkpoints held in memory -----*- C++ -*-===//
//
// A zero-filled physics-family checkpoint and its config, for the
// recogniser's unit tests and the family and config fuzz target.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_TEST_UNIT_FRONTENDS_TINYCHECKPOINTS_H
#define MOE_TEST_UNIT_FRONTENDS_TINYCHECKPOINTS_H

#include "frontends/checkpoint/TensorSource.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <deque>

namespace moe::frontend {

/// Tensors held in memory, zero-filled, for the recogniser.
class MemoryTensors : public TensorSource {
public:
  void add(const std::string &name, std::vector<int64_t> shape,
           DType dtype = DType::F32) {
    int64_t n = 1;
    for (int64_t d : shape) {
      n *= d;
    }
    storage.push_back(std::vector<uint8_t>(n * dtypeBits(dtype) / 8));
    TensorInfo info;
    info.name = name;
    info.dtype = dtype;
    info.shape.assign(shape.begin(), shape.end());
    info.bytes = storage.back();
    pending.push_back(info);
  }
  void remove(const std::string &name) {
    pending.erase(
        std::remove_if(pending.begin(), pending.end(),
                       [&](const TensorInfo &t) { return t.name == name; }),
        pending.end());
  }
  const std::string &path() const override { return filePath; }
  llvm::ArrayRef<TensorInfo> tensors() const override {
    sorted = pending;
    std::sort(sorted.begin(), sorted.end(),
              [](const TensorInfo &a, const TensorInfo &b) {
                return a.name < b.name;
              });
    return sorted;
  }
  const std::map<std::string, std::string> &metadata() const override {
    return meta;
  }

private:
  std::string filePath = "fixture/model.safetensors";
  std::deque<std::vector<uint8_t>> storage;
  std::vector<TensorInfo> pending;
  mutable std::vector<TensorInfo> sorted;
  std::map<std::string, std::string> meta;
};

/// A physics-family checkpoint: vocab 50, d 32, 3 layers (layer 0 dense),
/// 4 q heads / 2 kv heads of 8, 4 experts, ffn 12.
inline MemoryTensors physics(const std::string &prefix = "") {
  MemoryTensors t;
  auto add = [&](const std::string &name, std::vector<int64_t> shape) {
    t.add(prefix + name, std::move(shape));
  };
  add("embed.weight", {50, 32});
  add("final_norm.weight", {32});
  for (int i = 0; i < 3; ++i) {
    std::string b = "blocks." + std::to_string(i) + ".";
    add(b + "attn_norm.weight", {32});
    add(b + "attn.q_proj.weight", {32, 32});
    add(b + "attn.k_proj.weight", {16, 32});
    add(b + "attn.v_proj.weight", {16, 32});
    add(b + "attn.o_proj.weight", {32, 32});
    add(b + "attn.q_norm.weight", {4, 8});
    add(b + "attn.q_norm.gain", {4, 1});
    add(b + "attn.k_norm.weight", {2, 8});
    add(b + "attn.k_norm.gain", {2, 1});
    add(b + "attn.smear", {2});
    add(b + "ffn_norm.weight", {32});
    if (i == 0) {
      add(b + "ffn.gate.weight", {12, 32});
      add(b + "ffn.up.weight", {12, 32});
      add(b + "ffn.down.weight", {32, 12});
      continue;
    }
    add(b + "ffn.router.w", {4, 32});
    add(b + "ffn.router.bias", {4});
    add(b + "ffn.gate", {4, 12, 32});
    add(b + "ffn.up", {4, 12, 32});
    add(b + "ffn.down", {4, 32, 12});
    add(b + "ffn.shared_expert.gate.weight", {12, 32});
    add(b + "ffn.shared_expert.up.weight", {12, 32});
    add(b + "ffn.shared_expert.down.weight", {32, 12});
  }
  return t;
}

/// The config.json of `physics()`.
inline nlohmann::json tinyConfig() {
  return nlohmann::json{
      {"vocab_size", 50},  {"d_model", 32},       {"n_layers", 3},
      {"n_q_heads", 4},    {"n_kv_heads", 2},     {"head_dim", 8},
      {"rope_partial", 4}, {"rope_theta", 500.0}, {"top_k", 2},
      {"mup_base_d", 8},   {"max_seq_len", 64}};
}

} // namespace moe::frontend

#endif // MOE_TEST_UNIT_FRONTENDS_TINYCHECKPOINTS_H
