/*
 * region.c - areas of the ELRANGE and the EMM-style region API.
 *
 * The area table is an array of struct m_region_info sorted by address under
 * one rwlock (areas are few, lookups are binary searches).  Structural
 * changes (alloc, dealloc) take it for writing; everything else, including
 * every fault, takes it for reading only long enough to copy an area.
 *
 * How an area maps onto the kernel
 * --------------------------------
 * The ELRANGE is one private anonymous PROT_NONE mapping registered with
 * userfaultfd.  Pages an access may legitimately reach get real permissions
 * with mprotect: committed pages get theirs, and the uncommitted pages of a
 * COMMIT_ON_DEMAND area without a custom handler get the area's, so the first
 * touch arrives as a userfaultfd missing fault and commits the page.
 * Everything else stays PROT_NONE, so an access raises SIGSEGV: moat's
 * handler then calls the area's custom handler or reports the fatal access.
 *
 * Semantics follow Intel's EMM as implemented (see docs/design.md, "Region
 * API"), including its error codes.
 */
#include "region/region.h"

#include "budget/budget.h"
#include "common/engine.h"
#include "common/log.h"
#include "common/zap.h"
#include "fault/fault.h"
#include "store/store.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* An area being freed: it holds its addresses (no alloc can take them, and
 * faults there are fatal) while its pages are released without the table
 * lock, because threads that own pages in flight may need that lock to
 * finish them. */
#define M_AREA_DYING 0x10000

static struct {
    pthread_rwlock_t lock; /* guards tab, n, cap, next_id */
    struct m_region_info *tab;
    size_t n, cap;
    uint64_t next_id;
    _Atomic uintptr_t high; /* highest end ever allocated (fork scans below it) */
    /* [init_start, init_end): committed at start (m_region_commit_init),
     * pages that stay committed through uncommit and dealloc; 0 if none. */
    _Atomic uintptr_t init_start, init_end;
} rt = {.lock = PTHREAD_RWLOCK_INITIALIZER};

/* ------------------------------------------------------------------------
 * The area table (callers hold rt.lock)
 * ---------------------------------------------------------------------- */

