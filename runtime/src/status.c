/*===- status.c - Status codes of the runtime -----------------------------===*/

#include "moert/status.h"

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
  }
  return "unknown status";
}
