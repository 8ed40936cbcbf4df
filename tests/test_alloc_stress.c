/*
 * test_alloc_stress.c - millions of random allocator operations from many
 * threads, each allocation checked against a shadow record: its alignment,
 * its usable size (within the waste bound), and its contents, which are
 * filled with a pattern derived from the record and verified before every
 * free or realloc.  A fifth of the blocks are freed by another thread than
 * the one that allocated them.  At the end the heap must hold nothing.
 *
 * Scale: 4 threads x 1M operations; under ASan or TSan a tenth of that.
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
#include <unistd.h>

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

#define NTHREADS 4
#define NSLOTS   2048
#define OPS      (SANITIZED ? 100000 : 1000000)
#define XQ       4096

struct rec {
    unsigned char *p;
    size_t size;
    size_t align; /* 0: no alignment asked */
    uint64_t seed;
};

/* a hand-off queue per thread: other threads push, the owner pops and frees */
struct xq {
    pthread_mutex_t lock;
    struct rec r[XQ];
    int n;
};

static struct xq queues[NTHREADS];
static moat_heap *heap;
static _Atomic uint64_t total_ops, total_bytes_checked;

static uint64_t rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static uint64_t word_at(uint64_t seed, size_t i)
{
    return (seed ^ (i * 0x9e3779b97f4a7c15ULL)) * 0xff51afd7ed558ccdULL;
}

/* byte i of the pattern: the same whether written by words or by bytes
 * (x86-64 is little-endian) */
static unsigned char byte_at(uint64_t seed, size_t i)
{
    return (unsigned char)(word_at(seed, i & ~(size_t)7) >> (8 * (i & 7)));
}

/* Which byte ranges are patterned: all of small blocks; the ends and one
 * word a page of big ones (keeps the test fast). */
static void fill(const struct rec *r)
{
    size_t n = r->size;
    if (n <= 4096) {
        size_t i = 0;
        for (; i + 8 <= n; i += 8) {
            uint64_t w = word_at(r->seed, i);
            memcpy(r->p + i, &w, 8);
        }
        for (; i < n; i++)
            r->p[i] = byte_at(r->seed, i);
        return;
    }
    for (size_t i = 0; i < 256; i++) {
        r->p[i] = byte_at(r->seed, i);
        r->p[n - 1 - i] = byte_at(r->seed, n - 1 - i);
    }
    for (size_t i = 4096; i < n; i += 4096)
        r->p[i] = byte_at(r->seed, i);
}

static void check(const struct rec *r, size_t upto)
{
    size_t n = r->size < upto ? r->size : upto;
    size_t checked = 0;
    if (r->size <= 4096) {
        size_t i = 0;
        for (; i + 8 <= n; i += 8) {
            uint64_t w;
            memcpy(&w, r->p + i, 8);
            if (w != word_at(r->seed, i))
                fail_msg("block %p (%zu bytes): word at %zu changed", (void *)r->p, r->size, i);
        }
        for (; i < n; i++)
            if (r->p[i] != byte_at(r->seed, i))
                fail_msg("block %p (%zu bytes): byte %zu changed", (void *)r->p, r->size, i);
        checked = n;
    } else {
        for (size_t i = 0; i < 256 && i < n; i++)
            if (r->p[i] != byte_at(r->seed, i))
                fail_msg("block %p: byte %zu changed", (void *)r->p, i);
        if (n == r->size)
            for (size_t i = 0; i < 256; i++)
                if (r->p[n - 1 - i] != byte_at(r->seed, n - 1 - i))
                    fail_msg("block %p: byte %zu changed", (void *)r->p, n - 1 - i);
        for (size_t i = 4096; i < n; i += 4096)
            if (r->p[i] != byte_at(r->seed, i))
                fail_msg("block %p: byte %zu changed", (void *)r->p, i);
        checked = 512 + n / 4096;
    }
    atomic_fetch_add_explicit(&total_bytes_checked, checked, memory_order_relaxed);
}

static void check_shape(const struct rec *r, int fresh)
{
    uintptr_t a = (uintptr_t)r->p;
    size_t align = r->align ? r->align : 16;
    if (a % align)
        fail_msg("block %p of %zu bytes is not %zu-aligned", (void *)r->p, r->size, align);
    size_t u = moat_usable_size(r->p);
    if (u < r->size)
        fail_msg("usable size %zu < %zu", u, r->size);
    if (fresh && !r->align) {
        /* the waste bound (alloc.h): < 1/8 above 128 bytes, else <= 15
         * (16 for 0 bytes) */
        size_t bound = r->size > 128 ? r->size / 8 + 1 : r->size ? 16 : 17;
        if (r->size > 32768)
            bound = 4096;
        if (u - r->size >= bound)
            fail_msg("usable size %zu for %zu bytes breaks the waste bound", u, r->size);
    }
}

static size_t pick_size(uint64_t *s)
{
    uint64_t r = rnd(s) % 1000;
    if (r < 700)
        return rnd(s) % 256;
    if (r < 950)
        return 256 + rnd(s) % 3840;
    if (r < 995)
        return 4096 + rnd(s) % 28672;
    return 32768 + rnd(s) % 300000;
}

