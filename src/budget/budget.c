/*
 * budget.c - resident-page accounting, the reclaim list and eviction.
 *
 * How reclaim chooses
 * -------------------
 * A user-space pager cannot see the hardware accessed bits, so it cannot run
 * the kernel's active/inactive LRU.  What it does see are faults: the first
 * touch or page-in of a page, and the first write to a page that was loaded
 * clean (it is installed write-protected, so that write faults once more).
 * The reclaim list is therefore a FIFO of pages in the order they became
 * resident, scanned like CLOCK: a page whose referenced bit is set (by that
 * write fault) gets a second chance at the tail, any other page is evicted.
 * bench/lru_sim.c measures this against exact LRU and Belady's optimum on the
 * same traces; docs/lru.md has the numbers and why it is good enough.
 * With write sampling a dirty writable page that reaches the hand is first
 * sampled and given one more lap (M_PF_SAMPLED): its contents hashed, or it
 * is write-protected, so that a write meanwhile marks it hot; by default
 * only while it pays ("Write sampling" and "Samples by content" below;
 * docs/lru.md has the numbers).
 *
 * The list holds 32-bit page indices in a growable ring under one mutex,
 * held only to push or pop (never across a page lock wait, I/O or sealing).
 * A page is in the list at most once (M_PF_INLIST); entries for pages that
 * left RESIDENT some other way (uncommit, dealloc) are dropped when popped.
 *
 * How a page is evicted without losing a write (invariant 1)
 * ----------------------------------------------------------
 *   1. under the page lock: mark it EVICTING (this thread now owns it); then
 *      write-protect the writable ones (UFFDIO_WRITEPROTECT, one ioctl per
 *      run of consecutive pages);
 *   2. without locks: seal each page into a record (version + 1), after the
 *      write protection, and write the batch to the store (one submission);
 *   3. zap the pages (MADV_DONTNEED, one call for the batch), then under each page
 *      lock mark it EVICTED with the new version and slot, and wake any
 *      writer that faulted on the write protection meanwhile: it retries,
 *      takes a missing fault and waits for the page-in, so its write lands on
 *      the sealed contents.
 * A write that lands before the protection is in the sealed copy; one after
 * it waits.  If the store refuses the write, the page goes back to RESIDENT,
 * dirty, unprotected, and nothing is lost.  Clean pages (a valid sealed copy,
 * no write since) skip step 2.
 */
#include "budget/budget.h"

#include "common/engine.h"
#include "common/log.h"
#include "common/uffd_compat.h"
#include "common/zap.h"
#include "region/region.h"
#include "seal/seal.h"
#include "store/store.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------------
 * The reclaim list
 * ---------------------------------------------------------------------- */

static struct {
    pthread_mutex_t lock; /* guards ring, cap, head, count */
    uint32_t *ring;
    size_t cap, head, count;
} rlist = {.lock = PTHREAD_MUTEX_INITIALIZER};

