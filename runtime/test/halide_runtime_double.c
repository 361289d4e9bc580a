/*===- halide_runtime_double.c - The Halide runtime calls, for tests ------===*
 *
 * The runtime calls halide_set_error_handler, halide_set_num_threads and
 * halide_can_use_target_features, which a compiled model gets from the
 * Halide runtime object moec links. The runtime's own tests have no such
 * object, so this test double records the handler, letting a test play the
 * part of a failing kernel, and plays a CPU without the features asked for
 * when moert_test_cpu_lacks_features is set. Its device is host memory
 * (a device address is a host pointer), so a GPU model's session can run
 * here; moert_test_device_fails plays a machine without a GPU, and the
 * library loader records which names the runtime's loader tries.
 *
 *===----------------------------------------------------------------------===*/

#include "HalideRuntime.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

halide_error_handler_t moert_test_error_handler = 0;
int moert_test_num_threads = 0;

halide_error_handler_t
halide_set_error_handler(halide_error_handler_t handler) {
  halide_error_handler_t previous = moert_test_error_handler;
  moert_test_error_handler = handler;
  return previous;
}

halide_malloc_t halide_set_custom_malloc(halide_malloc_t f) { return f; }
halide_print_t halide_set_custom_print(halide_print_t f) { return f; }
halide_free_t halide_set_custom_free(halide_free_t f) { return f; }

/* The library loader the runtime installs, and the names it asked the
 * default loader for (which finds only moert_test_library_present). */
halide_load_library_t moert_test_load_library = 0;
char moert_test_libraries_asked[256] = "";
const char *moert_test_library_present = "";

halide_load_library_t halide_set_custom_load_library(halide_load_library_t f) {
  halide_load_library_t previous = moert_test_load_library;
  moert_test_load_library = f;
  return previous;
}

void *halide_default_load_library(const char *name) {
  size_t used = strlen(moert_test_libraries_asked);
  snprintf(moert_test_libraries_asked + used,
           sizeof(moert_test_libraries_asked) - used, "%s;", name);
  static char handle;
  return strcmp(name, moert_test_library_present) == 0 ? &handle : 0;
}

int moert_test_cpu_lacks_features = 0;

int halide_can_use_target_features(int count, const uint64_t *features) {
  (void)count;
  (void)features;
  return !moert_test_cpu_lacks_features;
}

int halide_set_num_threads(int n) {
  int previous = moert_test_num_threads;
  moert_test_num_threads = n;
  return previous;
}

int moert_test_device_fails = 0;
uint64_t moert_test_device_bytes = 0;

static const struct halide_device_interface_t *test_interface(void) {
  static struct halide_device_interface_t fake;
  return &fake;
}

const struct halide_device_interface_t *moert_test_device_interface(void) {
  return test_interface();
}

/* Bytes from a buffer's address to past its last element. */
static size_t span(const halide_buffer_t *b) {
  size_t last = 0;
  for (int i = 0; i < b->dimensions; ++i) {
    last += (size_t)(b->dim[i].extent - 1) * (size_t)b->dim[i].stride;
  }
  return (last + 1) * (size_t)((b->type.bits + 7) / 8);
}

int halide_device_malloc(void *user_context, struct halide_buffer_t *buf,
                         const struct halide_device_interface_t *interface) {
  if (moert_test_device_fails) {
    moert_test_error_handler(user_context, "CUDA API not found: cuInit\n");
    moert_test_error_handler(user_context, "Could not find cuda system "
                                           "libraries\n");
    return halide_error_code_device_malloc_failed;
  }
  size_t bytes = span(buf);
  void *memory = malloc(bytes);
  /* Not zeroed, like a real device's: what must be zero is cleared. */
  memset(memory, 0xA5, bytes);
  buf->device = (uint64_t)(uintptr_t)memory;
  buf->device_interface = interface;
  moert_test_device_bytes += bytes;
  return 0;
}

int halide_device_free(void *user_context, struct halide_buffer_t *buf) {
  (void)user_context;
  moert_test_device_bytes -= span(buf);
  free((void *)(uintptr_t)buf->device);
  buf->device = 0;
  buf->device_interface = 0;
  return 0;
}

int halide_copy_to_device(void *user_context, struct halide_buffer_t *buf,
                          const struct halide_device_interface_t *interface) {
  (void)user_context;
  if (!buf->device || buf->device_interface != interface) {
    return halide_error_code_bad_dimensions;
  }
  if (buf->flags & halide_buffer_flag_host_dirty) {
    memcpy((void *)(uintptr_t)buf->device, buf->host, span(buf));
    buf->flags &= ~(uint64_t)halide_buffer_flag_host_dirty;
  }
  return 0;
}

int halide_copy_to_host(void *user_context, struct halide_buffer_t *buf) {
  (void)user_context;
  if (!buf->host) {
    return halide_error_code_host_is_null;
  }
  if (buf->flags & halide_buffer_flag_device_dirty) {
    memcpy(buf->host, (void *)(uintptr_t)buf->device, span(buf));
    buf->flags &= ~(uint64_t)halide_buffer_flag_device_dirty;
  }
  return 0;
}

/* The last reuse setting asked for (-1: none yet). */
int moert_test_device_reuse = -1;

int halide_reuse_device_allocations(void *user_context, bool reuse) {
  (void)user_context;
  moert_test_device_reuse = reuse;
  return 0;
}

halide_do_par_for_t halide_set_custom_do_par_for(halide_do_par_for_t f) {
  (void)f;
  return NULL;
}
