/*===- weights_format.h - The compiled model's weight file ---------------===*
 *
 * `moec compile` writes a model's weights next to the executable
 * (<exe>.weights), as the kernels want them (f32, each in its planned
 * layout, at its planned offset). The executable maps it read-only.
 *
 *   [0, 4096)            moert_weights_header_t, zero padded
 *   [4096, 4096 + data)  the data region; weights at 64-byte aligned offsets
 *
 * The header's data_hash (moert_hash64 of the data region) must equal the
 * hash compiled into the executable, so an executable never runs with the
 * weights of another compile. All fields are little-endian.
 *
 *===----------------------------------------------------------------------===*/

#ifndef MOERT_WEIGHTS_FORMAT_H
#define MOERT_WEIGHTS_FORMAT_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MOERT_WEIGHTS_MAGIC "MOEWGHTS"
#define MOERT_WEIGHTS_VERSION 1u
#define MOERT_WEIGHTS_DATA_OFFSET 4096u

typedef struct moert_weights_header_t {
  char magic[8];        /* MOERT_WEIGHTS_MAGIC, not NUL terminated */
  uint32_t version;     /* MOERT_WEIGHTS_VERSION */
  uint32_t data_offset; /* MOERT_WEIGHTS_DATA_OFFSET */
  uint64_t data_bytes;  /* size of the data region */
  uint64_t data_hash;   /* moert_hash64 of the data region, seed 0 */
  char family[64];      /* NUL-terminated, for messages */
} moert_weights_header_t;

#ifdef __cplusplus
}
#endif

#endif /* MOERT_WEIGHTS_FORMAT_H */
