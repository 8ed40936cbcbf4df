/*
 * page.c - a heap's pages: arenas, the chunk map, spans of free pages, and
 * the policy that gives free pages back.
 *
 * Free spans are kept in 64 bins by length (exact up to 32 pages, then one
 * bin per power of two), twice: "dirty" spans may hold committed pages (they
 * were in use and have not been decommitted since), "clean" spans read as
 * zeros and cost nothing.  Allocation takes a dirty span first (no page
 * faults, no decommit wasted), then a clean one; free spans coalesce with
 * neighbours in the same state.  A free span's head and tail descriptors
 * carry its length, so a span being freed finds its neighbours in O(1).
 *
 * Giving pages back.  Freed pages stay dirty up to an allowance (the
 * retain knob: 1/128 of the cap for capped heaps, else 1/64 of the pages in
 * use, at least 256 KiB).  Past it, the largest dirty spans of at least 16
 * pages are decommitted until half the allowance is left (small spans wait
 * to coalesce with their neighbours: a program freeing slab after slab in
 * random order gets a few large decommits, not thousands of one-page
 * ones).  With the background purger (purge.c) running, frees leave it
 * all to the purger, which takes the dirty pages down to half the
 * allowance once the burst is over (10 to 100 ms after the free that
 * crossed it), when the spans have coalesced.  Without it, frees purge at
 * most once every 10 ms, and at once past twice the allowance.  So a heap that frees and allocates
 * in waves does not decommit and re-fault the same pages on every wave (the hysteresis), and what a
 * program frees is back in the region within one wave, never more than twice the allowance late.  A
 * capped heap that runs short decommits everything dirty before it refuses memory.
 *
 * Commit accounting: committed = pages in use + dirty pages; the cap bounds
 * it.  All of this is under heap->page_lock.
 */
#include "alloc/alloc_int.h"

#include <errno.h>
#include <time.h>

/* The shortest time between two purges below the hard ceiling. */
#define M_ALLOC_PURGE_INTERVAL_NS (10ULL * 1000 * 1000)
/* Dirty spans shorter than this wait to coalesce (up to the ceiling). */
#define M_ALLOC_PURGE_MIN_PAGES 16

_Atomic(uintptr_t) m_alloc_chunk_map[M_ALLOC_NCHUNKS];
_Atomic uint8_t m_alloc_chunk_slot[M_ALLOC_NCHUNKS];

/* Arenas that share a chunk with another (caller regions are not aligned to
 * chunks); looked up by scanning. */
#define M_ODD_MAX 64
static _Atomic(struct m_alloc_arena *) odd_arenas[M_ODD_MAX];
static pthread_mutex_t chunk_lock = PTHREAD_MUTEX_INITIALIZER;

/* ------------------------------------------------------------------------
 * The chunk map
 * ---------------------------------------------------------------------- */

struct m_alloc_arena *m_alloc_arena_of_odd(uintptr_t a)
{
    for (int i = 0; i < M_ODD_MAX; i++) {
        struct m_alloc_arena *ar = atomic_load_explicit(&odd_arenas[i], memory_order_acquire);
        if (ar && a >= ar->base && a < ar->end)
            return ar;
    }
    return NULL;
}

static bool odd_add(struct m_alloc_arena *ar)
{
    int free_slot = -1;
    for (int i = 0; i < M_ODD_MAX; i++) {
        struct m_alloc_arena *x = atomic_load_explicit(&odd_arenas[i], memory_order_relaxed);
        if (x == ar)
            return true;
        if (!x && free_slot < 0)
            free_slot = i;
    }
    if (free_slot < 0)
        return false;
    atomic_store_explicit(&odd_arenas[free_slot], ar, memory_order_release);
    return true;
}

