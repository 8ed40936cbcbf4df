/*
 * heap.c - heaps and the public allocation functions: creating and
 * destroying heaps, the built-in default heap, the malloc family on top of
 * the fast paths of alloc_int.h, large objects, and statistics.
 *
 * Large objects (> 32 KiB) are spans of whole pages straight from the page
 * allocator, under the heap's page lock; their request is kept in the span
 * head, so their statistics are exact.  realloc grows and shrinks them in
 * place when the neighbouring pages allow.
 *
 * Running short.  A capped heap that cannot find pages "relieves" itself
 * once before it fails: it asks every thread to flush its cache (the
 * `pressure` counter), flushes its own, drains every class and decommits all
 * free pages (which also merges dirty and clean free spans), then retries.
 */
#include "alloc/alloc_int.h"
#include "common/size.h"

#ifndef M_ALLOC_STANDALONE
#include <moat.h>
#endif

#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

struct m_alloc_global m_alloc_global = {.lock = PTHREAD_MUTEX_INITIALIZER};
_Atomic(struct moat_heap *) m_alloc_default_heap;

/* The built-in default heap lives in static storage: creating it allocates
 * nothing, so the drop-in's first malloc cannot recurse. */
static struct moat_heap builtin_heap;

void (*m_alloc_foreign_free)(void *p);
size_t (*m_alloc_foreign_usable)(const void *p);

struct moat_heap *m_alloc_builtin(void)
{
    m_alloc_global_init();
    return &builtin_heap;
}

/* ------------------------------------------------------------------------
 * Set-up
 * ---------------------------------------------------------------------- */

uint64_t m_alloc_random(void)
{
    uint64_t v = 0;
    if (syscall(SYS_getrandom, &v, sizeof v, 0x1 /* GRND_NONBLOCK */) != (long)sizeof v) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        v = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32) ^ (uint64_t)(uintptr_t)&v;
    }
    /* splitmix64: spread the bits whatever the source */
    v += 0x9e3779b97f4a7c15ULL;
    v = (v ^ (v >> 30)) * 0xbf58476d1ce4e5b9ULL;
    v = (v ^ (v >> 27)) * 0x94d049bb133111ebULL;
    return v ^ (v >> 31);
}

static size_t env_size(const char *name)
{
    const char *s = getenv(name);
    size_t v = 0;
    if (s && *s && m_size_parse(s, &v) != 0) {
        m_alloc_warn("ignoring a malformed size (use e.g. 64M) in", name, EINVAL);
        v = 0;
    }
    return v;
}

static void heap_unslot(struct moat_heap *h)
{
    pthread_mutex_lock(&m_alloc_global.lock);
    if (h->slot != M_ALLOC_NO_SLOT)
        m_alloc_global.slots_used &= ~(1u << h->slot);
    h->slot = M_ALLOC_NO_SLOT;
    pthread_mutex_unlock(&m_alloc_global.lock);
}

static int heap_init(struct moat_heap *h, size_t limit, size_t tcache, size_t retain)
{
    struct m_alloc_global *g = &m_alloc_global;
    h->id = atomic_fetch_add_explicit(&g->next_id, 1, memory_order_relaxed);
    for (int i = 0; i < 2; i++) {
        h->key[i] = (uintptr_t)m_alloc_random();
        if (h->key[i] == 0)
            h->key[i] = 0x5bd1e995u;
    }
    atomic_init(&h->lo, 0);
    atomic_init(&h->span, 0);
    h->limit_pages = limit ? limit / M_ALLOC_PAGE : SIZE_MAX;
    h->xfer_bytes = m_alloc_xfer_bytes(limit);
    h->tcache_bytes = tcache;
    h->retain_bytes = retain;
    atomic_init(&h->pressure, 0);
    atomic_init(&h->ntcaches, 0);
    atomic_init(&h->alloc_failures, 0);
    m_alloc_lock_init(&h->page_lock);
    for (unsigned c = 0; c < M_ALLOC_NCLASSES; c++)
        m_alloc_class_init(&h->classes[c]);
    h->meta_bytes = h->builtin ? 0 : sizeof *h;

    pthread_mutex_lock(&g->lock);
    h->slot = M_ALLOC_NO_SLOT;
    for (int s = 0; s < M_ALLOC_TLS_SLOTS; s++) {
        if (!(g->slots_used & (1u << s))) {
            g->slots_used |= 1u << s;
            h->slot = s;
            break;
        }
    }
    pthread_mutex_unlock(&g->lock);

    /* capped heaps and heaps on a region get their first arena now, so a
     * bad cap or region fails here rather than at the first malloc */
    if (h->limit_pages != SIZE_MAX || h->src.region) {
        struct m_alloc_arena *ar;
        m_alloc_lock(&h->page_lock);
        int err = m_alloc_arena_add(h, 1, false, &ar);
        m_alloc_unlock(&h->page_lock);
        if (err) {
            heap_unslot(h);
            return err;
        }
        if (h->src.region && h->limit_pages > ar->npages - ar->first)
            h->limit_pages = ar->npages - ar->first;
        h->xfer_bytes = m_alloc_xfer_bytes(h->limit_pages * M_ALLOC_PAGE);
    }

    pthread_mutex_lock(&g->lock);
    h->next_heap = g->heaps;
    g->heaps = h;
    pthread_mutex_unlock(&g->lock);
    return 0;
}

