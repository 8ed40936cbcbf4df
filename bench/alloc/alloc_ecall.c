/*
 * alloc_ecall.c - workload 1: the Open Enclave pattern of the snmalloc
 * report (shared/seeds/003): a heap capped at 64 MiB, 16 worker threads and
 * 4 others entering and leaving constantly.
 *
 * Each "call" runs on a fresh thread (the enclave runtime sets up its
 * per-thread state on entry and tears it down on exit; a new thread per
 * call is the allocator-neutral way to get that, whatever malloc is
 * preloaded): it allocates its per-thread context, a mix dominated by small
 * objects with a tail of 8, 16 and 32 KiB buffers, frees most of it, and
 * leaves.  One object in 16 outlives the call: it replaces a random object
 * of a long-lived set (about --live bytes, 90% owned by workers, 10% by the
 * others), which is freed by whichever thread replaces it.  The "other"
 * threads make calls of 1-4 KiB objects.
 *
 * Every --sample-ms the main thread records the bytes requested and live
 * (counted by the workload itself) and the process's anonymous resident
 * memory above its starting point (RssAnon: what any allocator really
 * holds, so every allocator is measured alike).  At the end it prints one
 * RESULT line: the peaks of the first and second half, the second half's
 * mean fragmentation 1 - requested / resident, the growth of the peak from
 * the first half to the second, failed allocations, and the allocator's
 * own figure from mallinfo2() (moat: its committed bytes; glibc: its main
 * arena; others: nothing, as they do not implement it).  --csv writes the
 * time series.  Every object is written in full, as a program would: an
 * object never touched would cost no resident memory.
 *
 * Plain C and pthreads only: run it with LD_PRELOAD=<allocator>.  With moat,
 * run it under MOAT_ALLOC_LIMIT=64M so the cap is real.
 */
#include "bench.h"

#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

static size_t opt_live = 40u << 20;
static int opt_workers = 16, opt_others = 4, opt_seconds = 30, opt_sample_ms = 250;
static const char *opt_csv;

static _Atomic int64_t requested; /* live bytes asked for */
static _Atomic int64_t requested_peak;
static _Atomic uint64_t calls, failures;
static _Atomic bool stop;

/* The long-lived set: each object starts with its own size, so a thread
 * that replaces it knows what it frees. */
struct ring {
    _Atomic(size_t *) *slot;
    size_t n;
};
static struct ring worker_ring, other_ring;

static void account(int64_t d)
{
    int64_t v = atomic_fetch_add_explicit(&requested, d, memory_order_relaxed) + d;
    int64_t peak = atomic_load_explicit(&requested_peak, memory_order_relaxed);
    while (v > peak && !atomic_compare_exchange_weak(&requested_peak, &peak, v))
        ;
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n);
    if (!p) {
        atomic_fetch_add(&failures, 1);
        return NULL;
    }
    memset(p, 0x5a, n); /* use all of it, as a program would */
    account((int64_t)n);
    return p;
}

static void xfree(void *p, size_t n)
{
    if (p) {
        account(-(int64_t)n);
        free(p);
    }
}

/* Worker objects: small ones dominate, a tail of 8/16/32 KiB buffers. */
static size_t worker_size(struct bench_rng *r)
{
    uint64_t x = bench_rng_below(r, 1000);
    if (x < 600)
        return 16 + bench_rng_below(r, 48);
    if (x < 900)
        return 64 + bench_rng_below(r, 192);
    if (x < 970)
        return 256 + bench_rng_below(r, 768);
    static const size_t bufs[] = {8192, 16384, 32768};
    return bufs[bench_rng_below(r, 3)];
}

static size_t other_size(struct bench_rng *r)
{
    return 1024 + bench_rng_below(r, 3072);
}

static void keep(struct ring *ring, struct bench_rng *r, void *p, size_t n)
{
    *(size_t *)p = n;
    size_t *old = atomic_exchange(&ring->slot[bench_rng_below(r, ring->n)], (size_t *)p);
    if (old)
        xfree(old, *old);
}

struct call_arg {
    bool worker;
    uint64_t seed;
};

static void *call(void *arg)
{
    struct call_arg *a = arg;
    struct bench_rng r;
    bench_rng_seed(&r, a->seed);
    size_t ctx_n = a->worker ? 4096 : 8192;
    void *ctx = calloc(1, ctx_n); /* the runtime's per-thread state */
    if (!ctx) {
        atomic_fetch_add(&failures, 1);
        return NULL;
    }
    account((int64_t)ctx_n);
    enum { K = 64 };
    void *p[K];
    size_t n[K];
    int k = a->worker ? 32 + (int)bench_rng_below(&r, 33) : 8 + (int)bench_rng_below(&r, 9);
    for (int i = 0; i < k; i++) {
        n[i] = a->worker ? worker_size(&r) : other_size(&r);
        p[i] = xmalloc(n[i]);
    }
    /* free in a random order; keep one in 16 (the others: one in 4) */
    for (int i = k - 1; i > 0; i--) {
        int j = (int)bench_rng_below(&r, (uint64_t)i + 1);
        void *tp = p[i];
        size_t tn = n[i];
        p[i] = p[j], n[i] = n[j];
        p[j] = tp, n[j] = tn;
    }
    for (int i = 0; i < k; i++) {
        if (!p[i])
            continue;
        if (bench_rng_below(&r, a->worker ? 16 : 4) == 0)
            keep(a->worker ? &worker_ring : &other_ring, &r, p[i], n[i]);
        else
            xfree(p[i], n[i]);
    }
    xfree(ctx, ctx_n);
    atomic_fetch_add_explicit(&calls, 1, memory_order_relaxed);
    return NULL;
}

