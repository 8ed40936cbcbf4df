/*
 * preload.c - libmoat_malloc.so, the drop-in: the C library's whole malloc
 * family served by moat's default heap, for
 *
 *     LD_PRELOAD=/path/to/libmoat_malloc.so program
 *
 * It is built from the allocator's sources alone (no engine, no other
 * library), exports only the names below (a version script hides the rest),
 * and never calls malloc itself: the heap lives in static storage, thread
 * caches in a pool of mmap'd memory, TLS is initial-exec, and nothing here
 * needs dlsym.  Without MOAT_ALLOC_LIMIT it is simply a fast malloc;
 * MOAT_ALLOC_STATS=1 prints the statistics at exit.
 *
 * glibc semantics kept: free(NULL) and realloc(NULL, n) work, realloc(p, 0)
 * frees p and returns NULL, malloc_usable_size(NULL) is 0, memalign rounds
 * an alignment that is not a power of two up to one, calloc and
 * reallocarray check for overflow.  A pointer moat did not allocate is a
 * fatal error that names it.
 */
#include "alloc/alloc_int.h"

#include <errno.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define M_EXPORT __attribute__((visibility("default")))

M_EXPORT void *malloc(size_t n)
{
    return m_alloc_default_malloc(n);
}

M_EXPORT void free(void *p)
{
    /* NULL fails the chunk test and ends in the generic path (no test here) */
    m_alloc_free_block(p);
}

M_EXPORT void *calloc(size_t count, size_t size)
{
    return moat_calloc(count, size);
}

M_EXPORT void *realloc(void *p, size_t n)
{
    return moat_realloc(p, n);
}

M_EXPORT void *reallocarray(void *p, size_t count, size_t size)
{
    size_t n;
    if (__builtin_mul_overflow(count, size, &n)) {
        errno = ENOMEM;
        return NULL;
    }
    return moat_realloc(p, n);
}

M_EXPORT void *aligned_alloc(size_t alignment, size_t n)
{
    return moat_aligned_alloc(alignment, n);
}

M_EXPORT int posix_memalign(void **out, size_t alignment, size_t n)
{
    return moat_posix_memalign(out, alignment, n);
}

M_EXPORT void *memalign(size_t alignment, size_t n)
{
    if (alignment && (alignment & (alignment - 1))) {
        /* glibc rounds up to a power of two */
        size_t a = 1;
        while (a < alignment && a < ((size_t)1 << 30))
            a <<= 1;
        alignment = a;
    }
    if (alignment == 0)
        alignment = 1;
    return moat_aligned_alloc(alignment, n);
}

M_EXPORT void *valloc(size_t n)
{
    return moat_aligned_alloc(M_ALLOC_PAGE, n);
}

M_EXPORT void *pvalloc(size_t n)
{
    size_t r = (n + M_ALLOC_PAGE - 1) & ~(M_ALLOC_PAGE - 1);
    if (r < n) {
        errno = ENOMEM;
        return NULL;
    }
    return moat_aligned_alloc(M_ALLOC_PAGE, r ? r : M_ALLOC_PAGE);
}

M_EXPORT size_t malloc_usable_size(void *p)
{
    return moat_usable_size(p);
}

M_EXPORT int malloc_trim(size_t pad)
{
    (void)pad;
    return moat_alloc_trim() > 0;
}

M_EXPORT void malloc_stats(void)
{
    moat_alloc_stats_print(STDERR_FILENO);
}

M_EXPORT struct mallinfo2 mallinfo2(void)
{
    struct moat_alloc_stats st;
    struct mallinfo2 mi;
    memset(&mi, 0, sizeof mi);
    if (moat_alloc_stats_get(&st) == 0) {
        mi.arena = st.committed_bytes;    /* what the heap holds */
        mi.uordblks = st.requested_bytes; /* asked for and live */
        mi.fordblks = st.committed_bytes - st.requested_bytes;
        mi.hblkhd = st.large_reserved_bytes; /* page-granular objects */
        mi.hblks = st.large_objects;
        mi.keepcost = st.free_committed_bytes; /* what a trim would return */
        mi.usmblks = st.peak_committed_bytes;
        mi.fsmblks = st.cached_bytes;
    }
    return mi;
}

/* MOAT_ALLOC_STATS=1: the table on stderr when the program exits. */
__attribute__((destructor)) static void m_alloc_preload_fini(void)
{
    const char *s = getenv("MOAT_ALLOC_STATS");
    if (s && *s && *s != '0')
        moat_alloc_stats_print(STDERR_FILENO);
}