static void fork_prepare(void)
{
    m_alloc_purger_fork_prepare();
    pthread_mutex_lock(&m_alloc_global.lock);
    for (struct moat_heap *h = m_alloc_global.heaps; h; h = h->next_heap) {
        for (unsigned c = 0; c < M_ALLOC_NCLASSES; c++)
            m_alloc_lock(&h->classes[c].lock);
        m_alloc_lock(&h->page_lock);
    }
}

static void fork_release(void)
{
    for (struct moat_heap *h = m_alloc_global.heaps; h; h = h->next_heap) {
        m_alloc_unlock(&h->page_lock);
        for (unsigned c = M_ALLOC_NCLASSES; c-- > 0;)
            m_alloc_unlock(&h->classes[c].lock);
    }
    pthread_mutex_unlock(&m_alloc_global.lock);
}

static void fork_parent(void)
{
    fork_release();
    m_alloc_purger_fork_parent();
}

static void fork_child(void)
{
    fork_release();
    m_alloc_purger_fork_child();
    m_alloc_tcache_fork_child();
}

void m_alloc_global_init(void)
{
    struct m_alloc_global *g = &m_alloc_global;
    if (atomic_load_explicit(&g->state, memory_order_acquire) == 2)
        return;
    int expected = 0;
    if (!atomic_compare_exchange_strong(&g->state, &expected, 1)) {
        while (atomic_load_explicit(&g->state, memory_order_acquire) != 2)
            sched_yield();
        return;
    }
    m_alloc_classes_init();
    atomic_store_explicit(&g->next_id, 1, memory_order_relaxed);
    if (pthread_key_create(&g->key, m_alloc_thread_exit) != 0)
        m_alloc_die("moat allocator: cannot create the thread-exit key", NULL, "out of keys");

    struct moat_heap *h = &builtin_heap;
    h->builtin = true;
    m_alloc_source_mmap(&h->src);
    int err = heap_init(h, env_size("MOAT_ALLOC_LIMIT"), env_size("MOAT_ALLOC_TCACHE"),
                        env_size("MOAT_ALLOC_RETAIN"));
    if (err)
        m_alloc_die("moat allocator: cannot reserve the default heap (MOAT_ALLOC_LIMIT)", NULL,
                    "mmap failed");
    atomic_store_explicit(&m_alloc_default_heap, h, memory_order_release);
    atomic_store_explicit(&g->state, 2, memory_order_release);
    /* after the state is ready: pthread_atfork may itself call malloc */
    pthread_atfork(fork_prepare, fork_parent, fork_child);
}

struct moat_heap *m_alloc_default_slow(void)
{
    m_alloc_global_init();
    return atomic_load_explicit(&m_alloc_default_heap, memory_order_acquire);
}

/* ------------------------------------------------------------------------
 * Running short
 * ---------------------------------------------------------------------- */

static bool heap_relieve(struct moat_heap *h)
{
    if (h->limit_pages == SIZE_MAX && !h->src.region)
        return false;
    atomic_fetch_add_explicit(&h->pressure, 1, memory_order_relaxed);
    struct m_alloc_tcache *tc = m_alloc_tls_cache(h->slot);
    if (tc && atomic_load_explicit(&tc->heap_id, memory_order_relaxed) == h->id) {
        tc->pressure_seen = atomic_load_explicit(&h->pressure, memory_order_relaxed);
        m_alloc_tcache_flush(tc);
    }
    m_alloc_drain_all(h, true);
    m_alloc_lock(&h->page_lock);
    m_alloc_purge(h, 0);
    m_alloc_unlock(&h->page_lock);
    return true;
}

static void *alloc_failed(struct moat_heap *h)
{
    atomic_fetch_add_explicit(&h->alloc_failures, 1, memory_order_relaxed);
    errno = ENOMEM;
    return NULL;
}