int m_alloc_chunk_register(struct m_alloc_arena *ar)
{
    uintptr_t first = (uintptr_t)ar >> M_ALLOC_CHUNK_SHIFT;
    uintptr_t last = ((uintptr_t)ar + ar->resv_nbytes - 1) >> M_ALLOC_CHUNK_SHIFT;
    if (last >= M_ALLOC_NCHUNKS)
        return EINVAL;
    pthread_mutex_lock(&chunk_lock);
    bool listed = false;
    if (ar->odd) {
        if (!odd_add(ar)) {
            pthread_mutex_unlock(&chunk_lock);
            return ENOSPC;
        }
        listed = true;
    }
    for (uintptr_t c = first; c <= last; c++) {
        uintptr_t e = atomic_load_explicit(&m_alloc_chunk_map[c], memory_order_relaxed);
        if (e == 0 && !ar->odd) {
            atomic_store_explicit(&m_alloc_chunk_map[c], (uintptr_t)ar | M_ALLOC_CHUNK_ARENA,
                                  memory_order_release);
            if (c << M_ALLOC_CHUNK_SHIFT == (uintptr_t)ar)
                atomic_store_explicit(&m_alloc_chunk_slot[c], (uint8_t)(ar->slot + 1),
                                      memory_order_release);
            continue;
        }
        /* shared chunk: both arenas go to the list, the chunk is tagged */
        if (e && !(e & 1) && !odd_add((struct m_alloc_arena *)(e & ~(uintptr_t)3))) {
            pthread_mutex_unlock(&chunk_lock);
            return ENOSPC;
        }
        if (!listed && !odd_add(ar)) {
            pthread_mutex_unlock(&chunk_lock);
            return ENOSPC;
        }
        listed = true;
        atomic_store_explicit(&m_alloc_chunk_map[c], (uintptr_t)1, memory_order_release);
    }
    pthread_mutex_unlock(&chunk_lock);
    return 0;
}

void m_alloc_chunk_unregister(struct m_alloc_arena *ar)
{
    uintptr_t first = (uintptr_t)ar >> M_ALLOC_CHUNK_SHIFT;
    uintptr_t last = ((uintptr_t)ar + ar->resv_nbytes - 1) >> M_ALLOC_CHUNK_SHIFT;
    pthread_mutex_lock(&chunk_lock);
    for (uintptr_t c = first; c <= last && c < M_ALLOC_NCHUNKS; c++)
        if (atomic_load_explicit(&m_alloc_chunk_map[c], memory_order_relaxed) ==
            ((uintptr_t)ar | M_ALLOC_CHUNK_ARENA)) {
            atomic_store_explicit(&m_alloc_chunk_slot[c], 0, memory_order_release);
            atomic_store_explicit(&m_alloc_chunk_map[c], 0, memory_order_release);
        }
    for (int i = 0; i < M_ODD_MAX; i++)
        if (atomic_load_explicit(&odd_arenas[i], memory_order_relaxed) == ar)
            atomic_store_explicit(&odd_arenas[i], NULL, memory_order_release);
    pthread_mutex_unlock(&chunk_lock);
}

/* ------------------------------------------------------------------------
 * Free spans
 * ---------------------------------------------------------------------- */

static unsigned freebin(size_t npages)
{
    if (npages <= 32)
        return (unsigned)npages - 1;
    unsigned k = 63u - (unsigned)__builtin_clzll((unsigned long long)npages);
    unsigned b = 32u + k - 5u;
    return b < M_ALLOC_NFREEBINS ? b : M_ALLOC_NFREEBINS - 1;
}

static inline bool span_dirty(const struct m_alloc_page *head)
{
    return (head->flags & M_ALLOC_SPAN_DIRTY) != 0;
}

static void bin_insert(struct moat_heap *h, struct m_alloc_page *head)
{
    struct m_alloc_page **bin = &h->free_bins[span_dirty(head)][freebin(head->npages)];
    head->prev = NULL;
    head->next = *bin;
    if (*bin)
        (*bin)->prev = head;
    *bin = head;
}

static void bin_remove(struct moat_heap *h, struct m_alloc_page *head)
{
    if (head->prev)
        head->prev->next = head->next;
    else
        h->free_bins[span_dirty(head)][freebin(head->npages)] = head->next;
    if (head->next)
        head->next->prev = head->prev;
    head->next = head->prev = NULL;
}

