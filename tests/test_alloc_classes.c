/*
 * test_alloc_classes.c - size classes and slab geometry of the allocator:
 * the waste bound of every request size, the reciprocal division used by
 * free, slab tails, and cache sizing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "alloc/alloc_int.h"

static void test_class_of_every_size(void **state)
{
    (void)state;
    m_alloc_classes_init();
    unsigned prev = 0;
    for (size_t n = 0; n <= M_ALLOC_SMALL_MAX; n++) {
        unsigned c = m_alloc_size_class(n);
        assert_true(c < M_ALLOC_NCLASSES);
        /* malloc's table lookup agrees with the arithmetic */
        assert_int_equal(c, m_alloc_size_class_calc(n));
        size_t size = m_alloc_class_size[c];
        /* the class holds n, and is the smallest that does */
        assert_true(size >= n);
        if (c > 0)
            assert_true(m_alloc_class_size[c - 1] < (n ? n : 1));
        /* classes never go down as n grows */
        assert_true(c >= prev);
        prev = c;
        /* the waste bound of include/moat/alloc.h */
        if (n > 128)
            assert_true((size - n) * 8 < n);
        else
            assert_true(size - n <= 16 && (n == 0 || size - n <= 15));
        /* malloc's alignment */
        assert_int_equal(size % 16, 0);
    }
    assert_int_equal(m_alloc_size_class(M_ALLOC_SMALL_MAX), M_ALLOC_NCLASSES - 1);
    printf("checked %u sizes: %d classes, max waste < 12.5%% above 128 bytes\n",
           M_ALLOC_SMALL_MAX + 1, M_ALLOC_NCLASSES);
}

static void test_class_sizes_strictly_increase(void **state)
{
    (void)state;
    for (unsigned c = 1; c < M_ALLOC_NCLASSES; c++)
        assert_true(m_alloc_class_size[c] > m_alloc_class_size[c - 1]);
    /* every power of two from 16 to 32 KiB is a class (aligned allocation
     * relies on it) */
    for (uint32_t p = 16; p <= M_ALLOC_SMALL_MAX; p <<= 1)
        assert_int_equal(m_alloc_class_size[m_alloc_size_class(p)], p);
}

static void test_reciprocal_division(void **state)
{
    (void)state;
    for (unsigned c = 0; c < M_ALLOC_NCLASSES; c++) {
        uint32_t size = m_alloc_class_size[c];
        for (uint32_t off = 0; off < 65536; off++) {
            uint32_t q = (uint32_t)(((uint64_t)off * m_alloc_class_magic[c]) >> 32);
            if (q != off / size)
                fail_msg("class %u size %u offset %u: %u != %u", c, size, off, q, off / size);
        }
    }
}

/* free's block-start test (alloc_int.h): divisibility by one multiply and
 * the bound of the slab's blocks, against plain arithmetic, for every class
 * and every offset a slab can have. */
/* Transfer slots hold at most 1/2048 of a capped heap a class, in
 * [32 KiB, 512 KiB] (an enclave's 64 MiB heap: 32 KiB), 512 KiB uncapped. */
static void test_transfer_bytes(void **state)
{
    (void)state;
    assert_int_equal(m_alloc_xfer_bytes(0), 512u << 10);
    assert_int_equal(m_alloc_xfer_bytes(16u << 20), 32u << 10);
    assert_int_equal(m_alloc_xfer_bytes(64u << 20), 32u << 10);
    assert_int_equal(m_alloc_xfer_bytes(256u << 20), 128u << 10);
    assert_int_equal(m_alloc_xfer_bytes((size_t)4 << 30), 512u << 10);
    /* all classes full stay under 4% of the cap */
    assert_true((uint64_t)m_alloc_xfer_bytes(256u << 20) * M_ALLOC_NCLASSES * 100 <
                (uint64_t)4 * (256u << 20));
}

static void test_block_start_check(void **state)
{
    (void)state;
    m_alloc_classes_init();
    /* entry 0 is for pages that are not a slab's: no offset passes */
    for (uint32_t off = 0; off < M_ALLOC_MAX_SLAB_PAGES * (uint32_t)M_ALLOC_PAGE; off++)
        assert_false(off * m_alloc_class_check[0].mul < m_alloc_class_check[0].limit);
    for (unsigned c = 0; c < M_ALLOC_NCLASSES; c++) {
        uint32_t size = m_alloc_class_size[c];
        const struct m_alloc_class_check *ck = &m_alloc_class_check[c + 1];
        assert_true(ck->limit > 0);
        uint32_t limit = m_alloc_class_info[c].slab_pages * (uint32_t)M_ALLOC_PAGE;
        for (uint32_t off = 0; off < limit; off++) {
            bool fast = off * ck->mul < ck->limit;
            bool exact = off % size == 0 && off / size < m_alloc_class_info[c].capacity;
            if (fast != exact)
                fail_msg("class %u size %u offset %u: fast %d exact %d", c, size, off, fast, exact);
        }
    }
}

