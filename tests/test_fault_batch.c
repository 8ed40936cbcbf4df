/*
 * test_fault_batch.c - batched page-in (fault.c, "Batched page-in"): many
 * threads fault on evicted pages at once, so one read of the userfaultfd
 * returns several page-in faults and the handler loads them in one store
 * submission.  Against the file store and against a real redis-server.
 *
 * 16 threads share 1024 pages under a 96-page budget (nearly every access
 * is a page-in), in rounds that start together at a barrier:
 *   own      each thread reads, checks and sometimes rewrites a random page
 *            of its own (page % 16 == thread): distinct pages far apart,
 *            reads and write faults;
 *   shared   every thread reads the same random pages in the same order:
 *            duplicate messages for one page in a batch;
 *   sweep    each thread reads its own 64 contiguous pages in order: faults
 *            that continue a stream and read ahead inside a batch.
 * Every word of a page is a function of its index, its position and the
 * page's version (bumped by its owner's writes); a visit checks the whole
 * page, and at the end the main thread checks every page.  The batches
 * must have happened (moat_stats: pagein_batches > 0, at least two
 * faulting pages each), with no integrity or store error; with
 * MOAT_FAULT_BATCH=0 none happen.  The same traffic under a 16-page budget
 * with one handler thread makes the handler install its own pages in
 * flight before it waits for the budget.
 *
 * Tamper: with every other record of the file store corrupted, threads
 * fault together on evicted pages, so batches mix good and tampered
 * records: every read gives the page's right contents or SIGBUS, never
 * wrong data, and the log names the integrity failure.
 */
#include "moat_test.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdbool.h>

#define PG       4096u
#define NTHREADS 16
#define NPAGES   1024u
#define BUDGET   96u
#define ROUNDS   48
#define WORDS    (PG / sizeof(uint64_t))

static uint64_t *mem;
static uint32_t version[NPAGES]; /* written by the page's owner, read after barriers */
static pthread_barrier_t barrier;
static _Atomic unsigned long mismatches;

static uint64_t word_of(size_t page, size_t w, uint32_t ver)
{
    return (page + 1) * 0x9e3779b97f4a7c15ull ^ (w << 32) ^ ver;
}

static void page_write(size_t page)
{
    uint32_t ver = ++version[page];
    for (size_t w = 0; w < WORDS; w++)
        mem[page * WORDS + w] = word_of(page, w, ver);
}

static void page_check(size_t page)
{
    uint32_t ver = version[page];
    for (size_t w = 0; w < WORDS; w++) {
        if (mem[page * WORDS + w] != word_of(page, w, ver)) {
            if (atomic_fetch_add(&mismatches, 1) < 5)
                fprintf(stderr, "page %zu word %zu: %#llx, expected %#llx\n", page, w,
                        (unsigned long long)mem[page * WORDS + w],
                        (unsigned long long)word_of(page, w, ver));
            return;
        }
    }
}

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void *worker(void *arg)
{
    size_t id = (size_t)(uintptr_t)arg;
    uint64_t own = 0x1234567ull + id * 7919, shared = 0xabcdefull;
    for (int round = 0; round < ROUNDS; round++) {
        pthread_barrier_wait(&barrier);
        for (int i = 0; i < 4; i++) {
            size_t page = (size_t)(rng_next(&own) % (NPAGES / NTHREADS)) * NTHREADS + id;
            page_check(page);
            if (rng_next(&own) % 4 == 0)
                page_write(page);
        }
        pthread_barrier_wait(&barrier);
        for (int i = 0; i < 4; i++)
            page_check((size_t)(rng_next(&shared) % NPAGES));
    }
    pthread_barrier_wait(&barrier);
    size_t chunk = NPAGES / NTHREADS;
    for (size_t p = id * chunk; p < (id + 1) * chunk; p++)
        page_check(p);
    return NULL;
}