static bool rlist_push(uint32_t index)
{
    pthread_mutex_lock(&rlist.lock);
    if (rlist.count == rlist.cap) {
        size_t ncap = rlist.cap ? rlist.cap * 2 : 4096;
        uint32_t *n = mmap(NULL, ncap * sizeof *n, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (n == MAP_FAILED) {
            pthread_mutex_unlock(&rlist.lock);
            return false;
        }
        for (size_t i = 0; i < rlist.count; i++)
            n[i] = rlist.ring[(rlist.head + i) % rlist.cap];
        if (rlist.ring)
            munmap(rlist.ring, rlist.cap * sizeof *rlist.ring);
        rlist.ring = n;
        rlist.cap = ncap;
        rlist.head = 0;
    }
    rlist.ring[(rlist.head + rlist.count) % rlist.cap] = index;
    rlist.count++;
    pthread_mutex_unlock(&rlist.lock);
    return true;
}

static size_t rlist_pop(uint32_t *out, size_t max)
{
    pthread_mutex_lock(&rlist.lock);
    size_t n = 0;
    while (n < max && rlist.count) {
        out[n++] = rlist.ring[rlist.head];
        rlist.head = (rlist.head + 1) % rlist.cap;
        rlist.count--;
    }
    pthread_mutex_unlock(&rlist.lock);
    return n;
}

static size_t rlist_length(void)
{
    pthread_mutex_lock(&rlist.lock);
    size_t n = rlist.count;
    pthread_mutex_unlock(&rlist.lock);
    return n;
}

/*
 * Refaults.  Reads of a resident page are invisible to moat, so a page that
 * is only read - xz's input, an index, a lookup table - looks cold however
 * hot it is, and goes round the list and out like any other.  What gives it
 * away is how soon it comes back: each eviction stamps the page with the
 * eviction clock (M_PF_STAMP, in units of budget/64 evictions), and a page-in
 * whose page was evicted less than REFAULT_HOT_UNITS units ago - among the
 * last budget/16 pages to go, or four reclaim batches for a small budget -
 * installs it referenced and hot, so it is kept for its next laps: the
 * kernel's refault distance in miniature.  Wider windows did worse on xz
 * (page-ins with budget/64 .. budget/2: 32.2k, 32.4k, 33.0k, 35.5k, 36.7k,
 * against 34.8k without; a second tier that came back referenced only up to
 * budget/4: 33.2k), the hot set too large to keep.  Longer protection did
 * better: a refaulted page's three hot laps are refilled REFAULT_REFILLS
 * times (M_PF_REFILL) before it can go, so it stays 12 laps rather than 3:
 * sort 3.89 s against 5.20 s (means of 4 interleaved pairs, page-ins 71.7k
 * against 79.4k), sqlite3 -5%, xz, python and the 8-thread program within
 * noise; one refill gave sort a third of that.
 * Measured page-ins that came back that soon: xz -9 62%, sort 52%, sqlite3
 * 16%, the 8-thread program 2%.  MOAT_REFAULT=0 turns it off.
 */
#define REFAULT_HOT_UNITS 4u                            /* budget/16 */
#define REFAULT_REFILLS   3u                            /* hot laps 3 + 3 x 3 */
#define STAMP_PERIOD      ((1u << M_PF_STAMP_BITS) - 1) /* stamps 1..PERIOD; 0: none */

static _Atomic uint64_t evict_clock;
static _Atomic uint64_t refaults_hot;

static uint64_t stamp_unit(void)
{
    return m_engine.budget_pages / 64 ? m_engine.budget_pages / 64 : 1;
}

static uint32_t stamp_now(void)
{
    return 1 + (uint32_t)(atomic_load_explicit(&evict_clock, memory_order_relaxed) / stamp_unit() %
                          STAMP_PERIOD);
}

/* refault_units - `units` of the eviction clock, but at least the units of
 * `batches` reclaim batches (one reclaim evicts a few batches at once, and
 * a small budget's fractions are less than that). */
static uint64_t refault_units(uint64_t units, uint64_t batches)
{
    uint64_t unit = stamp_unit();
    if (units * unit < batches * m_engine.batch_pages)
        units = (batches * m_engine.batch_pages + unit - 1) / unit;
    return units;
}

uint32_t m_reclaim_refault(uint32_t flags)
{
    uint32_t stamp = (flags & M_PF_STAMP_MASK) >> M_PF_STAMP_SHIFT;
    if (!stamp || !m_engine.budget_pages || !m_engine.refault_hot)
        return 0;
    uint32_t d = (stamp_now() + STAMP_PERIOD - stamp) % STAMP_PERIOD;
    if (d >= refault_units(REFAULT_HOT_UNITS, 4))
        return 0;
    m_counter_add(&refaults_hot, 1);
    return M_PF_REF | M_PF_HOT_MASK | (REFAULT_REFILLS << M_PF_REFILL_SHIFT);
}

uint64_t m_reclaim_refaults_hot(void)
{
    return atomic_load_explicit(&refaults_hot, memory_order_relaxed);
}

uint32_t m_reclaim_track(size_t index, uint32_t flags)
{
    if (flags & M_PF_INLIST)
        return flags;
    if (!rlist_push((uint32_t)index)) {
        m_error("reclaim", "cannot grow the reclaim list; page %#lx stays unreclaimable",
                (unsigned long)m_engine_addr(index));
        return flags;
    }
    return flags | M_PF_INLIST;
}

/* ------------------------------------------------------------------------
 * Per-thread I/O contexts
 * ---------------------------------------------------------------------- */

static pthread_mutex_t ioctx_lock = PTHREAD_MUTEX_INITIALIZER; /* guards ioctx_all */
struct ioctx_node {
    struct m_io_ctx ctx;
    struct ioctx_node *next;
    uint64_t generation;
};
static struct ioctx_node *ioctx_all;
static _Atomic uint64_t ioctx_generation = 1;
#define IO_STRIDE M_IO_STRIDE
static __thread struct ioctx_node *ioctx_mine;

static void ioctx_free(struct ioctx_node *n)
{
    m_store_queue_free(n->ctx.queue);
    if (n->ctx.plain)
        munmap(n->ctx.plain, (n->ctx.nrecords + 1) * IO_STRIDE + M_PAGE_SIZE);
    free(n);
}

struct m_io_ctx *m_io_ctx_get(void)
{
    uint64_t gen = atomic_load(&ioctx_generation);
    if (ioctx_mine && ioctx_mine->generation == gen)
        return &ioctx_mine->ctx;
    ioctx_mine = NULL;
    struct ioctx_node *n = calloc(1, sizeof *n);
    if (!n)
        return NULL;
    n->ctx.nrecords = m_engine.batch_pages;
    size_t nbytes = (n->ctx.nrecords + 1) * IO_STRIDE + M_PAGE_SIZE;
    void *mem = mmap(NULL, nbytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
        free(n);
        return NULL;
    }
    madvise(mem, nbytes, MADV_DONTDUMP); /* plaintext passes through here */
    n->ctx.plain = mem;
    n->ctx.records = (uint8_t *)mem + M_PAGE_SIZE;
    int err = m_store_queue_new(m_engine.store, (unsigned)n->ctx.nrecords + 1, &n->ctx.queue);
    if (err) {
        m_error("store", "cannot create an I/O queue: %s", strerror(err));
        munmap(mem, nbytes);
        free(n);
        return NULL;
    }
    n->ctx.records = (uint8_t *)mem + M_PAGE_SIZE;
    n->generation = gen;
    pthread_mutex_lock(&ioctx_lock);
    n->next = ioctx_all;
    ioctx_all = n;
    pthread_mutex_unlock(&ioctx_lock);
    ioctx_mine = n;
    return &n->ctx;
}

void m_io_ctx_release_all(void)
{
    atomic_fetch_add(&ioctx_generation, 1);
    pthread_mutex_lock(&ioctx_lock);
    struct ioctx_node *n = ioctx_all;
    ioctx_all = NULL;
    pthread_mutex_unlock(&ioctx_lock);
    while (n) {
        struct ioctx_node *next = n->next;
        ioctx_free(n);
        n = next;
    }
    ioctx_mine = NULL;
}

/* ------------------------------------------------------------------------
 * Userfaultfd helpers used by eviction
 * ---------------------------------------------------------------------- */

static int uffd_wp(uintptr_t addr, size_t nbytes, bool protect)
{
    struct uffdio_writeprotect wp = {
        .range = {.start = addr, .len = nbytes},
        .mode = protect ? UFFDIO_WRITEPROTECT_MODE_WP : 0,
    };
    m_counter_add(&m_engine.c.wp_calls, 1);
    if (ioctl(m_engine.uffd, UFFDIO_WRITEPROTECT, &wp) != 0)
        return errno;
    return 0;
}

static void uffd_wake(uintptr_t addr, size_t nbytes)
{
    struct uffdio_range r = {.start = addr, .len = nbytes};
    ioctl(m_engine.uffd, UFFDIO_WAKE, &r);
}

/* ------------------------------------------------------------------------
 * Eviction
 * ---------------------------------------------------------------------- */

static _Atomic unsigned evict_inflight; /* pages in EVICTING */

/* One page chosen for eviction, from selection to its end. */
struct victim {
    uint64_t region_id; /* learned before the page was marked EVICTING */
    uint32_t index;
    uint32_t version; /* the new version, for dirty pages */
    uint32_t slot;    /* page-table slot (store slot + 1) */
    bool dirty;       /* must be sealed and written */
    bool need_wp;     /* writable: write-protect before sealing */
    bool written;     /* step 2 succeeded (or the page was clean) */
    struct m_store_io io;
};

/* for_runs - call fn on each run of consecutive pages among v[0..n) (sorted
 * by index) that satisfy pred.  Range operations (write-protect, zap) cost a
 * TLB shootdown each; done per run instead of per page they cost one. */
static void for_runs(struct victim *v, size_t n, bool (*pred)(const struct victim *),
                     void (*fn)(uintptr_t addr, size_t nbytes))
{
    size_t i = 0;
    while (i < n) {
        if (!pred(&v[i])) {
            i++;
            continue;
        }
        size_t j = i + 1;
        while (j < n && pred(&v[j]) && v[j].index == v[j - 1].index + 1)
            j++;
        fn(m_engine_addr(v[i].index), (j - i) * M_PAGE_SIZE);
        i = j;
    }
}

static bool victim_needs_wp(const struct victim *v)
{
    return v->need_wp;
}
static void run_wp(uintptr_t addr, size_t nbytes)
{
    int err = uffd_wp(addr, nbytes, true);
    if (err)
        m_error("reclaim", "cannot write-protect [%#lx, +%zu): %s", (unsigned long)addr, nbytes,
                strerror(err));
}

/* zap_written - step 3's MADV_DONTNEED on the runs of written pages, all in
 * one call where the kernel allows (common/zap.h): a flush per run cost the
 * 8-thread program of bench/programs.sh a fifth of its CPU time. */
static void zap_written(const struct victim *v, size_t n)
{
    struct iovec iov[n ? n : 1];
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (!v[i].written)
            continue;
        uintptr_t addr = m_engine_addr(v[i].index);
        if (k && (uintptr_t)iov[k - 1].iov_base + iov[k - 1].iov_len == addr) {
            iov[k - 1].iov_len += M_PAGE_SIZE;
        } else {
            iov[k].iov_base = (void *)addr;
            iov[k].iov_len = M_PAGE_SIZE;
            k++;
        }
    }
    m_counter_add(&m_engine.c.zap_calls, m_zap_ranges(iov, k));
}

