/*===- sampler.c - Choosing the next token
 * ---------------------------------===*/

#include "moert/sampler.h"

int32_t moert_sample_greedy(const float *logits, int32_t count) {
  int32_t best = 0;
  for (int32_t i = 1; i < count; ++i) {
    /* Strict '>' keeps the first maximum; NaNs never win. */
    if (logits[i] > logits[best]) {
      best = i;
    }
  }
  return best;
}
