/*
 * engine.h - the state every layer of the engine shares: the emulated
 * ELRANGE, the per-page table, the counters.  Layers still talk to each other
 * only through their own headers; this is the data they have in common.
 *
 * The page table
 * --------------
 * One entry of 12 bytes for every page of the ELRANGE, indexed by
 * (addr - base) / 4096, in an mmap'd NORESERVE array: only the parts that
 * describe used addresses ever take memory.  A single global table (rather
 * than one per region) makes region splits free and lets any thread find a
 * page's state from its address alone.
 *
 *   flags    state (3 bits), a lock bit, dirty / referenced / pinned / ...
 *   version  the version of the sealed copy in the store (the VA slot); it
 *            only grows, across uncommit and re-commit too, so an old record
 *            can never be replayed into a page
 *   slot     the store slot holding the sealed copy, or M_SLOT_NONE
 *
 * The page lock is a bit in flags, taken with a compare-and-swap.  It guards
 * state transitions and is never held across store I/O or sealing: a page in
 * flight is EVICTING or LOADING, and those states are owned by the one thread
 * that set them.
 */
#ifndef M_COMMON_ENGINE_H
#define M_COMMON_ENGINE_H

#include <moat.h>

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define M_PAGE_SHIFT 12
#define M_PAGE_SIZE  4096UL
/* Page-table slots are the store slot + 1, so the all-zero page table of a
 * fresh mapping means "no slot". */
#define M_SLOT_NONE       0u
#define M_FAULT_AHEAD_MAX 32

/* Page states (DESIGN.md). */
enum m_page_state {
    M_PS_UNCOMMITTED = 0, /* no page; access is a commit (on demand) or an error */
    M_PS_UNTOUCHED = 1,   /* committed, zero, no frame yet */
    M_PS_RESIDENT = 2,
    M_PS_EVICTING = 3, /* being sealed and written; owned by the evictor */
    M_PS_EVICTED = 4,  /* sealed in the store at `slot`, version `version` */
    M_PS_LOADING = 5,  /* being read back; owned by the loader */
};

#define M_PF_STATE   0x7u
#define M_PF_LOCK    (1u << 3)
#define M_PF_DIRTY   (1u << 4)  /* differs from its sealed copy (or has none) */
#define M_PF_REF     (1u << 5)  /* referenced since it entered the reclaim list */
#define M_PF_PINNED  (1u << 6)  /* unreclaimable (moat_pin, TCS) */
#define M_PF_INLIST  (1u << 7)  /* has an entry in the reclaim list */
#define M_PF_WP      (1u << 8)  /* write-protected through userfaultfd */
#define M_PF_WAITER  (1u << 9)  /* a writer waits on this page's eviction */
#define M_PF_BAD     (1u << 10) /* sealed copy failed verification: SIGBUS on access */
#define M_PF_TCS     (1u << 11)
#define M_PF_SAMPLED (1u << 15) /* write-protected by reclaim to see if it is written */
/* write sampling in victim choice (m_engine.reclaim_sample) */
enum { M_SAMPLE_OFF = 0, M_SAMPLE_ON = 1, M_SAMPLE_AUTO = 2 };
/* how a sample sees writes: the probes choose, a hash of the contents, or
 * write protection */
enum { M_SAMPLE_BY_AUTO = 0, M_SAMPLE_BY_HASH = 1, M_SAMPLE_BY_WP = 2 };
/* laps a page written while it was sampled skips sampling (2 bits) */
#define M_PF_HOT_SHIFT  16
#define M_PF_HOT_MASK   (3u << M_PF_HOT_SHIFT)
#define M_PF_PROT_SHIFT 12 /* 3 bits: MOAT_PROT_* of a committed page */
#define M_PF_PROT_MASK  (0x7u << M_PF_PROT_SHIFT)
/* an EVICTED page's eviction time: 1 + (evictions / (budget/64)) modulo
 * 2^14 - 1 (budget.c, "Refaults"); in a RESIDENT page the same bits hold
 * M_PF_REFILL (its low two); zero in every other state */
