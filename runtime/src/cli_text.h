/*===- cli_text.h - Text in, text out: -p, --chat, --tokenize -------------===*
 *
 * The text modes of a compiled model's command line (cli.c parses the
 * flags): a prompt completed with streaming output, an interactive chat in
 * the model's own format, and the tokenizer on its own.
 *
 *===----------------------------------------------------------------------===*/

#ifndef MOERT_CLI_TEXT_H
#define MOERT_CLI_TEXT_H

#include "moert/moert.h"

typedef struct text_options_t {
  const char *prompt;        /* -p, or the text of -f's file */
  const char *prompt_source; /* -f's file name; NULL for -p */
  const char *system;        /* --system */
  int chat;                  /* --chat */
  int32_t generate;   /* -n; -1: until a stop token or the context ends */
  int display_prompt; /* print the prompt before the continuation */
  moert_sampler_params sampling;
} text_options_t;

/* Each returns the process's exit code, having printed any error. */
int cli_run_prompt(moert_session_t *session, const moert_text_interface *text,
                   const text_options_t *o);
int cli_run_chat(moert_session_t *session, const moert_text_interface *text,
                 const text_options_t *o);
int cli_run_tokenize(const moert_text_interface *text, const char *input);

/* Shared with cli.c (which defines them): prints "error: ..." to stderr and
 * returns 1; the monotonic clock in seconds; a session's failure. */
int cli_fail(const char *format, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;
double cli_now_seconds(void);
int cli_session_failed(moert_session_t *session, moert_status_t status);

/* Installs the Ctrl-C handler: the first press stops generation, a press
 * while nothing generates ends the program. */
void cli_install_interrupt(void);

#endif /* MOERT_CLI_TEXT_H */
