/*
 * test_store_cluster.c - the Redis Cluster store against a real cluster:
 * six redis-server processes on loopback joined by `redis-cli --cluster
 * create --cluster-replicas 1` (three primaries, one replica each; see
 * redis_cluster.h).  What it checks:
 *   - the hash slot function against Redis's own CLUSTER KEYSLOT;
 *   - malformed URIs (EINVAL), a seed where nothing listens (ECONNREFUSED),
 *     a seed that is not a cluster node (EPROTONOSUPPORT);
 *   - batches spread over all primaries (pages and round trips per node),
 *     the DELs of freed slots, and removal of every key at close;
 *   - ASK while a hash slot migrates (CLUSTER SETSLOT MIGRATING/IMPORTING)
 *     and MOVED after it moved (MIGRATE, SETSLOT NODE);
 *   - replicas=N: WAIT refusing writes when a replica is stopped
 *     (EREMOTEIO), replicas=2 on a one-replica cluster refused at open;
 *   - maxmemory on the primaries: ENOSPC, earlier records still read back;
 *   - `moat store gc` for a cluster (m_store_cluster_gc);
 *   - a primary killed: with retry_timeout=0 ECONNRESET/ECONNREFUSED at
 *     once, with a short retry_timeout ETIMEDOUT, with the default the reads
 *     wait for the failover and every record (written with replicas=1)
 *     comes back intact;
 *   - a primary and its replica killed: CLUSTERDOWN is ENETDOWN.
 * Without redis-server or redis-cli the program skips (exit 77), loudly.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "store/store.h"

#if __has_include(<hiredis/hiredis.h>)

#include "store/cluster.h"

#include "redis_cluster.h"
#include "store_records.h"

/* ---------------------------------------------------------------------------
 * Records and I/O
 * ------------------------------------------------------------------------- */

struct set {
    size_t n;
    uint64_t *slots;
    void **bufs;
    int *res;
};

static struct set set_new(struct m_store *s, size_t n)
{
    struct set v = {.n = n,
                    .slots = calloc(n, sizeof(uint64_t)),
                    .bufs = calloc(n, sizeof(void *)),
                    .res = calloc(n, sizeof(int))};
    assert_non_null(v.slots);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(m_store_slot_alloc(s, &v.slots[i]), 0);
        v.bufs[i] = rec_new();
    }
    return v;
}

static void set_free(struct set *v)
{
    for (size_t i = 0; i < v->n; i++)
        free(v->bufs[i]);
    free(v->slots);
    free(v->bufs);
    free(v->res);
}

/* I/Os of one kind over v[from, from+n); results in v->res. */
static void set_rw(struct m_store_queue *q, int op, struct set *v, size_t from, size_t n,
                   uint64_t gen)
{
    struct m_store_io *ios = calloc(n, sizeof *ios);
    struct m_store_io **p = calloc(n, sizeof *p);
    assert_non_null(ios);
    assert_non_null(p);
    for (size_t i = 0; i < n; i++) {
        if (op == M_STORE_WRITE)
            rec_fill(v->bufs[from + i], v->slots[from + i], gen);
        else
            memset(v->bufs[from + i], 0, M_STORE_RECORD);
        ios[i] = (struct m_store_io){
            .op = op, .slot = v->slots[from + i], .buf = v->bufs[from + i], .result = -1};
        p[i] = &ios[i];
    }
    assert_int_equal(m_store_rw(q, p, n), 0);
    for (size_t i = 0; i < n; i++)
        v->res[from + i] = ios[i].result;
    free(ios);
    free(p);
}

/* Count results equal to err in v. */
static size_t set_count(const struct set *v, int err)
{
    size_t k = 0;
    for (size_t i = 0; i < v->n; i++)
        k += v->res[i] == err;
    return k;
}

static void set_expect_all(const struct set *v, int err)
{
    for (size_t i = 0; i < v->n; i++)
        if (v->res[i] != err)
            fail_msg("I/O %zu (slot %llu): %d (%s), expected %d", i,
                     (unsigned long long)v->slots[i], v->res[i], strerror(v->res[i]), err);
}

static void set_expect_data(const struct set *v, uint64_t gen)
{
    for (size_t i = 0; i < v->n; i++)
        if (v->res[i] == 0 && !rec_check(v->bufs[i], v->slots[i], gen))
            fail_msg("slot %llu read back wrong data", (unsigned long long)v->slots[i]);
}

static struct m_store *open_ok(const char *opts)
{
    char uri[256];
    cluster_uri(uri, sizeof uri, opts);
    struct m_store *s = NULL;
    int rc = m_store_open(uri, &s);
    if (rc)
        fail_msg("m_store_open(%s): %s", uri, strerror(rc));
    return s;
}

static void key_of(struct m_store *s, uint64_t slot, char *key, size_t len)
{
    struct m_store_cluster_stats st;
    assert_int_equal(m_store_cluster_stats(s, &st, NULL, 0, NULL), 0);
    snprintf(key, len, "%s:%llu}:%llu", st.prefix, (unsigned long long)(slot >> 4),
             (unsigned long long)slot);
}

