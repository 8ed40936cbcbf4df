/*
 * test_store_redis.c - the redis store against real redis-server processes
 * on loopback: record round trips in batches (one round trip a batch), the
 * non-blocking reap, slot reuse and the DELs of freed slots, a missing key,
 * removal of the instance's keys at close, passwords, a server that is not
 * there, a server that dies, a server that pauses (retries with backoff,
 * and giving up with ETIMEDOUT), replicas=1 with a replica attached by
 * REPLICAOF (WAIT succeeds; a stopped or missing replica fails writes with
 * EREMOTEIO), maxmemory, and malformed URIs.
 *
 * Each server is started by this program as a child (redis-server on
 * 127.0.0.1, a random port in 20000-40000, retried if taken, in a temporary
 * directory, no persistence) and killed at exit, also when a test fails
 * (atexit).  Without redis-server the program skips (exit 77) and says so;
 * a moat built without hiredis skips too.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "store/store.h"

#if __has_include(<hiredis/hiredis.h>)

#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "store/redis.h"

#include "redis_server.h"
#include "store_records.h"

/* ---------------------------------------------------------------------------
 * Records
 * ------------------------------------------------------------------------- */

/* n I/Os of one kind over slots[], buffers from bufs[]. */
static void rw_all(struct m_store_queue *q, int op, const uint64_t *slots, void **bufs, size_t n,
                   int *results)
{
    struct m_store_io *ios = calloc(n, sizeof *ios);
    struct m_store_io **p = calloc(n, sizeof *p);
    assert_non_null(ios);
    assert_non_null(p);
    for (size_t i = 0; i < n; i++) {
        ios[i] = (struct m_store_io){.op = op, .slot = slots[i], .buf = bufs[i], .result = -1};
        p[i] = &ios[i];
    }
    assert_int_equal(m_store_rw(q, p, n), 0);
    for (size_t i = 0; i < n; i++)
        results[i] = ios[i].result;
    free(ios);
    free(p);
}

/* Like rw_all, but in batches of exactly `batch`: submit, then reap the
 * whole batch, so each batch is one pipeline. */
static void rw_batches(struct m_store_queue *q, int op, const uint64_t *slots, void **bufs,
                       size_t n, size_t batch, int *results)
{
    struct m_store_io *ios = calloc(n, sizeof *ios);
    struct m_store_io **p = calloc(n, sizeof *p), **done = calloc(batch, sizeof *done);
    assert_non_null(ios);
    for (size_t i = 0; i < n; i++) {
        ios[i] = (struct m_store_io){.op = op, .slot = slots[i], .buf = bufs[i], .result = -1};
        p[i] = &ios[i];
    }
    for (size_t at = 0; at < n; at += batch) {
        size_t k = n - at < batch ? n - at : batch;
        assert_int_equal(m_store_submit(q, p + at, k), 0);
        size_t nd = 0;
        assert_int_equal(m_store_reap(q, done, k, k, &nd), 0);
        assert_int_equal(nd, k);
        for (size_t i = 0; i < k; i++)
            assert_ptr_equal(done[i], p[at + i]); /* replies come in order */
    }
    for (size_t i = 0; i < n; i++)
        results[i] = ios[i].result;
    free(ios);
    free(p);
    free(done);
}

static char uri_buf[256];
static const char *uri_for(const char *cred, int port)
{
    snprintf(uri_buf, sizeof uri_buf, "redis://%s127.0.0.1:%d", cred ? cred : "", port);
    return uri_buf;
}

static struct server *plain; /* shared by the tests that need a plain server */

static struct server *plain_server(void)
{
    if (!plain)
        plain = server_start(NULL);
    return plain;
}

/* Read n slots back: each must hold generation gen. */
static void read_check(struct m_store_queue *q, const uint64_t *slots, void **bufs, size_t n,
                       uint64_t gen)
{
    int *res = calloc(n, sizeof *res);
    assert_non_null(res);
    for (size_t i = 0; i < n; i++)
        memset(bufs[i], 0, M_STORE_RECORD);
    rw_all(q, M_STORE_READ, slots, bufs, n, res);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(res[i], 0);
        assert_true(rec_check(bufs[i], slots[i], gen));
    }
    free(res);
}

/* Open a store at uri with a queue of depth 4, and write one record
 * (generation 1) into a new slot. */
static void open_with_record(const char *uri, struct m_store **s, struct m_store_queue **q,
                             uint64_t *slot, void **buf)
{
    assert_int_equal(m_store_open(uri, s), 0);
    assert_int_equal(m_store_queue_new(*s, 4, q), 0);
    assert_int_equal(m_store_slot_alloc(*s, slot), 0);
    *buf = rec_new();
    rec_fill(*buf, *slot, 1);
    int res;
    rw_all(*q, M_STORE_WRITE, slot, buf, 1, &res);
    assert_int_equal(res, 0);
}

