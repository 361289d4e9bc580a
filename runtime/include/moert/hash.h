/*===- hash.h - The 64-bit content hash of weight files ------------------===*
 *
 * One hash for the compiler (which writes it) and the runtime (which checks
 * it), so both link this same C implementation. Not cryptographic: it
 * detects a weight file that belongs to another compile, not an attacker.
 * About 10 GB/s; streaming, so the compiler can hash as it writes.
 *
 *===----------------------------------------------------------------------===*/

#ifndef MOERT_HASH_H
#define MOERT_HASH_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Streaming state; initialise with moert_hash_init. */
typedef struct moert_hash_t {
  uint64_t lanes[4];
  uint8_t tail[32];
  size_t tail_bytes;
  uint64_t total_bytes;
} moert_hash_t;

void moert_hash_init(moert_hash_t *state, uint64_t seed);
void moert_hash_update(moert_hash_t *state, const void *data, size_t bytes);
uint64_t moert_hash_final(const moert_hash_t *state);

/* One-shot: init, update, final. */
uint64_t moert_hash64(const void *data, size_t bytes, uint64_t seed);

#ifdef __cplusplus
}
#endif

#endif /* MOERT_HASH_H */
