/*
 * preload.c - libmoat_preload.so: run an unmodified program's private
 * anonymous memory under moat.
 *
 * The library is loaded with LD_PRELOAD (by `moat run`).  Its constructor
 * starts the engine from the environment (moat_init(NULL): MOAT_BUDGET,
 * MOAT_LOW, MOAT_HIGH, MOAT_STORE, ...) and makes moat's allocator serve the
 * whole malloc family from managed memory (malloc.c).  It also interposes
 * mmap, munmap, mremap, madvise and mprotect:
 *
 *   - a private anonymous read-write mmap without MAP_FIXED becomes a
 *     COMMIT_ON_DEMAND region; everything else (PROT_NONE reservations,
 *     MAP_SHARED, files, MAP_STACK/GROWSDOWN, huge pages, ...) goes to the
 *     kernel unchanged;
 *   - munmap, mremap, madvise(DONTNEED/FREE) and mprotect on the ELRANGE go
 *     to moat_dealloc, a new region plus a copy, moat_uncommit and
 *     moat_modify_permissions; the parts of a call outside the ELRANGE go to
 *     the kernel.
 *
 * The engine itself calls mmap & co. on its own memory (the ELRANGE, its
 * page table, I/O buffers, zapping evicted pages).  Those calls must reach
 * the kernel, not this file: the build renames the engine's references to
 * m_preload_sys_* (objcopy --redefine-sym, see CMakeLists.txt), which are
 * raw system calls below.  Calls from libraries the engine uses while this
 * library is calling into the engine are sent to the kernel by a
 * thread-local guard (m_engine_internal).  The C library's own internal
 * mmap calls (thread stacks) are invisible to any preload and stay outside
 * moat.
 *
 * fork: a child made by fork() keeps its parent's resident pages
 * (copy-on-write) and runs without moat; touching a page the parent had
 * evicted stops it with a message (engine.c).  fork followed by exec needs
 * nothing: the new program starts a moat of its own.
 *
 * Under `moat run --config`, MOAT_USER_MAX makes a full range ENOMEM (as
 * in the enclave) instead of a fall-back to the kernel, and MOAT_USER_INIT
 * bytes are committed at start where the program's first allocations go
 * (pl_commit_init).
 *
 * Statistics are published in /dev/shm/moat-<pid>.stats (stats_block.h)
 * by a thread every MOAT_STATS_INTERVAL ms (default 100) and at exit
 * (exit() or _exit(), which is interposed for this alone).
 */
/* mmap and mmap64 are both defined here: no header redirection of one to
 * the other (hiredis's flags bring _FILE_OFFSET_BITS=64). */
#undef _FILE_OFFSET_BITS

#include "common/engine.h"
#include "preload/preload.h"
#include "region/region.h"
#include "preload/tcs.h"
#include "preload/stats_block.h"
#include "store/cluster.h"

#include <moat.h>
#include <moat/alloc.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define PL_EXPORT   __attribute__((visibility("default")))
#define PL_EXIT_RUN 4 /* `moat` exit code for a runtime failure (tools/moat/cli.h) */

/* ------------------------------------------------------------------------
 * The kernel's functions, as raw system calls
 * ---------------------------------------------------------------------- */

/* The engine's own calls land here (renamed at link time), as do the calls
 * this file passes on.  syscall() returns -1 and sets errno like the libc
 * wrappers. */
__attribute__((visibility("hidden"))) void *m_preload_sys_mmap(void *addr, size_t len, int prot,
                                                               int flags, int fd, off_t off)
{
    return (void *)syscall(SYS_mmap, addr, len, prot, flags, fd, off);
}

__attribute__((visibility("hidden"))) void *m_preload_sys_mmap64(void *addr, size_t len, int prot,
                                                                 int flags, int fd, off_t off)
{
    return m_preload_sys_mmap(addr, len, prot, flags, fd, off);
}

__attribute__((visibility("hidden"))) int m_preload_sys_munmap(void *addr, size_t len)
{
    return (int)syscall(SYS_munmap, addr, len);
}

