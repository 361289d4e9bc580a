/*===- tokenizer.c - Loading a tokenizer, decoding tokens -----------------===*/

#include "format_error.h"
#include "moert/text_format.h"
#include "tokenizer_internal.h"
#include "utf8.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*===----------------------------------------------------------------------===*/
/* Growable lists                                                             */
/*===----------------------------------------------------------------------===*/

moert_status_t moert_token_list_push(moert_token_list *list, int32_t id) {
  if (list->count == list->capacity) {
    size_t capacity = list->capacity ? list->capacity * 2 : 64;
    int32_t *ids = realloc(list->ids, capacity * sizeof(int32_t));
    if (!ids) {
      return MOERT_STATUS_OUT_OF_MEMORY;
    }
    list->ids = ids;
    list->capacity = capacity;
  }
  list->ids[list->count++] = id;
  return MOERT_STATUS_OK;
}

void moert_token_list_free(moert_token_list *list) {
  free(list->ids);
  memset(list, 0, sizeof(*list));
}

moert_status_t moert_text_append(moert_text *text, const char *bytes,
                                 size_t length) {
  if (text->length + length + 1 > text->capacity) {
    size_t capacity = text->capacity ? text->capacity : 64;
    while (capacity < text->length + length + 1) {
      capacity *= 2;
    }
    char *data = realloc(text->data, capacity);
    if (!data) {
      return MOERT_STATUS_OUT_OF_MEMORY;
    }
    text->data = data;
    text->capacity = capacity;
  }
  memcpy(text->data + text->length, bytes, length);
  text->length += length;
  text->data[text->length] = '\0';
  return MOERT_STATUS_OK;
}

void moert_text_free(moert_text *text) {
  free(text->data);
  memset(text, 0, sizeof(*text));
}

/*===----------------------------------------------------------------------===*/
/* Hash tables                                                                */
/*===----------------------------------------------------------------------===*/

uint64_t moert_tokenizer_hash_bytes(const uint8_t *bytes, size_t length) {
  uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
  for (size_t i = 0; i < length; ++i) {
    h = (h ^ bytes[i]) * 0x100000001b3ull;
  }
  return h;
}

static uint64_t mix64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  return x;
}

/* The smallest power of two >= 2 * count (load factor <= 1/2). */
static uint64_t table_size(uint64_t count) {
  uint64_t size = 16;
  while (size < 2 * count) {
    size *= 2;
  }
  return size;
}

int32_t moert_tokenizer_lookup(const moert_tokenizer *t, const uint8_t *bytes,
                               size_t length) {
  uint64_t slot = moert_tokenizer_hash_bytes(bytes, length) & t->piece_mask;
  for (;; slot = (slot + 1) & t->piece_mask) {
    int32_t id = t->piece_ids[slot];
    if (id < 0) {
      return -1;
    }
    size_t n;
    const uint8_t *text = moert_token_text(t, (uint32_t)id, &n);
    if (n == length && memcmp(text, bytes, n) == 0) {
      return id;
    }
  }
}

uint32_t moert_tokenizer_merge_find(const moert_tokenizer *t, uint32_t left,
                                    uint32_t right) {
  uint64_t key = (uint64_t)left << 32 | right;
  uint64_t slot = mix64(key) & t->merge_mask;
  for (;; slot = (slot + 1) & t->merge_mask) {
    uint64_t k = t->merge_keys[slot];
    if (k == key) {
      return t->merge_index[slot];
    }
    if (k == ~0ull) {
      return UINT32_MAX;
    }
  }
}

/*===----------------------------------------------------------------------===*/
/* Loading                                                                    */
/*===----------------------------------------------------------------------===*/

/* Reads n u32 words at *cursor, if the payload has them. */
static const uint32_t *take_words(const uint8_t **cursor, const uint8_t *end,
                                  uint64_t n) {
  if ((uint64_t)(end - *cursor) / 4 < n) {
    return NULL;
  }
  const uint32_t *words = (const uint32_t *)(const void *)*cursor;
  *cursor += n * 4;
  return words;
}

/* The byte a "<0xNN>" piece stands for, or -1. */
static int byte_piece_value(const uint8_t *text, size_t n) {
  if (n != 6 || memcmp(text, "<0x", 3) != 0 || text[5] != '>') {
    return -1;
  }
  int value = 0;
  for (int i = 3; i < 5; ++i) {
    int c = text[i];
    int digit = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                       : -1;
    if (digit < 0) {
      return -1;
    }
    value = value * 16 + digit;
  }
  return value;
}

