/*===- host_abi.h - What generated host code and the runtime share -------===*
 *
 * `moec compile` emits C host code (one function per entry point, calling
 * the model's kernels) and a model descriptor; the runtime links with it.
 * This header is the contract between the two: the descriptor, the
 * per-call execution state, and the inline helpers the generated code uses
 * to describe buffers to Halide kernels.
 *
 * KV-cache layout (f32): [layer][keys | values][kv_head][capacity][head_dim].
 * Conv-state layout (f32): [layer][conv_width - 1 slots][conv_channels]; slot
 * s of a layer holds the convolution input row of the latest position q with
 * q mod (conv_width - 1) == s, so it is a ring that never needs shifting.
 *
 * Thread-safety: a moert_exec_t belongs to one session, used by one thread
 * at a time; the descriptor is immutable.
 *
 *===----------------------------------------------------------------------===*/

#ifndef MOERT_HOST_ABI_H
#define MOERT_HOST_ABI_H

#include <stdint.h>
#include <string.h>

#include "HalideRuntime.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped whenever a struct below or the host code's expectations change. */
#define MOERT_ABI_VERSION 5

/* Receives a named intermediate (a layer's hidden state, its router's
 * choices) after the kernel that computed it: n_tokens rows of `width`
 * elements of type code (MOERT_FLOAT f32, MOERT_INT i32). */
typedef void (*moert_dump_fn)(void *context, const char *name, const void *data,
                              int32_t n_tokens, int32_t width, int32_t code);

/* What one call of an entry point reads and writes. The session owns it. */
typedef struct moert_exec_t {
  void *user_context;     /* passed to every kernel: the session */
  const uint8_t *weights; /* the weight file's data region, mapped read-only */
  uint8_t *arena;         /* the descriptor's arena_bytes of scratch */
  float *kv;              /* the KV cache, layout above */
  int32_t kv_capacity;    /* positions per layer */
  float *conv;            /* the conv state, layout above (0: none) */
  int32_t *tokens;        /* [n_tokens] token ids */
  float *logits;          /* [n_tokens, vocab] output */
  moert_dump_fn dump;     /* 0: intermediates are not reported */
  void *dump_context;
} moert_exec_t;

/* An entry point: runs n_tokens tokens starting at cache position
 * `position`. Returns 0, or the failing kernel's Halide error code (whose
 * message the session's error handler has captured). */
typedef int32_t (*moert_entry_fn)(moert_exec_t *exec, int32_t n_tokens,
                                  int32_t position);

/* The compiled model, defined by the generated host code. */
typedef struct moert_model_desc_t {
  uint32_t abi_version;      /* MOERT_ABI_VERSION of the generated code */
  const char *family;        /* e.g. "moe100m-physics" */
  const char *target;        /* e.g. "x86-64-linux-avx512" */
  const char *manifest_json; /* model, sizes, settings, build inputs */
  int64_t vocab;
  int64_t n_layers;
  int64_t n_kv_heads;
  int64_t head_dim;
  int64_t conv_channels; /* causal-conv state per layer: 0 without one */
  int64_t conv_width;
  int64_t context_length; /* default KV capacity */
  int64_t prefill_chunk;  /* most tokens one prefill call takes */
  uint64_t arena_bytes;
  uint64_t weights_bytes; /* size of the weight file's data region */
  uint64_t weights_hash;  /* must equal the weight file's header */
  moert_entry_fn prefill; /* 1..prefill_chunk tokens */
  moert_entry_fn decode;  /* exactly one token */
  /* The Halide target features of the kernels, as
   * halide_can_use_target_features() takes them (0 words: not checked). */
  int32_t halide_feature_words;
  const uint64_t *halide_features;
  /* 1 when how a sequence is split into prefill calls changes the result
   * (a routers' capacity rule applies per call): a chat then prefills the
   * whole conversation every turn, as the publisher's generate does. */
  int32_t prefill_whole_sequence;
} moert_model_desc_t;

/* Storage for one buffer descriptor of the generated code. */
typedef struct moert_buffer_t {
  halide_buffer_t buffer;
  halide_dimension_t dim[4];
} moert_buffer_t;

/* Element type codes, as halide_type_code_t. */
#define MOERT_INT 0
#define MOERT_UINT 1
#define MOERT_FLOAT 2

/* Describes a dense buffer at `host` with `rank` dimensions of extents
 * e0 (innermost) .. e3 and returns its halide_buffer_t. */
