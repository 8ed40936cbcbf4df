/*
 * test_alloc_reclaim.c - the purger takes back the caches of idle threads
 * (src/alloc/alloc_int.h, "Reclaiming idle caches") while those threads
 * may wake at any moment: the handshake must never let the purger and the
 * owner touch a cache at once.
 *
 * Threads on one heap run rounds: allocate a burst of objects of many
 * classes, fill each with a pattern, check and free them (the cache fills
 * up), then sleep a varying few milliseconds - long enough for the purger
 * to see the thread idle and take its cache, short enough that the next
 * round often starts while it does.  Checked: every object keeps its
 * contents, the heap's encoded free lists never decode to garbage (the
 * allocator would abort), the purger did take caches, and at the end
 * nothing is live.  Under TSan this also checks the handshake's ordering.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <linux/membarrier.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <moat/alloc.h>

#include "alloc/alloc_int.h"

enum { THREADS = 4, ROUNDS = 60, BURST = 400 };

static moat_heap *heap;

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void *worker(void *arg)
{
    uint64_t r = 0x9e3779b97f4a7c15ULL * (uint64_t)((uintptr_t)arg + 1);
    static _Thread_local unsigned char *p[BURST];
    static _Thread_local size_t n[BURST];
    for (int round = 0; round < ROUNDS; round++) {
        for (int i = 0; i < BURST; i++) {
            n[i] = 16 + (size_t)(rng_next(&r) % 3000);
            p[i] = moat_heap_malloc(heap, n[i]);
            assert_non_null(p[i]);
            memset(p[i], (int)(i + round) & 0xff, n[i]);
        }
        for (int i = 0; i < BURST; i++) {
            unsigned char want = (unsigned char)((i + round) & 0xff);
            if (p[i][0] != want || p[i][n[i] - 1] != want || p[i][n[i] / 2] != want)
                fail_msg("object %d of round %d changed under its owner", i, round);
            moat_heap_free(heap, p[i]);
        }
        /* 5..35 ms: around the purger's 10 ms periods */
        struct timespec ts = {0, (long)(5 + rng_next(&r) % 31) * 1000000L};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

static void test_reclaim_races_wakeups(void **state)
{
    (void)state;
    long q = syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
    if (q < 0 || !(q & MEMBARRIER_CMD_PRIVATE_EXPEDITED)) {
        printf("membarrier(PRIVATE_EXPEDITED) unavailable: idle caches are not reclaimed\n");
        skip();
    }
    struct moat_heap_config cfg = {.source = MOAT_HEAP_SOURCE_MMAP};
    assert_int_equal(moat_heap_new(&cfg, &heap), 0);
    /* The purger starts for free pages only.  The rounds below need not
     * free any: what a cache overflows with is parked in the transfer
     * slots, where the next rounds' refills take it.  Free 4 MiB of pages
     * first, so that it runs (then cache overflows ask it to look). */
    void *big = moat_heap_malloc(heap, 4u << 20);
    assert_non_null(big);
    memset(big, 1, 4u << 20);
    moat_heap_free(heap, big);
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, worker, (void *)(uintptr_t)i), 0);
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);
    uint64_t taken = atomic_load(&heap->reclaimed);
    struct moat_alloc_stats st;
    assert_int_equal(moat_heap_stats_get(heap, &st), 0);
    printf("%d threads x %d rounds: the purger took %llu caches back\n", THREADS, ROUNDS,
           (unsigned long long)taken);
    assert_true(taken > 0);
    assert_int_equal(st.live_bytes, 0);
    assert_int_equal(moat_heap_destroy(heap), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reclaim_races_wakeups),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
