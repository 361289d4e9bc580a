/*===- format_error.h - Failures that carry a message ---------------------===*/

#ifndef MOERT_FORMAT_ERROR_H
#define MOERT_FORMAT_ERROR_H

#include <stddef.h>

#include "moert/status.h"

/* Writes the message into error[0, size) (when error is not NULL and size >
 * 0) and returns `status`: the runtime's failures that carry a message. */
moert_status_t moert_error(moert_status_t status, char *error, size_t size,
                           const char *format, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

/* moert_error with MOERT_STATUS_FORMAT_ERROR: a malformed embedded blob. */
moert_status_t moert_format_error(char *error, size_t size, const char *format,
                                  ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

#endif /* MOERT_FORMAT_ERROR_H */