static long long instance_keys(struct m_store *s)
{
    struct m_store_cluster_stats st;
    assert_int_equal(m_store_cluster_stats(s, &st, NULL, 0, NULL), 0);
    char pat[64];
    snprintf(pat, sizeof pat, "%s*", st.prefix);
    return cluster_count(pat);
}

static bool cluster_started;
static void need_cluster(void)
{
    if (!cluster_started) {
        double t0 = cluster_now();
        cluster_start();
        cluster_started = true;
        printf("cluster of %d nodes up in %.1f s\n", CLUSTER_NODES, cluster_now() - t0);
    }
}

/* ---------------------------------------------------------------------------
 * Tests without a cluster
 * ------------------------------------------------------------------------- */

static void test_keyslot_known(void **state)
{
    (void)state;
    /* Values from the Redis Cluster specification. */
    assert_int_equal(m_store_cluster_keyslot("123456789", 9), 0x31C3 & 16383);
    assert_int_equal(m_store_cluster_keyslot("{user1000}.following", 21),
                     m_store_cluster_keyslot("user1000", 8));
    assert_int_equal(m_store_cluster_keyslot("foo{}{bar}", 10),
                     m_store_cluster_keyslot("foo{}{bar}", 10));
    assert_int_equal(m_store_cluster_keyslot("foo{{bar}}zap", 13),
                     m_store_cluster_keyslot("{bar", 4));
    assert_int_equal(m_store_cluster_keyslot("foo{bar}{zap}", 13),
                     m_store_cluster_keyslot("bar", 3));
}

static void test_bad_uris(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "redis+cluster:",                                        /* nothing */
        "redis+cluster://",                                      /* no seed */
        "redis+cluster:127.0.0.1:7000",                          /* no // */
        "redis+cluster://127.0.0.1",                             /* no port */
        "redis+cluster://127.0.0.1:0",                           /* port 0 */
        "redis+cluster://127.0.0.1:70000",                       /* port too large */
        "redis+cluster://127.0.0.1:7000,",                       /* empty seed */
        "redis+cluster://127.0.0.1:7000,:7001",                  /* seed without host */
        "redis+cluster://127.0.0.1:7000/1",                      /* a database */
        "redis+cluster://user@127.0.0.1:7000",                   /* credentials without ':' */
        "redis+cluster://127.0.0.1:7000?x=1",                    /* unknown option */
        "redis+cluster://127.0.0.1:7000?replicas=x",             /* not a number */
        "redis+cluster://127.0.0.1:7000?replicas=99",            /* too many */
        "redis+cluster://127.0.0.1:7000?timeout=0",              /* zero timeout */
        "redis+cluster://127.0.0.1:7000?retry_timeout",          /* no value */
        "redis+cluster://a b:7000",                              /* space in host */
        "redis+cluster://127.0.0.1:7000?replicas=1&timeout=500", /* WAIT would time out */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct m_store *s = (struct m_store *)&s;
        int rc = m_store_open(bad[i], &s);
        if (rc != EINVAL)
            fail_msg("\"%s\": %d (%s), expected EINVAL", bad[i], rc, strerror(rc));
        assert_null(s);
    }
}

static void test_not_listening(void **state)
{
    (void)state;
    char uri[128];
    snprintf(uri, sizeof uri, "redis+cluster://127.0.0.1:%d,127.0.0.1:%d", free_port(),
             free_port());
    struct m_store *s = NULL;
    assert_int_equal(m_store_open(uri, &s), ECONNREFUSED);
    assert_null(s);
    uint64_t ni, nk;
    assert_int_equal(m_store_cluster_gc(uri, &ni, &nk), ECONNREFUSED);
}

static void test_not_a_cluster(void **state)
{
    (void)state;
    struct server *plain = server_start(NULL);
    char uri[128];
    snprintf(uri, sizeof uri, "redis+cluster://127.0.0.1:%d", plain->port);
    struct m_store *s = NULL;
    assert_int_equal(m_store_open(uri, &s), EPROTONOSUPPORT);
    server_kill(plain);
}

/* And the other way round: redis:// naming a cluster node is refused at
 * open (the other nodes' keys would come back as MOVED). */
static void test_single_uri_on_cluster_node(void **state)
{
    (void)state;
    need_cluster();
    char uri[128];
    snprintf(uri, sizeof uri, "redis://127.0.0.1:%d", cluster[0]->port);
    struct m_store *s = NULL;
    assert_int_equal(m_store_open(uri, &s), EPROTONOSUPPORT);
    assert_null(s);
}

/* ---------------------------------------------------------------------------
 * Tests on the cluster
 * ------------------------------------------------------------------------- */