__attribute__((visibility("hidden"))) int m_preload_sys_mprotect(void *addr, size_t len, int prot)
{
    return (int)syscall(SYS_mprotect, addr, len, prot);
}

__attribute__((visibility("hidden"))) int m_preload_sys_madvise(void *addr, size_t len, int advice)
{
    return (int)syscall(SYS_madvise, addr, len, advice);
}

__attribute__((visibility("hidden"))) void *m_preload_sys_mremap(void *old, size_t oldlen,
                                                                 size_t newlen, int flags, ...)
{
    void *newaddr = NULL;
    if (flags & MREMAP_FIXED) {
        va_list ap;
        va_start(ap, flags);
        newaddr = va_arg(ap, void *);
        va_end(ap);
    }
    return (void *)syscall(SYS_mremap, old, oldlen, newlen, flags, newaddr);
}

/* ------------------------------------------------------------------------
 * State
 * ---------------------------------------------------------------------- */

enum { PL_OFF = 0, PL_ON = 1, PL_FORKED = 2 };

static struct {
    _Atomic int state;         /* PL_*: set once by the constructor, then by fork */
    uintptr_t base, end;       /* the ELRANGE; constant once PL_ON */
    pid_t pid;                 /* the process that started moat */
    struct m_stats_block *blk; /* the published block (shared), or NULL */
    struct m_stats_block cur;  /* what is published next; guarded by blk_lock */
    bool blk_unlink;           /* we created the block, so we remove it at exit */
    char blk_path[64];
    pthread_mutex_t blk_lock; /* serialises updates of blk (thread vs exit) */
    unsigned interval_ms;
    struct timespec start;
    _Atomic int warned_full;
    bool user_max;      /* MOAT_USER_MAX (moat run --config): the range is the cap */
    uint64_t user_init; /* pages committed at start (MOAT_USER_INIT) */
} pl = {.blk_lock = PTHREAD_MUTEX_INITIALIZER};

/* m_engine_internal (common/engine.h) is set while this thread is inside
 * the engine on this library's behalf, and in the engine's own threads:
 * anything mapped meanwhile goes to the kernel, anything allocated comes
 * from the unmanaged heap (malloc.c). */

static inline bool pl_active(void)
{
    return atomic_load_explicit(&pl.state, memory_order_acquire) == PL_ON && !m_engine_internal;
}

static inline uintptr_t pl_round_up(size_t n)
{
    return ((uintptr_t)n + MOAT_PAGE_SIZE - 1) & ~(MOAT_PAGE_SIZE - 1);
}

/* Split [a, a+n) into the part below the ELRANGE, the part inside it and the
 * part above it.  Returns true if the inside part is not empty. */
struct pl_split {
    uintptr_t lo_s, lo_e, in_s, in_e, hi_s, hi_e;
};

static bool pl_split_range(uintptr_t a, size_t n, struct pl_split *sp)
{
    uintptr_t e = a + pl_round_up(n);
    if (e < a)
        e = UINTPTR_MAX & ~(MOAT_PAGE_SIZE - 1);
    sp->lo_s = a;
    sp->lo_e = a < pl.base ? (e < pl.base ? e : pl.base) : a;
    sp->in_s = a > pl.base ? a : pl.base;
    sp->in_e = e < pl.end ? e : pl.end;
    sp->hi_s = a > pl.end ? a : pl.end;
    sp->hi_e = e > pl.end ? e : sp->hi_s;
    if (sp->in_s >= sp->in_e)
        sp->in_s = sp->in_e = 0;
    return sp->in_e > sp->in_s;
}

static inline int pl_fail(int err)
{
    errno = err;
    return -1;
}

/* Retry a region call that another thread's concurrent dealloc made busy. */
static int pl_dealloc(uintptr_t s, uintptr_t e)
{
    int err;
    m_engine_internal++;
    for (int i = 0; (err = moat_dealloc((void *)s, e - s)) == EBUSY && i < 1000; i++)
        sched_yield();
    m_engine_internal--;
    return err == EINVAL ? 0 : err; /* nothing there: munmap of a hole is fine */
}