/* ---------------------------------------------------------------------------
 * Tests
 * ------------------------------------------------------------------------- */

/* 2000 records written and read back through a queue of depth 64: each
 * batch is one pipeline, so the batching factor is close to 64. */
static void test_roundtrip_batches(void **state)
{
    (void)state;
    struct server *srv = plain_server();
    struct m_store *s = NULL;
    assert_int_equal(m_store_open(uri_for(NULL, srv->port), &s), 0);
    char desc[300];
    snprintf(desc, sizeof desc, "%s/0", uri_for(NULL, srv->port));
    assert_string_equal(m_store_describe(s), desc);
    struct m_store_queue *q = NULL;
    assert_int_equal(m_store_queue_new(s, 64, &q), 0);
    assert_int_equal(q->depth, 64);

    enum { N = 2000 };
    uint64_t *slots = calloc(N, sizeof *slots);
    void **bufs = calloc(N, sizeof *bufs);
    int *res = calloc(N, sizeof *res);
    for (size_t i = 0; i < N; i++) {
        assert_int_equal(m_store_slot_alloc(s, &slots[i]), 0);
        assert_int_equal(slots[i], i);
        bufs[i] = rec_new();
        rec_fill(bufs[i], slots[i], 1);
    }
    rw_batches(q, M_STORE_WRITE, slots, bufs, N, 64, res);
    for (size_t i = 0; i < N; i++) {
        assert_int_equal(res[i], 0);
        memset(bufs[i], 0xee, M_STORE_RECORD);
    }
    rw_batches(q, M_STORE_READ, slots, bufs, N, 64, res);
    for (size_t i = 0; i < N; i++) {
        assert_int_equal(res[i], 0);
        assert_true(rec_check(bufs[i], slots[i], 1));
    }

    struct m_store_stats st;
    m_store_stats(s, &st);
    assert_int_equal(st.writes, N);
    assert_int_equal(st.reads, N);
    assert_int_equal(st.bytes_read, (uint64_t)N * M_STORE_RECORD);
    assert_int_equal(st.bytes_written, (uint64_t)N * M_STORE_RECORD);
    assert_int_equal(st.slots_used, N);
    assert_int_equal(st.errors, 0);
    struct m_store_redis_stats rst;
    assert_int_equal(m_store_redis_stats(s, &rst), 0);
    assert_int_equal(rst.ios, 2 * N);
    /* 2 x 2000 I/Os in batches of 64: one pipeline a batch. */
    printf("round trips %llu for %d I/Os: %.1f I/Os a round trip\n",
           (unsigned long long)rst.round_trips, 2 * N, (double)rst.ios / (double)rst.round_trips);
    assert_int_equal(rst.round_trips, 2 * ((N + 63) / 64));

    /* m_store_rw also works, though it refills the queue as completions
     * come, so its pipelines are smaller. */
    for (size_t i = 0; i < N; i++)
        rec_fill(bufs[i], slots[i], 2);
    rw_all(q, M_STORE_WRITE, slots, bufs, N, res);
    for (size_t i = 0; i < N; i++) {
        assert_int_equal(res[i], 0);
        memset(bufs[i], 0, M_STORE_RECORD);
    }
    rw_all(q, M_STORE_READ, slots, bufs, N, res);
    for (size_t i = 0; i < N; i++) {
        assert_int_equal(res[i], 0);
        assert_true(rec_check(bufs[i], slots[i], 2));
    }
    /* Every record is a key on the server, plus the liveness key. */
    char pattern[64];
    snprintf(pattern, sizeof pattern, "%s*", rst.prefix);
    assert_int_equal(server_count(srv->port, pattern), N + 1);

    /* Non-blocking reap: submit 10 reads and reap with min = 0 until done. */
    struct m_store_io ios[10], *p[10], *done[10];
    for (int i = 0; i < 10; i++) {
        ios[i] = (struct m_store_io){.op = M_STORE_READ, .slot = slots[i * 7], .buf = bufs[i]};
        p[i] = &ios[i];
    }
    assert_int_equal(m_store_submit(q, p, 10), 0);
    /* More than the depth in flight is refused. */
    struct m_store_io *many[64];
    for (int i = 0; i < 64; i++)
        many[i] = &ios[0];
    assert_int_equal(m_store_submit(q, many, 64), EAGAIN);
    size_t got = 0;
    for (int spins = 0; got < 10 && spins < 1000000; spins++) {
        size_t nd = 0;
        assert_int_equal(m_store_reap(q, done + got, 10 - got, 0, &nd), 0);
        got += nd;
    }
    assert_int_equal(got, 10);
    for (int i = 0; i < 10; i++) {
        assert_ptr_equal(done[i], &ios[i]); /* in order */
        assert_int_equal(ios[i].result, 0);
        assert_true(rec_check(bufs[i], slots[i * 7], 2));
    }

    for (size_t i = 0; i < N; i++)
        free(bufs[i]);
    free(slots);
    free(bufs);
    free(res);
    m_store_queue_free(q);
    m_store_close(s);
    assert_int_equal(server_count(srv->port, pattern), 0);
}

