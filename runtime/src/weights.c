/*===- weights.c - A compiled model's mapped weight file -------------------===*
 *
 * The file is mapped read-only and private; the kernels read weights in
 * place, so a 1 GB model costs page cache, not heap. Every header field is
 * checked against the executable before anything trusts the data.
 *
 *===----------------------------------------------------------------------===*/

#define _GNU_SOURCE
#include "moert/weights.h"

#include "moert/hash.h"
#include "moert/weights_format.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

struct moert_weights_t {
  void *map;
  size_t map_bytes;
  const uint8_t *data;
  uint64_t data_bytes;
  uint64_t data_hash;
  char path[512];
};

static void set_error(char *error, size_t size, const char *format, ...) {
  if (!error || size == 0) {
    return;
  }
  va_list args;
  va_start(args, format);
  vsnprintf(error, size, format, args);
  va_end(args);
}

moert_status_t moert_weights_open(const char *path,
                                  const moert_model_desc_t *model,
                                  moert_weights_t **out_weights, char *error,
                                  size_t error_size) {
  if (!out_weights) {
    return MOERT_STATUS_INVALID_ARGUMENT;
  }
  *out_weights = NULL;
  if (!path || !model) {
    set_error(error, error_size, "no weight file or model given");
    return MOERT_STATUS_INVALID_ARGUMENT;
  }
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    set_error(error, error_size, "%s: %s", path, strerror(errno));
    return MOERT_STATUS_IO_ERROR;
  }
  struct stat info;
  if (fstat(fd, &info) != 0 || !S_ISREG(info.st_mode)) {
    set_error(error, error_size, "%s: not a regular file", path);
    close(fd);
    return MOERT_STATUS_IO_ERROR;
  }
  size_t size = (size_t)info.st_size;
  if (size < MOERT_WEIGHTS_DATA_OFFSET) {
    set_error(error, error_size,
              "%s: %zu bytes, too short for a weight file header (%u bytes)",
              path, size, MOERT_WEIGHTS_DATA_OFFSET);
    close(fd);
    return MOERT_STATUS_FORMAT_ERROR;
  }
  void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
  int map_errno = errno;
  close(fd);
  if (map == MAP_FAILED) {
    set_error(error, error_size, "%s: cannot map: %s", path,
              strerror(map_errno));
    return MOERT_STATUS_IO_ERROR;
  }

  moert_weights_header_t header;
  memcpy(&header, map, sizeof(header));
  moert_status_t status = MOERT_STATUS_FORMAT_ERROR;
  if (memcmp(header.magic, MOERT_WEIGHTS_MAGIC, 8) != 0) {
    set_error(error, error_size, "%s: not a moec weight file (bad magic)",
              path);
  } else if (header.version != MOERT_WEIGHTS_VERSION ||
             header.data_offset != MOERT_WEIGHTS_DATA_OFFSET) {
    set_error(error, error_size,
              "%s: weight file version %u, this executable reads version %u",
              path, header.version, MOERT_WEIGHTS_VERSION);
  } else if (header.data_bytes != model->weights_bytes) {
    set_error(error, error_size,
              "%s: holds %llu bytes of weights, the executable expects %llu: "
              "it belongs to another compile",
              path, (unsigned long long)header.data_bytes,
              (unsigned long long)model->weights_bytes);
  } else if (header.data_hash != model->weights_hash) {
    set_error(error, error_size,
              "%s: weight hash 0x%016llx, the executable expects 0x%016llx: "
              "it belongs to another compile",
              path, (unsigned long long)header.data_hash,
              (unsigned long long)model->weights_hash);
  } else if (size - MOERT_WEIGHTS_DATA_OFFSET < header.data_bytes) {
    set_error(error, error_size,
              "%s: truncated: %zu bytes of data, the header promises %llu",
              path, size - MOERT_WEIGHTS_DATA_OFFSET,
              (unsigned long long)header.data_bytes);
  } else {
    status = MOERT_STATUS_OK;
  }
  if (status != MOERT_STATUS_OK) {
    munmap(map, size);
    return status;
  }
  moert_weights_t *weights = calloc(1, sizeof(*weights));
  if (!weights) {
    munmap(map, size);
    set_error(error, error_size, "out of memory");
    return MOERT_STATUS_OUT_OF_MEMORY;
  }
  weights->map = map;
  weights->map_bytes = size;
  weights->data = (const uint8_t *)map + MOERT_WEIGHTS_DATA_OFFSET;
  weights->data_bytes = header.data_bytes;
  weights->data_hash = header.data_hash;
  snprintf(weights->path, sizeof(weights->path), "%s", path);
  *out_weights = weights;
  return MOERT_STATUS_OK;
}

moert_status_t moert_weights_verify(const moert_weights_t *weights, char *error,
                                    size_t error_size) {
  if (!weights) {
    return MOERT_STATUS_INVALID_ARGUMENT;
  }
  uint64_t hash = moert_hash64(weights->data, weights->data_bytes, 0);
  if (hash != weights->data_hash) {
    set_error(error, error_size,
              "%s: the data hashes to 0x%016llx, its header says 0x%016llx: "
              "the file is corrupt",
              weights->path, (unsigned long long)hash,
              (unsigned long long)weights->data_hash);
    return MOERT_STATUS_FORMAT_ERROR;
  }
  return MOERT_STATUS_OK;
}

const uint8_t *moert_weights_data(const moert_weights_t *weights) {
  return weights->data;
}

uint64_t moert_weights_size(const moert_weights_t *weights) {
  return weights->data_bytes;
}

void moert_weights_release(moert_weights_t *weights) {
  if (!weights) {
    return;
  }
  munmap(weights->map, weights->map_bytes);
  free(weights);
}
