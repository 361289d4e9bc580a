/*===- cli.c - The command line of a compiled model -----------------------===*
 *
 * main() of every executable moec links. It parses flags, maps the weight
 * file beside the executable, creates one session and runs the requested
 * mode: generate token ids greedily, dump logits (--logits-out, prefill or
 * --decode), benchmark (--bench) or describe the build (--info).
 *
 * Every failure prints "error: ..." naming the flag, file or value at
 * fault and exits 1; output files are written to a temporary name and
 * renamed, so a failed run never leaves a partial file.
 *
 *===----------------------------------------------------------------------===*/

#define _GNU_SOURCE
#include "moert/moert.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Defined by the host code moec generates. */
extern const moert_model_desc_t moert_model;

typedef struct options_t {
  const char *tokens;
  int32_t generate;
  const char *logits_out;
  int decode;
  int bench;
  int32_t prompt_len;
  int32_t gen_len;
  int32_t repeat;
  int json;
  int info;
  int32_t threads;
  int32_t context;
  const char *weights;
  int verify_weights;
  const char *dump_dir;
} options_t;

/* --dump-activations: every named intermediate of the run appended to
 * DIR/<name>.f32 (or .i32), one row per token, the first write of a name
 * truncating its file. A write error is remembered and reported at exit
 * (the hook cannot fail a kernel call). */
#define DUMP_MAX_NAMES 4096
typedef struct dump_state_t {
  const char *dir;
  char *names[DUMP_MAX_NAMES];
  int count;
  char error[4400]; /* holds a path and its error */
} dump_state_t;

static void dump_tensor(void *context, const char *name, const void *data,
                        int32_t n_tokens, int32_t width, int32_t code) {
  dump_state_t *d = context;
  if (d->error[0]) {
    return;
  }
  int seen = 0;
  for (int i = 0; i < d->count && !seen; ++i) {
    seen = !strcmp(d->names[i], name);
  }
  if (!seen) {
    if (d->count == DUMP_MAX_NAMES) {
      snprintf(d->error, sizeof(d->error), "more than %d dumped tensors",
               DUMP_MAX_NAMES);
      return;
    }
    d->names[d->count++] = strdup(name);
  }
  char path[4096];
  snprintf(path, sizeof(path), "%s/%s.%s", d->dir, name,
           code == MOERT_FLOAT ? "f32" : "i32");
  FILE *f = fopen(path, seen ? "ab" : "wb");
  size_t n = (size_t)n_tokens * (size_t)width;
  if (!f || fwrite(data, 4, n, f) != n || fclose(f) != 0) {
    snprintf(d->error, sizeof(d->error), "cannot write %s: %s", path,
             strerror(errno));
  }
}

static int fail(const char *format, ...) {
  va_list args;
  va_start(args, format);
  fputs("error: ", stderr);
  vfprintf(stderr, format, args);
  fputc('\n', stderr);
  va_end(args);
  return 1;
}

static void usage(FILE *out, const char *argv0) {
  fprintf(
      out,
      "usage: %s [options]\n"
      "\n"
      "Runs a %s model compiled by moec for %s.\n"
      "\n"
      "  --tokens IDS        prompt as comma-separated token ids (default: 0)\n"
      "  -n N                token ids to generate greedily (default: 16)\n"
      "  --logits-out FILE   write the prompt's logits as float32 "
      "[tokens x vocab]\n"
      "                      (little-endian, no header) and exit\n"
      "  --decode            with --logits-out: run the prompt token by "
      "token through\n"
      "                      the KV cache instead of one prefill\n"
      "  --bench             measure prefill and decode tokens/s\n"
      "    --prompt-len N    prompt tokens (default: 128)\n"
      "    --gen N           decoded tokens (default: 64)\n"
      "    --repeat N        timed runs after one warm-up (default: 3)\n"
      "    --json            one JSON object instead of text\n"
      "  --dump-activations DIR  write every layer's hidden state and "
      "router choices\n"
      "                      of the run to DIR/<name>.f32|.i32 (rows = "
      "tokens), for\n"
      "                      test/reference/first_divergence.py\n"
      "  --info              print the model, target and build manifest\n"
      "  -t, --threads N     kernel threads (default: one per core)\n"
      "  -c, --ctx-size N    KV-cache capacity in tokens (default: the "
      "model's, %lld)\n"
      "  --weights FILE      the weight file (default: the executable's "
      "path + .weights)\n"
      "  --verify-weights    hash the whole weight file before running\n"
      "  -h, --help          this text\n",
      argv0, moert_model.family, moert_model.target,
      (long long)moert_model.context_length);
}

