/*===- session.c - One sequence being run through a compiled model --------===*
 *
 * Everything is allocated in moert_session_create, sized from the model
 * descriptor: the KV cache for `context` positions, the arena the compiler
 * planned, a [prefill_chunk, vocab] logits scratch and the last token's
 * logits. Running tokens only fills them.
 *
 * A GPU model (moert_model_desc_t.device_interface) gets each of those
 * regions on the device instead, allocated once; the weights are copied
 * there once, and each call copies its tokens in and its logits out.
 * Nothing else crosses between host and device.
 *
 * Kernel errors: every kernel gets the session as its Halide user_context,
 * and the process-wide Halide error handler installed here copies the
 * first message of a call into that session's error buffer instead of
 * aborting (the first says why; later ones are consequences).
 *
 *===----------------------------------------------------------------------===*/

#define _GNU_SOURCE /* MAP_ANONYMOUS */

#include "moert/session.h"

#include "memory.h"
#include "scratch.h"
#include "thread_pool.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#endif

struct moert_session_t {
  const moert_model_desc_t *model;
  moert_exec_t exec;
  int32_t position;
  int32_t context;
  float *scratch_logits; /* [prefill_chunk, vocab] */
  float *last_logits;    /* [vocab] */
  uint64_t bytes;
  /* Bytes mapped for each host region (zeroed_pages), and for the logits
   * scratch: what release_pages unmaps. */
  uint64_t host_bytes[MOERT_REGION_COUNT];
  uint64_t scratch_logits_bytes;
  moert_scratch_t scratch; /* the kernels' intermediates, kept across calls */
  /* A GPU model: the device allocation of each region (2-d, so that one
   * can exceed 2 GiB), and host memory for moert_exec_t.fetch. */
  const struct halide_device_interface_t *device;
  moert_buffer_t region[MOERT_REGION_COUNT];
  uint8_t *fetched;
  size_t fetched_bytes;
  char error[1024];
};

moert_scratch_t *moert_session_scratch(void *session) {
  return &((moert_session_t *)session)->scratch;
}

static void session_error(moert_session_t *session, const char *format, ...) {
  va_list args;
  va_start(args, format);
  vsnprintf(session->error, sizeof(session->error), format, args);
  va_end(args);
}

/* Halide calls this on a kernel failure, with the session as context. */
static void moert_on_halide_error(void *user_context, const char *message) {
  moert_session_t *session = (moert_session_t *)user_context;
  if (session && session->error[0] == '\0') {
    size_t n = strlen(message);
    while (n > 0 && (message[n - 1] == '\n' || message[n - 1] == ' ')) {
      --n;
    }
    if (n >= sizeof(session->error)) {
      n = sizeof(session->error) - 1;
    }
    memcpy(session->error, message, n);
    session->error[n] = '\0';
  }
}

/* Halide's own prints (its profiler's report, debug runtimes) go to
 * stderr: stdout carries the executable's tokens and text. */
static void moert_on_halide_print(void *user_context, const char *message) {
  (void)user_context;
  fputs(message, stderr);
}

static void *aligned_zeroed(size_t bytes) {
  size_t rounded = (bytes + 63) / 64 * 64;
  if (rounded == 0) {
    rounded = 64;
  }
  void *p = aligned_alloc(64, rounded);
  if (p) {
    memset(p, 0, rounded);
  }
  return p;
}

/* Zeroed memory for a large region, as the kernel's zero pages: a page
 * costs nothing until a kernel writes it, so a session holds the part of
 * its KV cache and logits scratch that its tokens filled. (A memset of
 * every region made session creation touch all of it: a short run of a
 * model with a long context paid for the whole KV cache in time and
 * resident memory.) check_fits has already made sure all of it would fit.
 * NULL when the mapping fails. */
