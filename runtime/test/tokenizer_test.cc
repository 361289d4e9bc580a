//===- tokenizer_test.cc - The runtime tokenizer on a hand-made vocabulary ===//
//
// A byte-level vocabulary small enough to reason about: the 256 bytes, one
// merge ("a" "a" -> "aa") and one special token. The differential tests
// (test/tokenizers) check real tokenizer files against their peers; these
// pin the edge cases: leftmost merging, special-token parsing on and off,
// invalid UTF-8 in and out, streaming that never splits a character, and
// malformed blobs.
//
//===----------------------------------------------------------------------===//

#include "moert/text_format.h"
#include "moert/tokenizer.h"

#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

namespace {

constexpr int32_t kAA = 256, kEnd = 257;

/// The MOERT_TEXT_TOKENIZER payload of the test vocabulary.
std::vector<uint32_t> payload() {
  std::vector<std::string> texts;
  for (int b = 0; b < 256; ++b) {
    texts.push_back(std::string(1, static_cast<char>(b)));
  }
  texts.push_back("aa");
  texts.push_back("<|end|>");
  std::string strings;
  std::vector<uint32_t> w = {MOERT_TOKENIZER_BYTE_LEVEL,
                             0,
                             ~0u,
                             static_cast<uint32_t>(texts.size()),
                             1,
                             1,
                             0};
  for (const std::string &t : texts) {
    w.push_back(static_cast<uint32_t>(strings.size()));
    strings += t;
  }
  w.push_back(static_cast<uint32_t>(strings.size()));
  w[6] = static_cast<uint32_t>(strings.size());
  for (size_t i = 0; i < texts.size(); ++i) {
    w.push_back(i == kEnd ? MOERT_TOKEN_SPECIAL : 0);
  }
  for (uint32_t v : {uint32_t('a'), uint32_t('a'), uint32_t(kAA), 0u}) {
    w.push_back(v); // merge: left, right, result, priority
  }
  w.push_back(kEnd);
  w.push_back(MOERT_ADDED_SPECIAL);
  strings.resize((strings.size() + 3) / 4 * 4, '\0');
  size_t at = w.size();
  w.resize(at + strings.size() / 4);
  std::memcpy(&w[at], strings.data(), strings.size());
  return w;
}

class TokenizerTest : public ::testing::Test {
protected:
  void SetUp() override {
    words = payload();
    char error[256];
    ASSERT_EQ(moert_tokenizer_create(words.data(), words.size() * 4, &tok,
                                     error, sizeof(error)),
              MOERT_STATUS_OK)
        << error;
  }
  void TearDown() override { moert_tokenizer_destroy(tok); }

  std::vector<int32_t> encode(const std::string &text, bool special = true) {
    moert_token_list ids = {};
    EXPECT_EQ(
        moert_tokenizer_encode(tok, text.data(), text.size(), special, &ids),
        MOERT_STATUS_OK);
    std::vector<int32_t> out(ids.ids, ids.ids + ids.count);
    moert_token_list_free(&ids);
    return out;
  }