/* ------------------------------------------------------------------------
 * Large objects
 * ---------------------------------------------------------------------- */

/* An object too big for a normal arena: an arena of its own (page lock
 * held).  Its pages are fresh, so they read as zero. */
static struct m_alloc_page *huge_alloc(struct moat_heap *h, size_t npages, size_t align_pages,
                                       bool *zero, struct m_alloc_arena **arp)
{
    if (h->limit_pages != SIZE_MAX) {
        if (h->pages_used + h->pages_dirty + npages > h->limit_pages)
            m_alloc_purge(h, 0);
        if (h->pages_used + h->pages_dirty + npages > h->limit_pages)
            return NULL;
    }
    struct m_alloc_arena *ar;
    if (m_alloc_arena_add(h, npages + align_pages - 1, true, &ar) != 0)
        return NULL;
    size_t start = ar->first;
    if (align_pages > 1) {
        uintptr_t pfn = ((uintptr_t)ar >> M_ALLOC_PAGE_SHIFT) + start;
        start += (size_t)(((pfn + align_pages - 1) & ~((uintptr_t)align_pages - 1)) - pfn);
    }
    struct m_alloc_page *head = &ar->pages[start];
    head->npages = (uint32_t)npages;
    head->offset = 0;
    head->flags = M_ALLOC_LARGE_ZERO;
    h->pages_used += npages;
    if (h->pages_used > h->peak_pages_used)
        h->peak_pages_used = h->pages_used;
    if (h->pages_used + h->pages_dirty > h->peak_pages_committed)
        h->peak_pages_committed = h->pages_used + h->pages_dirty;
    *zero = true;
    *arp = ar;
    return head;
}

static void *large_alloc(struct moat_heap *h, size_t n, size_t align, bool zero_it)
{
    if (n > ((size_t)1 << 46))
        return alloc_failed(h);
    size_t npages = (n + M_ALLOC_PAGE - 1) >> M_ALLOC_PAGE_SHIFT;
    if (npages == 0)
        npages = 1;
    size_t align_pages = align > M_ALLOC_PAGE ? align / M_ALLOC_PAGE : 1;
    for (int attempt = 0; attempt < 2; attempt++) {
        bool zero = false;
        struct m_alloc_arena *ar = NULL;
        m_alloc_lock(&h->page_lock);
        struct m_alloc_page *s;
        if (npages + align_pages - 1 > M_ALLOC_NORMAL_PAGES && !h->src.region)
            s = huge_alloc(h, npages, align_pages, &zero, &ar);
        else
            s = m_alloc_span_alloc(h, npages, align_pages, &zero, &ar);
        if (s) {
            m_alloc_set_span_pages(ar, s, M_ALLOC_PK_LARGE, 0);
            s->free = n;
            h->large_objects++;
            h->large_requested += n;
            h->large_pages += npages;
            h->large_allocs++;
            m_alloc_unlock(&h->page_lock);
            void *p = (void *)m_alloc_page_addr(ar, s);
            if (zero_it && !zero)
                memset(p, 0, n);
            return p;
        }
        m_alloc_unlock(&h->page_lock);
        if (attempt == 0 && !heap_relieve(h))
            break;
    }
    return alloc_failed(h);
}

static void large_free(struct m_alloc_arena *ar, struct m_alloc_page *pg, void *p)
{
    struct moat_heap *h = ar->heap;
    m_alloc_lock(&h->page_lock);
    if (pg->kind != M_ALLOC_PK_LARGE || pg->offset != 0) {
        m_alloc_unlock(&h->page_lock);
        m_alloc_die("free(): double free", p, "the large object is already free");
    }
    h->large_objects--;
    h->large_requested -= pg->free;
    h->large_pages -= pg->npages;
    if (ar->huge) {
        pg->kind = M_ALLOC_PK_FREE;
        m_alloc_pmap_of(ar, pg)->kind = M_ALLOC_PK_FREE;
        m_alloc_huge_release(h, ar, pg->npages);
    } else {
        m_alloc_span_free(h, ar, pg);
    }
    m_alloc_unlock(&h->page_lock);
}

/* ------------------------------------------------------------------------
 * Slow paths of malloc and free
 * ---------------------------------------------------------------------- */

static void *uncached_alloc(struct moat_heap *h, unsigned c, size_t n)
{
    uint32_t got = 0;
    uintptr_t blk = m_alloc_refill(h, c, 1, 0, &got);
    if (!got)
        return NULL;
    ((uintptr_t *)blk)[1] = 0;
    atomic_fetch_add_explicit(&h->classes[c].allocs_done, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->classes[c].sample_bytes_done, n, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->classes[c].samples_done, 1, memory_order_relaxed);
    return (void *)blk;
}