static void test_keyslot_matches_redis(void **state)
{
    (void)state;
    need_cluster();
    redisContext *c = connect_port(cluster[0]->port);
    assert_non_null(c);
    for (int i = 0; i < 300; i++) {
        char key[96];
        snprintf(key, sizeof key, i % 3 ? "moat:{%016x:%d}:%d" : "k%dx%d%d", i * 7919, i / 16, i);
        redisReply *r = redisCommand(c, "CLUSTER KEYSLOT %s", key);
        assert_non_null(r);
        assert_int_equal(r->type, REDIS_REPLY_INTEGER);
        assert_int_equal(m_store_cluster_keyslot(key, strlen(key)), r->integer);
        freeReplyObject(r);
    }
    redisFree(c);
}

/* 2048 records through a queue of depth 64: every primary gets a share, a
 * submit costs one pipeline per node, freed slots are DELeted by later
 * submits, and close removes every key. */
static void test_spread_over_nodes(void **state)
{
    (void)state;
    need_cluster();
    struct m_store *s = open_ok(NULL);
    struct m_store_queue *q = NULL;
    assert_int_equal(m_store_queue_new(s, 64, &q), 0);
    struct set v = set_new(s, 2048);
    set_rw(q, M_STORE_WRITE, &v, 0, v.n, 1);
    set_expect_all(&v, 0);
    set_rw(q, M_STORE_READ, &v, 0, v.n, 1);
    set_expect_all(&v, 0);
    set_expect_data(&v, 1);
    assert_int_equal(instance_keys(s), 2048 + 1); /* + the liveness key */

    struct m_store_cluster_stats st;
    struct m_store_cluster_node_stats ns[M_STORE_CLUSTER_MAX_NODES];
    size_t nn = 0;
    assert_int_equal(m_store_cluster_stats(s, &st, ns, M_STORE_CLUSTER_MAX_NODES, &nn), 0);
    unsigned primaries = 0;
    uint64_t pages = 0;
    for (size_t i = 0; i < nn; i++) {
        printf("  node %s: %s, %u hash slots, %llu pages, %llu writes, %llu reads, %llu round "
               "trips\n",
               ns[i].addr, ns[i].primary ? "primary" : "not primary", ns[i].nslots,
               (unsigned long long)ns[i].pages, (unsigned long long)ns[i].writes,
               (unsigned long long)ns[i].reads, (unsigned long long)ns[i].round_trips);
        if (ns[i].primary) {
            primaries++;
            assert_true(ns[i].pages > 2048 / 6); /* about a third each */
            assert_true(ns[i].writes > 0 && ns[i].reads > 0);
            assert_int_equal(ns[i].bytes, ns[i].pages * M_STORE_RECORD);
        }
        pages += ns[i].pages;
    }
    printf("  %llu round trips for %llu I/Os: %.1f I/Os a round trip\n",
           (unsigned long long)st.round_trips, (unsigned long long)st.ios, st.batching);
    assert_int_equal(primaries, 3);
    assert_int_equal(pages, 2048);
    assert_true(st.batching > 8.0); /* 64 a submit over 3 nodes: ~21 */
    assert_int_equal(st.redirections, 0);

    /* Free half; the next submit carries their DELs. */
    for (size_t i = 0; i < v.n; i += 2)
        m_store_slot_free(s, v.slots[i]);
    set_rw(q, M_STORE_READ, &v, 1, 1, 1);
    assert_int_equal(v.res[1], 0);
    long long keys = instance_keys(s);
    assert_true(keys <= 2048 - 256 + 1);
    m_store_queue_free(q);
    /* The queue waited for its DELs: the slots are reusable. */
    struct m_store_stats ss;
    m_store_stats(s, &ss);
    assert_int_equal(ss.slots_used, 1024);
    struct m_store_cluster_stats st2;
    assert_int_equal(m_store_cluster_stats(s, &st2, NULL, 0, NULL), 0);
    char pat[64];
    snprintf(pat, sizeof pat, "%s*", st2.prefix);
    m_store_close(s);
    assert_int_equal(cluster_count(pat), 0);
    set_free(&v);
}

/* Migrate the hash slot of a group of 16 records by hand: while it
 * migrates, new keys are written and read through ASK; after it moved, the
 * old owner answers MOVED and the store follows and updates its map. */
