/*===- cli.c - The command line of a compiled model -----------------------===*
 *
 * main() of every executable moec links. It parses flags, maps the weight
 * file beside the executable, creates one session and runs the requested
 * mode: generate token ids greedily, dump logits (--logits-out, prefill or
 * --decode), benchmark (--bench) or describe the build (--info).
 *
 * Every failure prints "error: ..." naming the flag, file or value at
 * fault and exits 1; output files are written to a temporary name and
 * renamed, so a failed run never leaves a partial file (a device or a pipe,
 * /dev/null say, is written in place: a rename would replace it).
 *
 *===----------------------------------------------------------------------===*/

#define _GNU_SOURCE
#include "cli_text.h"
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
/* The tokenizer, chat format and sampling defaults (moert/text_format.h);
 * size 0 when the model was compiled without a tokenizer. */
extern const unsigned char moert_model_text[];
extern const uint64_t moert_model_text_size;

typedef struct options_t {
  text_options_t text;
  char *prompt_file; /* -f's text, owned (text.prompt points at it) */
  const char *tokenize;
  /* Which sampling flags were given (they override the family's). */
  int set_temperature, set_top_k, set_top_p, set_min_p, set_penalty, set_last_n,
      set_form, set_seed, set_generate;
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
  int failed = !f;
  if (f) {
    /* Closed even when the write fails: a full disk must not leak a file
     * per tensor. */
    failed = fwrite(data, 4, n, f) != n;
    failed |= fclose(f) != 0;
  }
  if (failed) {
    snprintf(d->error, sizeof(d->error), "cannot write %s: %s", path,
             strerror(errno));
  }
}

int cli_fail(const char *format, ...) {
  va_list args;
  va_start(args, format);
  fputs("error: ", stderr);
  vfprintf(stderr, format, args);
  fputc('\n', stderr);
  va_end(args);
  return 1;
}

static void usage(FILE *out, const char *argv0) {
  fprintf(out,
          "usage: %s [options]\n"
          "\n"
          "Runs a %s model compiled by moec for %s.\n"
          "\n"
          "Text (needs the tokenizer the model was compiled with):\n"
          "  -p, --prompt TEXT   complete TEXT, printing tokens as they come\n"
          "  -f, --file FILE     the prompt is FILE's text\n"
          "  --chat              talk in the model's chat format, one line a "
          "turn (stdin\n"
          "                      may be a pipe); a base model continues your "
          "text\n"
          "  --system TEXT       with --chat: the system turn\n"
          "  -n, --n-predict N   most tokens to generate (default: 16 with "
          "--tokens; else\n"
          "                      until a stop token or the context is full)\n"
          "  --temp T            temperature; 0 is greedy\n"
          "  --top-k K           keep the K likeliest tokens (0: all)\n"
          "  --top-p P           keep the likeliest tokens holding P of the "
          "mass (1: all)\n"
          "  --min-p P           drop tokens below P x the likeliest's "
          "probability (0: off)\n"
          "  --repeat-penalty R  penalise the last --repeat-last-n tokens (1: "
          "off)\n"
          "  --repeat-last-n N   the penalty's window (-1: everything so far)\n"
          "  --repeat-form F     sign-aware (Hugging Face, llama.cpp) or "
          "divide-by-count\n"
          "                      (logit / R^count, Moonlight's)\n"
          "  -s, --seed N        sampling seed (default: from the clock; "
          "printed at the end)\n"
          "  --no-display-prompt print only the continuation\n"
          "  --tokenize TEXT     print TEXT's token ids and exit\n"
          "  Defaults are the family's (--info shows them).\n"
          "\n"
          "Token ids:\n"
          "  --tokens IDS        prompt as comma-separated token ids; greedy "
          "(default: 0)\n"
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
          "  -h, --help          this text\n"
          "\n"
          "Examples:\n"
          "  %s -p \"Once upon a time\" -n 64\n"
          "  %s -p \"Once upon a time\" --temp 0.8 --top-p 0.95 -s 42\n"
          "  %s --chat --system \"You are terse.\"\n"
          "  echo \"What is a mixture of experts?\" | %s --chat -n 128\n"
          "  %s --bench --json\n",
          argv0, moert_model.family, moert_model.target,
          (long long)moert_model.context_length, argv0, argv0, argv0, argv0,
          argv0);
}