static void batch_run_with(const char *store, bool batch, unsigned budget, unsigned handlers)
{
    if (batch)
        unsetenv("MOAT_FAULT_BATCH");
    else
        setenv("MOAT_FAULT_BATCH", "0", 1);
    struct moat_options o = {.budget = budget * PG,
                             .store = store,
                             .log_level = -1,
                             .range_size = 1ULL << 30,
                             .fault_threads = handlers};
    assert_int_equal(moat_init(&o), 0);
    assert_int_equal(
        moat_alloc(NULL, NPAGES * PG, MOAT_COMMIT_ON_DEMAND, NULL, NULL, (void **)&mem), 0);
    memset(version, 0, sizeof version);
    atomic_store(&mismatches, 0);
    for (size_t p = 0; p < NPAGES; p++)
        page_write(p);

    assert_int_equal(pthread_barrier_init(&barrier, NULL, NTHREADS), 0);
    pthread_t t[NTHREADS];
    for (size_t i = 0; i < NTHREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, worker, (void *)(uintptr_t)i), 0);
    for (size_t i = 0; i < NTHREADS; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&barrier);
    for (size_t p = 0; p < NPAGES; p++)
        page_check(p);

    struct moat_stats s;
    assert_int_equal(moat_stats(&s), 0);
    uint64_t batches = s.pagein_batches, batched = s.pagein_batched_faults;
    printf("%s: %llu page-ins, %llu batches loading %llu faulting pages (%.1f a batch), %llu "
           "integrity failures, %llu store errors, %lu mismatches, peak resident %llu\n",
           store ? store : "file", (unsigned long long)s.faults_pagein, (unsigned long long)batches,
           (unsigned long long)batched, batches ? (double)batched / (double)batches : 0.0,
           (unsigned long long)s.integrity_failures, (unsigned long long)s.store_errors,
           atomic_load(&mismatches), (unsigned long long)s.peak_resident_pages);
    assert_int_equal(atomic_load(&mismatches), 0);
    assert_int_equal(s.integrity_failures, 0);
    assert_int_equal(s.store_errors, 0);
    assert_int_equal(s.faults_fatal, 0);
    assert_true(s.peak_resident_pages <= budget);
    assert_true(s.faults_pagein > NPAGES);
    if (batch) {
        /* the batched path really ran, with several faults each time */
        assert_true(batches > 0);
        assert_true(batched >= 2 * batches);
    } else {
        assert_int_equal(batches, 0);
    }
    assert_int_equal(moat_dealloc(mem, NPAGES * PG), 0);
    moat_shutdown();
}

static void batch_run(const char *store, bool batch)
{
    batch_run_with(store, batch, BUDGET, 2);
}

static void test_batch_file(void **state)
{
    (void)state;
    batch_run(NULL, true);
}

/* A budget of 16 pages and one handler: the handler's pages in flight are
 * charged but cannot be reclaimed until it installs them, so it must
 * install them before it waits for the budget (a handler that waited on
 * its own pages stalled for the budget's 3 s and then failed the fault
 * with "budget exhausted", test_stress's write race caught it). */
static void test_batch_tiny_budget(void **state)
{
    (void)state;
    batch_run_with(NULL, true, 16, 1);
}

/* MOAT_FAULT_BATCH=0: the same traffic served one fault at a time. */
static void test_unbatched_file(void **state)
{
    (void)state;
    batch_run(NULL, false);
    unsetenv("MOAT_FAULT_BATCH");
}

/* Tamper: the child process of test_batch_tamper. */
#define TP_PAGES   256u
#define TP_BUDGET  32u
#define TP_THREADS 8
#define TP_ROUNDS  24
#define TP_REC     4096u /* a record's stride in the file store */

static _Thread_local sigjmp_buf tp_jmp;
static _Thread_local volatile sig_atomic_t tp_armed;
static _Atomic unsigned tp_bus, tp_good, tp_wrong;

static void tp_on_bus(int sig)
{
    (void)sig;
    if (tp_armed) { /* a late second SIGBUS for the same read is ignored */
        tp_armed = 0;
        siglongjmp(tp_jmp, 1);
    }
}

static void *tp_worker(void *arg)
{
    size_t id = (size_t)(uintptr_t)arg;
    for (size_t round = 0; round < TP_ROUNDS; round++) {
        pthread_barrier_wait(&barrier);
        size_t page = (round * TP_THREADS + id) * 37 % TP_PAGES;
        if (sigsetjmp(tp_jmp, 1) == 0) {
            tp_armed = 1;
            volatile uint64_t first = mem[page * WORDS];
            tp_armed = 0;
            (void)first;
            unsigned long before = atomic_load(&mismatches);
            page_check(page);
            if (atomic_load(&mismatches) != before)
                atomic_fetch_add(&tp_wrong, 1);
            else
                atomic_fetch_add(&tp_good, 1);
        } else {
            atomic_fetch_add(&tp_bus, 1);
        }
    }
    return NULL;
}

