/*
 * test_engine_redis.c - the whole engine paging to a real redis-server:
 * moat_init with store "redis://127.0.0.1:PORT" and a 256-page budget, two
 * threads doing random reads and writes over a working set 8x the budget,
 * checked against a shadow copy (like test_stress.c's integrity test, made
 * smaller).  Every evicted page must be a key on the server while the run
 * goes on, and moat_shutdown must leave the server empty.  The same with
 * store_replicas=1 and a replica attached to the server (REPLICAOF): every
 * evicted page is on the replica too.  And the server killed while eight
 * threads page in (batched, then one by one): every read gives the right
 * data or SIGBUS, nothing hangs, and shutdown returns.
 *
 * The server is a child of this program (see redis_server.h); without
 * redis-server, or in a moat built without hiredis, the program skips
 * (exit 77) and says why.
 */
#include "moat_test.h"

#if __has_include(<hiredis/hiredis.h>)

#include "redis_server.h"
#include "engine_stress.h"

#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/wait.h>

/* The stress against srv with store_replicas = replicas; with a replica
 * server, it must hold every evicted page (WAIT acknowledged them). */
static void integrity_run(struct server *srv, unsigned replicas, struct server *replica)
{
    char uri[128];
    /* With a replica, WAIT's timeout is generous: on a loaded machine
     * (tests in parallel, sanitizers) acks may take a while, and a refused
     * eviction would count as a store error. */
    snprintf(uri, sizeof uri, "redis://127.0.0.1:%d%s", srv->port,
             replicas ? "?wait_timeout=5000&timeout=10000" : "");
    struct moat_options o = {.budget = BUDGET_PAGES * PG,
                             .store = uri,
                             .log_level = -1,
                             .range_size = 4ULL << 30,
                             .store_replicas = replicas};
    assert_int_equal(moat_init(&o), 0);

    size_t npages = BUDGET_PAGES * FACTOR;
    uint64_t *mem, *shadow = calloc(npages, PG);
    assert_non_null(shadow);
    assert_int_equal(
        moat_alloc(NULL, npages * PG, MOAT_COMMIT_ON_DEMAND, NULL, NULL, (void **)&mem), 0);
    unsigned long mismatches = run_workers(mem, shadow, npages, NULL);

    struct moat_stats s;
    assert_int_equal(moat_stats(&s), 0);
    long long keys = server_count(srv->port, "moat:*");
    long long rkeys = replica ? server_count(replica->port, "moat:*") : -1;
    printf("redis integrity, replicas=%u: %d threads, %zu pages over a %d-page budget, %lu ops: "
           "%lu mismatches, %llu page-ins, %llu evictions written, %llu clean, peak resident "
           "%llu, %llu evicted now, %lld keys on the server (%lld on its replica), %llu store "
           "errors, %llu round trips\n",
           replicas, NTHREADS, npages, BUDGET_PAGES, OPS, mismatches,
           (unsigned long long)s.faults_pagein, (unsigned long long)s.evictions_written,
           (unsigned long long)s.evictions_clean, (unsigned long long)s.peak_resident_pages,
           (unsigned long long)s.evicted_pages, keys, rkeys, (unsigned long long)s.store_errors,
           (unsigned long long)s.store_round_trips);
    assert_int_equal(mismatches, 0);
    assert_true(s.peak_resident_pages <= BUDGET_PAGES);
    assert_true(s.faults_pagein > 1000);
    assert_true(s.evictions_written > 1000);
    assert_int_equal(s.integrity_failures, 0);
    assert_int_equal(s.store_errors, 0);
    assert_true(s.store_bytes_read > 0 && s.store_bytes_written > 0);
    /* One server is one store node, with the cluster's counters. */
    assert_int_equal(s.store_nodes, 1);
    assert_true(s.store_round_trips > 0);
    /* Every evicted page is a key (plus the liveness key; freed slots
     * whose DEL has not gone out yet may add a few). */
    assert_true(s.evicted_pages >= npages - BUDGET_PAGES);
    assert_true((unsigned long long)keys >= s.evicted_pages + 1);
    if (replica)
        assert_true((unsigned long long)rkeys >= s.evicted_pages);

    assert_int_equal(moat_dealloc(mem, npages * PG), 0);
    free(shadow);
    moat_shutdown();
    /* The instance removed its keys at shutdown. */
    assert_int_equal(server_int(srv->port, NULL, "DBSIZE"), 0);
}

