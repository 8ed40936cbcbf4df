/*
 * moat/alloc.h - moat's allocator: a thread-safe malloc for small protected
 * heaps shared by many threads.
 *
 * Objects up to 32 KiB come from slabs of one size class (72 classes, eight
 * per doubling above 128 bytes); larger objects are whole pages.  The waste
 * bound: a request of n > 128 bytes gets a block smaller than 1.125 n (less
 * than 12.5% internal waste); a request of n <= 128 bytes gets at most 15
 * bytes more than n (16 for n = 0: blocks stay 16-byte aligned, as glibc's
 * are).  Large objects waste less than a page, under 12.5% as well.
 *
 * Every thread keeps a small cache of free blocks per class, bounded in bytes
 * by a share of the heap, and gives it back when it leaves
 * (moat_alloc_thread_flush) or exits.  Empty slabs and freed large objects
 * become free pages; free pages beyond a small allowance are decommitted
 * (given back to the region or the kernel).  docs/alloc.md describes the
 * design, the knobs and the measured numbers.
 *
 * Conventions: functions that return int return 0 or a positive errno value;
 * the malloc-style functions return NULL and set errno to ENOMEM (EINVAL for
 * a bad alignment), exactly as their C library counterparts do.  Misuse that
 * would corrupt the heap - a double free, freeing a pointer moat did not
 * allocate, a corrupted free list - is fatal: one line on stderr naming the
 * address, then abort().
 *
 * The drop-in: libmoat_malloc.so exports the whole malloc family (malloc,
 * free, calloc, realloc, reallocarray, memalign, posix_memalign,
 * aligned_alloc, valloc, pvalloc, malloc_usable_size, malloc_trim,
 * malloc_stats, mallinfo2) backed by the default heap, for
 * LD_PRELOAD=/path/to/libmoat_malloc.so.
 */
#ifndef MOAT_ALLOC_H
#define MOAT_ALLOC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#pragma GCC visibility push(default)

/* ------------------------------------------------------------------------
 * The default heap (created at first use)
 *
 * Its knobs come from the environment, read once at first use:
 *   MOAT_ALLOC_LIMIT    hard cap on its committed bytes ("64M"); default none
 *   MOAT_ALLOC_TCACHE   per-thread cache cap in bytes; default adaptive
 *   MOAT_ALLOC_RETAIN   free committed bytes kept before decommitting;
 *                       default adaptive
 *   MOAT_ALLOC_STATS    "1": print the statistics to stderr at exit
 * ---------------------------------------------------------------------- */

/* moat_malloc - n bytes, 16-byte aligned (n = 0 gives a unique pointer).
 * NULL with errno ENOMEM when the heap's limit or the address space is
 * exhausted. */
void *moat_malloc(size_t n);

/* moat_free - free p (NULL is ignored).  p may come from any moat heap and
 * any thread.  Fatal: a double free, a pointer moat did not allocate, or a
 * pointer into the middle of a block. */
void moat_free(void *p);

/* moat_calloc - count * size zeroed bytes.  NULL with ENOMEM on overflow or
 * exhaustion. */
void *moat_calloc(size_t count, size_t size);

/* moat_realloc - resize p to n bytes, moving it if needed (the first
 * min(old, n) bytes are kept).  p == NULL is moat_malloc(n); n == 0 frees p
 * and returns NULL (as glibc does).  On failure NULL with ENOMEM, and p is
 * untouched. */
void *moat_realloc(void *p, size_t n);

/* moat_aligned_alloc - n bytes aligned to `alignment`, a power of two (any
 * size up to 1 GiB).  NULL with EINVAL for a bad alignment, ENOMEM on
 * exhaustion. */
void *moat_aligned_alloc(size_t alignment, size_t n);

/* moat_posix_memalign - as posix_memalign(3): alignment a power of two and a
 * multiple of sizeof(void *).  Returns 0, EINVAL (*out untouched) or ENOMEM. */
int moat_posix_memalign(void **out, size_t alignment, size_t n);

/* moat_usable_size - the bytes usable at p (>= what was asked for); 0 for
 * NULL.  Fatal for a pointer moat did not allocate. */
size_t moat_usable_size(const void *p);

/* moat_alloc_thread_flush - give back every block the calling thread caches,
 * for every heap.  Call it where a thread stops using the heap for a while
 * (an enclave runtime: at the end of each ECall); thread exit does it too. */
void moat_alloc_thread_flush(void);

/* moat_alloc_trim - flush the calling thread's cache and decommit every free
 * page of the default heap.  Returns the bytes decommitted. */
size_t moat_alloc_trim(void);

/* ------------------------------------------------------------------------
 * Heaps with their own memory and a hard size
 * ---------------------------------------------------------------------- */

typedef struct moat_heap moat_heap;

/* Where a heap gets its pages. */
enum moat_heap_source {
    MOAT_HEAP_SOURCE_AUTO = 0,   /* moat regions if moat_init has run, else mmap */
    MOAT_HEAP_SOURCE_REGION = 1, /* moat_alloc(COMMIT_ON_DEMAND) / moat_uncommit */
    MOAT_HEAP_SOURCE_MMAP = 2,   /* mmap(MAP_NORESERVE) / madvise(MADV_DONTNEED) */
};

struct moat_heap_config {
    /* Hard cap on the bytes the heap commits for objects (slabs, large
     * objects and free pages not yet decommitted); 0 = no cap.  Allocations
     * beyond it fail with ENOMEM.  Metadata (about 1.2% of the pages in
     * use) is outside the cap; with `region` it lives inside the region. */
    size_t limit;
    /* An existing moat region (moat_alloc with MOAT_COMMIT_ON_DEMAND) that
     * the heap manages entirely; it stays the caller's (destroy does not
     * free it).  NULL: the heap reserves its own memory from `source`. */
    void *region;
    size_t region_nbytes;
    int source;          /* enum moat_heap_source (ignored with region) */
    size_t tcache_bytes; /* per-thread cache cap; 0 = adaptive */
    size_t retain_bytes; /* free committed bytes kept; 0 = adaptive */
};