/* Make pages [head, head + npages) one free span (not yet in a bin). */
static void span_mark_free(struct m_alloc_arena *ar, struct m_alloc_page *head, size_t npages,
                           bool dirty)
{
    struct m_alloc_pmap *pm = m_alloc_pmap_of(ar, head);
    pm->kind = M_ALLOC_PK_FREE;
    pm->cls = 0;
    pm->off_bytes = 0;
    pm[npages - 1].kind = M_ALLOC_PK_FREE;
    pm[npages - 1].cls = 0;
    head->kind = M_ALLOC_PK_FREE;
    head->offset = 0;
    head->npages = (uint32_t)npages;
    head->flags = dirty ? M_ALLOC_SPAN_DIRTY : 0;
    head->cls = 0;
    head->bucket = 0;
    atomic_store_explicit(&head->bumped, 0, memory_order_relaxed);
    head->used = 0;
    head->free = 0;
    struct m_alloc_page *tail = head + npages - 1;
    if (tail != head) {
        tail->kind = M_ALLOC_PK_FREE;
        tail->offset = (uint32_t)(npages - 1);
        tail->npages = 0;
    }
}

/* Coalesce the free span at head with free neighbours of the same state,
 * then bin it.  Returns the head of the merged span. */
static struct m_alloc_page *span_coalesce(struct moat_heap *h, struct m_alloc_arena *ar,
                                          struct m_alloc_page *head)
{
    bool dirty = span_dirty(head);
    size_t idx = (size_t)(head - ar->pages);
    size_t n = head->npages;
    if (idx > ar->first && ar->pages[idx - 1].kind == M_ALLOC_PK_FREE) {
        struct m_alloc_page *left = &ar->pages[idx - 1] - ar->pages[idx - 1].offset;
        if (span_dirty(left) == dirty && left->npages) {
            bin_remove(h, left);
            n += left->npages;
            idx -= left->npages;
            head = left;
        }
    }
    size_t right_idx = idx + n;
    if (right_idx < ar->npages && ar->pages[right_idx].kind == M_ALLOC_PK_FREE) {
        struct m_alloc_page *right = &ar->pages[right_idx];
        if (right->offset == 0 && right->npages && span_dirty(right) == dirty) {
            bin_remove(h, right);
            n += right->npages;
        }
    }
    span_mark_free(ar, head, n, dirty);
    bin_insert(h, head);
    return head;
}

void m_alloc_set_span_pages(struct m_alloc_arena *ar, struct m_alloc_page *head, uint8_t kind,
                            uint8_t cls)
{
    size_t n = head->npages;
    struct m_alloc_pmap *pm = m_alloc_pmap_of(ar, head);
    for (size_t i = 0; i < n; i++) {
        struct m_alloc_page *pg = head + i;
        pg->kind = kind;
        pg->cls = cls;
        pg->offset = (uint32_t)i;
        pm[i].kind = kind;
        pm[i].cls = kind == M_ALLOC_PK_SLAB ? (uint8_t)(cls + 1) : 0;
        pm[i].off_bytes = (uint32_t)(i << M_ALLOC_PAGE_SHIFT);
    }
}

/* ------------------------------------------------------------------------
 * Arenas
 * ---------------------------------------------------------------------- */

static size_t round_up(size_t v, size_t a)
{
    return (v + a - 1) & ~(a - 1);
}

static void heap_widen(struct moat_heap *h, uintptr_t lo, uintptr_t end)
{
    /* Readers check links against [lo, lo + span) without the lock: move
     * so that every intermediate state covers all older arenas. */
    uintptr_t old_lo = atomic_load_explicit(&h->lo, memory_order_relaxed);
    uintptr_t old_span = atomic_load_explicit(&h->span, memory_order_relaxed);
    if (old_span == 0) {
        atomic_store_explicit(&h->span, end - lo, memory_order_relaxed);
        atomic_store_explicit(&h->lo, lo, memory_order_release);
        return;
    }
    uintptr_t old_end = old_lo + old_span;
    uintptr_t new_lo = lo < old_lo ? lo : old_lo;
    uintptr_t new_end = end > old_end ? end : old_end;
    atomic_store_explicit(&h->span, new_end - new_lo, memory_order_relaxed);
    atomic_store_explicit(&h->lo, new_lo, memory_order_release);
}

/* Set up the header and descriptors of a reservation of total_pages whose
 * data starts after the descriptors for ndesc pages. */
