/*===- utf8.c - Decoding UTF-8 the way the WHATWG Encoding spec does ------===*/

#include "utf8.h"

#include <stdlib.h>
#include <string.h>

int moert_utf8_decode(const uint8_t *s, size_t len, uint32_t *cp) {
  uint8_t b0 = s[0];
  if (b0 < 0x80) {
    *cp = b0;
    return 1;
  }
  int need;
  uint32_t value;
  uint8_t lo = 0x80, hi = 0xBF; /* the allowed range of the second byte */
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 1;
    value = b0 & 0x1F;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 2;
    value = b0 & 0x0F;
    lo = b0 == 0xE0 ? 0xA0 : 0x80; /* no overlong forms */
    hi = b0 == 0xED ? 0x9F : 0xBF; /* no surrogates */
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 3;
    value = b0 & 0x07;
    lo = b0 == 0xF0 ? 0x90 : 0x80;
    hi = b0 == 0xF4 ? 0x8F : 0xBF; /* nothing past U+10FFFF */
  } else {
    return -1;
  }
  for (int i = 1; i <= need; ++i) {
    if ((size_t)i >= len) {
      return 0;
    }
    uint8_t b = s[i];
    if (b < lo || b > hi) {
      return -i; /* the lead and the valid continuations so far */
    }
    lo = 0x80;
    hi = 0xBF;
    value = (value << 6) | (b & 0x3F);
  }
  *cp = value;
  return need + 1;
}

size_t moert_utf8_valid_prefix(const uint8_t *s, size_t len) {
  size_t i = 0;
  while (i < len) {
    uint32_t cp;
    int n = moert_utf8_decode(s + i, len - i, &cp);
    if (n <= 0) {
      break;
    }
    i += (size_t)n;
  }
  return i;
}

char *moert_utf8_sanitize(const char *text, size_t len, size_t *out_len) {
  const uint8_t *s = (const uint8_t *)text;
  /* Each invalid byte grows to at most 3. */
  if (len > (SIZE_MAX - 1) / 3) {
    return NULL;
  }
  char *out = malloc(len * 3 + 1);
  if (!out) {
    return NULL;
  }
  size_t o = 0, i = 0;
  while (i < len) {
    size_t valid = moert_utf8_valid_prefix(s + i, len - i);
    memcpy(out + o, s + i, valid);
    o += valid;
    i += valid;
    if (i < len) {
      uint32_t cp;
      int n = moert_utf8_decode(s + i, len - i, &cp);
      /* A truncated sequence at the very end is one invalid subpart too. */
      i += n < 0 ? (size_t)-n : len - i;
      memcpy(out + o, MOERT_UTF8_REPLACEMENT, 3);
      o += 3;
    }
  }
  out[o] = '\0';
  *out_len = o;
  return out;
}
