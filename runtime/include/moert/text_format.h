/*===- text_format.h - The compiled model's text interface ----------------===*
 *
 * `moec compile` reads the model's tokenizer (tokenizer.json or tiktoken
 * ranks) and the family's chat format and sampling defaults, and embeds them
 * in the executable as one blob. The runtime reads the blob in place: no
 * file is opened at run time.
 *
 *   header    char magic[8] = MOERT_TEXT_MAGIC; u32 version; u32 sections
 *   sections  u32 tag; u32 bytes; payload, zero padded to 4 bytes
 *
 * All integers are little-endian u32 unless said; ids are i32, -1 = none.
 *
 * MOERT_TEXT_TOKENIZER payload:
 *   u32 kind (moert_tokenizer_kind), flags (MOERT_TOKENIZER_*), i32 unk_id
 *   u32 n_tokens, n_merges, n_added, string_bytes
 *   u32 offsets[n_tokens + 1]   token i's text is strings[offsets[i], [i+1])
 *   u32 token_flags[n_tokens]   MOERT_TOKEN_*
 *   u32 merges[4 * n_merges]    (left, right, result, priority): the
 *                               lowest priority merges first, the leftmost
 *                               first among equals
 *   u32 added[2 * n_added]      (id, MOERT_ADDED_*), matched in input text
 *   u8  strings[string_bytes]
 * A token's text is what encoding matches: raw bytes for byte-level BPE
 * (the byte-to-unicode map already undone), the vocabulary's UTF-8 piece
 * (with U+2581 for spaces) for byte-fallback BPE.
 *
 * MOERT_TEXT_GENERATION payload: i32 bos_id; u32 add_bos; the defaults of
 *   moert_sampler_params as (f32 temperature, i32 top_k, f32 top_p,
 *   f32 min_p, f32 repeat_penalty, u32 repeat_form, i32 repeat_last_n);
 *   u32 n_stop; i32 stop[n_stop].
 *
 * MOERT_TEXT_CHAT payload (absent for base models): u32 n_parts, then each
 *   part as u32 slot (moert_chat_slot), u32 kind (moert_chat_part_kind),
 *   i32 id (token parts), u32 text_bytes, text (padded to 4 bytes).
 *
 *===----------------------------------------------------------------------===*/

#ifndef MOERT_TEXT_FORMAT_H
#define MOERT_TEXT_FORMAT_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MOERT_TEXT_MAGIC "MOETEXT1"
#define MOERT_TEXT_VERSION 1u

#define MOERT_TEXT_TAG(a, b, c, d)                                             \
  ((uint32_t)(a) | ((uint32_t)(b) << 8) | ((uint32_t)(c) << 16) |              \
   ((uint32_t)(d) << 24))
#define MOERT_TEXT_TOKENIZER MOERT_TEXT_TAG('T', 'O', 'K', 'N')
#define MOERT_TEXT_GENERATION MOERT_TEXT_TAG('G', 'E', 'N', 'R')
#define MOERT_TEXT_CHAT MOERT_TEXT_TAG('C', 'H', 'A', 'T')

typedef enum moert_tokenizer_kind {
  /* GPT-2: text split by the GPT-2 regex, every byte a symbol. */
  MOERT_TOKENIZER_BYTE_LEVEL = 1,
  /* SentencePiece-style: characters are symbols, a character missing from
   * the vocabulary becomes its UTF-8 bytes as <0xNN> tokens. */
  MOERT_TOKENIZER_BYTE_FALLBACK = 2,
} moert_tokenizer_kind;

/* Tokenizer flags. */
#define MOERT_TOKENIZER_ADD_PREFIX_SPACE 0x1u   /* byte-level: ' ' + text */
#define MOERT_TOKENIZER_SPACE_TO_META 0x2u      /* ' ' becomes U+2581 */
#define MOERT_TOKENIZER_PREPEND_META 0x4u       /* U+2581 + each segment */
#define MOERT_TOKENIZER_PREPEND_META_FIRST 0x8u /* ... the first one only */
#define MOERT_TOKENIZER_SPLIT_META 0x10u        /* words start at U+2581 */
#define MOERT_TOKENIZER_IGNORE_MERGES 0x20u /* a word in the vocab is kept */
#define MOERT_TOKENIZER_FUSE_UNK 0x40u      /* runs of unk become one */
#define MOERT_TOKENIZER_STRIP_DECODED 0x80u /* decoding drops one ' ' */

/* Token flags. */
#define MOERT_TOKEN_SPECIAL 0x1u /* a control token: not text */
#define MOERT_TOKEN_BYTE 0x2u    /* a <0xNN> byte-fallback token */

/* Added-token flags (Hugging Face's AddedToken fields). */
#define MOERT_ADDED_SPECIAL 0x1u
#define MOERT_ADDED_LSTRIP 0x2u /* takes the whitespace before it */
#define MOERT_ADDED_RSTRIP 0x4u /* takes the whitespace after it */

typedef enum moert_repeat_form {
  MOERT_REPEAT_NONE = 0,
  /* Hugging Face / llama.cpp: a seen token's logit is divided by the penalty
   * when positive and multiplied by it when negative. */
  MOERT_REPEAT_SIGN_AWARE = 1,
  /* Moonlight: logit / penalty^count over the window, whatever its sign. */
  MOERT_REPEAT_DIVIDE_BY_COUNT = 2,
} moert_repeat_form;

typedef enum moert_chat_slot {
  MOERT_CHAT_BEGIN = 0,         /* once, before the first turn */
  MOERT_CHAT_SYSTEM_PREFIX = 1, /* around a system turn's text */
  MOERT_CHAT_SYSTEM_SUFFIX = 2,
  MOERT_CHAT_USER_PREFIX = 3, /* around a user turn's text */
  MOERT_CHAT_USER_SUFFIX = 4,
  MOERT_CHAT_ASSISTANT_PREFIX = 5, /* opens every reply, also the next one */
  MOERT_CHAT_ASSISTANT_SUFFIX = 6, /* closes a finished reply in history */
  MOERT_CHAT_DEFAULT_SYSTEM = 7,   /* text: the system turn when none given */
  MOERT_CHAT_SLOT_COUNT = 8,
} moert_chat_slot;

typedef enum moert_chat_part_kind {
  MOERT_CHAT_TOKEN = 0, /* one token id */
  MOERT_CHAT_TEXT = 1,  /* text, tokenized with special tokens as text */
} moert_chat_part_kind;

#ifdef __cplusplus
}
#endif

#endif /* MOERT_TEXT_FORMAT_H */
