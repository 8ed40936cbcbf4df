/*
 * budget.h - resident-page accounting and reclaim.
 *
 * The budget is the emulated EPC: at most budget_pages pages of managed
 * memory are resident at once (invariant 3).  A page becomes resident only
 * after m_budget_charge succeeded for it; a page stops being resident (evicted,
 * uncommitted, freed) with m_budget_uncharge.  Pinned pages stay charged and
 * are also counted as unreclaimable.
 *
 * Reclaim keeps residency between the low and high watermarks in a
 * background thread; a charge that finds the budget full reclaims a batch
 * itself (synchronous reclaim) before it fails with ENOMEM.
 */
#ifndef M_BUDGET_BUDGET_H
#define M_BUDGET_BUDGET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

struct m_store_queue;

int m_budget_init(void);
void m_budget_shutdown(void);

/* m_budget_charge - reserve room for npages resident pages, reclaiming
 * synchronously if the budget is full.  0, or ENOMEM when nothing can be
 * reclaimed (every resident page is pinned or the store refuses writes) for
 * longer than a few seconds (100 ms when the store is refusing writes). */
int m_budget_charge(size_t npages);
/* m_budget_try_charge - the same, but after one round of reclaim that frees
 * nothing it gives up (ENOMEM) instead of waiting. */
int m_budget_try_charge(size_t npages);
void m_budget_uncharge(size_t npages);

/* m_budget_boost - extend (delta > 0) or shrink back the budget and its
 * watermarks for a moment (fork, engine.c). */
void m_budget_boost(int64_t delta);

/* m_budget_sample_rescued - the page at index, write-protected by reclaim's
 * write sampling, was written during its sampled lap (fault.c's WP fault). */
void m_budget_sample_rescued(size_t index);

/* m_reclaim_track - put a page that just became resident at the tail of the
 * reclaim list.  Called with the page lock held; returns the flags to unlock
 * with (M_PF_INLIST set). */
uint32_t m_reclaim_track(size_t index, uint32_t flags);

/* m_reclaim_refault - the flags of an EVICTED page being paged in, from its
 * eviction stamp: the flags it comes back with, M_PF_REF | M_PF_HOT_MASK if
 * it was evicted very recently (counted), else 0 (budget.c, "Refaults"). */
uint32_t m_reclaim_refault(uint32_t flags);
/* m_reclaim_refaults_hot - page-ins that came back hot since start. */
uint64_t m_reclaim_refaults_hot(void);

/* m_reclaim_run - evict up to `want` pages now, from the calling thread.
 * Returns the number of pages that stopped being resident. */
size_t m_reclaim_run(size_t want);

/* m_reclaim_wait_idle - wait until no eviction is in flight (shutdown). */
void m_reclaim_wait_idle(void);

/* Records in an I/O context are laid out at a stride aligned for O_DIRECT. */
#define M_IO_STRIDE ((M_STORE_RECORD + M_STORE_ALIGN - 1) / M_STORE_ALIGN * M_STORE_ALIGN)

/* A thread's store queue and bounce buffers, created at first use and freed
 * when the thread exits.  record[] holds batch_pages+1 records. */
struct m_io_ctx {
    struct m_store_queue *queue;
    uint8_t *records; /* batch + 1 records, each aligned to M_STORE_ALIGN */
    uint8_t *plain;   /* one page, aligned */
    size_t nrecords;
};
/* m_io_ctx_get - this thread's context, or NULL (ENOMEM/queue errors are
 * logged). */
struct m_io_ctx *m_io_ctx_get(void);
void m_io_ctx_release_all(void);

#endif
