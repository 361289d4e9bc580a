/*===- scratch.c - Kernel scratch memory kept across calls ----------------===*
 *
 * Every pointer handed to Halide is preceded by a header saying which pool
 * (if any) owns it, so a free needs no search and memory from before the
 * pool existed is returned to the system. Pooled blocks are reused first-fit
 * among free blocks no more than twice the request, so one huge block does
 * not serve every small request.
 *
 *===----------------------------------------------------------------------===*/

#include "scratch.h"

#include <stdlib.h>
#include <string.h>

/* Halide vectorises over its buffers; 128 bytes is its own alignment. */
#define MOERT_SCRATCH_ALIGN 128

/* Smaller blocks (per-tile intermediates allocated inside parallel loops,
 * often thousands per call) go to malloc, whose per-thread caches serve
 * them without a lock or a system call; a shared pool would serialise
 * them. Larger ones are what glibc serves with mmap and munmap, paying
 * fresh page faults on every call: those are pooled. */
#define MOERT_SCRATCH_POOLED_BYTES (128u * 1024u)

struct moert_scratch_block_t {
  moert_scratch_block_t *next;
  moert_scratch_t *owner; /* NULL: not pooled, freed on release */
  size_t capacity;        /* usable bytes after the header */
  int in_use;
};

/* The header occupies one alignment unit before the payload. */
_Static_assert(sizeof(moert_scratch_block_t) <= MOERT_SCRATCH_ALIGN,
               "scratch header larger than its slot");

static moert_scratch_block_t *header_of(void *pointer) {
  return (moert_scratch_block_t *)((uint8_t *)pointer - MOERT_SCRATCH_ALIGN);
}

static void *payload_of(moert_scratch_block_t *block) {
  return (uint8_t *)block + MOERT_SCRATCH_ALIGN;
}

static moert_scratch_block_t *new_block(size_t bytes) {
  size_t total = MOERT_SCRATCH_ALIGN + bytes;
  total = (total + MOERT_SCRATCH_ALIGN - 1) / MOERT_SCRATCH_ALIGN *
          MOERT_SCRATCH_ALIGN;
  moert_scratch_block_t *block = aligned_alloc(MOERT_SCRATCH_ALIGN, total);
  if (!block) {
    return NULL;
  }
  memset(block, 0, sizeof(*block));
  block->capacity = total - MOERT_SCRATCH_ALIGN;
  return block;
}

void moert_scratch_init(moert_scratch_t *scratch) {
  memset(scratch, 0, sizeof(*scratch));
  pthread_mutex_init(&scratch->lock, NULL);
}

void moert_scratch_destroy(moert_scratch_t *scratch) {
  moert_scratch_block_t *block = scratch->blocks;
  while (block) {
    moert_scratch_block_t *next = block->next;
    free(block);
    block = next;
  }
  scratch->blocks = NULL;
  scratch->bytes = 0;
  pthread_mutex_destroy(&scratch->lock);
}

/* Defined in session.c: the pool of a session. */
moert_scratch_t *moert_session_scratch(void *session);

void *moert_scratch_malloc(void *user_context, size_t bytes) {
  moert_scratch_t *pool = user_context && bytes >= MOERT_SCRATCH_POOLED_BYTES
                              ? moert_session_scratch(user_context)
                              : NULL;
  if (!pool) {
    moert_scratch_block_t *block = new_block(bytes);
    return block ? payload_of(block) : NULL;
  }
  pthread_mutex_lock(&pool->lock);
  moert_scratch_block_t *found = NULL;
  for (moert_scratch_block_t *b = pool->blocks; b; b = b->next) {
    if (!b->in_use && b->capacity >= bytes && b->capacity / 2 <= bytes) {
      found = b;
      break;
    }
  }
  if (!found) {
    found = new_block(bytes);
    if (found) {
      found->owner = pool;
      found->next = pool->blocks;
      pool->blocks = found;
      pool->bytes += found->capacity;
      ++pool->allocations;
    }
  }
  if (found) {
    found->in_use = 1;
  }
  pthread_mutex_unlock(&pool->lock);
  return found ? payload_of(found) : NULL;
}

void moert_scratch_free(void *user_context, void *pointer) {
  (void)user_context;
  if (!pointer) {
    return;
  }
  moert_scratch_block_t *block = header_of(pointer);
  moert_scratch_t *pool = block->owner;
  if (!pool) {
    free(block);
    return;
  }
  pthread_mutex_lock(&pool->lock);
  block->in_use = 0;
  pthread_mutex_unlock(&pool->lock);
}
