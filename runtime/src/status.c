/*===- status.c - Status codes of the runtime -----------------------------===*/

#include "moert/status.h"

#include "format_error.h"

#include <stdarg.h>
#include <stdio.h>

const char *moert_status_name(moert_status_t status) {
  switch (status) {
  case MOERT_STATUS_OK:
    return "ok";
  case MOERT_STATUS_INVALID_ARGUMENT:
    return "invalid argument";
  case MOERT_STATUS_OUT_OF_MEMORY:
    return "out of memory";
  case MOERT_STATUS_IO_ERROR:
    return "i/o error";
  case MOERT_STATUS_FORMAT_ERROR:
    return "format error";
  case MOERT_STATUS_OUT_OF_RANGE:
    return "out of range";
  case MOERT_STATUS_KERNEL_ERROR:
    return "kernel error";
  case MOERT_STATUS_UNSUPPORTED_CPU:
    return "this CPU lacks instructions the kernels use";
  case MOERT_STATUS_NO_DEVICE:
    return "no usable GPU";
  }
  return "unknown status";
}

static moert_status_t report(moert_status_t status, char *error, size_t size,
                             const char *format, va_list args) {
  if (error && size) {
    vsnprintf(error, size, format, args);
  }
  return status;
}

moert_status_t moert_error(moert_status_t status, char *error, size_t size,
                           const char *format, ...) {
  va_list args;
  va_start(args, format);
  report(status, error, size, format, args);
  va_end(args);
  return status;
}

moert_status_t moert_format_error(char *error, size_t size, const char *format,
                                  ...) {
  va_list args;
  va_start(args, format);
  moert_status_t status =
      report(MOERT_STATUS_FORMAT_ERROR, error, size, format, args);
  va_end(args);
  return status;
}
