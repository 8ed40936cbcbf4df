/*
 * alloc_speed.c - workload 3: allocator speed, four patterns.
 *
 *   single      one thread replaces random objects in a set of 1024:
 *               free one, allocate another (16..512 bytes, 5% up to 4 KiB);
 *               the RESULT line also gives the fastest 1M-operation segment
 *               (best_ns_op)
 *   larson      the larson server pattern: 4 threads each replace random
 *               objects (16..1024 bytes) in their own set of 2000; every
 *               50,000 operations a thread hands its set to a new thread
 *               and exits, so most frees are of another thread's objects
 *   prodcons    2 producers allocate objects (16..256 bytes) and hand them
 *               in batches of 64 to 2 consumers, which read and free them:
 *               every free is a cross-thread free
 *   falseshare  cache-scratch: the main thread allocates one small object
 *               per thread and hands it over; each thread frees it, then
 *               repeatedly allocates a small object, writes it many times
 *               and frees it.  An allocator that gives threads objects on
 *               one cache line makes every write a cache miss; the RESULT
 *               line also gives how often (in % of samples) two threads
 *               were writing the same line
 *
 * Usage: alloc_speed PATTERN [--scale F].  Prints one RESULT line with the
 * wall time and the CPU time of all threads.  Plain C and pthreads only: run it with
 * LD_PRELOAD=<allocator>.
 */
#include "bench.h"

#include <pthread.h>
#include <stdatomic.h>
#include <sys/resource.h>

static double scale = 1.0;

static long scaled(long n)
{
    long v = (long)((double)n * scale);
    return v > 0 ? v : 1;
}

static void *xmalloc(size_t n)
{
    unsigned char *p = malloc(n);
    if (!p) {
        fprintf(stderr, "alloc_speed: malloc(%zu) failed\n", n);
        exit(1);
    }
    p[0] = (unsigned char)n;
    return p;
}

/* ------------------------------------------------------------------------ */

/* single: the fastest segment of 1M operations, in ns per operation - the
 * allocator's speed when the machine let it run (a slow spell of a shared
 * machine lasts seconds and moves the whole run's time by 30%) */
static double single_best_ns = 0;

enum { SINGLE_SET = 1024, SINGLE_SEGMENT = 1000000 };

/* n replacements (the loop of the whole run up to the seventh session,
 * unchanged: a function of its own, so that the segments around it cost
 * the loop nothing) */
static __attribute__((noinline)) void single_ops(void **set, struct bench_rng *rp, long ops)
{
    struct bench_rng r = *rp;
    for (long i = 0; i < ops; i++) {
        uint64_t x = bench_rng_next(&r);
        size_t at = x & (SINGLE_SET - 1);
        free(set[at]);
        size_t n = ((x >> 10) & 31) == 0 ? 512 + ((x >> 16) & 3583) : 16 + ((x >> 16) & 495);
        set[at] = xmalloc(n);
    }
    *rp = r;
}

static double run_single(void)
{
    void *set[SINGLE_SET] = {0};
    struct bench_rng r;
    bench_rng_seed(&r, 1);
    long ops = scaled(30000000);
    uint64_t t0 = bench_now_ns();
    for (long done = 0; done < ops; done += SINGLE_SEGMENT) {
        long n = ops - done < SINGLE_SEGMENT ? ops - done : SINGLE_SEGMENT;
        uint64_t s0 = bench_now_ns();
        single_ops(set, &r, n);
        double ns = (double)(bench_now_ns() - s0) / (double)n;
        if (n == SINGLE_SEGMENT && (single_best_ns == 0 || ns < single_best_ns))
            single_best_ns = ns;
    }
    double secs = (double)(bench_now_ns() - t0) / 1e9;
    for (int i = 0; i < SINGLE_SET; i++)
        free(set[i]);
    return secs;
}

/* ------------------------------------------------------------------------ */

enum { LARSON_SET = 2000, LARSON_OPS = 50000 };

struct larson {
    void **set;
    uint64_t seed;
    int generations_left;
};

static pthread_mutex_t larson_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t larson_cv = PTHREAD_COND_INITIALIZER;
static int larson_done;

/* One generation: replace random objects, then hand the set to a new
 * (detached) thread and exit; the last generation reports to main. */