/* Parses a whole decimal int32 in [min, max]; 0 on success. */
static int parse_int(const char *flag, const char *text, int32_t min,
                     int32_t max, int32_t *out) {
  if (!text) {
    return fail("%s needs a value", flag);
  }
  char *end = NULL;
  errno = 0;
  long value = strtol(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || value < min || value > max) {
    return fail("%s: '%s' is not a whole number in [%d, %d]", flag, text, min,
                max);
  }
  *out = (int32_t)value;
  return 0;
}

/* Parses "1,2,3" into a new array; 0 on success. */
static int parse_tokens(const char *text, int32_t **out, int32_t *count) {
  *out = NULL;
  *count = 0;
  size_t capacity = 1;
  for (const char *p = text; *p; ++p) {
    capacity += *p == ',';
  }
  int32_t *tokens = malloc(capacity * sizeof(int32_t));
  if (!tokens) {
    return fail("out of memory");
  }
  const char *p = text;
  while (1) {
    char *end = NULL;
    errno = 0;
    long value = strtol(p, &end, 10);
    if (end == p || errno != 0 || value < 0 || value > INT32_MAX ||
        (*end != ',' && *end != '\0')) {
      free(tokens);
      return fail("--tokens: '%s' is not a comma-separated list of token ids",
                  text);
    }
    if (value >= moert_model.vocab) {
      free(tokens);
      return fail("--tokens: token %ld is outside the vocabulary [0, %lld)",
                  value, (long long)moert_model.vocab);
    }
    tokens[(*count)++] = (int32_t)value;
    if (*end == '\0') {
      break;
    }
    p = end + 1;
  }
  *out = tokens;
  return 0;
}

static int parse_args(int argc, char **argv, options_t *o) {
  memset(o, 0, sizeof(*o));
  o->tokens = "0";
  o->generate = 16;
  o->prompt_len = 128;
  o->gen_len = 64;
  o->repeat = 3;
  for (int i = 1; i < argc; ++i) {
    const char *a = argv[i];
    const char *next = i + 1 < argc ? argv[i + 1] : NULL;
#define TAKE_INT(flag, min, max, field)                                        \
  if (parse_int(flag, next, min, max, &o->field)) {                            \
    return 1;                                                                  \
  }                                                                            \
  ++i
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      usage(stdout, argv[0]);
      exit(0);
    } else if (!strcmp(a, "--tokens")) {
      if (!next) {
        return fail("--tokens needs a value");
      }
      o->tokens = next;
      ++i;
    } else if (!strcmp(a, "-n")) {
      TAKE_INT("-n", 0, 1 << 24, generate);
    } else if (!strcmp(a, "--logits-out")) {
      if (!next) {
        return fail("--logits-out needs a file name");
      }
      o->logits_out = next;
      ++i;
    } else if (!strcmp(a, "--decode")) {
      o->decode = 1;
    } else if (!strcmp(a, "--bench")) {
      o->bench = 1;
    } else if (!strcmp(a, "--prompt-len")) {
      TAKE_INT("--prompt-len", 1, 1 << 24, prompt_len);
    } else if (!strcmp(a, "--gen")) {
      TAKE_INT("--gen", 0, 1 << 24, gen_len);
    } else if (!strcmp(a, "--repeat")) {
      TAKE_INT("--repeat", 1, 1000, repeat);
    } else if (!strcmp(a, "--json")) {
      o->json = 1;
    } else if (!strcmp(a, "--info")) {
      o->info = 1;
    } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
      TAKE_INT(a, 1, 4096, threads);
    } else if (!strcmp(a, "-c") || !strcmp(a, "--ctx-size")) {
      TAKE_INT(a, 1, 1 << 24, context);
    } else if (!strcmp(a, "--weights")) {
      if (!next) {
        return fail("--weights needs a file name");
      }
      o->weights = next;
      ++i;
    } else if (!strcmp(a, "--verify-weights")) {
      o->verify_weights = 1;
    } else if (!strcmp(a, "--dump-activations")) {
      if (!next) {
        return fail("--dump-activations needs a directory");
      }
      o->dump_dir = next;
      ++i;
    } else {
      return fail("unknown flag '%s' (--help lists the flags)", a);
    }