static void test_ask_and_moved(void **state)
{
    (void)state;
    need_cluster();
    struct m_store *s = open_ok(NULL);
    struct m_store_queue *q = NULL;
    assert_int_equal(m_store_queue_new(s, 64, &q), 0);
    struct set v = set_new(s, 16); /* store slots 0..15: one hash tag */
    set_rw(q, M_STORE_WRITE, &v, 0, 8, 1);
    for (size_t i = 0; i < 8; i++)
        assert_int_equal(v.res[i], 0);

    char key[96];
    key_of(s, v.slots[0], key, sizeof key);
    unsigned hs = m_store_cluster_keyslot(key, strlen(key));
    int src = cluster_owner(hs);
    assert_true(src >= 0);
    int dst = -1;
    for (int i = 0; i < CLUSTER_NODES && dst < 0; i++)
        if (i != src && node_is_primary(cluster[i]->port))
            dst = i;
    assert_true(dst >= 0);
    char srcid[64], dstid[64];
    node_id(cluster[src]->port, srcid, sizeof srcid);
    node_id(cluster[dst]->port, dstid, sizeof dstid);
    char *r = server_str(cluster[dst]->port, "CLUSTER SETSLOT %u IMPORTING %s", hs, srcid);
    assert_string_equal(r, "OK");
    free(r);
    r = server_str(cluster[src]->port, "CLUSTER SETSLOT %u MIGRATING %s", hs, dstid);
    assert_string_equal(r, "OK");
    free(r);

    /* New keys: the source says ASK, the store asks the target. */
    set_rw(q, M_STORE_WRITE, &v, 8, 8, 1);
    for (size_t i = 8; i < 16; i++)
        assert_int_equal(v.res[i], 0);
    set_rw(q, M_STORE_READ, &v, 0, 16, 1);
    set_expect_all(&v, 0);
    set_expect_data(&v, 1);
    struct m_store_cluster_stats st;
    struct m_store_cluster_node_stats ns[M_STORE_CLUSTER_MAX_NODES];
    size_t nn = 0;
    assert_int_equal(m_store_cluster_stats(s, &st, ns, M_STORE_CLUSTER_MAX_NODES, &nn), 0);
    uint64_t asks = 0;
    for (size_t i = 0; i < nn; i++)
        asks += ns[i].asks;
    printf("  migrating hash slot %u: %llu ASK redirections\n", hs, (unsigned long long)asks);
    assert_true(asks >= 16); /* 8 SETs and 8 GETs of keys the source lacks */

    /* Move the rest and hand the slot over. */
    redisContext *c = connect_port(cluster[src]->port);
    assert_non_null(c);
    redisReply *keys = redisCommand(c, "CLUSTER GETKEYSINSLOT %u 1000", hs);
    assert_non_null(keys);
    for (size_t i = 0; i < keys->elements; i++) {
        redisReply *m = redisCommand(c, "MIGRATE 127.0.0.1 %d %s 0 5000", cluster[dst]->port,
                                     keys->element[i]->str);
        assert_non_null(m);
        assert_int_not_equal(m->type, REDIS_REPLY_ERROR);
        freeReplyObject(m);
    }
    freeReplyObject(keys);
    redisFree(c);
    for (int i = 0; i < CLUSTER_NODES; i++) {
        if (!node_is_primary(cluster[i]->port))
            continue;
        r = server_str(cluster[i]->port, "CLUSTER SETSLOT %u NODE %s", hs, dstid);
        assert_non_null(r);
        free(r);
    }
    assert_true(cluster_wait_ok(10));
    set_rw(q, M_STORE_READ, &v, 0, 16, 1);
    set_expect_all(&v, 0);
    set_expect_data(&v, 1);
    assert_int_equal(m_store_cluster_stats(s, &st, ns, M_STORE_CLUSTER_MAX_NODES, &nn), 0);
    uint64_t moved = 0;
    for (size_t i = 0; i < nn; i++)
        moved += ns[i].moved;
    printf("  after the move: %llu MOVED, %llu map refreshes\n", (unsigned long long)moved,
           (unsigned long long)st.refreshes);
    assert_true(moved >= 1);
    /* The map was updated: reading again costs no redirection. */
    set_rw(q, M_STORE_READ, &v, 0, 16, 1);
    set_expect_all(&v, 0);
    struct m_store_cluster_stats st2;
    assert_int_equal(m_store_cluster_stats(s, &st2, NULL, 0, NULL), 0);
    assert_int_equal(st2.redirections, st.redirections);
    m_store_queue_free(q);
    m_store_close(s);
    set_free(&v);
}

/* The replica of the node of port `primary`, or -1. */
static int replica_of(int primary)
{
    for (int i = 0; i < CLUSTER_NODES; i++) {
        if (cluster[i]->pid <= 0 || cluster[i]->port == primary)
            continue;
        char *info = server_str(cluster[i]->port, "INFO replication");
        char want[32];
        snprintf(want, sizeof want, "master_port:%d", primary);
        bool is = info && strstr(info, "role:slave") && strstr(info, want);
        free(info);
        if (is)
            return i;
    }
    return -1;
}

