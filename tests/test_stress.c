/*
 * test_stress.c - stress tests that hunt for violations of DESIGN.md's
 * invariants:
 *   1. no write is ever lost (writers racing the evictor on the same pages);
 *   2. no read returns wrong data (random reads and writes from many threads
 *      over a working set 8x the budget, verified against a shadow copy);
 *   3. resident pages never exceed the budget (sampled throughout), in
 *      moat's count and in the kernel's (mincore) while memory is uncommitted
 *      in batches and faulted in again.
 * Sizes shrink under the sanitizers, which slow every access.
 */
#include "moat_test.h"

#include <stdbool.h>

#include "region/region.h"

#include <pthread.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <time.h>

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

/*
 * Invariant 3 as the kernel sees it.  One thread uncommits scattered runs of
 * an area in batches (m_region_uncommit_ranges, as the allocator's purge
 * does) and writes them again; another writes fresh pages of a second area
 * into whatever budget that frees; a watcher counts the pages the kernel has
 * mapped in both areas (mincore).  A page must stay charged until its frame
 * is gone: uncharged first, the second thread's pages come in while the
 * batch's frames are still there (that build: 0.45-1.6% of the samples over
 * the budget, by up to 37 pages).  mincore is not atomic against faults and
 * evictions elsewhere in the area, so a sample can still count a page on
 * its way out and one on its way in: 1-6 samples in ~95,000 with the frames
 * dropped first.  The bound below is 1 in 1000, an order of magnitude from
 * either.
 */
#define UNC_BUDGET 256u
#define UNC_AREA   1024u

struct unc_run {
    uint8_t *a, *b;
    _Atomic int stop;
    _Atomic size_t over, worst;
};

static void *unc_batcher(void *arg)
{
    struct unc_run *u = arg;
    for (unsigned long round = 0; !atomic_load(&u->stop); round++) {
        struct iovec r[32];
        for (size_t k = 0; k < 32; k++) {
            size_t at = (k * 16 + round % 8) * PG; /* 4-page runs, 16 pages apart */
            for (size_t o = 0; o < 4 * PG; o += PG)
                u->a[at + o] = (uint8_t)(round + k + 1);
            r[k] = (struct iovec){.iov_base = u->a + at, .iov_len = 4 * PG};
        }
        assert_int_equal(m_region_uncommit_ranges(r, 32), 0);
    }
    return NULL;
}

static void *unc_toucher(void *arg)
{
    struct unc_run *u = arg;
    for (unsigned long round = 0; !atomic_load(&u->stop); round++)
        for (size_t i = 0; i < UNC_AREA; i += 3)
            u->b[i * PG] = (uint8_t)round;
    return NULL;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static size_t mapped(uint8_t *p, size_t npages, unsigned char *vec)
{
    if (mincore(p, npages * PG, vec) != 0)
        return 0;
    size_t n = 0;
    for (size_t i = 0; i < npages; i++)
        n += vec[i] & 1;
    return n;
}

static void test_uncommit_within_budget(void **state)
{
    (void)state;
    assert_int_equal(mt_start_opts(UNC_BUDGET * PG, NULL, NULL), 0);
    struct unc_run u = {0};
    /* one area, so that one mincore call counts both threads' pages */
    assert_int_equal(
        moat_alloc(NULL, 2 * UNC_AREA * PG, MOAT_COMMIT_ON_DEMAND, NULL, NULL, (void **)&u.a), 0);
    u.b = u.a + UNC_AREA * PG;
    pthread_t t[2];
    pthread_create(&t[0], NULL, unc_batcher, &u);
    pthread_create(&t[1], NULL, unc_toucher, &u);
    static unsigned char vec[2 * UNC_AREA];
    size_t samples = 0;
    uint64_t t0 = now_ns();
    while (now_ns() - t0 < 3000000000ull) {
        size_t n = mapped(u.a, 2 * UNC_AREA, vec);
        if (n > UNC_BUDGET)
            atomic_fetch_add(&u.over, 1);
        if (n > atomic_load(&u.worst))
            atomic_store(&u.worst, n);
        samples++;
    }
    atomic_store(&u.stop, 1);
    pthread_join(t[0], NULL);
    pthread_join(t[1], NULL);
    print_message("uncommit: %zu samples, %zu over the budget, at most %zu of %u pages mapped\n",
                  samples, atomic_load(&u.over), atomic_load(&u.worst), UNC_BUDGET);
    assert_true(samples > 100);
    assert_true(atomic_load(&u.over) * 1000 <= samples);
    assert_true(MT_STAT(peak_resident_pages) <= UNC_BUDGET);
    moat_shutdown();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_write_race),
        cmocka_unit_test(test_write_race_sampled),
        cmocka_unit_test(test_write_race_sampled_by_content),
        cmocka_unit_test(test_integrity),
        cmocka_unit_test(test_uncommit_within_budget),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
