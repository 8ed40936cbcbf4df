/*
 * test_alloc_slab.c - heaps, slabs and large objects through the public
 * allocator API: blocks come back to their slabs and pages to the source,
 * the cap holds, statistics add up, alignment, calloc and realloc keep
 * their promises, heaps can be destroyed and replaced, fork works.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <errno.h>
#include <linux/membarrier.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <moat/alloc.h>

#include "alloc/alloc_int.h"

static moat_heap *new_heap(size_t limit)
{
    struct moat_heap_config cfg = {.limit = limit, .source = MOAT_HEAP_SOURCE_MMAP};
    moat_heap *h = NULL;
    assert_int_equal(moat_heap_new(&cfg, &h), 0);
    assert_non_null(h);
    return h;
}

static struct moat_alloc_stats stats_of(moat_heap *h)
{
    struct moat_alloc_stats st;
    assert_int_equal(moat_heap_stats_get(h, &st), 0);
    return st;
}

/* Freed pages are decommitted by the background purger once the frees stop
 * (10-100 ms later): wait for committed to fall to `bound` (at most 5 s, a
 * limit far from the expected time, so load cannot make the test flaky). */
static struct moat_alloc_stats stats_after_purge(moat_heap *h, uint64_t bound)
{
    struct moat_alloc_stats st = stats_of(h);
    for (int i = 0; i < 500 && st.committed_bytes > bound; i++) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
        st = stats_of(h);
    }
    return st;
}

static void test_small_blocks_come_back(void **state)
{
    (void)state;
    moat_heap *h = new_heap(0);
    enum { N = 20000 };
    static void *p[N];
    for (int i = 0; i < N; i++) {
        p[i] = moat_heap_malloc(h, 48);
        assert_non_null(p[i]);
        assert_int_equal((uintptr_t)p[i] % 16, 0);
        assert_int_equal(moat_usable_size(p[i]), 48);
        memset(p[i], i & 0xff, 48);
    }
    struct moat_alloc_stats st = stats_of(h);
    unsigned c = m_alloc_size_class(48);
    assert_true(st.classes[c].live_blocks >= N - 64 && st.classes[c].live_blocks <= N);
    assert_int_equal(st.classes[c].reserved_bytes, st.classes[c].slabs * st.classes[c].slab_size);
    assert_true(st.classes[c].reserved_bytes >= (uint64_t)N * 48);
    /* fullest-first: nothing but the last slab is partly used */
    assert_true(st.classes[c].reserved_bytes <= (uint64_t)N * 48 + 2 * 4096 + 64 * 48);
    for (int i = 0; i < N; i++) {
        assert_int_equal(((unsigned char *)p[i])[47], (unsigned char)(i & 0xff));
        moat_heap_free(h, p[i]);
    }
    size_t trimmed = moat_heap_trim(h);
    st = stats_of(h);
    printf("freed %d blocks: reserved %llu, committed %llu, trimmed %zu bytes\n", N,
           (unsigned long long)st.reserved_bytes, (unsigned long long)st.committed_bytes, trimmed);
    assert_int_equal(st.classes[c].live_blocks, 0);
    assert_int_equal(st.classes[c].slabs, 0);
    assert_int_equal(st.reserved_bytes, 0);
    assert_int_equal(st.committed_bytes, 0);
    assert_true(st.decommitted_bytes >= (uint64_t)N * 48);
    assert_int_equal(moat_heap_destroy(h), 0);
}

static void test_committed_falls_without_trim(void **state)
{
    (void)state;
    moat_heap *h = new_heap(0);
    enum { N = 32768 };
    static void *p[N];
    for (int i = 0; i < N; i++)
        assert_non_null(p[i] = moat_heap_malloc(h, 1000 + (size_t)(i % 24)));
    struct moat_alloc_stats before = stats_of(h);
    for (int i = 0; i < N; i++)
        moat_heap_free(h, p[i]);
    struct moat_alloc_stats after = stats_after_purge(h, 2u << 20);
    printf("32 MiB of 1 KiB blocks: committed %llu KiB, after free %llu KiB (cached %llu KiB)\n",
           (unsigned long long)before.committed_bytes >> 10,
           (unsigned long long)after.committed_bytes >> 10,
           (unsigned long long)after.cached_bytes >> 10);
    /* what stays: the thread's cache (bounded) and the retained free pages */
    assert_true(after.committed_bytes < 2u << 20);
    assert_true(after.decommitted_bytes > 16u << 20);
    assert_int_equal(moat_heap_destroy(h), 0);
}

