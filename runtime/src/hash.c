/*===- hash.c - The 64-bit content hash of weight files ------------------===*
 *
 * Four independent lanes of multiply-rotate mixing over 8-byte words (so
 * the CPU overlaps them), folded and finalised with a murmur-style
 * avalanche. Streaming and one-shot give the same value for the same bytes.
 *
 *===----------------------------------------------------------------------===*/

#include "moert/hash.h"

#include <string.h>

static const uint64_t kPrime1 = 0x9E3779B185EBCA87ull;
static const uint64_t kPrime2 = 0xC2B2AE3D27D4EB4Full;
static const uint64_t kPrime3 = 0x165667B19E3779F9ull;

static uint64_t rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

static uint64_t load64(const uint8_t *p) {
  uint64_t v;
  memcpy(&v, p, sizeof v);
  return v;
}

static uint64_t mix(uint64_t lane, uint64_t word) {
  lane += word * kPrime2;
  lane = rotl(lane, 31);
  return lane * kPrime1;
}

static void block(moert_hash_t *s, const uint8_t *p) {
  for (int i = 0; i < 4; ++i) {
    s->lanes[i] = mix(s->lanes[i], load64(p + 8 * i));
  }
}

void moert_hash_init(moert_hash_t *state, uint64_t seed) {
  memset(state, 0, sizeof(*state));
  state->lanes[0] = seed + kPrime1 + kPrime2;
  state->lanes[1] = seed + kPrime2;
  state->lanes[2] = seed;
  state->lanes[3] = seed - kPrime1;
}

void moert_hash_update(moert_hash_t *state, const void *data, size_t bytes) {
  const uint8_t *p = (const uint8_t *)data;
  state->total_bytes += bytes;
  if (state->tail_bytes) {
    size_t take = 32 - state->tail_bytes;
    if (take > bytes) {
      take = bytes;
    }
    memcpy(state->tail + state->tail_bytes, p, take);
    state->tail_bytes += take;
    p += take;
    bytes -= take;
    if (state->tail_bytes < 32) {
      return;
    }
    block(state, state->tail);
    state->tail_bytes = 0;
  }
  while (bytes >= 32) {
    block(state, p);
    p += 32;
    bytes -= 32;
  }
  memcpy(state->tail, p, bytes);
  state->tail_bytes = bytes;
}

uint64_t moert_hash_final(const moert_hash_t *state) {
  uint64_t h = rotl(state->lanes[0], 1) + rotl(state->lanes[1], 7) +
               rotl(state->lanes[2], 12) + rotl(state->lanes[3], 18);
  h ^= state->total_bytes * kPrime3;
  for (size_t i = 0; i < state->tail_bytes; ++i) {
    h ^= state->tail[i] * kPrime3;
    h = rotl(h, 11) * kPrime1;
  }
  h ^= h >> 33;
  h *= kPrime2;
  h ^= h >> 29;
  h *= kPrime3;
  h ^= h >> 32;
  return h;
}

uint64_t moert_hash64(const void *data, size_t bytes, uint64_t seed) {
  moert_hash_t state;
  moert_hash_init(&state, seed);
  moert_hash_update(&state, data, bytes);
  return moert_hash_final(&state);
}