static void alloc_into(struct rec *r, uint64_t *s)
{
    size_t n = pick_size(s);
    uint64_t how = rnd(s) % 100;
    r->align = 0;
    if (how < 70) {
        r->p = moat_heap_malloc(heap, n);
    } else if (how < 80) {
        r->p = moat_heap_calloc(heap, 1, n);
        assert_non_null(r->p);
        for (size_t i = 0; i < n; i += (n > 4096 ? 61 : 1))
            if (r->p[i])
                fail_msg("calloc(%zu): byte %zu is not zero", n, i);
    } else if (how < 90) {
        r->align = (size_t)1 << (4 + rnd(s) % 9); /* 16 .. 4096 */
        if (rnd(s) % 50 == 0)
            r->align = (size_t)1 << (13 + rnd(s) % 8); /* up to 1 MiB */
        r->p = moat_heap_aligned_alloc(heap, r->align, n);
    } else if (how < 95) {
        r->align = sizeof(void *) << (rnd(s) % 6);
        void *p = NULL;
        assert_int_equal(moat_heap_posix_memalign(heap, &p, r->align, n), 0);
        r->p = p;
    } else {
        r->p = moat_heap_realloc(heap, NULL, n);
    }
    assert_non_null(r->p);
    r->size = n;
    r->seed = rnd(s);
    check_shape(r, 1);
    fill(r);
}

static void drain_queue(int me)
{
    struct xq *q = &queues[me];
    pthread_mutex_lock(&q->lock);
    while (q->n > 0) {
        struct rec r = q->r[--q->n];
        check(&r, SIZE_MAX);
        moat_free(r.p);
    }
    pthread_mutex_unlock(&q->lock);
}

static void *worker(void *arg)
{
    int me = (int)(intptr_t)arg;
    struct rec *slots = calloc(NSLOTS, sizeof *slots);
    uint64_t s = 0x1234567ULL * (uint64_t)(me + 1);
    for (long op = 0; op < OPS; op++) {
        struct rec *r = &slots[rnd(&s) % NSLOTS];
        if (!r->p) {
            alloc_into(r, &s);
            continue;
        }
        check(r, SIZE_MAX);
        uint64_t what = rnd(&s) % 100;
        if (what < 55) {
            moat_free(r->p);
            r->p = NULL;
        } else if (what < 75) {
            size_t n = pick_size(&s);
            unsigned char *q = moat_heap_realloc(heap, r->p, n ? n : 1);
            assert_non_null(q);
            struct rec moved = {q, r->size, 0, r->seed};
            check(&moved, n ? n : 1); /* the old contents survived, up to the new size */
            struct rec nr = {q, n ? n : 1, 0, rnd(&s)};
            check_shape(&nr, 0);
            fill(&nr);
            *r = nr;
        } else {
            /* hand it to another thread, which checks and frees it */
            int to = (int)((me + 1 + rnd(&s) % (NTHREADS - 1)) % NTHREADS);
            struct xq *q = &queues[to];
            pthread_mutex_lock(&q->lock);
            if (q->n < XQ) {
                q->r[q->n++] = *r;
                r->p = NULL;
            }
            pthread_mutex_unlock(&q->lock);
            if (r->p) {
                moat_free(r->p);
                r->p = NULL;
            }
        }
        if ((op & 255) == 0)
            drain_queue(me);
        if ((op & 65535) == 0)
            moat_alloc_thread_flush(); /* an "ECall exit" now and then */
    }
    for (int i = 0; i < NSLOTS; i++)
        if (slots[i].p) {
            check(&slots[i], SIZE_MAX);
            moat_free(slots[i].p);
        }
    free(slots);
    atomic_fetch_add(&total_ops, (uint64_t)OPS);
    return NULL;
}

static void test_random_shadowed(void **state)
{
    (void)state;
    struct moat_heap_config cfg = {.source = MOAT_HEAP_SOURCE_MMAP};
    assert_int_equal(moat_heap_new(&cfg, &heap), 0);
    for (int i = 0; i < NTHREADS; i++)
        pthread_mutex_init(&queues[i].lock, NULL);
    pthread_t t[NTHREADS];
    for (int i = 0; i < NTHREADS; i++)
        pthread_create(&t[i], NULL, worker, (void *)(intptr_t)i);
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < NTHREADS; i++)
        drain_queue(i);

    struct moat_alloc_stats st;
    assert_int_equal(moat_heap_stats_get(heap, &st), 0);
    printf("%llu operations from %d threads, %llu MiB of contents checked; peak committed "
           "%llu KiB\n",
           (unsigned long long)atomic_load(&total_ops), NTHREADS,
           (unsigned long long)(atomic_load(&total_bytes_checked) >> 20),
           (unsigned long long)(st.peak_committed_bytes >> 10));
    /* nothing live; no cache left but this thread's (it freed handed-off
     * blocks) */
    assert_int_equal(st.threads, 1);
    assert_int_equal(st.large_objects, 0);
    for (int c = 0; c < MOAT_ALLOC_NCLASSES; c++)
        if (st.classes[c].live_blocks)
            fail_msg("class %d: %llu blocks still live", c,
                     (unsigned long long)st.classes[c].live_blocks);
    /* Everything goes back.  The purger thread may be holding a drained
     * cache's blocks at the instant of the trim (once in CI under TSan: one
     * 36 KiB slab still reserved), so give it a second to hand them back
     * before a trim finds them. */
    for (int i = 0; i < 100; i++) {
        moat_heap_trim(heap);
        assert_int_equal(moat_heap_stats_get(heap, &st), 0);
        if (st.reserved_bytes == 0 && st.committed_bytes == 0)
            break;
        usleep(10000);
    }
    assert_int_equal(st.reserved_bytes, 0);
    assert_int_equal(st.committed_bytes, 0);
    assert_int_equal(moat_heap_destroy(heap), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_shadowed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