  std::vector<uint32_t> words;
  moert_tokenizer *tok = nullptr;
};

TEST_F(TokenizerTest, MergesLeftmostFirst) {
  EXPECT_EQ(encode("aaa"), (std::vector<int32_t>{kAA, 'a'}));
  EXPECT_EQ(encode("aaaa"), (std::vector<int32_t>{kAA, kAA}));
  // The GPT-2 regex keeps " aaa" one word: the space is its own symbol.
  EXPECT_EQ(encode(" aaa"), (std::vector<int32_t>{' ', kAA, 'a'}));
}

TEST_F(TokenizerTest, SpecialTokensParseOnlyWhenAsked) {
  EXPECT_EQ(encode("x<|end|>y"), (std::vector<int32_t>{'x', kEnd, 'y'}));
  std::vector<int32_t> plain = encode("x<|end|>y", /*special=*/false);
  EXPECT_EQ(plain.size(), 9u);
  EXPECT_EQ(moert_tokenizer_find(tok, "<|end|>"), kEnd);
  EXPECT_TRUE(moert_tokenizer_is_special(tok, kEnd));
}

TEST_F(TokenizerTest, InvalidInputBecomesReplacementCharacters) {
  // 0xFF and a truncated 3-byte sequence: one U+FFFD each.
  EXPECT_EQ(encode("\xff"), (std::vector<int32_t>{0xEF, 0xBF, 0xBD}));
  EXPECT_EQ(encode("\xe6\x97"), (std::vector<int32_t>{0xEF, 0xBF, 0xBD}));
}

TEST_F(TokenizerTest, StreamingNeverSplitsACharacter) {
  moert_detokenizer d;
  moert_detokenizer_init(&d, tok, /*skip_special=*/1);
  moert_text out = {};
  // "é" arrives as two byte tokens; nothing prints until both are in.
  ASSERT_EQ(moert_detokenizer_push(&d, 0xC3, &out), MOERT_STATUS_OK);
  EXPECT_EQ(out.length, 0u);
  ASSERT_EQ(moert_detokenizer_push(&d, 0xA9, &out), MOERT_STATUS_OK);
  EXPECT_EQ(std::string(out.data, out.length), "\xc3\xa9");
  // A special token prints nothing when skipped.
  ASSERT_EQ(moert_detokenizer_push(&d, kEnd, &out), MOERT_STATUS_OK);
  EXPECT_EQ(out.length, 2u);
  // A byte that cannot start UTF-8 is U+FFFD at once; an unfinished one at
  // the end is U+FFFD when flushed.
  ASSERT_EQ(moert_detokenizer_push(&d, 0xFF, &out), MOERT_STATUS_OK);
  ASSERT_EQ(moert_detokenizer_push(&d, 0xE6, &out), MOERT_STATUS_OK);
  EXPECT_EQ(std::string(out.data, out.length), "\xc3\xa9\xef\xbf\xbd");
  ASSERT_EQ(moert_detokenizer_flush(&d, &out), MOERT_STATUS_OK);
  EXPECT_EQ(std::string(out.data, out.length),
            "\xc3\xa9\xef\xbf\xbd\xef\xbf\xbd");
  EXPECT_EQ(moert_detokenizer_push(&d, 99999, &out),
            MOERT_STATUS_INVALID_ARGUMENT);
  moert_text_free(&out);
}

TEST_F(TokenizerTest, RoundTripsEveryByteSequence) {
  std::string text = "a\xf0\x9f\x98\x80 aa\n\n  b \xe6\x97\xa5";
  moert_detokenizer d;
  moert_detokenizer_init(&d, tok, 0);
  moert_text out = {};
  for (int32_t id : encode(text)) {
    ASSERT_EQ(moert_detokenizer_push(&d, id, &out), MOERT_STATUS_OK);
  }
  ASSERT_EQ(moert_detokenizer_flush(&d, &out), MOERT_STATUS_OK);
  EXPECT_EQ(std::string(out.data, out.length), text);
  moert_text_free(&out);
}

TEST(TokenizerBlob, MalformedPayloadsAreRefused) {
  std::vector<uint32_t> words = payload();
  char error[256] = "";
  moert_tokenizer *tok = reinterpret_cast<moert_tokenizer *>(1);
  for (size_t cut : {size_t(0), size_t(20), words.size() * 4 - 8}) {
    EXPECT_EQ(
        moert_tokenizer_create(words.data(), cut, &tok, error, sizeof(error)),
        MOERT_STATUS_FORMAT_ERROR)
        << "cut at " << cut;
    EXPECT_EQ(tok, nullptr);
    EXPECT_NE(std::string(error), "");
  }
  std::vector<uint32_t> bad = words;
  // The merge's result (after the header, offsets and flags) names a token
  // past the vocabulary.
  bad[7 + 259 + 258 + 2] = 5000;
  EXPECT_EQ(moert_tokenizer_create(bad.data(), bad.size() * 4, &tok, error,
                                   sizeof(error)),
            MOERT_STATUS_FORMAT_ERROR);
  EXPECT_NE(std::string(error).find("merge 0"), std::string::npos) << error;
}

} // namespace