static struct m_alloc_arena *arena_init(struct moat_heap *h, void *resv, size_t total_pages,
                                        size_t ndesc, bool odd)
{
    struct m_alloc_arena *ar = resv;
    size_t pmap_at = M_ALLOC_PMAP_AT; /* free's fast path relies on it */
    size_t pages_at = round_up(pmap_at + ndesc * sizeof(struct m_alloc_pmap), 64);
    size_t meta = round_up(pages_at + ndesc * sizeof(struct m_alloc_page), M_ALLOC_PAGE);
    ar->pmap = (struct m_alloc_pmap *)((uintptr_t)resv + pmap_at);
    ar->pages = (struct m_alloc_page *)((uintptr_t)resv + pages_at);
    ar->heap = h;
    ar->heap_id = h->id;
    ar->slot = h->slot;
    ar->first = meta / M_ALLOC_PAGE;
    ar->npages = total_pages;
    ar->base = (uintptr_t)resv + meta;
    ar->end = (uintptr_t)resv + total_pages * M_ALLOC_PAGE;
    ar->resv_nbytes = total_pages * M_ALLOC_PAGE;
    ar->odd = odd;
    ar->huge = false;
    ar->next = NULL;
    for (size_t i = 0; i < ar->first; i++) {
        ar->pages[i].kind = M_ALLOC_PK_META;
        ar->pmap[i].kind = M_ALLOC_PK_META;
    }
    h->meta_bytes += M_ALLOC_PAGE; /* the header; descriptors are counted as used */
    return ar;
}

/*
 * m_alloc_arena_add - a new normal arena (a chunk, or less for a capped
 * heap that needs less), the caller's region for a heap made on one, or a
 * huge arena of at least min_data_pages when huge is set.  Page lock held.
 */
int m_alloc_arena_add(struct moat_heap *h, size_t min_data_pages, bool huge,
                      struct m_alloc_arena **out)
{
    size_t desc = M_ALLOC_DESC_BYTES;
    size_t hdr = sizeof(struct m_alloc_arena) + 128; /* + alignment of the two arrays */
    void *resv = NULL;
    struct m_alloc_arena *ar;
    int err;
    if (h->src.region) {
        /* the caller's region is all there is */
        if (h->odd_arena)
            return ENOMEM;
        size_t total = h->src.region_nbytes / M_ALLOC_PAGE;
        if (round_up(hdr + total * desc, M_ALLOC_PAGE) / M_ALLOC_PAGE + min_data_pages > total)
            return ENOMEM;
        err = h->src.reserve(&h->src, h->src.region_nbytes, M_ALLOC_PAGE, &resv);
        if (err)
            return err;
        ar = arena_init(h, resv, total, total, true);
        h->odd_arena = ar;
    } else if (huge) {
        size_t total = min_data_pages + 1;
        while (round_up(hdr + total * desc, M_ALLOC_PAGE) / M_ALLOC_PAGE + min_data_pages > total)
            total++;
        if (total > UINT32_MAX)
            return ENOMEM;
        err = h->src.reserve(&h->src, total * M_ALLOC_PAGE, M_ALLOC_CHUNK, &resv);
        if (err)
            return err;
        ar = arena_init(h, resv, total, total < M_ALLOC_CHUNK_PAGES ? M_ALLOC_CHUNK_PAGES : total,
                        false);
        ar->huge = true;
    } else {
        size_t meta = round_up(hdr + M_ALLOC_CHUNK_PAGES * desc, M_ALLOC_PAGE) / M_ALLOC_PAGE;
        size_t total = M_ALLOC_CHUNK_PAGES;
        if (h->limit_pages != SIZE_MAX && h->narenas == 0 && meta + h->limit_pages < total)
            total = meta + h->limit_pages; /* a small capped heap: no more than its cap */
        if (meta + min_data_pages > total)
            return ENOMEM;
        err = h->src.reserve(&h->src, total * M_ALLOC_PAGE, M_ALLOC_CHUNK, &resv);
        if (err)
            return err;
        ar = arena_init(h, resv, total, M_ALLOC_CHUNK_PAGES, false);
    }
    err = m_alloc_chunk_register(ar);
    if (err) {
        if (h->src.region) {
            h->src.region_taken = false;
            h->odd_arena = NULL;
        } else {
            h->src.release(&h->src, resv, ar->resv_nbytes);
        }
        return err;
    }
    heap_widen(h, ar->base, ar->end);
    if (huge) {
        ar->next = h->huge;
        h->huge = ar;
    } else {
        if (ar != h->odd_arena) {
            ar->next = h->arenas;
            h->arenas = ar;
        }
        h->narenas++;
        span_mark_free(ar, &ar->pages[ar->first], ar->npages - ar->first, false);
        bin_insert(h, &ar->pages[ar->first]);
    }
    *out = ar;
    return 0;
}

