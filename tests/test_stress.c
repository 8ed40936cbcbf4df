/*
 * test_stress.c - stress tests that hunt for violations of DESIGN.md's
 * invariants:
 *   1. no write is ever lost (writers racing the evictor on the same pages);
 *   2. no read returns wrong data (random reads and writes from many threads
 *      over a working set 8x the budget, verified against a shadow copy);
 *   3. resident pages never exceed the budget (sampled throughout).
 * Sizes shrink under the sanitizers, which slow every access.
 */
#include "moat_test.h"

#include <stdbool.h>

#include <pthread.h>
#include <stdatomic.h>

#define PG 4096UL

#ifdef MOAT_TEST_SANITIZED
#define INTEGRITY_OPS 200000UL
#define RACE_ITERS    10000UL
#else
#define INTEGRITY_OPS 1200000UL
#define RACE_ITERS    50000UL
#endif

static _Atomic int budget_violation;
static _Atomic int stop_watch;

/* watch_budget - sample the resident count for invariant 3. */
static void *watch_budget(void *arg)
{
    uint64_t budget = *(uint64_t *)arg;
    while (!atomic_load(&stop_watch)) {
        struct moat_stats s;
        if (moat_stats(&s) == 0 && s.resident_pages > budget)
            atomic_store(&budget_violation, 1);
        usleep(200);
    }
    return NULL;
}

/* ------------------------------------------------------------------------
 * Integrity: random reads and writes against a shadow copy
 * ---------------------------------------------------------------------- */

struct integrity_arg {
    uint64_t *mem, *shadow;
    size_t npages, nthreads, id;
    unsigned long ops;
    unsigned long mismatches;
};

