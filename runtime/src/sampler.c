/*===- sampler.c - Choosing the next token --------------------------------===*/

#include "moert/sampler.h"

int32_t moert_sample_greedy(const float *logits, int32_t count) {
  int32_t best = -1;
  for (int32_t i = 0; i < count; ++i) {
    /* NaN compares false with everything: it never wins, and a NaN first
     * element must not win by default. Strict '>' keeps the first maximum. */
    if (logits[i] != logits[i]) {
      continue;
    }
    if (best < 0 || logits[i] > logits[best]) {
      best = i;
    }
  }
  return best < 0 ? 0 : best;
}