/* ------------------------------------------------------------------------
 * mmap / munmap
 * ---------------------------------------------------------------------- */

/* Private anonymous read-write memory, nothing exotic: what moat serves. */
static bool pl_mmap_is_managed(int prot, int flags)
{
    const int plain = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_POPULATE;
    return prot == (PROT_READ | PROT_WRITE) && (flags & MAP_TYPE) == MAP_PRIVATE &&
           (flags & MAP_ANONYMOUS) && !(flags & ~plain);
}

static void *pl_mmap_managed(void *addr, size_t len, int fixed, bool replace)
{
    uintptr_t hint = (uintptr_t)addr;
    void *out = NULL;
    if (hint < pl.base || hint >= pl.end || (hint & (MOAT_PAGE_SIZE - 1)))
        hint = 0;
    m_engine_internal++;
    int err =
        moat_alloc((void *)hint, pl_round_up(len), MOAT_COMMIT_ON_DEMAND | fixed, NULL, NULL, &out);
    if (err == EEXIST && fixed && replace) {
        /* MAP_FIXED replaces what was there, as the kernel would. */
        m_engine_internal--;
        err = pl_dealloc(hint, hint + pl_round_up(len));
        m_engine_internal++;
        if (!err)
            err = moat_alloc((void *)hint, pl_round_up(len), MOAT_COMMIT_ON_DEMAND | fixed, NULL,
                             NULL, &out);
    }
    m_engine_internal--;
    if (err) {
        errno = err;
        return MAP_FAILED;
    }
    return out;
}

PL_EXPORT void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    if (pl_active() && len) {
        int fixed = flags & (MAP_FIXED | MAP_FIXED_NOREPLACE);
        bool managed = pl_mmap_is_managed(prot, flags & ~fixed);
        if (!fixed && managed) {
            void *p = pl_mmap_managed(addr, len, 0, false);
            if (p != MAP_FAILED || errno != ENOMEM || pl.user_max)
                return p; /* with a user space cap, full is ENOMEM, as in the enclave */
            /* The ELRANGE is full: the kernel serves it, outside the budget. */
            if (!atomic_exchange(&pl.warned_full, 1))
                fprintf(stderr, "moat: the managed range is full; further mappings are not "
                                "under the budget (raise MOAT_RANGE)\n");
        } else if (fixed) {
            struct pl_split sp;
            if (pl_split_range((uintptr_t)addr, len, &sp)) {
                if (!managed || sp.lo_e > sp.lo_s || sp.hi_e > sp.hi_s) {
                    /* A foreign mapping inside the ELRANGE would break the
                     * engine's reservation: refuse it. */
                    errno = (flags & MAP_FIXED) ? ENOMEM : EEXIST;
                    return MAP_FAILED;
                }
                /* MAP_FIXED replaces what is there; NOREPLACE fails with
                 * EEXIST, as moat's FIXED does. */
                return pl_mmap_managed(addr, len, MOAT_FIXED, flags & MAP_FIXED);
            }
        }
    }
    return m_preload_sys_mmap(addr, len, prot, flags, fd, off);
}

PL_EXPORT void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    return mmap(addr, len, prot, flags, fd, off);
}

PL_EXPORT int munmap(void *addr, size_t len)
{
    struct pl_split sp;
    if (!pl_active() || !pl_split_range((uintptr_t)addr, len, &sp))
        return m_preload_sys_munmap(addr, len);
    if (((uintptr_t)addr & (MOAT_PAGE_SIZE - 1)) || !len)
        return pl_fail(EINVAL);
    if (sp.lo_e > sp.lo_s && m_preload_sys_munmap((void *)sp.lo_s, sp.lo_e - sp.lo_s) != 0)
        return -1;
    if (sp.hi_e > sp.hi_s && m_preload_sys_munmap((void *)sp.hi_s, sp.hi_e - sp.hi_s) != 0)
        return -1;
    int err = pl_dealloc(sp.in_s, sp.in_e);
    return err ? pl_fail(err) : 0;
}