void *m_alloc_malloc_slow(struct moat_heap *h, size_t n)
{
    if (n > M_ALLOC_SMALL_MAX)
        return large_alloc(h, n, M_ALLOC_PAGE, false);
    unsigned c = m_alloc_size_class(n);
    for (int attempt = 0; attempt < 2; attempt++) {
        struct m_alloc_tcache *tc = m_alloc_tcache_get(h);
        void *p;
        if (tc && h == atomic_load_explicit(&m_alloc_default_heap, memory_order_relaxed))
            m_alloc_tls.dflt = tc;
        if (tc) {
            p = (void *)m_alloc_bin_pop_checked(tc, h, c, n);
            if (!p)
                p = m_alloc_tcache_refill_pop(tc, c, n);
        } else {
            p = uncached_alloc(h, c, n);
        }
        if (p) {
            m_alloc_purge_check();
            return p;
        }
        if (attempt == 0 && !heap_relieve(h))
            break;
    }
    return alloc_failed(h);
}

void m_alloc_free_uncached(struct moat_heap *h, unsigned c, uintptr_t blk)
{
    if (((uintptr_t *)blk)[1] == m_alloc_tag(h->key, blk))
        m_alloc_die("free(): double free", (void *)blk, "the block is already free");
    struct m_alloc_tcache *tc = m_alloc_tcache_get(h);
    if (tc) {
        m_alloc_bin_push(tc, c, blk);
        return;
    }
    ((uintptr_t *)blk)[1] = m_alloc_tag(h->key, blk);
    m_alloc_give_back(h, c, blk, blk, 1, false);
}

void m_alloc_free_generic(void *p)
{
    if (!p)
        return;
    uintptr_t a = (uintptr_t)p;
    struct m_alloc_arena *ar = m_alloc_arena_of(a);
    if (!ar && m_alloc_foreign_free) {
        m_alloc_foreign_free(p);
        return;
    }
    if (!ar)
        m_alloc_die("free(): invalid pointer", p, "moat did not allocate it");
    size_t idx = m_alloc_page_index(ar, a);
    struct m_alloc_page *pg = &ar->pages[idx];
    if (pg->kind == M_ALLOC_PK_SLAB) {
        /* the generic path also checks the block was handed out */
        const struct m_alloc_page *head = pg - pg->offset;
        uint32_t off = (uint32_t)(a & (M_ALLOC_PAGE - 1)) + (pg->offset << M_ALLOC_PAGE_SHIFT);
        if (head->kind == M_ALLOC_PK_SLAB &&
            off / m_alloc_class_size[pg->cls] >=
                atomic_load_explicit(&head->bumped, memory_order_relaxed))
            m_alloc_die("free(): invalid pointer", p, "not the start of an allocated block");
        m_alloc_slab_free(ar, m_alloc_pmap_of(ar, pg), a);
        return;
    }
    if (pg->kind == M_ALLOC_PK_LARGE) {
        if (pg->offset != 0 || (a & (M_ALLOC_PAGE - 1)))
            m_alloc_die("free(): invalid pointer", p, "it points inside a large object");
        large_free(ar, pg, p);
        m_alloc_purge_check();
        return;
    }
    m_alloc_die("free(): double free or invalid pointer", p, "no object starts there");
}

size_t m_alloc_usable(const void *p, struct moat_heap **owner, const char *fn)
{
    uintptr_t a = (uintptr_t)p;
    struct m_alloc_arena *ar = m_alloc_arena_of(a);
    if (!ar && m_alloc_foreign_usable) {
        *owner = NULL;
        return m_alloc_foreign_usable(p);
    }
    if (!ar)
        m_alloc_die(fn, p, "moat did not allocate it");
    size_t idx = m_alloc_page_index(ar, a);
    const struct m_alloc_page *pg = &ar->pages[idx];
    *owner = ar->heap;
    if (pg->kind == M_ALLOC_PK_SLAB) {
        unsigned c = pg->cls;
        const struct m_alloc_page *head = pg - pg->offset;
        uint32_t off = (uint32_t)(a - ((uintptr_t)ar + ((idx - pg->offset) << M_ALLOC_PAGE_SHIFT)));
        uint32_t bi = (uint32_t)(((uint64_t)off * m_alloc_class_magic[c]) >> 32);
        if (bi * m_alloc_class_size[c] != off || head->kind != M_ALLOC_PK_SLAB ||
            bi >= atomic_load_explicit(&head->bumped, memory_order_relaxed))
            m_alloc_die(fn, p, "not the start of an allocated block");
        return m_alloc_class_size[c];
    }
    if (pg->kind == M_ALLOC_PK_LARGE && pg->offset == 0 && (a & (M_ALLOC_PAGE - 1)) == 0)
        return (size_t)pg->npages << M_ALLOC_PAGE_SHIFT;
    m_alloc_die(fn, p, "no object starts there");
}