#undef TAKE_INT
  }
  if (o->decode && !o->logits_out) {
    return fail("--decode only applies to --logits-out");
  }
  return 0;
}

static double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Writes `bytes` to `path` through a temporary file; 0 on success. */
static int write_file_atomically(const char *path, const void *data,
                                 size_t bytes) {
  char temp[PATH_MAX];
  if (snprintf(temp, sizeof(temp), "%s.tmp%d", path, (int)getpid()) >=
      (int)sizeof(temp)) {
    return fail("--logits-out: path too long");
  }
  FILE *f = fopen(temp, "wb");
  if (!f) {
    return fail("--logits-out: cannot create '%s': %s", temp, strerror(errno));
  }
  int ok = fwrite(data, 1, bytes, f) == bytes;
  ok = (fclose(f) == 0) && ok;
  if (!ok || rename(temp, path) != 0) {
    int err = errno;
    unlink(temp);
    return fail("--logits-out: cannot write '%s': %s", path, strerror(err));
  }
  return 0;
}

static int session_failed(moert_session_t *session, moert_status_t status) {
  return fail("%s: %s", moert_status_name(status),
              moert_session_last_error(session));
}

static int run_logits(moert_session_t *session, const options_t *o,
                      const int32_t *tokens, int32_t count) {
  size_t vocab = (size_t)moert_model.vocab;
  float *logits = malloc((size_t)count * vocab * sizeof(float));
  if (!logits) {
    return fail("out of memory for %d x %zu logits", count, vocab);
  }
  moert_status_t status = MOERT_STATUS_OK;
  if (o->decode) {
    for (int32_t i = 0; i < count && status == MOERT_STATUS_OK; ++i) {
      status = moert_session_decode(session, tokens[i]);
      if (status == MOERT_STATUS_OK) {
        memcpy(logits + (size_t)i * vocab, moert_session_logits(session),
               vocab * sizeof(float));
      }
    }
  } else {
    status = moert_session_prefill(session, tokens, count, logits);
  }
  int rc = status != MOERT_STATUS_OK
               ? session_failed(session, status)
               : write_file_atomically(o->logits_out, logits,
                                       (size_t)count * vocab * sizeof(float));
  free(logits);
  return rc;
}

static int run_generate(moert_session_t *session, const options_t *o,
                        const int32_t *tokens, int32_t count) {
  double start = now_seconds();
  moert_status_t status = moert_session_prefill(session, tokens, count, NULL);
  if (status != MOERT_STATUS_OK) {
    return session_failed(session, status);
  }
  double prefilled = now_seconds();
  int32_t produced = 0;
  for (; produced < o->generate; ++produced) {
    int32_t next = moert_sample_greedy(moert_session_logits(session),
                                       (int32_t)moert_model.vocab);
    printf(produced ? ",%d" : "%d", next);
    fflush(stdout);
    if (produced + 1 == o->generate) {
      ++produced;
      break;
    }
    status = moert_session_decode(session, next);
    if (status != MOERT_STATUS_OK) {
      putchar('\n');
      return session_failed(session, status);
    }
  }
  putchar('\n');
  // The tokens before the statistics, when both go to one terminal or file.
  fflush(stdout);
  double done = now_seconds();
  fprintf(stderr,
          "prompt: %d tokens in %.1f ms; generated %d tokens in %.1f ms "
          "(%.1f tokens/s)\n",
          count, (prefilled - start) * 1e3, produced, (done - prefilled) * 1e3,
          produced > 1 ? (produced - 1) / (done - prefilled) : 0.0);
  return 0;
}

