//===- runtime_test.cc - Tests of the C runtime ---------------------------===//
//
// The hash (streaming equals one-shot at every split), the weight file
// checks, the sampler, and the session against a model descriptor whose
// entry points are test functions: chunking, context and token checks, and
// a kernel error captured through the Halide error handler.
//
//===----------------------------------------------------------------------===//

#include "moert/moert.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <gtest/gtest.h>
#include <string>
#include <unistd.h>
#include <vector>

extern "C" halide_error_handler_t moert_test_error_handler;
extern "C" int moert_test_cpu_lacks_features;
extern "C" int moert_test_device_fails;
extern "C" uint64_t moert_test_device_bytes;
extern "C" halide_load_library_t moert_test_load_library;
extern "C" char moert_test_libraries_asked[256];
extern "C" const char *moert_test_library_present;
extern "C" int moert_test_device_reuse;
extern "C" const halide_device_interface_t *moert_test_device_interface(void);
extern "C" void *moert_scratch_malloc(void *user_context, size_t bytes);
extern "C" void moert_scratch_free(void *user_context, void *pointer);

namespace {

TEST(Hash, StreamingMatchesOneShot) {
  std::vector<uint8_t> data(1000);
  for (size_t i = 0; i < data.size(); ++i) {
    data[i] = static_cast<uint8_t>(i * 131 + 7);
  }
  uint64_t whole = moert_hash64(data.data(), data.size(), 0);
  for (size_t split : {0, 1, 7, 31, 32, 33, 500, 999, 1000}) {
    moert_hash_t state;
    moert_hash_init(&state, 0);
    moert_hash_update(&state, data.data(), split);
    moert_hash_update(&state, data.data() + split, data.size() - split);
    EXPECT_EQ(moert_hash_final(&state), whole) << "split at " << split;
  }
  EXPECT_NE(moert_hash64(data.data(), 999, 0), whole);
  EXPECT_NE(moert_hash64(data.data(), data.size(), 1), whole);
  data[500] ^= 1;
  EXPECT_NE(moert_hash64(data.data(), data.size(), 0), whole);
}

TEST(Sampler, GreedyTakesTheFirstMaximum) {
  float logits[] = {0.5f, 2.0f, -1.0f, 2.0f};
  EXPECT_EQ(moert_sample_greedy(logits, 4), 1);
  float withNan[] = {NAN, 0.1f, 0.3f};
  EXPECT_EQ(moert_sample_greedy(withNan, 3), 2);
}

TEST(Status, Names) {
  EXPECT_STREQ(moert_status_name(MOERT_STATUS_KERNEL_ERROR), "kernel error");
  EXPECT_STREQ(moert_status_name(static_cast<moert_status_t>(99)),
               "unknown status");
}

//===----------------------------------------------------------------------===//
// A model whose entry points are test functions
//===----------------------------------------------------------------------===//

struct Call {
  int32_t tokens, position, first;
};
std::vector<Call> calls;
bool failNext = false;

/// Region `r` of the call as the kernels see it: on the device when the
/// model has one (the test double's device memory is host memory).
uint8_t *kernelRegion(moert_exec_t *exec, int r) {
  return exec->device_interface ? reinterpret_cast<uint8_t *>(
                                      static_cast<uintptr_t>(exec->device[r]))
                                : exec->host[r];
}

/// Writes logit (token + position + the first weight byte - 7) at the
/// token's index for every row.
int32_t fakeEntry(moert_exec_t *exec, int32_t n, int32_t position) {
  auto *tokens =
      reinterpret_cast<int32_t *>(kernelRegion(exec, MOERT_REGION_TOKENS));
  auto *logits =
      reinterpret_cast<float *>(kernelRegion(exec, MOERT_REGION_LOGITS));
  float weight = kernelRegion(exec, MOERT_REGION_WEIGHTS)[0] - 7.0f;
  calls.push_back({n, position, tokens[0]});
  if (failNext) {
    failNext = false;
    moert_test_error_handler(exec->user_context,
                             "Input buffer arg3 is accessed at 63\n");
    moert_test_error_handler(exec->user_context, "a later consequence\n");
    return -4;
  }
  for (int32_t t = 0; t < n; ++t) {
    for (int32_t v = 0; v < 8; ++v) {
      logits[t * 8 + v] = v == tokens[t] ? 1.0f + position + t + weight : 0;
    }
  }
  return 0;
}

moert_model_desc_t fakeModel(uint64_t weightsBytes, uint64_t hash) {
  moert_model_desc_t m;
  std::memset(&m, 0, sizeof(m));
  m.abi_version = MOERT_ABI_VERSION;
  m.family = "fake";
  m.target = "test";
  m.manifest_json = "{}";
  m.vocab = 8;
  m.n_layers = 2;
  m.n_kv_heads = 1;
  m.head_dim = 4;
  m.context_length = 10;
  m.prefill_chunk = 3;
  m.arena_bytes = 100;
  m.weights_bytes = weightsBytes;
  m.weights_hash = hash;
  m.prefill = fakeEntry;
  m.decode = fakeEntry;
  return m;
}

/// Writes a weight file with `data` and returns its path.
std::string writeWeights(const std::vector<uint8_t> &data, const char *magic,
                         uint64_t hashOverride = 0) {
  char path[] = "/tmp/moert_test_XXXXXX";
  int fd = mkstemp(path);
  EXPECT_GE(fd, 0);
  moert_weights_header_t header;
  std::memset(&header, 0, sizeof(header));
  std::memcpy(header.magic, magic, 8);
  header.version = MOERT_WEIGHTS_VERSION;
  header.data_offset = MOERT_WEIGHTS_DATA_OFFSET;
  header.data_bytes = data.size();
  header.data_hash =
      hashOverride ? hashOverride : moert_hash64(data.data(), data.size(), 0);
  std::vector<uint8_t> file(MOERT_WEIGHTS_DATA_OFFSET, 0);
  std::memcpy(file.data(), &header, sizeof(header));
  file.insert(file.end(), data.begin(), data.end());
  EXPECT_EQ(write(fd, file.data(), file.size()),
            static_cast<ssize_t>(file.size()));
  close(fd);
  return path;
}

class WeightsTest : public ::testing::Test {
protected:
  std::vector<uint8_t> data = std::vector<uint8_t>(256, 7);
  uint64_t hash = moert_hash64(data.data(), data.size(), 0);
};

TEST_F(WeightsTest, OpensAMatchingFile) {
  std::string path = writeWeights(data, MOERT_WEIGHTS_MAGIC);
  moert_model_desc_t model = fakeModel(data.size(), hash);
  moert_weights_t *weights = nullptr;
  char error[256] = "";
  ASSERT_EQ(
      moert_weights_open(path.c_str(), &model, &weights, error, sizeof(error)),
      MOERT_STATUS_OK)
      << error;
  EXPECT_EQ(moert_weights_size(weights), 256u);
  EXPECT_EQ(moert_weights_data(weights)[17], 7);
  EXPECT_EQ(moert_weights_verify(weights, error, sizeof(error)),
            MOERT_STATUS_OK);
  moert_weights_release(weights);
  unlink(path.c_str());
}

TEST_F(WeightsTest, RefusesOtherFiles) {
  moert_model_desc_t model = fakeModel(data.size(), hash);
  moert_weights_t *weights = nullptr;
  char error[512] = "";

  EXPECT_EQ(moert_weights_open("/nonexistent.weights", &model, &weights, error,
                               sizeof(error)),
            MOERT_STATUS_IO_ERROR);
  EXPECT_NE(std::string(error).find("/nonexistent.weights: No such file"),
            std::string::npos);

  std::string bad = writeWeights(data, "NOTMOEWT");
  EXPECT_EQ(
      moert_weights_open(bad.c_str(), &model, &weights, error, sizeof(error)),
      MOERT_STATUS_FORMAT_ERROR);
  EXPECT_NE(std::string(error).find("bad magic"), std::string::npos);
  unlink(bad.c_str());

  moert_model_desc_t other = fakeModel(data.size(), hash + 1);
  std::string good = writeWeights(data, MOERT_WEIGHTS_MAGIC);
  EXPECT_EQ(
      moert_weights_open(good.c_str(), &other, &weights, error, sizeof(error)),
      MOERT_STATUS_FORMAT_ERROR);
  EXPECT_NE(std::string(error).find("belongs to another compile"),
            std::string::npos);
  EXPECT_EQ(weights, nullptr);

  // Truncate the data region: the header promises more than the file has.
  ASSERT_EQ(truncate(good.c_str(), MOERT_WEIGHTS_DATA_OFFSET + 100), 0);
  EXPECT_EQ(
      moert_weights_open(good.c_str(), &model, &weights, error, sizeof(error)),
      MOERT_STATUS_FORMAT_ERROR);
  EXPECT_NE(std::string(error).find("truncated"), std::string::npos) << error;
  ASSERT_EQ(truncate(good.c_str(), 10), 0);
  EXPECT_EQ(
      moert_weights_open(good.c_str(), &model, &weights, error, sizeof(error)),
      MOERT_STATUS_FORMAT_ERROR);
  EXPECT_NE(std::string(error).find("too short"), std::string::npos);
  unlink(good.c_str());
}

TEST_F(WeightsTest, VerifyCatchesCorruptData) {
  std::string path = writeWeights(data, MOERT_WEIGHTS_MAGIC);
  FILE *f = fopen(path.c_str(), "r+b");
  fseek(f, MOERT_WEIGHTS_DATA_OFFSET + 10, SEEK_SET);
  fputc(99, f);
  fclose(f);
  moert_model_desc_t model = fakeModel(data.size(), hash);
  moert_weights_t *weights = nullptr;
  char error[256] = "";
  ASSERT_EQ(
      moert_weights_open(path.c_str(), &model, &weights, error, sizeof(error)),
      MOERT_STATUS_OK);
  EXPECT_EQ(moert_weights_verify(weights, error, sizeof(error)),
            MOERT_STATUS_FORMAT_ERROR);
  EXPECT_NE(std::string(error).find("the file is corrupt"), std::string::npos);
  moert_weights_release(weights);
  unlink(path.c_str());
}

// Opened with no_session (--info, --tokenize): the weights are checked, no
// KV cache or arena is made, and what would run tokens refuses with a
// message instead of touching a session.
TEST_F(WeightsTest, LlmWithoutSession) {
  std::string path = writeWeights(data, MOERT_WEIGHTS_MAGIC);
  moert_model_desc_t model = fakeModel(data.size(), hash);
  moert_llm_options options;
  moert_llm_options_initialize(&options);
  options.weights_path = path.c_str();
  options.no_session = 1;
  moert_llm *llm = nullptr;
  char error[256] = "";
  ASSERT_EQ(
      moert_llm_open(&model, nullptr, 0, &options, &llm, error, sizeof(error)),
      MOERT_STATUS_OK)
      << error;
  EXPECT_EQ(moert_llm_session(llm), nullptr);
  EXPECT_EQ(moert_llm_context(llm), 0);
  EXPECT_EQ(moert_llm_position(llm), 0);
  EXPECT_EQ(moert_llm_logits(llm), nullptr);
  int32_t ids[] = {1, 2};
  EXPECT_EQ(moert_llm_feed(llm, ids, 2), MOERT_STATUS_INVALID_ARGUMENT);
  EXPECT_NE(std::string(moert_llm_last_error(llm)).find("without a session"),
            std::string::npos)
      << moert_llm_last_error(llm);
  moert_sampler_params params;
  moert_llm_default_sampling(llm, &params);
  moert_sampler sampler;
  moert_sampler_init(&sampler, &params);
  EXPECT_EQ(moert_llm_sample(llm, &sampler), -1);
  moert_sampler_free(&sampler);
  moert_llm_reset(llm);
  moert_llm_free(llm);
  unlink(path.c_str());
}

class SessionTest : public WeightsTest {
protected:
  void SetUp() override {
    calls.clear();
    path = writeWeights(data, MOERT_WEIGHTS_MAGIC);
    model = fakeModel(data.size(), hash);
    char error[256];
    ASSERT_EQ(moert_weights_open(path.c_str(), &model, &weights, error,
                                 sizeof(error)),
              MOERT_STATUS_OK);
    ASSERT_EQ(moert_session_create(&model, weights, nullptr, &session),
              MOERT_STATUS_OK);
  }
  void TearDown() override {
    moert_session_release(session);
    moert_weights_release(weights);
    unlink(path.c_str());
  }
  std::string path;
  moert_model_desc_t model;
  moert_weights_t *weights = nullptr;
  moert_session_t *session = nullptr;
};

TEST_F(SessionTest, PrefillRunsInChunks) {
  int32_t tokens[] = {1, 2, 3, 4, 5, 6, 7};
  std::vector<float> logits(7 * 8);
  ASSERT_EQ(moert_session_prefill(session, tokens, 7, logits.data()),
            MOERT_STATUS_OK);
  ASSERT_EQ(calls.size(), 3u); // chunks of 3, 3, 1
  EXPECT_EQ(calls[1].position, 3);
  EXPECT_EQ(calls[1].first, 4);
  EXPECT_EQ(calls[2].tokens, 1);
  EXPECT_EQ(logits[6 * 8 + 7], 7.0f); // token 7 at position 6
  EXPECT_EQ(moert_session_logits(session)[7], 7.0f);
  EXPECT_EQ(moert_session_position(session), 7);
  ASSERT_EQ(moert_session_decode(session, 2), MOERT_STATUS_OK);
  EXPECT_EQ(moert_session_logits(session)[2], 8.0f);
  moert_session_reset(session);
  EXPECT_EQ(moert_session_position(session), 0);
}

TEST_F(SessionTest, RefusesBadTokensAndFullContext) {
  int32_t bad[] = {1, 8};
  EXPECT_EQ(moert_session_prefill(session, bad, 2, nullptr),
            MOERT_STATUS_INVALID_ARGUMENT);
  EXPECT_NE(std::string(moert_session_last_error(session))
                .find("token 8 (at index 1) is outside the vocabulary [0, 8)"),
            std::string::npos);
  std::vector<int32_t> many(11, 1);
  EXPECT_EQ(moert_session_prefill(session, many.data(), 11, nullptr),
            MOERT_STATUS_OUT_OF_RANGE);
  EXPECT_NE(std::string(moert_session_last_error(session))
                .find("exceed the context of 10 tokens"),
            std::string::npos);
  EXPECT_TRUE(calls.empty());
}

TEST_F(SessionTest, KernelErrorsAreCaptured) {
  failNext = true;
  EXPECT_EQ(moert_session_decode(session, 1), MOERT_STATUS_KERNEL_ERROR);
  EXPECT_STREQ(moert_session_last_error(session),
               "Input buffer arg3 is accessed at 63");
  EXPECT_EQ(moert_session_position(session), 0);
}

TEST_F(SessionTest, KernelScratchIsReused) {
  // What a kernel does on every call: allocate its intermediates, free them.
  for (int call = 0; call < 5; ++call) {
    void *big = moert_scratch_malloc(session, 1 << 20);
    void *small = moert_scratch_malloc(session, 200 << 10);
    ASSERT_NE(big, nullptr);
    ASSERT_NE(small, nullptr);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(big) % 128, 0u);
    std::memset(big, 1, 1 << 20);
    moert_scratch_free(session, small);
    moert_scratch_free(session, big);
  }
  // Two blocks, made on the first call and reused by the next four.
  EXPECT_EQ(moert_session_scratch_allocations(session), 2u);
  EXPECT_GE(moert_session_scratch_bytes(session), (1u << 20) + (200u << 10));
  // A much smaller large request does not take the big block.
  void *medium = moert_scratch_malloc(session, 300 << 10);
  EXPECT_EQ(moert_session_scratch_allocations(session), 3u);
  moert_scratch_free(session, medium);
  // Small blocks are not pooled: malloc's thread caches serve them.
  void *tiny = moert_scratch_malloc(session, 16);
  EXPECT_EQ(moert_session_scratch_allocations(session), 3u);
  moert_scratch_free(session, tiny);
  // Without a session (Halide's own runtime) memory is not pooled.
  void *loose = moert_scratch_malloc(nullptr, 64);
  ASSERT_NE(loose, nullptr);
  moert_scratch_free(nullptr, loose);
}