/* A thread that frees a burst and then sleeps (never calling the allocator
 * again) must not keep its cache: each cached block pins a slab.  The
 * purger takes idle caches back (alloc_int.h, "Reclaiming idle caches"). */
struct idle_thread {
    moat_heap *h;
    pthread_mutex_t lock;
    pthread_cond_t cv;
    int stage; /* 1: frees done; 2: may exit */
};

static void *idle_after_burst(void *arg)
{
    struct idle_thread *t = arg;
    enum { N = 6000 };
    static void *p[N];
    for (int i = 0; i < N; i++) {
        /* many classes, 16 B to 4 KiB */
        p[i] = moat_heap_malloc(t->h, 16 + (size_t)(i * 37) % 4080);
        assert_non_null(p[i]);
        memset(p[i], 1, 16);
    }
    for (int i = 0; i < N; i++)
        moat_heap_free(t->h, p[(i * 7919) % N]);
    pthread_mutex_lock(&t->lock);
    t->stage = 1;
    pthread_cond_broadcast(&t->cv);
    while (t->stage != 2)
        pthread_cond_wait(&t->cv, &t->lock);
    pthread_mutex_unlock(&t->lock);
    return NULL;
}

static void test_idle_cache_reclaimed(void **state)
{
    (void)state;
    long q = syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
    if (q < 0 || !(q & MEMBARRIER_CMD_PRIVATE_EXPEDITED)) {
        printf("membarrier(PRIVATE_EXPEDITED) unavailable: idle caches are not reclaimed\n");
        skip();
    }
    struct idle_thread t = {
        .h = new_heap(0), .lock = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, idle_after_burst, &t), 0);
    pthread_mutex_lock(&t.lock);
    while (t.stage != 1)
        pthread_cond_wait(&t.cv, &t.lock);
    pthread_mutex_unlock(&t.lock);
    struct moat_alloc_stats st = stats_of(t.h);
    uint64_t cached0 = st.cached_bytes;
    /* wait (at most 10 s: far from the expected ~50 ms) for the purger */
    for (int i = 0; i < 1000 && st.cached_bytes > 0; i++) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
        st = stats_of(t.h);
    }
    printf("idle thread: cached %llu bytes after its frees, %llu later; committed %llu KiB\n",
           (unsigned long long)cached0, (unsigned long long)st.cached_bytes,
           (unsigned long long)st.committed_bytes >> 10);
    assert_int_equal(st.cached_bytes, 0);
    assert_int_equal(st.live_bytes, 0);
    assert_int_equal(st.reserved_bytes, 0);
    /* the thread wakes and uses its cache again */
    pthread_mutex_lock(&t.lock);
    t.stage = 2;
    pthread_cond_broadcast(&t.cv);
    pthread_mutex_unlock(&t.lock);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(moat_heap_destroy(t.h), 0);
}

/* What a thread holds when it exits: parked in the transfer slots of an
 * uncapped heap (the next threads' refills take it whole: a server that
 * starts a thread per request), drained into the slabs of a capped one (an
 * enclave's ECall threads: the memory is back at once).  Either way nothing
 * is live and a trim gets every page back. */
static void *burst_and_exit(void *arg)
{
    moat_heap *h = arg;
    enum { N = 3000 };
    static _Thread_local void *p[N];
    for (int i = 0; i < N; i++) {
        p[i] = moat_heap_malloc(h, 16 + (size_t)(i % 8) * 16);
        assert_non_null(p[i]);
    }
    for (int i = 0; i < N; i++)
        moat_heap_free(h, p[i]);
    return NULL;
}

