/*
 * region.h - areas of the emulated ELRANGE (Intel EMM's "EMA") and the
 * region half of the public API (moat_alloc and friends, in region.c).
 *
 * Areas are kept in an array sorted by address under one rwlock; page state
 * lives in the engine's page table (common/engine.h), so the lock guards only
 * the shape of the address space, never a page's contents or I/O.
 */
#ifndef M_REGION_REGION_H
#define M_REGION_REGION_H

#include <moat.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

/* A copy of an area's attributes (areas can be split or freed at any time;
 * callers never hold a pointer into the table). */
struct m_region_info {
    uintptr_t start, end;
    int flags;   /* MOAT_RESERVE / COMMIT_NOW / COMMIT_ON_DEMAND | GROWS* | page type */
    int prot;    /* permissions given to pages committed later */
    uint64_t id; /* identity bound into every sealed page of the area */
    moat_fault_handler_t handler;
    void *handler_private;
};

int m_region_init(void);
void m_region_shutdown(void);

/* m_region_commit_init - commit [addr, addr+length) at start, as an
 * enclave's initial user space is: its pages count as committed from now on
 * (pages already committed are left alone), are zero-filled at their first
 * touch (charged to the budget only then), and stay committed for the
 * engine's life: uncommit and dealloc make them zero again, not uncommitted,
 * and areas allocated over them later find them committed.  Called once, at
 * start (libmoat_preload.so, MOAT_USER_INIT).  0; ENODEV, EINVAL (a range
 * that is misaligned or not in the ELRANGE) or EBUSY (called before);
 * *out_pages (may be NULL) is the number of pages newly committed. */
int m_region_commit_init(void *addr, size_t length, size_t *out_pages);

/* m_region_find - the area containing addr.  0, or ENOENT. */
int m_region_find(uintptr_t addr, struct m_region_info *out);

/* m_region_read_lock / m_region_find_locked / m_region_read_unlock - look
 * up several areas under one hold of the table lock.  Reclaim uses this to
 * learn the identity of its victims before marking them EVICTING: it must
 * never wait for the table lock while it owns pages in flight, since dealloc
 * holds that lock while it waits for them. */
void m_region_read_lock(void);
int m_region_find_locked(uintptr_t addr, struct m_region_info *out);
void m_region_read_unlock(void);

/* m_region_fork_protect - in the child of a fork: make every page the
 * parent had evicted, or was evicting or loading, inaccessible (PROT_NONE),
 * scanning the page table up to the highest address ever allocated. */
void m_region_fork_protect(void);

/* m_region_fork_count - pages evicted, or being evicted or loaded, below
 * the highest address ever allocated. */
size_t m_region_fork_count(void);

/* m_region_fork_load - before fork: read back every evicted page that can
 * be read, below the highest address ever allocated; returns how many. */
size_t m_region_fork_load(void);

/* m_region_fork_lost - in the child of a fork: true if addr is a page made
 * inaccessible by m_region_fork_protect. */
bool m_region_fork_lost(uintptr_t addr);

/* m_region_track - lazy tracking (moat.h): start tracking now if it has not
 * started.  0, or the errno of the registration (logged). */
int m_region_track(void);

/* m_region_untracked_sample - before tracking starts: resident pages in the
 * areas (mincore), and how many of them moat holds as uncommitted (the
 * kernel committed them at a first touch moat did not see). */
void m_region_untracked_sample(uint64_t *resident, uint64_t *committed);

/* m_region_uncommit_ranges - moat_uncommit of each of ranges[0..n) (at most
 * M_REGION_UNCOMMIT_MAX), with the frames of all of them dropped in as few
 * calls as the kernel allows (m_zap_ranges) instead of one madvise a range:
 * each call is a TLB shootdown of every other CPU running the program.  For
 * the allocator's free spans, whose areas keep their permissions; a range
 * of any other area is uncommitted on its own.  0, or the errno of the
 * first bad range with nothing done. */
#define M_REGION_UNCOMMIT_MAX 64
int m_region_uncommit_ranges(const struct iovec *ranges, size_t n);

/* m_region_count - how many areas there are. */
size_t m_region_count(void);

static inline bool m_region_is_reserve(const struct m_region_info *r)
{
    return (r->flags & (MOAT_COMMIT_NOW | MOAT_COMMIT_ON_DEMAND)) == 0;
}

#endif