/* Freed slots are DELeted with the next batch and then reused lowest first;
 * a slot freed and taken again before that keeps working. */
static void test_slot_reuse(void **state)
{
    (void)state;
    struct server *srv = plain_server();
    struct m_store *s = NULL;
    assert_int_equal(m_store_open(uri_for(NULL, srv->port), &s), 0);
    struct m_store_queue *q = NULL;
    assert_int_equal(m_store_queue_new(s, 16, &q), 0);
    struct m_store_redis_stats rst;
    assert_int_equal(m_store_redis_stats(s, &rst), 0);
    char key[80];

    uint64_t slots[10];
    void *bufs[10];
    int res[10];
    for (int i = 0; i < 10; i++) {
        assert_int_equal(m_store_slot_alloc(s, &slots[i]), 0);
        bufs[i] = rec_new();
        rec_fill(bufs[i], slots[i], 0);
    }
    rw_all(q, M_STORE_WRITE, slots, bufs, 10, res);
    for (int i = 0; i < 10; i++)
        assert_int_equal(res[i], 0);

    m_store_slot_free(s, 7);
    m_store_slot_free(s, 3);
    m_store_slot_free(s, 5);
    struct m_store_stats st;
    m_store_stats(s, &st);
    assert_int_equal(st.slots_used, 7);
    /* A double free is refused (and logged). */
    m_store_slot_free(s, 12);

    /* The DELs ride with the next batch (a read of slot 0). */
    rw_all(q, M_STORE_READ, slots, bufs, 1, res);
    assert_int_equal(res[0], 0);
    assert_true(rec_check(bufs[0], 0, 0));
    for (int i = 3; i <= 7; i += 2) {
        snprintf(key, sizeof key, "%s%d", rst.prefix, i);
        assert_int_equal(server_int(srv->port, NULL, "EXISTS %s", key), 0);
    }
    snprintf(key, sizeof key, "%s4", rst.prefix);
    assert_int_equal(server_int(srv->port, NULL, "EXISTS %s", key), 1);
    assert_int_equal(m_store_redis_stats(s, &rst), 0);
    assert_int_equal(rst.dels, 3);

    uint64_t n;
    assert_int_equal(m_store_slot_alloc(s, &n), 0);
    assert_int_equal(n, 3);
    assert_int_equal(m_store_slot_alloc(s, &n), 0);
    assert_int_equal(n, 5);
    assert_int_equal(m_store_slot_alloc(s, &n), 0);
    assert_int_equal(n, 7);
    assert_int_equal(m_store_slot_alloc(s, &n), 0);
    assert_int_equal(n, 10);

    /* Freed and taken again before any submit: its DEL is cancelled, so the
     * new owner's write is not deleted behind its back. */
    m_store_slot_free(s, 2);
    assert_int_equal(m_store_slot_alloc(s, &n), 0);
    assert_int_equal(n, 2);
    uint64_t two = 2;
    rec_fill(bufs[2], 2, 9);
    rw_all(q, M_STORE_WRITE, &two, &bufs[2], 1, res);
    assert_int_equal(res[0], 0);
    read_check(q, &two, &bufs[2], 1, 9);

    for (int i = 0; i < 10; i++)
        free(bufs[i]);
    m_store_queue_free(q);
    m_store_close(s);
}

/* A slot that was never written reads as EIO, never as zeros; the queue
 * goes on working. */
static void test_missing_key_eio(void **state)
{
    (void)state;
    struct server *srv = plain_server();
    struct m_store *s = NULL;
    assert_int_equal(m_store_open(uri_for(NULL, srv->port), &s), 0);
    struct m_store_queue *q = NULL;
    assert_int_equal(m_store_queue_new(s, 8, &q), 0);
    uint64_t slots[2];
    assert_int_equal(m_store_slot_alloc(s, &slots[0]), 0);
    assert_int_equal(m_store_slot_alloc(s, &slots[1]), 0);
    void *bufs[2] = {rec_new(), rec_new()};
    int res[2];
    rec_fill(bufs[1], slots[1], 4);
    rw_all(q, M_STORE_WRITE, &slots[1], &bufs[1], 1, res);
    assert_int_equal(res[0], 0);
    memset(bufs[0], 0x5a, M_STORE_RECORD);
    rw_all(q, M_STORE_READ, slots, bufs, 2, res);
    assert_int_equal(res[0], EIO);
    assert_int_equal(res[1], 0);
    assert_true(rec_check(bufs[1], slots[1], 4));
    struct m_store_stats st;
    m_store_stats(s, &st);
    assert_int_equal(st.errors, 1);
    free(bufs[0]);
    free(bufs[1]);
    m_store_queue_free(q);
    m_store_close(s);
}