/* ------------------------------------------------------------------------
 * mremap
 * ---------------------------------------------------------------------- */

PL_EXPORT void *mremap(void *old, size_t oldlen, size_t newlen, int flags, ...)
{
    void *newaddr = NULL;
    if (flags & MREMAP_FIXED) {
        va_list ap;
        va_start(ap, flags);
        newaddr = va_arg(ap, void *);
        va_end(ap);
    }
    struct pl_split sp;
    if (!pl_active() || !pl_split_range((uintptr_t)old, oldlen ? oldlen : 1, &sp))
        return m_preload_sys_mremap(old, oldlen, newlen, flags, newaddr);
    uintptr_t o = (uintptr_t)old;
    size_t on = pl_round_up(oldlen), nn = pl_round_up(newlen);
    if ((o & (MOAT_PAGE_SIZE - 1)) || !oldlen || !newlen || sp.lo_e > sp.lo_s ||
        sp.hi_e > sp.hi_s || (flags & ~MREMAP_MAYMOVE)) {
        /* Duplicating (oldlen 0), MREMAP_FIXED and DONTUNMAP of managed
         * memory are not supported. */
        errno = EINVAL;
        return MAP_FAILED;
    }
    if (nn <= on) {
        int err = nn < on ? pl_dealloc(o + nn, o + on) : 0;
        if (err) {
            errno = err;
            return MAP_FAILED;
        }
        return old;
    }
    /* Grow in place when the addresses after it are free. */
    void *out = NULL;
    m_engine_internal++;
    int err = o + nn <= pl.end ? moat_alloc((void *)(o + on), nn - on,
                                            MOAT_COMMIT_ON_DEMAND | MOAT_FIXED, NULL, NULL, &out)
                               : ENOMEM;
    m_engine_internal--;
    if (!err)
        return old;
    if (!(flags & MREMAP_MAYMOVE)) {
        errno = ENOMEM;
        return MAP_FAILED;
    }
    void *p = pl_mmap_managed(NULL, nn, 0, false);
    if (p == MAP_FAILED)
        return p;
    /* The copy pages the old contents through the budget like any access
     * (uncommitted pages read as zeros and are committed by the read). */
    memcpy(p, old, on);
    err = pl_dealloc(o, o + on);
    if (err) {
        pl_dealloc((uintptr_t)p, (uintptr_t)p + nn);
        errno = err;
        return MAP_FAILED;
    }
    return p;
}

/* ------------------------------------------------------------------------
 * madvise / mprotect
 * ---------------------------------------------------------------------- */

/* Discard pages: an uncommitted page of a COMMIT_ON_DEMAND area reads as
 * zeros at its next touch, which is what MADV_DONTNEED promises. */
static int pl_discard(uintptr_t s, uintptr_t e)
{
    m_engine_internal++;
    int err = moat_uncommit((void *)s, e - s);
    if (err == EINVAL || err == EACCES) {
        /* The range spans holes or several kinds of areas: page by page,
         * skipping what is not managed on-demand memory. */
        err = 0;
        for (uintptr_t a = s; a < e; a += MOAT_PAGE_SIZE)
            (void)moat_uncommit((void *)a, MOAT_PAGE_SIZE);
    }
    m_engine_internal--;
    return err;
}

PL_EXPORT int madvise(void *addr, size_t len, int advice)
{
    struct pl_split sp;
    if (!pl_active() || !pl_split_range((uintptr_t)addr, len, &sp))
        return m_preload_sys_madvise(addr, len, advice);
    if ((uintptr_t)addr & (MOAT_PAGE_SIZE - 1))
        return pl_fail(EINVAL);
    if (sp.lo_e > sp.lo_s && m_preload_sys_madvise((void *)sp.lo_s, sp.lo_e - sp.lo_s, advice))
        return -1;
    if (sp.hi_e > sp.hi_s && m_preload_sys_madvise((void *)sp.hi_s, sp.hi_e - sp.hi_s, advice))
        return -1;
    switch (advice) {
    case MADV_DONTNEED:
    case MADV_FREE:
    case MADV_REMOVE:
    case 24: /* MADV_DONTNEED_LOCKED */ {
        int err = pl_discard(sp.in_s, sp.in_e);
        return err ? pl_fail(err) : 0;
    }
    default:
        /* Hints (WILLNEED, HUGEPAGE, DONTDUMP, ...) mean nothing to moat's
         * pages, and must not reach the kernel, which would act behind the
         * engine's back. */
        return 0;
    }
}

