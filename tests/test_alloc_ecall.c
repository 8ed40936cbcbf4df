/*
 * test_alloc_ecall.c - the enclave ECall pattern at small scale: threads
 * enter a capped heap, set up per-thread state, allocate a mix of small
 * objects and 8/16/32 KiB buffers, free most of it, keep a few objects in a
 * shared long-lived set (freed later by other threads), tear their state
 * down and leave - thousands of times.  Two ways of leaving: the thread
 * exits (a new thread per call), or it stays and calls
 * moat_alloc_thread_flush at the end of every call.
 *
 * Checked: after a warm-up (the first fifth of the run), the heap's
 * committed and reserved memory in the last two fifths never exceed their
 * peaks in the two fifths before by more than 5% (plus two slabs' worth), no allocation fails,
 * nothing is left in the caches of exited threads, and the live bytes at the end are exactly the
 * long-lived set's.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>

#include <moat/alloc.h>

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define SANITIZED 1
#endif
#endif
#ifndef SANITIZED
#define SANITIZED 0
#endif

#define SLOTS           6                      /* host threads entering the "enclave" */
#define ROUNDS          (SANITIZED ? 20 : 100) /* samples of memory */
#define CALLS_PER_ROUND (SANITIZED ? 4 : 20)   /* calls a slot makes between samples */
#define RING            2048                   /* the long-lived set */

static moat_heap *heap;
static pthread_mutex_t ring_lock = PTHREAD_MUTEX_INITIALIZER;
static void *ring[RING];
static size_t ring_size[RING]; /* fixed: a slot is always refilled with this size */
static _Atomic int failures;

static uint64_t rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static size_t call_size(uint64_t *s)
{
    uint64_t r = rnd(s) % 100;
    if (r < 97)
        return 16 + rnd(s) % 496;
    static const size_t bufs[] = {8192, 16384, 32768};
    return bufs[rnd(s) % 3];
}

/* One ECall: what an enclave runtime and its callee do between entry and
 * exit.  One object in 16 outlives the call: it replaces an object of the
 * same size in the long-lived set, so the live bytes stay constant and any
 * growth is the allocator's. */
static void ecall(uint64_t *s)
{
    void *state = moat_heap_calloc(heap, 1, 2048); /* the runtime's per-thread state */
    if (!state) {
        atomic_fetch_add(&failures, 1);
        return;
    }
    enum { K = 48 };
    void *p[K];
    int keep_at[K];
    for (int i = 0; i < K; i++) {
        keep_at[i] = rnd(s) % 16 == 0 ? (int)(rnd(s) % RING) : -1;
        size_t n = keep_at[i] >= 0 ? ring_size[keep_at[i]] : call_size(s);
        p[i] = moat_heap_malloc(heap, n);
        if (!p[i]) {
            atomic_fetch_add(&failures, 1);
            continue;
        }
        memset(p[i], i, n < 64 ? n : 64);
    }
    for (int i = 0; i < K; i++) {
        if (!p[i])
            continue;
        if (keep_at[i] >= 0) {
            pthread_mutex_lock(&ring_lock);
            void *old = ring[keep_at[i]];
            ring[keep_at[i]] = p[i];
            pthread_mutex_unlock(&ring_lock);
            moat_free(old); /* often allocated by another thread */
        } else {
            moat_free(p[i]);
        }
    }
    moat_free(state);
}

struct slot {
    int id;
    int exit_per_call;
    uint64_t seed;
};

static void *one_call_thread(void *arg)
{
    struct slot *sl = arg;
    ecall(&sl->seed);
    return NULL; /* the thread exits: its cache goes back */
}

static pthread_barrier_t round_start, round_end;

static void *host_thread(void *arg)
{
    struct slot *sl = arg;
    for (int r = 0; r < ROUNDS; r++) {
        pthread_barrier_wait(&round_start);
        for (int c = 0; c < CALLS_PER_ROUND; c++) {
            if (sl->exit_per_call) {
                pthread_t t;
                pthread_create(&t, NULL, one_call_thread, sl);
                pthread_join(t, NULL);
            } else {
                ecall(&sl->seed);
                moat_alloc_thread_flush(); /* the ECall returns */
            }
        }
        pthread_barrier_wait(&round_end);
    }
    return NULL;
}