/* ------------------------------------------------------------------------
 * The malloc family on a heap
 * ---------------------------------------------------------------------- */

static void *heap_calloc(struct moat_heap *h, size_t count, size_t size)
{
    size_t n;
    if (__builtin_mul_overflow(count, size, &n))
        return alloc_failed(h);
    if (n > M_ALLOC_SMALL_MAX)
        return large_alloc(h, n, M_ALLOC_PAGE, true);
    void *p = m_alloc_heap_malloc(h, n);
    if (p)
        memset(p, 0, n);
    return p;
}

static void *heap_aligned(struct moat_heap *h, size_t align, size_t n)
{
    if (align == 0 || (align & (align - 1)) || align > ((size_t)1 << 30)) {
        errno = EINVAL;
        return NULL;
    }
    if (align <= 16)
        return m_alloc_heap_malloc(h, n);
    size_t need = n < align ? align : n;
    if (need <= M_ALLOC_SMALL_MAX && align <= M_ALLOC_PAGE) {
        /* slabs start on pages, so a class whose size is a multiple of
         * align has every block aligned (powers of two are classes) */
        unsigned c = m_alloc_size_class(need);
        while (m_alloc_class_size[c] % align)
            c++;
        return m_alloc_heap_malloc(h, m_alloc_class_size[c]);
    }
    return large_alloc(h, n, align, false);
}

/* Resize a large object in place; true if done. */
static bool large_resize(struct moat_heap *h, void *p, size_t n)
{
    uintptr_t a = (uintptr_t)p;
    struct m_alloc_arena *ar = m_alloc_arena_of(a);
    struct m_alloc_page *pg = &ar->pages[m_alloc_page_index(ar, a)];
    size_t npages = (n + M_ALLOC_PAGE - 1) >> M_ALLOC_PAGE_SHIFT;
    bool done = false;
    if (ar->huge)
        return false; /* moved instead: a huge arena holds one object exactly */
    m_alloc_lock(&h->page_lock);
    size_t cur = pg->npages;
    if (npages <= cur) {
        if (npages < cur)
            m_alloc_span_shrink(h, ar, pg, npages);
        done = true;
    } else {
        done = m_alloc_span_grow(h, ar, pg, npages);
    }
    if (done) {
        h->large_requested = h->large_requested - pg->free + n;
        h->large_pages = h->large_pages - cur + npages;
        pg->free = n;
    }
    m_alloc_unlock(&h->page_lock);
    return done;
}

/* realloc: h is the heap p must belong to (NULL: any); a block that moves
 * goes to dest (NULL: p's own heap). */
static void *heap_realloc(struct moat_heap *h, struct moat_heap *dest, void *p, size_t n,
                          const char *fn)
{
    if (!p)
        return m_alloc_heap_malloc(h ? h : dest ? dest : m_alloc_default(), n);
    struct moat_heap *owner;
    size_t usable = m_alloc_usable(p, &owner, fn);
    if (h && owner != h)
        m_alloc_die(fn, p, "it belongs to another heap");
    if (n == 0) {
        m_alloc_free_block(p);
        return NULL;
    }
    if (!owner) {
        /* foreign: moves into moat */
    } else if (usable <= M_ALLOC_SMALL_MAX) {
        /* keep the block unless it would be less than half used */
        if (n <= usable && n > usable / 2)
            return p;
    } else if (n > M_ALLOC_SMALL_MAX && large_resize(owner, p, n)) {
        return p;
    }
    void *q = m_alloc_heap_malloc(dest ? dest : owner ? owner : m_alloc_default(), n);
    if (!q)
        return NULL;
    memcpy(q, p, n < usable ? n : usable);
    m_alloc_free_block(p);
    return q;
}

/* ------------------------------------------------------------------------
 * Public functions: the default heap
 * ---------------------------------------------------------------------- */

void *moat_malloc(size_t n)
{
    return m_alloc_default_malloc(n);
}

void moat_free(void *p)
{
    /* NULL fails the chunk test and ends in the generic path (no test here) */
    m_alloc_free_block(p);
}

void *moat_calloc(size_t count, size_t size)
{
    return heap_calloc(m_alloc_default(), count, size);
}

