/*===- memory.h - How much memory this process can still take -------------===*
 *
 * Private to the runtime. A session allocates its KV cache and arena up
 * front; on Linux an allocation larger than memory usually succeeds
 * (overcommit) and the process is killed later, when the pages are
 * touched. So the session asks first and refuses with a message that says
 * what needs how much.
 *
 *===----------------------------------------------------------------------===*/

#ifndef MOERT_SRC_MEMORY_H
#define MOERT_SRC_MEMORY_H

#include <stdint.h>

/* Bytes this process can still allocate, or UINT64_MAX when nothing limits
 * it that can be read: the least of the kernel's MemAvailable, the cgroup
 * v2 limit less its usage, and RLIMIT_AS and RLIMIT_DATA less what is
 * mapped. `what` receives the name of the limit that bound it. */
uint64_t moert_memory_available(const char **what);

#endif /* MOERT_SRC_MEMORY_H */