static void test_integrity_over_redis(void **state)
{
    (void)state;
    struct server *srv = server_start(NULL);
    integrity_run(srv, 0, NULL);
    server_kill(srv);
}

/* store_replicas=1 (moat run --store-replicas 1) on one server: without a
 * replica moat_init fails (EREMOTEIO); with one attached (REPLICAOF) every
 * eviction waits for it (WAIT 1) and the run is as clean as without. */
static void test_integrity_with_replica(void **state)
{
    (void)state;
    const char *pextra[] = {"--repl-diskless-sync-delay", "0", NULL};
    struct server *srv = server_start(pextra);
    char uri[128];
    snprintf(uri, sizeof uri, "redis://127.0.0.1:%d", srv->port);
    struct moat_options o = {.budget = BUDGET_PAGES * PG,
                             .store = uri,
                             .log_level = -1,
                             .range_size = 4ULL << 30,
                             .store_replicas = 1};
    assert_int_equal(moat_init(&o), EREMOTEIO);

    char pport[16];
    snprintf(pport, sizeof pport, "%d", srv->port);
    const char *rextra[] = {"--replicaof", "127.0.0.1", pport, NULL};
    struct server *rep = server_start(rextra);
    bool online = false;
    for (int i = 0; i < 600 && !online; i++) {
        char *info = server_str(srv->port, "INFO replication");
        online = info && strstr(info, "state=online");
        free(info);
        if (!online)
            usleep(50000);
    }
    assert_true(online);
    integrity_run(srv, 1, rep);
    server_kill(rep);
    server_kill(srv);
}

/* The server dies while eight threads read their pages back.  A page-in
 * in flight when the connection goes, or started after, fails: the faulting
 * thread gets SIGBUS (caught here, and the thread goes on to its next page),
 * never zeros or another page's data, and no thread waits forever - also
 * not one whose page was in a batch the lost connection took with it (the
 * handler's queue is gone: fault_batch makes a new one, whose connection is
 * refused, and fails the reads).  Pages still resident read right. */
#define LOST_PAGES   (BUDGET_PAGES * 8)
#define LOST_THREADS 8
#define LOST_WORDS   (PG / 8)

static uint64_t *lost_mem;
static pid_t lost_server;
static _Atomic unsigned lost_bus, lost_good, lost_wrong, lost_reads;
static _Thread_local sigjmp_buf lost_jmp;
static _Thread_local volatile sig_atomic_t lost_armed;

static void lost_on_bus(int sig)
{
    (void)sig;
    if (lost_armed) {
        lost_armed = 0;
        siglongjmp(lost_jmp, 1);
    }
}

static uint64_t lost_word(size_t page, size_t w)
{
    return (page * 0x9e3779b97f4a7c15ULL) ^ (w << 40) ^ 0x10057;
}

static void *lost_worker(void *arg)
{
    size_t id = (size_t)(uintptr_t)arg;
    for (size_t k = id; k < LOST_PAGES; k += LOST_THREADS) {
        size_t page = k * 769 % LOST_PAGES; /* 769 is prime: a permutation */
        if (atomic_fetch_add(&lost_reads, 1) == LOST_PAGES / 4)
            kill(lost_server, SIGKILL); /* a quarter of the reads in */
        if (sigsetjmp(lost_jmp, 1) == 0) {
            lost_armed = 1;
            volatile uint64_t first = lost_mem[page * LOST_WORDS];
            lost_armed = 0;
            bool right = first == lost_word(page, 0);
            for (size_t w = 1; w < LOST_WORDS && right; w += 37)
                right = lost_mem[page * LOST_WORDS + w] == lost_word(page, w);
            atomic_fetch_add(right ? &lost_good : &lost_wrong, 1);
        } else {
            atomic_fetch_add(&lost_bus, 1);
        }
    }
    return NULL;
}