static void tamper_child(void *arg)
{
    const char *const *paths = arg; /* store, log, "batch" or "single" */
    bool batch = strcmp(paths[2], "batch") == 0;
    if (!batch)
        setenv("MOAT_FAULT_BATCH", "0", 1);
    /* a SIGBUS sent to the wrong thread leaves the faulting one waiting */
    alarm(120);
    char uri[320];
    snprintf(uri, sizeof uri, "file:%s?keep=1", paths[0]);
    struct moat_options o = {.budget = TP_BUDGET * PG,
                             .store = uri,
                             .log_level = -1,
                             .log_file = paths[1],
                             .range_size = 1ULL << 30,
                             .fault_threads = 2};
    if (moat_init(&o) != 0)
        _exit(3);
    if (moat_alloc(NULL, TP_PAGES * PG, MOAT_COMMIT_ON_DEMAND, NULL, NULL, (void **)&mem) != 0)
        _exit(4);
    for (size_t p = 0; p < TP_PAGES; p++)
        page_write(p);
    struct moat_stats s;
    if (moat_stats(&s) != 0 || s.evicted_pages < TP_PAGES / 2)
        _exit(5);
    int fd = open(paths[0], O_RDWR);
    if (fd < 0)
        _exit(6);
    struct stat st;
    fstat(fd, &st);
    uint8_t b;
    for (off_t off = 100; off < st.st_size; off += 2 * (off_t)TP_REC) {
        if (pread(fd, &b, 1, off) != 1)
            _exit(7);
        b ^= 0x5a;
        if (pwrite(fd, &b, 1, off) != 1)
            _exit(7);
    }
    fsync(fd);
    close(fd);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = tp_on_bus;
    sa.sa_flags = SA_NODEFER;
    sigaction(SIGBUS, &sa, NULL);
    pthread_barrier_init(&barrier, NULL, TP_THREADS);
    pthread_t t[TP_THREADS];
    for (size_t i = 0; i < TP_THREADS; i++)
        pthread_create(&t[i], NULL, tp_worker, (void *)(uintptr_t)i);
    for (size_t i = 0; i < TP_THREADS; i++)
        pthread_join(t[i], NULL);
    moat_stats(&s);
    printf("  tamper: %u reads right, %u SIGBUS, %u wrong; %llu batches loading %llu faults, "
           "%llu integrity failures\n",
           atomic_load(&tp_good), atomic_load(&tp_bus), atomic_load(&tp_wrong),
           (unsigned long long)s.pagein_batches, (unsigned long long)s.pagein_batched_faults,
           (unsigned long long)s.integrity_failures);
    fflush(stdout);
    if (atomic_load(&tp_wrong))
        _exit(10);
    if (!atomic_load(&tp_bus) || !s.integrity_failures)
        _exit(11);
    if (!atomic_load(&tp_good))
        _exit(12);
    if (batch ? !s.pagein_batches : s.pagein_batches != 0)
        _exit(13);
    _exit(0);
}

static void tamper_run(const char *mode)
{
    char store[256], log[256];
    mt_path(store, sizeof store, "batch-tamper.store");
    mt_path(log, sizeof log, "batch-tamper.log");
    unlink(log);
    const char *paths[3] = {store, log, mode};
    int st = mt_child(tamper_child, paths);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fail_msg("tamper child (%s) ended with status %#x (10 wrong data, 11 no SIGBUS, 12 no "
                 "good read, 13 batches wrong; SIGALRM: a thread was never signalled)",
                 mode, st);
    assert_true(mt_file_contains(log, "sealed copy fails authentication"));
    unlink(store);
    unlink(log);
}

static void test_batch_tamper(void **state)
{
    (void)state;
    tamper_run("batch");
}

/* The same with page-ins one by one: the SIGBUS reaches the faulting
 * thread on that path too. */
static void test_single_tamper(void **state)
{
    (void)state;
    tamper_run("single");
}

#if __has_include(<hiredis/hiredis.h>)
#include "redis_server.h"

static void test_batch_redis(void **state)
{
    (void)state;
    if (!have_redis_server()) {
        fprintf(stderr, "SKIP: redis-server is not installed (Debian: apt-get install "
                        "redis-server); batched page-in over redis was NOT tested\n");
        skip();
    }
    struct server *srv = server_start(NULL);
    char uri[64];
    snprintf(uri, sizeof uri, "redis://127.0.0.1:%d", srv->port);
    batch_run(uri, true);
    assert_int_equal(server_int(srv->port, NULL, "DBSIZE"), 0);
    server_kill(srv);
}
#endif

int main(void)
{
#if __has_include(<hiredis/hiredis.h>)
    atexit(servers_kill_all);
#endif
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batch_file),
        cmocka_unit_test(test_batch_tiny_budget),
        cmocka_unit_test(test_unbatched_file),
        cmocka_unit_test(test_batch_tamper),
        cmocka_unit_test(test_single_tamper),
#if __has_include(<hiredis/hiredis.h>)
        cmocka_unit_test(test_batch_redis),
#endif
    };
    return cmocka_run_group_tests(tests, NULL, NULL) ? 1 : 0;
}