/* What a token prints: byte-fallback pieces show U+2581 as a space and
 * <0xNN> as its byte; everything else prints its own text. */
static moert_status_t build_printed(moert_tokenizer *t) {
  uint64_t total = t->offsets[t->n_tokens];
  t->printed = malloc(total ? total : 1);
  t->printed_offsets = malloc((t->n_tokens + 1) * sizeof(uint32_t));
  if (!t->printed || !t->printed_offsets) {
    return MOERT_STATUS_OUT_OF_MEMORY;
  }
  uint32_t o = 0;
  for (uint32_t id = 0; id < t->n_tokens; ++id) {
    t->printed_offsets[id] = o;
    size_t n;
    const uint8_t *text = moert_token_text(t, id, &n);
    int fallback = t->kind == MOERT_TOKENIZER_BYTE_FALLBACK &&
                   !(t->token_flags[id] & MOERT_TOKEN_SPECIAL);
    if (fallback && (t->token_flags[id] & MOERT_TOKEN_BYTE)) {
      t->printed[o++] = (uint8_t)byte_piece_value(text, n);
      continue;
    }
    for (size_t i = 0; i < n;) {
      if (fallback && i + 3 <= n && memcmp(text + i, MOERT_META_UTF8, 3) == 0) {
        t->printed[o++] = ' ';
        i += 3;
      } else {
        t->printed[o++] = text[i++];
      }
    }
  }
  t->printed_offsets[t->n_tokens] = o;
  return MOERT_STATUS_OK;
}

static int compare_added_length(const void *a, const void *b, void *ctx) {
  const moert_tokenizer *t = ctx;
  uint32_t ia = *(const uint32_t *)a, ib = *(const uint32_t *)b;
  size_t na, nb;
  moert_token_text(t, t->added[2 * ia], &na);
  moert_token_text(t, t->added[2 * ib], &nb);
  if (na != nb) {
    return na > nb ? -1 : 1;
  }
  return ia < ib ? -1 : ia > ib;
}

/* qsort has no context argument in C11: a small insertion sort (added
 * tokens number in the tens, rarely the hundreds). */
static void sort_added(moert_tokenizer *t) {
  for (uint32_t i = 1; i < t->n_added; ++i) {
    uint32_t v = t->added_by_length[i];
    uint32_t j = i;
    while (j > 0 &&
           compare_added_length(&v, &t->added_by_length[j - 1], t) < 0) {
      t->added_by_length[j] = t->added_by_length[j - 1];
      --j;
    }
    t->added_by_length[j] = v;
  }
}

static moert_status_t build_tables(moert_tokenizer *t) {
  uint64_t size = table_size(t->n_merges);
  t->merge_keys = malloc(size * sizeof(uint64_t));
  t->merge_index = malloc(size * sizeof(uint32_t));
  uint64_t pieces = table_size(t->n_tokens);
  t->piece_ids = malloc(pieces * sizeof(int32_t));
  t->added_by_length = malloc((t->n_added ? t->n_added : 1) * sizeof(uint32_t));
  if (!t->merge_keys || !t->merge_index || !t->piece_ids ||
      !t->added_by_length) {
    return MOERT_STATUS_OUT_OF_MEMORY;
  }
  t->merge_mask = size - 1;
  memset(t->merge_keys, 0xFF, size * sizeof(uint64_t));
  for (uint32_t m = 0; m < t->n_merges; ++m) {
    uint64_t key = (uint64_t)t->merges[4 * m] << 32 | t->merges[4 * m + 1];
    uint64_t slot = mix64(key) & t->merge_mask;
    while (t->merge_keys[slot] != ~0ull && t->merge_keys[slot] != key) {
      slot = (slot + 1) & t->merge_mask;
    }
    if (t->merge_keys[slot] == ~0ull) { /* a repeated pair: the first */
      t->merge_keys[slot] = key;
      t->merge_index[slot] = m;
    }
  }
  t->mergeable = calloc(t->n_tokens, 1);
  if (!t->mergeable) {
    return MOERT_STATUS_OUT_OF_MEMORY;
  }
  for (uint32_t m = 0; m < t->n_merges; ++m) {
    t->mergeable[t->merges[4 * m]] = 1;
    t->mergeable[t->merges[4 * m + 1]] = 1;
  }
  t->piece_mask = pieces - 1;
  memset(t->piece_ids, 0xFF, pieces * sizeof(int32_t));
  for (uint32_t id = 0; id < t->n_tokens; ++id) {
    size_t n;
    const uint8_t *text = moert_token_text(t, id, &n);
    if (moert_tokenizer_lookup(t, text, n) >= 0) {
      continue;
    }
    uint64_t slot = moert_tokenizer_hash_bytes(text, n) & t->piece_mask;
    while (t->piece_ids[slot] >= 0) {
      slot = (slot + 1) & t->piece_mask;
    }
    t->piece_ids[slot] = (int32_t)id;
  }
  for (int b = 0; b < 256; ++b) {
    t->byte_token[b] = -1;
  }
  for (uint32_t id = 0; id < t->n_tokens; ++id) {
    if (t->token_flags[id] & MOERT_TOKEN_SPECIAL) {
      continue;
    }
    size_t n;
    const uint8_t *text = moert_token_text(t, id, &n);
    int byte = t->kind == MOERT_TOKENIZER_BYTE_LEVEL
                   ? (n == 1 ? text[0] : -1)
                   : ((t->token_flags[id] & MOERT_TOKEN_BYTE)
                          ? byte_piece_value(text, n)
                          : -1);
    if (byte >= 0 && t->byte_token[byte] < 0) {
      t->byte_token[byte] = (int32_t)id;
    }
  }
  memset(t->added_first_byte, 0, sizeof(t->added_first_byte));
  for (uint32_t i = 0; i < t->n_added; ++i) {
    t->added_by_length[i] = i;
    size_t n;
    const uint8_t *text = moert_token_text(t, t->added[2 * i], &n);
    if (n) {
      t->added_first_byte[text[0]] = 1;
    }
  }
  sort_added(t);
  return build_printed(t);
}