static void *larson_thread(void *arg)
{
    struct larson *l = arg;
    struct bench_rng r;
    bench_rng_seed(&r, l->seed);
    for (int i = 0; i < LARSON_OPS; i++) {
        uint64_t x = bench_rng_next(&r);
        size_t at = (size_t)((x & 0xffff) % LARSON_SET);
        free(l->set[at]);
        l->set[at] = xmalloc(16 + (size_t)((x >> 16) % 1009));
    }
    l->seed = bench_rng_next(&r);
    if (--l->generations_left > 0) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_create(&t, &attr, larson_thread, l);
        pthread_attr_destroy(&attr);
        return NULL;
    }
    pthread_mutex_lock(&larson_lock);
    larson_done++;
    pthread_cond_signal(&larson_cv);
    pthread_mutex_unlock(&larson_lock);
    return NULL;
}

static double run_larson(void)
{
    enum { THREADS = 4 };
    int generations = (int)scaled(40);
    struct larson l[THREADS];
    struct bench_rng r;
    bench_rng_seed(&r, 2);
    for (int t = 0; t < THREADS; t++) {
        l[t].set = xmalloc(LARSON_SET * sizeof(void *));
        for (int i = 0; i < LARSON_SET; i++)
            l[t].set[i] = xmalloc(16 + bench_rng_below(&r, 1009));
        l[t].seed = bench_rng_next(&r);
        l[t].generations_left = generations;
    }
    uint64_t t0 = bench_now_ns();
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    for (int t = 0; t < THREADS; t++) {
        pthread_t th;
        pthread_create(&th, &attr, larson_thread, &l[t]);
    }
    pthread_attr_destroy(&attr);
    pthread_mutex_lock(&larson_lock);
    while (larson_done < THREADS)
        pthread_cond_wait(&larson_cv, &larson_lock);
    pthread_mutex_unlock(&larson_lock);
    double secs = (double)(bench_now_ns() - t0) / 1e9;
    for (int t = 0; t < THREADS; t++) {
        for (int i = 0; i < LARSON_SET; i++)
            free(l[t].set[i]);
        free(l[t].set);
    }
    return secs;
}

/* ------------------------------------------------------------------------ */

enum { BATCH = 64, QCAP = 256 };

static struct {
    pthread_mutex_t lock;
    pthread_cond_t not_empty, not_full;
    void **batch[QCAP];
    int head, n, producers_left;
} q = {.lock = PTHREAD_MUTEX_INITIALIZER,
       .not_empty = PTHREAD_COND_INITIALIZER,
       .not_full = PTHREAD_COND_INITIALIZER};

static long pc_batches;

static void *producer(void *arg)
{
    struct bench_rng r;
    bench_rng_seed(&r, (uint64_t)(intptr_t)arg);
    for (long b = 0; b < pc_batches; b++) {
        void **batch = xmalloc(BATCH * sizeof *batch);
        for (int i = 0; i < BATCH; i++)
            batch[i] = xmalloc(16 + (bench_rng_next(&r) & 239));
        pthread_mutex_lock(&q.lock);
        while (q.n == QCAP)
            pthread_cond_wait(&q.not_full, &q.lock);
        q.batch[(q.head + q.n++) % QCAP] = batch;
        pthread_cond_signal(&q.not_empty);
        pthread_mutex_unlock(&q.lock);
    }
    pthread_mutex_lock(&q.lock);
    q.producers_left--;
    pthread_cond_broadcast(&q.not_empty);
    pthread_mutex_unlock(&q.lock);
    return NULL;
}

static void *consumer(void *arg)
{
    (void)arg;
    unsigned sum = 0;
    for (;;) {
        pthread_mutex_lock(&q.lock);
        while (q.n == 0 && q.producers_left > 0)
            pthread_cond_wait(&q.not_empty, &q.lock);
        if (q.n == 0) {
            pthread_mutex_unlock(&q.lock);
            break;
        }
        void **batch = q.batch[q.head];
        q.head = (q.head + 1) % QCAP;
        q.n--;
        pthread_cond_signal(&q.not_full);
        pthread_mutex_unlock(&q.lock);
        for (int i = 0; i < BATCH; i++) {
            sum += *(unsigned char *)batch[i];
            free(batch[i]);
        }
        free(batch);
    }
    return (void *)(uintptr_t)sum;
}

