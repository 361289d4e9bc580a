/*===- llm.c - A compiled model inside an application ---------------------===*
 *
 * moert/llm.h over the lower-level pieces: the weight file, one session,
 * the embedded text interface, a detokenizer, and the history of fed
 * tokens that the repetition penalty reads.
 *
 *===----------------------------------------------------------------------===*/

#include "moert/llm.h"

#include "format_error.h"
#include "moert/session.h"
#include "moert/text.h"
#include "moert/tokenizer.h"
#include "moert/weights.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct moert_llm {
  const moert_model_desc_t *model;
  moert_weights_t *weights;
  moert_session_t *session;
  moert_text_interface text;
  int has_text;
  moert_detokenizer decoder;
  moert_token_list history; /* fed since the last reset */
  moert_token_list scratch_ids;
  moert_text piece;
  float *logits; /* the sampler's copy: it rewrites them */
  char error[512];
};

void moert_llm_options_initialize(moert_llm_options *options) {
  memset(options, 0, sizeof(*options));
}

static void reset_decoder(moert_llm *llm) {
  if (llm->has_text) {
    moert_detokenizer_init(&llm->decoder, llm->text.tokenizer,
                           /*skip_special=*/1);
    llm->decoder.at_start = 0; /* generated text keeps its leading space */
  }
}

moert_status_t moert_llm_open(const moert_model_desc_t *model, const void *text,
                              uint64_t text_size,
                              const moert_llm_options *options, moert_llm **out,
                              char *error, size_t error_size) {
  *out = NULL;
  if (!model || !options || !options->weights_path) {
    return moert_error(
        MOERT_STATUS_INVALID_ARGUMENT, error, error_size,
        "moert_llm_open: the model and options->weights_path are "
        "required");
  }
  // Before anything runs a kernel: a clear message, not SIGILL.
  if (!moert_model_runs_here(model)) {
    return moert_error(
        MOERT_STATUS_UNSUPPORTED_CPU, error, error_size,
        "the model was compiled for --target=%s, and this CPU lacks "
        "instructions its kernels use; compile the model with "
        "--target=host (or a target this CPU has: moec targets)",
        model->target);
  }
  moert_set_threads(options->threads);
  moert_llm *llm = calloc(1, sizeof(*llm));
  if (!llm) {
    return moert_error(MOERT_STATUS_OUT_OF_MEMORY, error, error_size,
                       "out of memory");
  }
  llm->model = model;
  moert_status_t status = moert_weights_open(options->weights_path, model,
                                             &llm->weights, error, error_size);
  if (status == MOERT_STATUS_OK && options->verify_weights) {
    status = moert_weights_verify(llm->weights, error, error_size);
  }
  if (status == MOERT_STATUS_OK && !options->no_session) {
    moert_session_options_t session_options;
    moert_session_options_initialize(&session_options);
    session_options.context = options->context;
    session_options.error = error;
    session_options.error_size = error_size;
    if (error && error_size) {
      error[0] = '\0';
    }
    status = moert_session_create(model, llm->weights, &session_options,
                                  &llm->session);
    /* The session's own message, when it wrote one, says more. */
    if (status != MOERT_STATUS_OK && status != MOERT_STATUS_NO_DEVICE &&
        !(error && error_size && error[0])) {
      moert_error(status, error, error_size, "cannot create a session: %s",
                  moert_status_name(status));
    }
  }
  if (status == MOERT_STATUS_OK && text_size > 0) {
    char why[384] = "";
    status = moert_text_interface_open(text, (size_t)text_size, &llm->text, why,
                                       sizeof(why));
    if (status != MOERT_STATUS_OK) {
      moert_error(status, error, error_size,
                  "the model's tokenizer does not load: %s", why);
    }
    llm->has_text = status == MOERT_STATUS_OK;
  }
  if (status == MOERT_STATUS_OK) {
    llm->logits = malloc((size_t)model->vocab * sizeof(float));
    if (!llm->logits) {
      status = moert_error(MOERT_STATUS_OUT_OF_MEMORY, error, error_size,
                           "out of memory for the logits");
    }
  }
  if (status != MOERT_STATUS_OK) {
    moert_llm_free(llm);
    return status;
  }
  reset_decoder(llm);
  *out = llm;
  return MOERT_STATUS_OK;
}

void moert_llm_free(moert_llm *llm) {
  if (!llm) {
    return;
  }
  if (llm->has_text) {
    moert_text_interface_close(&llm->text);
  }
  moert_session_release(llm->session);
  moert_weights_release(llm->weights);
  moert_token_list_free(&llm->history);
  moert_token_list_free(&llm->scratch_ids);
  moert_text_free(&llm->piece);
  free(llm->logits);
  free(llm);
}

int32_t moert_llm_vocab(const moert_llm *llm) {
  return (int32_t)llm->model->vocab;
}

int32_t moert_llm_context(const moert_llm *llm) {
  return llm->session ? moert_session_context(llm->session) : 0;
}