moert_status_t moert_tokenizer_create(const void *payload, size_t bytes,
                                      moert_tokenizer **out, char *error,
                                      size_t error_size) {
  *out = NULL;
  const uint8_t *cursor = payload, *end = cursor + bytes;
  const uint32_t *head = take_words(&cursor, end, 7);
  if (!head) {
    return moert_format_error(error, error_size,
                              "the tokenizer section is truncated");
  }
  moert_tokenizer *t = calloc(1, sizeof(*t));
  if (!t) {
    return MOERT_STATUS_OUT_OF_MEMORY;
  }
  t->kind = head[0];
  t->flags = head[1];
  t->unk_id = (int32_t)head[2];
  t->n_tokens = head[3];
  t->n_merges = head[4];
  t->n_added = head[5];
  uint32_t string_bytes = head[6];
  t->offsets = take_words(&cursor, end, (uint64_t)t->n_tokens + 1);
  t->token_flags = t->offsets ? take_words(&cursor, end, t->n_tokens) : NULL;
  t->merges = t->token_flags
                  ? take_words(&cursor, end, 4 * (uint64_t)t->n_merges)
                  : NULL;
  t->added =
      t->merges ? take_words(&cursor, end, 2 * (uint64_t)t->n_added) : NULL;
  t->strings = cursor;
  moert_status_t status = MOERT_STATUS_OK;
  if (!t->added || (uint64_t)(end - cursor) < string_bytes) {
    status = moert_format_error(
        error, error_size,
        "the tokenizer section is truncated (%u tokens, %u merges)",
        t->n_tokens, t->n_merges);
  } else if (t->kind != MOERT_TOKENIZER_BYTE_LEVEL &&
             t->kind != MOERT_TOKENIZER_BYTE_FALLBACK) {
    status = moert_format_error(error, error_size, "unknown tokenizer kind %u",
                                t->kind);
  } else if (t->n_tokens == 0 || t->n_tokens > INT32_MAX ||
             (t->unk_id != -1 && (uint32_t)t->unk_id >= t->n_tokens)) {
    status = moert_format_error(error, error_size,
                                "bad tokenizer sizes (%u tokens, unk %d)",
                                t->n_tokens, t->unk_id);
  }
  for (uint32_t i = 0; status == MOERT_STATUS_OK && i < t->n_tokens; ++i) {
    if (t->offsets[i] > t->offsets[i + 1] || t->offsets[i + 1] > string_bytes) {
      status = moert_format_error(error, error_size,
                                  "token %u's text is out of bounds", i);
    }
  }
  for (uint32_t i = 0; status == MOERT_STATUS_OK && i < 4 * t->n_merges; ++i) {
    if (i % 4 != 3 && t->merges[i] >= t->n_tokens) {
      status =
          moert_format_error(error, error_size, "merge %u names token %u of %u",
                             i / 4, t->merges[i], t->n_tokens);
    }
  }
  for (uint32_t i = 0; status == MOERT_STATUS_OK && i < t->n_added; ++i) {
    if (t->added[2 * i] >= t->n_tokens) {
      status =
          moert_format_error(error, error_size, "added token %u is id %u of %u",
                             i, t->added[2 * i], t->n_tokens);
    }
  }
  if (status == MOERT_STATUS_OK) {
    status = build_tables(t);
  }
  if (status != MOERT_STATUS_OK) {
    moert_tokenizer_destroy(t);
    return status;
  }
  *out = t;
  return MOERT_STATUS_OK;
}