/* Two instances share a server; each close removes only its own keys; the
 * liveness key has a TTL. */
static void test_close_removes_keys(void **state)
{
    (void)state;
    struct server *srv = plain_server();
    assert_int_equal(server_int(srv->port, NULL, "DBSIZE"), 0);
    struct m_store *a = NULL, *b = NULL;
    assert_int_equal(m_store_open(uri_for(NULL, srv->port), &a), 0);
    assert_int_equal(m_store_open(uri_for(NULL, srv->port), &b), 0);
    struct m_store_redis_stats ra, rb;
    assert_int_equal(m_store_redis_stats(a, &ra), 0);
    assert_int_equal(m_store_redis_stats(b, &rb), 0);
    assert_string_not_equal(ra.prefix, rb.prefix);
    char key[80];
    snprintf(key, sizeof key, "%salive", ra.prefix);
    long long ttl = server_int(srv->port, NULL, "TTL %s", key);
    assert_true(ttl > 0 && ttl <= 30);

    struct m_store *both[2] = {a, b};
    for (int k = 0; k < 2; k++) {
        struct m_store_queue *q = NULL;
        assert_int_equal(m_store_queue_new(both[k], 32, &q), 0);
        uint64_t slots[300];
        void *bufs[300];
        int res[300];
        for (int i = 0; i < 300; i++) {
            assert_int_equal(m_store_slot_alloc(both[k], &slots[i]), 0);
            bufs[i] = rec_new();
            rec_fill(bufs[i], slots[i], (uint64_t)k);
        }
        rw_all(q, M_STORE_WRITE, slots, bufs, 300, res);
        for (int i = 0; i < 300; i++) {
            assert_int_equal(res[i], 0);
            free(bufs[i]);
        }
        m_store_queue_free(q);
    }
    assert_int_equal(server_int(srv->port, NULL, "DBSIZE"), 602);
    m_store_close(a);
    assert_int_equal(server_int(srv->port, NULL, "DBSIZE"), 301);
    char pattern[64];
    snprintf(pattern, sizeof pattern, "%s*", rb.prefix);
    assert_int_equal(server_count(srv->port, pattern), 301);
    m_store_close(b);
    assert_int_equal(server_int(srv->port, NULL, "DBSIZE"), 0);
}

/* A database number in the URI selects that database. */
static void test_select_db(void **state)
{
    (void)state;
    struct server *srv = plain_server();
    char uri[128];
    snprintf(uri, sizeof uri, "redis://127.0.0.1:%d/3", srv->port);
    struct m_store *s = NULL;
    assert_int_equal(m_store_open(uri, &s), 0);
    assert_int_equal(server_int(srv->port, NULL, "DBSIZE"), 0); /* db 0 */
    redisContext *c = connect_port(srv->port);
    assert_non_null(c);
    redisReply *r = redisCommand(c, "SELECT 3");
    freeReplyObject(r);
    r = redisCommand(c, "DBSIZE");
    assert_int_equal(r->integer, 1); /* the liveness key */
    freeReplyObject(r);
    m_store_close(s);
    r = redisCommand(c, "DBSIZE");
    assert_int_equal(r->integer, 0);
    freeReplyObject(r);
    redisFree(c);
}

static void test_password(void **state)
{
    (void)state;
    const char *extra[] = {"--requirepass", "s3cret", NULL};
    struct server *srv = server_start(extra);
    struct m_store *s = NULL;
    assert_int_equal(m_store_open(uri_for(":wrong@", srv->port), &s), EACCES);
    assert_null(s);
    assert_int_equal(m_store_open(uri_for("default:wrong@", srv->port), &s), EACCES);
    assert_int_equal(m_store_open(uri_for(NULL, srv->port), &s), EACCES); /* NOAUTH */
    assert_int_equal(m_store_open(uri_for("nobody:s3cret@", srv->port), &s), EACCES);

    assert_int_equal(m_store_open(uri_for("default:s3cret@", srv->port), &s), 0);
    /* The password never appears in the description (it goes to logs). */
    assert_null(strstr(m_store_describe(s), "s3cret"));
    struct m_store_queue *q = NULL;
    assert_int_equal(m_store_queue_new(s, 4, &q), 0);
    uint64_t slot;
    assert_int_equal(m_store_slot_alloc(s, &slot), 0);
    void *buf = rec_new();
    int res;
    rec_fill(buf, slot, 3);
    rw_all(q, M_STORE_WRITE, &slot, &buf, 1, &res);
    assert_int_equal(res, 0);
    read_check(q, &slot, &buf, 1, 3);
    free(buf);
    m_store_queue_free(q);
    m_store_close(s);
    assert_int_equal(server_int(srv->port, "s3cret", "DBSIZE"), 0);

    /* The short form, password only. */
    assert_int_equal(m_store_open(uri_for(":s3cret@", srv->port), &s), 0);
    m_store_close(s);
    server_kill(srv);
}