static void *slot_thread(void *arg)
{
    bool worker = (intptr_t)arg >= 0;
    uint64_t seed = (uint64_t)((intptr_t)arg + 1000) * 7919;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 128u << 10);
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        struct call_arg a = {worker, bench_splitmix64(&seed)};
        pthread_t t;
        if (pthread_create(&t, &attr, call, &a) != 0) {
            call(&a);
            continue;
        }
        pthread_join(t, NULL);
    }
    pthread_attr_destroy(&attr);
    return NULL;
}

static void ring_fill(struct ring *ring, size_t nbytes, bool worker, uint64_t seed)
{
    struct bench_rng r;
    bench_rng_seed(&r, seed);
    /* the number of objects whose sizes add up to nbytes, on average */
    double mean = 0;
    for (int i = 0; i < 100000; i++)
        mean += (double)(worker ? worker_size(&r) : other_size(&r));
    mean /= 100000;
    ring->n = (size_t)((double)nbytes / mean);
    ring->slot = calloc(ring->n, sizeof *ring->slot);
    account((int64_t)(ring->n * sizeof *ring->slot));
    for (size_t i = 0; i < ring->n; i++) {
        size_t n = worker ? worker_size(&r) : other_size(&r);
        size_t *p = xmalloc(n);
        if (p) {
            *p = n;
            atomic_store(&ring->slot[i], p);
        }
    }
}

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

static void usage(void)
{
    fprintf(stderr, "usage: alloc_ecall [--seconds S] [--live BYTES] [--workers N] [--others N]\n"
                    "                   [--sample-ms MS] [--csv FILE]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc)
            usage();
        if (!strcmp(argv[i], "--seconds"))
            opt_seconds = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--live")) {
            if (bench_parse_size(argv[++i], &opt_live))
                usage();
        } else if (!strcmp(argv[i], "--workers"))
            opt_workers = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--others"))
            opt_others = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--sample-ms"))
            opt_sample_ms = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--csv"))
            opt_csv = argv[++i];
        else
            usage();
    }
    long base_kib = rss_anon_kib();
    ring_fill(&worker_ring, opt_live / 10 * 9, true, 1);
    ring_fill(&other_ring, opt_live / 10, false, 2);

    int nslots = opt_workers + opt_others;
    pthread_t *t = calloc((size_t)nslots, sizeof *t);
    for (int i = 0; i < nslots; i++)
        pthread_create(&t[i], NULL, slot_thread, (void *)(intptr_t)(i < opt_workers ? i : -i));

    size_t nsamples = (size_t)opt_seconds * 1000 / (size_t)opt_sample_ms;
    double *req = calloc(nsamples, sizeof *req), *res = calloc(nsamples, sizeof *res);
    double *arena = calloc(nsamples, sizeof *arena);
    uint64_t t0 = bench_now_ns();
    for (size_t s = 0; s < nsamples; s++) {
        uint64_t due = t0 + (uint64_t)(s + 1) * (uint64_t)opt_sample_ms * 1000000ULL;
        uint64_t now = bench_now_ns();
        if (due > now) {
            struct timespec ts = {(time_t)((due - now) / 1000000000ULL),
                                  (long)((due - now) % 1000000000ULL)};
            nanosleep(&ts, NULL);
        }
        req[s] = (double)atomic_load(&requested) / 1048576.0;
        res[s] = (double)(rss_anon_kib() - base_kib) / 1024.0;
        struct mallinfo2 mi = mallinfo2(); /* moat: its committed bytes */
        arena[s] = (double)mi.arena / 1048576.0;
    }
    atomic_store(&stop, true);
    for (int i = 0; i < nslots; i++)
        pthread_join(t[i], NULL);
    double secs = (double)(bench_now_ns() - t0) / 1e9;

    double peak1 = 0, peak2 = 0, sum_frag = 0, sum_res = 0, sum_req = 0, sum_arena = 0;
    size_t half = nsamples / 2, n2 = 0;
    for (size_t s = 0; s < nsamples; s++) {
        if (s < half) {
            peak1 = res[s] > peak1 ? res[s] : peak1;
        } else {
            peak2 = res[s] > peak2 ? res[s] : peak2;
            sum_frag += res[s] > 0 ? 1.0 - req[s] / res[s] : 0;
            sum_res += res[s];
            sum_req += req[s];
            sum_arena += arena[s];
            n2++;
        }
    }
    if (opt_csv) {
        FILE *f = fopen(opt_csv, "w");
        if (f) {
            fprintf(f, "t_s,requested_mib,resident_mib,allocator_arena_mib\n");
            for (size_t s = 0; s < nsamples; s++)
                fprintf(f, "%.2f,%.3f,%.3f,%.3f\n", (double)(s + 1) * opt_sample_ms / 1000.0,
                        req[s], res[s], arena[s]);
            fclose(f);
        }
    }
    printf("RESULT workload=ecall seconds=%.1f calls=%llu calls_per_s=%.0f req_peak_mib=%.2f "
           "req_mean2_mib=%.2f res_peak1_mib=%.2f res_peak2_mib=%.2f res_mean2_mib=%.2f "
           "frag2_pct=%.2f growth_pct=%.2f arena_mean2_mib=%.2f failures=%llu\n",
           secs, (unsigned long long)atomic_load(&calls), (double)atomic_load(&calls) / secs,
           (double)atomic_load(&requested_peak) / 1048576.0, n2 ? sum_req / (double)n2 : 0, peak1,
           peak2, n2 ? sum_res / (double)n2 : 0, n2 ? 100.0 * sum_frag / (double)n2 : 0,
           peak1 > 0 ? 100.0 * (peak2 / peak1 - 1.0) : 0, n2 ? sum_arena / (double)n2 : 0,
           (unsigned long long)atomic_load(&failures));
    return 0;
}
