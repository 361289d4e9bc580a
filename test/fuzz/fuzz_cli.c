//===- fuzz_cli.c - The compiled executable's command line and prompts ----===//
//
// A compiled executable's main() (runtime/src/cli.c, renamed moert_cli_main)
// linked with a real tiny physics model that moec compiles at build time
// (make_cli_model.py): the fuzzer chooses the arguments, the prompt and
// what --chat reads on stdin, and the model runs them.
//
// Input: arguments separated by NUL bytes; an empty argument (two NULs)
// ends them, and the rest is stdin. The weight file, -n 8 and a small
// --bench (16 prompt tokens, 8 generated, one timed run) are given first, so
// fuzzed flags override them. Every run must return exit status 0 or 1.
//
// Left out, so that runs stay fast and write only to a scratch directory:
// --help (it exits the process), names with '/' or a leading '.' for the
// flags that write files (--logits-out, --dump-activations, whose names
// then move into the scratch directory), and sizes that make one run slow or
// large (-c above 512, -t above 4, --repeat above 2, --prompt-len and
// --gen above 256, -n above 64 or negative: until the context is full).
// Their parsing is the same parse_int as the flags run.
//
//===----------------------------------------------------------------------===//

#include <fcntl.h>
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdio_ext.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int moert_cli_main(int argc, char **argv);

enum { kMaxArgs = 48 };

static char work_dir[] = "/tmp/moec-fuzz-cli-XXXXXX";
// What --chat reads: a file in work_dir that fd 0 points at during a run.
static int stdin_fd = -1;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  // Files the executable writes (--logits-out, --dump-activations) land in
  // a scratch directory: their names are rewritten into it (no chdir, so
  // the corpus paths libFuzzer was given stay valid).
  if (!mkdtemp(work_dir)) {
    perror("fuzz_cli: scratch directory");
    abort();
  }
  char path[sizeof(work_dir) + 8];
  snprintf(path, sizeof(path), "%s/stdin", work_dir);
  stdin_fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
  if (stdin_fd < 0) {
    perror("fuzz_cli: stdin file");
    abort();
  }
  return 0;
}

// ASan keeps 256 MB of freed memory in quarantine by default; the kernels'
// per-task scratch (malloc'd inside parallel loops, thousands of blocks a
// call) then cycles through fresh pages: page faults, memset and ASan's
// allocator took more than half of a long --chat input's time. 16 MB holds
// every block a run frees for many calls; 3.1 s -> 0.8 s on that input.
const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "quarantine_size_mb=16"; }

static long number_after(char **args, int count, int i) {
  return i + 1 < count ? strtol(args[i + 1], NULL, 10) : 0;
}

// Whether the arguments stay inside what this harness runs (see above).
static int runnable(char **args, int count) {
  for (int i = 0; i < count; ++i) {
    const char *a = args[i];
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      return 0;
    }
    if ((!strcmp(a, "--logits-out") || !strcmp(a, "--dump-activations")) &&
        i + 1 < count && (strchr(args[i + 1], '/') || args[i + 1][0] == '.')) {
      return 0;
    }
    long n = number_after(args, count, i);
    if (((!strcmp(a, "-c") || !strcmp(a, "--ctx-size")) && n > 512) ||
        ((!strcmp(a, "-t") || !strcmp(a, "--threads")) && n > 4) ||
        (!strcmp(a, "--repeat") && n > 2) ||
        ((!strcmp(a, "--prompt-len") || !strcmp(a, "--gen")) && n > 256) ||
        ((!strcmp(a, "-n") || !strcmp(a, "--n-predict")) &&
         (n > 64 || n < 0))) {
      return 0;
    }
  }
  return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *copy = malloc(size + 1);
  memcpy(copy, data, size);
  copy[size] = '\0';

  // The defaults would generate until the context (256) is full, each --chat
  // turn too, and --bench would run 128 + 64 tokens four times: the fuzzer
  // ran about 250 inputs a second, and about 1100 with these presets. The
  // parsing and the paths run are the same at small sizes.
  static char preset[][PATH_MAX] = {"fuzz_cli",
                                    "--weights",
                                    MOE_FUZZ_CLI_WEIGHTS,
                                    "--prompt-len",
                                    "16",
                                    "--gen",
                                    "8",
                                    "--repeat",
                                    "1",
                                    "-n",
                                    "8"};
  enum { kPreset = sizeof(preset) / sizeof(preset[0]) };
  char *argv[kMaxArgs + kPreset + 1];
  int argc = 0;
  while (argc < kPreset) {
    argv[argc] = preset[argc];
    ++argc;
  }
  int first = argc;
  size_t at = 0;
  const char *input = "";
  size_t input_size = 0;
  while (at < size && argc < kMaxArgs + kPreset) {
    size_t length = strlen(copy + at);
    if (length == 0) {
      input = copy + at + 1;
      input_size = size - at - 1;
      break;
    }
    argv[argc++] = copy + at;
    at += length + 1;
  }
  argv[argc] = NULL;

  if (runnable(argv + first, argc - first)) {
    // Names of files to write (checked above to hold no '/') move into the
    // scratch directory.
    static char rewritten[kMaxArgs + kPreset][256];
    for (int i = first; i + 1 < argc; ++i) {
      if (!strcmp(argv[i], "--logits-out") ||
          !strcmp(argv[i], "--dump-activations")) {
        snprintf(rewritten[i], sizeof(rewritten[i]), "%s/%s", work_dir,
                 argv[i + 1]);
        argv[i + 1] = rewritten[i];
      }
    }
    // fd 0 reads this input's stdin from the start; stdin's FILE forgets
    // what it buffered and its EOF from the run before.
    if (ftruncate(stdin_fd, 0) != 0 ||
        pwrite(stdin_fd, input, input_size, 0) != (ssize_t)input_size ||
        dup2(stdin_fd, STDIN_FILENO) < 0 ||
        lseek(STDIN_FILENO, 0, SEEK_SET) != 0) {
      perror("fuzz_cli: stdin");
      abort();
    }
    __fpurge(stdin);
    clearerr(stdin);
    int rc = moert_cli_main(argc, argv);
    fflush(stdout);
    if (rc != 0 && rc != 1) {
      fprintf(stderr, "fuzz_cli: exit status %d, expected 0 or 1\n", rc);
      abort();
    }
  }
  free(copy);
  return 0;
}