PL_EXPORT int mprotect(void *addr, size_t len, int prot)
{
    struct pl_split sp;
    if (!pl_active() || !pl_split_range((uintptr_t)addr, len, &sp))
        return m_preload_sys_mprotect(addr, len, prot);
    if (((uintptr_t)addr & (MOAT_PAGE_SIZE - 1)) || (prot & ~MOAT_PROT_MASK))
        return pl_fail(EINVAL);
    if (sp.lo_e > sp.lo_s && m_preload_sys_mprotect((void *)sp.lo_s, sp.lo_e - sp.lo_s, prot))
        return -1;
    if (sp.hi_e > sp.hi_s && m_preload_sys_mprotect((void *)sp.hi_s, sp.hi_e - sp.hi_s, prot))
        return -1;
    /* EMM changes the permissions of committed pages only: commit first
     * (commit costs no memory, a page is materialised at its first touch). */
    m_engine_internal++;
    (void)moat_commit((void *)sp.in_s, sp.in_e - sp.in_s);
    int err = moat_modify_permissions((void *)sp.in_s, sp.in_e - sp.in_s, prot);
    m_engine_internal--;
    if (err == EINVAL || err == EACCES)
        err = ENOMEM; /* what the kernel says for addresses that are not mapped */
    return err ? pl_fail(err) : 0;
}

/* ------------------------------------------------------------------------
 * The statistics block
 * ---------------------------------------------------------------------- */

static uint64_t pl_ns_since(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)(t.tv_sec - t0->tv_sec) * 1000000000ull + (uint64_t)t.tv_nsec -
           (uint64_t)t0->tv_nsec;
}

/* Copy `cur` into the shared block under the sequence lock, word by word
 * with atomic stores: the odd sequence number is ordered before the data
 * by the release stores of the data, the data before the even number by
 * its release store (no fences: ThreadSanitizer does not model them). */
static void pl_block_write(void)
{
    _Static_assert(sizeof(struct m_stats_block) % 8 == 0, "the block is copied in words");
    _Atomic uint64_t *dst = (_Atomic uint64_t *)(void *)pl.blk;
    const uint64_t *src = (const uint64_t *)(const void *)&pl.cur;
    const size_t seq_word = offsetof(struct m_stats_block, seq) / 8;
    uint64_t seq = atomic_load_explicit(&dst[seq_word], memory_order_relaxed);
    atomic_store_explicit(&dst[seq_word], seq + 1, memory_order_relaxed);
    for (size_t i = 0; i < sizeof(struct m_stats_block) / 8; i++)
        if (i != seq_word)
            atomic_store_explicit(&dst[i], src[i], memory_order_release);
    atomic_store_explicit(&dst[seq_word], seq + 2, memory_order_release);
}

/* ---- store nodes (stats_block.h v5; owned by the store's maintainers) ---- */

/* The redis store's per-node counters into b->store_node[] (nothing for
 * the file store).  Called with the engine running; takes the store's slot
 * lock briefly to count each node's pages. */
