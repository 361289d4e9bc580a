/*===- sampler.h - Choosing the next token --------------------------------===*
 *
 * The order of Hugging Face's generate (and of the seed families' own
 * samplers): repetition penalty, temperature, top-k, top-p, min-p, then a
 * draw from what is left. Temperature 0 is greedy (after the penalty). The
 * generator is seeded, so a seed reproduces a text.
 *
 *===----------------------------------------------------------------------===*/

#ifndef MOERT_SAMPLER_H
#define MOERT_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

#include "moert/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct moert_sampler_params {
  float temperature;     /* <= 0: greedy */
  int32_t top_k;         /* <= 0: every token */
  float top_p;           /* >= 1: off */
  float min_p;           /* <= 0: off */
  float repeat_penalty;  /* 1: off */
  int32_t repeat_form;   /* moert_repeat_form (moert/text_format.h) */
  int32_t repeat_last_n; /* the window of past tokens; -1: all of them */
  uint64_t seed;
} moert_sampler_params;

typedef struct moert_sampler {
  moert_sampler_params params;
  uint64_t state[4]; /* xoshiro256** */
  /* Scratch for the candidates, grown to the vocabulary. */
  int32_t *ids;
  float *probs;
  int32_t capacity;
} moert_sampler;

/* The index of the largest of `count` logits; the first on ties. */
int32_t moert_sample_greedy(const float *logits, int32_t count);

moert_status_t moert_sampler_init(moert_sampler *sampler,
                                  const moert_sampler_params *params);
void moert_sampler_free(moert_sampler *sampler);

/* Applies the repetition penalty of `params` to `logits` in place, from the
 * last repeat_last_n tokens of history[0, history_count). */
void moert_apply_repeat_penalty(const moert_sampler_params *params,
                                float *logits, int32_t count,
                                const int32_t *history, size_t history_count);

/* The next token. `logits` is modified (penalty, temperature). */
int32_t moert_sampler_sample(moert_sampler *sampler, float *logits,
                             int32_t count, const int32_t *history,
                             size_t history_count);

/* A uniform draw in [0, 1) from the sampler's generator. */
double moert_sampler_uniform(moert_sampler *sampler);

#ifdef __cplusplus
}
#endif

#endif /* MOERT_SAMPLER_H */
