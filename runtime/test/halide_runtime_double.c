/*===- halide_runtime_double.c - The two Halide runtime calls, for tests --===*
 *
 * The runtime calls halide_set_error_handler, halide_set_num_threads and
 * halide_can_use_target_features, which a compiled model gets from the
 * Halide runtime object moec links. The runtime's own tests have no such
 * object, so this test double records the handler, letting a test play the
 * part of a failing kernel, and plays a CPU without the features asked for
 * when moert_test_cpu_lacks_features is set.
 *
 *===----------------------------------------------------------------------===*/

#include "HalideRuntime.h"

halide_error_handler_t moert_test_error_handler = 0;
int moert_test_num_threads = 0;

halide_error_handler_t
halide_set_error_handler(halide_error_handler_t handler) {
  halide_error_handler_t previous = moert_test_error_handler;
  moert_test_error_handler = handler;
  return previous;
}

halide_malloc_t halide_set_custom_malloc(halide_malloc_t f) { return f; }
halide_free_t halide_set_custom_free(halide_free_t f) { return f; }

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
