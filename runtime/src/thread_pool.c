/*===- thread_pool.c - Parallel loops whose workers stay awake ------------===*
 *
 * See thread_pool.h. A loop is a job in one of two static slots, published
 * through `current`; a worker pins a slot (refs) before reading it and
 * checks that it is still the published one, so a slot is rewritten only
 * when no worker holds it. Indices are handed out by one atomic counter.
 *
 *===----------------------------------------------------------------------===*/

#define _GNU_SOURCE /* syscall, clock_gettime */

#include "thread_pool.h"

#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stddef.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

enum { kMaxWorkers = 63 };

/* How long a worker spins for the next loop before it sleeps. Inside a
 * decode step loops follow each other within tens of microseconds; a
 * chat waiting for its user stops spinning after this. */
static const int64_t kSpinNanoseconds = 2 * 1000 * 1000;

typedef struct {
  int (*f)(void *, int, uint8_t *);
  void *user_context;
  uint8_t *closure;
  int min, extent;
  atomic_int next;  /* the next index to hand out */
  atomic_int done;  /* indices finished */
  atomic_int error; /* the first nonzero result */
  atomic_int refs;  /* workers holding this slot */
} job_t;

static job_t slots[2];
static int next_slot;
static _Atomic(job_t *) current;
/* Bumped for every job; the futex sleeping workers wait on. */
static atomic_uint posted;
static atomic_int sleepers;
static atomic_int stopping;
static pthread_t workers[kMaxWorkers];
static int worker_count;
static _Thread_local int in_task;
/* Held while a loop runs: a second thread running kernels at the same time
 * (two sessions of one program) runs its loops on itself. */
static pthread_mutex_t busy = PTHREAD_MUTEX_INITIALIZER;

static inline void cpu_relax(void) {
#if defined(__x86_64__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

static int64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* Runs indices of `job` until none is left. */
static void work_on(job_t *job) {
  in_task = 1;
  for (;;) {
    int i = atomic_fetch_add_explicit(&job->next, 1, memory_order_relaxed);
    if (i >= job->extent) {
      break;
    }
    int result = job->f(job->user_context, job->min + i, job->closure);
    if (result) {
      int expected = 0;
      atomic_compare_exchange_strong(&job->error, &expected, result);
    }
    atomic_fetch_add_explicit(&job->done, 1, memory_order_release);
  }
  in_task = 0;
}

static void *worker_main(void *unused) {
  (void)unused;
  unsigned seen = atomic_load(&posted);
  while (!atomic_load_explicit(&stopping, memory_order_relaxed)) {
    job_t *job = atomic_load_explicit(&current, memory_order_acquire);
    if (job) {
      atomic_fetch_add(&job->refs, 1);
      if (atomic_load(&current) == job) {
        work_on(job);
      }
      atomic_fetch_sub(&job->refs, 1);
    }
    /* Spin until the next job is posted, then sleep on `posted`. */
    int64_t until = now_ns() + kSpinNanoseconds;
    unsigned now;
    int spins = 0;
    while ((now = atomic_load_explicit(&posted, memory_order_acquire)) ==
               seen &&
           !atomic_load_explicit(&stopping, memory_order_relaxed)) {
      cpu_relax();
      if (++spins % 256 != 0) {
        continue;
      }
      /* Every few microseconds: let a thread waiting for this core run
       * (a busy machine, more threads than cores), and sleep once the
       * spin has lasted long enough. */
      sched_yield();
      if (now_ns() > until) {
        atomic_fetch_add(&sleepers, 1);
        if (atomic_load(&posted) == seen) {
          syscall(SYS_futex, (unsigned *)&posted, FUTEX_WAIT_PRIVATE, seen,
                  NULL, NULL, 0);
        }
        atomic_fetch_sub(&sleepers, 1);
        until = now_ns() + kSpinNanoseconds;
      }
    }
    seen = now;
  }
  return NULL;
}

static void wake_all(void) {
  /* Sequentially consistent, as a worker's `sleepers` increment and its
   * second look at `posted` are: either it sees the new value, or this
   * sees it asleep (stop_workers joins, so a lost wake-up would hang). */
  atomic_fetch_add(&posted, 1);
  if (atomic_load(&sleepers) > 0) {
    syscall(SYS_futex, (unsigned *)&posted, FUTEX_WAKE_PRIVATE, kMaxWorkers,
            NULL, NULL, 0);
  }
}

static void stop_workers(void) {
  atomic_store(&stopping, 1);
  wake_all();
  for (int i = 0; i < worker_count; ++i) {
    pthread_join(workers[i], NULL);
  }
  worker_count = 0;
  atomic_store(&stopping, 0);
}

int moert_pool_set_threads(int threads) {
  int wanted = threads - 1;
  if (wanted > kMaxWorkers) {
    wanted = kMaxWorkers;
  }
  if (wanted < 0) {
    wanted = 0;
  }
  if (wanted == worker_count) {
    return 0;
  }
  stop_workers();
  while (worker_count < wanted) {
    if (pthread_create(&workers[worker_count], NULL, worker_main, NULL)) {
      return -1;
    }
    ++worker_count;
  }
  return 0;
}

int moert_pool_do_par_for(void *user_context, int (*f)(void *, int, uint8_t *),
                          int min, int extent, uint8_t *closure) {
  if (worker_count == 0 || in_task || extent <= 1 ||
      pthread_mutex_trylock(&busy) != 0) {
    for (int i = 0; i < extent; ++i) {
      int result = f(user_context, min + i, closure);
      if (result) {
        return result;
      }
    }
    return 0;
  }
  job_t *job = &slots[next_slot];
  next_slot ^= 1;
  /* A worker may still hold this slot from two loops ago. */
  while (atomic_load(&job->refs) != 0) {
    sched_yield();
  }
  job->f = f;
  job->user_context = user_context;
  job->closure = closure;
  job->min = min;
  job->extent = extent;
  atomic_store_explicit(&job->next, 0, memory_order_relaxed);
  atomic_store_explicit(&job->done, 0, memory_order_relaxed);
  atomic_store_explicit(&job->error, 0, memory_order_relaxed);
  atomic_store_explicit(&current, job, memory_order_release);
  wake_all();
  work_on(job);
  /* The last tasks run on the workers: wait for them, yielding now and
   * then in case one waits for this core. */
  for (int spins = 1;
       atomic_load_explicit(&job->done, memory_order_acquire) < extent;
       ++spins) {
    cpu_relax();
    if (spins % 256 == 0) {
      sched_yield();
    }
  }
  atomic_store_explicit(&current, NULL, memory_order_release);
  pthread_mutex_unlock(&busy);
  return atomic_load(&job->error);
}
