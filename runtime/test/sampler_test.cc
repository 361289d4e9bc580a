//===- sampler_test.cc - The sampler against its definitions --------------===//
//
// Greedy is argmax; a seed reproduces a draw; top-k and top-p never leave
// their set (10000 draws with a fixed seed); min-p's floor holds; both
// repetition-penalty forms equal their reference formulas; draws follow the
// softmax (a chi-square bound that a broken sampler fails).
//
//===----------------------------------------------------------------------===//

#include "moert/sampler.h"
#include "moert/text_format.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <set>
#include <vector>

namespace {

moert_sampler_params params(float temperature) {
  moert_sampler_params p = {};
  p.temperature = temperature;
  p.top_p = 1.0f;
  p.repeat_penalty = 1.0f;
  p.repeat_form = MOERT_REPEAT_NONE;
  p.repeat_last_n = 64;
  p.seed = 1234;
  return p;
}

/// Awkward logits: 37 values with ties, negatives and a spread of scales.
std::vector<float> logits37() {
  std::vector<float> l(37);
  for (int i = 0; i < 37; ++i) {
    l[i] = std::sin(i * 1.7f) * 3.0f + (i % 5 == 0 ? 1.5f : 0.0f);
  }
  return l;
}

std::vector<int32_t> draws(const moert_sampler_params &p, int n,
                           const std::vector<float> &logits) {
  moert_sampler s;
  moert_sampler_init(&s, &p);
  std::vector<int32_t> out;
  for (int i = 0; i < n; ++i) {
    std::vector<float> l = logits;
    out.push_back(moert_sampler_sample(
        &s, l.data(), static_cast<int32_t>(l.size()), nullptr, 0));
  }
  moert_sampler_free(&s);
  return out;
}

/// Ids sorted by descending logit.
std::vector<int32_t> ranked(const std::vector<float> &l) {
  std::vector<int32_t> ids(l.size());
  std::iota(ids.begin(), ids.end(), 0);
  std::sort(ids.begin(), ids.end(),
            [&](int32_t a, int32_t b) { return l[a] > l[b]; });
  return ids;
}

TEST(Sampler, TemperatureZeroIsArgmax) {
  std::vector<float> l = logits37();
  int32_t argmax =
      static_cast<int32_t>(std::max_element(l.begin(), l.end()) - l.begin());
  for (int32_t id : draws(params(0.0f), 20, l)) {
    EXPECT_EQ(id, argmax);
  }
}

TEST(Sampler, SameSeedSameDraws) {
  std::vector<float> l = logits37();
  moert_sampler_params p = params(1.0f);
  EXPECT_EQ(draws(p, 200, l), draws(p, 200, l));
  moert_sampler_params other = p;
  other.seed = 99;
  EXPECT_NE(draws(p, 200, l), draws(other, 200, l));
}

TEST(Sampler, TopKNeverLeavesTheKLikeliest) {
  std::vector<float> l = logits37();
  moert_sampler_params p = params(1.5f);
  p.top_k = 5;
  std::vector<int32_t> order = ranked(l);
  std::set<int32_t> allowed(order.begin(), order.begin() + 5);
  std::set<int32_t> seen;
  for (int32_t id : draws(p, 10000, l)) {
    ASSERT_TRUE(allowed.count(id)) << "token " << id << " is outside top-5";
    seen.insert(id);
  }
  EXPECT_EQ(seen, allowed); // each of the five is reachable
}

TEST(Sampler, TopPNeverLeavesTheNucleus) {
  std::vector<float> l = logits37();
  moert_sampler_params p = params(1.0f);
  p.top_p = 0.6f;
  // The nucleus by definition: the shortest prefix of the ranked tokens
  // whose probability exceeds top_p.
  std::vector<int32_t> order = ranked(l);
  double z = 0;
  for (float v : l) {
    z += std::exp(v - l[order[0]]);
  }
  std::set<int32_t> nucleus;
  double mass = 0;
  for (int32_t id : order) {
    nucleus.insert(id);
    mass += std::exp(l[id] - l[order[0]]) / z;
    if (mass > 0.6) {
      break;
    }
  }
  ASSERT_GT(nucleus.size(), 1u);
  ASSERT_LT(nucleus.size(), l.size());
  for (int32_t id : draws(p, 10000, l)) {
    ASSERT_TRUE(nucleus.count(id)) << "token " << id << " is outside top-p";
  }
}

TEST(Sampler, MinPDropsTokensBelowItsFloor) {
  std::vector<float> l = logits37();
  moert_sampler_params p = params(1.0f);
  p.min_p = 0.2f;
  float best = *std::max_element(l.begin(), l.end());
  for (int32_t id : draws(p, 5000, l)) {
    // p(id) / p(best) = exp(l[id] - best) >= min_p
    ASSERT_GE(std::exp(l[id] - best), 0.2f - 1e-6f) << "token " << id;
  }
}

TEST(Sampler, DrawsFollowTheSoftmax) {
  std::vector<float> l = {0.0f, 1.0f, 2.0f, -1.0f, 0.5f};
  moert_sampler_params p = params(1.0f);
  const int n = 20000;
  std::vector<int> counts(l.size());
  for (int32_t id : draws(p, n, l)) {
    ++counts[id];
  }
  double z = 0;
  for (float v : l) {
    z += std::exp(v);
  }
  double chi2 = 0;
  for (size_t i = 0; i < l.size(); ++i) {
    double expected = n * std::exp(l[i]) / z;
    chi2 += (counts[i] - expected) * (counts[i] - expected) / expected;
  }
  EXPECT_LT(chi2, 18.47); // 4 degrees of freedom, p = 0.001
}

TEST(RepeatPenalty, SignAwareMatchesHuggingFace) {
  // transformers' RepetitionPenaltyLogitsProcessor: each distinct seen token
  // once, logit / p when positive, logit * p when not.
  std::vector<float> l = {2.0f, -2.0f, 0.0f, 1.0f, -0.5f};
  moert_sampler_params p = params(1.0f);
  p.repeat_penalty = 1.3f;
  p.repeat_form = MOERT_REPEAT_SIGN_AWARE;
  p.repeat_last_n = -1;
  std::vector<int32_t> history = {0, 1, 0, 2, 0};
  moert_apply_repeat_penalty(&p, l.data(), 5, history.data(), history.size());
  EXPECT_FLOAT_EQ(l[0], 2.0f / 1.3f);
  EXPECT_FLOAT_EQ(l[1], -2.0f * 1.3f);
  EXPECT_FLOAT_EQ(l[2], 0.0f);
  EXPECT_FLOAT_EQ(l[3], 1.0f);
  EXPECT_FLOAT_EQ(l[4], -0.5f);
}

TEST(RepeatPenalty, DivideByCountMatchesMoonlight) {
  // GPTMoE.generate: logits /= penalty ** count(token in the last N ids),
  // negative logits too.
  std::vector<float> l = {2.0f, -2.0f, 4.0f, 1.0f};
  moert_sampler_params p = params(1.0f);
  p.repeat_penalty = 1.15f;
  p.repeat_form = MOERT_REPEAT_DIVIDE_BY_COUNT;
  p.repeat_last_n = 4;
  // The window is the last 4 ids: {1, 0, 0, 2}; the leading 3 is outside.
  std::vector<int32_t> history = {3, 1, 0, 0, 2};
  moert_apply_repeat_penalty(&p, l.data(), 4, history.data(), history.size());
  EXPECT_FLOAT_EQ(l[0], 2.0f / std::pow(1.15f, 2.0f));
  EXPECT_FLOAT_EQ(l[1], -2.0f / 1.15f);
  EXPECT_FLOAT_EQ(l[2], 4.0f / 1.15f);
  EXPECT_FLOAT_EQ(l[3], 1.0f);
}

TEST(RepeatPenalty, GreedyWithPenaltyAvoidsTheRepeat) {
  std::vector<float> l = {3.0f, 2.9f};
  moert_sampler_params p = params(0.0f);
  p.repeat_penalty = 1.3f;
  p.repeat_form = MOERT_REPEAT_SIGN_AWARE;
  p.repeat_last_n = -1;
  moert_sampler s;
  moert_sampler_init(&s, &p);
  int32_t history[] = {0};
  EXPECT_EQ(moert_sampler_sample(&s, l.data(), 2, history, 1), 1);
  moert_sampler_free(&s);
}

} // namespace