void *moat_realloc(void *p, size_t n)
{
    return heap_realloc(NULL, NULL, p, n, "realloc(): invalid pointer");
}

void *m_alloc_realloc_to(struct moat_heap *dest, void *p, size_t n)
{
    return heap_realloc(NULL, dest, p, n, "realloc(): invalid pointer");
}

void *moat_aligned_alloc(size_t alignment, size_t n)
{
    return heap_aligned(m_alloc_default(), alignment, n);
}

int moat_posix_memalign(void **out, size_t alignment, size_t n)
{
    return moat_heap_posix_memalign(m_alloc_default(), out, alignment, n);
}

size_t moat_usable_size(const void *p)
{
    if (!p)
        return 0;
    struct moat_heap *owner;
    return m_alloc_usable(p, &owner, "malloc_usable_size(): invalid pointer");
}

void moat_alloc_thread_flush(void)
{
    struct m_alloc_tls *t = &m_alloc_tls;
    for (int s = 0; s < M_ALLOC_TLS_SLOTS; s++) {
        struct m_alloc_tcache *tc = m_alloc_tls_cache(s);
        if (!tc)
            continue;
        if (atomic_load_explicit(&tc->heap_id, memory_order_relaxed) == 0) {
            m_alloc_tls_set(s, NULL); /* its heap is gone */
            if (t->dflt == tc)
                t->dflt = M_ALLOC_TC_NONE;
            m_alloc_tcache_release(tc, false);
            continue;
        }
        m_alloc_tcache_flush(tc);
    }
}

size_t moat_alloc_trim(void)
{
    return moat_heap_trim(m_alloc_default());
}

/* ------------------------------------------------------------------------
 * Public functions: heaps
 * ---------------------------------------------------------------------- */