/*
 * Write sampling (MOAT_RECLAIM_SAMPLE: "auto" by default, 0 off, 1 always).
 * A dirty writable page at the hand is write-protected and given one more
 * lap; a write meanwhile (fault_wp: m_budget_sample_rescued) sets REF and
 * marks it hot, and a hot page then skips sampling for its next three laps
 * (M_PF_HOT_MASK), so a page that stays hot pays one write-protect fault
 * every five laps rather than every other one.  Whether sampling pays
 * depends on the program: the share of sampled pages written during their
 * lap was 70-80% for xz -9, 36-55% for sort, 30% for sqlite3, 8-10% for an
 * 8-thread program that fills blocks then reads them and 5% for python
 * (docs/lru.md).  "auto" samples always a fixed 1/64 of the pages (by
 * index: probes) and all of them while the probes' share written over the
 * last SAMPLE_WINDOW probes is at least SAMPLE_ON_PCT.  Probes are few
 * because a sample costs reclaim a UFFDIO_WRITEPROTECT of its own (with
 * 1/8 of the pages as probes python lost 15% to them, its reclaim time
 * going from 2.7 to 3.8 s).
 */
/*
 * Samples by content.  Write-protecting a sample costs a TLB shootdown in
 * reclaim, and a write to it a fault round trip and another shootdown to
 * lift the protection: xz -9 took 68k such faults for 31k page-ins.  So a
 * sample is a hash of the page's contents instead, taken at the hand and
 * compared the next time the hand comes round: changed means written
 * meanwhile (hot), unchanged means not (evicted, write-protected then as any
 * dirty victim).  A write of the same bytes goes unseen, and some programs
 * do that a lot (sort: of the probes written while sampled, 8 in 47 had
 * changed), so the probes stay write-protect samples that also hash their
 * page, and the other pages are sampled by content only while at least
 * SAMPLE_CHANGED_PCT of the probes' writes changed them (by write
 * protection until the probes say so).  The hashes live in a
 * direct-mapped table of 2x the budget's pages, one 64-bit word an entry
 * (page index + 1 and 32 bits of hash), read and written with relaxed
 * atomics by whichever thread reclaims; a page whose entry was taken by
 * another counts as unwritten.  MOAT_SAMPLE_BY=hash samples every page by
 * content, wp by write protection (docs/lru.md has them measured).
 */
