/*
 * fault.h - resolving faults on managed memory.
 *
 * The whole ELRANGE is registered once with one userfaultfd in MISSING and
 * WP modes.  Handler threads read fault messages in batches and resolve them:
 * first touch (zero fill), page-in (read, unseal, UFFDIO_COPY), first write
 * to a clean page (drop the write protection, mark dirty).  Custom fault
 * handlers of regions run on the faulting thread from moat's SIGSEGV handler,
 * which also turns accesses to RESERVE areas and uncommitted pages into a
 * fatal error with a message.
 */
#ifndef M_FAULT_FAULT_H
#define M_FAULT_FAULT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* m_fault_open - create the userfaultfd, probe the kernel's features and
 * register [base, base+size).  ENOSYS/EPERM with a log line naming what is
 * missing. */
int m_fault_open(uintptr_t base, size_t size);
/* Where handler threads run (MOAT_FAULT_PIN; fault.c, "Where handler
 * threads run and how they wait"). */
enum {
    M_FAULT_PIN_OFF = 0,  /* wherever the scheduler puts them */
    M_FAULT_PIN_ON = 1,   /* thread i on the i-th CPU the process may use (round robin) */
    M_FAULT_PIN_AUTO = 2, /* pinned when there are as many threads as such CPUs */
};

/* m_fault_start - start the handler threads and install the SIGSEGV handler.
 * With `batch`, the page-ins of several faults read at once are loaded in
 * one store submission (fault.c, "Batched page-in"; MOAT_FAULT_BATCH=0
 * turns it off).  `pin` is an M_FAULT_PIN_* value. */
int m_fault_start(unsigned nthreads, bool batch, unsigned pin);

/* m_fault_pinned - handler threads pinned one per CPU by the last
 * m_fault_start (0: not pinned). */
unsigned m_fault_pinned(void);
/* m_fault_stop - stop the threads, restore the previous SIGSEGV handler,
 * close the userfaultfd. */
void m_fault_stop(void);

/* m_fault_install - make a committed page resident now, as a fault would
 * (zero fill or page-in), and optionally pin it.  0; EACCES uncommitted;
 * ENOMEM budget exhausted; EBADMSG/ESTALE/EIO its sealed copy is unusable. */
int m_fault_install(size_t index, bool pin);

/* m_fault_streams_forget - pages [first, end) were uncommitted or freed: a
 * stream of faults expected there is over (fault-ahead, fault.c). */
void m_fault_streams_forget(size_t first, size_t end);

/* m_fault_batch_stats - since m_fault_start: batches of page-ins (one store
 * submission serving two or more faults of one userfaultfd read), the
 * faulting pages they loaded (pages read ahead not counted), and the pages
 * read ahead of page-in faults (batched or not). */
void m_fault_batch_stats(uint64_t *batches, uint64_t *pages, uint64_t *readahead);

/* m_fault_copy_in - commit_data: install `src` (one page) into an uncommitted
 * page with UFFDIO_COPY and mark it resident and dirty.  The caller charged
 * the budget and holds the page lock; returns 0 or an errno. */
int m_fault_copy_in(uintptr_t addr, const void *src);

#endif
