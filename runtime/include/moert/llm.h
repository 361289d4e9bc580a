/*===- llm.h - A compiled model inside an application ---------------------===*
 *
 * The API an application uses to run a model that `moec compile
 * --emit=lib` turned into a static library: open it over its weight file,
 * tokenize text, feed tokens, sample, turn tokens back into text, free.
 * The executable's own main() (cli.c) is built on the same calls.
 *
 *   #include "kjv.h"   // written by moec: declares the model, includes this
 *   moert_llm_options options;
 *   moert_llm_options_initialize(&options);
 *   options.weights_path = "kjv.weights";
 *   moert_llm *llm;
 *   char error[512];
 *   if (kjv_open(&options, &llm, error, sizeof(error))) { puts(error); }
 *   int32_t ids[256];
 *   int32_t n = moert_llm_tokenize(llm, "And it came to pass", 19, 1, ids,
 * 256); moert_llm_feed(llm, ids, n); moert_sampler_params params;
 *   moert_llm_default_sampling(llm, &params);
 *   moert_sampler sampler;
 *   moert_sampler_init(&sampler, &params);
 *   for (int i = 0; i < 64; ++i) {
 *     int32_t next = moert_llm_sample(llm, &sampler);
 *     if (next < 0 || moert_llm_is_stop(llm, next)) break;
 *     fputs(moert_llm_token_text(llm, next, NULL), stdout);
 *     if (moert_llm_feed(llm, &next, 1)) break;   // the context is full
 *   }
 *   moert_sampler_free(&sampler);
 *   moert_llm_free(llm);
 *
 * Everything an llm owns (KV cache, arena, logits) is allocated in
 * moert_llm_open; feeding and sampling do not allocate beyond the history
 * of fed tokens the repetition penalty reads.
 *
 * Thread-safety: one thread at a time per llm. The kernels share one
 * thread pool per process (moert_llm_options.threads sets its size).
 *
 *===----------------------------------------------------------------------===*/

#ifndef MOERT_LLM_H
#define MOERT_LLM_H

#include "moert/sampler.h"
#include "moert/status.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* What moec compiled (moert/host_abi.h); the model's header names it. */
struct moert_model_desc_t;

typedef struct moert_llm moert_llm;

typedef struct moert_llm_options {
  const char *weights_path; /* the model's .weights file; required */
  int32_t context;          /* KV-cache positions; 0: the model's context */
  int32_t threads;          /* kernel threads; <= 0: one per core */
  int verify_weights;       /* hash the whole weight file once on open */
  /* 1: open the weights and the text only, to describe the model or
   * tokenize: no KV cache or arena, so a GPU model needs no GPU. Feeding
   * and sampling then fail, and the context reads as 0. */
  int no_session;
} moert_llm_options;

void moert_llm_options_initialize(moert_llm_options *options);

/* Opens `model` over options->weights_path, checking that the file belongs
 * to it and that this CPU has the instructions its kernels use. `text` (of
 * `text_size` bytes; may be empty) is the embedded tokenizer, chat format
 * and sampling defaults. On failure *out is NULL and `error` says why,
 * naming the file. The model's header wraps this as <name>_open. */
moert_status_t moert_llm_open(const struct moert_model_desc_t *model,
                              const void *text, uint64_t text_size,
                              const moert_llm_options *options, moert_llm **out,
                              char *error, size_t error_size);

/* NULL is ignored. */
void moert_llm_free(moert_llm *llm);

int32_t moert_llm_vocab(const moert_llm *llm);
/* Positions the KV cache holds, and how many are used. */
int32_t moert_llm_context(const moert_llm *llm);
int32_t moert_llm_position(const moert_llm *llm);
/* Whether the model was compiled with a tokenizer (otherwise it takes and
 * gives token ids only: tokenize and token_text fail). */
int moert_llm_has_tokenizer(const moert_llm *llm);

/* Writes the ids of text[0, length) to ids[0, capacity) and returns how many
 * the text has (more than `capacity` means: call again with more room), or
 * -1 without a tokenizer or memory. With `add_bos` the family's BOS token
 * comes first when the family starts prompts with one. Special tokens
 * written in the text (e.g. "<|endoftext|>") become their ids. */
int32_t moert_llm_tokenize(moert_llm *llm, const char *text, size_t length,
                           int add_bos, int32_t *ids, int32_t capacity);

/* Runs `count` tokens from the current position: one token through the
 * decode entry point, more through prefill. Returns OUT_OF_RANGE when they
 * do not fit in the context, INVALID_ARGUMENT for an id outside the
 * vocabulary or an llm opened with no_session (nothing is run in any of
 * these cases). */
moert_status_t moert_llm_feed(moert_llm *llm, const int32_t *ids,
                              int32_t count);

/* The logits after the last token fed: [vocab], owned by the llm; NULL
 * without a session. */
const float *moert_llm_logits(const moert_llm *llm);

/* The family's sampling defaults (from its card: e.g. greedy with a
 * repetition penalty), with `seed` 0. Greedy without a tokenizer. */
void moert_llm_default_sampling(const moert_llm *llm,
                                moert_sampler_params *params);

/* Samples the next token from the last logits with `sampler`; the
 * repetition penalty reads the tokens fed since the last reset. The token is
 * not fed. Returns -1 before anything was fed, without a session
 * (no_session) or without memory. */
int32_t moert_llm_sample(moert_llm *llm, moert_sampler *sampler);

/* Whether `id` ends a reply or a text (the family's stop tokens). */
int moert_llm_is_stop(const moert_llm *llm, int32_t id);

/* The text `id` adds to the text decoded since the last reset: bytes of a
 * character split across tokens come out with the token that completes
 * it; control tokens give "". Returns a NUL-terminated string owned by the
 * llm, valid until the next call, and its length in *length (may be NULL).
 * Without a tokenizer, or out of memory, returns "". */
const char *moert_llm_token_text(moert_llm *llm, int32_t id, size_t *length);

/* Forgets the sequence: position 0, no history, decoding starts afresh. */
void moert_llm_reset(moert_llm *llm);

/* The message of the last failure ("" if none). */
const char *moert_llm_last_error(const moert_llm *llm);

/* Lower level (moert/session.h, moert/text.h): the session, for logits of
 * every prompt token, activation dumps or benchmarks (NULL when opened with
 * no_session); the text interface
 * (NULL without a tokenizer), for the chat format. Feeding the session
 * directly bypasses the history moert_llm_sample reads. */
struct moert_session_t *moert_llm_session(moert_llm *llm);
struct moert_text_interface *moert_llm_text_interface(moert_llm *llm);

#ifdef __cplusplus
}
#endif

#endif /* MOERT_LLM_H */