static _Atomic uint64_t *sample_tab; /* NULL: samples by write protection */
static size_t sample_tab_mask;

static size_t sample_slot(size_t index)
{
    return ((uint32_t)index * 0x9e3779b1u) & sample_tab_mask;
}

/* The program writes its pages while this reads them: the hash is a
 * heuristic, a torn read only a hash that differs, so ThreadSanitizer is told
 * not to look. */
__attribute__((no_sanitize("thread"))) static uint32_t sample_hash(const void *page)
{
    const uint64_t *w = page;
    uint64_t a = 0x9e3779b97f4a7c15u, b = 0xc2b2ae3d27d4eb4fu, c = 0x165667b19e3779f9u,
             d = 0x27d4eb2f165667c5u;
    for (size_t i = 0; i < M_PAGE_SIZE / 8; i += 4) {
        a = (a ^ w[i]) * 0xff51afd7ed558ccdu;
        b = (b ^ w[i + 1]) * 0xc4ceb9fe1a85ec53u;
        c = (c ^ w[i + 2]) * 0xff51afd7ed558ccdu;
        d = (d ^ w[i + 3]) * 0xc4ceb9fe1a85ec53u;
        a ^= a >> 29;
        b ^= b >> 31;
        c ^= c >> 29;
        d ^= d >> 31;
    }
    uint64_t h = a ^ (b << 1 | b >> 63) ^ (c << 2 | c >> 62) ^ (d << 3 | d >> 61);
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdu;
    h ^= h >> 33;
    return (uint32_t)h;
}

/* page_hash - the hash of resident page `index`, read under its page lock
 * (resident means mapped: the read cannot fault). */
static uint32_t page_hash(size_t index)
{
    return sample_hash((const void *)m_engine_addr(index));
}

static void sample_note(size_t index, uint32_t h)
{
    atomic_store_explicit(&sample_tab[sample_slot(index)], (uint64_t)(index + 1) << 32 | h,
                          memory_order_relaxed);
}

/* sample_changed - 1 if the page's hash differs from sample_note's, 0 if
 * not, -1 if its entry was taken by another page. */
static int sample_changed(size_t index, uint32_t h)
{
    uint64_t e = atomic_load_explicit(&sample_tab[sample_slot(index)], memory_order_relaxed);
    if (e >> 32 != index + 1)
        return -1;
    return (uint32_t)e != h;
}

#define SAMPLE_WINDOW 128u
#define SAMPLE_ON_PCT 25u
static unsigned sample_mode = M_SAMPLE_AUTO;  /* m_engine.reclaim_sample at start */
static unsigned sample_by = M_SAMPLE_BY_AUTO; /* m_engine.sample_by at start */
#define SAMPLE_FEW         8u                 /* fewer rescues looked at say nothing about how */
#define SAMPLE_CHANGED_PCT 60u                /* rescued probes whose writes changed them */
static _Atomic bool sample_all;               /* auto: the probes say sampling pays */
static _Atomic bool sample_content;           /* the probes say a hash sees the writes */
static _Atomic uint64_t probes_taken, probes_rescued;
/* rescued probes looked at one lap later: contents changed, or the same */
static _Atomic uint64_t probes_changed, probes_same;
static pthread_mutex_t sample_lock = PTHREAD_MUTEX_INITIALIZER;
/* the counters when the window opened, and the decaying sums of changed and
 * same rescues (each window counts twice the one before; sample_lock) */
static uint64_t window_rescued, window_changed, window_same, sum_changed, sum_same;

static bool sample_probe(size_t index)
{
    return ((uint32_t)index * 0x9e3779b1u) >> 26 == 0; /* one page in 64 */
}