static void test_thread_exit_parks_or_drains(void **state)
{
    (void)state;
    for (int capped = 0; capped < 2; capped++) {
        moat_heap *h = new_heap(capped ? 16u << 20 : 0);
        pthread_t t;
        assert_int_equal(pthread_create(&t, NULL, burst_and_exit, h), 0);
        assert_int_equal(pthread_join(t, NULL), 0);
        struct moat_alloc_stats st = stats_of(h);
        printf("%s heap after a thread's exit: live %llu, cached %llu, reserved %llu bytes\n",
               capped ? "capped" : "uncapped", (unsigned long long)st.live_bytes,
               (unsigned long long)st.cached_bytes, (unsigned long long)st.reserved_bytes);
        assert_int_equal(st.live_bytes, 0);
        assert_int_equal(st.threads, 0);
        if (capped)
            assert_int_equal(st.cached_bytes, 0);
        else
            assert_true(st.cached_bytes > 0);
        moat_heap_trim(h);
        st = stats_of(h);
        assert_int_equal(st.cached_bytes, 0);
        assert_int_equal(st.reserved_bytes, 0);
        assert_int_equal(st.committed_bytes, 0);
        assert_int_equal(moat_heap_destroy(h), 0);
    }
}

static void test_large_objects(void **state)
{
    (void)state;
    moat_heap *h = new_heap(0);
    size_t sizes[] = {32769, 65536, 100000, 1 << 20, (5 << 20) + 123};
    void *p[5];
    for (int i = 0; i < 5; i++) {
        p[i] = moat_heap_malloc(h, sizes[i]);
        assert_non_null(p[i]);
        assert_int_equal((uintptr_t)p[i] % 4096, 0);
        size_t u = moat_usable_size(p[i]);
        assert_true(u >= sizes[i] && u < sizes[i] + 4096);
        memset(p[i], 0xab, u);
    }
    struct moat_alloc_stats st = stats_of(h);
    uint64_t req = 0;
    for (int i = 0; i < 5; i++)
        req += sizes[i];
    assert_int_equal(st.large_objects, 5);
    assert_int_equal(st.large_requested_bytes, req);
    /* grow the last one in place (nothing follows it), then shrink it */
    void *q = moat_heap_realloc(h, p[4], 8 << 20);
    assert_ptr_equal(q, p[4]);
    assert_int_equal(((unsigned char *)q)[(5 << 20) + 100], 0xab);
    q = moat_heap_realloc(h, q, 40000);
    assert_ptr_equal(q, p[4]);
    assert_int_equal(moat_usable_size(q), 40960);
    p[4] = q;
    for (int i = 0; i < 5; i++)
        moat_heap_free(h, p[i]);
    st = stats_after_purge(h, 1u << 20);
    assert_int_equal(st.large_objects, 0);
    assert_int_equal(st.large_reserved_bytes, 0);
    assert_true(st.committed_bytes <= 1u << 20);
    assert_int_equal(moat_heap_destroy(h), 0);
}

