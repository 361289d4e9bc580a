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
 * A GPU model's kernels run on the device and every region stays there
 * (see the regions below); the host code is the same.
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
#define MOERT_ABI_VERSION 7

/* Receives a named intermediate (a layer's hidden state, its router's
 * choices) after the kernel that computed it: n_tokens rows of `width`
 * elements of type code (MOERT_FLOAT f32, MOERT_INT i32). */
typedef void (*moert_dump_fn)(void *context, const char *name, const void *data,
                              int32_t n_tokens, int32_t width, int32_t code);

/* The memory the kernels read and write, in regions. On the CPU each is
 * host memory; a GPU model keeps every one on the device for the whole
 * session (the weights are copied there once), and the session copies
 * tokens in and logits out around each call. */
enum {
  MOERT_REGION_WEIGHTS = 0, /* the weight file's data region */
  MOERT_REGION_ARENA,       /* the descriptor's arena_bytes of scratch */
  MOERT_REGION_KV,          /* the KV cache, layout above */
  MOERT_REGION_CONV,        /* the conv state, layout above */
  MOERT_REGION_TOKENS,      /* [prefill_chunk] token ids */
  MOERT_REGION_LOGITS,      /* [prefill_chunk, vocab] output */
  MOERT_REGION_COUNT
};

/* What one call of an entry point reads and writes. The session owns it. */
typedef struct moert_exec_t {
  void *user_context; /* passed to every kernel: the session */
  /* Each region's host memory (the weights mapped read-only); NULL for
   * all but tokens and logits when the kernels run on a GPU. */
  uint8_t *host[MOERT_REGION_COUNT];
  /* A GPU model: the Halide device interface of its kernels, and each
   * region's device address (a CUDA device pointer), at which a byte
   * offset addresses the same byte as on the host. NULL on the CPU. */
  const struct halide_device_interface_t *device_interface;
  uint64_t device[MOERT_REGION_COUNT];
  int32_t kv_capacity; /* positions per layer */
  moert_dump_fn dump;  /* 0: intermediates are not reported */
  void *dump_context;
  /* A GPU model's dumps: copies `bytes` of a region from `offset` to host
   * memory the session owns and returns it (NULL on failure). */
  const void *(*fetch)(struct moert_exec_t *exec, int32_t region,
                       int64_t offset, int64_t bytes);
  /* 1: the caller reads only the last token's logits, so the head runs on
   * the last token alone (moert_logits_rows); 0: every token's. */
  int32_t logits_last_only;
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
  /* A GPU model: the Halide device interface its kernels run through
   * (e.g. halide_cuda_device_interface), and the API's name for messages
   * ("CUDA"); 0 for the CPU. */
  const struct halide_device_interface_t *(*device_interface)(void);
  const char *device_api;
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

/* Where a buffer's data is: a byte offset into a region, resolved to its
 * host address and, for a GPU model, its device address. */
typedef struct moert_ref_t {
  uint8_t *host;
  uint64_t device;
  const struct halide_device_interface_t *device_interface;
  int32_t region;
  int64_t offset;
} moert_ref_t;

static inline moert_ref_t moert_region_at(moert_exec_t *exec, int32_t region,
                                          int64_t offset) {
  moert_ref_t ref;
  ref.host = exec->host[region] ? exec->host[region] + offset : NULL;
  ref.device_interface = exec->device_interface;
  ref.device = exec->device_interface ? exec->device[region] + offset : 0;
  ref.region = region;
  ref.offset = offset;
  return ref;
}

/* Halide buffers hold non-const pointers; kernels only read their inputs,
 * so the weights' mapping stays read-only in practice. */
static inline moert_ref_t moert_weight_at(moert_exec_t *exec, int64_t offset) {
  return moert_region_at(exec, MOERT_REGION_WEIGHTS, offset);
}

static inline moert_ref_t moert_arena_at(moert_exec_t *exec, int64_t offset) {
  return moert_region_at(exec, MOERT_REGION_ARENA, offset);
}

static inline moert_ref_t moert_tokens_at(moert_exec_t *exec) {
  return moert_region_at(exec, MOERT_REGION_TOKENS, 0);
}

static inline moert_ref_t moert_logits_at(moert_exec_t *exec) {
  return moert_region_at(exec, MOERT_REGION_LOGITS, 0);
}

/* How many of a call's n_tokens rows of logits to compute: the last alone
 * when the session reads only those (exec->logits_last_only). */
static inline int32_t moert_logits_rows(const moert_exec_t *exec,
                                        int32_t n_tokens) {
  return exec->logits_last_only && n_tokens > 1 ? 1 : n_tokens;
}

/* `ref` moved to the first of the last `rows` of `n_rows` rows of
 * `row_bytes` each (on the host and, for a GPU model, the device). */
static inline moert_ref_t moert_ref_last_rows(moert_ref_t ref, int32_t n_rows,
                                              int32_t rows, int64_t row_bytes) {
  int64_t skip = (int64_t)(n_rows - rows) * row_bytes;
  if (ref.host) {
    ref.host += skip;
  }
  if (ref.device) {
    ref.device += (uint64_t)skip;
  }
  ref.offset += skip;
  return ref;
}

/* Points `b` at `ref`: the host address, and on a GPU the device address,
 * valid and not dirty (the kernels neither copy it in nor out). */
static inline void moert_buffer_at(halide_buffer_t *b, moert_ref_t ref) {
  b->host = ref.device_interface ? NULL : ref.host;
  b->device = ref.device;
  b->device_interface = ref.device_interface;
}

/* Describes a dense buffer at `ref` with `rank` dimensions of extents
 * e0 (innermost) .. e3 and returns its halide_buffer_t. */
static inline halide_buffer_t *
moert_buffer(moert_buffer_t *b, moert_ref_t ref, int32_t code, int32_t bits,
             int32_t rank, int32_t e0, int32_t e1, int32_t e2, int32_t e3) {
  const int32_t extents[4] = {e0, e1, e2, e3};
  int32_t stride = 1;
  memset(b, 0, sizeof(*b));
  moert_buffer_at(&b->buffer, ref);
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
  int64_t first = ((int64_t)layer * 2 + which) * kv_heads * per_head +
                  (int64_t)min_pos * head_dim;
  memset(b, 0, sizeof(*b));
  /* The buffer's address is that of the element at its min coordinates. */
  moert_buffer_at(&b->buffer, moert_region_at(exec, MOERT_REGION_KV,
                                              first * (int64_t)sizeof(float)));
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
  int64_t offset = (int64_t)layer * slots * channels * (int64_t)sizeof(float);
  return moert_buffer(b, moert_region_at(exec, MOERT_REGION_CONV, offset),
                      MOERT_FLOAT, 32, 2, channels, slots, 1, 1);
}

static inline int32_t moert_kv_capacity(moert_exec_t *exec) {
  return exec->kv_capacity;
}

static inline void *moert_user_context(moert_exec_t *exec) {
  return exec->user_context;
}

/* Reports a named intermediate at `ref` to the session's dump hook, if
 * any: from the device through the session's fetch for a GPU model. */
static inline void moert_dump(moert_exec_t *exec, const char *name,
                              moert_ref_t ref, int32_t n_tokens, int32_t width,
                              int32_t code) {
  if (!exec->dump) {
    return;
  }
  const void *data = ref.host;
  if (ref.device_interface) {
    data = exec->fetch(exec, ref.region, ref.offset,
                       (int64_t)n_tokens * width * 4);
  }
  if (data) {
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
