/*
 * engine_stress.h - the integrity stress the engine tests over redis run
 * (test_engine_redis.c, test_engine_cluster.c): NTHREADS threads doing
 * random reads and writes over a working set FACTOR times a budget of
 * BUDGET_PAGES pages, checked against a shadow copy (like test_stress.c's
 * integrity test, made smaller).  Pages are dealt round-robin to the
 * threads, so each shadow page has one writer; 16 operations per visited
 * page.  Include after moat_test.h.
 */
#ifndef MOAT_ENGINE_STRESS_H
#define MOAT_ENGINE_STRESS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

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
    unsigned long ops, done, mismatches;
    _Atomic bool *stop; /* NULL: stop after ops */
};

static inline uint64_t xorshift(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Runs at least `ops` operations, and on until *stop. */
static inline void *worker_run(void *p)
{
    struct worker *w = p;
    uint64_t rng = 0x9E3779B97F4A7C15ULL * (w->id + 1);
    size_t wpp = PG / sizeof(uint64_t);
    while (w->done < w->ops || (w->stop && !atomic_load(w->stop))) {
        size_t pg = (xorshift(&rng) % (w->npages / NTHREADS)) * NTHREADS + w->id;
        for (int k = 0; k < 16; k++, w->done++) {
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

/* NTHREADS workers over mem (npages, shadowed by shadow) for OPS
 * operations and on until *stop (stop may be NULL); then every word is
 * compared with the shadow.  The mismatches seen. */
static inline unsigned long run_workers(uint64_t *mem, uint64_t *shadow, size_t npages,
                                        _Atomic bool *stop)
{
    struct worker w[NTHREADS];
    pthread_t th[NTHREADS];
    for (size_t t = 0; t < NTHREADS; t++) {
        w[t] = (struct worker){.mem = mem,
                               .shadow = shadow,
                               .npages = npages,
                               .id = t,
                               .ops = OPS / NTHREADS,
                               .stop = stop};
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
    return mismatches;
}

#endif