/* Parses a whole decimal int32 in [min, max]; 0 on success. */
static int parse_int(const char *flag, const char *text, int32_t min,
                     int32_t max, int32_t *out) {
  if (!text) {
    return cli_fail("%s needs a value", flag);
  }
  char *end = NULL;
  errno = 0;
  long value = strtol(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || value < min || value > max) {
    return cli_fail("%s: '%s' is not a whole number in [%d, %d]", flag, text,
                    min, max);
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
    return cli_fail("out of memory");
  }
  const char *p = text;
  while (1) {
    char *end = NULL;
    errno = 0;
    long value = strtol(p, &end, 10);
    if (end == p || errno != 0 || value < 0 || value > INT32_MAX ||
        (*end != ',' && *end != '\0')) {
      free(tokens);
      return cli_fail(
          "--tokens: '%s' is not a comma-separated list of token ids", text);
    }
    if (value >= moert_model.vocab) {
      free(tokens);
      return cli_fail("--tokens: token %ld is outside the vocabulary [0, %lld)",
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

/* Parses a float in [min, max]; 0 on success. */
static int parse_float(const char *flag, const char *text, double min,
                       double max, float *out) {
  if (!text) {
    return cli_fail("%s needs a value", flag);
  }
  char *end = NULL;
  errno = 0;
  double value = strtod(text, &end);
  if (errno != 0 || end == text || *end != '\0' || !(value >= min) ||
      !(value <= max)) {
    return cli_fail("%s: '%s' is not a number in [%g, %g]", flag, text, min,
                    max);
  }
  *out = (float)value;
  return 0;
}

static int parse_seed(const char *flag, const char *text, uint64_t *out) {
  if (!text) {
    return cli_fail("%s needs a value", flag);
  }
  char *end = NULL;
  errno = 0;
  unsigned long long value = strtoull(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || text[0] == '-') {
    return cli_fail("%s: '%s' is not a whole number >= 0", flag, text);
  }
  *out = value;
  return 0;
}

/* Reads a prompt file whole into a new string. */
static int read_prompt_file(const char *path, char **out) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    return cli_fail("-f: cannot open '%s': %s", path, strerror(errno));
  }
  size_t length = 0, capacity = 4096;
  char *text = malloc(capacity);
  size_t n;
  while (text && (n = fread(text + length, 1, capacity - length - 1, f)) > 0) {
    length += n;
    if (length + 1 == capacity) {
      char *grown = realloc(text, capacity * 2);
      if (!grown) {
        free(text);
        text = NULL;
        break;
      }
      text = grown;
      capacity *= 2;
    }
  }
  int error = ferror(f);
  fclose(f);
  if (!text || error) {
    free(text);
    return cli_fail("-f: cannot read '%s'", path);
  }
  text[length] = '\0';
  if (strlen(text) != length) {
    free(text);
    return cli_fail("-f: '%s' holds a NUL byte: it is not text", path);
  }
  *out = text;
  return 0;
}

/* Frees what parse_args allocated: the text of -f's file. */
static void free_options(options_t *o) {
  if (o->prompt_file) {
    free(o->prompt_file);
    o->prompt_file = NULL;
    o->text.prompt = NULL;
    o->text.prompt_source = NULL;
  }
}

static int parse_args(int argc, char **argv, options_t *o) {
  memset(o, 0, sizeof(*o));
  o->tokens = NULL;
  o->generate = 16;
  o->text.generate = -1;
  o->text.display_prompt = 1;
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
#define TAKE_FLOAT(flag, min, max, field)                                      \
  if (parse_float(flag, next, min, max, &o->text.sampling.field)) {            \
    return 1;                                                                  \
  }                                                                            \
  ++i
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      usage(stdout, argv[0]);
      exit(0);
    } else if (!strcmp(a, "--tokens")) {
      if (!next) {
        return cli_fail("--tokens needs a value");
      }
      o->tokens = next;
      ++i;
    } else if (!strcmp(a, "-n") || !strcmp(a, "--n-predict")) {
      TAKE_INT(a, -1, 1 << 24, generate);
      o->set_generate = 1;
    } else if (!strcmp(a, "-p") || !strcmp(a, "--prompt") ||
               !strcmp(a, "--tokenize") || !strcmp(a, "--system")) {
      if (!next) {
        return cli_fail("%s needs a text", a);
      }
      *(!strcmp(a, "--tokenize") ? &o->tokenize
        : !strcmp(a, "--system") ? &o->text.system
                                 : &o->text.prompt) = next;
      if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) {
        free_options(o);
        o->text.prompt = next;
      }
      ++i;
    } else if (!strcmp(a, "-f") || !strcmp(a, "--file")) {
      if (!next) {
        return cli_fail("%s needs a file name", a);
      }
      free_options(o); /* a second -f replaces the first */
      if (read_prompt_file(next, &o->prompt_file)) {
        return 1;
      }
      o->text.prompt = o->prompt_file;
      o->text.prompt_source = next;
      ++i;
    } else if (!strcmp(a, "--chat")) {
      o->text.chat = 1;
    } else if (!strcmp(a, "--no-display-prompt")) {
      o->text.display_prompt = 0;
    } else if (!strcmp(a, "--temp")) {
      TAKE_FLOAT(a, 0, 100, temperature);
      o->set_temperature = 1;
    } else if (!strcmp(a, "--top-k")) {
      TAKE_INT(a, 0, INT32_MAX, text.sampling.top_k);
      o->set_top_k = 1;
    } else if (!strcmp(a, "--top-p")) {
      TAKE_FLOAT(a, 0, 1, top_p);
      o->set_top_p = 1;
    } else if (!strcmp(a, "--min-p")) {
      TAKE_FLOAT(a, 0, 1, min_p);
      o->set_min_p = 1;
    } else if (!strcmp(a, "--repeat-penalty")) {
      TAKE_FLOAT(a, 0.01, 100, repeat_penalty);
      o->set_penalty = 1;
    } else if (!strcmp(a, "--repeat-last-n")) {
      TAKE_INT(a, -1, INT32_MAX, text.sampling.repeat_last_n);
      o->set_last_n = 1;
    } else if (!strcmp(a, "--repeat-form")) {
      if (!next ||
          (strcmp(next, "sign-aware") && strcmp(next, "divide-by-count"))) {
        return cli_fail(
            "--repeat-form: expected sign-aware or divide-by-count, "
            "not '%s'",
            next ? next : "");
      }
      o->text.sampling.repeat_form = !strcmp(next, "sign-aware")
                                         ? MOERT_REPEAT_SIGN_AWARE
                                         : MOERT_REPEAT_DIVIDE_BY_COUNT;
      o->set_form = 1;
      ++i;
    } else if (!strcmp(a, "-s") || !strcmp(a, "--seed")) {
      if (parse_seed(a, next, &o->text.sampling.seed)) {
        return 1;
      }
      o->set_seed = 1;
      ++i;
    } else if (!strcmp(a, "--logits-out")) {
      if (!next) {
        return cli_fail("--logits-out needs a file name");
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
        return cli_fail("--weights needs a file name");
      }
      o->weights = next;
      ++i;
    } else if (!strcmp(a, "--verify-weights")) {
      o->verify_weights = 1;
    } else if (!strcmp(a, "--dump-activations")) {
      if (!next) {
        return cli_fail("--dump-activations needs a directory");
      }
      o->dump_dir = next;
      ++i;
    } else {
      return cli_fail("unknown flag '%s' (--help lists the flags)", a);
    }
#undef TAKE_INT
#undef TAKE_FLOAT
  }
  if (o->decode && !o->logits_out) {
    return cli_fail("--decode only applies to --logits-out");
  }
  int modes = (o->text.prompt != NULL) + o->text.chat + (o->tokens != NULL) +
              (o->tokenize != NULL) + o->bench + o->info;
  if (modes > 1) {
    return cli_fail(
        "-p/-f, --chat, --tokens, --tokenize, --bench and --info are "
        "separate modes: give one");
  }
  if (o->set_generate) {
    o->text.generate = o->generate;
  }
  return 0;
}