static void pl_publish_store_nodes(struct m_stats_block *b)
{
    struct m_store_cluster_stats cs;
    struct m_store_cluster_node_stats nd[M_STATS_BLOCK_NODES];
    size_t n = 0;
    if (!atomic_load(&m_engine.running) || !m_engine.store ||
        m_store_cluster_stats(m_engine.store, &cs, nd, M_STATS_BLOCK_NODES, &n) != 0)
        n = 0;
    b->store_nnodes = n;
    for (size_t i = 0; i < n; i++) {
        struct m_stats_node *o = &b->store_node[i];
        *o = (struct m_stats_node){.primary = nd[i].primary,
                                   .pages = nd[i].pages,
                                   .bytes = nd[i].bytes,
                                   .reads = nd[i].reads,
                                   .writes = nd[i].writes,
                                   .bytes_read = nd[i].bytes_read,
                                   .bytes_written = nd[i].bytes_written,
                                   .round_trips = nd[i].round_trips,
                                   .retries = nd[i].retries,
                                   .redirections = nd[i].moved + nd[i].asks,
                                   .conn_failures = nd[i].conn_failures,
                                   .wait_failures = nd[i].wait_failures,
                                   .failovers = nd[i].failovers};
        snprintf(o->addr, sizeof o->addr, "%.47s", nd[i].addr);
    }
}

/* ---- end of store nodes ---- */

static void pl_publish(uint32_t state)
{
    if (!pl.blk)
        return;
    struct moat_stats st;
    struct moat_alloc_stats as;
    uint64_t live = 0, peak = 0;
    m_engine_internal++;
    int err = state == M_STATS_FAILED ? ENODEV : m_engine_stats(&st, state == M_STATS_RUNNING);
    int aerr = err ? err : moat_heap_stats_get(moat_heap_default(), &as);
    m_preload_tcs_stats(&live, &peak);
    m_engine_internal--;
    pthread_mutex_lock(&pl.blk_lock);
    if (pl.cur.state == M_STATS_EXITED && state != M_STATS_EXITED) {
        /* The final numbers are out: the publisher thread, which may have
         * looked at pl.state just before exit, must not start another
         * update that exit_group could cut in half (an odd sequence number
         * forever, and `moat run` without statistics). */
        pthread_mutex_unlock(&pl.blk_lock);
        return;
    }
    pl.cur.state = state;
    pl.cur.elapsed_ns = pl_ns_since(&pl.start);
    if (!err)
        pl.cur.stats = st;
    pl.cur.threads_live = live;
    pl.cur.threads_peak = peak;
    if (!aerr) {
        struct m_stats_block *b = &pl.cur;
        b->alloc_requested_bytes = as.requested_bytes;
        b->alloc_reserved_bytes = as.reserved_bytes;
        b->alloc_committed_bytes = as.committed_bytes;
        if (as.requested_bytes > b->alloc_peak_requested_bytes)
            b->alloc_peak_requested_bytes = as.requested_bytes;
        if (as.peak_reserved_bytes > b->alloc_peak_reserved_bytes)
            b->alloc_peak_reserved_bytes = as.peak_reserved_bytes;
    }
    pl.cur.alloc_foreign_frees = m_preload_foreign_frees();
    pl.cur.user_init_pages = pl.user_init;
    if (!err) {
        /* Touched pages: committed-at-start pages count as committed from
         * the start, so the committed peak says nothing of the program's
         * use.  The resident peak is exact; evicted pages are sampled. */
        uint64_t used = st.resident_pages + st.evicted_pages;
        if (st.peak_resident_pages > used)
            used = st.peak_resident_pages;
        if (used > pl.cur.user_peak_used_pages)
            pl.cur.user_peak_used_pages = used;
    }
    if (state != M_STATS_FAILED) {
        m_engine_internal++;
        pl_publish_store_nodes(&pl.cur); /* store nodes (stats_block.h v5) */
        m_engine_internal--;
    }
    pl.cur.updates++;
    pl_block_write();
    pthread_mutex_unlock(&pl.blk_lock);
}

static void *pl_publisher(void *arg)
{
    (void)arg;
    m_engine_thread_enter();
    struct timespec d = {.tv_sec = pl.interval_ms / 1000,
                         .tv_nsec = (long)(pl.interval_ms % 1000) * 1000000L};
    for (;;) {
        nanosleep(&d, NULL);
        if (atomic_load(&pl.state) != PL_ON)
            return NULL;
        pl_publish(M_STATS_RUNNING);
    }
}