TEST_F(SessionTest, ContextOption) {
  moert_session_options_t options;
  moert_session_options_initialize(&options);
  options.context = 4;
  moert_session_t *small = nullptr;
  ASSERT_EQ(moert_session_create(&model, weights, &options, &small),
            MOERT_STATUS_OK);
  EXPECT_EQ(moert_session_context(small), 4);
  // 2 layers x 2 x 1 head x 4 positions x 4 dims of f32 in the cache.
  EXPECT_GE(moert_session_bytes(small), 2u * 2 * 4 * 4 * 4);
  moert_session_release(small);
  moert_model_desc_t wrongAbi = model;
  wrongAbi.abi_version = 999;
  EXPECT_EQ(moert_session_create(&wrongAbi, weights, nullptr, &small),
            MOERT_STATUS_INVALID_ARGUMENT);
  EXPECT_EQ(small, nullptr);
}

TEST_F(SessionTest, RefusesACpuWithoutTheKernelsFeatures) {
  const uint64_t features[2] = {0x5u, 0};
  moert_model_desc_t avx512 = model;
  avx512.halide_feature_words = 2;
  avx512.halide_features = features;
  EXPECT_TRUE(moert_model_runs_here(&avx512));
  moert_test_cpu_lacks_features = 1;
  EXPECT_FALSE(moert_model_runs_here(&avx512));
  moert_session_t *refused = nullptr;
  EXPECT_EQ(moert_session_create(&avx512, weights, nullptr, &refused),
            MOERT_STATUS_UNSUPPORTED_CPU);
  EXPECT_EQ(refused, nullptr);
  // A model that names no features is not checked.
  EXPECT_TRUE(moert_model_runs_here(&model));
  moert_test_cpu_lacks_features = 0;
}

