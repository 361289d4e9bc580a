/*===- cli_text.c - Text in, text out: -p, --chat, --tokenize -------------===*/

#define _GNU_SOURCE
#include "cli_text.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern const moert_model_desc_t moert_model;

static volatile sig_atomic_t interrupted;
static volatile sig_atomic_t generating;

static void on_interrupt(int signal_number) {
  (void)signal_number;
  if (!generating) {
    /* Nothing to stop: leave, as a shell user expects. */
    static const char message[] = "\n";
    ssize_t ignored = write(STDOUT_FILENO, message, sizeof(message) - 1);
    (void)ignored;
    _exit(130);
  }
  interrupted = 1;
}

void cli_install_interrupt(void) {
  struct sigaction action;
  memset(&action, 0, sizeof(action));
  action.sa_handler = on_interrupt;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, NULL);
}

/* What a generation did, for the timings line. */
typedef struct run_stats_t {
  int32_t prompt_tokens, generated;
  double prompt_seconds, generate_seconds;
  const char *stopped; /* why generation ended */
} run_stats_t;

static void print_timings(const run_stats_t *s, const text_options_t *o) {
  fprintf(stderr,
          "\n[%s] prompt: %d tokens in %.1f ms (%.1f tokens/s); generated: "
          "%d tokens in %.1f ms (%.1f tokens/s); seed %llu\n",
          s->stopped, s->prompt_tokens, s->prompt_seconds * 1e3,
          s->prompt_seconds > 0 ? s->prompt_tokens / s->prompt_seconds : 0.0,
          s->generated, s->generate_seconds * 1e3,
          s->generate_seconds > 0 ? s->generated / s->generate_seconds : 0.0,
          (unsigned long long)o->sampling.seed);
}

/* Runs `tokens[fed, count)` into the session (the rest is there). */
static moert_status_t feed(moert_session_t *session,
                           const moert_token_list *tokens, size_t fed) {
  if (fed >= tokens->count) {
    return MOERT_STATUS_OK;
  }
  return moert_session_prefill(session, tokens->ids + fed,
                               (int32_t)(tokens->count - fed), NULL);
}

/* Samples and streams up to `limit` tokens after what the session holds,
 * appending them to `history` (which the repetition penalty reads). The
 * last sampled token is not run (the session ends one token short of
 * history, unless a stop token ended it, which history does not hold). */
static int generate(moert_session_t *session, const moert_text_interface *text,
                    moert_sampler *sampler, moert_token_list *history,
                    int32_t limit, run_stats_t *stats) {
  int32_t vocab = (int32_t)moert_model.vocab;
  float *logits = malloc((size_t)vocab * sizeof(float));
  if (!logits) {
    return cli_fail("out of memory for the logits");
  }
  moert_detokenizer decoder;
  moert_detokenizer_init(&decoder, text->tokenizer, /*skip_special=*/1);
  decoder.at_start = 0; /* the text continues: keep its leading space */
  moert_text piece = {0};
  interrupted = 0;
  generating = 1;
  double start = cli_now_seconds();
  stats->stopped = "limit";
  int rc = 0;
  for (int32_t produced = 0; limit < 0 || produced < limit; ++produced) {
    if (interrupted) {
      stats->stopped = "interrupted";
      break;
    }
    memcpy(logits, moert_session_logits(session),
           (size_t)vocab * sizeof(float));
    int32_t next = moert_sampler_sample(sampler, logits, vocab, history->ids,
                                        history->count);
    if (moert_text_is_stop(text, next)) {
      stats->stopped = "stop token";
      break;
    }
    if (moert_token_list_push(history, next) != MOERT_STATUS_OK) {
      rc = cli_fail("out of memory");
      break;
    }
    ++stats->generated;
    piece.length = 0;
    if (next < moert_tokenizer_vocab_size(text->tokenizer) &&
        moert_detokenizer_push(&decoder, next, &piece) == MOERT_STATUS_OK &&
        piece.length) {
      fwrite(piece.data, 1, piece.length, stdout);
      fflush(stdout);
    }
    if (limit >= 0 && produced + 1 == limit) {
      break;
    }
    if (moert_session_position(session) >= moert_session_context(session)) {
      stats->stopped = "context full";
      break;
    }
    moert_status_t status = moert_session_decode(session, next);
    if (status != MOERT_STATUS_OK) {
      rc = cli_session_failed(session, status);
      break;
    }
  }
  generating = 0;
  piece.length = 0;
  if (moert_detokenizer_flush(&decoder, &piece) == MOERT_STATUS_OK &&
      piece.length) {
    fwrite(piece.data, 1, piece.length, stdout);
  }
  fflush(stdout);
  stats->generate_seconds = cli_now_seconds() - start;
  moert_text_free(&piece);
  free(logits);
  return rc;
}

