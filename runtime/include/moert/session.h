/*===- session.h - One sequence being run through a compiled model -------===*
 *
 * A session owns everything one sequence needs: the KV cache, the arena of
 * intermediate tensors and the logits buffer, all allocated once in
 * moert_session_create. Prefill and decode never allocate.
 *
 * Thread-safety: thread-compatible; one thread at a time per session.
 * Kernels run their parallel loops on one pool per process, whose size
 * moert_set_threads sets.
 *
 *===----------------------------------------------------------------------===*/

#ifndef MOERT_SESSION_H
#define MOERT_SESSION_H

#include "moert/host_abi.h"
#include "moert/status.h"
#include "moert/weights.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct moert_session_t moert_session_t;

typedef struct moert_session_options_t {
  /* KV-cache capacity in positions; 0 = the model's context length. */
  int32_t context;
  /* When not NULL: why moert_session_create failed, for NO_DEVICE. */
  char *error;
  size_t error_size;
} moert_session_options_t;

void moert_session_options_initialize(moert_session_options_t *options);

/* Whether this CPU has every instruction-set feature the model's kernels
 * were compiled for (e.g. AVX-512 for --target=x86-64-avx512). */
int moert_model_runs_here(const moert_model_desc_t *model);

/* Creates a session over `model` and its `weights` (both must outlive it).
 * A GPU model's session puts its weights, KV cache and scratch on the
 * device. On failure *out_session is NULL; returns INVALID_ARGUMENT,
 * UNSUPPORTED_CPU (see moert_model_runs_here), NO_DEVICE (a GPU model,
 * and no GPU can be used: options->error says why) or OUT_OF_MEMORY. */
moert_status_t moert_session_create(const moert_model_desc_t *model,
                                    const moert_weights_t *weights,
                                    const moert_session_options_t *options,
                                    moert_session_t **out_session);

void moert_session_release(moert_session_t *session);

/* Runs `count` tokens from the current position, in chunks of at most the
 * model's prefill_chunk, and advances the position. If `logits` is not
 * NULL it receives [count, vocab] logits, one row per token; the last row
 * is always available through moert_session_logits. Returns
 * INVALID_ARGUMENT for a token outside [0, vocab), OUT_OF_RANGE when the
 * tokens do not fit in the context, KERNEL_ERROR if a kernel fails. */
moert_status_t moert_session_prefill(moert_session_t *session,
                                     const int32_t *tokens, int32_t count,
                                     float *logits);

/* Runs one token through the decode entry point (the KV cache holds the
 * rest) and advances the position. Same errors as prefill. */
moert_status_t moert_session_decode(moert_session_t *session, int32_t token);

/* The logits of the last token run: [vocab], owned by the session. */
const float *moert_session_logits(const moert_session_t *session);

/* Calls `dump` with every intermediate the compiled model names (each
 * layer's hidden state and router choices) as the kernels produce them;
 * null turns it off. For debugging (`--dump-activations`): it costs a call
 * per named tensor. */
void moert_session_set_dump(moert_session_t *session, moert_dump_fn dump,
                            void *context);

/* Forgets the sequence (position 0); the cache need not be cleared since
 * attention never reads past the position. */
void moert_session_reset(moert_session_t *session);

int32_t moert_session_position(const moert_session_t *session);
int32_t moert_session_context(const moert_session_t *session);

/* The message of the last failure ("" if none). Owned by the session. */
const char *moert_session_last_error(const moert_session_t *session);

/* Bytes the session allocated up front (cache + arena + logits; for a GPU
 * model those on the device too, the weights' copy there excepted). */
uint64_t moert_session_bytes(const moert_session_t *session);

/* The kernels' scratch pool: bytes held, and blocks ever allocated. Blocks
 * are reused across calls, so the count stops growing once every kernel
 * has run with its largest token count. */
uint64_t moert_session_scratch_bytes(const moert_session_t *session);
uint64_t moert_session_scratch_allocations(const moert_session_t *session);

/* Threads the kernels use (the runtime's pool: the caller and threads - 1
 * workers that spin briefly between parallel loops, then sleep);
 * <= 0 = one per core. Call it between kernel calls, not during one. */
void moert_set_threads(int threads);

#ifdef __cplusplus
}
#endif

#endif /* MOERT_SESSION_H */