static void arena_release(struct moat_heap *h, struct m_alloc_arena *ar)
{
    size_t nbytes = ar->resv_nbytes;
    m_alloc_chunk_unregister(ar);
    if (ar->odd)
        h->src.release(&h->src, ar, nbytes); /* the caller's: uncommitted, kept */
    else
        h->src.release(&h->src, ar, nbytes);
}

/* A huge object is freed: its arena goes back at once (page lock held). */
void m_alloc_huge_release(struct moat_heap *h, struct m_alloc_arena *ar, size_t npages)
{
    struct m_alloc_arena **pp = &h->huge;
    while (*pp && *pp != ar)
        pp = &(*pp)->next;
    if (*pp)
        *pp = ar->next;
    h->pages_used -= npages;
    h->meta_bytes -= M_ALLOC_PAGE;
    arena_release(h, ar);
}

void m_alloc_arenas_release(struct moat_heap *h)
{
    struct m_alloc_arena *lists[2] = {h->arenas, h->huge};
    h->arenas = h->huge = NULL;
    for (int i = 0; i < 2; i++) {
        struct m_alloc_arena *ar = lists[i];
        while (ar) {
            struct m_alloc_arena *next = ar->next;
            arena_release(h, ar);
            ar = next;
        }
    }
    if (h->odd_arena) {
        arena_release(h, h->odd_arena);
        h->odd_arena = NULL;
    }
}

/* ------------------------------------------------------------------------
 * Allocating and freeing spans
 * ---------------------------------------------------------------------- */

static size_t committed_pages(const struct moat_heap *h)
{
    return h->pages_used + h->pages_dirty;
}

/* First page index >= idx whose address is aligned to align_pages. */
static size_t align_index(const struct m_alloc_arena *ar, size_t idx, size_t align_pages)
{
    if (align_pages <= 1)
        return idx;
    uintptr_t pfn = ((uintptr_t)ar >> M_ALLOC_PAGE_SHIFT) + idx;
    uintptr_t aligned = (pfn + align_pages - 1) & ~((uintptr_t)align_pages - 1);
    return idx + (size_t)(aligned - pfn);
}

/* Find a free span of state `dirty` that fits; NULL if none.  Range bins
 * are scanned for at most 32 spans before moving to a larger bin. */
static struct m_alloc_page *span_find(struct moat_heap *h, bool dirty, size_t npages,
                                      size_t align_pages, struct m_alloc_arena **arp,
                                      size_t *startp)
{
    for (unsigned b = freebin(npages); b < M_ALLOC_NFREEBINS; b++) {
        int scanned = 0;
        for (struct m_alloc_page *s = h->free_bins[dirty][b]; s && scanned < 32;
             s = s->next, scanned++) {
            if (s->npages < npages)
                continue;
            struct m_alloc_arena *ar = m_alloc_arena_of_desc(h, s);
            size_t idx = (size_t)(s - ar->pages);
            size_t start = align_index(ar, idx, align_pages);
            if (start + npages > idx + s->npages)
                continue;
            *arp = ar;
            *startp = start;
            return s;
        }
    }
    return NULL;
}

/* Carve [start, start + npages) out of free span s; the rest stays free. */
static struct m_alloc_page *span_carve(struct moat_heap *h, struct m_alloc_arena *ar,
                                       struct m_alloc_page *s, size_t start, size_t npages)
{
    bool dirty = span_dirty(s);
    size_t idx = (size_t)(s - ar->pages);
    size_t n = s->npages;
    bin_remove(h, s);
    if (start > idx) {
        span_mark_free(ar, &ar->pages[idx], start - idx, dirty);
        bin_insert(h, &ar->pages[idx]);
    }
    size_t tail = idx + n - (start + npages);
    if (tail) {
        span_mark_free(ar, &ar->pages[start + npages], tail, dirty);
        bin_insert(h, &ar->pages[start + npages]);
    }
    struct m_alloc_page *head = &ar->pages[start];
    head->npages = (uint32_t)npages;
    head->offset = 0;
    head->flags = dirty ? 0 : M_ALLOC_LARGE_ZERO;
    h->carves++;
    if (dirty)
        h->pages_dirty -= npages;
    h->pages_used += npages;
    if (h->pages_used > h->peak_pages_used)
        h->peak_pages_used = h->pages_used;
    if (committed_pages(h) > h->peak_pages_committed)
        h->peak_pages_committed = committed_pages(h);
    return head;
}

