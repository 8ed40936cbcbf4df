/*
 * preload.h - the parts of libmoat_preload.so that talk to each other:
 * preload.c (start, mmap & co., statistics, fork), malloc.c (the malloc
 * family) and tcs.c (the thread cap).
 */
#ifndef M_PRELOAD_PRELOAD_H
#define M_PRELOAD_PRELOAD_H

#include <stdint.h>

/* m_preload_malloc_hooks - before the engine starts: foreign pointers are
 * tolerated, engine threads warm their allocator cache. */
void m_preload_malloc_hooks(void);

/* m_preload_malloc_start - once the engine runs: the program heap (on the
 * region source) becomes the default heap.  0 or an errno. */
int m_preload_malloc_start(void);

/* m_preload_heap_first_data - the first data page of the program heap's
 * first arena (made now if it is not yet), where its first allocations go;
 * 0 if there is none. */
uintptr_t m_preload_heap_first_data(void);

/* m_preload_foreign_frees - frees of pointers that were not moat's. */
uint64_t m_preload_foreign_frees(void);

#endif