/* What a message about the prompt names: "-p", or "-f FILE". */
static const char *prompt_name(const text_options_t *o) {
  static char name[4200];
  if (!o->prompt_source) {
    return "-p";
  }
  snprintf(name, sizeof(name), "-f %s", o->prompt_source);
  return name;
}

int cli_run_prompt(moert_session_t *session, const moert_text_interface *text,
                   const text_options_t *o) {
  moert_token_list tokens = {0};
  if (moert_text_encode_prompt(text, o->prompt, strlen(o->prompt),
                               /*add_bos=*/1, &tokens) != MOERT_STATUS_OK) {
    moert_token_list_free(&tokens);
    return cli_fail("out of memory while tokenizing the prompt");
  }
  int32_t context = moert_session_context(session);
  if (tokens.count == 0) {
    moert_token_list_free(&tokens);
    return cli_fail("%s: the prompt is empty (and %s has no BOS token to start "
                    "from)",
                    prompt_name(o), moert_model.family);
  }
  if ((int64_t)tokens.count >= context) {
    fprintf(stderr,
            "error: %s: the prompt is %zu tokens and the context holds %d: "
            "shorten it or raise -c/--ctx-size (the model was trained on "
            "%lld)\n",
            prompt_name(o), tokens.count, context,
            (long long)moert_model.context_length);
    moert_token_list_free(&tokens);
    return 1;
  }
  if (o->display_prompt) {
    fputs(o->prompt, stdout);
    fflush(stdout);
  }
  run_stats_t stats = {.prompt_tokens = (int32_t)tokens.count};
  double start = cli_now_seconds();
  moert_status_t status = feed(session, &tokens, 0);
  stats.prompt_seconds = cli_now_seconds() - start;
  int rc = 0;
  if (status != MOERT_STATUS_OK) {
    rc = cli_session_failed(session, status);
  } else {
    moert_sampler sampler;
    moert_sampler_init(&sampler, &o->sampling);
    rc = generate(session, text, &sampler, &tokens, o->generate, &stats);
    moert_sampler_free(&sampler);
    fputc('\n', stdout);
    fflush(stdout);
    print_timings(&stats, o);
  }
  moert_token_list_free(&tokens);
  return rc;
}

/*===----------------------------------------------------------------------===*/
/* Chat                                                                       */
/*===----------------------------------------------------------------------===*/

/* The conversation as token ids: a head (BEGIN and the system turn) that
 * always stays, then turns, oldest first, dropped from the front when the
 * context would overflow. */
typedef struct conversation_t {
  moert_token_list head;
  moert_token_list *turns;
  size_t turn_count, turn_capacity;
  size_t first; /* turns before it were dropped */
} conversation_t;

static moert_status_t add_turn(conversation_t *c, moert_token_list turn) {
  if (c->turn_count == c->turn_capacity) {
    size_t capacity = c->turn_capacity ? 2 * c->turn_capacity : 16;
    moert_token_list *turns =
        realloc(c->turns, capacity * sizeof(moert_token_list));
    if (!turns) {
      return MOERT_STATUS_OUT_OF_MEMORY;
    }
    c->turns = turns;
    c->turn_capacity = capacity;
  }
  c->turns[c->turn_count++] = turn;
  return MOERT_STATUS_OK;
}