int32_t moert_llm_position(const moert_llm *llm) {
  return llm->session ? moert_session_position(llm->session) : 0;
}

/* False, with llm->error saying why, when `llm` was opened without a
 * session (moert_llm_options.no_session). */
static int has_session(moert_llm *llm, const char *what) {
  if (!llm->session) {
    snprintf(llm->error, sizeof(llm->error),
             "%s: the model was opened without a session (no_session)", what);
  }
  return llm->session != NULL;
}

int moert_llm_has_tokenizer(const moert_llm *llm) { return llm->has_text; }

int32_t moert_llm_tokenize(moert_llm *llm, const char *text, size_t length,
                           int add_bos, int32_t *ids, int32_t capacity) {
  if (!llm->has_text) {
    snprintf(llm->error, sizeof(llm->error),
             "the model was compiled without a tokenizer");
    return -1;
  }
  moert_token_list *list = &llm->scratch_ids;
  list->count = 0;
  if (moert_text_encode_prompt(&llm->text, text, length, add_bos, list) !=
          MOERT_STATUS_OK ||
      list->count > INT32_MAX) {
    snprintf(llm->error, sizeof(llm->error), "out of memory while tokenizing");
    return -1;
  }
  size_t room = capacity > 0 ? (size_t)capacity : 0;
  size_t copy = list->count < room ? list->count : room;
  if (copy) {
    memcpy(ids, list->ids, copy * sizeof(int32_t));
  }
  return (int32_t)list->count;
}

moert_status_t moert_llm_feed(moert_llm *llm, const int32_t *ids,
                              int32_t count) {
  if (count <= 0) {
    return MOERT_STATUS_OK;
  }
  if (!has_session(llm, "moert_llm_feed")) {
    return MOERT_STATUS_INVALID_ARGUMENT;
  }
  // The history grows first, so a failure leaves both untouched.
  size_t before = llm->history.count;
  for (int32_t i = 0; i < count; ++i) {
    if (moert_token_list_push(&llm->history, ids[i]) != MOERT_STATUS_OK) {
      llm->history.count = before;
      snprintf(llm->error, sizeof(llm->error), "out of memory");
      return MOERT_STATUS_OUT_OF_MEMORY;
    }
  }
  moert_status_t status =
      count == 1 && moert_session_position(llm->session) > 0
          ? moert_session_decode(llm->session, ids[0])
          : moert_session_prefill(llm->session, ids, count, NULL);
  if (status != MOERT_STATUS_OK) {
    llm->history.count = before;
    snprintf(llm->error, sizeof(llm->error), "%s",
             moert_session_last_error(llm->session));
  }
  return status;
}

const float *moert_llm_logits(const moert_llm *llm) {
  return llm->session ? moert_session_logits(llm->session) : NULL;
}

void moert_llm_default_sampling(const moert_llm *llm,
                                moert_sampler_params *params) {
  if (llm->has_text) {
    *params = llm->text.defaults;
  } else {
    memset(params, 0, sizeof(*params));
    params->top_p = 1.0f;
    params->repeat_penalty = 1.0f;
    params->repeat_last_n = 64;
  }
  params->seed = 0;
}

int32_t moert_llm_sample(moert_llm *llm, moert_sampler *sampler) {
  if (!has_session(llm, "moert_llm_sample")) {
    return -1;
  }
  if (moert_session_position(llm->session) == 0) {
    snprintf(llm->error, sizeof(llm->error),
             "moert_llm_sample: nothing was fed yet");
    return -1;
  }
  int32_t vocab = (int32_t)llm->model->vocab;
  memcpy(llm->logits, moert_session_logits(llm->session),
         (size_t)vocab * sizeof(float));
  return moert_sampler_sample(sampler, llm->logits, vocab, llm->history.ids,
                              llm->history.count);
}

int moert_llm_is_stop(const moert_llm *llm, int32_t id) {
  return llm->has_text && moert_text_is_stop(&llm->text, id);
}

const char *moert_llm_token_text(moert_llm *llm, int32_t id, size_t *length) {
  llm->piece.length = 0;
  // Ids the model has beyond its tokenizer's vocabulary are not text.
  if (llm->has_text && id >= 0 &&
      id < moert_tokenizer_vocab_size(llm->text.tokenizer) &&
      moert_detokenizer_push(&llm->decoder, id, &llm->piece) !=
          MOERT_STATUS_OK) {
    llm->piece.length = 0;
  }
  if (length) {
    *length = llm->piece.length;
  }
  return llm->piece.length ? llm->piece.data : "";
}

void moert_llm_reset(moert_llm *llm) {
  if (llm->session) {
    moert_session_reset(llm->session);
  }
  llm->history.count = 0;
  reset_decoder(llm);
}

const char *moert_llm_last_error(const moert_llm *llm) { return llm->error; }

moert_session_t *moert_llm_session(moert_llm *llm) { return llm->session; }

moert_text_interface *moert_llm_text_interface(moert_llm *llm) {
  return llm->has_text ? &llm->text : NULL;
}