static void test_huge_objects(void **state)
{
    (void)state;
    moat_heap *h = new_heap(0);
    size_t n = (100u << 20) + 12345; /* more than a 64 MiB arena holds */
    unsigned char *p = moat_heap_malloc(h, n);
    assert_non_null(p);
    p[0] = 1;
    p[n - 1] = 2;
    assert_true(moat_usable_size(p) >= n && moat_usable_size(p) < n + 4096);
    unsigned char *z = moat_heap_calloc(h, 1, 80u << 20);
    assert_non_null(z);
    assert_int_equal(z[(80u << 20) - 1], 0);
    void *al = moat_heap_aligned_alloc(h, 32u << 20, 70u << 20);
    assert_non_null(al);
    assert_int_equal((uintptr_t)al % (32u << 20), 0);
    struct moat_alloc_stats st = stats_of(h);
    assert_int_equal(st.large_objects, 3);
    /* realloc moves it (a huge arena holds one object) and keeps the ends */
    unsigned char *q = moat_heap_realloc(h, p, n + (1u << 20));
    assert_non_null(q);
    assert_int_equal(q[0], 1);
    assert_int_equal(q[n - 1], 2);
    moat_heap_free(h, q);
    moat_heap_free(h, z);
    moat_heap_free(h, al);
    /* sizes around what a 64 MiB arena holds: either kind of arena fits */
    for (size_t pages = M_ALLOC_NORMAL_PAGES - 2; pages <= M_ALLOC_NORMAL_PAGES + 3; pages++) {
        void *x = moat_heap_malloc(h, pages * 4096 - 100);
        assert_non_null(x);
        moat_heap_free(h, x);
    }
    st = stats_after_purge(h, 1u << 20);
    assert_int_equal(st.large_objects, 0);
    /* huge arenas go back at once, the rest once the purger has run */
    assert_true(st.committed_bytes < 1u << 20);
    assert_int_equal(moat_heap_destroy(h), 0);
}

static void test_cap_holds(void **state)
{
    (void)state;
    size_t cap = 2u << 20;
    moat_heap *h = new_heap(cap);
    void *p[4096];
    int n = 0;
    errno = 0;
    while (n < 4096) {
        void *x = moat_heap_malloc(h, (n % 3) ? 3000 : 40000);
        if (!x)
            break;
        p[n++] = x;
    }
    assert_true(n < 4096);
    assert_int_equal(errno, ENOMEM);
    struct moat_alloc_stats st = stats_of(h);
    printf("cap %zu KiB: %d objects, committed %llu KiB, peak %llu KiB\n", cap >> 10, n,
           (unsigned long long)st.committed_bytes >> 10,
           (unsigned long long)st.peak_committed_bytes >> 10);
    assert_true(st.peak_committed_bytes <= cap);
    assert_true(st.committed_bytes >= cap * 3 / 4); /* it really used the cap */
    assert_true(st.alloc_failures >= 1);
    for (int i = 0; i < n; i++)
        moat_heap_free(h, p[i]);
    /* and memory can be had again */
    void *x = moat_heap_malloc(h, 1 << 20);
    assert_non_null(x);
    moat_heap_free(h, x);
    assert_int_equal(moat_heap_destroy(h), 0);
}

static void test_aligned(void **state)
{
    (void)state;
    moat_heap *h = new_heap(0);
    for (size_t align = 1; align <= (1u << 22); align <<= 1) {
        size_t sizes[] = {1, 24, 100, 4000, 40000};
        for (int i = 0; i < 5; i++) {
            void *p = moat_heap_aligned_alloc(h, align, sizes[i]);
            assert_non_null(p);
            assert_int_equal((uintptr_t)p % align, 0);
            assert_true(moat_usable_size(p) >= sizes[i]);
            memset(p, 1, sizes[i]);
            moat_heap_free(h, p);
        }
    }
    void *p = (void *)1;
    assert_int_equal(moat_heap_posix_memalign(h, &p, 3 * sizeof(void *), 10), EINVAL);
    assert_int_equal(moat_heap_posix_memalign(h, &p, 4, 10), EINVAL);
    assert_ptr_equal(p, (void *)1);
    assert_int_equal(moat_heap_posix_memalign(h, &p, 64, 10), 0);
    assert_int_equal((uintptr_t)p % 64, 0);
    moat_heap_free(h, p);
    errno = 0;
    assert_null(moat_heap_aligned_alloc(h, 48, 10));
    assert_int_equal(errno, EINVAL);
    assert_int_equal(moat_heap_destroy(h), 0);
}