/* tab_first - index of the first area whose end is above addr. */
static size_t tab_first(uintptr_t addr)
{
    size_t lo = 0, hi = rt.n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (rt.tab[mid].end <= addr)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static int tab_insert(const struct m_region_info *r)
{
    if (rt.n == rt.cap) {
        size_t ncap = rt.cap ? rt.cap * 2 : 64;
        struct m_region_info *t = realloc(rt.tab, ncap * sizeof *t);
        if (!t)
            return ENOMEM;
        rt.tab = t;
        rt.cap = ncap;
    }
    size_t i = tab_first(r->start);
    memmove(&rt.tab[i + 1], &rt.tab[i], (rt.n - i) * sizeof *rt.tab);
    rt.tab[i] = *r;
    rt.n++;
    return 0;
}

/* tab_punch - remove [start, end) from the table, splitting areas that
 * straddle its ends (both pieces keep the area's identity, so sealed pages
 * stay valid).  Needs room for one more entry (reserved by the caller). */
static void tab_punch(uintptr_t start, uintptr_t end)
{
    size_t i = tab_first(start);
    while (i < rt.n && rt.tab[i].start < end) {
        struct m_region_info r = rt.tab[i];
        memmove(&rt.tab[i], &rt.tab[i + 1], (rt.n - i - 1) * sizeof *rt.tab);
        rt.n--;
        if (r.start < start) {
            struct m_region_info left = r;
            left.end = start;
            tab_insert(&left);
            i++;
        }
        if (r.end > end) {
            struct m_region_info right = r;
            right.start = end;
            tab_insert(&right);
            i++;
        }
    }
}

static int tab_reserve(size_t extra)
{
    if (rt.n + extra <= rt.cap)
        return 0;
    size_t ncap = rt.cap ? rt.cap : 64;
    while (ncap < rt.n + extra)
        ncap *= 2;
    struct m_region_info *t = realloc(rt.tab, ncap * sizeof *t);
    if (!t)
        return ENOMEM;
    rt.tab = t;
    rt.cap = ncap;
    return 0;
}

/* tab_covered - is [start, end) covered by areas without a hole? */
static bool tab_covered(uintptr_t start, uintptr_t end)
{
    size_t i = tab_first(start);
    uintptr_t at = start;
    while (at < end) {
        if (i >= rt.n || rt.tab[i].start > at)
            return false;
        at = rt.tab[i].end;
        i++;
    }
    return true;
}

/* tab_gap - the lowest free, aligned [x, x+len) at or above `from`. */
static bool tab_gap(uintptr_t from, size_t len, uintptr_t align, uintptr_t *out)
{
    uintptr_t lim = m_engine.base + m_engine.size;
    uintptr_t at = (from + align - 1) & ~(align - 1);
    for (size_t i = tab_first(at); at <= lim && len <= lim - at; i++) {
        if (i >= rt.n || rt.tab[i].start >= at + len) {
            *out = at;
            return true;
        }
        if (rt.tab[i].end > at)
            at = (rt.tab[i].end + align - 1) & ~(align - 1);
    }
    return false;
}

int m_region_find_locked(uintptr_t addr, struct m_region_info *out)
{
    size_t i = tab_first(addr);
    if (i < rt.n && rt.tab[i].start <= addr) {
        *out = rt.tab[i];
        return 0;
    }
    return ENOENT;
}

void m_region_read_lock(void)
{
    pthread_rwlock_rdlock(&rt.lock);
}
void m_region_read_unlock(void)
{
    pthread_rwlock_unlock(&rt.lock);
}

int m_region_find(uintptr_t addr, struct m_region_info *out)
{
    pthread_rwlock_rdlock(&rt.lock);
    int err = m_region_find_locked(addr, out);
    pthread_rwlock_unlock(&rt.lock);
    return err;
}

int m_region_init(void)
{
    rt.next_id = 1;
    return 0;
}

void m_region_shutdown(void)
{
    pthread_rwlock_wrlock(&rt.lock);
    atomic_store(&rt.init_start, 0);
    atomic_store(&rt.init_end, 0);
    free(rt.tab);
    rt.tab = NULL;
    rt.n = rt.cap = 0;
    /* the next engine's range lies elsewhere: fork's scans start afresh */
    atomic_store(&rt.high, 0);
    pthread_rwlock_unlock(&rt.lock);
}

/* ------------------------------------------------------------------------
 * Page helpers
 * ---------------------------------------------------------------------- */

static int prot_to_os(int prot)
{
    int p = PROT_NONE;
    if (prot & MOAT_PROT_READ)
        p |= PROT_READ;
    if (prot & MOAT_PROT_WRITE)
        p |= PROT_WRITE | PROT_READ;
    if (prot & MOAT_PROT_EXEC)
        p |= PROT_EXEC;
    return p;
}

static int os_protect(uintptr_t start, uintptr_t end, int prot)
{
    if (end <= start)
        return 0;
    if (mprotect((void *)start, end - start, prot_to_os(prot)) != 0) {
        int err = errno;
        m_error("region", "mprotect [%#lx, %#lx) failed: %s", (unsigned long)start,
                (unsigned long)end, strerror(err));
        return err;
    }
    return 0;
}

/* in_init - addr is in the committed-at-start part of the ELRANGE. */
static inline bool in_init(uintptr_t addr)
{
    return addr < atomic_load_explicit(&rt.init_end, memory_order_relaxed) &&
           addr >= atomic_load_explicit(&rt.init_start, memory_order_relaxed);
}

/* page_release - make a page UNCOMMITTED, settling its accounting and its
 * store slot.  Pages in flight are waited for.  The frame itself is dropped
 * by the caller's madvise over the whole range, and a resident page's charge
 * is added to *uncharge for the caller to return after that madvise: until
 * the frame is gone it still counts against the budget (invariant 3).  A
 * committed-at-start page becomes UNTOUCHED instead: it stays committed (and
 * counted), and reads as zeros at its next touch. */
static void page_release(size_t index, size_t *uncharge)
{
    struct m_page *p = m_engine_page(index);
    bool keep = in_init(m_engine_addr(index));
    for (;;) {
        uint32_t f = m_page_lock(p);
        unsigned st = m_page_state(f);
        if (st == M_PS_EVICTING || st == M_PS_LOADING) {
            m_page_unlock(p, f);
            usleep(20);
            continue;
        }
        if (st != M_PS_UNCOMMITTED && !keep)
            m_counter_sub(&m_engine.c.committed, 1);
        if (st == M_PS_UNCOMMITTED && keep)
            m_counter_level(&m_engine.c.committed, &m_engine.c.peak_committed, 1);
        if (st == M_PS_RESIDENT) {
            ++*uncharge;
            if (f & M_PF_PINNED)
                m_counter_sub(&m_engine.c.unreclaimable, 1);
        }
        if (st == M_PS_EVICTED)
            m_counter_sub(&m_engine.c.evicted, 1);
        if (p->slot != M_SLOT_NONE) {
            m_store_slot_free(m_engine.store, m_slot_store(p->slot));
            p->slot = M_SLOT_NONE;
        }
        /* version is kept: it only ever grows (anti-replay) */
        uint32_t nf = f & M_PF_INLIST;
        if (keep)
            nf |= M_PS_UNTOUCHED | (uint32_t)MOAT_PROT_READ_WRITE << M_PF_PROT_SHIFT;
        m_page_unlock(p, nf);
        return;
    }
}

/* range_release - release every page (waiting for pages in flight), then
 * close the range and drop its frames.  Closing comes after the release so
 * an evictor never reads a page that just lost its permissions. */
static void range_release(uintptr_t start, uintptr_t end)
{
    size_t uncharge = 0;
    for (uintptr_t a = start; a < end; a += M_PAGE_SIZE)
        page_release(m_engine_index(a), &uncharge);
    m_fault_streams_forget(m_engine_index(start), m_engine_index(end));
    os_protect(start, end, MOAT_PROT_NONE);
    madvise((void *)start, end - start, MADV_DONTNEED);
    m_counter_add(&m_engine.c.zap_calls, 1);
    m_budget_uncharge(uncharge);
}

/* range_has_prot - every page of [start, end) is uncommitted or has
 * exactly the permissions prot (and none is a TCS): the kernel's
 * permissions over the range are already prot everywhere. */
static bool range_has_prot(uintptr_t start, uintptr_t end, int prot)
{
    for (uintptr_t a = start; a < end; a += M_PAGE_SIZE) {
        uint32_t f = atomic_load(&m_engine_page(m_engine_index(a))->flags);
        if ((f & M_PF_TCS) || (m_page_state(f) != M_PS_UNCOMMITTED && (int)m_page_prot(f) != prot))
            return false;
    }
    return true;
}

/* The permissions uncommitted pages of an area carry in the kernel. */
static int area_idle_prot(const struct m_region_info *r)
{
    if ((r->flags & MOAT_COMMIT_ON_DEMAND) && !r->handler)
        return r->prot;
    return MOAT_PROT_NONE;
}

/* open_init - committed-at-start pages in [start, end) of an area whose idle
 * pages are closed are committed, hence reachable: give them the
 * read-write permissions they carry. */
static void open_init(uintptr_t start, uintptr_t end)
{
    uintptr_t is = atomic_load_explicit(&rt.init_start, memory_order_relaxed);
    uintptr_t ie = atomic_load_explicit(&rt.init_end, memory_order_relaxed);
    if (start < is)
        start = is;
    if (end > ie)
        end = ie;
    if (start < end)
        os_protect(start, end, MOAT_PROT_READ_WRITE);
}

/* ------------------------------------------------------------------------
 * Argument checks shared by the range functions
 * ---------------------------------------------------------------------- */

static int check_range(void *addr, size_t length, uintptr_t *start, uintptr_t *end)
{
    uintptr_t a = (uintptr_t)addr;
    if (!atomic_load(&m_engine.running))
        return ENODEV;
    if (!addr || !length || (a & (M_PAGE_SIZE - 1)) || (length & (M_PAGE_SIZE - 1)))
        return EINVAL;
    if (!m_engine_contains(a) || length > m_engine.base + m_engine.size - a)
        return EINVAL;
    *start = a;
    *end = a + length;
    return 0;
}

/* for_areas - visit the areas over [start, end), clipped. */
#define for_areas(i, s, e, start, end)                                                             \
    for (size_t i = tab_first(start); i < rt.n && rt.tab[i].start < (end); i++)                    \
        for (uintptr_t s = rt.tab[i].start > (start) ? rt.tab[i].start : (start),                  \
                       e = rt.tab[i].end < (end) ? rt.tab[i].end : (end), once_ = 1;               \
             once_; once_ = 0)

/* ------------------------------------------------------------------------
 * Lazy tracking (moat.h, docs/design.md)
 * ---------------------------------------------------------------------- */

/* lazy_area_pages - pages of every area that is not RESERVE (dying ones too:
 * their frames may not be dropped yet).  Each could be resident without a
 * fault reaching moat while it does not track. */
static uint64_t lazy_area_pages(void)
{
    uint64_t n = 0;
    for (size_t i = 0; i < rt.n; i++)
        if (!m_region_is_reserve(&rt.tab[i]))
            n += (rt.tab[i].end - rt.tab[i].start) >> M_PAGE_SHIFT;
    return n;
}

/* lazy_fits - adding `more` pages of areas keeps every possible resident
 * page under the high watermark. */
static bool lazy_fits(uint64_t more)
{
    return m_engine.budget_pages == 0 || lazy_area_pages() + more <= m_engine.high_pages;
}

#define PAGEMAP_PRESENT (1ull << 63)
#define PAGEMAP_SWAPPED (1ull << 62)
#define LAZY_CHUNK      512

/* lazy_adopt - the page at index has a frame the kernel gave: make it
 * committed, resident and dirty (nothing says it is clean), charged and in
 * the reclaim list.  Called with the page unlocked and the charge made. */
static void lazy_adopt(size_t index, const struct m_region_info *r)
{
    struct m_page *p = m_engine_page(index);
    uint32_t f = m_page_lock(p);
    if (m_page_state(f) == M_PS_UNCOMMITTED) {
        f &= ~M_PF_PROT_MASK;
        f |= (uint32_t)(r->prot & MOAT_PROT_MASK) << M_PF_PROT_SHIFT;
        m_counter_level(&m_engine.c.committed, &m_engine.c.peak_committed, 1);
    }
    f = m_page_set_state(f, M_PS_RESIDENT) | M_PF_DIRTY;
    f = m_reclaim_track(index, f);
    m_page_unlock(p, f);
}

/* lazy_track_locked - start tracking; rt.lock held for writing.  Once the
 * range is registered, a touch of a page without a frame is a userfaultfd
 * fault, and its handler waits for rt.lock (m_region_find) until the table
 * below is exact: a frame is either seen here or installed by the handler,
 * never both.  Frames cannot go away meanwhile either: the program's
 * madvise and munmap reach moat_uncommit and moat_dealloc, which wait for
 * the lock too.  Swapped-out pages count as resident (the kernel brings them
 * back on access without a fault moat would see). */
static int lazy_track_locked(void)
{
    if (atomic_load(&m_engine.tracking))
        return 0;
    int err = m_engine_track_register();
    if (err)
        return err;
    int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        m_warn("region",
               "cannot read /proc/self/pagemap (%s): taking resident pages from "
               "mincore, which misses pages swapped out by the kernel",
               strerror(errno));
    uint64_t adopted = 0;
    for (size_t i = 0; i < rt.n; i++) {
        const struct m_region_info *r = &rt.tab[i];
        if (m_region_is_reserve(r))
            continue;
        for (uintptr_t a = r->start; a < r->end; a += LAZY_CHUNK * M_PAGE_SIZE) {
            size_t n = (r->end - a) >> M_PAGE_SHIFT;
            if (n > LAZY_CHUNK)
                n = LAZY_CHUNK;
            uint64_t pm[LAZY_CHUNK];
            unsigned char mc[LAZY_CHUNK];
            bool ok = false;
            if (fd >= 0)
                ok = pread(fd, pm, n * sizeof pm[0], (off_t)((a >> M_PAGE_SHIFT) * sizeof pm[0])) ==
                     (ssize_t)(n * sizeof pm[0]);
            if (!ok && mincore((void *)a, n << M_PAGE_SHIFT, mc) != 0) {
                m_error("region", "cannot tell which pages of [%#lx, %#lx) are resident: %s",
                        (unsigned long)a, (unsigned long)(a + (n << M_PAGE_SHIFT)),
                        strerror(errno));
                continue;
            }
            size_t present = 0;
            for (size_t k = 0; k < n; k++) {
                bool in = ok ? (pm[k] & (PAGEMAP_PRESENT | PAGEMAP_SWAPPED)) != 0 : (mc[k] & 1);
                mc[k] = in;
                present += in;
            }
            if (!present)
                continue;
            /* Within the budget by construction (the areas fit under the
             * high watermark), so this never reclaims. */
            m_budget_charge(present);
            for (size_t k = 0; k < n; k++)
                if (mc[k])
                    lazy_adopt(m_engine_index(a) + k, r);
            adopted += present;
        }
    }
    if (fd >= 0)
        close(fd);
    atomic_store(&m_engine.tracking, true);
    m_info("region", "tracking pages from now on: %llu resident pages adopted from the kernel",
           (unsigned long long)adopted);
    return 0;
}

/* lazy_exact - calls whose result depends on which pages are committed or
 * resident start tracking first; with only_uncommitted, only if a page of
 * the range is held as uncommitted (it may have been touched meanwhile). */
static int lazy_exact(uintptr_t start, uintptr_t end, bool only_uncommitted)
{
    if (atomic_load(&m_engine.tracking))
        return 0;
    bool need = !only_uncommitted;
    for (uintptr_t a = start; !need && a < end; a += M_PAGE_SIZE)
        need =
            m_page_state(atomic_load(&m_engine_page(m_engine_index(a))->flags)) == M_PS_UNCOMMITTED;
    return need ? m_region_track() : 0;
}

int m_region_track(void)
{
    if (atomic_load(&m_engine.tracking))
        return 0;
    pthread_rwlock_wrlock(&rt.lock);
    int err = lazy_track_locked();
    pthread_rwlock_unlock(&rt.lock);
    return err;
}

void m_region_untracked_sample(uint64_t *resident, uint64_t *committed)
{
    *resident = *committed = 0;
    pthread_rwlock_rdlock(&rt.lock);
    for (size_t i = 0; i < rt.n && !atomic_load(&m_engine.tracking); i++) {
        const struct m_region_info *r = &rt.tab[i];
        if (m_region_is_reserve(r))
            continue;
        for (uintptr_t a = r->start; a < r->end; a += 8 * LAZY_CHUNK * M_PAGE_SIZE) {
            size_t n = (r->end - a) >> M_PAGE_SHIFT;
            if (n > 8 * LAZY_CHUNK)
                n = 8 * LAZY_CHUNK;
            unsigned char mc[8 * LAZY_CHUNK];
            if (mincore((void *)a, n << M_PAGE_SHIFT, mc) != 0)
                continue;
            for (size_t k = 0; k < n; k++) {
                if (!(mc[k] & 1))
                    continue;
                (*resident)++;
                uint32_t f = atomic_load_explicit(&m_engine_page(m_engine_index(a) + k)->flags,
                                                  memory_order_relaxed);
                *committed += m_page_state(f) == M_PS_UNCOMMITTED;
            }
        }
    }
    pthread_rwlock_unlock(&rt.lock);
}

int m_region_commit_init(void *addr, size_t length, size_t *out_pages)
{
    uintptr_t start, end;
    if (out_pages)
        *out_pages = 0;
    int err = check_range(addr, length, &start, &end);
    if (err)
        return err;
    pthread_rwlock_wrlock(&rt.lock);
    if (atomic_load(&rt.init_end)) {
        err = EBUSY; /* once */
    } else {
        /* One word a page, no frame: a committed page costs nothing until
         * its first touch, which charges the budget as any commit does. */
        size_t fresh = 0;
        uint32_t pf = M_PS_UNTOUCHED | (uint32_t)MOAT_PROT_READ_WRITE << M_PF_PROT_SHIFT;
        for (uintptr_t a = start; a < end; a += M_PAGE_SIZE) {
            struct m_page *p = m_engine_page(m_engine_index(a));
            uint32_t f = m_page_lock(p);
            if (m_page_state(f) == M_PS_UNCOMMITTED) {
                f = (f & M_PF_INLIST) | pf;
                fresh++;
            }
            m_page_unlock(p, f);
        }
        m_counter_level(&m_engine.c.committed, &m_engine.c.peak_committed, fresh);
        atomic_store(&rt.init_start, start);
        atomic_store(&rt.init_end, end);
        for_areas(i, s, e, start, end)
        {
            if (!m_region_is_reserve(&rt.tab[i]) && area_idle_prot(&rt.tab[i]) == MOAT_PROT_NONE)
                open_init(s, e);
        }
        if (out_pages)
            *out_pages = fresh;
        m_debug("region", "committed %zu pages at start in [%#lx, %#lx)", fresh,
                (unsigned long)start, (unsigned long)end);
    }
    pthread_rwlock_unlock(&rt.lock);
    return err;
}

/* ------------------------------------------------------------------------
 * The API
 * ---------------------------------------------------------------------- */

static int alloc_check_flags(int flags, uintptr_t *align)
{
    unsigned f = (unsigned)flags;
    unsigned alloc = f & MOAT_ALLOC_FLAGS_MASK;
    unsigned kind = alloc & (MOAT_RESERVE | MOAT_COMMIT_NOW | MOAT_COMMIT_ON_DEMAND);
    if (!kind)
        return EINVAL;
    /* As in Intel's EMM, several kinds may be given: RESERVE wins; COMMIT_NOW
     * with COMMIT_ON_DEMAND commits now and re-commits on demand later. */
    if (kind & MOAT_RESERVE)
        kind = MOAT_RESERVE;
    if (alloc & ~(unsigned)(MOAT_RESERVE | MOAT_COMMIT_NOW | MOAT_COMMIT_ON_DEMAND |
                            MOAT_GROWSDOWN | MOAT_GROWSUP | MOAT_FIXED))
        return EINVAL;
    if ((alloc & MOAT_GROWSDOWN) && (alloc & MOAT_GROWSUP))
        return EINVAL;
    if (f & 0x00FF0000u)
        return EINVAL;
    unsigned type = f & MOAT_PAGE_TYPE_MASK;
    if (type != 0 && type != MOAT_PAGE_TYPE_REG && type != MOAT_PAGE_TYPE_TCS &&
        type != MOAT_PAGE_TYPE_SS_FIRST && type != MOAT_PAGE_TYPE_SS_REST)
        return EINVAL;
    if (type && type != MOAT_PAGE_TYPE_REG && !(kind & MOAT_COMMIT_NOW))
        return EINVAL;
    unsigned shift = (f >> MOAT_ALIGNMENT_SHIFT) & 0xFF;
    if (shift == 0)
        shift = M_PAGE_SHIFT;
    if (shift < M_PAGE_SHIFT || shift > 47)
        return EINVAL;
    *align = (uintptr_t)1 << shift;
    return 0;
}

int moat_alloc(void *addr, size_t length, int flags, moat_fault_handler_t handler,
               void *handler_private, void **out_addr)
{
    uintptr_t align;
    int err = alloc_check_flags(flags, &align);
    if (err)
        return err;
    if (!length || (length & (M_PAGE_SIZE - 1)))
        return EINVAL;
    uintptr_t a = (uintptr_t)addr;
    if (a & (align - 1))
        return EINVAL;
    if ((flags & MOAT_FIXED) && !addr)
        return EINVAL;
    unsigned type = (unsigned)flags & MOAT_PAGE_TYPE_MASK;
    if (type == MOAT_PAGE_TYPE_SS_FIRST && length != M_PAGE_SIZE)
        return EINVAL;
    if (!atomic_load(&m_engine.running))
        return ENODEV;
    /* EMM: a hint outside the user range is EPERM; a range that runs out of
     * the enclave is EACCES */
    if (addr && !m_engine_contains(a))
        return EPERM;
    if (addr && length > m_engine.base + m_engine.size - a)
        return EACCES;
    if (flags & MOAT_RESERVE)
        flags &= ~(MOAT_COMMIT_NOW | MOAT_COMMIT_ON_DEMAND);

    pthread_rwlock_wrlock(&rt.lock);
    if (!atomic_load(&m_engine.tracking) && !(flags & MOAT_RESERVE) &&
        !lazy_fits(length >> M_PAGE_SHIFT)) {
        err = lazy_track_locked();
        if (err)
            goto out;
    }
    err = tab_reserve(3);
    if (err)
        goto out;
    uintptr_t at = 0;
    bool carve = false;
    if (addr) {
        /* an exact or hinted address: free, or only RESERVE areas there */
        bool free_there = true, reserve_only = true;
        for (size_t i = tab_first(a); i < rt.n && rt.tab[i].start < a + length; i++) {
            free_there = false;
            if (!m_region_is_reserve(&rt.tab[i]) || (rt.tab[i].flags & M_AREA_DYING))
                reserve_only = false;
        }
        if (free_there || reserve_only) {
            at = a;
            carve = !free_there;
        } else if (flags & MOAT_FIXED) {
            err = EEXIST;
            goto out;
        }
    }
    if (!at && !tab_gap(m_engine.base, length, align, &at)) {
        err = ENOMEM;
        goto out;
    }
    if (carve)
        tab_punch(at, at + length);

    struct m_region_info r = {
        .start = at,
        .end = at + length,
        .flags = flags & (MOAT_ALLOC_FLAGS_MASK | MOAT_PAGE_TYPE_MASK) & ~MOAT_FIXED,
        .prot = MOAT_PROT_READ_WRITE,
        .id = rt.next_id++,
        .handler = handler,
        .handler_private = handler_private,
    };
    if (!type)
        r.flags |= MOAT_PAGE_TYPE_REG;
    size_t npages = length >> M_PAGE_SHIFT;
    int os_prot = MOAT_PROT_NONE;
    if (flags & MOAT_COMMIT_NOW) {
        bool tcs = type == MOAT_PAGE_TYPE_TCS;
        uint32_t pf = M_PS_UNTOUCHED;
        pf |= (uint32_t)(tcs ? MOAT_PROT_NONE : MOAT_PROT_READ_WRITE) << M_PF_PROT_SHIFT;
        if (tcs)
            pf |= M_PF_TCS;
        size_t first = m_engine_index(at), fresh = 0;
        for (size_t i = 0; i < npages; i++) {
            struct m_page *p = m_engine_page(first + i);
            uint32_t f = m_page_lock(p);
            fresh += m_page_state(f) == M_PS_UNCOMMITTED; /* not committed at start */
            m_page_unlock(p, (f & M_PF_INLIST) | pf);
        }
        m_counter_level(&m_engine.c.committed, &m_engine.c.peak_committed, fresh);
        os_prot = tcs ? MOAT_PROT_NONE : MOAT_PROT_READ_WRITE;
    } else {
        os_prot = area_idle_prot(&r);
    }
    err = os_protect(at, at + length, os_prot);
    if (err)
        goto out;
    if (os_prot == MOAT_PROT_NONE && !m_region_is_reserve(&r) && !(flags & MOAT_COMMIT_NOW))
        open_init(at, at + length);
    tab_insert(&r);
    if (at + length > atomic_load_explicit(&rt.high, memory_order_relaxed))
        atomic_store_explicit(&rt.high, at + length, memory_order_relaxed);
    if (out_addr)
        *out_addr = (void *)at;
    m_debug("region", "alloc [%#lx, %#lx) flags %#x id %llu", (unsigned long)at,
            (unsigned long)(at + length), (unsigned)flags, (unsigned long long)r.id);
out:
    pthread_rwlock_unlock(&rt.lock);
    return err;
}

int moat_dealloc(void *addr, size_t length)
{
    uintptr_t start, end;
    int err = check_range(addr, length, &start, &end);
    if (err)
        return err;
    /* The areas being freed, remembered so RESERVE parts (which can be huge
     * and have no pages) are only closed.  A fixed array: dealloc may run in
     * a fault handler, where malloc is not safe.  With more pieces than fit,
     * the whole range is walked page by page: slower, same result. */
    struct piece {
        uintptr_t s, e;
        bool reserve;
    } pieces[16];
    size_t npieces = 0;
    bool overflow = false;
    pthread_rwlock_wrlock(&rt.lock);
    for_areas(i, s, e, start, end)
    {
        if (rt.tab[i].flags & M_AREA_DYING) {
            err = EBUSY; /* another thread is freeing part of it */
            break;
        }
        if (npieces < 16)
            pieces[npieces] = (struct piece){s, e, m_region_is_reserve(&rt.tab[i])};
        else
            overflow = true;
        npieces++;
    }
    if (!err && !npieces)
        err = EINVAL;
    if (!err)
        err = tab_reserve(3);
    if (!err) {
        tab_punch(start, end);
        struct m_region_info dying = {.start = start, .end = end, .flags = M_AREA_DYING};
        tab_insert(&dying);
    }
    pthread_rwlock_unlock(&rt.lock);
    if (err)
        return err;
    if (overflow) {
        range_release(start, end);
    } else {
        for (size_t k = 0; k < npieces; k++) {
            /* release before closing: a page being sealed is read by the
             * evictor, which must not fault on it */
            if (!pieces[k].reserve)
                range_release(pieces[k].s, pieces[k].e);
            else
                os_protect(pieces[k].s, pieces[k].e, MOAT_PROT_NONE);
        }
    }
    pthread_rwlock_wrlock(&rt.lock);
    tab_punch(start, end);
    pthread_rwlock_unlock(&rt.lock);
    return 0;
}

/* range_check_areas - the range is covered and no area in it is RESERVE;
 * with need_on_demand, every area must be COMMIT_ON_DEMAND (else `code`). */
static int range_check_areas(uintptr_t start, uintptr_t end, bool need_on_demand, int code)
{
    if (!tab_covered(start, end))
        return EINVAL;
    for_areas(i, s, e, start, end)
    {
        (void)s;
        (void)e;
        if (m_region_is_reserve(&rt.tab[i]))
            return EACCES;
        if (need_on_demand && !(rt.tab[i].flags & MOAT_COMMIT_ON_DEMAND))
            return code;
    }
    return 0;
}

/* range_check_regular - every area over the range has a regular page type
 * by Intel's bit test (type & REG: REG and SS_REST pass, TCS and SS_FIRST
 * do not); `code` otherwise.  EMM refuses commit (EACCES) and
 * modify_permissions (EPERM) on the others. */
static int range_check_regular(uintptr_t start, uintptr_t end, int code)
{
    for_areas(i, s, e, start, end)
    {
        (void)s;
        (void)e;
        if (!(rt.tab[i].flags & MOAT_PAGE_TYPE_REG))
            return code;
    }
    return 0;
}

int moat_commit(void *addr, size_t length)
{
    uintptr_t start, end;
    int err = check_range(addr, length, &start, &end);
    if (err)
        return err;
    pthread_rwlock_rdlock(&rt.lock);
    err = range_check_areas(start, end, false, 0);
    if (!err)
        err = range_check_regular(start, end, EACCES);
    /* EMM: pages that cannot be written (reduced permissions, TCS) are EACCES */
    for (uintptr_t a = start; !err && a < end; a += M_PAGE_SIZE) {
        uint32_t f = atomic_load(&m_engine_page(m_engine_index(a))->flags);
        if (m_page_state(f) != M_PS_UNCOMMITTED &&
            ((f & M_PF_TCS) || !(m_page_prot(f) & MOAT_PROT_WRITE)))
            err = EACCES;
    }
    if (!err) {
        for_areas(i, s, e, start, end)
        {
            struct m_region_info *r = &rt.tab[i];
            bool closed = area_idle_prot(r) == MOAT_PROT_NONE;
            uintptr_t run = 0; /* start of a run of newly committed pages */
            for (uintptr_t a = s; a < e; a += M_PAGE_SIZE) {
                struct m_page *p = m_engine_page(m_engine_index(a));
                uint32_t f = m_page_lock(p);
                bool fresh = m_page_state(f) == M_PS_UNCOMMITTED;
                if (fresh) {
                    f = m_page_set_state(f, M_PS_UNTOUCHED) & ~M_PF_PROT_MASK;
                    f |= (uint32_t)r->prot << M_PF_PROT_SHIFT;
                    m_counter_level(&m_engine.c.committed, &m_engine.c.peak_committed, 1);
                }
                m_page_unlock(p, f);
                /* areas whose uncommitted pages are PROT_NONE (COMMIT_NOW,
                 * custom handler): open the newly committed runs */
                if (fresh && !run)
                    run = a;
                if (!fresh && run) {
                    if (closed)
                        os_protect(run, a, r->prot);
                    run = 0;
                }
            }
            if (run && closed)
                os_protect(run, e, r->prot);
        }
    }
    pthread_rwlock_unlock(&rt.lock);
    return err;
}

/* uncommit_locked - moat_uncommit of [start, end) under the table's read
 * lock.  The frames of areas whose pages keep their permissions are left to
 * the caller to drop, appended to zap while *nzap < cap (past that, dropped
 * here), so that one call drops the frames of many ranges. */
static void uncommit_locked(uintptr_t start, uintptr_t end, struct iovec *zap, size_t *nzap,
                            size_t cap, size_t *uncharge)
{
    for_areas(i, s, e, start, end)
    {
        int idle = area_idle_prot(&rt.tab[i]);
        if (idle != MOAT_PROT_NONE && range_has_prot(s, e, idle)) {
            /* The pages keep the permissions they have (the allocator
             * giving back free spans of its heap): drop the frames
             * without closing and reopening the range, two mprotects
             * and their TLB shootdowns a call.  8 threads under a big
             * budget spent 7% of their cycles in those mprotects.  The
             * pages are no longer the program's: nothing touches them
             * before their frames go. */
            size_t here = 0;
            for (uintptr_t a = s; a < e; a += M_PAGE_SIZE)
                page_release(m_engine_index(a), &here);
            m_fault_streams_forget(m_engine_index(s), m_engine_index(e));
            if (*nzap < cap) {
                zap[(*nzap)++] = (struct iovec){.iov_base = (void *)s, .iov_len = e - s};
                *uncharge += here; /* returned after the caller's zap */
            } else {
                madvise((void *)s, e - s, MADV_DONTNEED);
                m_counter_add(&m_engine.c.zap_calls, 1);
                m_budget_uncharge(here);
            }
            continue;
        }
        range_release(s, e);
        if (idle != MOAT_PROT_NONE)
            os_protect(s, e, idle);
        else
            open_init(s, e);
    }
}

int moat_uncommit(void *addr, size_t length)
{
    uintptr_t start, end;
    int err = check_range(addr, length, &start, &end);
    if (err)
        return err;
    struct iovec zap[8];
    size_t nzap = 0, uncharge = 0;
    pthread_rwlock_rdlock(&rt.lock);
    err = range_check_areas(start, end, false, 0);
    if (!err)
        uncommit_locked(start, end, zap, &nzap, sizeof zap / sizeof zap[0], &uncharge);
    m_counter_add(&m_engine.c.zap_calls, m_zap_ranges(zap, nzap));
    m_budget_uncharge(uncharge);
    pthread_rwlock_unlock(&rt.lock);
    return err;
}

int m_region_uncommit_ranges(const struct iovec *ranges, size_t n)
{
    if (n > M_REGION_UNCOMMIT_MAX)
        return EINVAL;
    uintptr_t lo[M_REGION_UNCOMMIT_MAX], hi[M_REGION_UNCOMMIT_MAX];
    for (size_t k = 0; k < n; k++) {
        int err = check_range(ranges[k].iov_base, ranges[k].iov_len, &lo[k], &hi[k]);
        if (err)
            return err;
    }
    /* the frames to drop: a range can span several areas */
    struct iovec zap[2 * M_REGION_UNCOMMIT_MAX];
    size_t nzap = 0;
    pthread_rwlock_rdlock(&rt.lock);
    for (size_t k = 0; k < n; k++) {
        int err = range_check_areas(lo[k], hi[k], false, 0);
        if (err) {
            pthread_rwlock_unlock(&rt.lock);
            return err;
        }
    }
    size_t uncharge = 0;
    for (size_t k = 0; k < n; k++)
        uncommit_locked(lo[k], hi[k], zap, &nzap, sizeof zap / sizeof zap[0], &uncharge);
    m_counter_add(&m_engine.c.zap_calls, m_zap_ranges(zap, nzap));
    m_budget_uncharge(uncharge);
    pthread_rwlock_unlock(&rt.lock);
    return 0;
}

int moat_commit_data(void *addr, size_t length, uint8_t *data, int prot)
{
    uintptr_t start, end;
    int err = check_range(addr, length, &start, &end);
    if (err)
        return err;
    if ((err = lazy_exact(start, end, false)) != 0)
        return err;
    if (!data || (prot & ~MOAT_PROT_MASK))
        return EINVAL;
    pthread_rwlock_rdlock(&rt.lock);
    err = range_check_areas(start, end, true, EINVAL);
    for (uintptr_t a = start; !err && a < end; a += M_PAGE_SIZE)
        if (m_page_state(atomic_load(&m_engine_page(m_engine_index(a))->flags)) != M_PS_UNCOMMITTED)
            err = EACCES;
    for (uintptr_t a = start; !err && a < end; a += M_PAGE_SIZE) {
        size_t index = m_engine_index(a);
        struct m_page *p = m_engine_page(index);
        if (m_budget_charge(1) != 0) {
            err = ENOMEM;
            break;
        }
        uint32_t f = m_page_lock(p);
        if (m_page_state(f) != M_PS_UNCOMMITTED) {
            m_page_unlock(p, f);
            m_budget_uncharge(1);
            err = EACCES;
            break;
        }
        err = m_fault_copy_in(a, data + (a - start));
        if (err) {
            m_page_unlock(p, f);
            m_budget_uncharge(1);
            break;
        }
        f = m_page_set_state(f, M_PS_RESIDENT) | M_PF_DIRTY;
        f = (f & ~(M_PF_PROT_MASK | M_PF_WP)) | (uint32_t)prot << M_PF_PROT_SHIFT;
        f = m_reclaim_track(index, f);
        m_page_unlock(p, f);
        m_counter_level(&m_engine.c.committed, &m_engine.c.peak_committed, 1);
    }
    if (!err)
        err = os_protect(start, end, prot);
    pthread_rwlock_unlock(&rt.lock);
    return err;
}

int moat_modify_permissions(void *addr, size_t length, int prot)
{
    uintptr_t start, end;
    int err = check_range(addr, length, &start, &end);
    if (err)
        return err;
    if ((err = lazy_exact(start, end, true)) != 0)
        return err;
    if ((prot & ~MOAT_PROT_MASK) || ((prot & MOAT_PROT_EXEC) && !(prot & MOAT_PROT_READ)))
        return EINVAL;
    pthread_rwlock_rdlock(&rt.lock);
    /* EMM: RESERVE areas and non-regular pages are EPERM, uncommitted pages
     * EINVAL */
    err = range_check_areas(start, end, false, 0);
    if (err == EACCES)
        err = EPERM;
    if (!err)
        err = range_check_regular(start, end, EPERM);
    for (uintptr_t a = start; !err && a < end; a += M_PAGE_SIZE) {
        uint32_t f = atomic_load(&m_engine_page(m_engine_index(a))->flags);
        if (f & M_PF_TCS)
            err = EPERM;
        else if (m_page_state(f) == M_PS_UNCOMMITTED)
            err = EINVAL;
    }
    for (uintptr_t a = start; !err && a < end; a += M_PAGE_SIZE) {
        struct m_page *p = m_engine_page(m_engine_index(a));
        uint32_t f = m_page_lock(p);
        /* The new permissions are published before mprotect, and pages in
         * flight are waited for: reclaim never reads a page it cannot. */
        while (m_page_state(f) == M_PS_EVICTING || m_page_state(f) == M_PS_LOADING) {
            m_page_unlock(p, f);
            usleep(20);
            f = m_page_lock(p);
        }
        /* A clean page that was not write-protected (it was read-only) must
         * not be dropped clean once it can be written. */
        if ((prot & MOAT_PROT_WRITE) && !(f & (M_PF_WP | M_PF_DIRTY)))
            f |= M_PF_DIRTY;
        f = (f & ~M_PF_PROT_MASK) | (uint32_t)prot << M_PF_PROT_SHIFT;
        m_page_unlock(p, f);
    }
    if (!err)
        err = os_protect(start, end, prot);
    pthread_rwlock_unlock(&rt.lock);
    return err;
}

int moat_modify_type(void *addr, size_t length, int type)
{
    uintptr_t start, end;
    if (type != MOAT_PAGE_TYPE_TCS)
        return EPERM;
    int err = check_range(addr, length, &start, &end);
    if (err)
        return err;
    if ((err = lazy_exact(start, end, false)) != 0)
        return err;
    if (length != M_PAGE_SIZE)
        return EINVAL;
    pthread_rwlock_rdlock(&rt.lock);
    /* EMM: already TCS is a no-op; RESERVE or uncommitted is EACCES; a page
     * that is not read-write is EPERM */
    err = range_check_areas(start, end, false, 0);
    size_t index = m_engine_index(start);
    bool already = false;
    if (!err) {
        uint32_t f = atomic_load(&m_engine_page(index)->flags);
        /* covered, so the area holding the page is at tab_first(start) */
        int area_type = rt.tab[tab_first(start)].flags & MOAT_PAGE_TYPE_MASK;
        if (f & M_PF_TCS)
            already = true;
        else if (area_type != MOAT_PAGE_TYPE_REG)
            err = EACCES; /* EMM: only a REG page (exactly) becomes a TCS */
        else if (m_page_state(f) == M_PS_UNCOMMITTED)
            err = EACCES;
        else if (m_page_prot(f) != MOAT_PROT_READ_WRITE)
            err = EPERM;
    }
    if (already) {
        pthread_rwlock_unlock(&rt.lock);
        return 0;
    }
    if (!err)
        err = m_fault_install(index, true);
    if (!err) {
        struct m_page *p = m_engine_page(index);
        uint32_t f = m_page_lock(p);
        f = (f & ~M_PF_PROT_MASK) | M_PF_TCS | M_PF_DIRTY;
        m_page_unlock(p, f);
        err = os_protect(start, end, MOAT_PROT_NONE);
    }
    pthread_rwlock_unlock(&rt.lock);
    return err;
}

int moat_pin(void *addr, size_t length)
{
    uintptr_t start, end;
    int err = check_range(addr, length, &start, &end);
    if (err)
        return err;
    if ((err = lazy_exact(start, end, false)) != 0)
        return err;
    pthread_rwlock_rdlock(&rt.lock);
    err = range_check_areas(start, end, false, 0);
    size_t need = 0;
    for (uintptr_t a = start; !err && a < end; a += M_PAGE_SIZE) {
        uint32_t f = atomic_load(&m_engine_page(m_engine_index(a))->flags);
        if (m_page_state(f) == M_PS_UNCOMMITTED)
            err = EACCES;
        else if (!(f & M_PF_PINNED))
            need++;
    }
    if (!err && m_engine.budget_pages &&
        atomic_load(&m_engine.c.unreclaimable) + need > m_engine.budget_pages - 1)
        err = ENOMEM;
    for (uintptr_t a = start; !err && a < end; a += M_PAGE_SIZE)
        err = m_fault_install(m_engine_index(a), true);
    pthread_rwlock_unlock(&rt.lock);
    return err;
}

int moat_unpin(void *addr, size_t length)
{
    uintptr_t start, end;
    int err = check_range(addr, length, &start, &end);
    if (err)
        return err;
    pthread_rwlock_rdlock(&rt.lock);
    err = range_check_areas(start, end, false, 0);
    for (uintptr_t a = start; !err && a < end; a += M_PAGE_SIZE) {
        size_t index = m_engine_index(a);
        struct m_page *p = m_engine_page(index);
        uint32_t f = m_page_lock(p);
        if ((f & M_PF_PINNED) && !(f & M_PF_TCS)) {
            f &= ~M_PF_PINNED;
            m_counter_sub(&m_engine.c.unreclaimable, 1);
            f = m_reclaim_track(index, f);
        }
        m_page_unlock(p, f);
    }
    pthread_rwlock_unlock(&rt.lock);
    return err;
}

size_t m_region_count(void)
{
    pthread_rwlock_rdlock(&rt.lock);
    size_t n = 0;
    for (size_t i = 0; i < rt.n; i++)
        n += !(rt.tab[i].flags & M_AREA_DYING);
    pthread_rwlock_unlock(&rt.lock);
    return n;
}

/* ------------------------------------------------------------------------
 * fork (see engine.c)
 * ---------------------------------------------------------------------- */

static bool fork_page_lost(uint32_t flags)
{
    unsigned st = m_page_state(flags);
    return st == M_PS_EVICTING || st == M_PS_EVICTED || st == M_PS_LOADING;
}

void m_region_fork_protect(void)
{
    uintptr_t high = atomic_load_explicit(&rt.high, memory_order_relaxed);
    if (high <= m_engine.base)
        return;
    size_t n = m_engine_index(high);
    size_t run = 0;
    for (size_t i = 0; i <= n; i++) {
        bool lost = i < n && fork_page_lost(atomic_load_explicit(&m_engine_page(i)->flags,
                                                                 memory_order_relaxed));
        if (lost) {
            run++;
        } else if (run) {
            mprotect((void *)m_engine_addr(i - run), run << M_PAGE_SHIFT, PROT_NONE);
            run = 0;
        }
    }
}

size_t m_region_fork_count(void)
{
    uintptr_t high = atomic_load_explicit(&rt.high, memory_order_relaxed);
    size_t n = high > m_engine.base ? m_engine_index(high) : 0, lost = 0;
    for (size_t i = 0; i < n; i++)
        lost +=
            fork_page_lost(atomic_load_explicit(&m_engine_page(i)->flags, memory_order_relaxed));
    return lost;
}

size_t m_region_fork_load(void)
{
    uintptr_t high = atomic_load_explicit(&rt.high, memory_order_relaxed);
    if (high <= m_engine.base)
        return 0;
    /* Counted as the drop in lost pages: a load reads ahead the evicted
     * pages after it in one store submission, so one call may install
     * several. */
    size_t before = m_region_fork_count();
    size_t n = m_engine_index(high);
    for (size_t i = 0; i < n; i++) {
        uint32_t f = atomic_load_explicit(&m_engine_page(i)->flags, memory_order_relaxed);
        if (fork_page_lost(f) && !(f & M_PF_BAD) && (m_page_prot(f) & MOAT_PROT_READ))
            (void)m_fault_install(i, false); /* pages in flight are waited for */
    }
    size_t after = m_region_fork_count();
    return before > after ? before - after : 0;
}

bool m_region_fork_lost(uintptr_t addr)
{
    return atomic_load(&m_engine_forked) && m_engine_contains(addr) &&
           fork_page_lost(atomic_load_explicit(&m_engine_page(m_engine_index(addr))->flags,
                                               memory_order_relaxed));
}
