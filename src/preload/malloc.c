/*
 * malloc.c - the malloc family of libmoat_preload.so: every heap allocation
 * of the program is served by moat's allocator from managed memory, under
 * the budget.
 *
 * Two heaps share the process:
 *
 *   - the program heap, made by the preload's constructor once the engine
 *     runs (m_preload_malloc_start): the default heap, on the region source,
 *     so its pages are committed on demand, count against the budget, and are
 *     sealed and evicted like any managed page;
 *   - the built-in heap, on plain mmap: what was allocated before the engine
 *     started (the C library's and the loader's early allocations), and
 *     everything allocated by a thread while it runs moat's own code or is
 *     one of moat's threads (m_engine_internal).  Those allocations must not
 *     be managed: a fault on them could need the very thread that waits on
 *     it, or a lock of the program heap it holds.
 *
 * free, realloc and malloc_usable_size find a block's heap from its address,
 * so a block may be freed by any thread whatever heap it came from.  A
 * pointer in no heap of moat's can only come from the dynamic loader's own
 * minimal allocator, used before the C library is relocated (moat's malloc
 * is interposed before the C library's ever runs): the loader never frees
 * those through free in practice, and if it did, moat leaves them alone (it
 * counts them) rather than abort.
 *
 * glibc semantics kept, as in the drop-in (src/alloc/preload.c): free(NULL),
 * realloc(NULL, n), realloc(p, 0) frees, malloc_usable_size(NULL) is 0,
 * memalign rounds the alignment up to a power of two, overflow checks.
 */
#include "alloc/alloc_int.h"
#include "common/engine.h"
#include "preload/preload.h"

#include <errno.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PL_EXPORT __attribute__((visibility("default")))

static _Atomic uint64_t pl_foreign_frees;

/* The heap for this thread's allocations now. */
static inline struct moat_heap *pl_heap(void)
{
    return M_ALLOC_UNLIKELY(m_engine_internal) ? m_alloc_builtin() : m_alloc_default();
}

/* ------------------------------------------------------------------------
 * Foreign pointers
 * ---------------------------------------------------------------------- */

static void pl_foreign_free(void *p)
{
    (void)p;
    atomic_fetch_add_explicit(&pl_foreign_frees, 1, memory_order_relaxed);
}

/* Only realloc asks, to copy a foreign block into moat.  The loader's
 * minimal allocator keeps no sizes; glibc's chunks keep theirs in the word
 * before the block.  Read it if it is plausible, else copy nothing beyond
 * the block's page (never past memory known to be mapped). */
static size_t pl_foreign_usable(const void *p)
{
    uintptr_t a = (uintptr_t)p;
    size_t to_page_end = M_ALLOC_PAGE - (a & (M_ALLOC_PAGE - 1));
    if ((a & 15) || (a & (M_ALLOC_PAGE - 1)) < sizeof(size_t))
        return to_page_end;
    size_t hdr = ((const size_t *)p)[-1];
    size_t chunk = hdr & ~(size_t)7;
    if (chunk >= 32 && !(chunk & 15) && chunk <= ((size_t)1 << 40))
        return chunk - ((hdr & 2) ? 2 * sizeof(size_t) : sizeof(size_t));
    return to_page_end;
}

uint64_t m_preload_foreign_frees(void)
{
    return atomic_load_explicit(&pl_foreign_frees, memory_order_relaxed);
}

/* Engine threads get their cache of the built-in heap at once, so that
 * resolving a fault never waits for the allocator's global lock (which a
 * program thread may hold while it touches an evicted page). */
static void pl_thread_warm(void)
{
    struct moat_heap *h = m_alloc_builtin();
    moat_heap_free(h, moat_heap_malloc(h, 16));
}

void m_preload_malloc_hooks(void)
{
    /* The allocator registers its fork handlers now, before the engine
     * registers its own: prepare handlers run in reverse order, and the
     * engine's (which reads evicted pages back, and allocates) must run
     * before the allocator's takes every heap lock. */
    (void)m_alloc_builtin();
    m_alloc_foreign_free = pl_foreign_free;
    m_alloc_foreign_usable = pl_foreign_usable;
    m_engine_thread_hook = pl_thread_warm;
}

/* While moat does not track the program's pages (lazy tracking: they all
 * fit under the budget's high watermark) the program heap keeps up to 1/8
 * of the budget in free pages rather than purge them: a purged page is
 * zeroed and faulted in again at its next use (the 8-thread program of
 * bench/programs.sh spent ~7% of its run there, 406-419 ms against glibc's
 * 353-382 ms; with the free pages kept, 362-392 ms).  Once tracking starts
 * the usual allowance applies again, so free pages are not sealed and
 * written out under a tight budget. */
static size_t pl_retain_hint(void)
{
    if (!m_engine.budget_pages || atomic_load_explicit(&m_engine.tracking, memory_order_relaxed))
        return 0;
    return m_engine.budget_pages / 8;
}