static void test_not_listening(void **state)
{
    (void)state;
    struct m_store *s = NULL;
    assert_int_equal(m_store_open(uri_for(NULL, free_port()), &s), ECONNREFUSED);
    assert_null(s);
}

/* The server dies while the store is in use, and the store is told not to
 * retry (retry_timeout=0): I/Os in flight fail with ECONNRESET, the next
 * one cannot reconnect (ECONNREFUSED). */
static void test_server_dies(void **state)
{
    (void)state;
    struct server *srv = server_start(NULL);
    struct m_store *s = NULL;
    char uri[128];
    snprintf(uri, sizeof uri, "redis://127.0.0.1:%d?retry_timeout=0", srv->port);
    assert_int_equal(m_store_open(uri, &s), 0);
    struct m_store_queue *q = NULL;
    assert_int_equal(m_store_queue_new(s, 16, &q), 0);
    uint64_t slots[16];
    void *bufs[16];
    int res[16];
    for (int i = 0; i < 16; i++) {
        assert_int_equal(m_store_slot_alloc(s, &slots[i]), 0);
        bufs[i] = rec_new();
        rec_fill(bufs[i], slots[i], 0);
    }
    rw_all(q, M_STORE_WRITE, slots, bufs, 16, res);
    for (int i = 0; i < 16; i++)
        assert_int_equal(res[i], 0);
    kill(srv->pid, SIGKILL);
    waitpid(srv->pid, NULL, 0);
    srv->pid = 0;

    struct m_store_io ios[16], *p[16], *done[16];
    for (int i = 0; i < 16; i++) {
        ios[i] = (struct m_store_io){.op = M_STORE_READ, .slot = slots[i], .buf = bufs[i]};
        p[i] = &ios[i];
    }
    int rc = m_store_submit(q, p, 16);
    assert_int_equal(rc, 0);
    size_t nd = 0;
    assert_int_equal(m_store_reap(q, done, 16, 16, &nd), 0);
    assert_int_equal(nd, 16);
    for (int i = 0; i < 16; i++)
        assert_int_equal(ios[i].result, ECONNRESET);
    assert_int_equal(m_store_submit(q, p, 1), 0);
    assert_int_equal(m_store_reap(q, done, 1, 1, &nd), 0);
    assert_int_equal(nd, 1);
    assert_int_equal(ios[0].result, ECONNREFUSED);
    for (int i = 0; i < 16; i++)
        free(bufs[i]);
    m_store_queue_free(q);
    m_store_close(s); /* logs that the keys could not be removed */
    server_kill(srv);
}

/* A stopped server (SIGSTOP: it still accepts connections, but never
 * answers) gives ETIMEDOUT at open and, without retries, on I/Os after the
 * URI's timeout.
 * Once it runs again, another queue's next batch first fences the failed
 * connection (CLIENT KILL), so the write that timed out cannot land after
 * a newer one; the failed queue reconnects at its next submit. */
static void test_timeout_and_fence(void **state)
{
    (void)state;
    struct server *srv = server_start(NULL);
    char uri[160];
    snprintf(uri, sizeof uri,
             "redis://127.0.0.1:%d?timeout=300&connect_timeout=300&retry_timeout=0", srv->port);
    struct m_store *s = NULL;
    struct m_store_queue *qa = NULL, *qb = NULL;
    uint64_t slot;
    void *buf = NULL;
    int res;
    open_with_record(uri, &s, &qa, &slot, &buf);
    assert_int_equal(m_store_queue_new(s, 4, &qb), 0);

    assert_int_equal(kill(srv->pid, SIGSTOP), 0);
    struct m_store *s2 = NULL;
    assert_int_equal(m_store_open(uri, &s2), ETIMEDOUT);
    rec_fill(buf, slot, 2);
    rw_all(qa, M_STORE_WRITE, &slot, &buf, 1, &res);
    assert_int_equal(res, ETIMEDOUT);
    assert_int_equal(kill(srv->pid, SIGCONT), 0);

    rec_fill(buf, slot, 3);
    rw_all(qb, M_STORE_WRITE, &slot, &buf, 1, &res);
    assert_int_equal(res, 0);
    struct m_store_redis_stats rst;
    assert_int_equal(m_store_redis_stats(s, &rst), 0);
    assert_true(rst.fences >= 1);
    read_check(qa, &slot, &buf, 1, 3);
    struct m_store_stats st;
    m_store_stats(s, &st);
    assert_int_equal(st.errors, 1);

    free(buf);
    m_store_queue_free(qa);
    m_store_queue_free(qb);
    m_store_close(s);
    char pattern[64];
    snprintf(pattern, sizeof pattern, "%s*", rst.prefix);
    assert_int_equal(server_count(srv->port, pattern), 0);
    /* The open that timed out may have left its liveness key (its SET ran
     * when the server resumed); that key expires by itself. */
    assert_true(server_count(srv->port, "*") == server_count(srv->port, "moat:*:alive"));
    server_kill(srv);
}

