/*===- unicode_classes.h - Letter, number and space code points -----------===*
 *
 * What the GPT-2 pre-tokenizer regex asks of a code point: is it a letter
 * (\p{L}), a number (\p{N}), whitespace (\s), or something else.
 *
 *===----------------------------------------------------------------------===*/

#ifndef MOERT_UNICODE_CLASSES_H
#define MOERT_UNICODE_CLASSES_H

#include <stdint.h>

typedef enum moert_unicode_class {
  MOERT_UNICODE_OTHER = 0,
  MOERT_UNICODE_LETTER = 1,
  MOERT_UNICODE_NUMBER = 2,
  MOERT_UNICODE_SPACE = 3,
} moert_unicode_class;

typedef struct moert_unicode_range {
  uint32_t lo, hi; /* inclusive */
  uint32_t klass;  /* moert_unicode_class */
} moert_unicode_range;

/* Sorted, disjoint; code points in no range are MOERT_UNICODE_OTHER. */
extern const moert_unicode_range moert_unicode_ranges[];
extern const uint32_t moert_unicode_range_count;

moert_unicode_class moert_unicode_classify(uint32_t cp);

#endif /* MOERT_UNICODE_CLASSES_H */