static uint64_t xorshift(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void *integrity_worker(void *p)
{
    struct integrity_arg *a = p;
    uint64_t rng = 0x9E3779B97F4A7C15ULL * (a->id + 1);
    size_t wpp = PG / sizeof(uint64_t);
    unsigned long done = 0;
    while (done < a->ops) {
        /* pages are dealt round-robin to threads, so the shadow of a page
         * has one writer; 16 operations per visit keep the test fast while
         * every visit still faults most of the time */
        size_t pg = (xorshift(&rng) % (a->npages / a->nthreads)) * a->nthreads + a->id;
        for (int k = 0; k < 16; k++, done++) {
            size_t i = pg * wpp + xorshift(&rng) % wpp;
            if (xorshift(&rng) & 1) {
                uint64_t v = xorshift(&rng);
                a->mem[i] = v;
                a->shadow[i] = v;
            } else if (a->mem[i] != a->shadow[i]) {
                a->mismatches++;
            }
        }
    }
    return NULL;
}

static void run_integrity(size_t budget_pages, size_t factor, size_t nthreads, unsigned long ops)
{
    assert_int_equal(mt_start_opts(budget_pages * PG, NULL, NULL), 0);
    size_t npages = budget_pages * factor;
    uint64_t *mem, *shadow = calloc(npages, PG);
    assert_non_null(shadow);
    assert_int_equal(
        moat_alloc(NULL, npages * PG, MOAT_COMMIT_ON_DEMAND, NULL, NULL, (void **)&mem), 0);
    uint64_t budget = budget_pages;
    atomic_store(&stop_watch, 0);
    atomic_store(&budget_violation, 0);
    pthread_t watcher;
    pthread_create(&watcher, NULL, watch_budget, &budget);
    struct integrity_arg args[16];
    pthread_t th[16];
    for (size_t t = 0; t < nthreads; t++) {
        args[t] = (struct integrity_arg){.mem = mem,
                                         .shadow = shadow,
                                         .npages = npages,
                                         .nthreads = nthreads,
                                         .id = t,
                                         .ops = ops / nthreads};
        pthread_create(&th[t], NULL, integrity_worker, &args[t]);
    }
    unsigned long mismatches = 0;
    for (size_t t = 0; t < nthreads; t++) {
        pthread_join(th[t], NULL);
        mismatches += args[t].mismatches;
    }
    /* a final full pass */
    for (size_t i = 0; i < npages * PG / sizeof(uint64_t); i++)
        if (mem[i] != shadow[i])
            mismatches++;
    atomic_store(&stop_watch, 1);
    pthread_join(watcher, NULL);
    struct moat_stats s;
    assert_int_equal(moat_stats(&s), 0);
    printf("integrity: %zu threads, %zu pages over a %zu-page budget, %lu ops: %lu mismatches, "
           "%llu page-ins, %llu evictions written, %llu clean, peak resident %llu\n",
           nthreads, npages, budget_pages, ops, mismatches, (unsigned long long)s.faults_pagein,
           (unsigned long long)s.evictions_written, (unsigned long long)s.evictions_clean,
           (unsigned long long)s.peak_resident_pages);
    assert_int_equal(mismatches, 0);
    assert_int_equal(atomic_load(&budget_violation), 0);
    assert_true(s.peak_resident_pages <= budget_pages);
    assert_true(s.faults_pagein > 1000);
    assert_true(s.evictions_written > 1000);
    assert_int_equal(s.integrity_failures, 0);
    assert_int_equal(moat_dealloc(mem, npages * PG), 0);
    free(shadow);
    moat_shutdown();
}

static void test_integrity(void **state)
{
    (void)state;
    run_integrity(1024, 8, 4, INTEGRITY_OPS);
}

/* ------------------------------------------------------------------------
 * Invariant 1: writers racing the evictor on the very same pages
 * ---------------------------------------------------------------------- */

#define RACE_PAGES   64
#define RACE_WRITERS 4

struct race_arg {
    uint64_t *mem;
    size_t id;
    uint64_t counts[RACE_PAGES];
    unsigned long lost;
};

static void *race_writer(void *p)
{
    struct race_arg *a = p;
    uint64_t rng = 12345 + a->id;
    size_t wpp = PG / sizeof(uint64_t);
    for (unsigned long it = 0; it < RACE_ITERS; it++) {
        size_t pg = xorshift(&rng) % RACE_PAGES;
        /* each writer owns one word of every page: its count of writes */
        volatile uint64_t *w = &a->mem[pg * wpp + a->id * 8];
        uint64_t before = *w;
        if (before != a->counts[pg])
            a->lost++;
        *w = before + 1;
        a->counts[pg]++;
    }
    return NULL;
}

struct pressure_arg {
    uint8_t *mem;
    size_t npages;
    _Atomic int *stop;
};

/* pressure - sweep other pages so the reclaimer keeps evicting, including
 * the writers' pages. */
static void *pressure(void *p)
{
    struct pressure_arg *a = p;
    size_t i = 0;
    while (!atomic_load(a->stop)) {
        a->mem[(i % a->npages) * PG] = (uint8_t)i;
        i++;
    }
    return NULL;
}

/* sample: NULL (default), or the MOAT_SAMPLE_BY with MOAT_RECLAIM_SAMPLE=1 */
static void run_write_race(const char *sample)
{
    size_t budget_pages = 32;
    if (sample) {
        setenv("MOAT_RECLAIM_SAMPLE", "1", 1);
        setenv("MOAT_SAMPLE_BY", sample, 1);
    }
    assert_int_equal(mt_start_opts(budget_pages * PG, NULL, NULL), 0);
    unsetenv("MOAT_RECLAIM_SAMPLE");
    unsetenv("MOAT_SAMPLE_BY");
    uint64_t *mem;
    uint8_t *other;
    assert_int_equal(
        moat_alloc(NULL, RACE_PAGES * PG, MOAT_COMMIT_ON_DEMAND, NULL, NULL, (void **)&mem), 0);
    assert_int_equal(moat_alloc(NULL, 256 * PG, MOAT_COMMIT_ON_DEMAND, NULL, NULL, (void **)&other),
                     0);
    _Atomic int stop = 0;
    struct pressure_arg pa = {.mem = other, .npages = 256, .stop = &stop};
    pthread_t pt;
    pthread_create(&pt, NULL, pressure, &pa);
    struct race_arg args[RACE_WRITERS];
    pthread_t th[RACE_WRITERS];
    for (size_t t = 0; t < RACE_WRITERS; t++) {
        memset(&args[t], 0, sizeof args[t]);
        args[t].mem = mem;
        args[t].id = t;
        pthread_create(&th[t], NULL, race_writer, &args[t]);
    }
    unsigned long lost = 0;
    for (size_t t = 0; t < RACE_WRITERS; t++) {
        pthread_join(th[t], NULL);
        lost += args[t].lost;
    }
    atomic_store(&stop, 1);
    pthread_join(pt, NULL);
    size_t wpp = PG / sizeof(uint64_t);
    for (size_t t = 0; t < RACE_WRITERS; t++)
        for (size_t pg = 0; pg < RACE_PAGES; pg++)
            if (mem[pg * wpp + t * 8] != args[t].counts[pg])
                lost++;
    struct moat_stats s;
    assert_int_equal(moat_stats(&s), 0);
    printf("write race (sampling %s): %d writers x %lu writes on %d pages, budget %zu pages: "
           "%lu lost, %llu write-protect faults, %llu evictions written, %llu page-ins\n",
           sample ? sample : "default", RACE_WRITERS, RACE_ITERS, RACE_PAGES, budget_pages, lost,
           (unsigned long long)s.faults_wp, (unsigned long long)s.evictions_written,
           (unsigned long long)s.faults_pagein);
    assert_int_equal(lost, 0);
    assert_true(s.evictions_written > 100);
    assert_true(s.peak_resident_pages <= budget_pages);
    moat_shutdown();
}

static void test_write_race(void **state)
{
    (void)state;
    run_write_race(NULL);
}

/* MOAT_RECLAIM_SAMPLE=1, MOAT_SAMPLE_BY=wp: reclaim write-protects dirty
 * pages a lap before they are chosen, and the writers' faults on them race
 * the evictor too. */
static void test_write_race_sampled(void **state)
{
    (void)state;
    run_write_race("wp");
}

/* MOAT_SAMPLE_BY=hash: reclaim reads (hashes) pages the writers are
 * writing, keeps them writable a lap, and must still protect each before
 * it seals it. */
static void test_write_race_sampled_by_content(void **state)
{
    (void)state;
    run_write_race("hash");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_write_race),
        cmocka_unit_test(test_write_race_sampled),
        cmocka_unit_test(test_write_race_sampled_by_content),
        cmocka_unit_test(test_integrity),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
