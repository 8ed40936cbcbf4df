/*
 * test_engine_cluster.c - the whole engine paging to a real Redis Cluster
 * (three primaries, one replica each, on loopback; see redis_cluster.h):
 *   - integrity stress: two threads of random reads and writes over a
 *     working set 8x a 256-page budget, checked against a shadow copy, with
 *     store_replicas=1; in the middle of the run a primary is killed (SIGKILL)
 *     and, once its replica has taken over and some evictions to it were
 *     refused for lack of a replica (EREMOTEIO: the pages stay resident),
 *     restarted (it rejoins as a replica): zero mismatches, zero integrity
 *     failures, and every key gone after moat_shutdown;
 *   - the same without replicas and with a 500 ms store timeout, in a child:
 *     it either completes with no mismatch or stops with SIGBUS and a log
 *     line naming the page and the store error; never wrong data;
 *   - tamper: every stored record changed with redis-cli (SETRANGE) in the
 *     middle of a run: the next page-in is SIGBUS with the integrity line;
 *   - replay: records put back from an earlier snapshot (DUMP / RESTORE):
 *     SIGBUS with the integrity line;
 *   - moat_init with a cluster URI where nothing listens: ECONNREFUSED;
 *     MOAT_STORE_REPLICAS with a file store: EINVAL.
 * Skips (exit 77), loudly, without redis-server or redis-cli.
 */
#include "moat_test.h"

#if __has_include(<hiredis/hiredis.h>)

#include "store/cluster.h"

#include "redis_cluster.h"
#include "engine_stress.h"

#include <pthread.h>
#include <stdatomic.h>

static bool cluster_started;
static void need_cluster(void)
{
    if (!cluster_started) {
        cluster_start();
        cluster_started = true;
    }
}

static int start_cluster_engine(unsigned replicas, unsigned timeout_ms, const char *log_file)
{
    char uri[256];
    cluster_uri(uri, sizeof uri, NULL);
    struct moat_options o = {.budget = BUDGET_PAGES * PG,
                             .store = uri,
                             .log_level = -1,
                             .log_file = log_file,
                             .range_size = 4ULL << 30,
                             .store_replicas = replicas,
                             .store_timeout_ms = timeout_ms};
    return moat_init(&o);
}

/* Kills the primary of most slots once evictions are going, waits for the
 * failover, restarts the old primary (a replica now), and stops the run. */
struct killer {
    _Atomic bool stop;
    int victim;
    double failover_s;
    bool failed_over;
    uint64_t refused; /* store errors while the new primary had no replica */
};

static void *killer_run(void *p)
{
    struct killer *k = p;
    struct moat_stats s;
    while (moat_stats(&s) == 0 && s.evictions_written < 3000)
        usleep(10000);
    int victim = cluster_owner(0);
    k->victim = victim;
    double t0 = cluster_now();
    node_kill(cluster[victim]);
    k->failed_over = cluster_wait_failover(0, victim, 30);
    k->failover_s = cluster_now() - t0;
    /* Leave the new primary without a replica for a while: its evictions
     * are refused (EREMOTEIO) and those pages must stay resident. */
    uint64_t errs = s.store_errors;
    double until = cluster_now() + 10;
    while (moat_stats(&s) == 0 && s.store_errors < errs + 50 && cluster_now() < until)
        usleep(10000);
    k->refused = s.store_errors - errs;
    node_restart(cluster[victim]);
    (void)cluster_wait_ok(30);
    /* Some more traffic with the replica back. */
    uint64_t base = s.evictions_written;
    while (moat_stats(&s) == 0 && s.evictions_written < base + 6000)
        usleep(10000);
    atomic_store(&k->stop, true);
    return NULL;
}