/* sample_window - the probes' verdict every SAMPLE_WINDOW probes: sample
 * every page (by write protection) if enough of them were written, and
 * sample the others by content if most writes to them changed it. */
static void sample_window(void)
{
    pthread_mutex_lock(&sample_lock);
    uint64_t rescued = atomic_load(&probes_rescued), changed = atomic_load(&probes_changed),
             same = atomic_load(&probes_same);
    uint64_t in_window = rescued - window_rescued;
    sum_changed = sum_changed / 2 + (changed - window_changed);
    sum_same = sum_same / 2 + (same - window_same);
    window_rescued = rescued;
    window_changed = changed;
    window_same = same;
    atomic_store(&sample_all, in_window * 100 >= (uint64_t)SAMPLE_WINDOW * SAMPLE_ON_PCT);
    /* the looks at a rescue come a lap after it: counted by themselves,
     * not against the window's rescues */
    uint64_t looked = sum_changed + sum_same;
    if (sample_by == M_SAMPLE_BY_AUTO && looked >= SAMPLE_FEW)
        atomic_store(&sample_content, sum_changed * 100 >= looked * SAMPLE_CHANGED_PCT);
    pthread_mutex_unlock(&sample_lock);
}

void m_budget_sample_rescued(size_t index)
{
    if (sample_probe(index))
        atomic_fetch_add_explicit(&probes_rescued, 1, memory_order_relaxed);
}

enum { SAMPLE_NONE, SAMPLE_WP, SAMPLE_HASH };

/* sample_how - should a dirty writable page at the hand be sampled, and
 * how?  Probes always by write protection (they see every write). */
static int sample_how(size_t index)
{
    if (sample_mode == M_SAMPLE_OFF)
        return SAMPLE_NONE;
    if (sample_probe(index)) {
        uint64_t n = atomic_fetch_add_explicit(&probes_taken, 1, memory_order_relaxed) + 1;
        if (n % SAMPLE_WINDOW == 0)
            sample_window();
        return SAMPLE_WP;
    }
    if (sample_mode != M_SAMPLE_ON && !atomic_load_explicit(&sample_all, memory_order_relaxed))
        return SAMPLE_NONE;
    if (sample_tab && atomic_load_explicit(&sample_content, memory_order_relaxed))
        return SAMPLE_HASH;
    return SAMPLE_WP;
}

/* evict_select - step 1: pick up to `want` victims from the list head and
 * mark them EVICTING.  Returns how many, sorted by page index. */