static void *zeroed_pages(uint64_t bytes) {
  if (bytes == 0) {
    return NULL;
  }
  void *p = mmap(NULL, (size_t)bytes, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  return p == MAP_FAILED ? NULL : p;
}

static void release_pages(void *p, uint64_t bytes) {
  if (p) {
    munmap(p, (size_t)bytes);
  }
}

/* Refuses a session whose host memory would not fit, before allocating it:
 * with overcommit the allocation would succeed and the process be killed
 * when the KV cache fills. Says what needs what, and what to lower. */
static moert_status_t check_fits(const moert_session_t *session,
                                 const uint64_t *bytes, size_t last_bytes,
                                 const moert_session_options_t *options) {
  uint64_t need = bytes[MOERT_REGION_ARENA] + bytes[MOERT_REGION_KV] +
                  bytes[MOERT_REGION_CONV] + bytes[MOERT_REGION_TOKENS] +
                  bytes[MOERT_REGION_LOGITS] + last_bytes;
  const char *bound = "";
  uint64_t available = moert_memory_available(&bound);
  if (need <= available) {
    return MOERT_STATUS_OK;
  }
  if (options && options->error && options->error_size) {
    const double mib = 1024.0 * 1024.0;
    snprintf(options->error, options->error_size,
             "the session needs %.1f MiB (KV cache %.1f MiB for a context of "
             "%d tokens, arena %.1f MiB, logits %.1f MiB) and %s leaves %.1f "
             "MiB: lower -c/--ctx-size",
             need / mib, bytes[MOERT_REGION_KV] / mib, session->context,
             bytes[MOERT_REGION_ARENA] / mib,
             (bytes[MOERT_REGION_LOGITS] + last_bytes) / mib, bound,
             available / mib);
  }
  return MOERT_STATUS_OUT_OF_MEMORY;
}

/* Bytes per row of a region's 2-d device allocation. */
#define MOERT_REGION_ROW 4096

/* Allocates region `r` of `bytes` on the session's device. */
static int device_alloc(moert_session_t *session, int32_t r, uint64_t bytes) {
  uint64_t rows = (bytes + MOERT_REGION_ROW - 1) / MOERT_REGION_ROW;
  if (rows == 0) {
    rows = 1;
  }
  if (rows > INT32_MAX) {
    session_error(session, "%llu bytes do not fit one device allocation",
                  (unsigned long long)bytes);
    return -1;
  }
  moert_ref_t none;
  memset(&none, 0, sizeof(none));
  halide_buffer_t *b = moert_buffer(&session->region[r], none, MOERT_UINT, 8, 2,
                                    MOERT_REGION_ROW, (int32_t)rows, 1, 1);
  int rc = halide_device_malloc(session, b, session->device);
  session->exec.device[r] = b->device;
  return rc;
}

/* Copies `bytes` between host memory `host` and region `r` of the device
 * from byte `offset`: in whole rows, then the rest, each as a dense
 * buffer whose device address is the region's plus its offset. */
static int device_copy(moert_session_t *session, int32_t r, uint64_t offset,
                       void *host, uint64_t bytes, int to_device) {
  uint64_t rows = bytes / MOERT_REGION_ROW;
  uint64_t done = rows * MOERT_REGION_ROW;
  struct {
    uint64_t at, count;
    int32_t e0, e1, rank;
  } parts[2] = {{0, done, MOERT_REGION_ROW, (int32_t)rows, 2},
                {done, bytes - done, (int32_t)(bytes - done), 1, 1}};
  for (int i = 0; i < 2; ++i) {
    if (parts[i].count == 0) {
      continue;
    }
    moert_buffer_t storage;
    moert_ref_t ref =
        moert_region_at(&session->exec, r, (int64_t)(offset + parts[i].at));
    halide_buffer_t *b =
        moert_buffer(&storage, ref, MOERT_UINT, 8, parts[i].rank, parts[i].e0,
                     parts[i].e1, 1, 1);
    b->host = (uint8_t *)host + parts[i].at;
    int rc;
    if (to_device) {
      b->flags = halide_buffer_flag_host_dirty;
      rc = halide_copy_to_device(session, b, session->device);
    } else {
      b->flags = halide_buffer_flag_device_dirty;
      rc = halide_copy_to_host(session, b);
    }
    if (rc != 0) {
      return rc;
    }
  }
  return 0;
}

/* Zeroes `bytes` of region `r` (the KV cache, the conv state: a new
 * session reads as the CPU one, all zeros). */
static int device_zero(moert_session_t *session, int32_t r, uint64_t bytes) {
  enum { kChunk = 1 << 20 };
  void *zeros = calloc(1, kChunk);
  if (!zeros) {
    return -1;
  }
  int rc = 0;
  for (uint64_t at = 0; at < bytes && rc == 0; at += kChunk) {
    uint64_t n = bytes - at < kChunk ? bytes - at : kChunk;
    rc = device_copy(session, r, at, zeros, n, /*to_device=*/1);
  }
  free(zeros);
  return rc;
}

/* moert_exec_t.fetch: a GPU model's intermediate, copied to the host for
 * a dump hook (a debugging aid, so it may allocate). */
static const void *fetch_from_device(moert_exec_t *exec, int32_t region,
                                     int64_t offset, int64_t bytes) {
  moert_session_t *session = (moert_session_t *)exec->user_context;
  if (bytes <= 0) {
    return NULL;
  }
  if ((size_t)bytes > session->fetched_bytes) {
    uint8_t *grown = realloc(session->fetched, (size_t)bytes);
    if (!grown) {
      return NULL;
    }
    session->fetched = grown;
    session->fetched_bytes = (size_t)bytes;
  }
  if (device_copy(session, region, (uint64_t)offset, session->fetched,
                  (uint64_t)bytes, /*to_device=*/0) != 0) {
    return NULL;
  }
  return session->fetched;
}

/* Halide's CUDA runtime opens "libcuda.so", a name that only the CUDA
 * toolkit's development files (or some driver packages) provide; every
 * driver installs its ABI name, "libcuda.so.1", which is tried first. */
static void *load_library(const char *name) {
  if (strcmp(name, "libcuda.so") == 0) {
    void *lib = halide_default_load_library("libcuda.so.1");
    if (lib) {
      return lib;
    }
  }
  return halide_default_load_library(name);
}

/* Puts every region of a GPU model on its device. */
static moert_status_t device_open(moert_session_t *session,
                                  const moert_weights_t *weights,
                                  const uint64_t bytes[MOERT_REGION_COUNT]) {
  const moert_model_desc_t *model = session->model;
  halide_set_custom_load_library(load_library);
  session->device = model->device_interface();
  session->exec.device_interface = session->device;
  session->exec.fetch = fetch_from_device;
  /* Intermediates the kernels allocate are reused across calls, unless
   * MOERT_DEVICE_REUSE=0 (a debugging switch: the device kit reruns a
   * failing model with it to tell a reuse fault from a kernel's). */
  const char *reuse = getenv("MOERT_DEVICE_REUSE");
  halide_reuse_device_allocations(session, !(reuse && !strcmp(reuse, "0")));
  for (int32_t r = 0; r < MOERT_REGION_COUNT; ++r) {
    if (device_alloc(session, r, bytes[r]) != 0) {
      return MOERT_STATUS_NO_DEVICE;
    }
  }
  void *data = (void *)(uintptr_t)moert_weights_data(weights);
  if (device_copy(session, MOERT_REGION_WEIGHTS, 0, data, model->weights_bytes,
                  /*to_device=*/1) != 0 ||
      device_zero(session, MOERT_REGION_KV, bytes[MOERT_REGION_KV]) != 0 ||
      device_zero(session, MOERT_REGION_CONV, bytes[MOERT_REGION_CONV]) != 0) {
    return MOERT_STATUS_NO_DEVICE;
  }
  return MOERT_STATUS_OK;
}

void moert_session_options_initialize(moert_session_options_t *options) {
  memset(options, 0, sizeof(*options));
}

/* Whether the model's kernels use feature `f` (HalideRuntime.h's enum). */
static int uses_feature(const moert_model_desc_t *model, int f) {
  return f / 64 < model->halide_feature_words &&
         ((model->halide_features[f / 64] >> (f % 64)) & 1);
}

int moert_model_runs_here(const moert_model_desc_t *model) {
#if defined(__aarch64__) && defined(__linux__)
  /* Halide 14's run-time check knows no AArch64 feature: the kernel's dot
   * products (sdot) are checked here, from the kernel's own report. */
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
  if (uses_feature(model, halide_target_feature_arm_dot_prod) &&
      !(getauxval(AT_HWCAP) & HWCAP_ASIMDDP)) {
    return 0;
  }
#else
  (void)uses_feature;
#endif
  return model->halide_feature_words <= 0 ||
         halide_can_use_target_features(model->halide_feature_words,
                                        model->halide_features);
}

moert_status_t moert_session_create(const moert_model_desc_t *model,
                                    const moert_weights_t *weights,
                                    const moert_session_options_t *options,
                                    moert_session_t **out_session) {
  if (!out_session) {
    return MOERT_STATUS_INVALID_ARGUMENT;
  }
  *out_session = NULL;
  if (!model || !weights || model->abi_version != MOERT_ABI_VERSION ||
      model->vocab <= 0 || model->prefill_chunk <= 0) {
    return MOERT_STATUS_INVALID_ARGUMENT;
  }
  if (!moert_model_runs_here(model)) {
    return MOERT_STATUS_UNSUPPORTED_CPU;
  }
  int64_t context = options && options->context > 0 ? options->context
                                                    : model->context_length;
  if (context <= 0 || context > (1 << 24)) {
    return MOERT_STATUS_INVALID_ARGUMENT;
  }
  halide_set_error_handler(moert_on_halide_error);
  halide_set_custom_print(moert_on_halide_print);
  halide_set_custom_malloc(moert_scratch_malloc);
  halide_set_custom_free(moert_scratch_free);

  moert_session_t *session = calloc(1, sizeof(*session));
  if (!session) {
    return MOERT_STATUS_OUT_OF_MEMORY;
  }
  session->model = model;
  session->context = (int32_t)context;
  moert_scratch_init(&session->scratch);
  uint64_t bytes[MOERT_REGION_COUNT];
  bytes[MOERT_REGION_WEIGHTS] = model->weights_bytes;
  bytes[MOERT_REGION_ARENA] = model->arena_bytes;
  bytes[MOERT_REGION_KV] = (uint64_t)model->n_layers * 2 *
                           (uint64_t)model->n_kv_heads * (uint64_t)context *
                           (uint64_t)model->head_dim * sizeof(float);
  bytes[MOERT_REGION_CONV] =
      model->conv_width > 1
          ? (uint64_t)model->n_layers * (uint64_t)(model->conv_width - 1) *
                (uint64_t)model->conv_channels * sizeof(float)
          : 0;
  bytes[MOERT_REGION_TOKENS] = (uint64_t)model->prefill_chunk * sizeof(int32_t);
  bytes[MOERT_REGION_LOGITS] =
      (uint64_t)model->prefill_chunk * (uint64_t)model->vocab * sizeof(float);
  size_t last_bytes = (size_t)model->vocab * sizeof(float);
  /* The host keeps the tokens and the logits scratch; on the CPU also the
   * arena, KV cache and conv state. */
  int on_device = model->device_interface != 0;
  if (!on_device) {
    moert_status_t fits = check_fits(session, bytes, last_bytes, options);
    if (fits != MOERT_STATUS_OK) {
      moert_session_release(session);
      return fits;
    }
  }
  moert_exec_t *exec = &session->exec;
  exec->user_context = session;
  exec->kv_capacity = (int32_t)context;
  exec->host[MOERT_REGION_TOKENS] = aligned_zeroed(bytes[MOERT_REGION_TOKENS]);
  session->scratch_logits = zeroed_pages(bytes[MOERT_REGION_LOGITS]);
  session->scratch_logits_bytes = bytes[MOERT_REGION_LOGITS];
  session->last_logits = aligned_zeroed(last_bytes);
  session->bytes =
      bytes[MOERT_REGION_TOKENS] + bytes[MOERT_REGION_LOGITS] + last_bytes;
  int ok = exec->host[MOERT_REGION_TOKENS] && session->scratch_logits &&
           session->last_logits;
  if (!on_device) {
    exec->host[MOERT_REGION_WEIGHTS] =
        (uint8_t *)(uintptr_t)moert_weights_data(weights);
    for (int32_t r = MOERT_REGION_ARENA; r <= MOERT_REGION_CONV; ++r) {
      /* Zeroed, though never read before written: positions below 0 read
       * as zeros in the kernel, so a reset needs no clearing. */
      exec->host[r] = zeroed_pages(bytes[r]);
      session->host_bytes[r] = bytes[r];
      ok = ok && (exec->host[r] || !bytes[r]);
      session->bytes += bytes[r];
    }
  }
  if (!ok) {
    moert_session_release(session);
    return MOERT_STATUS_OUT_OF_MEMORY;
  }
  if (on_device) {
    /* What the session holds on the device besides the weights. */
    session->bytes += bytes[MOERT_REGION_ARENA] + bytes[MOERT_REGION_KV] +
                      bytes[MOERT_REGION_CONV] + bytes[MOERT_REGION_TOKENS] +
                      bytes[MOERT_REGION_LOGITS];
    moert_status_t status = device_open(session, weights, bytes);
    if (status != MOERT_STATUS_OK) {
      if (options && options->error && options->error_size) {
        snprintf(options->error, options->error_size,
                 "the model was compiled for --target=%s, whose kernels run "
                 "on a GPU, and no %s device is usable here: %s",
                 model->target, model->device_api ? model->device_api : "GPU",
                 session->error[0] ? session->error : "no device");
      }
      moert_session_release(session);
      return status;
    }
  }
  *out_session = session;
  return MOERT_STATUS_OK;
}

void moert_session_release(moert_session_t *session) {
  if (!session) {
    return;
  }
  moert_exec_t *exec = &session->exec;
  if (session->device) {
    for (int32_t r = 0; r < MOERT_REGION_COUNT; ++r) {
      if (session->region[r].buffer.device) {
        halide_device_free(session, &session->region[r].buffer);
      }
    }
    halide_reuse_device_allocations(session, 0);
  } else {
    for (int32_t r = MOERT_REGION_ARENA; r <= MOERT_REGION_CONV; ++r) {
      release_pages(exec->host[r], session->host_bytes[r]);
    }
  }
  free(exec->host[MOERT_REGION_TOKENS]);
  release_pages(session->scratch_logits, session->scratch_logits_bytes);
  free(session->last_logits);
  free(session->fetched);
  moert_scratch_destroy(&session->scratch);
  free(session);
}

/* Checks `count` tokens can run from the current position. */
static moert_status_t check_tokens(moert_session_t *session,
                                   const int32_t *tokens, int32_t count) {
  const moert_model_desc_t *model = session->model;
  if (count <= 0 || !tokens) {
    session_error(session, "no tokens to run");
    return MOERT_STATUS_INVALID_ARGUMENT;
  }
  for (int32_t i = 0; i < count; ++i) {
    if (tokens[i] < 0 || tokens[i] >= model->vocab) {
      session_error(session,
                    "token %d (at index %d) is outside the vocabulary [0, "
                    "%lld)",
                    tokens[i], i, (long long)model->vocab);
      return MOERT_STATUS_INVALID_ARGUMENT;
    }
  }
  if ((int64_t)session->position + count > session->context) {
    session_error(session,
                  "%d more tokens at position %d exceed the context of %d "
                  "tokens (-c raises it up to the memory available)",
                  count, session->position, session->context);
    return MOERT_STATUS_OUT_OF_RANGE;
  }
  return MOERT_STATUS_OK;
}

static moert_status_t run(moert_session_t *session, moert_entry_fn entry,
                          int32_t count, float *logits) {
  moert_exec_t *exec = &session->exec;
  session->error[0] = '\0';
  int32_t rc = 0;
  if (session->device) {
    rc = device_copy(session, MOERT_REGION_TOKENS, 0,
                     exec->host[MOERT_REGION_TOKENS],
                     (uint64_t)count * sizeof(int32_t), /*to_device=*/1);
  } else {
    exec->host[MOERT_REGION_LOGITS] = (uint8_t *)logits;
  }
  if (rc == 0) {
    rc = entry(exec, count, session->position);
  }
  if (rc == 0 && session->device) {
    rc = device_copy(session, MOERT_REGION_LOGITS, 0, logits,
                     (uint64_t)count * (uint64_t)session->model->vocab *
                         sizeof(float),
                     /*to_device=*/0);
  }
  if (rc != 0) {
    if (session->error[0] == '\0') {
      session_error(session, "a kernel failed with Halide error %d", rc);
    }
    return MOERT_STATUS_KERNEL_ERROR;
  }
  session->position += count;
  return MOERT_STATUS_OK;
}

moert_status_t moert_session_prefill(moert_session_t *session,
                                     const int32_t *tokens, int32_t count,
                                     float *logits) {
  if (!session) {
    return MOERT_STATUS_INVALID_ARGUMENT;
  }
  MOERT_RETURN_IF_ERROR(check_tokens(session, tokens, count));
  const moert_model_desc_t *model = session->model;
  int32_t chunk = (int32_t)model->prefill_chunk;
  int64_t vocab = model->vocab;
  for (int32_t start = 0; start < count; start += chunk) {
    int32_t n = count - start < chunk ? count - start : chunk;
    memcpy(session->exec.host[MOERT_REGION_TOKENS], tokens + start,
           (size_t)n * sizeof(int32_t));
    float *out =
        logits ? logits + (int64_t)start * vocab : session->scratch_logits;
    /* Without `logits` only each call's last row is read (below); a run
     * reporting its intermediates reports every row's. */
    session->exec.logits_last_only = logits == NULL && !session->exec.dump;
    moert_status_t status = run(session, model->prefill, n, out);
    session->exec.logits_last_only = 0;
    MOERT_RETURN_IF_ERROR(status);
    memcpy(session->last_logits, out + (int64_t)(n - 1) * vocab,
           (size_t)vocab * sizeof(float));
  }
  return MOERT_STATUS_OK;
}

moert_status_t moert_session_decode(moert_session_t *session, int32_t token) {
  if (!session) {
    return MOERT_STATUS_INVALID_ARGUMENT;
  }
  MOERT_RETURN_IF_ERROR(check_tokens(session, &token, 1));
  memcpy(session->exec.host[MOERT_REGION_TOKENS], &token, sizeof(token));
  return run(session, session->model->decode, 1, session->last_logits);
}

const float *moert_session_logits(const moert_session_t *session) {
  return session->last_logits;
}

void moert_session_reset(moert_session_t *session) { session->position = 0; }

void moert_session_set_dump(moert_session_t *session, moert_dump_fn dump,
                            void *context) {
  session->exec.dump = dump;
  session->exec.dump_context = context;
}

int32_t moert_session_position(const moert_session_t *session) {
  return session->position;
}

int32_t moert_session_context(const moert_session_t *session) {
  return session->context;
}

const char *moert_session_last_error(const moert_session_t *session) {
  return session->error;
}

uint64_t moert_session_bytes(const moert_session_t *session) {
  return session->bytes;
}

uint64_t moert_session_scratch_bytes(const moert_session_t *session) {
  return session->scratch.bytes;
}

uint64_t moert_session_scratch_allocations(const moert_session_t *session) {
  return session->scratch.allocations;
}

void moert_set_threads(int threads) {
  if (threads <= 0) {
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    threads = cores > 0 ? (int)cores : 1;
  }
  /* The kernels' parallel loops run on the runtime's pool (thread_pool.h),
   * not on Halide's, whose workers sleep between loops. */
  halide_set_num_threads(threads);
  moert_pool_set_threads(threads);
  halide_set_custom_do_par_for(moert_pool_do_par_for);
}