/* A server that stops answering for a while (SIGSTOP, then SIGCONT from a
 * child process a second later): an I/O with retries waits, retries with
 * backoff on new connections, and succeeds once the server answers again.
 * With a retry_timeout shorter than the pause it gives up with ETIMEDOUT
 * (and a log line naming the server, the key and the slot). */
static void test_retry_until_back(void **state)
{
    (void)state;
    struct server *srv = server_start(NULL);
    char uri[200];
    snprintf(uri, sizeof uri, "redis://127.0.0.1:%d?timeout=200&connect_timeout=200", srv->port);
    struct m_store *s = NULL;
    struct m_store_queue *q = NULL;
    uint64_t slot;
    void *buf = NULL;
    int res;
    open_with_record(uri, &s, &q, &slot, &buf);

    assert_int_equal(kill(srv->pid, SIGSTOP), 0);
    pid_t waker = fork();
    assert_true(waker >= 0);
    if (waker == 0) {
        sleep(1);
        kill(srv->pid, SIGCONT);
        _exit(0);
    }
    rec_fill(buf, slot, 2);
    rw_all(q, M_STORE_WRITE, &slot, &buf, 1, &res);
    assert_int_equal(res, 0);
    waitpid(waker, NULL, 0);
    struct m_store_redis_stats rst;
    assert_int_equal(m_store_redis_stats(s, &rst), 0);
    printf("a 1 s pause of the server: the write succeeded after %llu retries\n",
           (unsigned long long)rst.retries);
    assert_true(rst.retries >= 1);
    assert_int_equal(rst.timeouts, 0);
    read_check(q, &slot, &buf, 1, 2);
    m_store_queue_free(q);
    m_store_close(s);

    /* Retrying for less than the pause: ETIMEDOUT, counted. */
    snprintf(uri, sizeof uri,
             "redis://127.0.0.1:%d?timeout=200&connect_timeout=200&retry_timeout=500", srv->port);
    assert_int_equal(m_store_open(uri, &s), 0);
    assert_int_equal(m_store_queue_new(s, 4, &q), 0);
    assert_int_equal(m_store_slot_alloc(s, &slot), 0);
    assert_int_equal(kill(srv->pid, SIGSTOP), 0);
    rw_all(q, M_STORE_WRITE, &slot, &buf, 1, &res);
    assert_int_equal(kill(srv->pid, SIGCONT), 0);
    assert_int_equal(res, ETIMEDOUT);
    assert_int_equal(m_store_redis_stats(s, &rst), 0);
    assert_int_equal(rst.timeouts, 1);
    assert_true(rst.retries >= 1);
    free(buf);
    m_store_queue_free(q);
    m_store_close(s);
    server_kill(srv);
}

/* Writes of n fresh records; every result must be `want`. */
static void write_expect(struct m_store *s, struct m_store_queue *q, uint64_t *slots, void **bufs,
                         size_t n, uint64_t gen, int want)
{
    int *res = calloc(n, sizeof *res);
    assert_non_null(res);
    for (size_t i = 0; i < n; i++) {
        if (!bufs[i]) {
            assert_int_equal(m_store_slot_alloc(s, &slots[i]), 0);
            bufs[i] = rec_new();
        }
        rec_fill(bufs[i], slots[i], gen);
    }
    rw_all(q, M_STORE_WRITE, slots, bufs, n, res);
    for (size_t i = 0; i < n; i++)
        if (res[i] != want)
            fail_msg("write %zu of %zu: %d (%s), expected %d", i, n, res[i], strerror(res[i]),
                     want);
    free(res);
}

/* Whether INFO replication of the server at port contains needle. */
static bool info_has(int port, const char *needle)
{
    char *info = server_str(port, "INFO replication");
    bool has = info && strstr(info, needle);
    free(info);
    return has;
}

/*
 * replicas=1 on one server: a primary with a replica attached (REPLICAOF).
 * Without a replica the store refuses to open (EREMOTEIO: every eviction
 * would fail).  With one, writes are acknowledged only once the replica has
 * them (WAIT 1), and the replica holds every acknowledged record.  A
 * replica that stops answering makes WAIT time out: the writes fail with
 * EREMOTEIO (their pages would stay resident), never silently; once it
 * answers again writes succeed.  A replica that is gone makes the writes
 * fail at once with EREMOTEIO.  Every acknowledged record reads back.
 */
