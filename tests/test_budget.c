/*
 * test_budget.c - the budget and reclaim layer through the engine: the
 * background reclaimer keeps residency between the watermarks, clean pages
 * are dropped without a write, the reclaim list's second chance keeps a
 * page that is written after it was loaded, and unlimited budgets never
 * evict.
 */
#include "moat_test.h"

#include <stdbool.h>
#include <time.h>

#define PG 4096UL

static void start_with(size_t budget_pages, unsigned low, unsigned high)
{
    struct moat_options o = {.budget = budget_pages * PG,
                             .low_pct = low,
                             .high_pct = high,
                             .log_level = -1,
                             .range_size = 1ULL << 30};
    assert_int_equal(moat_init(&o), 0);
}

/* wait_below - poll until resident <= limit or about 10 s pass (the
 * reclaimer is slow under ThreadSanitizer on a loaded machine). */
static uint64_t wait_below(uint64_t limit)
{
    uint64_t r = MT_STAT(resident_pages);
    for (int i = 0; i < 1000 && r > limit; i++) {
        usleep(10000);
        r = MT_STAT(resident_pages);
    }
    return r;
}

/* on_demand - an area of npages committed on demand. */
static uint8_t *on_demand(size_t npages)
{
    uint8_t *p;
    assert_int_equal(moat_alloc(NULL, npages * PG, MOAT_COMMIT_ON_DEMAND, NULL, NULL, (void **)&p),
                     0);
    return p;
}

/* burst - write the first byte of each of npages fresh pages. */
static uint8_t *burst(size_t npages)
{
    uint8_t *p = on_demand(npages);
    for (size_t i = 0; i < npages; i++)
        p[i * PG] = (uint8_t)i;
    return p;
}

static void test_watermarks(void **state)
{
    (void)state;
    start_with(1024, 50, 75);
    burst(4096);
    /* The reclaimer wakes above high and reclaims down to low, so once the
     * burst is over residency settles at or below high (768): between the
     * watermarks if the last pages came after the last reclaim, at low if
     * they pushed it over high again.  (Waiting for low itself failed now
     * and then under TSan: a burst that ends between the watermarks leaves
     * nothing to reclaim.) */
    uint64_t r = wait_below(768);
    assert_true(r <= 768);
    assert_true(MT_STAT(peak_resident_pages) <= 1024);
    assert_true(MT_STAT(evictions_written) >= 4096 - 1024);
    /* the evictions' page-table changes are counted, and batched: the
     * burst's victims are adjacent, so a reclaim batch write-protects in a
     * few runs and zaps in one call (one range per madvise where
     * process_madvise is missing: still a run a call) */
    uint64_t wp = MT_STAT(wp_calls), zap = MT_STAT(zap_calls), ev = MT_STAT(evictions_written);
    print_message("evictions %llu: %llu write-protect calls, %llu zap calls\n",
                  (unsigned long long)ev, (unsigned long long)wp, (unsigned long long)zap);
    assert_true(wp > 0 && wp <= ev / 4);
    assert_true(zap > 0 && zap <= ev / 4);
    moat_shutdown();
}

/* Without percentages the watermarks sit just below the budget: high
 * leaves 1% of it free (at least a batch of 32), low is 2% (at least two
 * batches) below high.  For 4096 pages: high 4056, low 3975.  After a burst
 * residency settles between them, give or take a batch of synchronous
 * reclaim that ran alongside the reclaimer; the old 80/90% defaults would
 * leave it near 3276. */
static void test_default_watermarks(void **state)
{
    (void)state;
    start_with(4096, 0, 0);
    burst(8192);
    uint64_t r = wait_below(4056);
    printf("default watermarks: resident %llu after the burst\n", (unsigned long long)r);
    assert_true(r <= 4056);
    assert_true(r >= 3975 - 64);
    moat_shutdown();
    /* only high given: low follows it down rather than sit above it */
    start_with(4096, 0, 50);
    burst(8192);
    assert_true(wait_below(2048) <= 2048);
    moat_shutdown();
}

/* Page-ins along a stream read the pages after the faulting one (upwards)
 * or before it (downwards) in the same store submission; every page still
 * holds what was written. */
static void sweep_check(uint8_t *p, size_t npages, bool down, uint8_t salt)
{
    for (size_t k = 0; k < npages; k++) {
        size_t i = down ? npages - 1 - k : k;
        uint64_t *w = (uint64_t *)(p + i * PG);
        assert_int_equal(w[0], i * 31 + salt);
        assert_int_equal(w[PG / 8 - 1], ~(uint64_t)i);
    }
}