static inline halide_buffer_t *
moert_buffer(moert_buffer_t *b, void *host, int32_t code, int32_t bits,
             int32_t rank, int32_t e0, int32_t e1, int32_t e2, int32_t e3) {
  const int32_t extents[4] = {e0, e1, e2, e3};
  int32_t stride = 1;
  memset(b, 0, sizeof(*b));
  b->buffer.host = (uint8_t *)host;
  b->buffer.type.code = (halide_type_code_t)code;
  b->buffer.type.bits = (uint8_t)bits;
  b->buffer.type.lanes = 1;
  b->buffer.dimensions = rank;
  b->buffer.dim = b->dim;
  for (int32_t i = 0; i < rank; ++i) {
    b->dim[i].min = 0;
    b->dim[i].extent = extents[i];
    b->dim[i].stride = stride;
    stride *= extents[i];
  }
  return &b->buffer;
}

/* Describes keys (which = 0) or values (which = 1) of one layer of the KV
 * cache, positions [min_pos, min_pos + n_pos), as a buffer of extents
 * {head_dim, n_pos, kv_heads} whose position dimension starts at min_pos. */
static inline halide_buffer_t *
moert_kv_buffer(moert_buffer_t *b, moert_exec_t *exec, int32_t layer,
                int32_t which, int32_t kv_heads, int32_t head_dim,
                int32_t min_pos, int32_t n_pos) {
  const int64_t per_head = (int64_t)exec->kv_capacity * head_dim;
  float *base = exec->kv + ((int64_t)layer * 2 + which) * kv_heads * per_head;
  memset(b, 0, sizeof(*b));
  /* host points at the element at the min coordinates. */
  b->buffer.host = (uint8_t *)(base + (int64_t)min_pos * head_dim);
  b->buffer.type.code = (halide_type_code_t)MOERT_FLOAT;
  b->buffer.type.bits = 32;
  b->buffer.type.lanes = 1;
  b->buffer.dimensions = 3;
  b->buffer.dim = b->dim;
  b->dim[0].min = 0;
  b->dim[0].extent = head_dim;
  b->dim[0].stride = 1;
  b->dim[1].min = min_pos;
  b->dim[1].extent = n_pos;
  b->dim[1].stride = head_dim;
  b->dim[2].min = 0;
  b->dim[2].extent = kv_heads;
  b->dim[2].stride = (int32_t)per_head;
  return &b->buffer;
}

/* Describes the conv-state ring of one layer as a buffer of extents
 * {channels, slots}. */
static inline halide_buffer_t *
moert_conv_buffer(moert_buffer_t *b, moert_exec_t *exec, int32_t layer,
                  int32_t channels, int32_t slots) {
  float *ring = exec->conv + (int64_t)layer * slots * channels;
  return moert_buffer(b, ring, MOERT_FLOAT, 32, 2, channels, slots, 1, 1);
}

/* Halide buffers hold non-const pointers; kernels only read their inputs,
 * so the mapping stays read-only in practice. */
static inline uint8_t *moert_weight_at(moert_exec_t *exec, int64_t offset) {
  return (uint8_t *)(uintptr_t)(exec->weights + offset);
}

static inline uint8_t *moert_arena_at(moert_exec_t *exec, int64_t offset) {
  return exec->arena + offset;
}

static inline int32_t *moert_tokens_at(moert_exec_t *exec) {
  return exec->tokens;
}

static inline float *moert_logits_at(moert_exec_t *exec) {
  return exec->logits;
}

static inline int32_t moert_kv_capacity(moert_exec_t *exec) {
  return exec->kv_capacity;
}

static inline void *moert_user_context(moert_exec_t *exec) {
  return exec->user_context;
}

/* Reports a named intermediate to the session's dump hook, if any. */
static inline void moert_dump(moert_exec_t *exec, const char *name,
                              const void *data, int32_t n_tokens, int32_t width,
                              int32_t code) {
  if (exec->dump) {
    exec->dump(exec->dump_context, name, data, n_tokens, width, code);
  }
}

/* Returns a kernel's non-zero status from the calling entry point. */
#define MOERT_CHECK(status)                                                    \
  do {                                                                         \
    if ((status) != 0) {                                                       \
      return (status);                                                         \
    }                                                                          \
  } while (0)

#ifdef __cplusplus
}
#endif

#endif /* MOERT_HOST_ABI_H */