static size_t evict_select(size_t want, struct victim *v)
{
    uint32_t cand[64];
    size_t nv = 0;
    /* two laps at most: the first may only sample.  The program cannot run
     * between a call's two laps (a synchronous reclaim holds up its fault),
     * so the second does not spend what a page earned by being used - its
     * referenced bit, its hot laps - and evicts only the others. */
    size_t lap = rlist_length();
    size_t scan = 2 * lap + 64, seen = 0;
    /* Held while victims are chosen and never after: once this thread owns
     * EVICTING pages it must not wait for the table lock (dealloc holds it
     * while it waits for those pages). */
    m_region_read_lock();
    while (nv < want && scan) {
        size_t take = want - nv < 64 ? want - nv : 64;
        size_t n = rlist_pop(cand, take);
        if (!n)
            break;
        scan = scan > n ? scan - n : 0;
        for (size_t i = 0; i < n; i++) {
            size_t index = cand[i];
            bool wrapped = ++seen > lap;
            struct m_page *p = m_engine_page(index);
            uint32_t f;
            /* never wait for a page lock here: the thread reclaiming may be
             * the one holding it (a fault charging for pages it locked) */
            if (!m_page_trylock(p, &f)) {
                rlist_push((uint32_t)index);
                continue;
            }
            unsigned st = m_page_state(f);
            if (st != M_PS_RESIDENT || (f & M_PF_PINNED)) {
                m_page_unlock(p, f & ~M_PF_INLIST);
                continue;
            }
            unsigned prot = m_page_prot(f);
            if ((f & M_PF_REF) || !(prot & MOAT_PROT_READ)) {
                /* second chance; unreadable pages wait for their
                 * permissions to come back */
                if (!wrapped && (f & M_PF_SAMPLED) && (f & M_PF_REF) && sample_tab &&
                    sample_probe(index)) {
                    /* a probe written while sampled by write protection: did
                     * the write change it? */
                    int ch = sample_changed(index, page_hash(index));
                    if (ch >= 0)
                        atomic_fetch_add_explicit(ch ? &probes_changed : &probes_same, 1,
                                                  memory_order_relaxed);
                }
                if (!wrapped)
                    f &= ~(M_PF_REF | M_PF_SAMPLED);
                if (!rlist_push((uint32_t)index))
                    f &= ~M_PF_INLIST;
                m_page_unlock(p, f);
                continue;
            }
            bool dirty = (f & M_PF_DIRTY) || p->slot == M_SLOT_NONE;
            if (f & M_PF_HOT_MASK) {
                /* written while sampled not long ago (do not sample it
                 * again yet), or paged in soon after its eviction: keep it
                 * (a refaulted page's laps are refilled a few times) */
                if (!wrapped) {
                    if ((f & M_PF_HOT_MASK) == 1u << M_PF_HOT_SHIFT && (f & M_PF_REFILL_MASK))
                        f = (f - (1u << M_PF_REFILL_SHIFT)) | M_PF_HOT_MASK;
                    else
                        f -= 1u << M_PF_HOT_SHIFT;
                }
                if (!rlist_push((uint32_t)index))
                    f &= ~M_PF_INLIST;
                m_page_unlock(p, f);
                continue;
            }
            if (dirty && (prot & MOAT_PROT_WRITE) && !(f & M_PF_WP)) {
                int how = SAMPLE_NONE;
                if (f & M_PF_SAMPLED) {
                    /* sampled by content a lap ago (a page sampled by
                     * write protection is still protected, or was written
                     * and took the second chance above): kept if the
                     * contents changed, evicted if not */
                    f &= ~M_PF_SAMPLED;
                    if (sample_tab && sample_changed(index, page_hash(index)) > 0) {
                        f |= M_PF_HOT_MASK | M_PF_REF;
                        how = SAMPLE_HASH;
                    }
                } else {
                    how = sample_how(index);
                    if (how == SAMPLE_HASH) {
                        sample_note(index, page_hash(index));
                        f |= M_PF_SAMPLED;
                    } else if (how == SAMPLE_WP) {
                        /* A writable dirty page never faults, so nothing
                         * says whether it is in use: protect it and give
                         * it one more lap.  A write before it comes round
                         * again sets REF (in fault_wp) and keeps it; the
                         * protection also saves the eviction its own.  A
                         * probe's hash says later whether the write
                         * changed it. */
                        if (sample_tab && sample_probe(index))
                            sample_note(index, page_hash(index));
                        f |= M_PF_SAMPLED;
                        if (uffd_wp(m_engine_addr(index), M_PAGE_SIZE, true) == 0)
                            f |= M_PF_WP;
                    }
                }
                if (how != SAMPLE_NONE) {
                    if (!rlist_push((uint32_t)index))
                        f &= ~M_PF_INLIST;
                    m_page_unlock(p, f);
                    continue;
                }
            }
            struct m_region_info r;
            v[nv] = (struct victim){
                .region_id = m_region_find_locked(m_engine_addr(index), &r) == 0 ? r.id : 0,
                .index = (uint32_t)index,
                .slot = p->slot,
                .version = p->version + 1,
                .dirty = dirty,
                .need_wp = dirty && (prot & MOAT_PROT_WRITE) && !(f & M_PF_WP),
                .written = !dirty,
            };
            if (v[nv].need_wp)
                f |= M_PF_WP;
            f = m_page_set_state(f & ~M_PF_INLIST, M_PS_EVICTING);
            atomic_fetch_add(&evict_inflight, 1);
            m_page_unlock(p, f);
            nv++;
        }
    }
    m_region_read_unlock();
    /* insertion sort: batches are small and nearly sorted already */
    for (size_t i = 1; i < nv; i++) {
        struct victim x = v[i];
        size_t j = i;
        while (j > 0 && v[j - 1].index > x.index) {
            v[j] = v[j - 1];
            j--;
        }
        v[j] = x;
    }
    return nv;
}

/* evict_finish - step 3 for one page: it was zapped (written) or its write
 * failed (it goes back to RESIDENT, dirty, unprotected). */
static bool evict_finish(struct victim *v, int err)
{
    struct m_page *p = m_engine_page(v->index);
    uintptr_t addr = m_engine_addr(v->index);
    uint32_t f = m_page_lock(p);
    bool waiter = f & M_PF_WAITER;
    f &= ~M_PF_WAITER;
    if (v->written) {
        if (v->dirty) {
            if (p->slot != M_SLOT_NONE && p->slot != v->slot)
                m_store_slot_free(m_engine.store, m_slot_store(p->slot));
            p->slot = v->slot;
            p->version = v->version;
        }
        f = m_page_set_state(
            f & ~(M_PF_DIRTY | M_PF_WP | M_PF_REF | M_PF_SAMPLED | M_PF_HOT_MASK | M_PF_STAMP_MASK),
            M_PS_EVICTED);
        f |= stamp_now() << M_PF_STAMP_SHIFT;
        m_counter_add(&evict_clock, 1);
        m_page_unlock(p, f);
        m_budget_uncharge(1);
        m_counter_add(&m_engine.c.evicted, 1);
        if (v->dirty) {
            m_counter_add(&m_engine.c.evictions_written, 1);
            m_counter_add(&m_engine.c.store_bytes_written, M_STORE_RECORD);
        } else {
            m_counter_add(&m_engine.c.evictions_clean, 1);
        }
        if (waiter)
            uffd_wake(addr, M_PAGE_SIZE);
    } else {
        if (v->slot != p->slot && v->slot != M_SLOT_NONE)
            m_store_slot_free(m_engine.store, m_slot_store(v->slot));
        if (f & M_PF_WP) {
            uffd_wp(addr, M_PAGE_SIZE, false); /* also wakes blocked writers */
            f &= ~M_PF_WP;
        }
        f = m_page_set_state(f | M_PF_DIRTY, M_PS_RESIDENT);
        f = m_reclaim_track(v->index, f);
        m_page_unlock(p, f);
        (void)err;
        m_counter_add(&m_engine.c.store_errors, 1);
    }
    atomic_fetch_sub(&evict_inflight, 1);
    return v->written;
}

