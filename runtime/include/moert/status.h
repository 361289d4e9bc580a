/*===- status.h - Status codes of the runtime -----------------------------===*
 *
 * Every fallible runtime function returns a moert_status_t; 0 is success.
 * The text of a failure is kept in a fixed buffer of the object that
 * failed (moert_session_last_error), so reporting never allocates.
 *
 *===----------------------------------------------------------------------===*/

#ifndef MOERT_STATUS_H
#define MOERT_STATUS_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum moert_status_t {
  MOERT_STATUS_OK = 0,
  MOERT_STATUS_INVALID_ARGUMENT = 1, /* a bad value from the caller */
  MOERT_STATUS_OUT_OF_MEMORY = 2,
  MOERT_STATUS_IO_ERROR = 3,        /* a file could not be read */
  MOERT_STATUS_FORMAT_ERROR = 4,    /* a file is not what it should be */
  MOERT_STATUS_OUT_OF_RANGE = 5,    /* e.g. the context is full */
  MOERT_STATUS_KERNEL_ERROR = 6,    /* a kernel reported an error */
  MOERT_STATUS_UNSUPPORTED_CPU = 7, /* the CPU lacks the kernels' ISA */
  MOERT_STATUS_NO_DEVICE = 8,       /* a GPU model, and no usable GPU */
} moert_status_t;

/* A short name for `status`, e.g. "kernel error". Never NULL. */
const char *moert_status_name(moert_status_t status);

/* Returns from the calling function if `expr` fails. */
#define MOERT_RETURN_IF_ERROR(expr)                                            \
  do {                                                                         \
    moert_status_t moert_status_ = (expr);                                     \
    if (moert_status_ != MOERT_STATUS_OK) {                                    \
      return moert_status_;                                                    \
    }                                                                          \
  } while (0)

#ifdef __cplusplus
}
#endif

#endif /* MOERT_STATUS_H */