static void test_readahead_streams(void **state)
{
    (void)state;
    start_with(256, 0, 0);
    enum { N = 2048 };
    uint8_t *p = on_demand(N);
    for (size_t i = 0; i < N; i++) {
        uint64_t *w = (uint64_t *)(p + i * PG);
        w[0] = i * 31 + 7;
        w[PG / 8 - 1] = ~(uint64_t)i;
    }
    for (int pass = 0; pass < 4; pass++) {
        bool down = pass % 2 == 0;
        struct moat_stats a, b;
        assert_int_equal(moat_stats(&a), 0);
        sweep_check(p, N, down, 7);
        assert_int_equal(moat_stats(&b), 0);
        uint64_t in = b.faults_pagein - a.faults_pagein,
                 ahead = b.pagein_readahead - a.pagein_readahead;
        printf("%s sweep: %llu page-ins, %llu read ahead\n", down ? "downward" : "upward",
               (unsigned long long)in, (unsigned long long)ahead);
        /* most of the range was evicted; all but the first faults of the
         * stream read ahead */
        assert_true(in >= N / 2);
        assert_true(ahead * 4 >= in * 3);
    }
    assert_int_equal(MT_STAT(integrity_failures), 0);
    moat_shutdown();
}

/* hot_set_pageins - under a 1024-page budget, 64 hot pages rewritten
 * between every two pages of a cold stream of 16384 pages written once:
 * page-ins during the stream are refaults of the hot set. */
static uint64_t hot_set_pageins(const char *sample, const char *by)
{
    setenv("MOAT_RECLAIM_SAMPLE", sample, 1);
    setenv("MOAT_SAMPLE_BY", by, 1);
    setenv("MOAT_REFAULT", "0", 1); /* write sampling alone */
    start_with(1024, 0, 0);
    unsetenv("MOAT_RECLAIM_SAMPLE");
    unsetenv("MOAT_REFAULT");
    unsetenv("MOAT_SAMPLE_BY");
    enum { HOT = 64, COLD = 16384 };
    uint8_t *hot = on_demand(HOT), *cold = on_demand(COLD);
    for (size_t h = 0; h < HOT; h++)
        hot[h * PG] = 1;
    uint64_t before = MT_STAT(faults_pagein);
    for (size_t i = 0; i < COLD; i++) {
        cold[i * PG] = (uint8_t)i;
        for (size_t h = 0; h < HOT; h++)
            hot[h * PG + i % PG]++;
    }
    uint64_t in = MT_STAT(faults_pagein) - before;
    /* every hot byte written COLD / PG times plus the first */
    for (size_t h = 0; h < HOT; h++)
        for (size_t b = 0; b < PG; b++)
            assert_int_equal(hot[h * PG + b], (uint8_t)((b == 0 ? 1 : 0) + COLD / PG));
    assert_int_equal(MT_STAT(integrity_failures), 0);
    moat_shutdown();
    printf("MOAT_RECLAIM_SAMPLE=%s MOAT_SAMPLE_BY=%s: %llu page-ins of the hot set\n", sample, by,
           (unsigned long long)in);
    return in;
}

/* read_set_pageins - under a 1024-page budget, 16 hot pages only read
 * between every two pages of a cold stream of 16384 pages written once;
 * page-ins during the stream are refaults of the hot set.  The hot set's
 * contents are checked at the end. */
static uint64_t read_set_pageins(const char *refault, uint64_t *hot_out)
{
    setenv("MOAT_REFAULT", refault, 1);
    start_with(1024, 0, 0);
    unsetenv("MOAT_REFAULT");
    enum { HOT = 16, COLD = 16384 };
    uint8_t *hot = on_demand(HOT), *cold = on_demand(COLD);
    for (size_t h = 0; h < HOT; h++)
        memset(hot + h * PG, (int)(h + 1), PG);
    uint64_t before = MT_STAT(faults_pagein), sum = 0;
    for (size_t i = 0; i < COLD; i++) {
        cold[i * PG] = (uint8_t)i;
        for (size_t h = 0; h < HOT; h++)
            sum += hot[h * PG + (i * 64) % PG];
    }
    uint64_t in = MT_STAT(faults_pagein) - before;
    assert_int_equal(sum, (uint64_t)COLD * HOT * (HOT + 1) / 2);
    *hot_out = MT_STAT(pagein_refault_hot);
    assert_int_equal(MT_STAT(integrity_failures), 0);
    moat_shutdown();
    printf("MOAT_REFAULT=%s: %llu page-ins of a read-only hot set, %llu came back hot\n", refault,
           (unsigned long long)in, (unsigned long long)*hot_out);
    return in;
}

/* Reads are invisible, so without refault detection a hot set that is only
 * read goes round the list and out every lap; a page that comes back soon
 * after its eviction is kept for its next laps. */