static void test_integrity_failover_replicas(void **state)
{
    (void)state;
    need_cluster();
    assert_int_equal(start_cluster_engine(1, 0, NULL), 0);
    size_t npages = BUDGET_PAGES * FACTOR;
    uint64_t *mem, *shadow = calloc(npages, PG);
    assert_non_null(shadow);
    assert_int_equal(
        moat_alloc(NULL, npages * PG, MOAT_COMMIT_ON_DEMAND, NULL, NULL, (void **)&mem), 0);
    struct killer k = {.victim = -1};
    pthread_t kt;
    assert_int_equal(pthread_create(&kt, NULL, killer_run, &k), 0);
    unsigned long mismatches = run_workers(mem, shadow, npages, &k.stop);
    pthread_join(kt, NULL);

    struct moat_stats s;
    assert_int_equal(moat_stats(&s), 0);
    long long keys = cluster_count("moat:*");
    printf("cluster integrity with failover: %zu pages over a %d-page budget, replicas=1: primary "
           "%d killed, replaced in %.1f s, %llu evictions refused without its replica; %lu "
           "mismatches, %llu page-ins, %llu evictions "
           "written, %llu integrity failures, %llu store errors (refused, not lost), %lld keys\n",
           npages, BUDGET_PAGES, cluster[k.victim]->port, k.failover_s,
           (unsigned long long)k.refused, mismatches, (unsigned long long)s.faults_pagein,
           (unsigned long long)s.evictions_written, (unsigned long long)s.integrity_failures,
           (unsigned long long)s.store_errors, keys);
    assert_true(k.failed_over);
    assert_true(k.refused > 0);
    assert_int_equal(mismatches, 0);
    assert_int_equal(s.integrity_failures, 0);
    assert_true(s.peak_resident_pages <= BUDGET_PAGES);
    assert_true(s.faults_pagein > 1000);
    /* the cluster's own counters reach moat_stats */
    assert_true(s.store_nodes >= 3);
    assert_true(s.store_round_trips > 0);
    assert_true(s.store_failovers > 0 || s.store_retries > 0);
    moat_stats_print(STDOUT_FILENO);
    assert_true(s.evictions_written > 3000);
    assert_int_equal(moat_dealloc(mem, npages * PG), 0);
    free(shadow);
    moat_shutdown();
    assert_true(cluster_wait_ok(20));
    assert_int_equal(cluster_count("moat:*"), 0);
}

/* Without replicas and with a short store timeout: the run ends well or
 * with SIGBUS and the store's error in the log; never with wrong data.  The
 * child runs the engine; the parent kills and restarts the primary (the
 * servers are its children), told when by a pipe. */
struct noreplica {
    char log[256];
    int c2p, p2c;
};

static void *notifier_run(void *p)
{
    struct noreplica *nr = p;
    struct moat_stats s;
    while (moat_stats(&s) == 0 && s.evictions_written < 3000)
        usleep(10000);
    char b = 'k';
    if (write(nr->c2p, &b, 1) != 1 || read(nr->p2c, &b, 1) != 1)
        _exit(9);
    return NULL;
}

static void noreplica_child(void *arg)
{
    struct noreplica *nr = arg;
    if (start_cluster_engine(0, 500, nr->log) != 0)
        _exit(3);
    size_t npages = BUDGET_PAGES * FACTOR;
    uint64_t *mem, *shadow = calloc(npages, PG);
    if (!shadow ||
        moat_alloc(NULL, npages * PG, MOAT_COMMIT_ON_DEMAND, NULL, NULL, (void **)&mem) != 0)
        _exit(4);
    pthread_t nt;
    if (pthread_create(&nt, NULL, notifier_run, nr) != 0)
        _exit(5);
    /* Run until the parent has killed and restarted the node. */
    struct worker w = {.mem = mem, .shadow = shadow, .npages = npages, .ops = OPS / 4};
    unsigned long mismatches = 0;
    for (int round = 0; round < 1000; round++) {
        w.done = 0;
        for (size_t t = 0; t < NTHREADS; t++) {
            w.id = t;
            worker_run(&w);
        }
        if (pthread_tryjoin_np(nt, NULL) == 0)
            break;
    }
    mismatches = w.mismatches;
    for (size_t i = 0; i < npages * PG / sizeof(uint64_t); i++)
        if (mem[i] != shadow[i])
            mismatches++;
    _exit(mismatches ? 1 : 0);
}

static void test_failover_without_replicas(void **state)
{
    (void)state;
    need_cluster();
    struct noreplica nr;
    mt_path(nr.log, sizeof nr.log, "cluster-noreplica.log");
    unlink(nr.log);
    int c2p[2], p2c[2];
    assert_int_equal(pipe(c2p), 0);
    assert_int_equal(pipe(p2c), 0);
    nr.c2p = c2p[1];
    nr.p2c = p2c[0];
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        signal(SIGSEGV, SIG_DFL);
        signal(SIGBUS, SIG_DFL);
        noreplica_child(&nr);
        _exit(0);
    }
    close(c2p[1]);
    close(p2c[0]);
    char b;
    int victim = -1;
    if (read(c2p[0], &b, 1) == 1) {
        victim = cluster_owner(0);
        node_kill(cluster[victim]);
        assert_true(cluster_wait_failover(0, victim, 30));
        node_restart(cluster[victim]);
        assert_true(cluster_wait_ok(30));
        b = 'g';
        if (write(p2c[1], &b, 1) != 1)
            printf("  the child is gone already\n");
    }
    int st = 0;
    waitpid(pid, &st, 0);
    close(c2p[0]);
    close(p2c[1]);
    bool bus = WIFSIGNALED(st) && WTERMSIG(st) == SIGBUS;
    printf("without replicas, primary %d killed: the run %s\n",
           victim >= 0 ? cluster[victim]->port : 0,
           bus                                     ? "stopped with SIGBUS"
           : WIFEXITED(st) && WEXITSTATUS(st) == 0 ? "completed with no mismatch"
                                                   : "ended otherwise");
    if (!(bus || (WIFEXITED(st) && WEXITSTATUS(st) == 0)))
        fail_msg("child ended with status %#x: wrong data or a crash (log %s)", st, nr.log);
    assert_true(victim >= 0);
    if (bus)
        assert_true(mt_file_contains(nr.log, "from the store (slot") ||
                    mt_file_contains(nr.log, "[ERROR]-[integrity]"));
    assert_true(cluster_wait_ok(30));
    unlink(nr.log);
}