/*
 * moat_heap_new - a heap.  cfg may be NULL (no cap, AUTO source).
 * Errors: EINVAL NULL out, a region not page-aligned or smaller than 1 MiB,
 *   or a limit below 64 KiB; ENODEV source REGION before moat_init;
 *   ENOMEM address space or metadata could not be reserved; anything
 *   moat_alloc returns.
 */
int moat_heap_new(const struct moat_heap_config *cfg, moat_heap **out);

/*
 * moat_heap_destroy - free the heap and all its memory at once (objects not
 * freed are gone; its region, if given, is uncommitted but not freed).  No
 * thread may use the heap during or after the call.  Returns 0; EINVAL for
 * NULL or the built-in default heap; EBUSY while it is the default heap.
 */
int moat_heap_destroy(moat_heap *heap);

/* moat_heap_default - the heap behind moat_malloc (created on first use). */
moat_heap *moat_heap_default(void);

/* moat_heap_set_default - make `heap` serve moat_malloc and friends from now
 * on (NULL: back to the built-in default heap).  Objects already allocated
 * stay where they are and can still be freed with moat_free.  Returns 0;
 * a heap must not be destroyed while it is the default. */
int moat_heap_set_default(moat_heap *heap);

/* The same functions on a given heap; same errors.  moat_heap_free dies if p
 * belongs to another heap; moat_free(p) works for any heap's p. */
void *moat_heap_malloc(moat_heap *heap, size_t n);
void *moat_heap_calloc(moat_heap *heap, size_t count, size_t size);
void *moat_heap_realloc(moat_heap *heap, void *p, size_t n);
void *moat_heap_aligned_alloc(moat_heap *heap, size_t alignment, size_t n);
int moat_heap_posix_memalign(moat_heap *heap, void **out, size_t alignment, size_t n);
void moat_heap_free(moat_heap *heap, void *p);

/* moat_heap_trim - flush the calling thread's cache for the heap, give
 * back blocks in transit to their slabs and decommit every free page.
 * Returns the bytes decommitted. */
size_t moat_heap_trim(moat_heap *heap);

/* ------------------------------------------------------------------------
 * Statistics
 * ---------------------------------------------------------------------- */

#define MOAT_ALLOC_NCLASSES 72

struct moat_alloc_class_stats {
    uint64_t block_size;          /* bytes per block of the class */
    uint64_t slab_size;           /* bytes per slab */
    uint64_t live_blocks;         /* blocks the program holds */
    uint64_t live_bytes;          /* live_blocks * block_size */
    uint64_t requested_bytes;     /* what the program asked for in those blocks:
                                   * live_blocks times the mean of sampled
                                   * requests of the class (the allocation
                                   * that refills a thread's cache is the
                                   * sample; no per-block size is stored) */
    uint64_t cached_blocks;       /* free blocks in thread caches or in transit */
    uint64_t slabs;               /* slabs of the class */
    uint64_t reserved_bytes;      /* slabs * slab_size: committed for the class */
    uint64_t peak_used_bytes;     /* peak of blocks out of slabs (live + cached) */
    uint64_t peak_reserved_bytes; /* peak of reserved_bytes */
    uint64_t allocs;              /* allocations served, since the heap began */
    double fragmentation;         /* 1 - requested_bytes / reserved_bytes */
};

struct moat_alloc_stats {
    struct moat_alloc_class_stats classes[MOAT_ALLOC_NCLASSES];
    /* Large objects (> 32 KiB): whole pages, request stored exactly. */
    uint64_t large_objects;
    uint64_t large_requested_bytes;
    uint64_t large_reserved_bytes;
    uint64_t large_allocs;
    /* Totals over slabs and large objects. */
    uint64_t requested_bytes;      /* live bytes asked for */
    uint64_t live_bytes;           /* live bytes rounded to blocks and pages */
    uint64_t cached_bytes;         /* free blocks held by thread caches / in transit */
    uint64_t reserved_bytes;       /* slabs + large objects */
    uint64_t free_committed_bytes; /* free pages not yet decommitted */
    uint64_t committed_bytes;      /* reserved + free_committed (what the cap bounds) */
    uint64_t metadata_bytes;       /* page descriptors, heap and cache structures */
    uint64_t peak_reserved_bytes;
    uint64_t peak_committed_bytes;
    uint64_t limit_bytes;       /* 0 = no cap */
    uint64_t decommitted_bytes; /* given back to the region / kernel, total */
    uint64_t decommit_calls;
    uint64_t alloc_failures; /* allocations refused (ENOMEM) */
    uint64_t threads;        /* thread caches alive */
    double fragmentation;    /* 1 - requested_bytes / reserved_bytes */
};

/* moat_alloc_stats_get / moat_heap_stats_get - a snapshot (each counter is
 * read atomically; the set is consistent when threads are quiet).  EINVAL
 * on NULL. */
int moat_alloc_stats_get(struct moat_alloc_stats *out);
int moat_heap_stats_get(moat_heap *heap, struct moat_alloc_stats *out);

/* moat_alloc_stats_print / moat_heap_stats_print - a table to fd: one line
 * per size class in use, then the totals. */
void moat_alloc_stats_print(int fd);
void moat_heap_stats_print(moat_heap *heap, int fd);

#pragma GCC visibility pop

#ifdef __cplusplus
}
#endif
#endif /* MOAT_ALLOC_H */