static void test_refault_hot(void **state)
{
    (void)state;
    uint64_t hot_on = 0, hot_off = 0;
    uint64_t on = read_set_pageins("1", &hot_on), off = read_set_pageins("0", &hot_off);
    assert_int_equal(hot_off, 0);
    assert_true(hot_on > 0);
    assert_true(off >= 128);        /* FIFO: the hot set goes out lap after lap */
    assert_true(on * 5 <= off * 4); /* measured 0.46-0.57 of it, 0.67 under TSan */
}

/* Write sampling keeps a hot set that is written, not read: without it
 * every written page goes round the FIFO and out, however hot. */
static void test_write_sampling(void **state)
{
    (void)state;
    uint64_t off = hot_set_pageins("0", "auto");
    uint64_t by_hash = hot_set_pageins("1", "hash"), by_wp = hot_set_pageins("1", "wp");
    uint64_t by_auto = hot_set_pageins("1", "auto");
    assert_true(off >= 256);
    /* by content 73-74 against 920-981 here, sanitizers included; by
     * write protection 64-307: a write that is still
     * in the fault handler when the hand comes round loses the page (ASan
     * slows the handler).  auto: the probes choose (write protection
     * here: too few of them are in the hot set to say more) */
    assert_true(by_hash * 3 <= off);
    assert_true(by_wp * 2 <= off);
    assert_true(by_auto * 2 <= off);
    struct moat_options o = {.budget = 256 * PG, .log_level = -1, .range_size = 1ULL << 30};
    setenv("MOAT_RECLAIM_SAMPLE", "sometimes", 1);
    assert_int_equal(moat_init(&o), EINVAL);
    unsetenv("MOAT_RECLAIM_SAMPLE");
    setenv("MOAT_SAMPLE_BY", "dice", 1);
    assert_int_equal(moat_init(&o), EINVAL);
    unsetenv("MOAT_SAMPLE_BY");
}

static void test_clean_pages_not_rewritten(void **state)
{
    (void)state;
    start_with(256, 80, 90);
    uint8_t *p = on_demand(1024);
    for (size_t i = 0; i < 1024; i++)
        p[i * PG] = (uint8_t)(i + 1);
    uint64_t written = MT_STAT(evictions_written);
    /* two read-only sweeps: every page comes back clean and leaves clean */
    unsigned sum = 0;
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < 1024; i++)
            sum += p[i * PG];
    assert_true(sum > 0);
    uint64_t clean = MT_STAT(evictions_clean);
    printf("read-only sweeps: %llu clean drops, %llu more writes\n", (unsigned long long)clean,
           (unsigned long long)(MT_STAT(evictions_written) - written));
    assert_true(clean > 1024);
    /* only the pages still dirty from the write pass (at most the budget)
     * are written, once */
    assert_true(MT_STAT(evictions_written) - written <= 256);
    moat_shutdown();
}

static void test_unlimited_never_evicts(void **state)
{
    (void)state;
    start_with(0, 0, 0);
    uint8_t *p = on_demand(4096);
    for (size_t i = 0; i < 4096; i++)
        p[i * PG] = 1;
    assert_int_equal(MT_STAT(budget_pages), 0);
    assert_int_equal(MT_STAT(resident_pages), 4096);
    assert_int_equal(MT_STAT(evictions_written), 0);
    assert_int_equal(moat_dealloc(p, 4096 * PG), 0);
    assert_int_equal(MT_STAT(resident_pages), 0);
    assert_int_equal(MT_STAT(committed_pages), 0);
    moat_shutdown();
}

static void test_bad_watermarks(void **state)
{
    (void)state;
    struct moat_options o = {.budget = 1024 * PG, .low_pct = 90, .high_pct = 50, .log_level = -1};
    assert_int_equal(moat_init(&o), EINVAL);
    o = (struct moat_options){.budget = 8 * PG, .log_level = -1}; /* below 16 pages */
    assert_int_equal(moat_init(&o), EINVAL);
    o = (struct moat_options){.batch_pages = 5000, .log_level = -1};
    assert_int_equal(moat_init(&o), EINVAL);
    o = (struct moat_options){.fault_ahead = 33, .log_level = -1};
    assert_int_equal(moat_init(&o), EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_watermarks),
        cmocka_unit_test(test_default_watermarks),
        cmocka_unit_test(test_readahead_streams),
        cmocka_unit_test(test_write_sampling),
        cmocka_unit_test(test_refault_hot),
        cmocka_unit_test(test_clean_pages_not_rewritten),
        cmocka_unit_test(test_unlimited_never_evicts),
        cmocka_unit_test(test_bad_watermarks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