static double run_prodcons(void)
{
    pc_batches = scaled(100000);
    q.producers_left = 2;
    pthread_t p[2], c[2];
    uint64_t t0 = bench_now_ns();
    for (int i = 0; i < 2; i++) {
        pthread_create(&p[i], NULL, producer, (void *)(intptr_t)(i + 1));
        pthread_create(&c[i], NULL, consumer, NULL);
    }
    for (int i = 0; i < 2; i++) {
        pthread_join(p[i], NULL);
        pthread_join(c[i], NULL);
    }
    return (double)(bench_now_ns() - t0) / 1e9;
}

/* ------------------------------------------------------------------------ */

enum { FS_THREADS = 2 };
static void *fs_given[FS_THREADS];
static long fs_objects, fs_writes;
/* the cache line each thread writes now, and how often (sampled every 512
 * writes) another thread was writing the same line: the false sharing the
 * allocator caused, which the time alone hardly shows on 2 CPUs */
static _Atomic uintptr_t fs_line[FS_THREADS];
static _Atomic long fs_samples, fs_shared;

static void *scratch(void *arg)
{
    int me = (int)(intptr_t)arg;
    long samples = 0, shared = 0;
    free(fs_given[me]);
    for (long i = 0; i < fs_objects; i++) {
        volatile char *p = xmalloc(8);
        uintptr_t line = (uintptr_t)p >> 6;
        atomic_store_explicit(&fs_line[me], line, memory_order_relaxed);
        for (long w0 = 0; w0 < fs_writes; w0 += 512) {
            samples++;
            for (int t = 0; t < FS_THREADS; t++)
                if (t != me && atomic_load_explicit(&fs_line[t], memory_order_relaxed) == line)
                    shared++;
            long end = w0 + 512 < fs_writes ? w0 + 512 : fs_writes;
            for (long w = w0; w < end; w++)
                p[w & 7]++;
        }
        atomic_store_explicit(&fs_line[me], 0, memory_order_relaxed);
        free((void *)p);
    }
    atomic_fetch_add(&fs_samples, samples);
    atomic_fetch_add(&fs_shared, shared);
    return NULL;
}

static double run_falseshare(void)
{
    /* 200k: at 20k the run took 50 ms, mostly thread start-up */
    fs_objects = scaled(200000);
    fs_writes = 5000;
    for (int i = 0; i < FS_THREADS; i++)
        fs_given[i] = xmalloc(8); /* neighbours on one cache line */
    pthread_t t[FS_THREADS];
    uint64_t t0 = bench_now_ns();
    for (int i = 0; i < FS_THREADS; i++)
        pthread_create(&t[i], NULL, scratch, (void *)(intptr_t)i);
    for (int i = 0; i < FS_THREADS; i++)
        pthread_join(t[i], NULL);
    return (double)(bench_now_ns() - t0) / 1e9;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
    usage:
        fprintf(stderr, "usage: alloc_speed single|larson|prodcons|falseshare [--scale F]\n");
        return 2;
    }
    if (argc == 4 && !strcmp(argv[2], "--scale"))
        scale = atof(argv[3]);
    else if (argc != 2)
        goto usage;
    double secs;
    struct rusage ru0, ru1;
    getrusage(RUSAGE_SELF, &ru0);
    if (!strcmp(argv[1], "single"))
        secs = run_single();
    else if (!strcmp(argv[1], "larson"))
        secs = run_larson();
    else if (!strcmp(argv[1], "prodcons"))
        secs = run_prodcons();
    else if (!strcmp(argv[1], "falseshare"))
        secs = run_falseshare();
    else
        goto usage;
    getrusage(RUSAGE_SELF, &ru1);
    /* CPU time of all threads: less disturbed than wall time when other
     * work shares the machine */
    double cpu = (double)(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec + ru1.ru_stime.tv_sec -
                          ru0.ru_stime.tv_sec) +
                 (double)(ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec + ru1.ru_stime.tv_usec -
                          ru0.ru_stime.tv_usec) /
                     1e6;
    printf("RESULT workload=%s secs=%.4f cpu_secs=%.4f", argv[1], secs, cpu);
    if (!strcmp(argv[1], "single") && single_best_ns > 0)
        printf(" best_ns_op=%.3f", single_best_ns);
    if (!strcmp(argv[1], "falseshare"))
        printf(" shared_line_pct=%.4f",
               100.0 * (double)atomic_load(&fs_shared) / (double)(atomic_load(&fs_samples) + 1));
    printf("\n");
    return 0;
}