static void test_calloc_realloc(void **state)
{
    (void)state;
    moat_heap *h = new_heap(0);
    /* dirty memory comes back zeroed by calloc, small and large */
    for (size_t n = 16; n <= (1u << 20); n *= 4) {
        unsigned char *p = moat_heap_malloc(h, n);
        memset(p, 0xff, n);
        moat_heap_free(h, p);
        p = moat_heap_calloc(h, 1, n);
        assert_non_null(p);
        for (size_t i = 0; i < n; i++)
            if (p[i])
                fail_msg("calloc(%zu) byte %zu is %d", n, i, p[i]);
        moat_heap_free(h, p);
    }
    errno = 0;
    assert_null(moat_heap_calloc(h, SIZE_MAX / 2, 3));
    assert_int_equal(errno, ENOMEM);
    /* realloc keeps contents through small and large sizes */
    size_t steps[] = {1, 17, 200, 5000, 33000, 200000, 3000, 40, 0};
    unsigned char *p = NULL;
    size_t have = 0;
    for (int s = 0; steps[s]; s++) {
        p = moat_heap_realloc(h, p, steps[s]);
        assert_non_null(p);
        size_t keep = have < steps[s] ? have : steps[s];
        for (size_t i = 0; i < keep; i++)
            assert_int_equal(p[i], (unsigned char)(i * 7));
        for (size_t i = 0; i < steps[s]; i++)
            p[i] = (unsigned char)(i * 7);
        have = steps[s];
    }
    assert_null(moat_heap_realloc(h, p, 0)); /* frees */
    assert_int_equal(moat_heap_destroy(h), 0);
}

static void test_stats_per_class(void **state)
{
    (void)state;
    moat_heap *h = new_heap(0);
    enum { N = 1000 };
    static void *p[N];
    for (int i = 0; i < N; i++)
        p[i] = moat_heap_malloc(h, 200); /* class 208 */
    unsigned c = m_alloc_size_class(200);
    struct moat_alloc_stats st = stats_of(h);
    const struct moat_alloc_class_stats *cs = &st.classes[c];
    assert_int_equal(cs->block_size, 208);
    assert_int_equal(cs->live_blocks, N);
    assert_int_equal(cs->live_bytes, N * 208);
    assert_int_equal(cs->requested_bytes, N * 200);
    assert_int_equal(cs->allocs, N);
    assert_true(cs->reserved_bytes >= N * 208);
    double frag = 1.0 - (double)cs->requested_bytes / (double)cs->reserved_bytes;
    assert_true(cs->fragmentation > frag - 1e-9 && cs->fragmentation < frag + 1e-9);
    assert_true(cs->peak_reserved_bytes >= cs->reserved_bytes);
    assert_int_equal(st.requested_bytes, N * 200);
    for (int i = 0; i < N; i++)
        moat_heap_free(h, p[i]);
    st = stats_of(h);
    assert_int_equal(st.classes[c].live_blocks, 0);
    assert_int_equal(st.requested_bytes, 0);
    assert_true(st.classes[c].peak_reserved_bytes >= N * 208);
    assert_int_equal(moat_heap_destroy(h), 0);
}

static void *use_heap(void *arg)
{
    moat_heap *h = arg;
    for (int i = 0; i < 1000; i++)
        moat_heap_free(h, moat_heap_malloc(h, (size_t)(i % 500)));
    return moat_heap_malloc(h, 64); /* left for the main thread to free */
}

