/*
 * source_region.c - the page source over moat regions: each reservation is
 * an area allocated with MOAT_COMMIT_ON_DEMAND (pages are committed by the
 * engine at first touch and count against its budget), pages go back with
 * moat_uncommit, areas with moat_dealloc.  Or, for a heap made on a region
 * the caller owns, that one region: handed out once, uncommitted when the
 * heap is destroyed, never freed.
 *
 * The calls into the region layer are marked internal (m_engine_internal):
 * anything the engine allocates meanwhile must not come from this heap,
 * whose lock the calling thread may hold.
 *
 * In the child of a fork() the engine is gone and the heap's arenas are
 * plain memory (engine.c): new space then comes from the mmap source, and
 * pages given back inside the old range are simply discarded.
 */
#include "alloc/alloc.h"
#include "common/engine.h"
#include "region/region.h"

#include <moat.h>

#include <errno.h>
#include <stdint.h>
#include <sys/mman.h>

static int region_reserve(struct m_alloc_source *src, size_t nbytes, size_t align, void **out)
{
    if (src->region) {
        if (src->region_taken || nbytes > src->region_nbytes)
            return ENOMEM;
        src->region_taken = true;
        *out = src->region;
        return 0;
    }
    if (atomic_load_explicit(&m_engine_forked, memory_order_relaxed)) {
        struct m_alloc_source plain;
        m_alloc_source_mmap(&plain);
        return plain.reserve(&plain, nbytes, align, out);
    }
    unsigned shift = (unsigned)__builtin_ctzll((unsigned long long)align);
    int flags = MOAT_COMMIT_ON_DEMAND | (shift > 12 ? (int)MOAT_ALIGNED(shift) : 0);
    m_engine_internal++;
    int err = moat_alloc(NULL, nbytes, flags, NULL, NULL, out);
    m_engine_internal--;
    return err;
}

static int region_decommit(struct m_alloc_source *src, void *addr, size_t nbytes)
{
    (void)src;
    if (atomic_load_explicit(&m_engine_forked, memory_order_relaxed))
        return madvise(addr, nbytes, MADV_DONTNEED) == 0 ? 0 : errno;
    m_engine_internal++;
    int err = moat_uncommit(addr, nbytes);
    m_engine_internal--;
    return err;
}

static int region_decommit_many(struct m_alloc_source *src, const struct iovec *ranges, size_t n)
{
    (void)src;
    if (atomic_load_explicit(&m_engine_forked, memory_order_relaxed) || n > M_REGION_UNCOMMIT_MAX)
        return ENOTSUP; /* one by one */
    m_engine_internal++;
    int err = m_region_uncommit_ranges(ranges, n);
    m_engine_internal--;
    return err;
}

static int region_release(struct m_alloc_source *src, void *addr, size_t nbytes)
{
    if (atomic_load_explicit(&m_engine_forked, memory_order_relaxed))
        return src->region ? (madvise(addr, nbytes, MADV_DONTNEED) == 0 ? 0 : errno)
                           : (munmap(addr, nbytes) == 0 ? 0 : errno);
    int err;
    m_engine_internal++;
    if (src->region) {
        src->region_taken = false;
        err = moat_uncommit(addr, nbytes);
    } else {
        err = moat_dealloc(addr, nbytes);
    }
    m_engine_internal--;
    return err;
}

void m_alloc_source_region(struct m_alloc_source *src, void *region, size_t nbytes)
{
    src->name = region ? "region (caller's)" : "region";
    src->reserve = region_reserve;
    src->decommit = region_decommit;
    src->decommit_many = region_decommit_many;
    src->release = region_release;
    src->region = region;
    src->region_nbytes = nbytes;
    src->region_taken = false;
}