int moat_heap_new(const struct moat_heap_config *cfg, moat_heap **out)
{
    static const struct moat_heap_config none;
    if (!out)
        return EINVAL;
    if (!cfg)
        cfg = &none;
    if (cfg->region &&
        (((uintptr_t)cfg->region & (M_ALLOC_PAGE - 1)) ||
         (cfg->region_nbytes & (M_ALLOC_PAGE - 1)) || cfg->region_nbytes < (1u << 20)))
        return EINVAL;
    if (cfg->limit && cfg->limit < (64u << 10))
        return EINVAL;
    m_alloc_global_init();

    struct moat_heap *h =
        mmap(NULL, sizeof *h, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (h == MAP_FAILED)
        return ENOMEM;
#ifdef M_ALLOC_STANDALONE
    if (cfg->region || cfg->source == MOAT_HEAP_SOURCE_REGION) {
        munmap(h, sizeof *h);
        return ENOTSUP;
    }
    m_alloc_source_mmap(&h->src);
#else
    int source = cfg->source;
    if (cfg->region) {
        source = MOAT_HEAP_SOURCE_REGION;
    } else if (source == MOAT_HEAP_SOURCE_AUTO) {
        void *base;
        size_t size;
        source = moat_range(&base, &size) == 0 ? MOAT_HEAP_SOURCE_REGION : MOAT_HEAP_SOURCE_MMAP;
    } else if (source == MOAT_HEAP_SOURCE_REGION) {
        void *base;
        size_t size;
        if (moat_range(&base, &size) != 0) {
            munmap(h, sizeof *h);
            return ENODEV;
        }
    }
    if (source == MOAT_HEAP_SOURCE_REGION)
        m_alloc_source_region(&h->src, cfg->region, cfg->region_nbytes);
    else
        m_alloc_source_mmap(&h->src);
#endif
    int err = heap_init(h, cfg->limit, cfg->tcache_bytes, cfg->retain_bytes);
    if (err) {
        m_alloc_arenas_release(h);
        munmap(h, sizeof *h);
        return err;
    }
    *out = h;
    return 0;
}

int moat_heap_destroy(moat_heap *h)
{
    if (!h || h->builtin)
        return EINVAL;
    struct m_alloc_global *g = &m_alloc_global;
    if (atomic_load_explicit(&m_alloc_default_heap, memory_order_acquire) == h)
        return EBUSY;
    pthread_mutex_lock(&g->lock);
    for (struct moat_heap **pp = &g->heaps; *pp; pp = &(*pp)->next_heap) {
        if (*pp == h) {
            *pp = h->next_heap;
            break;
        }
    }
    if (h->slot != M_ALLOC_NO_SLOT)
        g->slots_used &= ~(1u << h->slot);
    m_alloc_tcache_orphan_all(h);
    /* this thread's cache goes back to the pool now */
    struct m_alloc_tcache *mine = h->slot != M_ALLOC_NO_SLOT ? m_alloc_tls_cache(h->slot) : NULL;
    pthread_mutex_unlock(&g->lock);
    if (mine && atomic_load_explicit(&mine->heap_id, memory_order_relaxed) == 0) {
        m_alloc_tls_set(h->slot, NULL);
        if (m_alloc_tls.dflt == mine)
            m_alloc_tls.dflt = M_ALLOC_TC_NONE;
        m_alloc_tcache_release(mine, false);
    }
    m_alloc_arenas_release(h);
    munmap(h, sizeof *h);
    return 0;
}

moat_heap *moat_heap_default(void)
{
    return m_alloc_default();
}

int moat_heap_set_default(moat_heap *h)
{
    m_alloc_global_init();
    atomic_store_explicit(&m_alloc_default_heap, h ? h : &builtin_heap, memory_order_release);
    return 0;
}

void *moat_heap_malloc(moat_heap *h, size_t n)
{
    return m_alloc_heap_malloc(h, n);
}

void *moat_heap_calloc(moat_heap *h, size_t count, size_t size)
{
    return heap_calloc(h, count, size);
}

void *moat_heap_realloc(moat_heap *h, void *p, size_t n)
{
    return heap_realloc(h, NULL, p, n, "moat_heap_realloc(): invalid pointer");
}

void *moat_heap_aligned_alloc(moat_heap *h, size_t alignment, size_t n)
{
    return heap_aligned(h, alignment, n);
}

int moat_heap_posix_memalign(moat_heap *h, void **out, size_t alignment, size_t n)
{
    if (!out || alignment < sizeof(void *) || (alignment & (alignment - 1)) ||
        alignment > ((size_t)1 << 30))
        return EINVAL;
    int saved = errno;
    void *p = heap_aligned(h, alignment, n);
    if (!p) {
        int err = errno;
        errno = saved;
        return err ? err : ENOMEM;
    }
    *out = p;
    return 0;
}

void moat_heap_free(moat_heap *h, void *p)
{
    if (!p)
        return;
    struct m_alloc_arena *ar = m_alloc_arena_of((uintptr_t)p);
    if (ar && ar->heap != h)
        m_alloc_die("moat_heap_free(): invalid pointer", p, "it belongs to another heap");
    m_alloc_free_block(p);
}

size_t moat_heap_trim(moat_heap *h)
{
    if (!h)
        return 0;
    struct m_alloc_tcache *tc = h->slot != M_ALLOC_NO_SLOT ? m_alloc_tls_cache(h->slot) : NULL;
    if (tc && atomic_load_explicit(&tc->heap_id, memory_order_relaxed) == h->id)
        m_alloc_tcache_flush(tc);
    m_alloc_drain_all(h, true);
    m_alloc_lock(&h->page_lock);
    uint64_t before = h->decommitted_pages;
    m_alloc_purge(h, 0);
    uint64_t n = h->decommitted_pages - before;
    m_alloc_unlock(&h->page_lock);
    return (size_t)n * M_ALLOC_PAGE;
}

/* ------------------------------------------------------------------------
 * Statistics
 * ---------------------------------------------------------------------- */

int moat_heap_stats_get(moat_heap *h, struct moat_alloc_stats *out)
{
    if (!h || !out)
        return EINVAL;
    memset(out, 0, sizeof *out);
    struct m_alloc_global *g = &m_alloc_global;
    uint64_t cached[M_ALLOC_NCLASSES] = {0}, allocs[M_ALLOC_NCLASSES] = {0},
             sbytes[M_ALLOC_NCLASSES] = {0}, samples[M_ALLOC_NCLASSES] = {0};
    pthread_mutex_lock(&g->lock);
    for (struct m_alloc_tcache *tc = h->tcaches; tc; tc = tc->reg_next) {
        for (unsigned c = 0; c < M_ALLOC_NCLASSES; c++) {
            cached[c] += m_alloc_bin_count(&tc->bins[c]);
            cached[c] += M_ALLOC_OWNER_READ(tc->bins[c].rcount);
            allocs[c] += M_ALLOC_OWNER_READ(tc->bins[c].allocs);
            sbytes[c] += M_ALLOC_OWNER_READ(tc->bins[c].sample_bytes);
            samples[c] += M_ALLOC_OWNER_READ(tc->bins[c].samples);
        }
    }
    out->threads = atomic_load_explicit(&h->ntcaches, memory_order_relaxed);
    out->metadata_bytes = g->pool_bytes;
    pthread_mutex_unlock(&g->lock);

    for (unsigned c = 0; c < M_ALLOC_NCLASSES; c++) {
        struct m_alloc_class *cl = &h->classes[c];
        struct moat_alloc_class_stats *cs = &out->classes[c];
        const struct m_alloc_class_info *ci = &m_alloc_class_info[c];
        cs->block_size = m_alloc_class_size[c];
        cs->slab_size = (uint64_t)ci->slab_pages * M_ALLOC_PAGE;
        m_alloc_lock(&cl->lock);
        uint64_t used = cl->used;
        cs->slabs = cl->slabs;
        cs->peak_used_bytes = cl->peak_used * cs->block_size;
        cs->peak_reserved_bytes = cl->peak_slabs * cs->slab_size;
        m_alloc_unlock(&cl->lock);
        cached[c] += atomic_load_explicit(&cl->returned_count, memory_order_relaxed);
        for (int i = 0; i < M_ALLOC_TRANSFER_SLOTS; i++)
            cached[c] += atomic_load_explicit(&cl->transfer[i], memory_order_relaxed) >> 48;
        allocs[c] += atomic_load_explicit(&cl->allocs_done, memory_order_relaxed);
        sbytes[c] += atomic_load_explicit(&cl->sample_bytes_done, memory_order_relaxed);
        samples[c] += atomic_load_explicit(&cl->samples_done, memory_order_relaxed);
        cs->cached_blocks = cached[c] < used ? cached[c] : used;
        cs->live_blocks = used - cs->cached_blocks;
        cs->live_bytes = cs->live_blocks * cs->block_size;
        cs->allocs = allocs[c];
        if (samples[c]) {
            /* mean sampled request of the class, applied to the live blocks */
            long double mean = (long double)sbytes[c] / (long double)samples[c];
            uint64_t est = (uint64_t)(mean * (long double)cs->live_blocks);
            cs->requested_bytes = est < cs->live_bytes ? est : cs->live_bytes;
        }
        cs->reserved_bytes = cs->slabs * cs->slab_size;
        cs->fragmentation =
            cs->reserved_bytes ? 1.0 - (double)cs->requested_bytes / (double)cs->reserved_bytes : 0;
        out->requested_bytes += cs->requested_bytes;
        out->live_bytes += cs->live_bytes;
        out->cached_bytes += cs->cached_blocks * cs->block_size;
        out->reserved_bytes += cs->reserved_bytes;
    }

    m_alloc_lock(&h->page_lock);
    out->large_objects = h->large_objects;
    out->large_requested_bytes = h->large_requested;
    out->large_reserved_bytes = h->large_pages * M_ALLOC_PAGE;
    out->large_allocs = h->large_allocs;
    out->free_committed_bytes = (uint64_t)h->pages_dirty * M_ALLOC_PAGE;
    out->committed_bytes = (uint64_t)(h->pages_used + h->pages_dirty) * M_ALLOC_PAGE;
    out->peak_reserved_bytes = (uint64_t)h->peak_pages_used * M_ALLOC_PAGE;
    out->peak_committed_bytes = (uint64_t)h->peak_pages_committed * M_ALLOC_PAGE;
    out->limit_bytes = h->limit_pages == SIZE_MAX ? 0 : (uint64_t)h->limit_pages * M_ALLOC_PAGE;
    out->decommitted_bytes = h->decommitted_pages * M_ALLOC_PAGE;
    out->decommit_calls = h->decommit_calls;
    /* descriptors: 40 bytes per page ever in use, at page granularity */
    uint64_t desc = (uint64_t)h->peak_pages_used * sizeof(struct m_alloc_page);
    out->metadata_bytes += h->meta_bytes + (desc + M_ALLOC_PAGE - 1) / M_ALLOC_PAGE * M_ALLOC_PAGE;
    m_alloc_unlock(&h->page_lock);
    out->alloc_failures = atomic_load_explicit(&h->alloc_failures, memory_order_relaxed);

    out->requested_bytes += out->large_requested_bytes;
    out->live_bytes += out->large_reserved_bytes;
    out->reserved_bytes += out->large_reserved_bytes;
    out->fragmentation =
        out->reserved_bytes ? 1.0 - (double)out->requested_bytes / (double)out->reserved_bytes : 0;
    return 0;
}

int moat_alloc_stats_get(struct moat_alloc_stats *out)
{
    return moat_heap_stats_get(m_alloc_default(), out);
}

void moat_heap_stats_print(moat_heap *h, int fd)
{
    if (h)
        m_alloc_stats_write(h, fd);
}

void moat_alloc_stats_print(int fd)
{
    m_alloc_stats_write(m_alloc_default(), fd);
}