static int run_bench(moert_session_t *session, const options_t *o) {
  int32_t total = o->prompt_len + o->gen_len;
  if (total > moert_session_context(session)) {
    return fail("--bench: --prompt-len %d + --gen %d exceed the context of "
                "%d tokens (raise it with -c)",
                o->prompt_len, o->gen_len, moert_session_context(session));
  }
  int32_t *prompt = malloc((size_t)o->prompt_len * sizeof(int32_t));
  if (!prompt) {
    return fail("out of memory");
  }
  /* A fixed pseudo-random prompt, so runs are comparable. */
  uint32_t state = 12345u;
  for (int32_t i = 0; i < o->prompt_len; ++i) {
    state = state * 1664525u + 1013904223u;
    prompt[i] = (int32_t)((state >> 8) % (uint32_t)moert_model.vocab);
  }
  double prefill_time = 0, decode_time = 0;
  uint64_t warm_allocations = 0;
  for (int32_t run = 0; run <= o->repeat; ++run) {
    moert_session_reset(session);
    double t0 = now_seconds();
    moert_status_t status =
        moert_session_prefill(session, prompt, o->prompt_len, NULL);
    double t1 = now_seconds();
    for (int32_t g = 0; status == MOERT_STATUS_OK && g < o->gen_len; ++g) {
      int32_t next = moert_sample_greedy(moert_session_logits(session),
                                         (int32_t)moert_model.vocab);
      status = moert_session_decode(session, next);
    }
    double t2 = now_seconds();
    if (status != MOERT_STATUS_OK) {
      free(prompt);
      return session_failed(session, status);
    }
    if (run > 0) { /* run 0 warms caches, the thread pool and scratch */
      prefill_time += t1 - t0;
      decode_time += t2 - t1;
    } else {
      warm_allocations = moert_session_scratch_allocations(session);
    }
  }
  free(prompt);
  double prefill_tps = o->prompt_len * o->repeat / prefill_time;
  double decode_tps = o->gen_len ? o->gen_len * o->repeat / decode_time : 0.0;
  int threads =
      o->threads > 0 ? o->threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
  /* Kernel scratch blocks allocated during the timed runs: 0 when every
   * call reuses what the warm-up run left in the pool. */
  unsigned long long timed_allocations =
      moert_session_scratch_allocations(session) - warm_allocations;
  unsigned long long scratch = moert_session_scratch_bytes(session);
  if (o->json) {
    printf("{\"model\": \"%s\", \"target\": \"%s\", \"threads\": %d, "
           "\"prompt_len\": %d, \"gen_len\": %d, \"repeat\": %d, "
           "\"prefill_tokens_per_s\": %.2f, \"decode_tokens_per_s\": %.2f, "
           "\"prefill_ms\": %.3f, \"decode_ms_per_token\": %.3f, "
           "\"session_bytes\": %llu, \"kernel_scratch_bytes\": %llu, "
           "\"timed_scratch_allocations\": %llu, \"weights_bytes\": %llu}\n",
           moert_model.family, moert_model.target, threads, o->prompt_len,
           o->gen_len, o->repeat, prefill_tps, decode_tps,
           prefill_time / o->repeat * 1e3,
           o->gen_len ? decode_time / o->repeat / o->gen_len * 1e3 : 0.0,
           (unsigned long long)moert_session_bytes(session), scratch,
           timed_allocations, (unsigned long long)moert_model.weights_bytes);
  } else {
    printf("model:   %s (%s)\n", moert_model.family, moert_model.target);
    printf("threads: %d, prompt %d tokens, generate %d tokens, %d runs\n",
           threads, o->prompt_len, o->gen_len, o->repeat);
    printf("prefill: %10.2f tokens/s  (%.2f ms per prompt)\n", prefill_tps,
           prefill_time / o->repeat * 1e3);
    printf("decode:  %10.2f tokens/s  (%.3f ms per token)\n", decode_tps,
           o->gen_len ? decode_time / o->repeat / o->gen_len * 1e3 : 0.0);
    printf("memory:  session %.2f MiB, kernel scratch %.2f MiB (%llu blocks "
           "allocated while timed)\n",
           (double)moert_session_bytes(session) / (1 << 20),
           (double)scratch / (1 << 20), timed_allocations);
  }
  return 0;
}