int m_preload_malloc_start(void)
{
    struct moat_heap_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.source = MOAT_HEAP_SOURCE_REGION;
    /* A small range (an enclave's user space under --config) could not hold
     * a 64 MiB arena: the heap gets a cap of half of it, one arena of that
     * size, and the other half stays for the program's own mmaps. */
    void *base;
    size_t size;
    if (moat_range(&base, &size) == 0 && size < ((size_t)256 << 20))
        cfg.limit = (size / 2) & ~(M_ALLOC_PAGE - 1);
    struct moat_heap *h = NULL;
    m_engine_internal++;
    int err = moat_heap_new(&cfg, &h);
    if (!err) {
        h->retain_hint = pl_retain_hint;
        moat_heap_set_default(h);
    }
    m_engine_internal--;
    return err;
}

uintptr_t m_preload_heap_first_data(void)
{
    struct moat_heap *h = m_alloc_default();
    /* Arenas are made at the first allocation: make it now.  Called by the
     * constructor alone, before any other thread can use the heap, so the
     * arena list is read without the heap's lock. */
    void *p = moat_heap_malloc(h, 1);
    if (!p)
        return 0;
    uintptr_t first = 0;
    for (struct m_alloc_arena *ar = h->arenas; ar; ar = ar->next)
        if (!first || ar->base < first)
            first = ar->base;
    moat_heap_free(h, p);
    return first;
}

/* ------------------------------------------------------------------------
 * The malloc family
 * ---------------------------------------------------------------------- */

PL_EXPORT void *malloc(size_t n)
{
    if (M_ALLOC_UNLIKELY(m_engine_internal))
        return moat_heap_malloc(m_alloc_builtin(), n);
    return m_alloc_default_malloc(n);
}

PL_EXPORT void free(void *p)
{
    if (p)
        m_alloc_free_block(p);
}

PL_EXPORT void cfree(void *p)
{
    free(p);
}

PL_EXPORT void *calloc(size_t count, size_t size)
{
    return moat_heap_calloc(pl_heap(), count, size);
}

PL_EXPORT void *realloc(void *p, size_t n)
{
    return m_alloc_realloc_to(pl_heap(), p, n);
}

PL_EXPORT void *reallocarray(void *p, size_t count, size_t size)
{
    size_t n;
    if (__builtin_mul_overflow(count, size, &n)) {
        errno = ENOMEM;
        return NULL;
    }
    return m_alloc_realloc_to(pl_heap(), p, n);
}

PL_EXPORT void *aligned_alloc(size_t alignment, size_t n)
{
    return moat_heap_aligned_alloc(pl_heap(), alignment, n);
}

PL_EXPORT int posix_memalign(void **out, size_t alignment, size_t n)
{
    return moat_heap_posix_memalign(pl_heap(), out, alignment, n);
}

PL_EXPORT void *memalign(size_t alignment, size_t n)
{
    if (alignment && (alignment & (alignment - 1))) {
        size_t a = 1;
        while (a < alignment && a < ((size_t)1 << 30))
            a <<= 1;
        alignment = a;
    }
    if (alignment == 0)
        alignment = 1;
    return moat_heap_aligned_alloc(pl_heap(), alignment, n);
}

PL_EXPORT void *valloc(size_t n)
{
    return moat_heap_aligned_alloc(pl_heap(), M_ALLOC_PAGE, n);
}

PL_EXPORT void *pvalloc(size_t n)
{
    size_t r = (n + M_ALLOC_PAGE - 1) & ~(M_ALLOC_PAGE - 1);
    if (r < n) {
        errno = ENOMEM;
        return NULL;
    }
    return moat_heap_aligned_alloc(pl_heap(), M_ALLOC_PAGE, r ? r : M_ALLOC_PAGE);
}

PL_EXPORT size_t malloc_usable_size(void *p)
{
    return p ? moat_usable_size(p) : 0;
}

PL_EXPORT int malloc_trim(size_t pad)
{
    (void)pad;
    return moat_alloc_trim() > 0;
}

PL_EXPORT void malloc_stats(void)
{
    moat_alloc_stats_print(STDERR_FILENO);
}

PL_EXPORT struct mallinfo2 mallinfo2(void)
{
    struct moat_alloc_stats st;
    struct mallinfo2 mi;
    memset(&mi, 0, sizeof mi);
    if (moat_alloc_stats_get(&st) == 0) {
        mi.arena = st.committed_bytes;
        mi.uordblks = st.requested_bytes;
        mi.fordblks = st.committed_bytes - st.requested_bytes;
        mi.hblkhd = st.large_reserved_bytes;
        mi.hblks = st.large_objects;
        mi.keepcost = st.free_committed_bytes;
        mi.usmblks = st.peak_committed_bytes;
        mi.fsmblks = st.cached_bytes;
    }
    return mi;
}
