/*
 * test_region_init.c - pages committed at start (m_region_commit_init, the
 * enclave's initial user space that libmoat_preload.so commits from
 * MOAT_USER_INIT): they count as committed at once and never stop counting,
 * cost no resident page until touched, read as zeros at the first touch and
 * after an uncommit or a dealloc, are not counted twice by a COMMIT_NOW area
 * over them, and stay under the budget when touched (evicted and read back
 * like any page).
 */
#include "moat_test.h"

#include "region/region.h"

#define PG 4096UL

static char *base;

/* moat with one-page faults (exact counts) and a budget of `budget` pages. */
static void start(size_t budget_pages)
{
    struct moat_options o = {
        .budget = budget_pages * PG, .log_level = -1, .fault_ahead = 1, .range_size = 1ULL << 30};
    base = mt_init_base(&o);
}

#define stats    mt_stats
#define teardown mt_teardown_shutdown

static void test_counts_at_once(void **state)
{
    (void)state;
    start(0);
    size_t pages = 1;
    assert_int_equal(m_region_commit_init(base + 1, 64 * PG, &pages), EINVAL);
    assert_int_equal(pages, 0);
    assert_int_equal(m_region_commit_init(base, 64 * PG + 1, NULL), EINVAL);
    assert_int_equal(m_region_commit_init(base + (1ULL << 30) - PG, 2 * PG, NULL), EINVAL);
    assert_int_equal(m_region_commit_init(base + 16 * PG, 64 * PG, &pages), 0);
    assert_int_equal(pages, 64);
    struct moat_stats s = stats();
    assert_int_equal(s.committed_pages, 64);
    assert_int_equal(s.peak_committed_pages, 64);
    assert_int_equal(s.resident_pages, 0);
    assert_int_equal(m_region_commit_init(base, PG, NULL), EBUSY); /* once */
}

static void test_touch_uncommit_dealloc(void **state)
{
    (void)state;
    start(0);
    assert_int_equal(m_region_commit_init(base, 64 * PG, NULL), 0);
    void *p;
    assert_int_equal(moat_alloc(base, 128 * PG, MOAT_COMMIT_ON_DEMAND | MOAT_FIXED, NULL, NULL, &p),
                     0);
    assert_ptr_equal(p, base);
    assert_int_equal(stats().committed_pages, 64);
    /* the first touch of a page committed at start: zeros, no new commit */
    assert_int_equal(base[5 * PG], 0);
    base[5 * PG] = 'a';
    struct moat_stats s = stats();
    assert_int_equal(s.committed_pages, 64);
    assert_int_equal(s.resident_pages, 1);
    /* past Init: committed on demand */
    base[100 * PG] = 'b';
    assert_int_equal(stats().committed_pages, 65);
    /* uncommit: Init pages stay committed and read as zeros again */
    assert_int_equal(moat_uncommit(base, 128 * PG), 0);
    s = stats();
    assert_int_equal(s.committed_pages, 64);
    assert_int_equal(s.resident_pages, 0);
    assert_int_equal(base[5 * PG], 0);
    base[7 * PG] = 'c';
    /* dealloc and a new area over them: still committed, zeros */
    assert_int_equal(moat_dealloc(base, 128 * PG), 0);
    s = stats();
    assert_int_equal(s.committed_pages, 64);
    assert_int_equal(s.resident_pages, 0);
    assert_int_equal(s.peak_committed_pages, 65);
    assert_int_equal(moat_alloc(base, 32 * PG, MOAT_COMMIT_ON_DEMAND | MOAT_FIXED, NULL, NULL, &p),
                     0);
    assert_int_equal(base[7 * PG], 0);
    assert_int_equal(stats().committed_pages, 64);
    /* a COMMIT_NOW area over Init does not count its pages twice */
    assert_int_equal(moat_dealloc(base, 32 * PG), 0);
    assert_int_equal(
        moat_alloc(base + 32 * PG, 64 * PG, MOAT_COMMIT_NOW | MOAT_FIXED, NULL, NULL, &p), 0);
    assert_int_equal(stats().committed_pages, 64 + 32);
    assert_int_equal(base[40 * PG], 0);
    base[40 * PG] = 'd';
    assert_int_equal(moat_dealloc(base + 32 * PG, 64 * PG), 0);
    assert_int_equal(stats().committed_pages, 64);
}

static void test_under_budget(void **state)
{
    (void)state;
    const size_t n = 512, budget = 32;
    start(budget);
    assert_int_equal(m_region_commit_init(base, n * PG, NULL), 0);
    void *p;
    assert_int_equal(moat_alloc(NULL, n * PG, MOAT_COMMIT_ON_DEMAND, NULL, NULL, &p), 0);
    assert_ptr_equal(p, base); /* first fit: the first area is on Init */
    struct moat_stats s = stats();
    assert_int_equal(s.committed_pages, n);
    assert_int_equal(s.resident_pages, 0);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(base[i * PG], 0);
        memset(base + i * PG, (int)(i & 0x7f) + 1, 64);
    }
    for (size_t i = 0; i < n; i++)
        assert_int_equal(base[i * PG + 63], (char)((i & 0x7f) + 1));
    s = stats();
    assert_true(s.peak_resident_pages <= budget);
    assert_true(s.evictions_written > 0);
    assert_true(s.faults_pagein > 0);
    assert_int_equal(s.committed_pages, n);
    assert_int_equal(s.peak_committed_pages, n);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_counts_at_once, teardown),
        cmocka_unit_test_teardown(test_touch_uncommit_dealloc, teardown),
        cmocka_unit_test_teardown(test_under_budget, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
