/*
 * test_engine_redis.c - the whole engine paging to a real redis-server:
 * moat_init with store "redis://127.0.0.1:PORT" and a 256-page budget, two
 * threads doing random reads and writes over a working set 8x the budget,
 * checked against a shadow copy (like test_stress.c's integrity test, made
 * smaller).  Every evicted page must be a key on the server while the run
 * goes on, and moat_shutdown must leave the server empty.
 *
 * The server is a child of this program (see redis_server.h); without
 * redis-server, or in a moat built without hiredis, the program skips
 * (exit 77) and says why.
 */
#include "moat_test.h"

#if __has_include(<hiredis/hiredis.h>)

#include "redis_server.h"

#include <pthread.h>
#include <stdatomic.h>

#define PG 4096UL

#ifdef MOAT_TEST_SANITIZED
#define OPS 100000UL
#else
#define OPS 400000UL
#endif

#define BUDGET_PAGES 256
#define FACTOR       8
#define NTHREADS     2

struct worker {
    uint64_t *mem, *shadow;
    size_t npages, id;
    unsigned long ops, mismatches;
};

static uint64_t xorshift(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Pages are dealt round-robin to the threads, so each shadow page has one
 * writer; 16 operations per visited page. */
static void *worker_run(void *p)
{
    struct worker *w = p;
    uint64_t rng = 0x9E3779B97F4A7C15ULL * (w->id + 1);
    size_t wpp = PG / sizeof(uint64_t);
    for (unsigned long done = 0; done < w->ops;) {
        size_t pg = (xorshift(&rng) % (w->npages / NTHREADS)) * NTHREADS + w->id;
        for (int k = 0; k < 16; k++, done++) {
            size_t i = pg * wpp + xorshift(&rng) % wpp;
            if (xorshift(&rng) & 1) {
                uint64_t v = xorshift(&rng);
                w->mem[i] = v;
                w->shadow[i] = v;
            } else if (w->mem[i] != w->shadow[i]) {
                w->mismatches++;
            }
        }
    }
    return NULL;
}

static void test_integrity_over_redis(void **state)
{
    (void)state;
    struct server *srv = server_start(NULL);
    char uri[128];
    snprintf(uri, sizeof uri, "redis://127.0.0.1:%d", srv->port);
    assert_int_equal(mt_start_opts(BUDGET_PAGES * PG, uri, NULL), 0);

    size_t npages = BUDGET_PAGES * FACTOR;
    uint64_t *mem, *shadow = calloc(npages, PG);
    assert_non_null(shadow);
    assert_int_equal(
        moat_alloc(NULL, npages * PG, MOAT_COMMIT_ON_DEMAND, NULL, NULL, (void **)&mem), 0);
    struct worker w[NTHREADS];
    pthread_t th[NTHREADS];
    for (size_t t = 0; t < NTHREADS; t++) {
        w[t] = (struct worker){
            .mem = mem, .shadow = shadow, .npages = npages, .id = t, .ops = OPS / NTHREADS};
        assert_int_equal(pthread_create(&th[t], NULL, worker_run, &w[t]), 0);
    }
    unsigned long mismatches = 0;
    for (size_t t = 0; t < NTHREADS; t++) {
        pthread_join(th[t], NULL);
        mismatches += w[t].mismatches;
    }
    for (size_t i = 0; i < npages * PG / sizeof(uint64_t); i++)
        if (mem[i] != shadow[i])
            mismatches++;

    struct moat_stats s;
    assert_int_equal(moat_stats(&s), 0);
    long long keys = server_count(srv->port, "moat:*");
    printf("redis integrity: %d threads, %zu pages over a %d-page budget, %lu ops: %lu "
           "mismatches, %llu page-ins, %llu evictions written, %llu clean, peak resident %llu, "
           "%llu evicted now, %lld keys on the server, %llu store errors\n",
           NTHREADS, npages, BUDGET_PAGES, OPS, mismatches, (unsigned long long)s.faults_pagein,
           (unsigned long long)s.evictions_written, (unsigned long long)s.evictions_clean,
           (unsigned long long)s.peak_resident_pages, (unsigned long long)s.evicted_pages, keys,
           (unsigned long long)s.store_errors);
    assert_int_equal(mismatches, 0);
    assert_true(s.peak_resident_pages <= BUDGET_PAGES);
    assert_true(s.faults_pagein > 1000);
    assert_true(s.evictions_written > 1000);
    assert_int_equal(s.integrity_failures, 0);
    assert_int_equal(s.store_errors, 0);
    assert_true(s.store_bytes_read > 0 && s.store_bytes_written > 0);
    /* Every evicted page is a key (plus the liveness key; freed slots
     * whose DEL has not gone out yet may add a few). */
    assert_true(s.evicted_pages >= npages - BUDGET_PAGES);
    assert_true((unsigned long long)keys >= s.evicted_pages + 1);

    assert_int_equal(moat_dealloc(mem, npages * PG), 0);
    free(shadow);
    moat_shutdown();
    /* The instance removed its keys at shutdown. */
    assert_int_equal(server_int(srv->port, NULL, "DBSIZE"), 0);
    server_kill(srv);
}

/* A store URI naming a server that is not there fails moat_init with the
 * connection's errno, not later at the first eviction. */
static void test_init_no_server(void **state)
{
    (void)state;
    char uri[128];
    snprintf(uri, sizeof uri, "redis://127.0.0.1:%d", free_port());
    assert_int_equal(mt_start_opts(BUDGET_PAGES * PG, uri, NULL), ECONNREFUSED);
}

int main(void)
{
    if (!have_redis_server()) {
        fprintf(stderr, "SKIP: redis-server is not installed (Debian: apt-get install "
                        "redis-server); the engine over redis was NOT tested\n");
        return 77;
    }
    atexit(servers_kill_all);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_no_server),
        cmocka_unit_test(test_integrity_over_redis),
    };
    return cmocka_run_group_tests(tests, NULL, NULL) ? 1 : 0;
}

#else
int main(void)
{
    fprintf(stderr, "SKIP: hiredis headers are missing (Debian: libhiredis-dev); the engine over "
                    "redis was NOT tested\n");
    return 77;
}
#endif
