/*
 * class.c - size classes: their sizes, the reciprocals that turn an offset
 * in a slab into a block index without a division, and each class's slab
 * geometry and thread-cache sizing.
 *
 * Slab geometry.  A slab is the smallest run of pages (at most 16) that
 * holds at least a few blocks and wastes at most 1/32 of itself in the tail
 * that no block fits in (or, where no run does, the least: 18 KiB blocks
 * leave 3.6% of 14 pages; every other class stays under 1/32).  Small slabs keep the memory a class
 * holds close to what it uses, which matters more in a 64 MiB heap than a few more trips to the
 * page allocator: classes up to 1 KiB fit in one page, 3.5 KiB blocks take 7 pages (8 blocks, no
 * tail), 32 KiB blocks 16 pages (2 blocks).
 *
 * Cache sizing.  A thread moves blocks between its cache and the class in
 * batches of about 8 KiB (at most 32 blocks), and caches at most about
 * 32 KiB (at most 256 blocks, at least one) of one class; the per-thread
 * byte cap of tcache.c bounds the sum.
 */
#include "alloc/alloc_int.h"

#define M_SIZE8(b)                                                                                 \
    M_ALLOC_CLASS_SIZE(b), M_ALLOC_CLASS_SIZE(b + 1), M_ALLOC_CLASS_SIZE(b + 2),                   \
        M_ALLOC_CLASS_SIZE(b + 3), M_ALLOC_CLASS_SIZE(b + 4), M_ALLOC_CLASS_SIZE(b + 5),           \
        M_ALLOC_CLASS_SIZE(b + 6), M_ALLOC_CLASS_SIZE(b + 7)
#define M_MAGIC8(b)                                                                                \
    M_ALLOC_CLASS_MAGIC(b), M_ALLOC_CLASS_MAGIC(b + 1), M_ALLOC_CLASS_MAGIC(b + 2),                \
        M_ALLOC_CLASS_MAGIC(b + 3), M_ALLOC_CLASS_MAGIC(b + 4), M_ALLOC_CLASS_MAGIC(b + 5),        \
        M_ALLOC_CLASS_MAGIC(b + 6), M_ALLOC_CLASS_MAGIC(b + 7)

const uint32_t m_alloc_class_size[M_ALLOC_NCLASSES] = {
    M_SIZE8(0u),  M_SIZE8(8u),  M_SIZE8(16u), M_SIZE8(24u), M_SIZE8(32u),
    M_SIZE8(40u), M_SIZE8(48u), M_SIZE8(56u), M_SIZE8(64u),
};

const uint32_t m_alloc_class_magic[M_ALLOC_NCLASSES] = {
    M_MAGIC8(0u),  M_MAGIC8(8u),  M_MAGIC8(16u), M_MAGIC8(24u), M_MAGIC8(32u),
    M_MAGIC8(40u), M_MAGIC8(48u), M_MAGIC8(56u), M_MAGIC8(64u),
};

_Static_assert(M_ALLOC_CLASS_SIZE(M_ALLOC_NCLASSES - 1) == M_ALLOC_SMALL_MAX,
               "the last class must be the largest small size");

struct m_alloc_class_info m_alloc_class_info[M_ALLOC_NCLASSES];
struct m_alloc_class_check m_alloc_class_check[M_ALLOC_NCLASSES + 1];
uint8_t m_alloc_class_lut[M_ALLOC_LUT_SIZE];

static uint32_t clamp32(uint32_t v, uint32_t lo, uint32_t hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

void m_alloc_classes_init(void)
{
    for (unsigned i = 0; i < M_ALLOC_LUT_SIZE; i++)
        m_alloc_class_lut[i] = (uint8_t)m_alloc_size_class_calc(16u * i);
    for (unsigned c = 0; c < M_ALLOC_NCLASSES; c++) {
        uint32_t size = m_alloc_class_size[c];
        uint32_t want_blocks =
            clamp32((uint32_t)(M_ALLOC_MAX_SLAB_PAGES * M_ALLOC_PAGE) / size, 1, 4);
        /* whole pages: one block a slab - no tail, and no slab half full of
         * long-lived buffers */
        if (size % M_ALLOC_PAGE == 0)
            want_blocks = 1;
        uint32_t best = 0, best_waste = UINT32_MAX;
        for (uint32_t k = 1; k <= M_ALLOC_MAX_SLAB_PAGES; k++) {
            uint32_t nbytes = k * (uint32_t)M_ALLOC_PAGE;
            uint32_t blocks = nbytes / size;
            if (blocks < want_blocks)
                continue;
            uint32_t waste = nbytes - blocks * size;
            if (waste * 32 <= nbytes) {
                best = k;
                break;
            }
            /* no k meets 1/32: keep the least waste in proportion */
            if (best == 0 ||
                (uint64_t)waste * best * M_ALLOC_PAGE < (uint64_t)best_waste * nbytes) {
                best = k;
                best_waste = waste;
            }
        }
        struct m_alloc_class_info *ci = &m_alloc_class_info[c];
        ci->slab_pages = best;
        ci->capacity = best * (uint32_t)M_ALLOC_PAGE / size;
        ci->cap_magic = (uint32_t)(((uint64_t)1 << 32) / ci->capacity - (ci->capacity == 1));
        ci->used_bytes = ci->capacity * size;
        uint32_t mul = (uint32_t)(((uint64_t)1 << 32) / size + 1);
        m_alloc_class_check[c + 1].mul = mul;
        m_alloc_class_check[c + 1].limit =
            ci->capacity * (uint32_t)((uint64_t)size * mul - ((uint64_t)1 << 32));
        ci->batch = clamp32(8192 / size, 1, 32);
        /* a cached block pins its slab: classes whose slabs hold a few
         * blocks cache no more than a slab's worth */
        ci->bin_cap = clamp32(32768 / size, 1, 256);
        if (ci->capacity <= 4 && ci->bin_cap > ci->capacity)
            ci->bin_cap = ci->capacity;
        if (ci->batch > ci->bin_cap)
            ci->batch = ci->bin_cap;
    }
}

_Static_assert(M_ALLOC_CLASS_SIZE(M_ALLOC_REMOTE_MIN_CLASS) == 256u,
               "remote frees are for blocks below 256 bytes");