struct m_alloc_page *m_alloc_span_alloc(struct moat_heap *h, size_t npages, size_t align_pages,
                                        bool *zero, struct m_alloc_arena **arp)
{
    struct m_alloc_arena *ar = NULL;
    size_t start = 0;
    struct m_alloc_page *s = span_find(h, true, npages, align_pages, &ar, &start);
    if (!s) {
        bool capped = h->limit_pages != SIZE_MAX;
        if (capped && committed_pages(h) + npages > h->limit_pages)
            m_alloc_purge(h, 0);
        if (capped && committed_pages(h) + npages > h->limit_pages)
            return NULL;
        s = span_find(h, false, npages, align_pages, &ar, &start);
        if (!s && capped && h->pages_dirty) {
            /* dirty and clean neighbours do not coalesce: merge them all */
            m_alloc_purge(h, 0);
            s = span_find(h, false, npages, align_pages, &ar, &start);
        }
        if (!s) {
            /* a new normal arena: capped heaps too (the cap bounds committed
             * pages, not address space), but not a heap on a caller's region */
            if (h->src.region || m_alloc_arena_add(h, npages + align_pages, false, &ar) != 0)
                return NULL;
            s = span_find(h, false, npages, align_pages, &ar, &start);
            if (!s)
                return NULL;
        }
    }
    struct m_alloc_page *head = span_carve(h, ar, s, start, npages);
    *zero = (head->flags & M_ALLOC_LARGE_ZERO) != 0;
    *arp = ar;
    return head;
}

static void purge_after_free(struct moat_heap *h, size_t retain, size_t ceiling);