TEST_F(SessionTest, GpuModelKeepsEveryRegionOnTheDevice) {
  moert_model_desc_t gpu = model;
  gpu.device_interface = moert_test_device_interface;
  moert_session_t *onDevice = nullptr;
  // MOERT_DEVICE_REUSE=0 turns the reuse of kernels' device allocations
  // off (a debugging switch); it is on otherwise.
  setenv("MOERT_DEVICE_REUSE", "0", 1);
  ASSERT_EQ(moert_session_create(&gpu, weights, nullptr, &onDevice),
            MOERT_STATUS_OK);
  EXPECT_EQ(moert_test_device_reuse, 0);
  moert_session_release(onDevice);
  unsetenv("MOERT_DEVICE_REUSE");
  ASSERT_EQ(moert_session_create(&gpu, weights, nullptr, &onDevice),
            MOERT_STATUS_OK);
  EXPECT_EQ(moert_test_device_reuse, 1);
  // The weights, arena, KV cache, tokens and logits live on the device;
  // the host keeps only the token and logit staging.
  EXPECT_GT(moert_test_device_bytes, data.size() + 100);
  int32_t tokens[] = {1, 2, 3, 4};
  std::vector<float> logits(4 * 8);
  ASSERT_EQ(moert_session_prefill(onDevice, tokens, 4, logits.data()),
            MOERT_STATUS_OK);
  // The second chunk's one token came back from the device logits.
  EXPECT_EQ(logits[3 * 8 + 4], 1.0f + 3 + 0);
  EXPECT_EQ(logits[2 * 8 + 3], 1.0f + 0 + 2);
  ASSERT_EQ(moert_session_decode(onDevice, 6), MOERT_STATUS_OK);
  EXPECT_EQ(moert_session_logits(onDevice)[6], 1.0f + 4);
  moert_session_release(onDevice);
  EXPECT_EQ(moert_test_device_bytes, 0u);

  // Halide's CUDA runtime opens "libcuda.so", which a machine with only the
  // NVIDIA driver lacks; the loader the session installed tries the
  // driver's own name first.
  ASSERT_NE(moert_test_load_library, nullptr);
  moert_test_library_present = "libcuda.so.1";
  moert_test_libraries_asked[0] = 0;
  EXPECT_NE(moert_test_load_library("libcuda.so"), nullptr);
  EXPECT_STREQ(moert_test_libraries_asked, "libcuda.so.1;");
  // A toolkit-only machine: the unversioned name is still tried.
  moert_test_library_present = "libcuda.so";
  moert_test_libraries_asked[0] = 0;
  EXPECT_NE(moert_test_load_library("libcuda.so"), nullptr);
  EXPECT_STREQ(moert_test_libraries_asked, "libcuda.so.1;libcuda.so;");
  // Any other library is asked for by its own name only.
  moert_test_libraries_asked[0] = 0;
  EXPECT_EQ(moert_test_load_library("libOpenCL.so"), nullptr);
  EXPECT_STREQ(moert_test_libraries_asked, "libOpenCL.so;");
  moert_test_library_present = "";
}

TEST_F(SessionTest, GpuModelWithoutADeviceSaysSo) {
  moert_model_desc_t gpu = model;
  gpu.target = "cuda";
  gpu.device_interface = moert_test_device_interface;
  moert_test_device_fails = 1;
  char error[512] = "";
  moert_session_options_t options;
  moert_session_options_initialize(&options);
  options.error = error;
  options.error_size = sizeof(error);
  moert_session_t *refused = nullptr;
  EXPECT_EQ(moert_session_create(&gpu, weights, &options, &refused),
            MOERT_STATUS_NO_DEVICE);
  moert_test_device_fails = 0;
  EXPECT_EQ(refused, nullptr);
  EXPECT_STREQ(error, "the model was compiled for --target=cuda, whose "
                      "kernels run on a GPU, and no GPU device is usable "
                      "here: "
                      "CUDA API not found: cuInit");
  EXPECT_EQ(moert_test_device_bytes, 0u);
}

} // namespace
