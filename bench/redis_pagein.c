/*
 * redis_pagein.c - page-in latency and throughput of one moat store (a
 * file, one redis server, a Redis Cluster), for bench/redis_pagein.sh, which
 * runs it against each store and next to redis-benchmark.
 *
 *   redis_pagein --store URI [--size 64M] [--budget 16M] [--label NAME]
 *                [--threads T] [--handlers H]
 *
 * A COMMIT_ON_DEMAND region of --size under a --budget is written once
 * (populate: every page sealed and, beyond the budget, evicted), then read:
 *   seq     one pass in address order (moat reads ahead 16 pages a fault);
 *   random  one pass in a fixed-seed random order (every page once).
 * Passes only read, so evictions during them are clean (no store write):
 * the time is page-in.  Each page visit (a read of its first word, checked
 * against what populate wrote) is timed; p50 and p99 are over the visits
 * (in the random pass about 1 - budget/size of them are page-ins), and
 * throughput is pages a second over the pass.  With --threads T the random
 * pass is made by T threads, each over its own pages (page % T): up to T
 * page-ins in flight instead of one.  moat runs H fault-handler threads
 * (--handlers; 0, the default, leaves the engine's default of 2); each
 * loads the page-ins of one userfaultfd read in one store submission
 * (src/fault/fault.c, "Batched page-in"), so a few handlers keep many
 * page-ins in flight.  A wrong value exits 1.  It also prints the random visits' mean and p90
 * (the mean sets the throughput) and, for a redis store, the store round
 * trips each pass made per page-in.
 * The last line, "RESULT ...", is for scripts.
 */
#include "bench.h"

#include <moat.h>

#include <getopt.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

struct pass {
    double p50_us, p90_us, p99_us, mean_us, pages_s;
};

static struct pass measure(uint64_t *lat, size_t n, uint64_t total_ns)
{
    qsort(lat, n, sizeof *lat, cmp_u64);
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += (double)lat[i];
    return (struct pass){.p50_us = (double)lat[n / 2] / 1e3,
                         .p90_us = (double)lat[n * 9 / 10] / 1e3,
                         .p99_us = (double)lat[n * 99 / 100] / 1e3,
                         .mean_us = n ? sum / (double)n / 1e3 : 0.0,
                         .pages_s = (double)n / ((double)total_ns / 1e9)};
}

struct rthread {
    const uint64_t *mem;
    const size_t *order;
    size_t npages, nthreads, id;
    uint64_t *lat; /* per visit, this thread's share */
    size_t nlat;
    unsigned long bad;
};

static void *random_part(void *arg)
{
    struct rthread *t = arg;
    size_t wpp = BENCH_PAGE / sizeof(uint64_t);
    for (size_t i = 0; i < t->npages; i++) {
        size_t p = t->order[i];
        if (p % t->nthreads != t->id)
            continue;
        uint64_t a = bench_now_ns();
        uint64_t v = *(volatile const uint64_t *)&t->mem[p * wpp];
        t->lat[t->nlat++] = bench_now_ns() - a;
        t->bad += v != p * 0x9e3779b97f4a7c15ull + 1;
    }
    return NULL;
}

