/*
 * test_lazy.c - lazy tracking (moat_options.lazy, see moat.h): while the
 * areas fit under the high watermark no fault reaches moat and resident
 * pages are sampled; the first area that does not fit, or a call that needs
 * exact page states, starts tracking, and every page the kernel gave
 * meanwhile becomes a resident, dirty page charged to the budget, evicted
 * and read back like any other.  The race test starts tracking while
 * threads write: no write may be lost and no page counted twice.
 */
#include "moat_test.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#define PG 4096UL

static char *base;

static void start(size_t budget_pages)
{
    struct moat_options o = {
        .budget = budget_pages * PG, .log_level = -1, .range_size = 1ULL << 30, .lazy = 1};
    base = mt_init_base(&o);
}

#define stats    mt_stats
#define teardown mt_teardown_shutdown

static char *area(size_t pages)
{
    void *p = NULL;
    assert_int_equal(moat_alloc(NULL, pages * PG, MOAT_COMMIT_ON_DEMAND, NULL, NULL, &p), 0);
    return p;
}

static void fill(char *a, size_t pages, unsigned seed)
{
    for (size_t i = 0; i < pages; i++)
        memset(a + i * PG, (int)((i * 7 + seed) & 0xff), PG);
}

static void check(const char *a, size_t pages, unsigned seed)
{
    for (size_t i = 0; i < pages; i++) {
        char want = (char)((i * 7 + seed) & 0xff);
        for (size_t k = 0; k < PG; k += 511)
            if (a[i * PG + k] != want)
                fail_msg("page %zu byte %zu: %d, want %d", i, k, a[i * PG + k], want);
    }
}

static void test_untracked_then_tracked(void **state)
{
    (void)state;
    start(256); /* high watermark 90%: 230 pages */
    char *a = area(64);
    fill(a, 64, 1);
    struct moat_stats s = stats();
    assert_int_equal(s.tracking, 0);
    assert_int_equal(s.faults_commit, 0);
    assert_int_equal(s.untracked_pages, 64);
    assert_int_equal(s.resident_pages, 64);
    assert_int_equal(s.committed_pages, 64);
    assert_true(s.peak_resident_pages >= 64);

    /* uncommit drops the kernel's frames: zeros at the next touch */
    assert_int_equal(moat_uncommit(a + 8 * PG, 8 * PG), 0);
    assert_int_equal(stats().untracked_pages, 56);
    for (size_t i = 8; i < 16; i++)
        assert_int_equal(a[i * PG + 100], 0);
    fill(a, 64, 1);

    /* another small area still fits: no tracking */
    char *b = area(100);
    fill(b, 100, 2);
    assert_int_equal(stats().tracking, 0);

    /* 64 + 100 + 100 > 230: tracking starts and adopts what is resident */
    char *c = area(100);
    s = stats();
    assert_int_equal(s.tracking, 1);
    assert_int_equal(s.untracked_pages, 0);
    assert_int_equal(s.resident_pages, 164);
    assert_int_equal(s.committed_pages, 164);

    /* from now on the budget holds: the adopted pages are evicted (dirty:
     * sealed and written) and read back like any others */
    char *d = area(1024);
    fill(c, 100, 3);
    fill(d, 1024, 4);
    check(a, 64, 1);
    check(b, 100, 2);
    check(c, 100, 3);
    check(d, 1024, 4);
    s = stats();
    assert_true(s.evictions_written >= 164);
    assert_true(s.faults_pagein > 0);
    assert_true(s.resident_pages <= 256);
    assert_int_equal(s.committed_pages, 64 + 100 + 100 + 1024);
    assert_int_equal(s.integrity_failures, 0);
}

static void test_unlimited_never_tracks(void **state)
{
    (void)state;
    start(0);
    char *a = area(4096);
    fill(a, 4096, 5);
    struct moat_stats s = stats();
    assert_int_equal(s.tracking, 0);
    assert_int_equal(s.untracked_pages, 4096);
    assert_int_equal(s.faults_commit, 0);
    check(a, 4096, 5);
}