static void test_replicas_wait(void **state)
{
    (void)state;
    const char *pextra[] = {"--repl-diskless-sync-delay", "0", NULL};
    struct server *prim = server_start(pextra);
    char uri[200];
    /* WAIT's timeout is generous: a replica on a loaded machine (tests run
     * in parallel, under sanitizers) may take a while to acknowledge. */
    snprintf(uri, sizeof uri, "redis://127.0.0.1:%d?replicas=1&wait_timeout=2000&timeout=5000",
             prim->port);
    struct m_store *s = NULL;
    assert_int_equal(m_store_open(uri, &s), EREMOTEIO);
    assert_null(s);

    char pport[16];
    snprintf(pport, sizeof pport, "%d", prim->port);
    const char *rextra[] = {"--replicaof", "127.0.0.1", pport, NULL};
    struct server *rep = server_start(rextra);
    for (int i = 0; i < 600 && !info_has(prim->port, "state=online"); i++)
        usleep(50000);
    assert_true(info_has(prim->port, "state=online"));

    assert_int_equal(m_store_open(uri, &s), 0);
    struct m_store_queue *q = NULL;
    assert_int_equal(m_store_queue_new(s, 64, &q), 0);
    enum { N = 32, M = 8 };
    uint64_t slots[N], more[M];
    void *bufs[N] = {NULL}, *mbufs[M] = {NULL};
    write_expect(s, q, slots, bufs, N, 1, 0);
    struct m_store_redis_stats rst;
    assert_int_equal(m_store_redis_stats(s, &rst), 0);
    assert_int_equal(rst.replicas, 1);
    assert_int_equal(rst.wait_failures, 0);
    char pattern[64];
    snprintf(pattern, sizeof pattern, "%s[0-9]*", rst.prefix);
    assert_int_equal(server_count(rep->port, pattern), N); /* WAIT 1: the replica has them */

    /* The replica stops answering: WAIT times out, the writes fail. */
    assert_int_equal(kill(rep->pid, SIGSTOP), 0);
    write_expect(s, q, more, mbufs, M, 2, EREMOTEIO);
    assert_int_equal(m_store_redis_stats(s, &rst), 0);
    assert_true(rst.wait_failures >= 1);
    assert_int_equal(kill(rep->pid, SIGCONT), 0);
    /* It answers again: once it has caught up, writes succeed. */
    int tries = 0;
    for (;; tries++) {
        int res[M];
        for (size_t i = 0; i < M; i++)
            rec_fill(mbufs[i], more[i], 3);
        rw_all(q, M_STORE_WRITE, more, mbufs, M, res);
        bool ok = true;
        for (size_t i = 0; i < M; i++)
            ok &= res[i] == 0;
        if (ok)
            break;
        assert_true(tries < 50);
        usleep(100000);
    }
    printf("replica resumed: writes acknowledged again after %d failed batches\n", tries);

    /* The replica is gone: once the primary has noticed, writes fail at
     * once with EREMOTEIO. */
    server_kill(rep);
    for (int i = 0; i < 600 && !info_has(prim->port, "connected_slaves:0"); i++)
        usleep(50000);
    assert_true(info_has(prim->port, "connected_slaves:0"));
    write_expect(s, q, more, mbufs, M, 4, EREMOTEIO);
    write_expect(s, q, more, mbufs, M, 5, EREMOTEIO);

    read_check(q, slots, bufs, N, 1);
    for (size_t i = 0; i < N; i++)
        free(bufs[i]);
    for (size_t i = 0; i < M; i++)
        free(mbufs[i]);
    m_store_queue_free(q);
    m_store_close(s);
    server_kill(prim);
}

/* maxmemory reached: writes fail with ENOSPC, every acknowledged record
 * still reads back, and freeing slots makes room again. */