int main(int argc, char **argv)
{
    unsigned nthreads = 1, handlers = 0;
    size_t size = 64u << 20, budget = 16u << 20;
    const char *store = NULL, *label = "store";
    static const struct option lo[] = {{"store", required_argument, NULL, 's'},
                                       {"size", required_argument, NULL, 'z'},
                                       {"budget", required_argument, NULL, 'b'},
                                       {"label", required_argument, NULL, 'l'},
                                       {"threads", required_argument, NULL, 't'},
                                       {"handlers", required_argument, NULL, 'H'},
                                       {NULL, 0, NULL, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case 's':
            store = optarg;
            break;
        case 'z':
            if (bench_parse_size(optarg, &size))
                return 2;
            break;
        case 'b':
            if (bench_parse_size(optarg, &budget))
                return 2;
            break;
        case 'l':
            label = optarg;
            break;
        case 't':
            nthreads = (unsigned)atoi(optarg);
            if (nthreads < 1 || nthreads > 64)
                return 2;
            break;
        case 'H':
            handlers = (unsigned)atoi(optarg);
            if (handlers > 16)
                return 2;
            break;
        default:
            fprintf(stderr, "usage: redis_pagein --store URI [--size S] [--budget B] [--label L] "
                            "[--threads T] [--handlers H]\n");
            return 2;
        }
    }
    struct moat_options o = {.budget = budget,
                             .store = store,
                             .log_level = -1,
                             .range_size = 4ULL << 30,
                             .fault_threads = handlers};
    int err = moat_init(&o);
    if (err) {
        fprintf(stderr, "redis_pagein: moat_init with store %s: %s\n", store ? store : "(file)",
                strerror(err));
        return 1;
    }
    size_t npages = size / BENCH_PAGE;
    uint64_t *mem;
    if (moat_alloc(NULL, size, MOAT_COMMIT_ON_DEMAND, NULL, NULL, (void **)&mem)) {
        fprintf(stderr, "redis_pagein: moat_alloc of %zu bytes failed\n", size);
        return 1;
    }
    size_t wpp = BENCH_PAGE / sizeof(uint64_t);
    uint64_t t0 = bench_now_ns();
    for (size_t p = 0; p < npages; p++)
        mem[p * wpp] = p * 0x9e3779b97f4a7c15ull + 1;
    double populate_s = (double)(bench_now_ns() - t0) / 1e9;

    uint64_t *lat = malloc((npages + 64) * sizeof *lat); /* + a share's rounding a thread */
    size_t *order = malloc(npages * sizeof *order);
    if (!lat || !order)
        return 1;
    unsigned long bad = 0;
    struct pass res[2];
    /* Page-ins and store round trips of each pass (round trips are counted
     * by the redis stores only): how many round trips a page-in costs. */
    uint64_t pageins[2], trips[2];
    for (int ph = 0; ph < 2; ph++) {
        for (size_t i = 0; i < npages; i++)
            order[i] = i;
        if (ph == 1) {
            struct bench_rng r;
            bench_rng_seed(&r, 42);
            for (size_t i = npages - 1; i > 0; i--) {
                size_t j = (size_t)bench_rng_below(&r, i + 1);
                size_t t = order[i];
                order[i] = order[j];
                order[j] = t;
            }
        }
        struct moat_stats before, after;
        moat_stats(&before);
        uint64_t start = bench_now_ns();
        unsigned nt = ph == 1 ? nthreads : 1;
        struct rthread th[64];
        pthread_t tid[64];
        size_t off = 0;
        for (unsigned t = 0; t < nt; t++) {
            size_t share = npages / nt + 1;
            th[t] = (struct rthread){.mem = mem,
                                     .order = order,
                                     .npages = npages,
                                     .nthreads = nt,
                                     .id = t,
                                     .lat = lat + off};
            off += share < npages - off ? share : npages - off;
            if (pthread_create(&tid[t], NULL, random_part, &th[t]))
                return 1;
        }
        size_t nlat = 0;
        for (unsigned t = 0; t < nt; t++) {
            pthread_join(tid[t], NULL);
            bad += th[t].bad;
            if (th[t].lat != lat + nlat) /* compact the shares */
                memmove(lat + nlat, th[t].lat, th[t].nlat * sizeof *lat);
            nlat += th[t].nlat;
        }
        res[ph] = measure(lat, nlat, bench_now_ns() - start);
        moat_stats(&after);
        pageins[ph] = after.faults_pagein - before.faults_pagein;
        trips[ph] = after.store_round_trips - before.store_round_trips;
    }
    struct moat_stats s;
    moat_stats(&s);
    printf("%s: %zu pages over a %zu-page budget; populate %.3f s; seq p50 %.1f us p99 %.1f us "
           "%.0f pages/s; random p50 %.1f us p99 %.1f us %.0f pages/s; %llu page-ins, %llu "
           "store errors, %lu wrong values\n",
           label, npages, budget / BENCH_PAGE, populate_s, res[0].p50_us, res[0].p99_us,
           res[0].pages_s, res[1].p50_us, res[1].p99_us, res[1].pages_s,
           (unsigned long long)s.faults_pagein, (unsigned long long)s.store_errors, bad);
    if (s.pagein_batches)
        printf("%s: batched page-in: %llu submissions served %llu faults (%.1f each)\n", label,
               (unsigned long long)s.pagein_batches, (unsigned long long)s.pagein_batched_faults,
               (double)s.pagein_batched_faults / (double)s.pagein_batches);
    printf("%s: random visits: mean %.1f us, p50 %.1f, p90 %.1f, p99 %.1f (the mean, not the "
           "median, sets the throughput)\n",
           label, res[1].mean_us, res[1].p50_us, res[1].p90_us, res[1].p99_us);
    if (trips[0] || trips[1])
        printf("%s: seq %llu page-ins in %llu store round trips (%.2f a page-in); random %llu "
               "page-ins in %llu round trips (%.2f a page-in)\n",
               label, (unsigned long long)pageins[0], (unsigned long long)trips[0],
               pageins[0] ? (double)trips[0] / (double)pageins[0] : 0.0,
               (unsigned long long)pageins[1], (unsigned long long)trips[1],
               pageins[1] ? (double)trips[1] / (double)pageins[1] : 0.0);
    printf("RESULT threads=%u handlers=%u label=%s populate_s=%.3f seq_p50_us=%.1f seq_p99_us=%.1f "
           "seq_pages_s=%.0f "
           "random_p50_us=%.1f random_p99_us=%.1f random_pages_s=%.0f batch=%.1f wrong=%lu\n",
           nthreads, handlers, label, populate_s, res[0].p50_us, res[0].p99_us, res[0].pages_s,
           res[1].p50_us, res[1].p99_us, res[1].pages_s,
           s.pagein_batches ? (double)s.pagein_batched_faults / (double)s.pagein_batches : 1.0,
           bad);
    moat_dealloc(mem, size);
    moat_shutdown();
    free(lat);
    free(order);
    return bad ? 1 : 0;
}