void m_alloc_span_free(struct moat_heap *h, struct m_alloc_arena *ar, struct m_alloc_page *head)
{
    size_t n = head->npages;
    struct m_alloc_pmap *pm = m_alloc_pmap_of(ar, head);
    for (size_t i = 0; i < n; i++) {
        head[i].kind = M_ALLOC_PK_FREE;
        pm[i].kind = M_ALLOC_PK_FREE;
        pm[i].cls = 0; /* free's fast path then turns the page away */
    }
    h->pages_used -= n;
    h->pages_dirty += n;
    span_mark_free(ar, head, n, true);
    span_coalesce(h, ar, head);
    size_t retain = m_alloc_retain_pages(h);
    if (h->pages_dirty > retain && m_alloc_purger_running()) {
        /* the purger takes them, coalesced by then, within 100 ms */
        atomic_store_explicit(&m_alloc_purge_wanted, 1, memory_order_relaxed);
    } else if (h->pages_dirty > retain) {
        /* no purger (yet): ask for one; until then at most one purge per
         * interval, unless twice the allowance sits free */
        atomic_store_explicit(&m_alloc_purge_wanted, 1, memory_order_relaxed);
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
        uint64_t now = (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
        if (h->pages_dirty > 2 * retain || now - h->last_purge_ns >= M_ALLOC_PURGE_INTERVAL_NS) {
            h->last_purge_ns = now;
            purge_after_free(h, retain, 2);
        }
    }
}

void m_alloc_span_shrink(struct moat_heap *h, struct m_alloc_arena *ar, struct m_alloc_page *head,
                         size_t npages)
{
    size_t n = head->npages;
    if (npages >= n)
        return;
    struct m_alloc_page *rest = head + npages;
    head->npages = (uint32_t)npages;
    rest->npages = (uint32_t)(n - npages);
    rest->offset = 0;
    m_alloc_span_free(h, ar, rest);
}

bool m_alloc_span_grow(struct moat_heap *h, struct m_alloc_arena *ar, struct m_alloc_page *head,
                       size_t npages)
{
    size_t n = head->npages;
    size_t idx = (size_t)(head - ar->pages);
    size_t more = npages - n;
    size_t right_idx = idx + n;
    if (right_idx >= ar->npages)
        return false;
    struct m_alloc_page *right = &ar->pages[right_idx];
    if (right->kind != M_ALLOC_PK_FREE || right->offset != 0 || right->npages < more)
        return false;
    bool dirty = span_dirty(right);
    if (!dirty && h->limit_pages != SIZE_MAX && committed_pages(h) + more > h->limit_pages)
        return false;
    span_carve(h, ar, right, right_idx, more);
    head->npages = (uint32_t)npages;
    struct m_alloc_pmap *pm = m_alloc_pmap_of(ar, head);
    for (size_t i = n; i < npages; i++) {
        head[i].kind = M_ALLOC_PK_LARGE;
        head[i].cls = 0;
        head[i].offset = (uint32_t)i;
        pm[i].kind = M_ALLOC_PK_LARGE;
        pm[i].cls = 0;
        pm[i].off_bytes = (uint32_t)(i << M_ALLOC_PAGE_SHIFT);
    }
    /* pages of a dirty neighbour may hold old data */
    if (dirty)
        head->flags &= (uint8_t)~M_ALLOC_LARGE_ZERO;
    return true;
}

/* ------------------------------------------------------------------------
 * Giving pages back
 * ---------------------------------------------------------------------- */

size_t m_alloc_retain_pages(const struct moat_heap *h)
{
    if (h->retain_bytes)
        return h->retain_bytes / M_ALLOC_PAGE;
    size_t floor = (256u << 10) / M_ALLOC_PAGE;
    size_t v = h->limit_pages != SIZE_MAX ? h->limit_pages / 128 : h->pages_used / 64;
    if (h->retain_hint) {
        size_t x = h->retain_hint();
        v = x > v ? x : v;
    }
    return v > floor ? v : floor;
}

/* Spans decommitted together: their frames go in one call to the source
 * (decommit_many) where it can, one TLB shootdown of the other CPUs running
 * the program instead of one a span.  The 8-thread program of
 * bench/programs.sh purged 11.7k spans of 4.4 pages on average in 127
 * purges: 11.7k madvise calls, each interrupting the other CPU. */
#define PURGE_BATCH      32
#define PURGE_BATCH_PAGE 1024 /* pages a batch, at most (released before they are zapped) */

/* Decommit dirty span s on its own and turn it clean; false if the source
 * refused (the span stays dirty, back in its bin). */
static bool purge_span(struct moat_heap *h, struct m_alloc_page *s);

/* The descriptors of a free span's inner pages are never read (only its
 * head and tail are), and zeros describe a free page: the ranges of whole
 * descriptor pages they fill, appended to r (at most two), which the caller
 * gives back, or a heap that once peaked keeps 1% of its peak in
 * descriptors. */
static size_t desc_ranges(struct m_alloc_arena *ar, struct m_alloc_page *s, struct iovec *r)
{
    struct m_alloc_pmap *pm = m_alloc_pmap_of(ar, s);
    uintptr_t ranges[2][2] = {{(uintptr_t)(s + 1), (uintptr_t)(s + s->npages - 1)},
                              {(uintptr_t)(pm + 1), (uintptr_t)(pm + s->npages - 1)}};
    size_t k = 0;
    for (int i = 0; i < 2; i++) {
        uintptr_t lo = (ranges[i][0] + M_ALLOC_PAGE - 1) & ~(uintptr_t)(M_ALLOC_PAGE - 1);
        uintptr_t hi = ranges[i][1] & ~(uintptr_t)(M_ALLOC_PAGE - 1);
        if (hi > lo)
            r[k++] = (struct iovec){.iov_base = (void *)lo, .iov_len = hi - lo};
    }
    return k;
}

/* A span whose pages are decommitted: count it, mark it clean, coalesce it
 * with its clean neighbours; its descriptor ranges are appended to r. */
static size_t purged(struct moat_heap *h, struct m_alloc_page *s, struct iovec *r)
{
    struct m_alloc_arena *ar = m_alloc_arena_of_desc(h, s);
    size_t n = s->npages;
    h->pages_dirty -= n;
    h->decommitted_pages += n;
    span_mark_free(ar, s, n, false);
    s = span_coalesce(h, ar, s);
    return desc_ranges(ar, s, r);
}

static void decommit_ranges(struct moat_heap *h, const struct iovec *r, size_t n)
{
    if (!n)
        return;
    if (n > 1 && h->src.decommit_many && h->src.decommit_many(&h->src, r, n) == 0)
        return;
    for (size_t i = 0; i < n; i++)
        h->src.decommit(&h->src, r[i].iov_base, r[i].iov_len);
}

static bool purge_span(struct moat_heap *h, struct m_alloc_page *s)
{
    struct m_alloc_arena *ar = m_alloc_arena_of_desc(h, s);
    size_t n = s->npages;
    int err = h->src.decommit(&h->src, (void *)m_alloc_page_addr(ar, s), n * M_ALLOC_PAGE);
    if (err) {
        /* the pages keep their data: they must stay dirty */
        m_alloc_warn("cannot decommit free pages", "they stay committed", err);
        bin_insert(h, s);
        return false;
    }
    h->decommit_calls++;
    struct iovec r[2];
    decommit_ranges(h, r, purged(h, s, r));
    return true;
}

/* Decommit the n dirty spans of batch (taken out of their bins): all at
 * once where the source can, else one by one.  Under the page lock, so
 * nobody takes the spans before they are clean.  False if a span could not
 * be decommitted (it is back in its bin, dirty). */
static bool purge_batch(struct moat_heap *h, struct m_alloc_page **batch, size_t n)
{
    struct iovec r[PURGE_BATCH];
    for (size_t i = 0; i < n; i++) {
        struct m_alloc_arena *ar = m_alloc_arena_of_desc(h, batch[i]);
        r[i] = (struct iovec){.iov_base = (void *)m_alloc_page_addr(ar, batch[i]),
                              .iov_len = batch[i]->npages * M_ALLOC_PAGE};
    }
    if (n < 2 || !h->src.decommit_many || h->src.decommit_many(&h->src, r, n) != 0) {
        bool ok = true;
        for (size_t i = 0; i < n; i++)
            ok = purge_span(h, batch[i]) && ok;
        return ok;
    }
    h->decommit_calls++;
    struct iovec d[2 * PURGE_BATCH];
    size_t nd = 0;
    for (size_t i = 0; i < n; i++)
        nd += purged(h, batch[i], d + nd);
    decommit_ranges(h, d, nd);
    return true;
}

/* Purge the largest dirty spans, in batches, while the heap holds more
 * than `target` dirty pages; with `min_pages`, stop at the first span
 * smaller than that while no more than `ceiling` dirty pages are held. */
static void purge_largest(struct moat_heap *h, size_t target, size_t min_pages, size_t ceiling)
{
    while (h->pages_dirty > target) {
        struct m_alloc_page *batch[PURGE_BATCH];
        size_t n = 0, taken = 0;
        while (n < PURGE_BATCH && taken < PURGE_BATCH_PAGE && h->pages_dirty - taken > target) {
            struct m_alloc_page *s = NULL;
            for (int b = M_ALLOC_NFREEBINS - 1; b >= 0 && !s; b--)
                s = h->free_bins[1][b];
            if (!s || (s->npages < min_pages && h->pages_dirty - taken <= ceiling))
                break;
            bin_remove(h, s);
            batch[n++] = s;
            taken += s->npages;
        }
        if (!n || !purge_batch(h, batch, n))
            break;
    }
}

void m_alloc_purge(struct moat_heap *h, size_t target_dirty_pages)
{
    purge_largest(h, target_dirty_pages, 0, 0);
}

/* The purge after a free: spans of at least M_ALLOC_PURGE_MIN_PAGES only,
 * largest first.  Pages freed one slab at a time in random order come back
 * as one-page spans that coalesce as their neighbours are freed: waiting
 * for them to grow turns thousands of one-page decommits into a few large
 * ones.  Smaller spans go too once the dirty pages pass the ceiling. */
static void purge_after_free(struct moat_heap *h, size_t retain, size_t ceiling)
{
    purge_largest(h, retain / 2, M_ALLOC_PURGE_MIN_PAGES, ceiling * retain);
}
