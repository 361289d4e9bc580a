/*===- complete.c - A compiled model inside a C program ------------------===*
 *
 * What an application does with `moec compile --emit=lib`: open the model,
 * tokenize a prompt, feed it, sample and print until a stop token or the
 * limit. Build it against any model compiled as a library:
 *
 *   build/bin/moec compile examples/kjv/model --emit=lib -o out/kjv
 *   cc -DMODEL_HEADER='"kjv.h"' -DMODEL_OPEN=kjv_open \
 *      examples/embed/complete.c -Iout out/libkjv.a -lm -lpthread -ldl \
 *      -o complete
 *   ./complete out/kjv.weights "And it came to pass" 40
 *
 * Sampling uses the family's defaults (greedy for kjv); a fourth argument
 * sets the temperature and a fifth the seed.
 *
 *===----------------------------------------------------------------------===*/

#include MODEL_HEADER

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr,
            "usage: %s <model.weights> <prompt> <tokens> [temperature] "
            "[seed]\n",
            argv[0]);
    return 2;
  }
  moert_llm_options options;
  moert_llm_options_initialize(&options);
  options.weights_path = argv[1];
  moert_llm *llm = NULL;
  char error[1024];
  if (MODEL_OPEN(&options, &llm, error, sizeof(error)) != MOERT_STATUS_OK) {
    fprintf(stderr, "error: %s\n", error);
    return 1;
  }

  // Tokenize: ask for the count first, then fill a buffer that size.
  const char *prompt = argv[2];
  int32_t count = moert_llm_tokenize(llm, prompt, strlen(prompt),
                                     /*add_bos=*/1, NULL, 0);
  int32_t *ids =
      count > 0 ? (int32_t *)malloc((size_t)count * sizeof(int32_t)) : NULL;
  if (!ids) {
    fprintf(stderr, "error: cannot tokenize the prompt: %s\n",
            count < 0 ? moert_llm_last_error(llm) : "it is empty");
    moert_llm_free(llm);
    return 1;
  }
  moert_llm_tokenize(llm, prompt, strlen(prompt), 1, ids, count);
  int rc = 0;
  if (moert_llm_feed(llm, ids, count) != MOERT_STATUS_OK) {
    fprintf(stderr, "error: %s\n", moert_llm_last_error(llm));
    rc = 1;
  }

  moert_sampler_params params;
  moert_llm_default_sampling(llm, &params);
  if (argc > 4) {
    params.temperature = strtof(argv[4], NULL);
  }
  if (argc > 5) {
    params.seed = strtoull(argv[5], NULL, 10);
  }
  moert_sampler sampler;
  moert_sampler_init(&sampler, &params);
  fputs(prompt, stdout);
  for (int i = 0, limit = atoi(argv[3]); rc == 0 && i < limit; ++i) {
    int32_t next = moert_llm_sample(llm, &sampler);
    if (next < 0 || moert_llm_is_stop(llm, next)) {
      break;
    }
    fputs(moert_llm_token_text(llm, next, NULL), stdout);
    if (i + 1 < limit && moert_llm_feed(llm, &next, 1) != MOERT_STATUS_OK) {
      break; // the context is full
    }
  }
  fputc('\n', stdout);
  moert_sampler_free(&sampler);
  free(ids);
  moert_llm_free(llm);
  return rc;
}