double cli_now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Writes `bytes` to `path` through a temporary file renamed over it, so a
 * failed run leaves no partial file; what is there and is no regular file
 * (/dev/null, a pipe) is written in place instead, since a rename would
 * replace it. 0 on success. */
static int write_file_atomically(const char *path, const void *data,
                                 size_t bytes) {
  struct stat st;
  int in_place =
      stat(path, &st) == 0 && !S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode);
  char temp[PATH_MAX];
  if (snprintf(temp, sizeof(temp), "%s.tmp%d", path, (int)getpid()) >=
      (int)sizeof(temp)) {
    return cli_fail("--logits-out: path too long");
  }
  const char *dest = in_place ? path : temp;
  FILE *f = fopen(dest, "wb");
  if (!f) {
    return cli_fail("--logits-out: cannot %s '%s': %s",
                    in_place ? "open" : "create", dest, strerror(errno));
  }
  int ok = fwrite(data, 1, bytes, f) == bytes;
  ok = (fclose(f) == 0) && ok;
  if (!ok || (!in_place && rename(temp, path) != 0)) {
    int err = errno;
    if (!in_place) {
      unlink(temp);
    }
    return cli_fail("--logits-out: cannot write '%s': %s", path, strerror(err));
  }
  return 0;
}

int cli_session_failed(moert_session_t *session, moert_status_t status) {
  return cli_fail("%s: %s", moert_status_name(status),
                  moert_session_last_error(session));
}

