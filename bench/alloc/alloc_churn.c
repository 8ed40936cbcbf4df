/*
 * alloc_churn.c - workload 2: does memory come back after churn?
 *
 * The program first allocates a long-lived set (--base, 16 MiB of small
 * objects: the application that keeps running) and notes its anonymous
 * resident memory.  Then:
 *   A. five million 1 KiB allocations and frees: 100 rounds of 50,000
 *      blocks (50 MiB) allocated, then freed in random order;
 *   B. random-size churn: five million replacements of random objects in a
 *      set of 20,000, sizes log-uniform from 16 bytes to 64 KiB, then all
 *      freed.
 * After each phase it waits 200 ms without calling the allocator (what an
 * idle program does) and measures again.  The phases' own pointer arrays
 * (0.5 MiB) are allocated before the starting point, with the long-lived
 * set: they stay live throughout, and are not memory the churn left behind.  The target: back
 * within 5% of the starting point.  RESULT reports the points (MiB above the process's empty
 * state), the deltas in %, and each phase's time.
 */
#include "bench.h"

#include <malloc.h>
#include <math.h>

static long rss_anon_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "RssAnon: %ld kB", &v) == 1)
            break;
    if (f)
        fclose(f);
    return v;
}

static void idle(void)
{
    struct timespec ts = {0, 200 * 1000000L};
    nanosleep(&ts, NULL);
    /* CHURN_STATS=1: the allocator's own account (moat's table; glibc's) */
    if (getenv("CHURN_STATS"))
        malloc_stats();
}

static void *xmalloc(size_t n)
{
    unsigned char *p = malloc(n);
    if (!p) {
        fprintf(stderr, "alloc_churn: malloc(%zu) failed\n", n);
        exit(1);
    }
    p[0] = 1;
    p[n - 1] = 1;
    return p;
}

int main(int argc, char **argv)
{
    size_t base = 16u << 20;
    if (argc == 3 && !strcmp(argv[1], "--base") && bench_parse_size(argv[2], &base) == 0)
        ;
    else if (argc != 1) {
        fprintf(stderr, "usage: alloc_churn [--base BYTES]\n");
        return 2;
    }
    struct bench_rng r;
    bench_rng_seed(&r, 42);
    long empty_kib = rss_anon_kib();

    /* the long-lived set */
    size_t nbase = base / 136, have = 0;
    void **kept = xmalloc(nbase * sizeof *kept);
    for (size_t i = 0; i < nbase; i++) {
        size_t n = 16 + bench_rng_below(&r, 240);
        kept[i] = xmalloc(n);
        have += n;
    }
    enum { ROUND = 50000, ROUNDS = 100, SET = 20000 };
    void **p = xmalloc(ROUND * sizeof *p);
    void **q = xmalloc(SET * sizeof *q);
    memset(p, 0, ROUND * sizeof *p);
    memset(q, 0, SET * sizeof *q);
    idle();
    double start = (double)(rss_anon_kib() - empty_kib) / 1024.0;

    /* A: 5M x 1 KiB */
    double peak_a = 0;
    uint64_t t0 = bench_now_ns();
    for (int round = 0; round < ROUNDS; round++) {
        for (int i = 0; i < ROUND; i++)
            p[i] = xmalloc(1024);
        if (round == 0)
            peak_a = (double)(rss_anon_kib() - empty_kib) / 1024.0;
        for (int i = ROUND - 1; i > 0; i--) {
            int j = (int)bench_rng_below(&r, (uint64_t)i + 1);
            void *t = p[i];
            p[i] = p[j];
            p[j] = t;
        }
        for (int i = 0; i < ROUND; i++)
            free(p[i]);
    }
    double secs_a = (double)(bench_now_ns() - t0) / 1e9;
    idle();
    double after_a = (double)(rss_anon_kib() - empty_kib) / 1024.0;

    /* B: random sizes */
    long ops = 5000000;
    double peak_b = 0;
    t0 = bench_now_ns();
    for (long i = 0; i < ops; i++) {
        size_t at = bench_rng_below(&r, SET);
        free(q[at]);
        size_t n = (size_t)exp(log(16.0) + bench_rng_unit(&r) * (log(65536.0) - log(16.0)));
        q[at] = xmalloc(n);
        if (i % 1000000 == 999999) {
            double v = (double)(rss_anon_kib() - empty_kib) / 1024.0;
            peak_b = v > peak_b ? v : peak_b;
        }
    }
    for (int i = 0; i < SET; i++)
        free(q[i]);
    double secs_b = (double)(bench_now_ns() - t0) / 1e9;
    idle();
    double after_b = (double)(rss_anon_kib() - empty_kib) / 1024.0;

    printf("RESULT workload=churn base_mib=%.2f start_mib=%.2f peak_a_mib=%.2f after_a_mib=%.2f "
           "delta_a_pct=%.2f secs_a=%.3f peak_b_mib=%.2f after_b_mib=%.2f delta_b_pct=%.2f "
           "secs_b=%.3f\n",
           (double)have / 1048576.0, start, peak_a, after_a, 100.0 * (after_a / start - 1.0),
           secs_a, peak_b, after_b, 100.0 * (after_b / start - 1.0), secs_b);
    for (size_t i = 0; i < nbase; i++)
        free(kept[i]);
    free(kept);
    free(p);
    free(q);
    return 0;
}