/* Open (moat run made it) or create /dev/shm/moat-<pid>.stats. */
static void pl_block_open(void)
{
    const char *owner = getenv("MOAT_STATS_OWNER");
    const char *iv = getenv("MOAT_STATS_INTERVAL");
    long ms = iv ? strtol(iv, NULL, 10) : 100;
    pl.interval_ms = ms >= 10 && ms <= 60000 ? (unsigned)ms : 100;
    bool made_by_run = owner && strtol(owner, NULL, 10) == (long)pl.pid;
    char name[64];
    snprintf(name, sizeof name, "/" M_STATS_BLOCK_NAME, (long)pl.pid);
    snprintf(pl.blk_path, sizeof pl.blk_path, M_STATS_BLOCK_DIR M_STATS_BLOCK_NAME, (long)pl.pid);
    int fd = shm_open(name, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        fprintf(stderr, "moat: cannot publish statistics in %s: %s\n", pl.blk_path,
                strerror(errno));
        return;
    }
    pl.blk_unlink = !made_by_run;
    void *p = MAP_FAILED;
    /* A block of ours starts zeroed, whatever a dead process of the same
     * pid left there. */
    if ((made_by_run || ftruncate(fd, 0) == 0) &&
        ftruncate(fd, (off_t)sizeof(struct m_stats_block)) == 0)
        p = m_preload_sys_mmap(NULL, sizeof(struct m_stats_block), PROT_READ | PROT_WRITE,
                               MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) {
        fprintf(stderr, "moat: cannot map %s: %s\n", pl.blk_path, strerror(errno));
        if (pl.blk_unlink)
            shm_unlink(name);
        return;
    }
    struct m_stats_block *b = &pl.cur;
    b->magic = M_STATS_BLOCK_MAGIC;
    b->version = M_STATS_BLOCK_VERSION;
    b->pid = pl.pid;
    b->interval_ms = pl.interval_ms;
    const char *run = getenv("MOAT_RUN_PID");
    b->run_pid = run ? strtol(run, NULL, 10) : 0;
    struct timespec rt;
    clock_gettime(CLOCK_REALTIME, &rt);
    b->start_realtime_ns = (uint64_t)rt.tv_sec * 1000000000ull + (uint64_t)rt.tv_nsec;
    pl.blk = p;
}

/* ------------------------------------------------------------------------
 * fork
 * ---------------------------------------------------------------------- */

/* The child of a fork has no engine (engine.c: it keeps its parent's
 * resident pages, and pages its parent had evicted stop it with a message
 * if it touches them): from here on everything goes to the kernel, and the
 * allocator's program heap grows with plain mmap (source_region.c).  A
 * child that calls exec runs under a moat of its own. */
static void pl_atfork_child(void)
{
    if (atomic_load(&pl.state) != PL_ON)
        return;
    atomic_store(&pl.state, PL_FORKED);
    pl.blk = NULL; /* the parent's: the child does not publish */
}

/* ------------------------------------------------------------------------
 * Start and exit
 * ---------------------------------------------------------------------- */

/* MOAT_USER_INIT (`moat run --config`): the enclave's initial user space,
 * committed before the program runs.  It is the window of the ELRANGE that
 * the program's first allocations use: it starts at the first data page of
 * the program heap's first arena (the first area, at the bottom of the
 * range; its header and page descriptors before that are the allocator's
 * bookkeeping), and goes on over the addresses the engine's first-fit
 * placement hands out next (anonymous mappings, further arenas).  Moved
 * down if it would run past the end: Init = Max (no EDMM) is the whole
 * range.  A program whose memory fits in Init thus takes no commit on
 * demand for it.  The pages are committed without frames (region.h,
 * m_region_commit_init): a 600MB Init costs 1.8 MB of page table, nothing in
 * the budget or the store until touched, and they stay committed when freed,
 * as an enclave's initial pages do. */