static size_t rendered_length(const conversation_t *c) {
  size_t n = c->head.count;
  for (size_t i = c->first; i < c->turn_count; ++i) {
    n += c->turns[i].count;
  }
  return n;
}

static moert_status_t render(const conversation_t *c, moert_token_list *out) {
  out->count = 0;
  for (size_t i = 0; i < c->head.count; ++i) {
    MOERT_RETURN_IF_ERROR(moert_token_list_push(out, c->head.ids[i]));
  }
  for (size_t t = c->first; t < c->turn_count; ++t) {
    for (size_t i = 0; i < c->turns[t].count; ++i) {
      MOERT_RETURN_IF_ERROR(moert_token_list_push(out, c->turns[t].ids[i]));
    }
  }
  return MOERT_STATUS_OK;
}

static void free_conversation(conversation_t *c) {
  moert_token_list_free(&c->head);
  for (size_t i = 0; i < c->turn_count; ++i) {
    moert_token_list_free(&c->turns[i]);
  }
  free(c->turns);
}

/* The user's line as a turn: in the chat format, or (a base model) as the
 * text itself, which the model continues. */
static moert_status_t user_turn(const moert_text_interface *text,
                                const char *line, moert_token_list *turn) {
  if (!text->chat) {
    return moert_tokenizer_encode(text->tokenizer, line, strlen(line), 0, turn);
  }
  MOERT_RETURN_IF_ERROR(moert_chat_append_turn(
      text, MOERT_CHAT_USER_PREFIX, line, MOERT_CHAT_USER_SUFFIX, turn));
  return moert_chat_append_slot(text, MOERT_CHAT_ASSISTANT_PREFIX, turn);
}

static moert_status_t start_conversation(const moert_text_interface *text,
                                         const text_options_t *o,
                                         conversation_t *c) {
  if (text->add_bos && text->bos_id >= 0 && !text->chat) {
    MOERT_RETURN_IF_ERROR(moert_token_list_push(&c->head, text->bos_id));
  }
  if (!text->chat) {
    return MOERT_STATUS_OK;
  }
  MOERT_RETURN_IF_ERROR(
      moert_chat_append_slot(text, MOERT_CHAT_BEGIN, &c->head));
  uint32_t bytes = 0;
  const char *fallback = moert_chat_default_system(text, &bytes);
  char *system = NULL;
  if (o->system) {
    system = strdup(o->system);
  } else if (fallback) {
    system = strndup(fallback, bytes);
  }
  moert_status_t status = MOERT_STATUS_OK;
  if (system) {
    status = moert_chat_append_turn(text, MOERT_CHAT_SYSTEM_PREFIX, system,
                                    MOERT_CHAT_SYSTEM_SUFFIX, &c->head);
  }
  free(system);
  return status;
}