static int run_logits(moert_session_t *session, const options_t *o,
                      const int32_t *tokens, int32_t count) {
  size_t vocab = (size_t)moert_model.vocab;
  float *logits = malloc((size_t)count * vocab * sizeof(float));
  if (!logits) {
    return cli_fail("out of memory for %d x %zu logits", count, vocab);
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
               ? cli_session_failed(session, status)
               : write_file_atomically(o->logits_out, logits,
                                       (size_t)count * vocab * sizeof(float));
  free(logits);
  return rc;
}

static int run_generate(moert_session_t *session, const options_t *o,
                        const int32_t *tokens, int32_t count) {
  /* -n -1: until the context is full. */
  int32_t limit = o->generate >= 0 ? o->generate
                                   : moert_session_context(session) - count + 1;
  double start = cli_now_seconds();
  moert_status_t status = moert_session_prefill(session, tokens, count, NULL);
  if (status != MOERT_STATUS_OK) {
    return cli_session_failed(session, status);
  }
  double prefilled = cli_now_seconds();
  int32_t produced = 0;
  for (; produced < limit; ++produced) {
    int32_t next = moert_sample_greedy(moert_session_logits(session),
                                       (int32_t)moert_model.vocab);
    printf(produced ? ",%d" : "%d", next);
    fflush(stdout);
    if (produced + 1 == limit) {
      ++produced;
      break;
    }
    status = moert_session_decode(session, next);
    if (status != MOERT_STATUS_OK) {
      putchar('\n');
      return cli_session_failed(session, status);
    }
  }
  putchar('\n');
  // The tokens before the statistics, when both go to one terminal or file.
  fflush(stdout);
  double done = cli_now_seconds();
  fprintf(stderr,
          "prompt: %d tokens in %.1f ms; generated %d tokens in %.1f ms "
          "(%.1f tokens/s)\n",
          count, (prefilled - start) * 1e3, produced, (done - prefilled) * 1e3,
          produced > 1 ? (produced - 1) / (done - prefilled) : 0.0);
  return 0;
}

/* This process's peak resident memory so far (Linux's VmHWM: since the
 * executable started, unlike getrusage, which carries over the parent's
 * across fork and exec); 0 where /proc does not say. */
static unsigned long long peak_rss_bytes(void) {
  FILE *f = fopen("/proc/self/status", "r");
  if (!f) {
    return 0;
  }
  char line[256];
  unsigned long long kb = 0;
  while (fgets(line, sizeof(line), f)) {
    if (sscanf(line, "VmHWM: %llu kB", &kb) == 1) {
      break;
    }
  }
  fclose(f);
  return kb * 1024;
}

static int run_bench(moert_session_t *session, const options_t *o) {
  int32_t total = o->prompt_len + o->gen_len;
  if (total > moert_session_context(session)) {
    return cli_fail("--bench: --prompt-len %d + --gen %d exceed the context of "
                    "%d tokens (raise it with -c)",
                    o->prompt_len, o->gen_len, moert_session_context(session));
  }
  int32_t *prompt = malloc((size_t)o->prompt_len * sizeof(int32_t));
  if (!prompt) {
    return cli_fail("out of memory");
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
    double t0 = cli_now_seconds();
    moert_status_t status =
        moert_session_prefill(session, prompt, o->prompt_len, NULL);
    double t1 = cli_now_seconds();
    for (int32_t g = 0; status == MOERT_STATUS_OK && g < o->gen_len; ++g) {
      int32_t next = moert_sample_greedy(moert_session_logits(session),
                                         (int32_t)moert_model.vocab);
      status = moert_session_decode(session, next);
    }
    double t2 = cli_now_seconds();
    if (status != MOERT_STATUS_OK) {
      free(prompt);
      return cli_session_failed(session, status);
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
           "\"timed_scratch_allocations\": %llu, \"weights_bytes\": %llu, "
           "\"peak_rss_bytes\": %llu}\n",
           moert_model.family, moert_model.target, threads, o->prompt_len,
           o->gen_len, o->repeat, prefill_tps, decode_tps,
           prefill_time / o->repeat * 1e3,
           o->gen_len ? decode_time / o->repeat / o->gen_len * 1e3 : 0.0,
           (unsigned long long)moert_session_bytes(session), scratch,
           timed_allocations, (unsigned long long)moert_model.weights_bytes,
           peak_rss_bytes());
  } else {
    printf("model:   %s (%s)\n", moert_model.family, moert_model.target);
    printf("threads: %d, prompt %d tokens, generate %d tokens, %d runs\n",
           threads, o->prompt_len, o->gen_len, o->repeat);
    printf("prefill: %10.2f tokens/s  (%.2f ms per prompt)\n", prefill_tps,
           prefill_time / o->repeat * 1e3);
    printf("decode:  %10.2f tokens/s  (%.3f ms per token)\n", decode_tps,
           o->gen_len ? decode_time / o->repeat / o->gen_len * 1e3 : 0.0);
    printf("memory:  session %.2f MiB, kernel scratch %.2f MiB (%llu blocks "
           "allocated while timed), peak resident %.2f MiB\n",
           (double)moert_session_bytes(session) / (1 << 20),
           (double)scratch / (1 << 20), timed_allocations,
           (double)peak_rss_bytes() / (1 << 20));
  }
  return 0;
}

/* The family's sampling defaults, under the flags the user gave. */
static void merge_sampling(options_t *o, const moert_sampler_params *d) {
  moert_sampler_params *p = &o->text.sampling;
  p->temperature = o->set_temperature ? p->temperature : d->temperature;
  p->top_k = o->set_top_k ? p->top_k : d->top_k;
  p->top_p = o->set_top_p ? p->top_p : d->top_p;
  p->min_p = o->set_min_p ? p->min_p : d->min_p;
  p->repeat_penalty = o->set_penalty ? p->repeat_penalty : d->repeat_penalty;
  p->repeat_last_n = o->set_last_n ? p->repeat_last_n : d->repeat_last_n;
  p->repeat_form = o->set_form ? p->repeat_form : d->repeat_form;
  if (!o->set_seed) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    p->seed = (uint64_t)ts.tv_sec * 1000003u ^ (uint64_t)ts.tv_nsec;
  }
}