static void test_replicas_wait(void **state)
{
    (void)state;
    need_cluster();
    char uri[256];
    cluster_uri(uri, sizeof uri, "?replicas=2");
    struct m_store *bad = NULL;
    assert_int_equal(m_store_open(uri, &bad), EREMOTEIO);

    struct m_store *s = open_ok("?replicas=1&wait_timeout=1000");
    struct m_store_queue *q = NULL;
    assert_int_equal(m_store_queue_new(s, 64, &q), 0);
    struct set v = set_new(s, 256);
    /* A replica may be slow to ack on a loaded machine: a refused write is
     * an answer, not a loss; try again. */
    bool all = false;
    for (int attempt = 0; attempt < 50 && !all; attempt++) {
        set_rw(q, M_STORE_WRITE, &v, 0, v.n, 1);
        assert_int_equal(set_count(&v, 0) + set_count(&v, EREMOTEIO), v.n);
        all = set_count(&v, 0) == v.n;
        if (!all)
            usleep(100000); /* the store refreshes its view of the replicas */
    }
    assert_true(all);

    /* Stop the replica of one primary: its writes are refused. */
    char key[96];
    key_of(s, v.slots[0], key, sizeof key);
    int p = cluster_owner(m_store_cluster_keyslot(key, strlen(key)));
    int rep = replica_of(cluster[p]->port);
    assert_true(rep >= 0);
    kill(cluster[rep]->pid, SIGSTOP);
    set_rw(q, M_STORE_WRITE, &v, 0, v.n, 2);
    kill(cluster[rep]->pid, SIGCONT);
    size_t refused = set_count(&v, EREMOTEIO), ok = set_count(&v, 0);
    printf("  replica %d stopped: %zu writes refused (EREMOTEIO), %zu acknowledged\n",
           cluster[rep]->port, refused, ok);
    assert_true(refused > 0 && ok > 0);
    assert_int_equal(refused + ok, v.n);
    struct m_store_cluster_stats st;
    assert_int_equal(m_store_cluster_stats(s, &st, NULL, 0, NULL), 0);
    assert_true(st.wait_failures >= 1);
    /* The replica is back: the same writes are acknowledged again. */
    all = false;
    for (int attempt = 0; attempt < 50 && !all; attempt++) {
        set_rw(q, M_STORE_WRITE, &v, 0, v.n, 3);
        all = set_count(&v, 0) == v.n;
        if (!all)
            usleep(200000);
    }
    assert_true(all);
    set_rw(q, M_STORE_READ, &v, 0, v.n, 3);
    set_expect_all(&v, 0);
    set_expect_data(&v, 3);
    m_store_queue_free(q);
    m_store_close(s);
    set_free(&v);
    assert_true(cluster_wait_ok(10));
}

static long long info_int(int port, const char *field)
{
    char *info = server_str(port, "INFO memory");
    assert_non_null(info);
    const char *p = strstr(info, field);
    assert_non_null(p);
    long long v = atoll(p + strlen(field) + 1);
    free(info);
    return v;
}

static void test_maxmemory(void **state)
{
    (void)state;
    need_cluster();
    struct m_store *s = open_ok("?retry_timeout=0");
    struct m_store_queue *q = NULL;
    assert_int_equal(m_store_queue_new(s, 64, &q), 0);
    struct set v = set_new(s, 1536); /* ~7 MiB, ~2.3 MiB a primary */
    for (int i = 0; i < CLUSTER_NODES; i++)
        if (node_is_primary(cluster[i]->port)) {
            long long used = info_int(cluster[i]->port, "used_memory");
            free(server_str(cluster[i]->port, "CONFIG SET maxmemory %lld", used + (1 << 20)));
        }
    set_rw(q, M_STORE_WRITE, &v, 0, v.n, 1);
    size_t oom = set_count(&v, ENOSPC), ok = set_count(&v, 0);
    printf("  maxmemory: %zu writes refused (ENOSPC), %zu stored\n", oom, ok);
    assert_true(oom > 0 && ok > 0);
    assert_int_equal(oom + ok, v.n);
    int *was = calloc(v.n, sizeof *was);
    memcpy(was, v.res, v.n * sizeof *was);
    set_rw(q, M_STORE_READ, &v, 0, v.n, 1);
    for (size_t i = 0; i < v.n; i++)
        if (was[i] == 0) {
            assert_int_equal(v.res[i], 0);
            assert_true(rec_check(v.bufs[i], v.slots[i], 1));
        }
    free(was);
    for (int i = 0; i < CLUSTER_NODES; i++)
        if (node_is_primary(cluster[i]->port))
            free(server_str(cluster[i]->port, "CONFIG SET maxmemory 0"));
    m_store_queue_free(q);
    m_store_close(s);
    set_free(&v);
}