int cli_run_chat(moert_session_t *session, const moert_text_interface *text,
                 const text_options_t *o) {
  int interactive = isatty(STDIN_FILENO);
  int32_t context = moert_session_context(session);
  conversation_t c = {0};
  moert_token_list rendered = {0};
  moert_sampler sampler;
  moert_sampler_init(&sampler, &o->sampling);
  int rc = 0;
  if (start_conversation(text, o, &c) != MOERT_STATUS_OK) {
    rc = cli_fail("out of memory");
  }
  if (interactive && rc == 0) {
    fprintf(stderr,
            "%s chat%s. Type a message and press Enter; Ctrl-C stops a "
            "reply, Ctrl-D (or Ctrl-C at the prompt) quits.\n",
            moert_model.family,
            text->chat ? "" : " (a base model: it continues your text)");
  }
  /* The reply's room: -n, or a quarter of the context. */
  size_t reserve = o->generate >= 0 ? (size_t)o->generate : (size_t)context / 4;
  char *line = NULL;
  size_t line_capacity = 0;
  size_t fed = 0; /* rendered[0, fed) is in the session */
  while (rc == 0) {
    if (interactive) {
      fputs("\n> ", stdout);
      fflush(stdout);
    }
    ssize_t length = getline(&line, &line_capacity, stdin);
    if (length < 0) {
      break;
    }
    while (length > 0 &&
           (line[length - 1] == '\n' || line[length - 1] == '\r')) {
      line[--length] = '\0';
    }
    if (length == 0) {
      continue;
    }
    moert_token_list turn = {0};
    if (user_turn(text, line, &turn) != MOERT_STATUS_OK ||
        add_turn(&c, turn) != MOERT_STATUS_OK) {
      moert_token_list_free(&turn);
      rc = cli_fail("out of memory");
      break;
    }
    /* Too long: drop the oldest exchanges, a user turn with its reply, so
     * the conversation still starts with a user turn (never the head or
     * this turn). Turns alternate user, reply from index 0. */
    size_t dropped = 0;
    while (rendered_length(&c) + reserve > (size_t)context &&
           c.first + 2 < c.turn_count) {
      c.first += 2;
      dropped += 2;
    }
    if (rendered_length(&c) + 1 > (size_t)context) {
      fprintf(stderr,
              "error: this message is %zu tokens and does not fit the context "
              "of %d with the conversation's start; it was not sent (raise "
              "-c/--ctx-size)\n",
              turn.count, context);
      moert_token_list_free(&c.turns[--c.turn_count]);
      if (!interactive) {
        rc = 1;
      }
      continue;
    }
    if (dropped) {
      fprintf(stderr,
              "[the %zu oldest turns were dropped to fit the context "
              "of %d tokens]\n",
              dropped, context);
    }
    /* A capacity rule applies per prefill call: the publisher's generate
     * prefills the whole conversation, so this does too, every turn. */
    if (dropped || moert_model.prefill_whole_sequence) {
      moert_session_reset(session);
      fed = 0;
    }
    if (render(&c, &rendered) != MOERT_STATUS_OK) {
      rc = cli_fail("out of memory");
      break;
    }
    run_stats_t stats = {.prompt_tokens = (int32_t)(rendered.count - fed)};
    double start = cli_now_seconds();
    moert_status_t status = feed(session, &rendered, fed);
    stats.prompt_seconds = cli_now_seconds() - start;
    if (status != MOERT_STATUS_OK) {
      rc = cli_session_failed(session, status);
      break;
    }
    fed = rendered.count;
    /* The reply: what the model writes, then the format's end of turn. */
    int32_t room = context - moert_session_position(session);
    int32_t limit = o->generate >= 0 && o->generate < room ? o->generate : room;
    moert_token_list reply = {0};
    size_t before = rendered.count;
    rc = generate(session, text, &sampler, &rendered, limit, &stats);
    for (size_t i = before; rc == 0 && i < rendered.count; ++i) {
      if (moert_token_list_push(&reply, rendered.ids[i]) != MOERT_STATUS_OK) {
        rc = cli_fail("out of memory");
      }
    }
    /* The session holds the reply but the last token sampled (unless a
     * stop token, which the reply does not hold, ended it). */
    fed = (size_t)moert_session_position(session);
    if (text->chat && rc == 0 &&
        moert_chat_append_slot(text, MOERT_CHAT_ASSISTANT_SUFFIX, &reply) !=
            MOERT_STATUS_OK) {
      rc = cli_fail("out of memory");
    }
    if (add_turn(&c, reply) != MOERT_STATUS_OK) {
      moert_token_list_free(&reply);
      rc = cli_fail("out of memory");
    }
    fputc('\n', stdout);
    fflush(stdout);
    if (interactive) {
      print_timings(&stats, o);
    }
  }
  free(line);
  moert_token_list_free(&rendered);
  moert_sampler_free(&sampler);
  free_conversation(&c);
  return rc;
}

int cli_run_tokenize(const moert_text_interface *text, const char *input) {
  moert_token_list ids = {0};
  if (moert_tokenizer_encode(text->tokenizer, input, strlen(input), 1, &ids) !=
      MOERT_STATUS_OK) {
    return cli_fail("out of memory while tokenizing the text");
  }
  for (size_t i = 0; i < ids.count; ++i) {
    printf(i ? ",%d" : "%d", ids.ids[i]);
  }
  putchar('\n');
  moert_token_list_free(&ids);
  return 0;
}
