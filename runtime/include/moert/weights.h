/*===- weights.h - A compiled model's mapped weight file ------------------===*
 *
 * Thread-safety: immutable after open; any number of sessions may share it.
 *
 *===----------------------------------------------------------------------===*/

#ifndef MOERT_WEIGHTS_H
#define MOERT_WEIGHTS_H

#include "moert/host_abi.h"
#include "moert/status.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct moert_weights_t moert_weights_t;

/* Maps the weight file at `path` and checks it belongs to `model`: magic,
 * version, data size and the data hash recorded in its header against the
 * ones compiled into the model. The data itself is not hashed (see
 * moert_weights_verify). On failure *out_weights is NULL and `error`
 * (of `error_size` bytes, may be NULL) says why, naming the file.
 * Returns IO_ERROR (cannot open or map) or FORMAT_ERROR. */
moert_status_t moert_weights_open(const char *path,
                                  const moert_model_desc_t *model,
                                  moert_weights_t **out_weights, char *error,
                                  size_t error_size);

/* Hashes the whole data region and compares it with the header: catches a
 * file corrupted after it was written. Returns FORMAT_ERROR on mismatch. */
moert_status_t moert_weights_verify(const moert_weights_t *weights, char *error,
                                    size_t error_size);

/* The data region, and its size. */
const uint8_t *moert_weights_data(const moert_weights_t *weights);
uint64_t moert_weights_size(const moert_weights_t *weights);

/* Unmaps and frees; NULL is ignored. */
void moert_weights_release(moert_weights_t *weights);

#ifdef __cplusplus
}
#endif

#endif /* MOERT_WEIGHTS_H */
