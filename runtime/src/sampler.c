/*===- sampler.c - Choosing the next token --------------------------------===*/

#include "moert/sampler.h"

#include "moert/text_format.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

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

static uint64_t splitmix64(uint64_t *x) {
  uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t next_u64(moert_sampler *s) {
  uint64_t *q = s->state;
  uint64_t result = rotl(q[1] * 5, 7) * 9;
  uint64_t t = q[1] << 17;
  q[2] ^= q[0];
  q[3] ^= q[1];
  q[1] ^= q[2];
  q[0] ^= q[3];
  q[2] ^= t;
  q[3] = rotl(q[3], 45);
  return result;
}

double moert_sampler_uniform(moert_sampler *s) {
  return (double)(next_u64(s) >> 11) * (1.0 / 9007199254740992.0);
}

moert_status_t moert_sampler_init(moert_sampler *s,
                                  const moert_sampler_params *params) {
  memset(s, 0, sizeof(*s));
  s->params = *params;
  uint64_t seed = params->seed;
  for (int i = 0; i < 4; ++i) {
    s->state[i] = splitmix64(&seed);
  }
  return MOERT_STATUS_OK;
}

void moert_sampler_free(moert_sampler *s) {
  free(s->ids);
  free(s->probs);
  memset(s, 0, sizeof(*s));
}

void moert_apply_repeat_penalty(const moert_sampler_params *p, float *logits,
                                int32_t count, const int32_t *history,
                                size_t history_count) {
  if (p->repeat_form == MOERT_REPEAT_NONE || p->repeat_penalty == 1.0f ||
      p->repeat_last_n == 0) {
    return;
  }
  size_t window =
      p->repeat_last_n < 0 ? history_count : (size_t)p->repeat_last_n;
  size_t start = history_count > window ? history_count - window : 0;
  for (size_t i = start; i < history_count; ++i) {
    int32_t id = history[i];
    if (id < 0 || id >= count) {
      continue;
    }
    /* Once per distinct token: an earlier copy in the window did it. */
    int seen = 0;
    for (size_t j = start; j < i && !seen; ++j) {
      seen = history[j] == id;
    }
    if (seen) {
      continue;
    }
    if (p->repeat_form == MOERT_REPEAT_SIGN_AWARE) {
      logits[id] = logits[id] > 0 ? logits[id] / p->repeat_penalty
                                  : logits[id] * p->repeat_penalty;
    } else {
      int occurrences = 0;
      for (size_t j = i; j < history_count; ++j) {
        occurrences += history[j] == id;
      }
      logits[id] /= powf(p->repeat_penalty, (float)occurrences);
    }
  }
}

static int compare_desc(const void *a, const void *b, const float *keys) {
  float ka = keys[*(const int32_t *)a], kb = keys[*(const int32_t *)b];
  if (ka != kb) {
    return ka > kb ? -1 : 1;
  }
  return *(const int32_t *)a < *(const int32_t *)b ? -1 : 1;
}

/* Sorts ids[0, n) by descending key (ties: lower id first). A heap sort:
 * qsort has no context argument in C11. */
static void sift(int32_t *ids, size_t root, size_t n, const float *keys) {
  for (;;) {
    size_t child = 2 * root + 1;
    if (child >= n) {
      return;
    }
    /* A min-heap on the descending order puts the smallest last. */
    if (child + 1 < n && compare_desc(&ids[child + 1], &ids[child], keys) > 0) {
      ++child;
    }
    if (compare_desc(&ids[root], &ids[child], keys) >= 0) {
      return;
    }
    int32_t t = ids[root];
    ids[root] = ids[child];
    ids[child] = t;
    root = child;
  }
}

static void sort_desc(int32_t *ids, size_t n, const float *keys) {
  for (size_t i = n / 2; i-- > 0;) {
    sift(ids, i, n, keys);
  }
  for (size_t end = n; end-- > 1;) {
    int32_t t = ids[0];
    ids[0] = ids[end];
    ids[end] = t;
    sift(ids, 0, end, keys);
  }
}

/* Moves the k largest (by key) of ids[0, n) to the front, unordered: a heap
 * of the best k seen, its root the worst of them. */
static void select_top(int32_t *ids, size_t n, size_t k, const float *keys) {
  for (size_t i = k / 2; i-- > 0;) {
    sift(ids, i, k, keys);
  }
  for (size_t i = k; i < n; ++i) {
    if (compare_desc(&ids[i], &ids[0], keys) < 0) {
      ids[0] = ids[i];
      sift(ids, 0, k, keys);
    }
  }
}

int32_t moert_sampler_sample(moert_sampler *s, float *logits, int32_t count,
                             const int32_t *history, size_t history_count) {
  const moert_sampler_params *p = &s->params;
  moert_apply_repeat_penalty(p, logits, count, history, history_count);
  if (p->temperature <= 0 || count <= 1) {
    return moert_sample_greedy(logits, count);
  }
  if (s->capacity < count) {
    int32_t *ids = realloc(s->ids, (size_t)count * sizeof(int32_t));
    float *probs = realloc(s->probs, (size_t)count * sizeof(float));
    if (ids) {
      s->ids = ids;
    }
    if (probs) {
      s->probs = probs;
    }
    if (!ids || !probs) {
      return moert_sample_greedy(logits, count); /* out of memory */
    }
    s->capacity = count;
  }
  size_t n = 0;
  for (int32_t i = 0; i < count; ++i) {
    if (logits[i] == logits[i]) { /* NaN is never a candidate */
      logits[i] /= p->temperature;
      s->ids[n++] = i;
    }
  }
  if (n == 0) {
    return 0;
  }
  if (p->top_k > 0 && (size_t)p->top_k < n) {
    select_top(s->ids, n, (size_t)p->top_k, logits);
    n = (size_t)p->top_k;
  }
  sort_desc(s->ids, n, logits);
  /* Softmax over the candidates; probs[i] belongs to ids[i]. */
  float max = logits[s->ids[0]];
  double sum = 0;
  for (size_t i = 0; i < n; ++i) {
    s->probs[i] = expf(logits[s->ids[i]] - max);
    sum += s->probs[i];
  }
  for (size_t i = 0; i < n; ++i) {
    s->probs[i] = (float)(s->probs[i] / sum);
  }
  if (p->top_p < 1.0f) {
    /* The shortest prefix whose mass exceeds top_p (the first token always
     * stays). */
    double mass = 0;
    size_t keep = n;
    for (size_t i = 0; i < n; ++i) {
      mass += s->probs[i];
      if (mass > p->top_p) {
        keep = i + 1;
        break;
      }
    }
    n = keep;
  }
  if (p->min_p > 0.0f) {
    float floor = p->min_p * s->probs[0];
    size_t keep = 1;
    while (keep < n && s->probs[keep] >= floor) {
      ++keep;
    }
    n = keep;
  }
  double total = 0;
  for (size_t i = 0; i < n; ++i) {
    total += s->probs[i];
  }
  double u = moert_sampler_uniform(s) * total, acc = 0;
  for (size_t i = 0; i < n; ++i) {
    acc += s->probs[i];
    if (u < acc) {
      return s->ids[i];
    }
  }
  return s->ids[n - 1];
}
