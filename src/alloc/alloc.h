/*
 * alloc.h - the contract of the alloc layer with the rest of moat: where a
 * heap gets its pages.
 *
 * A heap never calls mmap or moat_alloc itself; it asks its page source for
 * address space (reserve), gives pages back (decommit) and returns the space
 * at destroy (release).  Two sources exist:
 *   - mmap: MAP_NORESERVE anonymous memory, MADV_DONTNEED to give pages back.
 *     The default heap of the drop-in (libmoat_malloc.so) and of libmoat
 *     when no engine runs.
 *   - region: moat_alloc(MOAT_COMMIT_ON_DEMAND) areas of the engine,
 *     moat_uncommit to give pages back, moat_dealloc to release; or one
 *     region the caller owns (moat_heap_new with cfg->region), which is
 *     uncommitted but never freed.
 * Pages a source hands out read as zeros until written, and read as zeros
 * again after decommit (for COMMIT_ON_DEMAND regions: re-committed as zero
 * pages at the next touch).
 */
#ifndef M_ALLOC_ALLOC_H
#define M_ALLOC_ALLOC_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/uio.h>

struct m_alloc_source {
    const char *name;
    /* reserve - nbytes (a multiple of the page size) of address space
     * aligned to `align` (a power of two >= the page size), readable and
     * writable, committed at first touch.  0 or an errno. */
    int (*reserve)(struct m_alloc_source *src, size_t nbytes, size_t align, void **out);
    /* decommit - the pages' contents are dropped and stop counting as
     * committed; they read as zeros at the next touch.  0 or an errno. */
    int (*decommit)(struct m_alloc_source *src, void *addr, size_t nbytes);
    /* decommit_many - decommit each of ranges[0..n) (page-aligned), its
     * frames dropped in as few system calls as the kernel allows: each call
     * interrupts every other CPU running the process to flush its TLB.  0,
     * or an errno with nothing done (the caller then decommits the ranges
     * one by one).  NULL: the caller always does. */
    int (*decommit_many)(struct m_alloc_source *src, const struct iovec *ranges, size_t n);
    /* release - give back a whole reservation. */
    int (*release)(struct m_alloc_source *src, void *addr, size_t nbytes);
    /* for the caller-owned region source */
    void *region;
    size_t region_nbytes;
    bool region_taken;
};

/*
 * Sharing the process with another allocator (the preload library: memory
 * the C library's malloc handed out before moat's took over).  If set, a
 * pointer that is in no arena of moat's is passed to these instead of being
 * reported as invalid: foreign_free frees it, foreign_usable returns its
 * usable size.  Set once, before other threads run.
 */
extern void (*m_alloc_foreign_free)(void *p);
extern size_t (*m_alloc_foreign_usable)(const void *p);

/* m_alloc_builtin - the built-in heap (mmap source), whichever is default. */
struct moat_heap *m_alloc_builtin(void);

/* m_alloc_realloc_to - realloc(p, n) where a block that must move goes to
 * heap `dest` (p may belong to any heap, or be foreign). */
void *m_alloc_realloc_to(struct moat_heap *dest, void *p, size_t n);

/* m_alloc_source_mmap - fill *src with the mmap source. */
void m_alloc_source_mmap(struct m_alloc_source *src);

#ifndef M_ALLOC_STANDALONE
/* m_alloc_source_region - fill *src with the moat region source: new
 * COMMIT_ON_DEMAND areas if region is NULL, else the one caller-owned region
 * [region, region + nbytes), which reserve hands out once. */
void m_alloc_source_region(struct m_alloc_source *src, void *region, size_t nbytes);
#endif

#endif
