/*===- tokenizer_encode.c - Text to token ids ------------------------------===*
 *
 * The order of Hugging Face tokenizers: added tokens are cut out of the
 * text first; each piece between them is normalized (byte fallback:
 * spaces become U+2581), split into words (byte-level: the GPT-2 regex),
 * and each word becomes symbols (bytes, or characters) that BPE merges,
 * lowest rank first and leftmost first among equals.
 *
 *===----------------------------------------------------------------------===*/

#include "moert/text_format.h"
#include "tokenizer_internal.h"
#include "unicode_classes.h"
#include "utf8.h"

#include <stdlib.h>
#include <string.h>

moert_unicode_class moert_unicode_classify(uint32_t cp) {
  if (cp < 0x80) {
    if ((cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z')) {
      return MOERT_UNICODE_LETTER;
    }
    if (cp >= '0' && cp <= '9') {
      return MOERT_UNICODE_NUMBER;
    }
    if (cp == ' ' || (cp >= 0x09 && cp <= 0x0D)) {
      return MOERT_UNICODE_SPACE;
    }
    return MOERT_UNICODE_OTHER;
  }
  uint32_t lo = 0, hi = moert_unicode_range_count;
  while (lo < hi) {
    uint32_t mid = (lo + hi) / 2;
    if (cp < moert_unicode_ranges[mid].lo) {
      hi = mid;
    } else if (cp > moert_unicode_ranges[mid].hi) {
      lo = mid + 1;
    } else {
      return (moert_unicode_class)moert_unicode_ranges[mid].klass;
    }
  }
  return MOERT_UNICODE_OTHER;
}

/*===----------------------------------------------------------------------===*/
/* The GPT-2 pre-tokenizer                                                    */
/*===----------------------------------------------------------------------===*/

/* The class of the (valid UTF-8) character at s[i], and its length. */
static moert_unicode_class class_at(const uint8_t *s, size_t n, size_t i,
                                    size_t *length) {
  uint32_t cp;
  int k = moert_utf8_decode(s + i, n - i, &cp);
  *length = k > 0 ? (size_t)k : 1;
  return k > 0 ? moert_unicode_classify(cp) : MOERT_UNICODE_OTHER;
}

/* The end of the word starting at s[i], by the regex
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * (the first alternative that matches wins; each is greedy). */
static size_t gpt2_word_end(const uint8_t *s, size_t n, size_t i) {
  if (s[i] == '\'' && i + 1 < n) {
    uint8_t c = s[i + 1];
    if (c == 's' || c == 't' || c == 'm' || c == 'd') {
      return i + 2;
    }
    if (i + 2 < n &&
        ((c == 'r' && s[i + 2] == 'e') || (c == 'v' && s[i + 2] == 'e') ||
         (c == 'l' && s[i + 2] == 'l'))) {
      return i + 3;
    }
  }
  size_t length;
  moert_unicode_class klass = class_at(s, n, i, &length);
  size_t j = i + length;
  if (s[i] == ' ' && j < n) {
    size_t next_length;
    moert_unicode_class next = class_at(s, n, j, &next_length);
    if (next != MOERT_UNICODE_SPACE) { /* " ?" takes the space */
      klass = next;
      j += next_length;
    }
  }
  if (klass != MOERT_UNICODE_SPACE) {
    while (j < n) {
      size_t k;
      if (class_at(s, n, j, &k) != klass) {
        break;
      }
      j += k;
    }
    return j;
  }
  /* \s+(?!\S): a run of whitespace, less its last character when a
   * non-space follows, unless that leaves nothing (then \s+ takes one). */
  size_t last = length;
  while (j < n) {
    size_t k;
    if (class_at(s, n, j, &k) != MOERT_UNICODE_SPACE) {
      return j - last > i ? j - last : j;
    }
    j += k;
    last = k;
  }
  return j;
}

/*===----------------------------------------------------------------------===*/
/* BPE                                                                        */
/*===----------------------------------------------------------------------===*/

typedef struct merge_entry {
  uint32_t priority, pos, merge;
} merge_entry;

/* Scratch reused across words. */
typedef struct bpe_scratch {
  int32_t *symbols, *prev, *next;
  merge_entry *heap;
  size_t capacity, heap_capacity;
  size_t heap_size;
} bpe_scratch;

static moert_status_t reserve(bpe_scratch *s, size_t n) {
  if (n <= s->capacity) {
    return MOERT_STATUS_OK;
  }
  size_t capacity = s->capacity ? s->capacity : 64;
  while (capacity < n) {
    capacity *= 2;
  }
  int32_t *symbols = realloc(s->symbols, capacity * sizeof(int32_t));
  if (symbols) {
    s->symbols = symbols;
  }
  int32_t *prev = realloc(s->prev, capacity * sizeof(int32_t));
  if (prev) {
    s->prev = prev;
  }
  int32_t *next = realloc(s->next, capacity * sizeof(int32_t));
  if (next) {
    s->next = next;
  }
  /* Each merge pushes at most two entries. */
  merge_entry *heap = realloc(s->heap, 3 * capacity * sizeof(merge_entry));
  if (heap) {
    s->heap = heap;
  }
  if (!symbols || !prev || !next || !heap) {
    return MOERT_STATUS_OUT_OF_MEMORY;
  }
  s->capacity = capacity;
  s->heap_capacity = 3 * capacity;
  return MOERT_STATUS_OK;
}

static int entry_less(merge_entry a, merge_entry b) {
  return a.priority < b.priority || (a.priority == b.priority && a.pos < b.pos);
}

static void heap_push(bpe_scratch *s, merge_entry e) {
  size_t i = s->heap_size++;
  while (i > 0 && entry_less(e, s->heap[(i - 1) / 2])) {
    s->heap[i] = s->heap[(i - 1) / 2];
    i = (i - 1) / 2;
  }
  s->heap[i] = e;
}

static merge_entry heap_pop(bpe_scratch *s) {
  merge_entry top = s->heap[0];
  merge_entry last = s->heap[--s->heap_size];
  size_t i = 0;
  for (;;) {
    size_t child = 2 * i + 1;
    if (child >= s->heap_size) {
      break;
    }
    if (child + 1 < s->heap_size &&
        entry_less(s->heap[child + 1], s->heap[child])) {
      ++child;
    }
    if (!entry_less(s->heap[child], last)) {
      break;
    }
    s->heap[i] = s->heap[child];
    i = child;
  }
  if (s->heap_size) {
    s->heap[i] = last;
  }
  return top;
}

static void push_pair(const moert_tokenizer *t, bpe_scratch *s, int32_t pos) {
  if (pos < 0 || s->next[pos] < 0) {
    return;
  }
  int32_t right = s->next[pos];
  uint32_t merge = moert_tokenizer_merge_find(t, (uint32_t)s->symbols[pos],
                                              (uint32_t)s->symbols[right]);
  if (merge != UINT32_MAX) {
    heap_push(s, (merge_entry){t->merges[4 * merge + 3], (uint32_t)pos, merge});
  }
}

/* Merges s->symbols[begin, end) and appends the result to `out`. */
static moert_status_t bpe_merge_run(const moert_tokenizer *t, bpe_scratch *s,
                                    size_t begin, size_t end,
                                    moert_token_list *out) {
  s->heap_size = 0;
  for (size_t i = begin; i < end; ++i) {
    s->prev[i] = (int32_t)i - 1 >= (int32_t)begin ? (int32_t)i - 1 : -1;
    s->next[i] = i + 1 < end ? (int32_t)i + 1 : -1;
  }
  for (size_t i = begin; i + 1 < end; ++i) {
    push_pair(t, s, (int32_t)i);
  }
  while (s->heap_size) {
    merge_entry e = heap_pop(s);
    int32_t pos = (int32_t)e.pos, right = s->next[pos];
    /* Entries go stale when a neighbour merged first; a merge names one
     * pair, so a matching merge means the pair is still there. */
    if (s->symbols[pos] < 0 || right < 0 ||
        moert_tokenizer_merge_find(t, (uint32_t)s->symbols[pos],
                                   (uint32_t)s->symbols[right]) != e.merge) {
      continue;
    }
    s->symbols[pos] = (int32_t)t->merges[4 * e.merge + 2];
    s->symbols[right] = -1;
    s->next[pos] = s->next[right];
    if (s->next[right] >= 0) {
      s->prev[s->next[right]] = pos;
    }
    push_pair(t, s, s->prev[pos]);
    push_pair(t, s, pos);
  }
  for (int32_t i = (int32_t)begin; i >= 0; i = s->next[i]) {
    MOERT_RETURN_IF_ERROR(moert_token_list_push(out, s->symbols[i]));
  }
  return MOERT_STATUS_OK;
}

/* Merges s->symbols[0, n): each run between symbols no merge names on its
 * own, which keeps long words (a byte-fallback text without spaces, or
 * one that is a single word) near linear. */
static moert_status_t bpe_merge(const moert_tokenizer *t, bpe_scratch *s,
                                size_t n, moert_token_list *out) {
  size_t begin = 0;
  for (size_t i = 0; i < n; ++i) {
    if (!t->mergeable[s->symbols[i]]) {
      if (i > begin) {
        MOERT_RETURN_IF_ERROR(bpe_merge_run(t, s, begin, i, out));
      }
      MOERT_RETURN_IF_ERROR(moert_token_list_push(out, s->symbols[i]));
      begin = i + 1;
    }
  }
  return begin < n ? bpe_merge_run(t, s, begin, n, out) : MOERT_STATUS_OK;
}

/*===----------------------------------------------------------------------===*/
/* Words to symbols                                                           */
/*===----------------------------------------------------------------------===*/

typedef struct encoder {
  const moert_tokenizer *t;
  bpe_scratch scratch;
  moert_token_list *out;
  uint8_t *normalized; /* byte fallback: the piece with U+2581 for spaces */
  size_t normalized_capacity;
} encoder;

/* Appends symbol `id` (or the unknown token) to the word being built. */
static void add_symbol(encoder *e, size_t *n, int32_t id) {
  if (id < 0) {
    id = e->t->unk_id;
    if (id < 0) {
      return; /* Hugging Face drops what it cannot name */
    }
    if ((e->t->flags & MOERT_TOKENIZER_FUSE_UNK) && *n > 0 &&
        e->scratch.symbols[*n - 1] == id) {
      return;
    }
  }
  e->scratch.symbols[(*n)++] = id;
}

static moert_status_t encode_word(encoder *e, const uint8_t *w, size_t len) {
  const moert_tokenizer *t = e->t;
  if (len == 0) {
    return MOERT_STATUS_OK;
  }
  if (t->flags & MOERT_TOKENIZER_IGNORE_MERGES) {
    int32_t whole = moert_tokenizer_lookup(t, w, len);
    if (whole >= 0) {
      return moert_token_list_push(e->out, whole);
    }
  }
  /* At most one symbol per byte (byte fallback: per character, or its
   * bytes when the character is not in the vocabulary). */
  MOERT_RETURN_IF_ERROR(reserve(&e->scratch, len));
  size_t n = 0;
  if (t->kind == MOERT_TOKENIZER_BYTE_LEVEL) {
    for (size_t i = 0; i < len; ++i) {
      add_symbol(e, &n, t->byte_token[w[i]]);
    }
  } else {
    for (size_t i = 0; i < len;) {
      uint32_t cp;
      int k = moert_utf8_decode(w + i, len - i, &cp);
      size_t clen = k > 0 ? (size_t)k : 1;
      int32_t id = moert_tokenizer_lookup(t, w + i, clen);
      if (id >= 0) {
        add_symbol(e, &n, id);
      } else {
        /* Byte fallback only when every byte has its token. */
        int all = 1;
        for (size_t b = 0; b < clen; ++b) {
          all &= t->byte_token[w[i + b]] >= 0;
        }
        for (size_t b = 0; all && b < clen; ++b) {
          add_symbol(e, &n, t->byte_token[w[i + b]]);
        }
        if (!all) {
          add_symbol(e, &n, -1);
        }
      }
      i += clen;
    }
  }
  if (n == 0) {
    return MOERT_STATUS_OK;
  }
  return bpe_merge(t, &e->scratch, n, e->out);
}

static moert_status_t split_gpt2(encoder *e, const uint8_t *s, size_t n) {
  for (size_t i = 0; i < n;) {
    size_t end = gpt2_word_end(s, n, i);
    MOERT_RETURN_IF_ERROR(encode_word(e, s + i, end - i));
    i = end;
  }
  return MOERT_STATUS_OK;
}

static moert_status_t encode_byte_level(encoder *e, const uint8_t *s,
                                        size_t n) {
  if (!(e->t->flags & MOERT_TOKENIZER_ADD_PREFIX_SPACE) || s[0] == ' ') {
    return split_gpt2(e, s, n);
  }
  uint8_t *spaced = malloc(n + 1);
  if (!spaced) {
    return MOERT_STATUS_OUT_OF_MEMORY;
  }
  spaced[0] = ' ';
  memcpy(spaced + 1, s, n);
  moert_status_t status = split_gpt2(e, spaced, n + 1);
  free(spaced);
  return status;
}

static moert_status_t encode_byte_fallback(encoder *e, const uint8_t *s,
                                           size_t n, int first_segment) {
  const moert_tokenizer *t = e->t;
  int prepend =
      (t->flags & MOERT_TOKENIZER_PREPEND_META) ||
      ((t->flags & MOERT_TOKENIZER_PREPEND_META_FIRST) && first_segment);
  size_t need = 3 * n + 3;
  if (need > e->normalized_capacity) {
    uint8_t *buffer = realloc(e->normalized, need);
    if (!buffer) {
      return MOERT_STATUS_OUT_OF_MEMORY;
    }
    e->normalized = buffer;
    e->normalized_capacity = need;
  }
  size_t m = 0;
  if (prepend) {
    memcpy(e->normalized, MOERT_META_UTF8, 3);
    m = 3;
  }
  for (size_t i = 0; i < n; ++i) {
    if (s[i] == ' ' && (t->flags & MOERT_TOKENIZER_SPACE_TO_META)) {
      memcpy(e->normalized + m, MOERT_META_UTF8, 3);
      m += 3;
    } else {
      e->normalized[m++] = s[i];
    }
  }
  if (!(t->flags & MOERT_TOKENIZER_SPLIT_META)) {
    return encode_word(e, e->normalized, m);
  }
  /* Metaspace split: each word starts at a U+2581 (merged with next). */
  size_t start = 0;
  for (size_t i = 1; i + 3 <= m; ++i) {
    if (memcmp(e->normalized + i, MOERT_META_UTF8, 3) == 0) {
      MOERT_RETURN_IF_ERROR(encode_word(e, e->normalized + start, i - start));
      start = i;
      i += 2;
    }
  }
  return encode_word(e, e->normalized + start, m - start);
}

static moert_status_t encode_segment(encoder *e, const uint8_t *s, size_t n,
                                     int first_segment) {
  if (n == 0) {
    return MOERT_STATUS_OK;
  }
  return e->t->kind == MOERT_TOKENIZER_BYTE_LEVEL
             ? encode_byte_level(e, s, n)
             : encode_byte_fallback(e, s, n, first_segment);
}

/*===----------------------------------------------------------------------===*/
/* Added tokens                                                               */
/*===----------------------------------------------------------------------===*/

/* The added token (index into t->added) that matches at s[i], longest
 * first, or -1. */
static int64_t match_added(const moert_tokenizer *t, const uint8_t *s, size_t n,
                           size_t i) {
  if (!t->added_first_byte[s[i]]) {
    return -1;
  }
  for (uint32_t k = 0; k < t->n_added; ++k) {
    uint32_t index = t->added_by_length[k];
    size_t len;
    const uint8_t *text = moert_token_text(t, t->added[2 * index], &len);
    if (len && len <= n - i && memcmp(s + i, text, len) == 0) {
      return index;
    }
  }
  return -1;
}

static int is_space_at(const uint8_t *s, size_t n, size_t i, size_t *len) {
  return class_at(s, n, i, len) == MOERT_UNICODE_SPACE;
}

moert_status_t moert_tokenizer_encode(const moert_tokenizer *t,
                                      const char *text, size_t length,
                                      int parse_special,
                                      moert_token_list *out) {
  size_t n;
  char *clean = moert_utf8_sanitize(text, length, &n);
  if (!clean) {
    return MOERT_STATUS_OUT_OF_MEMORY;
  }
  const uint8_t *s = (const uint8_t *)clean;
  encoder e = {.t = t, .out = out};
  moert_status_t status = MOERT_STATUS_OK;
  size_t segment = 0;
  for (size_t i = 0; status == MOERT_STATUS_OK && i < n;) {
    int64_t index = parse_special && t->n_added ? match_added(t, s, n, i) : -1;
    if (index < 0) {
      size_t len;
      class_at(s, n, i, &len);
      i += len;
      continue;
    }
    uint32_t id = t->added[2 * index], flags = t->added[2 * index + 1];
    size_t len, before = i, after;
    moert_token_text(t, id, &len);
    after = i + len;
    if (flags & MOERT_ADDED_LSTRIP) { /* swallow the whitespace before it */
      while (before > segment) {
        size_t back = before - 1;
        while (back > segment && (s[back] & 0xC0) == 0x80) {
          --back;
        }
        size_t k;
        if (!is_space_at(s, n, back, &k)) {
          break;
        }
        before = back;
      }
    }
    if (flags & MOERT_ADDED_RSTRIP) {
      size_t k;
      while (after < n && is_space_at(s, n, after, &k)) {
        after += k;
      }
    }
    status = encode_segment(&e, s + segment, before - segment, segment == 0);
    if (status == MOERT_STATUS_OK) {
      status = moert_token_list_push(out, (int32_t)id);
    }
    segment = i = after;
  }
  if (status == MOERT_STATUS_OK) {
    status = encode_segment(&e, s + segment, n - segment, segment == 0);
  }
  free(e.scratch.symbols);
  free(e.scratch.prev);
  free(e.scratch.next);
  free(e.scratch.heap);
  free(e.normalized);
  free(clean);
  return status;
}