/* ---------------------------------------------------------------------------
 * Tamper and replay
 * ------------------------------------------------------------------------- */

#define ATTACK_PAGES  512
#define ATTACK_BUDGET 64

static void fill(uint8_t *p, size_t page, int gen)
{
    char tag[64];
    int n = snprintf(tag, sizeof tag, "MOAT-PLAINTEXT-%zu-%d|", page, gen);
    memset(p, 0, PG);
    for (size_t off = 0; off + (size_t)n <= PG; off += (size_t)n)
        memcpy(p + off, tag, (size_t)n);
}

/* Keys of store records on every primary (not liveness keys). */
static size_t record_keys(char ***out)
{
    size_t n = 0, cap = 1024;
    char **keys = malloc(cap * sizeof *keys);
    for (int i = 0; i < CLUSTER_NODES; i++) {
        if (cluster[i]->pid <= 0 || !node_is_primary(cluster[i]->port))
            continue;
        redisContext *c = connect_port(cluster[i]->port);
        if (!c)
            _exit(20);
        char cursor[32] = "0";
        do {
            redisReply *r = redisCommand(c, "SCAN %s MATCH moat:{* COUNT 1000", cursor);
            if (!r || r->type != REDIS_REPLY_ARRAY)
                _exit(21);
            snprintf(cursor, sizeof cursor, "%s", r->element[0]->str);
            for (size_t k = 0; k < r->element[1]->elements; k++) {
                const char *key = r->element[1]->element[k]->str;
                if (strstr(key, ":alive"))
                    continue;
                if (n == cap)
                    keys = realloc(keys, (cap *= 2) * sizeof *keys);
                keys[n++] = strdup(key);
            }
            freeReplyObject(r);
        } while (strcmp(cursor, "0") != 0);
        redisFree(c);
    }
    *out = keys;
    return n;
}

struct attack {
    char log[256];
    int replay;
};

static void attack_child(void *arg)
{
    struct attack *a = arg;
    char uri[256];
    cluster_uri(uri, sizeof uri, NULL);
    struct moat_options o = {.budget = ATTACK_BUDGET * PG,
                             .store = uri,
                             .log_level = -1,
                             .log_file = a->log,
                             .range_size = 1ULL << 30};
    if (moat_init(&o) != 0)
        _exit(3);
    uint8_t *mem;
    if (moat_alloc(NULL, ATTACK_PAGES * PG, MOAT_COMMIT_ON_DEMAND, NULL, NULL, (void **)&mem))
        _exit(4);
    for (size_t i = 0; i < ATTACK_PAGES; i++)
        fill(mem + i * PG, i, 1);
    char **keys = NULL;
    size_t nkeys = record_keys(&keys);
    if (nkeys < ATTACK_PAGES / 2)
        _exit(6);
    if (!a->replay) {
        /* With redis-cli, in cluster mode (-c follows MOVED). */
        char cmd[256];
        snprintf(cmd, sizeof cmd, "redis-cli -c -p %d >/dev/null", cluster[0]->port);
        FILE *p = popen(cmd, "w");
        if (!p)
            _exit(7);
        for (size_t i = 0; i < nkeys; i++)
            fprintf(p, "SETRANGE %s 100 TAMPERED\n", keys[i]);
        if (pclose(p) != 0)
            _exit(8);
    } else {
        /* Snapshot every record, let a second generation replace them,
         * then put the old ones back. */
        void **vals = calloc(nkeys, sizeof *vals);
        size_t *lens = calloc(nkeys, sizeof *lens);
        for (size_t i = 0; i < nkeys; i++) {
            int o2 = cluster_owner(m_store_cluster_keyslot(keys[i], strlen(keys[i])));
            redisContext *c = connect_port(cluster[o2]->port);
            redisReply *r = c ? redisCommand(c, "DUMP %s", keys[i]) : NULL;
            if (r && r->type == REDIS_REPLY_STRING) {
                vals[i] = malloc(r->len);
                memcpy(vals[i], r->str, r->len);
                lens[i] = r->len;
            }
            if (r)
                freeReplyObject(r);
            if (c)
                redisFree(c);
        }
        for (size_t i = 0; i < ATTACK_PAGES; i++)
            fill(mem + i * PG, i, 2);
        for (size_t i = ATTACK_PAGES / 2; i < ATTACK_PAGES; i++) /* evict page 0 again */
            (void)*(volatile uint8_t *)(mem + i * PG);
        for (size_t i = 0; i < nkeys; i++) {
            if (!vals[i])
                continue;
            int o2 = cluster_owner(m_store_cluster_keyslot(keys[i], strlen(keys[i])));
            redisContext *c = connect_port(cluster[o2]->port);
            redisReply *r =
                c ? redisCommand(c, "RESTORE %s 0 %b REPLACE", keys[i], vals[i], lens[i]) : NULL;
            if (r)
                freeReplyObject(r);
            if (c)
                redisFree(c);
        }
    }
    for (size_t i = 0; i < ATTACK_PAGES / 4; i++) /* some page-in must raise SIGBUS */
        (void)*(volatile uint8_t *)(mem + i * PG);
    _exit(0);
}