static const char *repeat_form_name(int32_t form) {
  return form == MOERT_REPEAT_SIGN_AWARE        ? "sign-aware"
         : form == MOERT_REPEAT_DIVIDE_BY_COUNT ? "divide-by-count"
                                                : "none";
}

/* " 0 (<|endoftext|>)": an id with its text, control tokens included. */
static void print_token_with_text(const moert_tokenizer *tokenizer,
                                  int32_t id) {
  moert_detokenizer decoder;
  moert_text piece = {0};
  moert_detokenizer_init(&decoder, tokenizer, /*skip_special=*/0);
  decoder.at_start = 0; /* the token as it reads mid-text */
  if (moert_detokenizer_push(&decoder, id, &piece) == MOERT_STATUS_OK &&
      moert_detokenizer_flush(&decoder, &piece) == MOERT_STATUS_OK &&
      piece.length > 0) {
    printf(" %d (%.*s)", id, (int)piece.length, piece.data);
  } else {
    printf(" %d", id);
  }
  moert_text_free(&piece);
}

static void print_text_info(const moert_text_interface *text) {
  const moert_sampler_params *d = &text->defaults;
  int32_t tokens = moert_tokenizer_vocab_size(text->tokenizer);
  printf("tokenizer:      %d tokens%s", tokens,
         text->chat ? ", chat format" : ", no chat format (a base model)");
  if (tokens < moert_model.vocab) {
    // Padding rows of the embedding (or ids a chat format names): the
    // model may sample them, and they print nothing.
    printf("; ids %d-%lld have no text", tokens,
           (long long)moert_model.vocab - 1);
  }
  printf("\n");
  printf("sampling:       temp %g, top-k %d, top-p %g, min-p %g, repeat "
         "penalty %g (%s, last %d)\n",
         d->temperature, d->top_k, d->top_p, d->min_p, d->repeat_penalty,
         repeat_form_name(d->repeat_form), d->repeat_last_n);
  printf("stop tokens:   ");
  for (uint32_t i = 0; i < text->stop_count; ++i) {
    print_token_with_text(text->tokenizer, text->stop[i]);
  }
  printf("%s\n", text->stop_count ? "" : " none");
}