#define M_PF_STAMP_SHIFT 18
#define M_PF_STAMP_BITS  14u
#define M_PF_STAMP_MASK  (((1u << M_PF_STAMP_BITS) - 1) << M_PF_STAMP_SHIFT)
/* a RESIDENT page paged in soon after its eviction: how many more times
 * its hot laps are refilled when they run out (budget.c, "Refaults") */
#define M_PF_REFILL_SHIFT M_PF_STAMP_SHIFT
#define M_PF_REFILL_MASK  (3u << M_PF_REFILL_SHIFT)

struct m_page {
    _Atomic uint32_t flags;
    uint32_t version; /* guarded by the page lock */
    uint32_t slot;    /* guarded by the page lock */
};
_Static_assert(sizeof(struct m_page) == 12, "page metadata is 12 bytes a page");

static inline uint64_t m_slot_store(uint32_t slot)
{
    return (uint64_t)slot - 1;
}
static inline uint32_t m_slot_page(uint64_t store_slot)
{
    return (uint32_t)(store_slot + 1);
}

static inline unsigned m_page_state(uint32_t flags)
{
    return flags & M_PF_STATE;
}
static inline unsigned m_page_prot(uint32_t flags)
{
    return (flags & M_PF_PROT_MASK) >> M_PF_PROT_SHIFT;
}

/* m_page_lock - take the page lock; returns the flags seen at locking (with
 * the lock bit set).  Hold times are a few microseconds at most (one ioctl),
 * so spinning then yielding is cheaper than a futex. */
static inline uint32_t m_page_lock(struct m_page *p)
{
    unsigned spins = 0;
    for (;;) {
        uint32_t f = atomic_load_explicit(&p->flags, memory_order_relaxed);
        if (!(f & M_PF_LOCK) &&
            atomic_compare_exchange_weak_explicit(&p->flags, &f, f | M_PF_LOCK,
                                                  memory_order_acquire, memory_order_relaxed))
            return f | M_PF_LOCK;
        if (++spins > 64)
            sched_yield();
    }
}

static inline bool m_page_trylock(struct m_page *p, uint32_t *flags_out)
{
    uint32_t f = atomic_load_explicit(&p->flags, memory_order_relaxed);
    if (f & M_PF_LOCK)
        return false;
    if (!atomic_compare_exchange_strong_explicit(&p->flags, &f, f | M_PF_LOCK, memory_order_acquire,
                                                 memory_order_relaxed))
        return false;
    *flags_out = f | M_PF_LOCK;
    return true;
}

/* m_page_unlock - publish new flags (the lock bit is cleared). */
static inline void m_page_unlock(struct m_page *p, uint32_t flags)
{
    atomic_store_explicit(&p->flags, flags & ~M_PF_LOCK, memory_order_release);
}

static inline uint32_t m_page_set_state(uint32_t flags, unsigned state)
{
    return (flags & ~M_PF_STATE) | state;
}

/* Counters: each is atomic and monotonic or a level; moat_stats reads them. */
struct m_counters {
    _Atomic uint64_t committed, peak_committed;
    _Atomic uint64_t resident, peak_resident, unreclaimable;
    _Atomic uint64_t evicted;
    _Atomic uint64_t faults_commit, faults_pagein, faults_wp, faults_handler, faults_fatal;
    _Atomic uint64_t evictions_written, evictions_clean, reclaim_sync;
    _Atomic uint64_t store_bytes_written, store_bytes_read, store_errors;
    _Atomic uint64_t integrity_failures;
    _Atomic uint64_t fault_ns, reclaim_ns;
    _Atomic uint64_t fork_loaded;         /* pages read back so that a fork child sees them */
    _Atomic uint64_t wp_calls, zap_calls; /* TLB-flushing page-table changes (moat_stats) */
};

struct m_store;