/* evict_report - log a failed eviction without flooding the log: a store
 * that is full fails every write, and reclaim retries constantly.  The 1st,
 * 2nd, 4th, 8th... failure in a row is logged, with the count. */
static _Atomic uint64_t evict_failures_in_row;

static void evict_report(size_t index, const char *what, int err)
{
    uint64_t n = atomic_fetch_add(&evict_failures_in_row, 1) + 1;
    if (n & (n - 1))
        return;
    m_error("reclaim",
            "%s page %#lx failed: %s; it stays resident (%llu failed evictions in a row)", what,
            (unsigned long)m_engine_addr(index), strerror(err), (unsigned long long)n);
}

size_t m_reclaim_run(size_t want)
{
    if (!m_engine.store)
        return 0;
    struct m_io_ctx *io = m_io_ctx_get();
    if (!io)
        return 0;
    if (want > io->nrecords)
        want = io->nrecords;
    if (!want)
        want = 1;
    uint64_t t0 = m_now_ns();
    struct victim v[want];
    struct m_store_io *iop[want];
    size_t nv = evict_select(want, v);
    /* step 1b: write-protect dirty writable pages, one ioctl per run */
    for_runs(v, nv, victim_needs_wp, run_wp);
    /* step 2: seal and write the dirty ones in one submission */
    size_t nio = 0;
    for (size_t i = 0; i < nv; i++) {
        if (!v[i].dirty)
            continue;
        int err = 0;
        if (v[i].slot == M_SLOT_NONE) {
            uint64_t s;
            err = m_store_slot_alloc(m_engine.store, &s);
            if (!err)
                v[i].slot = m_slot_page(s);
        }
        uint8_t *rec = io->records + nio * M_IO_STRIDE;
        if (!err) {
            uintptr_t addr = m_engine_addr(v[i].index);
            struct m_seal_id id = {
                .region_id = v[i].region_id, .page_index = v[i].index, .version = v[i].version};
            err = m_seal_page((void *)addr, &id, rec);
        }
        if (err) {
            evict_report(v[i].index, "sealing or placing", err);
            continue;
        }
        v[i].io = (struct m_store_io){
            .op = M_STORE_WRITE, .slot = m_slot_store(v[i].slot), .buf = rec, .user = &v[i]};
        iop[nio++] = &v[i].io;
    }
    if (nio) {
        int err = m_store_rw(io->queue, iop, nio);
        for (size_t k = 0; k < nio; k++) {
            struct victim *x = iop[k]->user;
            int r = err ? err : iop[k]->result;
            if (r) {
                evict_report(x->index, "the store write of", r);
            } else {
                x->written = true;
                atomic_store(&evict_failures_in_row, 0);
            }
        }
    }
    /* step 3: drop the frames, then publish */
    zap_written(v, nv);
    size_t freed = 0;
    for (size_t i = 0; i < nv; i++)
        freed += evict_finish(&v[i], 0);
    m_counter_add(&m_engine.c.reclaim_ns, m_now_ns() - t0);
    return freed;
}

void m_reclaim_wait_idle(void)
{
    while (atomic_load(&evict_inflight))
        usleep(100);
}

/* ------------------------------------------------------------------------
 * The budget
 * ---------------------------------------------------------------------- */

static struct {
    pthread_mutex_t lock; /* guards kicked (with cond); stop is set under it */
    pthread_cond_t cond;
    bool kicked, started;
    _Atomic bool stop; /* also read by the reclaim loop outside the lock */
    pthread_t thread;
} reclaimer = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

/* Pages the budget is extended by for the instant of a fork (engine.c);
 * read again before every batch, so a reclaimer already running stops. */
static _Atomic int64_t budget_boost;

static uint64_t reclaim_boost(void)
{
    return (uint64_t)atomic_load(&budget_boost);
}

static void reclaimer_kick(void)
{
    pthread_mutex_lock(&reclaimer.lock);
    reclaimer.kicked = true;
    pthread_cond_signal(&reclaimer.cond);
    pthread_mutex_unlock(&reclaimer.lock);
}

static void *reclaimer_main(void *arg)
{
    (void)arg;
    pthread_setname_np(pthread_self(), "moat-reclaim");
    m_engine_thread_enter();
    pthread_mutex_lock(&reclaimer.lock);
    while (!reclaimer.stop) {
        if (!reclaimer.kicked) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 50 * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&reclaimer.cond, &reclaimer.lock, &ts);
        }
        reclaimer.kicked = false;
        pthread_mutex_unlock(&reclaimer.lock);
        if (atomic_load(&m_engine.c.resident) > m_engine.high_pages + reclaim_boost()) {
            uint64_t low;
            while (!reclaimer.stop && atomic_load(&m_engine.c.resident) >
                                          (low = m_engine.low_pages + reclaim_boost())) {
                size_t over = atomic_load(&m_engine.c.resident) - low;
                if (m_reclaim_run(over < m_engine.batch_pages ? over : m_engine.batch_pages) == 0)
                    break;
            }
        }
        pthread_mutex_lock(&reclaimer.lock);
    }
    pthread_mutex_unlock(&reclaimer.lock);
    return NULL;
}

