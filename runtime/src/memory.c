/*===- memory.c - How much memory this process can still take -------------===*
 *
 * Every source is read best-effort: a file that is missing or unreadable
 * (another OS, a sandbox) means "no limit from here", never an error.
 *
 *===----------------------------------------------------------------------===*/

#include "memory.h"

#include <stdio.h>
#include <string.h>

#if defined(__linux__)
#include <sys/resource.h>
#include <unistd.h>
#endif

#if defined(__linux__)
/* The first unsigned number in `path` after `key` (all of it when `key` is
 * empty), times `scale`; UINT64_MAX when absent ("max" in a cgroup file). */
static uint64_t read_number(const char *path, const char *key, uint64_t scale) {
  FILE *f = fopen(path, "r");
  if (!f) {
    return UINT64_MAX;
  }
  char line[256];
  uint64_t value = UINT64_MAX;
  size_t key_length = strlen(key);
  while (fgets(line, sizeof(line), f)) {
    if (strncmp(line, key, key_length) != 0) {
      continue;
    }
    unsigned long long n;
    if (sscanf(line + key_length, " %llu", &n) == 1) {
      value = (uint64_t)n * scale;
    }
    break;
  }
  fclose(f);
  return value;
}

/* What `limit` leaves beside `used`; UINT64_MAX for no limit. */
static uint64_t headroom(uint64_t limit, uint64_t used) {
  if (limit == UINT64_MAX || used == UINT64_MAX) {
    return limit;
  }
  return limit > used ? limit - used : 0;
}

static void take(uint64_t candidate, const char *name, uint64_t *least,
                 const char **what) {
  if (candidate < *least) {
    *least = candidate;
    *what = name;
  }
}
#endif

uint64_t moert_memory_available(const char **what) {
  uint64_t least = UINT64_MAX;
  const char *bound = "";
#if defined(__linux__)
  take(read_number("/proc/meminfo", "MemAvailable:", 1024),
       "the machine's available memory (MemAvailable)", &least, &bound);
  take(headroom(read_number("/sys/fs/cgroup/memory.max", "", 1),
                read_number("/sys/fs/cgroup/memory.current", "", 1)),
       "the cgroup's memory.max", &least, &bound);
  /* /proc/self/statm: size and data (+ stack), in pages. */
  unsigned long long size_pages = 0, resident, shared, text, lib, data_pages;
  FILE *statm = fopen("/proc/self/statm", "r");
  int have_statm =
      statm && fscanf(statm, "%llu %llu %llu %llu %llu %llu", &size_pages,
                      &resident, &shared, &text, &lib, &data_pages) == 6;
  if (statm) {
    fclose(statm);
  }
  uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
  struct rlimit limit;
  if (have_statm && getrlimit(RLIMIT_AS, &limit) == 0 &&
      limit.rlim_cur != RLIM_INFINITY) {
    take(headroom((uint64_t)limit.rlim_cur, (uint64_t)size_pages * page),
         "the address-space limit (ulimit -v)", &least, &bound);
  }
  if (have_statm && getrlimit(RLIMIT_DATA, &limit) == 0 &&
      limit.rlim_cur != RLIM_INFINITY) {
    take(headroom((uint64_t)limit.rlim_cur, (uint64_t)data_pages * page),
         "the data-size limit (ulimit -d)", &least, &bound);
  }
#endif
  if (what) {
    *what = bound;
  }
  return least;
}
