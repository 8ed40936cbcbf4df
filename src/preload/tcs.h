/*
 * tcs.h - the thread cap of libmoat_preload.so (tcs.c), as seen by the
 * rest of the library.
 *
 * Environment: MOAT_THREADS_MAX, the most threads the program may have
 * alive at once, its main thread included (0 or unset: no cap).
 */
#ifndef M_PRELOAD_TCS_H
#define M_PRELOAD_TCS_H

#include <stdint.h>

/* m_preload_tcs_stats - the program's live threads now and their peak since
 * the start (or the last fork), main thread included, moat's own threads
 * excluded.  For the statistics block (stats_block.h: threads_live,
 * threads_peak).  Either pointer may be NULL.  Async-signal-safe. */
__attribute__((visibility("hidden"))) void m_preload_tcs_stats(uint64_t *live, uint64_t *peak);

#endif