static void test_gc(void **state)
{
    (void)state;
    need_cluster();
    /* A dead instance's keys: an open store whose liveness key is deleted
     * by hand (as if it had expired), next to a live one. */
    struct m_store *dead = open_ok(NULL), *live = open_ok(NULL);
    struct m_store_queue *qd = NULL, *ql = NULL;
    assert_int_equal(m_store_queue_new(dead, 64, &qd), 0);
    assert_int_equal(m_store_queue_new(live, 64, &ql), 0);
    struct set vd = set_new(dead, 200), vl = set_new(live, 100);
    set_rw(qd, M_STORE_WRITE, &vd, 0, vd.n, 1);
    set_rw(ql, M_STORE_WRITE, &vl, 0, vl.n, 1);
    struct m_store_cluster_stats st;
    assert_int_equal(m_store_cluster_stats(dead, &st, NULL, 0, NULL), 0);
    char alive[64];
    snprintf(alive, sizeof alive, "%s}:alive", st.prefix);
    int owner = cluster_owner(m_store_cluster_keyslot(alive, strlen(alive)));
    assert_int_equal(server_int(cluster[owner]->port, NULL, "DEL %s", alive), 1);
    char uri[256];
    cluster_uri(uri, sizeof uri, NULL);
    uint64_t ni = 0, nk = 0;
    assert_int_equal(m_store_cluster_gc(uri, &ni, &nk), 0);
    printf("  gc: %llu instances, %llu keys\n", (unsigned long long)ni, (unsigned long long)nk);
    assert_int_equal(ni, 1);
    assert_int_equal(nk, 200);
    assert_int_equal(instance_keys(dead), 0);
    assert_int_equal(instance_keys(live), 100 + 1);
    m_store_queue_free(qd);
    m_store_queue_free(ql);
    m_store_close(dead);
    m_store_close(live);
    set_free(&vd);
    set_free(&vl);
}

/* Run one command on every live node, authenticating with auth if set. */
static void all_nodes(const char *auth, const char *fmt, const char *arg)
{
    for (int i = 0; i < CLUSTER_NODES; i++) {
        if (cluster[i]->pid <= 0)
            continue;
        redisContext *c = connect_port(cluster[i]->port);
        assert_non_null(c);
        if (auth) {
            redisReply *a = redisCommand(c, "AUTH %s", auth);
            assert_non_null(a);
            freeReplyObject(a);
        }
        redisReply *r = redisCommand(c, fmt, arg);
        assert_non_null(r);
        assert_int_not_equal(r->type, REDIS_REPLY_ERROR);
        freeReplyObject(r);
        redisFree(c);
    }
}

/* A cluster with a password: none, or a wrong one, is EACCES at open; the
 * right one (":pw@" or "default:pw@") works. */
static void test_auth(void **state)
{
    (void)state;
    need_cluster();
    all_nodes(NULL, "CONFIG SET masterauth %s", "s3cret");
    all_nodes(NULL, "CONFIG SET requirepass %s", "s3cret");
    static const char *const bad[] = {"", ":wrong@", "default:wrong@", "nobody:s3cret@"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char uri[256];
        snprintf(uri, sizeof uri, "redis+cluster://%s127.0.0.1:%d", bad[i], cluster[0]->port);
        struct m_store *s = NULL;
        int rc = m_store_open(uri, &s);
        if (rc != EACCES)
            fail_msg("%s: %d (%s), expected EACCES", uri, rc, strerror(rc));
    }
    static const char *const good[] = {":s3cret@", "default:s3cret@"};
    for (size_t i = 0; i < 2; i++) {
        char uri[256];
        snprintf(uri, sizeof uri, "redis+cluster://%s127.0.0.1:%d", good[i], cluster[0]->port);
        struct m_store *s = NULL;
        assert_int_equal(m_store_open(uri, &s), 0);
        struct m_store_queue *q = NULL;
        assert_int_equal(m_store_queue_new(s, 64, &q), 0);
        struct set v = set_new(s, 100);
        set_rw(q, M_STORE_WRITE, &v, 0, v.n, 1);
        set_expect_all(&v, 0);
        set_rw(q, M_STORE_READ, &v, 0, v.n, 1);
        set_expect_all(&v, 0);
        set_expect_data(&v, 1);
        m_store_queue_free(q);
        m_store_close(s);
        set_free(&v);
    }
    all_nodes("s3cret", "CONFIG SET requirepass %s", "");
    all_nodes(NULL, "CONFIG SET masterauth %s", "");
    assert_true(cluster_wait_ok(10));
}

/* Kill a primary.  A store with retry_timeout=0 fails at once with the
 * connection's errno; one with a short retry_timeout gives up with
 * ETIMEDOUT before the failover; one written with replicas=1 and the
 * default retry_timeout waits for the failover and reads every record. */