struct m_engine {
    uintptr_t base; /* the ELRANGE */
    size_t size;
    size_t npages;
    struct m_page *pages; /* npages entries */
    int uffd;             /* -1 when not running */
    uint64_t uffd_features;
    struct m_store *store;
    uint64_t budget_pages; /* 0 = unlimited */
    uint64_t low_pages, high_pages;
    unsigned batch_pages;
    unsigned fault_threads;
    unsigned fault_ahead;     /* pages per sequential fault, 1..M_FAULT_AHEAD_MAX */
    unsigned reclaim_sample;  /* M_SAMPLE_* (MOAT_RECLAIM_SAMPLE, budget.c) */
    unsigned sample_by;       /* M_SAMPLE_BY_* (MOAT_SAMPLE_BY, budget.c) */
    bool refault_hot;         /* page-ins soon after eviction come back hot (MOAT_REFAULT) */
    uint64_t fork_load_pages; /* evicted pages fork() reads back at most */
    bool lazy;                /* lazy tracking requested (moat_options.lazy) */
    _Atomic bool tracking;    /* the range is registered and every page's state is exact */
    _Atomic bool running;
    struct m_counters c;
};

extern struct m_engine m_engine;

static inline bool m_engine_contains(uintptr_t addr)
{
    return addr - m_engine.base < m_engine.size;
}
static inline size_t m_engine_index(uintptr_t addr)
{
    return (addr - m_engine.base) >> M_PAGE_SHIFT;
}
static inline uintptr_t m_engine_addr(size_t index)
{
    return m_engine.base + (index << M_PAGE_SHIFT);
}
static inline struct m_page *m_engine_page(size_t index)
{
    return &m_engine.pages[index];
}

/* m_counter_add / m_counter_level - bump a counter; a level also updates its
 * peak. */
static inline void m_counter_add(_Atomic uint64_t *c, uint64_t n)
{
    atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}
static inline void m_counter_sub(_Atomic uint64_t *c, uint64_t n)
{
    atomic_fetch_sub_explicit(c, n, memory_order_relaxed);
}
static inline void m_counter_level(_Atomic uint64_t *c, _Atomic uint64_t *peak, uint64_t n)
{
    uint64_t v = atomic_fetch_add_explicit(c, n, memory_order_relaxed) + n;
    uint64_t p = atomic_load_explicit(peak, memory_order_relaxed);
    while (v > p && !atomic_compare_exchange_weak_explicit(peak, &p, v, memory_order_relaxed,
                                                           memory_order_relaxed))
        ;
}

uint64_t m_now_ns(void);

/* m_engine_stats - moat_stats; with `often` (a caller that asks every few
 * ms, the preload's publisher), the sample of untracked pages may be reused
 * for up to 50 times what taking it cost. */
struct moat_stats;
int m_engine_stats(struct moat_stats *out, bool often);

/* m_engine_track_register - register the ELRANGE with the userfaultfd
 * (MISSING | WP): lazy tracking's start (region.c).  0 or errno, logged. */
int m_engine_track_register(void);

/*
 * Threads inside moat
 *
 * m_engine_internal is nonzero while a thread runs moat's own code on a
 * program's behalf (a region call from the allocator or the preload), and
 * always in the threads moat starts.  Memory such a thread allocates must not
 * come from managed memory: a fault on it could need the very thread that is
 * waiting, or a lock that thread holds.  The preload library serves those
 * allocations from an unmanaged heap (docs/run.md).  initial-exec: no
 * allocation on first access, which the preload's malloc relies on.
 */
extern __thread unsigned m_engine_internal __attribute__((tls_model("initial-exec")));

/* m_engine_thread_hook - if set, called at the start of every thread the
 * engine starts, after it is marked internal (the preload warms the thread's
 * allocator cache with it, so the thread never takes the allocator's global
 * lock while resolving a fault). */
extern void (*m_engine_thread_hook)(void);

/* m_engine_thread_enter - the first call of every engine thread. */
void m_engine_thread_enter(void);

/* m_engine_forked - true in the child of a fork() of a process that ran the
 * engine: the child has the parent's resident pages (copy on write) but no
 * engine; pages the parent had evicted are inaccessible (see
 * m_region_fork_protect) and an access to them stops the child with a
 * message. */
extern _Atomic bool m_engine_forked;

#endif