static int pl_commit_init(void)
{
    const char *v = getenv("MOAT_USER_INIT");
    if (!v || !*v)
        return 0;
    char *end;
    errno = 0;
    unsigned long long n = strtoull(v, &end, 10);
    if (errno || *end || *v == '-') {
        fprintf(stderr, "moat: MOAT_USER_INIT=%s is not a number of bytes\n", v);
        return EINVAL;
    }
    void *base;
    size_t size;
    moat_range(&base, &size);
    uintptr_t lo = (uintptr_t)base, hi = lo + size;
    size_t len = n >= size ? size : (size_t)pl_round_up((size_t)n);
    if (!len)
        return 0;
    uintptr_t at = m_preload_heap_first_data();
    if (at < lo || at >= hi)
        at = lo;
    if (len > hi - at)
        at = hi - len;
    size_t pages = 0;
    int err = m_region_commit_init((void *)at, len, &pages);
    if (err)
        fprintf(stderr, "moat: cannot commit the initial user space (%zu bytes): %s\n", len,
                strerror(err));
    /* Pages the heap had touched already were committed: they count too. */
    pl.user_init = len / MOAT_PAGE_SIZE;
    return err;
}

__attribute__((constructor)) static void pl_start(void)
{
    pl.pid = getpid();
    clock_gettime(CLOCK_MONOTONIC, &pl.start);
    m_engine_internal++;
    m_preload_malloc_hooks();
    pl_block_open();
    /* Lazy tracking unless MOAT_LAZY says otherwise: a program whose memory
     * fits the budget then runs with no fault through moat at all. */
    const char *lazy = getenv("MOAT_LAZY");
    struct moat_options opts = {.log_level = -1, .lazy = lazy && *lazy ? 0 : 1};
    int err = moat_init(&opts);
    if (!err) {
        err = m_preload_malloc_start();
        if (err)
            fprintf(stderr, "moat: cannot make the program's heap: %s\n", strerror(err));
    }
    if (!err)
        err = pl_commit_init();
    if (err) {
        fprintf(stderr, "moat: cannot start moat in process %ld: %s (see the lines above)\n",
                (long)pl.pid, strerror(err));
        if (pl.blk) {
            pl_publish(M_STATS_FAILED);
            if (pl.blk_unlink)
                unlink(pl.blk_path);
        }
        _exit(PL_EXIT_RUN);
    }
    void *base;
    size_t size;
    moat_range(&base, &size);
    pl.base = (uintptr_t)base;
    pl.end = pl.base + size;
    /* A store path names one file: only this process may use it; programs
     * it starts get anonymous stores of their own.  A redis:// or
     * redis+cluster:// store is shared safely (each instance has its own
     * key namespace), so programs started from here - including the
     * program itself when PROGRAM is a wrapper script that execs it, as
     * pyenv's shims do - page to it too. */
    const char *st = getenv("MOAT_STORE");
    if (st && !strstr(st, "://"))
        unsetenv("MOAT_STORE");
    const char *um = getenv("MOAT_USER_MAX");
    pl.user_max = um && *um;
    pthread_atfork(NULL, NULL, pl_atfork_child);
    pl_publish(M_STATS_RUNNING);
    if (pl.blk) {
        /* The publisher takes no signals: they belong to the program. */
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        pthread_t t;
        if (pthread_create(&t, NULL, pl_publisher, NULL) == 0)
            pthread_detach(t);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
    }
    m_engine_internal--;
    atomic_store_explicit(&pl.state, PL_ON, memory_order_release);
}

/* At exit the numbers are published one last time.  The engine keeps
 * running: other threads and later exit handlers may still use managed
 * memory, and the store is an unlinked file that vanishes with the process. */
__attribute__((destructor)) static void pl_stop(void)
{
    if (atomic_load(&pl.state) != PL_ON || getpid() != pl.pid)
        return;
    pl_publish(M_STATS_EXITED);
    if (pl.blk_unlink)
        unlink(pl.blk_path);
}

/* Programs that end with _exit (dash does) skip destructors: publish the
 * final numbers here too.  A vfork or fork child calling _exit is not the
 * process that started moat, and pl_stop leaves the block alone. */
PL_EXPORT void _exit(int status)
{
    pl_stop();
    for (;;)
        syscall(SYS_exit_group, status);
}

PL_EXPORT void _Exit(int status)
{
    _exit(status);
}