static void test_slab_geometry(void **state)
{
    (void)state;
    m_alloc_classes_init();
    for (unsigned c = 0; c < M_ALLOC_NCLASSES; c++) {
        const struct m_alloc_class_info *ci = &m_alloc_class_info[c];
        uint32_t size = m_alloc_class_size[c];
        uint32_t nbytes = ci->slab_pages * (uint32_t)M_ALLOC_PAGE;
        assert_true(ci->slab_pages >= 1 && ci->slab_pages <= M_ALLOC_MAX_SLAB_PAGES);
        assert_int_equal(ci->capacity, nbytes / size);
        assert_true(ci->capacity >= 1 && ci->capacity <= 65535);
        /* a slab holds a few blocks of its class when 64 KiB allows, one
         * if the class is whole pages */
        uint32_t want = (M_ALLOC_MAX_SLAB_PAGES * (uint32_t)M_ALLOC_PAGE) / size;
        if (size % M_ALLOC_PAGE == 0)
            assert_int_equal(ci->capacity, 1);
        else
            assert_true(ci->capacity >= (want < 4 ? want : 4));
        /* tail waste: at most 1/32 of the slab, except 18 KiB blocks (3 in 14
         * pages leave 3.6%): below 4% for every class */
        uint32_t tail = nbytes - ci->capacity * size;
        if (tail * 25 > nbytes || (tail * 32 > nbytes && size != 18432))
            fail_msg("class %u (%u bytes): tail %u of %u", c, size, tail, nbytes);
        assert_true(ci->batch >= 1 && ci->batch <= 32);
        assert_true(ci->bin_cap >= ci->batch);
    }
    /* the examples of class.c's banner */
    assert_int_equal(m_alloc_class_info[m_alloc_size_class(1024)].slab_pages, 1);
    assert_int_equal(m_alloc_class_info[m_alloc_size_class(3584)].slab_pages, 7);
    assert_int_equal(m_alloc_class_info[m_alloc_size_class(3584)].capacity, 8);
    assert_int_equal(m_alloc_class_info[m_alloc_size_class(32768)].capacity, 1);
    assert_int_equal(m_alloc_class_info[m_alloc_size_class(8192)].slab_pages, 2);
}

static void test_link_encoding(void **state)
{
    (void)state;
    for (int round = 0; round < 64; round++) {
        uintptr_t key[2] = {(uintptr_t)m_alloc_random(), (uintptr_t)m_alloc_random()};
        uintptr_t blk = 0x7f0000123450 + ((uintptr_t)round << 20), next = blk + 0x10010;
        uintptr_t enc = m_alloc_enc(key, blk, next);
        assert_int_equal(m_alloc_dec(key, blk, enc), next);
        assert_int_equal(m_alloc_dec(key, blk, m_alloc_enc(key, blk, 0)), 0);
        /* not the plain pointer */
        assert_true(enc != next);
        /* an overflow that rewrites the link's low byte or bytes: the
         * decoded link's top 23 bits change (far outside any heap) */
        for (uintptr_t x = 1; x < 0x10000; x++)
            if ((m_alloc_dec(key, blk, enc ^ x) ^ next) >> 41 == 0)
                fail_msg("key %lx: low bytes ^ %lx decode near the link", (unsigned long)key[0],
                         (unsigned long)x);
        /* a link copied to any other block within 1 MiB decodes far away */
        for (uintptr_t d = 16; d < ((uintptr_t)1 << 20); d += 16)
            if ((m_alloc_dec(key, blk + d, enc) ^ next) >> 41 == 0 ||
                (m_alloc_dec(key, blk - d, enc) ^ next) >> 41 == 0)
                fail_msg("key %lx: a copy %lu bytes away decodes near the link",
                         (unsigned long)key[0], (unsigned long)d);
    }
}

static int setup(void **state)
{
    (void)state;
    m_alloc_classes_init(); /* the class lookup table */
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_class_of_every_size),
        cmocka_unit_test(test_class_sizes_strictly_increase),
        cmocka_unit_test(test_reciprocal_division),
        cmocka_unit_test(test_block_start_check),
        cmocka_unit_test(test_transfer_bytes),
        cmocka_unit_test(test_slab_geometry),
        cmocka_unit_test(test_link_encoding),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
