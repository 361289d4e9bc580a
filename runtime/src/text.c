/*===- text.c - The model's text interface: tokenizer, chat, defaults -----===*/

#include "moert/text.h"

#include "format_error.h"
#include "moert/text_format.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint32_t read_u32(const uint8_t *p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return v;
}

static float read_f32(const uint8_t *p) {
  float v;
  memcpy(&v, p, 4);
  return v;
}

static moert_status_t read_generation(const uint8_t *p, uint32_t bytes,
                                      moert_text_interface *t, char *error,
                                      size_t size) {
  if (bytes < 40) {
    return moert_format_error(error, size,
                              "the generation section is truncated");
  }
  t->bos_id = (int32_t)read_u32(p);
  t->add_bos = read_u32(p + 4) != 0;
  moert_sampler_params *d = &t->defaults;
  d->temperature = read_f32(p + 8);
  d->top_k = (int32_t)read_u32(p + 12);
  d->top_p = read_f32(p + 16);
  d->min_p = read_f32(p + 20);
  d->repeat_penalty = read_f32(p + 24);
  d->repeat_form = (int32_t)read_u32(p + 28);
  d->repeat_last_n = (int32_t)read_u32(p + 32);
  t->stop_count = read_u32(p + 36);
  if ((bytes - 40) / 4 < t->stop_count) {
    return moert_format_error(error, size,
                              "the generation section's stop list is "
                              "truncated");
  }
  t->stop = (const int32_t *)(const void *)(p + 40);
  return MOERT_STATUS_OK;
}

static moert_status_t read_chat(const uint8_t *p, uint32_t bytes,
                                moert_text_interface *t, char *error,
                                size_t size) {
  if (bytes < 4) {
    return moert_format_error(error, size, "the chat section is truncated");
  }
  uint32_t count = read_u32(p);
  if (count > bytes / 16) {
    return moert_format_error(error, size, "the chat section claims %u parts",
                              count);
  }
  t->chat = calloc(count ? count : 1, sizeof(moert_chat_part));
  if (!t->chat) {
    return MOERT_STATUS_OUT_OF_MEMORY;
  }
  uint32_t o = 4;
  for (uint32_t i = 0; i < count; ++i) {
    if (bytes - o < 16) {
      return moert_format_error(error, size, "chat part %u is truncated", i);
    }
    moert_chat_part *part = &t->chat[i];
    part->slot = read_u32(p + o);
    part->kind = read_u32(p + o + 4);
    part->id = (int32_t)read_u32(p + o + 8);
    part->text_bytes = read_u32(p + o + 12);
    o += 16;
    uint32_t padded = (part->text_bytes + 3u) & ~3u;
    if (part->slot >= MOERT_CHAT_SLOT_COUNT || padded < part->text_bytes ||
        bytes - o < padded) {
      return moert_format_error(error, size, "chat part %u is malformed", i);
    }
    part->text = (const char *)p + o;
    o += padded;
  }
  t->chat_count = count;
  return MOERT_STATUS_OK;
}

moert_status_t moert_text_interface_open(const void *blob, size_t bytes,
                                         moert_text_interface *t, char *error,
                                         size_t size) {
  memset(t, 0, sizeof(*t));
  t->bos_id = -1;
  t->defaults.temperature = 1.0f;
  t->defaults.top_p = 1.0f;
  t->defaults.repeat_penalty = 1.0f;
  t->defaults.repeat_last_n = 64;
  const uint8_t *p = blob;
  if (bytes < 16 || memcmp(p, MOERT_TEXT_MAGIC, 8) != 0 ||
      read_u32(p + 8) != MOERT_TEXT_VERSION) {
    return moert_format_error(error, size,
                              "the embedded text interface is not version %u",
                              MOERT_TEXT_VERSION);
  }
  uint32_t sections = read_u32(p + 12);
  size_t o = 16;
  moert_status_t status = MOERT_STATUS_OK;
  for (uint32_t i = 0; i < sections && status == MOERT_STATUS_OK; ++i) {
    if (bytes - o < 8) {
      status =
          moert_format_error(error, size, "text section %u is truncated", i);
      break;
    }
    uint32_t tag = read_u32(p + o), length = read_u32(p + o + 4);
    o += 8;
    uint64_t padded = ((uint64_t)length + 3u) & ~3ull;
    if (bytes - o < padded) {
      status =
          moert_format_error(error, size, "text section %u is truncated", i);
      break;
    }
    if (tag == MOERT_TEXT_TOKENIZER) {
      status =
          moert_tokenizer_create(p + o, length, &t->tokenizer, error, size);
    } else if (tag == MOERT_TEXT_GENERATION) {
      status = read_generation(p + o, length, t, error, size);
    } else if (tag == MOERT_TEXT_CHAT) {
      status = read_chat(p + o, length, t, error, size);
    }
    o += padded;
  }
  if (status == MOERT_STATUS_OK && !t->tokenizer) {
    status =
        moert_format_error(error, size, "the text interface has no tokenizer");
  }
  if (status != MOERT_STATUS_OK) {
    moert_text_interface_close(t);
  }
  return status;
}

void moert_text_interface_close(moert_text_interface *t) {
  moert_tokenizer_destroy(t->tokenizer);
  free(t->chat);
  memset(t, 0, sizeof(*t));
  t->bos_id = -1;
}

int moert_text_is_stop(const moert_text_interface *t, int32_t id) {
  for (uint32_t i = 0; i < t->stop_count; ++i) {
    if (t->stop[i] == id) {
      return 1;
    }
  }
  return 0;
}

moert_status_t moert_text_encode_prompt(const moert_text_interface *text,
                                        const char *prompt, size_t length,
                                        int add_bos, moert_token_list *out) {
  if (add_bos && text->add_bos && text->bos_id >= 0) {
    MOERT_RETURN_IF_ERROR(moert_token_list_push(out, text->bos_id));
  }
  return moert_tokenizer_encode(text->tokenizer, prompt, length,
                                /*parse_special=*/1, out);
}

moert_status_t moert_chat_append_slot(const moert_text_interface *t,
                                      uint32_t slot, moert_token_list *out) {
  for (uint32_t i = 0; i < t->chat_count; ++i) {
    const moert_chat_part *part = &t->chat[i];
    if (part->slot != slot) {
      continue;
    }
    if (part->kind == MOERT_CHAT_TOKEN) {
      MOERT_RETURN_IF_ERROR(moert_token_list_push(out, part->id));
    } else {
      MOERT_RETURN_IF_ERROR(moert_tokenizer_encode(t->tokenizer, part->text,
                                                   part->text_bytes, 0, out));
    }
  }
  return MOERT_STATUS_OK;
}

moert_status_t moert_chat_append_turn(const moert_text_interface *t,
                                      uint32_t prefix_slot, const char *content,
                                      uint32_t suffix_slot,
                                      moert_token_list *out) {
  MOERT_RETURN_IF_ERROR(moert_chat_append_slot(t, prefix_slot, out));
  if (content) {
    MOERT_RETURN_IF_ERROR(
        moert_tokenizer_encode(t->tokenizer, content, strlen(content), 0, out));
  }
  return moert_chat_append_slot(t, suffix_slot, out);
}

const char *moert_chat_default_system(const moert_text_interface *t,
                                      uint32_t *bytes) {
  for (uint32_t i = 0; i < t->chat_count; ++i) {
    if (t->chat[i].slot == MOERT_CHAT_DEFAULT_SYSTEM) {
      *bytes = t->chat[i].text_bytes;
      return t->chat[i].text;
    }
  }
  return NULL;
}