int m_budget_init(void)
{
    atomic_store(&evict_clock, 0);
    atomic_store(&refaults_hot, 0);
    if (!m_engine.budget_pages)
        return 0;
    reclaimer.stop = false;
    reclaimer.kicked = false;
    sample_mode = m_engine.reclaim_sample;
    /* Made here, where no thread reclaims, and kept until the next init: a
     * fault handler may still be reclaiming while the engine shuts down
     * (m_budget_shutdown runs before m_fault_stop). */
    if (sample_tab)
        munmap((void *)sample_tab, (sample_tab_mask + 1) * sizeof *sample_tab);
    sample_tab = NULL;
    sample_by = m_engine.sample_by;
    if (sample_mode != M_SAMPLE_OFF && sample_by != M_SAMPLE_BY_WP) {
        size_t n = 1024;
        while (n < 2 * m_engine.budget_pages && n < ((size_t)1 << 30))
            n *= 2;
        void *t = mmap(NULL, n * sizeof *sample_tab, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (t != MAP_FAILED) {
            sample_tab = t;
            sample_tab_mask = n - 1;
        } /* else: samples by write protection */
    }
    /* auto: by write protection, which sees every write, until the probes
     * show that the program's writes change what they write */
    atomic_store(&sample_all, false);
    atomic_store(&sample_content, sample_by == M_SAMPLE_BY_HASH);
    atomic_store(&probes_taken, 0);
    atomic_store(&probes_rescued, 0);
    atomic_store(&probes_changed, 0);
    atomic_store(&probes_same, 0);
    window_rescued = window_changed = window_same = sum_changed = sum_same = 0;
    int err = pthread_create(&reclaimer.thread, NULL, reclaimer_main, NULL);
    if (err)
        return err;
    reclaimer.started = true;
    return 0;
}

void m_budget_shutdown(void)
{
    if (reclaimer.started) {
        pthread_mutex_lock(&reclaimer.lock);
        reclaimer.stop = true;
        pthread_cond_signal(&reclaimer.cond);
        pthread_mutex_unlock(&reclaimer.lock);
        pthread_join(reclaimer.thread, NULL);
        reclaimer.started = false;
    }
    m_reclaim_wait_idle();
    pthread_mutex_lock(&rlist.lock);
    if (rlist.ring)
        munmap(rlist.ring, rlist.cap * sizeof *rlist.ring);
    rlist.ring = NULL;
    rlist.cap = rlist.head = rlist.count = 0;
    pthread_mutex_unlock(&rlist.lock);
}

/* budget_charge - the charge loop.  `patient`: wait up to 3 s for reclaim
 * to make progress (pages in flight, other threads), or only 100 ms when the
 * store is refusing writes; impatient callers (a fault that would like a few
 * pages more) try one reclaim round and give up. */
void m_budget_boost(int64_t delta)
{
    atomic_fetch_add(&budget_boost, delta);
    if (delta < 0)
        reclaimer_kick();
}

static int budget_charge(size_t npages, bool patient)
{
    uint64_t budget = m_engine.budget_pages;
    if (budget)
        budget += (uint64_t)atomic_load_explicit(&budget_boost, memory_order_relaxed);
    if (!budget) {
        m_counter_level(&m_engine.c.resident, &m_engine.c.peak_resident, npages);
        return 0;
    }
    uint64_t start = 0;
    for (;;) {
        uint64_t cur = atomic_load(&m_engine.c.resident);
        if (cur + npages <= budget) {
            if (!atomic_compare_exchange_weak(&m_engine.c.resident, &cur, cur + npages))
                continue;
            uint64_t v = cur + npages, p = atomic_load(&m_engine.c.peak_resident);
            while (v > p && !atomic_compare_exchange_weak(&m_engine.c.peak_resident, &p, v))
                ;
            if (v > m_engine.high_pages)
                reclaimer_kick();
            return 0;
        }
        /* Full: reclaim from this thread rather than wait for the
         * background reclaimer, so a fault never waits on another thread's
         * schedule. */
        reclaimer_kick();
        m_counter_add(&m_engine.c.reclaim_sync, 1);
        size_t want = npages > m_engine.batch_pages / 2 ? npages : m_engine.batch_pages / 2;
        if (m_reclaim_run(want ? want : 1) > 0) {
            start = 0;
            continue;
        }
        if (!patient)
            return ENOMEM;
        if (!start)
            start = m_now_ns();
        uint64_t limit = atomic_load(&evict_failures_in_row) ? 100000000ULL : 3000000000ULL;
        if (m_now_ns() - start > limit)
            return ENOMEM;
        usleep(atomic_load(&evict_inflight) ? 50 : 1000);
    }
}

int m_budget_charge(size_t npages)
{
    return budget_charge(npages, true);
}
int m_budget_try_charge(size_t npages)
{
    return budget_charge(npages, false);
}

void m_budget_uncharge(size_t npages)
{
    m_counter_sub(&m_engine.c.resident, npages);
}
