/*===- format_error.h - Reporting a malformed embedded blob ---------------===*/

#ifndef MOERT_FORMAT_ERROR_H
#define MOERT_FORMAT_ERROR_H

#include <stddef.h>

#include "moert/status.h"

/* Writes the message into error[0, size) (when size > 0) and returns
 * MOERT_STATUS_FORMAT_ERROR. */
moert_status_t moert_format_error(char *error, size_t size, const char *format,
                                  ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

#endif /* MOERT_FORMAT_ERROR_H */
