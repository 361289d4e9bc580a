/*===- sampler.h - Choosing the next token --------------------------------===*/

#ifndef MOERT_SAMPLER_H
#define MOERT_SAMPLER_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The index of the largest of `count` logits; the first on ties. */
int32_t moert_sample_greedy(const float *logits, int32_t count);

#ifdef __cplusplus
}
#endif

#endif /* MOERT_SAMPLER_H */
