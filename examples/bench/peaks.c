/*===- peaks.c - This machine's memory bandwidth and FMA peak -------------===*
 *
 * What examples/bench/suite.py sets every result beside (not part of moec):
 *   read GB/s      summing a buffer, DRAM-sized (1 GiB) and cache-sized
 *                  (4 MiB), on 1 and on N threads, best of 5 passes;
 *   f32 GFLOP/s    independent FMA chains on the widest vectors the
 *                  compiler targets (-march=native), on 1 and N threads.
 * Prints one JSON object. Built by suite.py with gcc -O3 -march=native.
 *
 *===----------------------------------------------------------------------===*/

#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef float vec __attribute__((vector_size(64)));

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

typedef struct {
  const vec *data;
  size_t count; /* vectors */
  int passes;
  float sink;
  double gflop_seconds;
} job_t;

static void *read_job(void *arg) {
  job_t *job = arg;
  vec a = {0}, b = {0}, c = {0}, d = {0};
  for (int p = 0; p < job->passes; ++p) {
    for (size_t i = 0; i + 4 <= job->count; i += 4) {
      a += job->data[i];
      b += job->data[i + 1];
      c += job->data[i + 2];
      d += job->data[i + 3];
    }
  }
  vec s = a + b + c + d;
  job->sink = s[0];
  return NULL;
}

/* Bytes per second reading `bytes` on `threads` threads, best of 5. */
static double read_bandwidth(size_t bytes, int threads, int passes) {
  vec *data = aligned_alloc(64, bytes);
  memset(data, 1, bytes);
  size_t per = bytes / sizeof(vec) / threads;
  double best = 0;
  for (int round = 0; round < 5; ++round) {
    pthread_t tid[64];
    job_t jobs[64];
    double t0 = now();
    for (int t = 0; t < threads; ++t) {
      jobs[t] = (job_t){data + per * t, per, passes, 0, 0};
      pthread_create(&tid[t], NULL, read_job, &jobs[t]);
    }
    for (int t = 0; t < threads; ++t) {
      pthread_join(tid[t], NULL);
    }
    double rate = (double)per * threads * sizeof(vec) * passes / (now() - t0);
    best = rate > best ? rate : best;
  }
  free(data);
  return best;
}

static void *fma_job(void *arg) {
  job_t *job = arg;
  /* 12 independent chains hide the FMA latency on two ports. */
  vec acc[12];
  vec x, y;
  for (int i = 0; i < 16; ++i) {
    x[i] = 1.0f + 1e-7f * i;
    y[i] = 1e-7f;
  }
  for (int i = 0; i < 12; ++i) {
    acc[i] = x * (float)(i + 1);
  }
  long iterations = 20000000;
  for (long n = 0; n < iterations; ++n) {
    for (int i = 0; i < 12; ++i) {
      acc[i] = acc[i] * x + y;
    }
  }
  vec s = acc[0];
  for (int i = 1; i < 12; ++i) {
    s += acc[i];
  }
  job->sink = s[0];
  job->gflop_seconds = (double)iterations * 12 * 16 * 2;
  return NULL;
}

static double fma_peak(int threads) {
  pthread_t tid[64];
  job_t jobs[64];
  double t0 = now();
  for (int t = 0; t < threads; ++t) {
    memset(&jobs[t], 0, sizeof(jobs[t]));
    pthread_create(&tid[t], NULL, fma_job, &jobs[t]);
  }
  double flops = 0;
  for (int t = 0; t < threads; ++t) {
    pthread_join(tid[t], NULL);
    flops += jobs[t].gflop_seconds;
  }
  return flops / (now() - t0);
}

int main(int argc, char **argv) {
  int threads = argc > 1 ? atoi(argv[1]) : 2;
  if (threads < 1 || threads > 64) {
    fprintf(stderr, "usage: peaks [threads 1..64]\n");
    return 1;
  }
  printf("{\"threads\": %d, \"dram_read_gbs\": [%.1f, %.1f], "
         "\"cache_read_gbs\": [%.1f, %.1f], \"fma_gflops\": [%.1f, %.1f]}\n",
         threads, read_bandwidth((size_t)1 << 30, 1, 2) / 1e9,
         read_bandwidth((size_t)1 << 30, threads, 2) / 1e9,
         read_bandwidth((size_t)4 << 20, 1, 200) / 1e9,
         read_bandwidth((size_t)4 << 20 << (threads > 1), threads, 200) / 1e9,
         fma_peak(1) / 1e9, fma_peak(threads) / 1e9);
  return 0;
}
