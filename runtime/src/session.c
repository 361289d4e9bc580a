/*===- session.c - One sequence being run through a compiled model --------===*
 *
 * Everything is allocated in moert_session_create, sized from the model
 * descriptor: the KV cache for `context` positions, the arena the compiler
 * planned, a [prefill_chunk, vocab] logits scratch and the last token's
 * logits. Running tokens only fills them.
 *
 * Kernel errors: every kernel gets the session as its Halide user_context,
 * and the process-wide Halide error handler installed here copies the
 * message into that session's error buffer instead of aborting.
 *
 *===----------------------------------------------------------------------===*/

#include "moert/session.h"

#include "scratch.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#endif

struct moert_session_t {
  const moert_model_desc_t *model;
  moert_exec_t exec;
  int32_t position;
  int32_t context;
  float *scratch_logits; /* [prefill_chunk, vocab] */
  float *last_logits;    /* [vocab] */
  uint64_t bytes;
  moert_scratch_t scratch; /* the kernels' intermediates, kept across calls */
  char error[1024];
};

moert_scratch_t *moert_session_scratch(void *session) {
  return &((moert_session_t *)session)->scratch;
}

static void session_error(moert_session_t *session, const char *format, ...) {
  va_list args;
  va_start(args, format);
  vsnprintf(session->error, sizeof(session->error), format, args);
  va_end(args);
}

/* Halide calls this on a kernel failure, with the session as context. */
static void moert_on_halide_error(void *user_context, const char *message) {
  moert_session_t *session = (moert_session_t *)user_context;
  if (session) {
    size_t n = strlen(message);
    while (n > 0 && (message[n - 1] == '\n' || message[n - 1] == ' ')) {
      --n;
    }
    if (n >= sizeof(session->error)) {
      n = sizeof(session->error) - 1;
    }
    memcpy(session->error, message, n);
    session->error[n] = '\0';
  }
}

static void *aligned_zeroed(size_t bytes) {
  size_t rounded = (bytes + 63) / 64 * 64;
  if (rounded == 0) {
    rounded = 64;
  }
  void *p = aligned_alloc(64, rounded);
  if (p) {
    memset(p, 0, rounded);
  }
  return p;
}

void moert_session_options_initialize(moert_session_options_t *options) {
  memset(options, 0, sizeof(*options));
}

/* Whether the model's kernels use feature `f` (HalideRuntime.h's enum). */
static int uses_feature(const moert_model_desc_t *model, int f) {
  return f / 64 < model->halide_feature_words &&
         ((model->halide_features[f / 64] >> (f % 64)) & 1);
}

int moert_model_runs_here(const moert_model_desc_t *model) {
#if defined(__aarch64__) && defined(__linux__)
  /* Halide 14's run-time check knows no AArch64 feature: the kernel's dot
   * products (sdot) are checked here, from the kernel's own report. */
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
  if (uses_feature(model, halide_target_feature_arm_dot_prod) &&
      !(getauxval(AT_HWCAP) & HWCAP_ASIMDDP)) {
    return 0;
  }
#else
  (void)uses_feature;
#endif
  return model->halide_feature_words <= 0 ||
         halide_can_use_target_features(model->halide_feature_words,
                                        model->halide_features);
}

moert_status_t moert_session_create(const moert_model_desc_t *model,
                                    const moert_weights_t *weights,
                                    const moert_session_options_t *options,
                                    moert_session_t **out_session) {
  if (!out_session) {
    return MOERT_STATUS_INVALID_ARGUMENT;
  }
  *out_session = NULL;
  if (!model || !weights || model->abi_version != MOERT_ABI_VERSION ||
      model->vocab <= 0 || model->prefill_chunk <= 0) {
    return MOERT_STATUS_INVALID_ARGUMENT;
  }
  if (!moert_model_runs_here(model)) {
    return MOERT_STATUS_UNSUPPORTED_CPU;
  }
  int64_t context = options && options->context > 0 ? options->context
                                                    : model->context_length;
  if (context <= 0 || context > (1 << 24)) {
    return MOERT_STATUS_INVALID_ARGUMENT;
  }
  halide_set_error_handler(moert_on_halide_error);
  halide_set_custom_malloc(moert_scratch_malloc);
  halide_set_custom_free(moert_scratch_free);

  moert_session_t *session = calloc(1, sizeof(*session));
  if (!session) {
    return MOERT_STATUS_OUT_OF_MEMORY;
  }
  session->model = model;
  session->context = (int32_t)context;
  moert_scratch_init(&session->scratch);
  size_t kv_bytes = (size_t)model->n_layers * 2 * (size_t)model->n_kv_heads *
                    (size_t)context * (size_t)model->head_dim * sizeof(float);
  size_t conv_bytes = model->conv_width > 1
                          ? (size_t)model->n_layers *
                                (size_t)(model->conv_width - 1) *
                                (size_t)model->conv_channels * sizeof(float)
                          : 0;
  size_t scratch_bytes =
      (size_t)model->prefill_chunk * (size_t)model->vocab * sizeof(float);
  size_t last_bytes = (size_t)model->vocab * sizeof(float);
  size_t token_bytes = (size_t)model->prefill_chunk * sizeof(int32_t);
  session->exec.arena = aligned_zeroed(model->arena_bytes);
  session->exec.kv = aligned_zeroed(kv_bytes);
  /* Zeroed, though never read before written: positions below 0 read as
   * zeros in the kernel, so a reset needs no clearing. */
  session->exec.conv = conv_bytes ? aligned_zeroed(conv_bytes) : NULL;
  session->exec.tokens = aligned_zeroed(token_bytes);
  session->scratch_logits = aligned_zeroed(scratch_bytes);
  session->last_logits = aligned_zeroed(last_bytes);
  if (!session->exec.arena || !session->exec.kv ||
      (conv_bytes && !session->exec.conv) || !session->exec.tokens ||
      !session->scratch_logits || !session->last_logits) {
    moert_session_release(session);
    return MOERT_STATUS_OUT_OF_MEMORY;
  }
  session->bytes = model->arena_bytes + kv_bytes + conv_bytes + scratch_bytes +
                   last_bytes + token_bytes;
  session->exec.user_context = session;
  session->exec.weights = moert_weights_data(weights);
  session->exec.kv_capacity = (int32_t)context;
  *out_session = session;
  return MOERT_STATUS_OK;
}