static void lost_child(void *arg)
{
    const char *const *a = arg; /* uri, log, "batch" or "single" */
    if (strcmp(a[2], "batch") != 0)
        setenv("MOAT_FAULT_BATCH", "0", 1);
    alarm(120); /* a hang is a failure: SIGALRM ends the child */
    struct moat_options o = {.budget = BUDGET_PAGES * PG,
                             .store = a[0],
                             .log_level = -1,
                             .log_file = a[1],
                             .range_size = 1ULL << 30,
                             .fault_threads = 2};
    if (moat_init(&o) != 0)
        _exit(3);
    if (moat_alloc(NULL, LOST_PAGES * PG, MOAT_COMMIT_ON_DEMAND, NULL, NULL, (void **)&lost_mem) !=
        0)
        _exit(4);
    for (size_t p = 0; p < LOST_PAGES; p++)
        for (size_t w = 0; w < LOST_WORDS; w++)
            lost_mem[p * LOST_WORDS + w] = lost_word(p, w);
    struct moat_stats s;
    if (moat_stats(&s) != 0 || s.evicted_pages < LOST_PAGES / 2)
        _exit(5);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = lost_on_bus;
    sa.sa_flags = SA_NODEFER;
    sigaction(SIGBUS, &sa, NULL);
    pthread_t t[LOST_THREADS];
    for (size_t i = 0; i < LOST_THREADS; i++)
        pthread_create(&t[i], NULL, lost_worker, (void *)(uintptr_t)i);
    for (size_t i = 0; i < LOST_THREADS; i++)
        pthread_join(t[i], NULL);
    moat_stats(&s);
    printf("  server lost (%s): %u reads right, %u SIGBUS, %u wrong; %llu store errors, %llu "
           "batches loading %llu faults\n",
           a[2], atomic_load(&lost_good), atomic_load(&lost_bus), atomic_load(&lost_wrong),
           (unsigned long long)s.store_errors, (unsigned long long)s.pagein_batches,
           (unsigned long long)s.pagein_batched_faults);
    fflush(stdout);
    if (atomic_load(&lost_wrong))
        _exit(10);
    if (!atomic_load(&lost_bus) || !s.store_errors)
        _exit(11);
    if (!atomic_load(&lost_good))
        _exit(12);
    moat_shutdown(); /* with the server gone: must return */
    _exit(0);
}

static void server_lost_run(const char *mode)
{
    struct server *srv = server_start(NULL);
    lost_server = srv->pid;
    char uri[128], log[256];
    /* a server unreachable for a second is dead (the default: 15 s); after
     * that every read fails at once, so the test takes seconds: without
     * that, each page-in waited out a retry timeout of its own */
    snprintf(uri, sizeof uri, "redis://127.0.0.1:%d?retry_timeout=1000", srv->port);
    mt_path(log, sizeof log, "server-lost.log");
    unlink(log);
    const char *a[] = {uri, log, mode};
    int st = mt_child(lost_child, a);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fail_msg("%s: child ended with status %#x (exited %d, signal %d); log %s", mode, st,
                 WIFEXITED(st) ? WEXITSTATUS(st) : -1, WIFSIGNALED(st) ? WTERMSIG(st) : 0, log);
    assert_true(mt_file_contains(log, "from the store"));
    unlink(log);
    server_kill(srv);
}

static void test_server_lost_batched(void **state)
{
    (void)state;
    server_lost_run("batch");
}

static void test_server_lost_single(void **state)
{
    (void)state;
    server_lost_run("single");
}

/* A store URI naming a server that is not there fails moat_init with the
 * connection's errno, not later at the first eviction. */
static void test_init_no_server(void **state)
{
    (void)state;
    char uri[128];
    snprintf(uri, sizeof uri, "redis://127.0.0.1:%d", free_port());
    assert_int_equal(mt_start_opts(BUDGET_PAGES * PG, uri, NULL), ECONNREFUSED);
}

int main(void)
{
    if (!have_redis_server()) {
        fprintf(stderr, "SKIP: redis-server is not installed (Debian: apt-get install "
                        "redis-server); the engine over redis was NOT tested\n");
        return 77;
    }
    atexit(servers_kill_all);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_no_server),         cmocka_unit_test(test_integrity_over_redis),
        cmocka_unit_test(test_integrity_with_replica), cmocka_unit_test(test_server_lost_batched),
        cmocka_unit_test(test_server_lost_single),
    };
    return cmocka_run_group_tests(tests, NULL, NULL) ? 1 : 0;
}

#else
int main(void)
{
    fprintf(stderr, "SKIP: hiredis headers are missing (Debian: libhiredis-dev); the engine over "
                    "redis was NOT tested\n");
    return 77;
}
#endif
