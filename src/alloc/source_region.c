/*
 * source_region.c - the page source over moat regions: each reservation is
 * an area allocated with MOAT_COMMIT_ON_DEMAND (pages are committed by the
 * engine at first touch and count against its budget), pages go back with
 * moat_uncommit, areas with moat_dealloc.  Or, for a heap made on a region
 * the caller owns, that one region: handed out once, uncommitted when the
 * heap is destroyed, never freed.
 */
#include "alloc/alloc.h"

#include <moat.h>

#include <errno.h>
#include <stdint.h>

static int region_reserve(struct m_alloc_source *src, size_t nbytes, size_t align, void **out)
{
    if (src->region) {
        if (src->region_taken || nbytes > src->region_nbytes)
            return ENOMEM;
        src->region_taken = true;
        *out = src->region;
        return 0;
    }
    unsigned shift = (unsigned)__builtin_ctzll((unsigned long long)align);
    int flags = MOAT_COMMIT_ON_DEMAND | (shift > 12 ? (int)MOAT_ALIGNED(shift) : 0);
    return moat_alloc(NULL, nbytes, flags, NULL, NULL, out);
}

static int region_decommit(struct m_alloc_source *src, void *addr, size_t nbytes)
{
    (void)src;
    return moat_uncommit(addr, nbytes);
}

static int region_release(struct m_alloc_source *src, void *addr, size_t nbytes)
{
    if (src->region) {
        src->region_taken = false;
        return moat_uncommit(addr, nbytes);
    }
    return moat_dealloc(addr, nbytes);
}

void m_alloc_source_region(struct m_alloc_source *src, void *region, size_t nbytes)
{
    src->name = region ? "region (caller's)" : "region";
    src->reserve = region_reserve;
    src->decommit = region_decommit;
    src->release = region_release;
    src->region = region;
    src->region_nbytes = nbytes;
    src->region_taken = false;
}