void moert_session_release(moert_session_t *session) {
  if (!session) {
    return;
  }
  free(session->exec.arena);
  free(session->exec.kv);
  free(session->exec.conv);
  free(session->exec.tokens);
  free(session->scratch_logits);
  free(session->last_logits);
  moert_scratch_destroy(&session->scratch);
  free(session);
}

/* Checks `count` tokens can run from the current position. */
static moert_status_t check_tokens(moert_session_t *session,
                                   const int32_t *tokens, int32_t count) {
  const moert_model_desc_t *model = session->model;
  if (count <= 0 || !tokens) {
    session_error(session, "no tokens to run");
    return MOERT_STATUS_INVALID_ARGUMENT;
  }
  for (int32_t i = 0; i < count; ++i) {
    if (tokens[i] < 0 || tokens[i] >= model->vocab) {
      session_error(session,
                    "token %d (at index %d) is outside the vocabulary [0, "
                    "%lld)",
                    tokens[i], i, (long long)model->vocab);
      return MOERT_STATUS_INVALID_ARGUMENT;
    }
  }
  if ((int64_t)session->position + count > session->context) {
    session_error(session,
                  "%d more tokens at position %d exceed the context of %d "
                  "tokens (-c raises it up to the memory available)",
                  count, session->position, session->context);
    return MOERT_STATUS_OUT_OF_RANGE;
  }
  return MOERT_STATUS_OK;
}

static moert_status_t run(moert_session_t *session, moert_entry_fn entry,
                          int32_t count, float *logits) {
  session->error[0] = '\0';
  session->exec.logits = logits;
  int32_t rc = entry(&session->exec, count, session->position);
  if (rc != 0) {
    if (session->error[0] == '\0') {
      session_error(session, "a kernel failed with Halide error %d", rc);
    }
    return MOERT_STATUS_KERNEL_ERROR;
  }
  session->position += count;
  return MOERT_STATUS_OK;
}

moert_status_t moert_session_prefill(moert_session_t *session,
                                     const int32_t *tokens, int32_t count,
                                     float *logits) {
  if (!session) {
    return MOERT_STATUS_INVALID_ARGUMENT;
  }
  MOERT_RETURN_IF_ERROR(check_tokens(session, tokens, count));
  const moert_model_desc_t *model = session->model;
  int32_t chunk = (int32_t)model->prefill_chunk;
  int64_t vocab = model->vocab;
  for (int32_t start = 0; start < count; start += chunk) {
    int32_t n = count - start < chunk ? count - start : chunk;
    memcpy(session->exec.tokens, tokens + start, (size_t)n * sizeof(int32_t));
    float *out =
        logits ? logits + (int64_t)start * vocab : session->scratch_logits;
    MOERT_RETURN_IF_ERROR(run(session, model->prefill, n, out));
    memcpy(session->last_logits, out + (int64_t)(n - 1) * vocab,
           (size_t)vocab * sizeof(float));
  }
  return MOERT_STATUS_OK;
}

moert_status_t moert_session_decode(moert_session_t *session, int32_t token) {
  if (!session) {
    return MOERT_STATUS_INVALID_ARGUMENT;
  }
  MOERT_RETURN_IF_ERROR(check_tokens(session, &token, 1));
  session->exec.tokens[0] = token;
  return run(session, session->model->decode, 1, session->last_logits);
}

const float *moert_session_logits(const moert_session_t *session) {
  return session->last_logits;
}

void moert_session_reset(moert_session_t *session) { session->position = 0; }

void moert_session_set_dump(moert_session_t *session, moert_dump_fn dump,
                            void *context) {
  session->exec.dump = dump;
  session->exec.dump_context = context;
}

int32_t moert_session_position(const moert_session_t *session) {
  return session->position;
}

int32_t moert_session_context(const moert_session_t *session) {
  return session->context;
}

const char *moert_session_last_error(const moert_session_t *session) {
  return session->error;
}

uint64_t moert_session_bytes(const moert_session_t *session) {
  return session->bytes;
}

uint64_t moert_session_scratch_bytes(const moert_session_t *session) {
  return session->scratch.bytes;
}

uint64_t moert_session_scratch_allocations(const moert_session_t *session) {
  return session->scratch.allocations;
}

void moert_set_threads(int threads) {
  if (threads > 0) {
    halide_set_num_threads(threads);
  }
}