static void test_failover(void **state)
{
    (void)state;
    need_cluster();
    /* an earlier test stopped a replica: wait until every node sees it live */
    assert_true(cluster_wait_healthy(20));
    assert_true(cluster_wait_topology(20));
    struct m_store *a = open_ok("?replicas=1"), *t = open_ok("?retry_timeout=300"),
                   *z = open_ok("?retry_timeout=0");
    struct m_store_queue *qa = NULL, *qt = NULL, *qz = NULL;
    assert_int_equal(m_store_queue_new(a, 64, &qa), 0);
    assert_int_equal(m_store_queue_new(t, 64, &qt), 0);
    assert_int_equal(m_store_queue_new(z, 64, &qz), 0);
    struct set va = set_new(a, 512), vt = set_new(t, 512), vz = set_new(z, 512);
    set_rw(qa, M_STORE_WRITE, &va, 0, va.n, 1);
    set_expect_all(&va, 0);
    set_rw(qt, M_STORE_WRITE, &vt, 0, vt.n, 1);
    set_expect_all(&vt, 0);
    set_rw(qz, M_STORE_WRITE, &vz, 0, vz.n, 1);
    set_expect_all(&vz, 0);

    char key[96];
    key_of(a, va.slots[0], key, sizeof key);
    unsigned hs = m_store_cluster_keyslot(key, strlen(key));
    int victim = cluster_owner(hs);
    assert_true(victim >= 0);
    printf("  killing primary %d (hash slot %u)\n", cluster[victim]->port, hs);
    double t0 = cluster_now();
    node_kill(cluster[victim]);

    set_rw(qz, M_STORE_READ, &vz, 0, vz.n, 1);
    size_t lost = set_count(&vz, ECONNRESET) + set_count(&vz, ECONNREFUSED);
    printf("  retry_timeout=0: %zu reads failed with ECONNRESET/ECONNREFUSED, %zu ok\n", lost,
           set_count(&vz, 0));
    assert_true(lost > 0);
    assert_int_equal(lost + set_count(&vz, 0), vz.n);
    set_expect_data(&vz, 1);

    set_rw(qt, M_STORE_READ, &vt, 0, vt.n, 1);
    size_t gaveup = set_count(&vt, ETIMEDOUT);
    printf("  retry_timeout=300: %zu reads gave up (ETIMEDOUT), %zu ok\n", gaveup,
           set_count(&vt, 0));
    /* The failover takes longer than 300 ms (cluster-node-timeout 1000). */
    assert_true(gaveup > 0);
    assert_int_equal(gaveup + set_count(&vt, 0), vt.n);
    set_expect_data(&vt, 1);

    set_rw(qa, M_STORE_READ, &va, 0, va.n, 1);
    printf("  replicas=1: every read back after %.1f s\n", cluster_now() - t0);
    set_expect_all(&va, 0);
    set_expect_data(&va, 1);
    struct m_store_cluster_stats st;
    assert_int_equal(m_store_cluster_stats(a, &st, NULL, 0, NULL), 0);
    printf("  %llu retries, %llu map refreshes, %llu failovers seen\n",
           (unsigned long long)st.retries, (unsigned long long)st.refreshes,
           (unsigned long long)st.failovers);
    assert_true(st.retries > 0);
    assert_true(st.failovers >= 1);
    /* The new primary has no replica: writes to it are refused (EREMOTEIO,
     * at once: CLUSTER NODES shows it without one), the others succeed. */
    set_rw(qa, M_STORE_WRITE, &va, 0, va.n, 2);
    size_t refused = set_count(&va, EREMOTEIO);
    printf("  no replica behind the new primary: %zu writes refused, %zu acknowledged\n", refused,
           set_count(&va, 0));
    assert_true(refused > 0);
    assert_int_equal(refused + set_count(&va, 0), va.n);
    /* The old primary, restarted, becomes the new one's replica, and the
     * same writes succeed. */
    node_restart(cluster[victim]);
    assert_true(cluster_wait_ok(20));
    bool all = false;
    for (int attempt = 0; attempt < 50 && !all; attempt++) {
        set_rw(qa, M_STORE_WRITE, &va, 0, va.n, 2);
        all = set_count(&va, 0) == va.n;
        if (!all)
            usleep(200000);
    }
    assert_true(all);
    set_rw(qa, M_STORE_READ, &va, 0, va.n, 2);
    set_expect_all(&va, 0);
    set_expect_data(&va, 2);
    m_store_queue_free(qa);
    m_store_queue_free(qt);
    m_store_queue_free(qz);
    m_store_close(a);
    m_store_close(t);
    m_store_close(z);
    set_free(&va);
    set_free(&vt);
    set_free(&vz);
}

/* An idle instance keeps its liveness key: a store opened early in this
 * program makes no I/O after its first batch, and is checked near the end,
 * at least 12 s later (more than the 10 s refresh period; the key has
 * EX 30). */
static struct m_store *idle;
static double idle_since;
static struct set idle_set;

static void test_idle_open(void **state)
{
    (void)state;
    need_cluster();
    idle = open_ok(NULL);
    struct m_store_queue *q = NULL;
    assert_int_equal(m_store_queue_new(idle, 16, &q), 0);
    idle_set = set_new(idle, 16);
    set_rw(q, M_STORE_WRITE, &idle_set, 0, idle_set.n, 1);
    set_expect_all(&idle_set, 0);
    m_store_queue_free(q);
    idle_since = cluster_now();
}