static void run(int exit_per_call)
{
    struct moat_heap_config cfg = {.limit = 16u << 20, .source = MOAT_HEAP_SOURCE_MMAP};
    assert_int_equal(moat_heap_new(&cfg, &heap), 0);
    /* the long-lived set starts full, so the live bytes are steady */
    uint64_t seed = 42;
    for (int i = 0; i < RING; i++) {
        ring_size[i] = call_size(&seed);
        ring[i] = moat_heap_malloc(heap, ring_size[i]);
        assert_non_null(ring[i]);
    }
    atomic_store(&failures, 0);
    pthread_barrier_init(&round_start, NULL, SLOTS + 1);
    pthread_barrier_init(&round_end, NULL, SLOTS + 1);
    struct slot slots[SLOTS];
    pthread_t t[SLOTS];
    for (int i = 0; i < SLOTS; i++) {
        slots[i] = (struct slot){i, exit_per_call, 0x9876543ULL * (uint64_t)(i + 1)};
        pthread_create(&t[i], NULL, host_thread, &slots[i]);
    }
    uint64_t committed[ROUNDS], reserved[ROUNDS], threads_max = 0;
    for (int r = 0; r < ROUNDS; r++) {
        pthread_barrier_wait(&round_start);
        pthread_barrier_wait(&round_end);
        /* between rounds nobody is inside a call */
        struct moat_alloc_stats st;
        moat_heap_stats_get(heap, &st);
        committed[r] = st.committed_bytes;
        reserved[r] = st.reserved_bytes;
        if (st.threads > threads_max)
            threads_max = st.threads;
    }
    for (int i = 0; i < SLOTS; i++)
        pthread_join(t[i], NULL);
    /* this thread leaves too: otherwise the purger may be taking its idle
     * cache back while the statistics below are read, and the class part
     * of moat_heap_stats_get, read without the global lock, can then see
     * the blocks moved but the cache's count from before */
    moat_alloc_thread_flush();

    uint64_t peak1c = 0, peak2c = 0, peak1r = 0, peak2r = 0;
    /* warm-up: the first fifth; then two windows of equal length */
    for (int r = ROUNDS / 5; r < ROUNDS; r++) {
        if (r < ROUNDS * 3 / 5) {
            peak1c = committed[r] > peak1c ? committed[r] : peak1c;
            peak1r = reserved[r] > peak1r ? reserved[r] : peak1r;
        } else {
            peak2c = committed[r] > peak2c ? committed[r] : peak2c;
            peak2r = reserved[r] > peak2r ? reserved[r] : peak2r;
        }
    }
    struct moat_alloc_stats st;
    moat_heap_stats_get(heap, &st);
    uint64_t ring_bytes = 0;
    for (int i = 0; i < RING; i++)
        ring_bytes += moat_usable_size(ring[i]);
    printf("%s: %d calls; committed peak %llu KiB then %llu KiB; reserved peak %llu KiB then "
           "%llu KiB; live %llu KiB (long-lived set %llu KiB); %llu threads hold caches\n",
           exit_per_call ? "thread per call" : "flush per call", SLOTS * ROUNDS * CALLS_PER_ROUND,
           (unsigned long long)peak1c >> 10, (unsigned long long)peak2c >> 10,
           (unsigned long long)peak1r >> 10, (unsigned long long)peak2r >> 10,
           (unsigned long long)st.live_bytes >> 10, (unsigned long long)ring_bytes >> 10,
           (unsigned long long)st.threads);
    assert_int_equal(atomic_load(&failures), 0);
    assert_int_equal(st.alloc_failures, 0);
    /* between rounds only the host threads (flush per call) and this one
     * (it filled the long-lived set) hold caches: exited threads hold none */
    assert_true(threads_max <= (exit_per_call ? 1u : SLOTS + 1u));
    uint64_t slack = 128u << 10; /* two of the largest slabs */
    assert_true(peak2c <= peak1c + peak1c / 20 + slack);
    assert_true(peak2r <= peak1r + peak1r / 20 + slack);
    assert_int_equal(st.live_bytes, ring_bytes);
    if (getenv("ECALL_STATS"))
        moat_heap_stats_print(heap, 1);
    for (int i = 0; i < RING; i++)
        moat_free(ring[i]);
    assert_int_equal(moat_heap_destroy(heap), 0);
    pthread_barrier_destroy(&round_start);
    pthread_barrier_destroy(&round_end);
}

static void test_thread_per_call(void **state)
{
    (void)state;
    run(1);
}

static void test_flush_per_call(void **state)
{
    (void)state;
    run(0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_thread_per_call),
        cmocka_unit_test(test_flush_per_call),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