static void test_maxmemory(void **state)
{
    (void)state;
    const char *extra[] = {"--maxmemory", "2mb", "--maxmemory-policy", "noeviction", NULL};
    struct server *srv = server_start(extra);
    struct m_store *s = NULL;
    assert_int_equal(m_store_open(uri_for(NULL, srv->port), &s), 0);
    struct m_store_queue *q = NULL;
    assert_int_equal(m_store_queue_new(s, 8, &q), 0);

    enum { MAXN = 4096 };
    uint64_t *slots = calloc(MAXN, sizeof *slots);
    void **bufs = calloc(MAXN, sizeof *bufs);
    size_t n = 0, acked = 0;
    bool full = false;
    while (!full && n + 8 <= MAXN) {
        int res[8];
        for (size_t i = n; i < n + 8; i++) {
            assert_int_equal(m_store_slot_alloc(s, &slots[i]), 0);
            bufs[i] = rec_new();
            rec_fill(bufs[i], slots[i], 5);
        }
        rw_all(q, M_STORE_WRITE, slots + n, bufs + n, 8, res);
        for (size_t i = 0; i < 8; i++) {
            if (res[i] == 0) {
                assert_false(full); /* in order: nothing succeeds after the first ENOSPC */
                acked++;
            } else {
                assert_int_equal(res[i], ENOSPC);
                full = true;
            }
        }
        n += 8;
    }
    assert_true(full);
    printf("maxmemory 2mb: %zu records acknowledged before ENOSPC\n", acked);
    assert_true(acked > 0);
    int *res = calloc(n, sizeof *res);
    read_check(q, slots, bufs, acked, 5);
    /* The refused ones were never stored. */
    rw_all(q, M_STORE_READ, slots + acked, bufs + acked, 1, res);
    assert_int_equal(res[0], EIO);

    /* Free all the records but the last: their DELs go with the next
     * batch, and then a write fits again.  The server gives back the memory
     * of its query and reply buffers only in its periodic clean-up (10 times
     * a second), so the write is retried for up to 5 s. */
    for (size_t i = 0; i + 1 < acked; i++)
        m_store_slot_free(s, slots[i]);
    rw_all(q, M_STORE_READ, slots + acked - 1, bufs + acked - 1, 1, res); /* carries DELs */
    assert_int_equal(res[0], 0);
    uint64_t slot;
    assert_int_equal(m_store_slot_alloc(s, &slot), 0);
    assert_int_equal(slot, slots[0]);
    rec_fill(bufs[0], slot, 6);
    int tries = 0;
    do {
        if (tries)
            usleep(100000);
        rw_all(q, M_STORE_WRITE, &slot, bufs, 1, res);
    } while (res[0] == ENOSPC && ++tries < 50);
    printf("write after freeing: %s after %d retries\n", strerror(res[0]), tries);
    assert_int_equal(res[0], 0);
    memset(bufs[0], 0, M_STORE_RECORD);
    rw_all(q, M_STORE_READ, &slot, bufs, 1, res);
    assert_int_equal(res[0], 0);
    assert_true(rec_check(bufs[0], slot, 6));

    for (size_t i = 0; i < n; i++)
        free(bufs[i]);
    free(bufs);
    free(slots);
    free(res);
    m_store_queue_free(q);
    m_store_close(s);
    assert_int_equal(server_int(srv->port, NULL, "DBSIZE"), 0);
    server_kill(srv);
}

static void test_bad_uris(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "redis://127.0.0.1",                           /* no port */
        "redis://127.0.0.1:",                          /* empty port */
        "redis://:6379",                               /* no host */
        "redis://",                                    /* nothing */
        "redis:",                                      /* nothing at all */
        "redis:127.0.0.1:6379",                        /* no // */
        "redis://127.0.0.1:0",                         /* port 0 */
        "redis://127.0.0.1:65536",                     /* port too large */
        "redis://127.0.0.1:63x9",                      /* garbage port */
        "redis://127.0.0.1:6379/db",                   /* garbage database */
        "redis://127.0.0.1:6379/-1",                   /* negative database */
        "redis://user@127.0.0.1:1",                    /* credentials without ':' */
        "redis://a b:6379",                            /* space in host */
        "redis://127.0.0.1:6379?x=1",                  /* unknown option */
        "redis://127.0.0.1:6379?timeout=0",            /* zero timeout */
        "redis://127.0.0.1:6379?timeout",              /* option without value */
        "redis://127.0.0.1:6379/1?connect_timeout=1s", /* not milliseconds */
        "rediss://127.0.0.1:6379",                     /* TLS: unknown scheme */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct m_store *s = (struct m_store *)&s;
        int rc = m_store_open(bad[i], &s);
        if (rc != EINVAL)
            fail_msg("\"%s\": %d (%s), expected EINVAL", bad[i], rc, strerror(rc));
        assert_null(s);
    }
}

int main(void)
{
    struct m_store *probe = NULL;
    if (m_store_open("redis://127.0.0.1:1", &probe) == EINVAL) {
        fprintf(stderr, "SKIP: this moat was built without the redis backend (libhiredis-dev); "
                        "the redis store was NOT tested\n");
        return 77;
    }
    if (!have_redis_server()) {
        fprintf(stderr, "SKIP: redis-server is not installed (Debian: apt-get install "
                        "redis-server); the redis store was NOT tested\n");
        return 77;
    }
    signal(SIGPIPE, SIG_DFL); /* the store must not die of SIGPIPE by itself */
    atexit(servers_kill_all);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_uris),          cmocka_unit_test(test_not_listening),
        cmocka_unit_test(test_roundtrip_batches), cmocka_unit_test(test_slot_reuse),
        cmocka_unit_test(test_missing_key_eio),   cmocka_unit_test(test_close_removes_keys),
        cmocka_unit_test(test_select_db),         cmocka_unit_test(test_password),
        cmocka_unit_test(test_server_dies),       cmocka_unit_test(test_timeout_and_fence),
        cmocka_unit_test(test_maxmemory),         cmocka_unit_test(test_retry_until_back),
        cmocka_unit_test(test_replicas_wait),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    servers_kill_all();
    return failed ? 1 : 0;
}

#else
#include <stdio.h>
int main(void)
{
    fprintf(stderr, "SKIP: hiredis headers are missing (Debian: libhiredis-dev); the redis store "
                    "was NOT tested\n");
    return 77;
}
#endif