static void test_exact_calls_start_tracking(void **state)
{
    (void)state;
    start(1024);
    char *a = area(16);
    fill(a, 16, 6);
    /* committed pages: permissions change without tracking */
    assert_int_equal(moat_commit(a, 4 * PG), 0);
    assert_int_equal(moat_modify_permissions(a, 4 * PG, MOAT_PROT_READ), 0);
    assert_int_equal(stats().tracking, 0);
    assert_int_equal(moat_modify_permissions(a, 4 * PG, MOAT_PROT_READ_WRITE), 0);
    /* pages held as uncommitted (touched or not): tracking first, then
     * EMM's answer for what they really are - touched, so committed */
    assert_int_equal(moat_modify_permissions(a + 4 * PG, 4 * PG, MOAT_PROT_READ), 0);
    struct moat_stats s = stats();
    assert_int_equal(s.tracking, 1);
    assert_int_equal(s.resident_pages, 16);
    check(a, 16, 6);
    /* a fresh engine: pin starts tracking too */
    moat_shutdown();
    start(1024);
    a = area(16);
    fill(a, 16, 7);
    assert_int_equal(moat_pin(a, 16 * PG), 0);
    s = stats();
    assert_int_equal(s.tracking, 1);
    assert_int_equal(s.resident_unreclaimable, 16);
    check(a, 16, 7);
}

/* Writers keep rewriting their own pages with a rising round number while
 * the main thread makes an area that starts tracking; afterwards every page
 * must hold its writer's last round, and the pages must be counted once. */
#define WRITERS      3
#define WRITER_PAGES 96

struct writer {
    char *pages;
    _Atomic unsigned rounds;
    _Atomic bool *stop;
};

static void *writer_main(void *arg)
{
    struct writer *w = arg;
    unsigned r = 0;
    while (!atomic_load(w->stop) || r < 4) {
        r++;
        for (size_t i = 0; i < WRITER_PAGES; i++)
            for (size_t k = 0; k < PG; k += 1024)
                *(volatile unsigned *)(w->pages + i * PG + k) = r * 1000003u + (unsigned)i;
        atomic_store(&w->rounds, r);
    }
    return NULL;
}

static void test_switch_while_writing(void **state)
{
    (void)state;
    for (int round = 0; round < 4; round++) {
        start(512); /* high: 460 pages; the writers have 288 */
        _Atomic bool stop = false;
        struct writer w[WRITERS];
        pthread_t t[WRITERS];
        for (int i = 0; i < WRITERS; i++) {
            w[i] = (struct writer){.pages = area(WRITER_PAGES), .stop = &stop};
            assert_int_equal(pthread_create(&t[i], NULL, writer_main, &w[i]), 0);
        }
        /* let some pages be touched, then start tracking mid-write */
        while (atomic_load(&w[WRITERS - 1].rounds) < (unsigned)round)
            sched_yield();
        char *big = area(1024);
        assert_int_equal(stats().tracking, 1);
        fill(big, 1024, 8); /* pressure: the writers' pages are evicted too */
        atomic_store(&stop, true);
        for (int i = 0; i < WRITERS; i++)
            assert_int_equal(pthread_join(t[i], NULL), 0);
        for (int i = 0; i < WRITERS; i++) {
            unsigned r = atomic_load(&w[i].rounds);
            for (size_t p = 0; p < WRITER_PAGES; p++)
                for (size_t k = 0; k < PG; k += 1024)
                    assert_int_equal(*(unsigned *)(w[i].pages + p * PG + k),
                                     r * 1000003u + (unsigned)p);
        }
        check(big, 1024, 8);
        struct moat_stats s = stats();
        assert_true(s.resident_pages <= 512);
        assert_int_equal(s.committed_pages, WRITERS * WRITER_PAGES + 1024);
        assert_int_equal(s.integrity_failures, 0);
        moat_shutdown();
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_untracked_then_tracked, teardown),
        cmocka_unit_test_teardown(test_unlimited_never_tracks, teardown),
        cmocka_unit_test_teardown(test_exact_calls_start_tracking, teardown),
        cmocka_unit_test_teardown(test_switch_while_writing, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
