/*===- utf8.h - Decoding UTF-8 the way the WHATWG Encoding spec does ------===*
 *
 * Tokenizers see text, so bytes that are not UTF-8 become U+FFFD first, one
 * per maximal invalid subpart (the WHATWG and Python errors="replace" rule),
 * which is what a JavaScript or Python caller of a peer tokenizer sees.
 *
 *===----------------------------------------------------------------------===*/

#ifndef MOERT_UTF8_H
#define MOERT_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* UTF-8 of U+FFFD. */
#define MOERT_UTF8_REPLACEMENT "\xEF\xBF\xBD"

/* Decodes the sequence at s[0, len):
 *   > 0  its length; *cp is the code point
 *   0    the bytes so far start a valid sequence but len ends it early
 *   < 0  -(length of the maximal invalid subpart), to replace with U+FFFD */
int moert_utf8_decode(const uint8_t *s, size_t len, uint32_t *cp);

/* The length of the longest prefix of s that is valid UTF-8. */
size_t moert_utf8_valid_prefix(const uint8_t *s, size_t len);

/* `s` with every invalid subpart replaced by U+FFFD, in a malloc'd buffer
 * (*out_len bytes, NUL terminated); NULL when out of memory. */
char *moert_utf8_sanitize(const char *s, size_t len, size_t *out_len);

#endif /* MOERT_UTF8_H */
