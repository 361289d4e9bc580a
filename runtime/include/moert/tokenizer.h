/*===- tokenizer.h - Text to token ids and back ---------------------------===*
 *
 * The tokenizers the seed families ship, read from the blob `moec compile`
 * embeds (moert/text_format.h): Hugging Face byte-level BPE (GPT-2 and its
 * descendants), BPE with byte fallback (SentencePiece-converted models), and
 * tiktoken ranks, which moec turns into byte-level merges.
 *
 * Encoding matches Hugging Face `tokenizers` (Tokenizer.encode with
 * add_special_tokens=False) and tiktoken (allowed_special="all"); text that
 * is not UTF-8 is first decoded with U+FFFD replacement, as a JavaScript or
 * Python caller would. Decoding streams: it never returns half a character.
 *
 *===----------------------------------------------------------------------===*/

#ifndef MOERT_TOKENIZER_H
#define MOERT_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "moert/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct moert_tokenizer moert_tokenizer;

/* A growable list of token ids. */
typedef struct moert_token_list {
  int32_t *ids;
  size_t count, capacity;
} moert_token_list;

/* A growable byte string (NUL terminated when non-empty). */
typedef struct moert_text {
  char *data;
  size_t length, capacity;
} moert_text;

/* Reads a MOERT_TEXT_TOKENIZER payload, which must outlive the tokenizer
 * (it is read in place). On failure *out is NULL and `error` says why. */
moert_status_t moert_tokenizer_create(const void *payload, size_t bytes,
                                      moert_tokenizer **out, char *error,
                                      size_t error_size);
void moert_tokenizer_destroy(moert_tokenizer *tokenizer);

int32_t moert_tokenizer_vocab_size(const moert_tokenizer *tokenizer);

/* Appends the ids of text[0, length) to `out`. With `parse_special`, added
 * tokens written in the text (e.g. "<|endoftext|>") become their ids;
 * without, they are ordinary text. */
moert_status_t moert_tokenizer_encode(const moert_tokenizer *tokenizer,
                                      const char *text, size_t length,
                                      int parse_special, moert_token_list *out);

/* The id of the token whose text is exactly `text` (e.g. "<|eot|>"), or -1. */
int32_t moert_tokenizer_find(const moert_tokenizer *tokenizer,
                             const char *text);

/* True for control tokens (special added tokens): they are not text. */
int moert_tokenizer_is_special(const moert_tokenizer *tokenizer, int32_t id);

/* Decoding, one token at a time. Bytes of a character split across tokens
 * wait in the decoder until the character is complete; bytes that cannot
 * become UTF-8 come out as U+FFFD. */
typedef struct moert_detokenizer {
  const moert_tokenizer *tokenizer;
  uint8_t pending[8];
  uint32_t pending_count;
  int skip_special; /* control tokens print nothing */
  int at_start;     /* the tokenizer's "strip one leading space" applies */
} moert_detokenizer;

/* A decoder at the start of a text. */
void moert_detokenizer_init(moert_detokenizer *decoder,
                            const moert_tokenizer *tokenizer, int skip_special);

/* Appends what token `id` completes to `out`. */
moert_status_t moert_detokenizer_push(moert_detokenizer *decoder, int32_t id,
                                      moert_text *out);

/* Appends what is left (an incomplete character becomes U+FFFD). */
moert_status_t moert_detokenizer_flush(moert_detokenizer *decoder,
                                       moert_text *out);

moert_status_t moert_token_list_push(moert_token_list *list, int32_t id);
void moert_token_list_free(moert_token_list *list);
moert_status_t moert_text_append(moert_text *text, const char *bytes,
                                 size_t length);
void moert_text_free(moert_text *text);

#ifdef __cplusplus
}
#endif

#endif /* MOERT_TOKENIZER_H */
