/*===- tokenizer_internal.h - The tokenizer's tables ----------------------===*
 *
 * Shared by tokenizer.c (loading, decoding) and tokenizer_encode.c.
 *
 *===----------------------------------------------------------------------===*/

#ifndef MOERT_TOKENIZER_INTERNAL_H
#define MOERT_TOKENIZER_INTERNAL_H

#include "moert/tokenizer.h"

#include <stddef.h>
#include <stdint.h>

/* U+2581, SentencePiece's space, in UTF-8. */
#define MOERT_META_UTF8 "\xE2\x96\x81"

struct moert_tokenizer {
  uint32_t kind, flags;
  int32_t unk_id;
  uint32_t n_tokens, n_merges, n_added;
  const uint32_t *offsets, *token_flags, *merges, *added;
  const uint8_t *strings;

  /* (left << 32 | right) -> merge index, open addressing; empty keys are
   * ~0. */
  uint64_t *merge_keys;
  uint32_t *merge_index;
  uint64_t merge_mask;
  /* token text -> id, open addressing; empty slots are -1. The first id
   * with a given text wins, as in a vocabulary. */
  int32_t *piece_ids;
  uint64_t piece_mask;
  /* 1 for tokens that appear in a merge: any other symbol splits a word
   * into runs that BPE can merge independently (exactly: no pair crosses
   * it). */
  uint8_t *mergeable;
  /* Byte-level: the token of each byte. Byte fallback: the <0xNN> token. */
  int32_t byte_token[256];
  /* What each token prints (byte fallback: U+2581 as ' ', <0xNN> as the
   * byte); byte-level tokens print their text. */
  uint8_t *printed;
  uint32_t *printed_offsets;
  /* Added tokens, longest first, for leftmost-longest matching. */
  uint32_t *added_by_length;
  uint8_t added_first_byte[256];
};

static inline const uint8_t *moert_token_text(const moert_tokenizer *t,
                                              uint32_t id, size_t *length) {
  *length = t->offsets[id + 1] - t->offsets[id];
  return t->strings + t->offsets[id];
}

uint64_t moert_tokenizer_hash_bytes(const uint8_t *bytes, size_t length);

/* The id whose text is bytes[0, length), or -1. */
int32_t moert_tokenizer_lookup(const moert_tokenizer *t, const uint8_t *bytes,
                               size_t length);

/* The merge of (left, right), or UINT32_MAX. */
uint32_t moert_tokenizer_merge_find(const moert_tokenizer *t, uint32_t left,
                                    uint32_t right);

#endif /* MOERT_TOKENIZER_INTERNAL_H */
