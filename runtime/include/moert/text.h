/*===- text.h - The model's text interface: tokenizer, chat, defaults -----===*
 *
 * Reads the blob `moec compile` embeds (moert/text_format.h) in place.
 *
 *===----------------------------------------------------------------------===*/

#ifndef MOERT_TEXT_H
#define MOERT_TEXT_H

#include <stddef.h>
#include <stdint.h>

#include "moert/sampler.h"
#include "moert/status.h"
#include "moert/tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct moert_chat_part {
  uint32_t slot, kind; /* moert_chat_slot, moert_chat_part_kind */
  int32_t id;
  const char *text;
  uint32_t text_bytes;
} moert_chat_part;

typedef struct moert_text_interface {
  moert_tokenizer *tokenizer;
  int32_t bos_id; /* -1: none */
  int add_bos;    /* a prompt starts with bos_id */
  moert_sampler_params defaults;
  const int32_t *stop;
  uint32_t stop_count;
  moert_chat_part *chat; /* NULL for a base model */
  uint32_t chat_count;
} moert_text_interface;

/* Reads `blob`, which must outlive the interface. On failure `error` says
 * why. */
moert_status_t moert_text_interface_open(const void *blob, size_t bytes,
                                         moert_text_interface *out, char *error,
                                         size_t error_size);
void moert_text_interface_close(moert_text_interface *text);

int moert_text_is_stop(const moert_text_interface *text, int32_t id);

/* Appends the ids of a prompt: the family's BOS token first when it starts
 * prompts with one (and `add_bos`), then `prompt[0, length)` with special
 * tokens written in it parsed (as llama.cpp does for -p). */
moert_status_t moert_text_encode_prompt(const moert_text_interface *text,
                                        const char *prompt, size_t length,
                                        int add_bos, moert_token_list *out);

/* Appends the ids of chat slot `slot` (moert_chat_slot); `content` (may be
 * NULL) is the turn's text, tokenized as text (written special tokens stay
 * text). */
moert_status_t moert_chat_append_slot(const moert_text_interface *text,
                                      uint32_t slot, moert_token_list *out);
moert_status_t moert_chat_append_turn(const moert_text_interface *text,
                                      uint32_t prefix_slot, const char *content,
                                      uint32_t suffix_slot,
                                      moert_token_list *out);

/* The default system text, or NULL. */
const char *moert_chat_default_system(const moert_text_interface *text,
                                      uint32_t *bytes);

#ifdef __cplusplus
}
#endif

#endif /* MOERT_TEXT_H */