static void run_attack(int replay)
{
    need_cluster();
    struct attack a = {.replay = replay};
    mt_path(a.log, sizeof a.log, replay ? "cluster-replay.log" : "cluster-tamper.log");
    unlink(a.log);
    int st = mt_child(attack_child, &a);
    if (!(WIFSIGNALED(st) && WTERMSIG(st) == SIGBUS))
        fail_msg("child ended with status %#x, not SIGBUS", st);
    assert_true(mt_file_contains(a.log, "[ERROR]-[integrity]"));
    assert_true(mt_file_contains(a.log, "the page is not mapped"));
    printf("%s: SIGBUS, log says %s\n", replay ? "replay" : "tamper",
           mt_file_contains(a.log, "replayed sealed copy") ? "replayed sealed copy"
                                                           : "fails authentication");
    if (!replay)
        assert_true(mt_file_contains(a.log, "sealed copy fails authentication"));
    unlink(a.log);
    /* The child died with its keys in place (its liveness key would let
     * `moat store gc` remove them in 30 s): clear them now. */
    for (int i = 0; i < CLUSTER_NODES; i++)
        if (cluster[i]->pid > 0 && node_is_primary(cluster[i]->port))
            free(server_str(cluster[i]->port, "FLUSHALL"));
}

static void test_tamper(void **state)
{
    (void)state;
    run_attack(0);
}

static void test_replay(void **state)
{
    (void)state;
    run_attack(1);
}

static void test_init_errors(void **state)
{
    (void)state;
    char uri[128];
    snprintf(uri, sizeof uri, "redis+cluster://127.0.0.1:%d", free_port());
    assert_int_equal(mt_start_opts(BUDGET_PAGES * PG, uri, NULL), ECONNREFUSED);
    setenv("MOAT_STORE_REPLICAS", "1", 1);
    assert_int_equal(mt_start_opts(BUDGET_PAGES * PG, NULL, NULL), EINVAL);
    setenv("MOAT_STORE_REPLICAS", "x", 1);
    assert_int_equal(mt_start_opts(BUDGET_PAGES * PG, NULL, NULL), EINVAL);
    unsetenv("MOAT_STORE_REPLICAS");
    setenv("MOAT_STORE_TIMEOUT", "0", 1);
    assert_int_equal(mt_start_opts(BUDGET_PAGES * PG, NULL, NULL), EINVAL);
    unsetenv("MOAT_STORE_TIMEOUT");
}

int main(void)
{
    if (!have_redis_server() || !have_redis_cli()) {
        fprintf(stderr, "SKIP: redis-server or redis-cli is not installed (Debian: apt-get "
                        "install redis-server redis-tools); the engine over Redis Cluster was "
                        "NOT tested\n");
        return 77;
    }
    atexit(servers_kill_all);
    signal(SIGPIPE, SIG_IGN); /* a child that died early must not kill us */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_errors),
        cmocka_unit_test(test_tamper),
        cmocka_unit_test(test_replay),
        cmocka_unit_test(test_integrity_failover_replicas),
        cmocka_unit_test(test_failover_without_replicas),
    };
    return cmocka_run_group_tests(tests, NULL, NULL) ? 1 : 0;
}

#else
int main(void)
{
    fprintf(stderr, "SKIP: hiredis headers are missing (Debian: libhiredis-dev); the engine over "
                    "Redis Cluster was NOT tested\n");
    return 77;
}
#endif
