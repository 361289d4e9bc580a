/*===- thread_pool.h - Parallel loops whose workers stay awake ------------===*
 *
 * Private to the runtime. A decode step runs about a hundred kernels, each a
 * few tens of microseconds, most with one parallel loop. Halide's own pool
 * puts its workers to sleep between loops, and waking a sleeping thread on
 * a virtual machine takes about as long as the loop: `--profile` showed the
 * parallel stages of a decode step on 1.1-1.4 threads of 2. This pool's
 * workers spin for a while after each loop (the next one comes within
 * microseconds during a step) and only then sleep, so an idle executable
 * (a chat waiting for input) uses no CPU.
 *
 * One loop runs at a time, started by the thread that calls the kernels; a
 * loop started from inside a task (nested) runs on the calling thread.
 *
 *===----------------------------------------------------------------------===*/

#ifndef MOERT_SRC_THREAD_POOL_H
#define MOERT_SRC_THREAD_POOL_H

#include <stdint.h>

/* Uses `threads` threads (the caller and threads - 1 workers) for Halide's
 * parallel loops from now on; 1 stops the workers. Not thread-safe: called
 * between kernels. Returns 0, or -1 when a worker could not be started (the
 * loops then run on the workers that did start). */
int moert_pool_set_threads(int threads);

/* Halide's do_par_for hook: runs `f(user_context, i, closure)` for i in
 * [min, min + extent); the first nonzero result is returned. */
int moert_pool_do_par_for(void *user_context, int (*f)(void *, int, uint8_t *),
                          int min, int extent, uint8_t *closure);

#endif /* MOERT_SRC_THREAD_POOL_H */