/* `context`: -c, or 0 for the model's default; it is what a session would get,
 * reported as requested when no session was opened (a GPU build's --info). */
static void print_info(const char *weights_path, const moert_session_t *session,
                       const moert_text_interface *text, int32_t context) {
  const moert_model_desc_t *m = &moert_model;
  printf("model:          %s\n", m->family);
  printf("target:         %s\n", m->target);
  printf("vocab:          %lld\n", (long long)m->vocab);
  printf("layers:         %lld (KV: %lld heads x %lld dims)\n",
         (long long)m->n_layers, (long long)m->n_kv_heads,
         (long long)m->head_dim);
  if (session) {
    printf("context:        %d (model default %lld)\n",
           moert_session_context(session), (long long)m->context_length);
  } else if (context > 0) {
    printf("context:        %d requested (model default %lld)\n", context,
           (long long)m->context_length);
  } else {
    printf("context:        model default %lld\n",
           (long long)m->context_length);
  }
  printf("prefill chunk:  %lld tokens\n", (long long)m->prefill_chunk);
  printf("weights:        %s (%.2f MiB, hash 0x%016llx)\n", weights_path,
         (double)m->weights_bytes / (1 << 20),
         (unsigned long long)m->weights_hash);
  if (session) {
    printf("session memory: %.2f MiB (arena %.2f MiB)\n",
           (double)moert_session_bytes(session) / (1 << 20),
           (double)m->arena_bytes / (1 << 20));
  } else {
    printf("session memory: on the %s device, allocated when the model runs "
           "(arena %.2f MiB)\n",
           m->device_api ? m->device_api : "GPU",
           (double)m->arena_bytes / (1 << 20));
  }
  if (text) {
    print_text_info(text);
  } else {
    printf("tokenizer:      none (token ids only)\n");
  }
  printf("manifest:       %s\n", m->manifest_json);
}