void moert_tokenizer_destroy(moert_tokenizer *t) {
  if (!t) {
    return;
  }
  free(t->merge_keys);
  free(t->merge_index);
  free(t->piece_ids);
  free(t->mergeable);
  free(t->printed);
  free(t->printed_offsets);
  free(t->added_by_length);
  free(t);
}

int32_t moert_tokenizer_vocab_size(const moert_tokenizer *t) {
  return (int32_t)t->n_tokens;
}

int32_t moert_tokenizer_find(const moert_tokenizer *t, const char *text) {
  return moert_tokenizer_lookup(t, (const uint8_t *)text, strlen(text));
}

int moert_tokenizer_is_special(const moert_tokenizer *t, int32_t id) {
  return id >= 0 && (uint32_t)id < t->n_tokens &&
         (t->token_flags[id] & MOERT_TOKEN_SPECIAL);
}

/*===----------------------------------------------------------------------===*/
/* Decoding                                                                   */
/*===----------------------------------------------------------------------===*/

void moert_detokenizer_init(moert_detokenizer *d, const moert_tokenizer *t,
                            int skip_special) {
  memset(d, 0, sizeof(*d));
  d->tokenizer = t;
  d->skip_special = skip_special;
  d->at_start = 1;
}

/* Moves the complete characters at the front of the pending bytes to `out`;
 * with `final`, an incomplete tail becomes U+FFFD too. */
static moert_status_t drain(moert_detokenizer *d, moert_text *out, int final) {
  uint32_t i = 0;
  while (i < d->pending_count) {
    uint32_t cp;
    int n = moert_utf8_decode(d->pending + i, d->pending_count - i, &cp);
    if (n > 0) {
      MOERT_RETURN_IF_ERROR(
          moert_text_append(out, (const char *)d->pending + i, (size_t)n));
      i += (uint32_t)n;
    } else if (n < 0 || final) {
      MOERT_RETURN_IF_ERROR(moert_text_append(out, MOERT_UTF8_REPLACEMENT, 3));
      i += n < 0 ? (uint32_t)-n : d->pending_count - i;
    } else {
      break; /* wait for the rest of the character */
    }
  }
  memmove(d->pending, d->pending + i, d->pending_count - i);
  d->pending_count -= i;
  return MOERT_STATUS_OK;
}

moert_status_t moert_detokenizer_push(moert_detokenizer *d, int32_t id,
                                      moert_text *out) {
  const moert_tokenizer *t = d->tokenizer;
  if (id < 0 || (uint32_t)id >= t->n_tokens) {
    return MOERT_STATUS_INVALID_ARGUMENT;
  }
  if (d->skip_special && (t->token_flags[id] & MOERT_TOKEN_SPECIAL)) {
    return MOERT_STATUS_OK;
  }
  const uint8_t *bytes = t->printed + t->printed_offsets[id];
  size_t n = t->printed_offsets[id + 1] - t->printed_offsets[id];
  if (d->at_start && n > 0) {
    d->at_start = 0;
    if ((t->flags & MOERT_TOKENIZER_STRIP_DECODED) && bytes[0] == ' ') {
      ++bytes;
      --n;
    }
  }
  while (n > 0) {
    size_t room = sizeof(d->pending) - d->pending_count;
    size_t take = n < room ? n : room;
    memcpy(d->pending + d->pending_count, bytes, take);
    d->pending_count += (uint32_t)take;
    bytes += take;
    n -= take;
    MOERT_RETURN_IF_ERROR(drain(d, out, 0));
  }
  return MOERT_STATUS_OK;
}

moert_status_t moert_detokenizer_flush(moert_detokenizer *d, moert_text *out) {
  return drain(d, out, 1);
}