static void test_destroy_and_reuse_slots(void **state)
{
    (void)state;
    /* more heaps than TLS slots: the extra ones run uncached */
    moat_heap *hs[M_ALLOC_TLS_SLOTS + 3];
    size_t chunk[M_ALLOC_TLS_SLOTS + 3];
    for (int i = 0; i < M_ALLOC_TLS_SLOTS + 3; i++) {
        hs[i] = new_heap(i % 2 ? 4u << 20 : 0);
        pthread_t t;
        void *left;
        pthread_create(&t, NULL, use_heap, hs[i]);
        pthread_join(t, &left);
        assert_non_null(left);
        /* free's fast path finds the thread's cache by the chunk's byte:
         * 1 + the heap's slot (M_ALLOC_NO_SLOT for the heaps beyond them) */
        chunk[i] = ((uintptr_t)left >> M_ALLOC_CHUNK_SHIFT) & (M_ALLOC_NCHUNKS - 1);
        assert_int_equal(atomic_load(&m_alloc_chunk_slot[chunk[i]]), hs[i]->slot + 1);
        if (i >= M_ALLOC_TLS_SLOTS)
            assert_int_equal(hs[i]->slot, M_ALLOC_NO_SLOT);
        moat_free(left);
        use_heap(hs[i]);
    }
    for (int i = 0; i < M_ALLOC_TLS_SLOTS + 3; i += 2) {
        assert_int_equal(moat_heap_destroy(hs[i]), 0);
        assert_int_equal(atomic_load(&m_alloc_chunk_slot[chunk[i]]), 0);
    }
    /* new heaps take the freed slots; this thread's old caches must not
     * be mistaken for theirs */
    for (int i = 0; i < M_ALLOC_TLS_SLOTS + 3; i += 2) {
        hs[i] = new_heap(0);
        void *x = use_heap(hs[i]);
        struct moat_alloc_stats st = stats_of(hs[i]);
        assert_int_equal(st.classes[m_alloc_size_class(64)].live_blocks, 1);
        moat_heap_free(hs[i], x);
    }
    for (int i = 0; i < M_ALLOC_TLS_SLOTS + 3; i++)
        assert_int_equal(moat_heap_destroy(hs[i]), 0);
    assert_int_equal(moat_heap_destroy(NULL), EINVAL);
    assert_int_equal(moat_heap_destroy(moat_heap_default()), EINVAL);
}

static void test_default_heap_switch(void **state)
{
    (void)state;
    moat_heap *h = new_heap(8u << 20);
    assert_int_equal(moat_heap_set_default(h), 0);
    assert_ptr_equal(moat_heap_default(), h);
    assert_int_equal(moat_heap_destroy(h), EBUSY);
    void *p = moat_malloc(100);
    assert_int_equal(stats_of(h).classes[m_alloc_size_class(100)].live_blocks, 1);
    assert_int_equal(moat_heap_set_default(NULL), 0);
    moat_free(p); /* found by address, whatever the default is */
    assert_int_equal(stats_of(h).classes[m_alloc_size_class(100)].live_blocks, 0);
    assert_int_equal(moat_heap_destroy(h), 0);
}

static void test_fork(void **state)
{
    (void)state;
    void *keep = moat_malloc(1000);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* the child allocates, frees, and frees what its parent allocated */
        for (int i = 0; i < 10000; i++)
            moat_free(moat_malloc((size_t)(i % 3000)));
        moat_free(keep);
        _exit(0);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    moat_free(keep);
}

static void test_malloc_zero_and_null(void **state)
{
    (void)state;
    void *a = moat_malloc(0), *b = moat_malloc(0);
    assert_non_null(a);
    assert_non_null(b);
    assert_ptr_not_equal(a, b);
    moat_free(a);
    moat_free(b);
    moat_free(NULL);
    assert_int_equal(moat_usable_size(NULL), 0);
    void *p = moat_realloc(NULL, 10);
    assert_non_null(p);
    moat_free(p);
    errno = 0;
    assert_null(moat_malloc(SIZE_MAX - 100));
    assert_int_equal(errno, ENOMEM);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_small_blocks_come_back),
        cmocka_unit_test(test_committed_falls_without_trim),
        cmocka_unit_test(test_idle_cache_reclaimed),
        cmocka_unit_test(test_thread_exit_parks_or_drains),
        cmocka_unit_test(test_large_objects),
        cmocka_unit_test(test_huge_objects),
        cmocka_unit_test(test_cap_holds),
        cmocka_unit_test(test_aligned),
        cmocka_unit_test(test_calloc_realloc),
        cmocka_unit_test(test_stats_per_class),
        cmocka_unit_test(test_destroy_and_reuse_slots),
        cmocka_unit_test(test_default_heap_switch),
        cmocka_unit_test(test_fork),
        cmocka_unit_test(test_malloc_zero_and_null),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
