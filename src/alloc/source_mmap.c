/*
 * source_mmap.c - the page source over plain anonymous memory: MAP_NORESERVE
 * reservations (pages cost nothing until touched), MADV_DONTNEED to give
 * pages back (they read as zeros again), munmap to release.  Alignment is
 * had by over-reserving and trimming both ends.
 */
#include "alloc/alloc.h"

#include <errno.h>
#include <stdint.h>
#include <sys/mman.h>

static int mmap_reserve(struct m_alloc_source *src, size_t nbytes, size_t align, void **out)
{
    (void)src;
    size_t total = nbytes + align;
    if (total < nbytes)
        return ENOMEM;
    void *p = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (p == MAP_FAILED)
        return errno ? errno : ENOMEM;
    uintptr_t a = (uintptr_t)p;
    uintptr_t aligned = (a + align - 1) & ~((uintptr_t)align - 1);
    if (aligned > a)
        munmap(p, aligned - a);
    size_t tail = (a + total) - (aligned + nbytes);
    if (tail)
        munmap((void *)(aligned + nbytes), tail);
    *out = (void *)aligned;
    return 0;
}

static int mmap_decommit(struct m_alloc_source *src, void *addr, size_t nbytes)
{
    (void)src;
    return madvise(addr, nbytes, MADV_DONTNEED) == 0 ? 0 : errno;
}

static int mmap_release(struct m_alloc_source *src, void *addr, size_t nbytes)
{
    (void)src;
    return munmap(addr, nbytes) == 0 ? 0 : errno;
}

void m_alloc_source_mmap(struct m_alloc_source *src)
{
    src->name = "mmap";
    src->reserve = mmap_reserve;
    src->decommit = mmap_decommit;
    src->decommit_many = NULL;
    src->release = mmap_release;
    src->region = NULL;
    src->region_nbytes = 0;
    src->region_taken = false;
}
