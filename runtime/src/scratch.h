/*===- scratch.h - Kernel scratch memory kept across calls ----------------===*
 *
 * Private to the runtime. Halide kernels allocate the intermediates they
 * materialise through halide_malloc on every call; for large blocks glibc
 * answers with mmap and munmap, so every token paid fresh page faults. The
 * session installs these functions as Halide's allocator: a large block
 * freed by a kernel stays in its session's pool and serves the next call
 * that needs no more than it holds, so after the first tokens no call maps
 * fresh memory. Small blocks go to malloc's thread caches.
 *
 * Thread-safety: kernels allocate from Halide's worker threads with the
 * session as user context; the pool is guarded by a mutex.
 *
 *===----------------------------------------------------------------------===*/

#ifndef MOERT_SRC_SCRATCH_H
#define MOERT_SRC_SCRATCH_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

typedef struct moert_scratch_block_t moert_scratch_block_t;

typedef struct moert_scratch_t {
  pthread_mutex_t lock;
  moert_scratch_block_t *blocks;
  uint64_t bytes;       /* held by the pool */
  uint64_t allocations; /* blocks ever created */
} moert_scratch_t;

void moert_scratch_init(moert_scratch_t *scratch);
/* Frees every block; no kernel may be running. */
void moert_scratch_destroy(moert_scratch_t *scratch);

/* Halide's allocator hooks; `user_context` is a moert_session_t, whose
 * pool is found with moert_session_scratch (session.c). A NULL context
 * (Halide's own runtime) gets plain aligned memory. */
void *moert_scratch_malloc(void *user_context, size_t bytes);
void moert_scratch_free(void *user_context, void *pointer);

#endif /* MOERT_SRC_SCRATCH_H */