static void print_info(const char *weights_path,
                       const moert_session_t *session) {
  const moert_model_desc_t *m = &moert_model;
  printf("model:          %s\n", m->family);
  printf("target:         %s\n", m->target);
  printf("vocab:          %lld\n", (long long)m->vocab);
  printf("layers:         %lld (KV: %lld heads x %lld dims)\n",
         (long long)m->n_layers, (long long)m->n_kv_heads,
         (long long)m->head_dim);
  printf("context:        %d (model default %lld)\n",
         moert_session_context(session), (long long)m->context_length);
  printf("prefill chunk:  %lld tokens\n", (long long)m->prefill_chunk);
  printf("weights:        %s (%.2f MiB, hash 0x%016llx)\n", weights_path,
         (double)m->weights_bytes / (1 << 20),
         (unsigned long long)m->weights_hash);
  printf("session memory: %.2f MiB (arena %.2f MiB)\n",
         (double)moert_session_bytes(session) / (1 << 20),
         (double)m->arena_bytes / (1 << 20));
  printf("manifest:       %s\n", m->manifest_json);
}

int main(int argc, char **argv) {
  options_t o;
  if (parse_args(argc, argv, &o)) {
    return 1;
  }
  char weights_path[PATH_MAX + 16];
  if (o.weights) {
    snprintf(weights_path, sizeof(weights_path), "%s", o.weights);
  } else {
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0) {
      return fail("cannot find the executable's path; pass --weights FILE");
    }
    self[n] = '\0';
    snprintf(weights_path, sizeof(weights_path), "%s.weights", self);
  }
  if (o.threads > 0) {
    moert_set_threads(o.threads);
  }
  // Before anything runs a kernel: a clear message, not SIGILL.
  if (!moert_model_runs_here(&moert_model)) {
    return fail("this executable was compiled for --target=%s, and this CPU "
                "lacks instructions its kernels use; compile the model with "
                "--target=host (or a target this CPU has: moec targets)",
                moert_model.target);
  }

  char error[1024] = "";
  moert_weights_t *weights = NULL;
  moert_status_t status = moert_weights_open(weights_path, &moert_model,
                                             &weights, error, sizeof(error));
  if (status != MOERT_STATUS_OK) {
    return fail("%s", error);
  }
  if (o.verify_weights &&
      moert_weights_verify(weights, error, sizeof(error)) != MOERT_STATUS_OK) {
    moert_weights_release(weights);
    return fail("%s", error);
  }
  moert_session_options_t session_options;
  moert_session_options_initialize(&session_options);
  session_options.context = o.context;
  moert_session_t *session = NULL;
  status =
      moert_session_create(&moert_model, weights, &session_options, &session);
  if (status != MOERT_STATUS_OK) {
    moert_weights_release(weights);
    return fail("cannot create a session: %s", moert_status_name(status));
  }

  static dump_state_t dump;
  if (o.dump_dir) {
    if (mkdir(o.dump_dir, 0755) != 0 && errno != EEXIST) {
      moert_session_release(session);
      moert_weights_release(weights);
      return fail("--dump-activations: cannot create %s: %s", o.dump_dir,
                  strerror(errno));
    }
    dump.dir = o.dump_dir;
    moert_session_set_dump(session, dump_tensor, &dump);
  }
  int rc = 0;
  if (o.info) {
    print_info(weights_path, session);
  } else if (o.bench) {
    rc = run_bench(session, &o);
  } else {
    int32_t *tokens = NULL;
    int32_t count = 0;
    rc = parse_tokens(o.tokens, &tokens, &count);
    if (rc == 0) {
      rc = o.logits_out ? run_logits(session, &o, tokens, count)
                        : run_generate(session, &o, tokens, count);
    }
    free(tokens);
  }
  if (dump.error[0] && rc == 0) {
    rc = fail("--dump-activations: %s", dump.error);
  }
  for (int i = 0; i < dump.count; ++i) {
    free(dump.names[i]);
  }
  moert_session_release(session);
  moert_weights_release(weights);
  return rc;
}