int main(int argc, char **argv) {
  options_t o;
  if (parse_args(argc, argv, &o)) {
    free_options(&o);
    return 1;
  }
  char weights_path[PATH_MAX + 16];
  char self[PATH_MAX];
  ssize_t self_length = readlink("/proc/self/exe", self, sizeof(self) - 1);
  self[self_length > 0 ? self_length : 0] = '\0';
  if (o.weights) {
    snprintf(weights_path, sizeof(weights_path), "%s", o.weights);
  } else if (self_length > 0) {
    snprintf(weights_path, sizeof(weights_path), "%s.weights", self);
  } else {
    free_options(&o);
    return cli_fail("cannot find the executable's path; pass --weights FILE");
  }
  moert_llm_options llm_options;
  moert_llm_options_initialize(&llm_options);
  llm_options.weights_path = weights_path;
  llm_options.context = o.context;
  llm_options.threads = o.threads;
  llm_options.verify_weights = o.verify_weights;
  /* Describing a GPU model or tokenizing runs nothing: no session, so
   * neither needs the GPU (a CPU model's --info still opens one, to report
   * its memory). */
  llm_options.no_session =
      o.tokenize || (o.info && moert_model.device_interface != 0);
  char error[1024] = "";
  moert_llm *llm = NULL;
  if (moert_llm_open(&moert_model, moert_model_text,
                     (uint64_t)moert_model_text_size, &llm_options, &llm, error,
                     sizeof(error)) != MOERT_STATUS_OK) {
    cli_fail("%s", error);
    if (o.weights && self[0]) {
      /* Name both sides: the file given and the one compiled with us. */
      fprintf(stderr,
              "note: this executable is %s; its own weights are %s.weights\n",
              self, self);
    }
    free_options(&o);
    return 1;
  }
  moert_session_t *session = moert_llm_session(llm);
  moert_text_interface *text = moert_llm_text_interface(llm);
  int has_text = text != NULL;

  static dump_state_t dump;
  if (o.dump_dir && session) {
    if (mkdir(o.dump_dir, 0755) != 0 && errno != EEXIST) {
      moert_llm_free(llm);
      free_options(&o);
      return cli_fail("--dump-activations: cannot create %s: %s", o.dump_dir,
                      strerror(errno));
    }
    dump.dir = o.dump_dir;
    moert_session_set_dump(session, dump_tensor, &dump);
  }
  if (has_text) {
    merge_sampling(&o, &text->defaults);
  }
  int rc = 0;
  if ((o.text.prompt || o.text.chat || o.tokenize) && !has_text) {
    rc = cli_fail("this model was compiled without a tokenizer (moec found no "
                  "tokenizer file beside the checkpoint; compile with "
                  "--tokenizer=FILE), so it takes token ids: --tokens IDS");
  } else if (o.info) {
    print_info(weights_path, session, text, o.context);
  } else if (o.bench) {
    rc = run_bench(session, &o);
  } else if (o.tokenize) {
    rc = cli_run_tokenize(text, o.tokenize);
  } else if (o.text.prompt || o.text.chat) {
    cli_install_interrupt();
    rc = o.text.chat ? cli_run_chat(session, text, &o.text)
                     : cli_run_prompt(session, text, &o.text);
  } else {
    int32_t *tokens = NULL;
    int32_t count = 0;
    rc = parse_tokens(o.tokens ? o.tokens : "0", &tokens, &count);
    if (rc == 0) {
      rc = o.logits_out ? run_logits(session, &o, tokens, count)
                        : run_generate(session, &o, tokens, count);
    }
    free(tokens);
  }
  if (dump.error[0] && rc == 0) {
    rc = cli_fail("--dump-activations: %s", dump.error);
  }
  for (int i = 0; i < dump.count; ++i) {
    free(dump.names[i]);
  }
  /* main runs once per process, but leaves nothing behind all the same
   * (test/fuzz/fuzz_cli.c calls it again and again). */
  memset(&dump, 0, sizeof(dump));
  moert_llm_free(llm);
  free_options(&o);
  return rc;
}