static void test_idle_alive(void **state)
{
    (void)state;
    assert_non_null(idle);
    double left = 12.0 - (cluster_now() - idle_since);
    if (left > 0)
        usleep((useconds_t)(left * 1e6));
    struct m_store_cluster_stats st;
    assert_int_equal(m_store_cluster_stats(idle, &st, NULL, 0, NULL), 0);
    char alive[64];
    snprintf(alive, sizeof alive, "%s}:alive", st.prefix);
    int owner = cluster_owner(m_store_cluster_keyslot(alive, strlen(alive)));
    assert_true(owner >= 0);
    long long ttl = server_int(cluster[owner]->port, NULL, "TTL %s", alive);
    printf("  idle for %.1f s: liveness key TTL %lld s (of 30)\n", cluster_now() - idle_since, ttl);
    assert_true(ttl > 30 - 12); /* refreshed by the store's thread, not left to lapse */
    char uri[256];
    cluster_uri(uri, sizeof uri, NULL);
    uint64_t ni = 0, nk = 0;
    assert_int_equal(m_store_cluster_gc(uri, &ni, &nk), 0);
    assert_int_equal(instance_keys(idle), 16 + 1);
    struct m_store_queue *q = NULL;
    assert_int_equal(m_store_queue_new(idle, 16, &q), 0);
    set_rw(q, M_STORE_READ, &idle_set, 0, idle_set.n, 1);
    set_expect_all(&idle_set, 0);
    set_expect_data(&idle_set, 1);
    m_store_queue_free(q);
    m_store_close(idle);
    idle = NULL;
    set_free(&idle_set);
}

/* A primary and its replica both gone: the cluster is down, and the other
 * primaries answer CLUSTERDOWN: ENETDOWN. */
static void test_clusterdown(void **state)
{
    (void)state;
    need_cluster();
    struct m_store *s = open_ok("?retry_timeout=0");
    struct m_store_queue *q = NULL;
    assert_int_equal(m_store_queue_new(s, 64, &q), 0);
    struct set v = set_new(s, 256);
    set_rw(q, M_STORE_WRITE, &v, 0, v.n, 1);
    set_expect_all(&v, 0);
    int p = -1;
    for (int i = 0; i < CLUSTER_NODES && p < 0; i++)
        if (cluster[i]->pid > 0 && node_is_primary(cluster[i]->port))
            p = i;
    int rep = replica_of(cluster[p]->port);
    assert_true(rep >= 0);
    node_kill(cluster[rep]);
    node_kill(cluster[p]);
    int other = -1;
    for (int i = 0; i < CLUSTER_NODES && other < 0; i++)
        if (cluster[i]->pid > 0 && node_is_primary(cluster[i]->port))
            other = i;
    double end = cluster_now() + 20;
    while (node_state_ok(cluster[other]->port) && cluster_now() < end)
        usleep(100000);
    assert_false(node_state_ok(cluster[other]->port));
    set_rw(q, M_STORE_READ, &v, 0, v.n, 1);
    size_t down = set_count(&v, ENETDOWN);
    printf("  cluster down: %zu reads ENETDOWN, %zu connection errors\n", down,
           set_count(&v, ECONNRESET) + set_count(&v, ECONNREFUSED));
    assert_true(down > 0);
    assert_int_equal(set_count(&v, 0), 0); /* no read is served by a failed cluster */
    m_store_queue_free(q);
    m_store_close(s);
    set_free(&v);
}

int main(void)
{
    struct m_store *probe = NULL;
    if (m_store_open("redis+cluster://127.0.0.1:1?retry_timeout=0", &probe) == EINVAL) {
        fprintf(stderr, "SKIP: this moat was built without the redis backends "
                        "(libhiredis-dev); the cluster store was NOT tested\n");
        return 77;
    }
    if (!have_redis_server() || !have_redis_cli()) {
        fprintf(stderr, "SKIP: redis-server or redis-cli is not installed (Debian: apt-get "
                        "install redis-server redis-tools); the cluster store was NOT tested\n");
        return 77;
    }
    signal(SIGPIPE, SIG_DFL); /* the store must not die of SIGPIPE by itself */
    atexit(servers_kill_all);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keyslot_known),
        cmocka_unit_test(test_bad_uris),
        cmocka_unit_test(test_not_listening),
        cmocka_unit_test(test_not_a_cluster),
        cmocka_unit_test(test_single_uri_on_cluster_node),
        cmocka_unit_test(test_keyslot_matches_redis),
        cmocka_unit_test(test_idle_open),
        cmocka_unit_test(test_spread_over_nodes),
        cmocka_unit_test(test_ask_and_moved),
        cmocka_unit_test(test_replicas_wait),
        cmocka_unit_test(test_maxmemory),
        cmocka_unit_test(test_gc),
        cmocka_unit_test(test_auth),
        cmocka_unit_test(test_failover),
        cmocka_unit_test(test_idle_alive),
        cmocka_unit_test(test_clusterdown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL) ? 1 : 0;
}

#else
int main(void)
{
    fprintf(stderr, "SKIP: hiredis headers are missing (Debian: libhiredis-dev); the cluster "
                    "store was NOT tested\n");
    return 77;
}
#endif
