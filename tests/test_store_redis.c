/*
 * test_store_redis.c - the redis store against real redis-server processes
 * on loopback: record round trips in batches (one round trip a batch), the
 * non-blocking reap, slot reuse and the DELs of freed slots, a missing key,
 * removal of the instance's keys at close, passwords, a server that is not
 * there, a server that dies, maxmemory, and malformed URIs.
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

/* ---------------------------------------------------------------------------
 * Records
 * ------------------------------------------------------------------------- */

static void *rec_new(void)
{
    void *p = NULL;
    assert_int_equal(posix_memalign(&p, M_STORE_ALIGN, M_STORE_RECORD), 0);
    return p;
}

static void rec_fill(void *buf, uint64_t slot, uint64_t gen)
{
    uint64_t x = (slot + 1) * 0x9e3779b97f4a7c15ull ^ (gen + 1) * 0xbf58476d1ce4e5b9ull;
    uint64_t *w = buf;
    for (size_t i = 0; i < M_STORE_RECORD / 8; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        w[i] = x;
    }
}

static bool rec_check(const void *buf, uint64_t slot, uint64_t gen)
{
    uint64_t want[M_STORE_RECORD / 8];
    rec_fill(want, slot, gen);
    return memcmp(buf, want, M_STORE_RECORD) == 0;
}

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
    memset(bufs[2], 0, M_STORE_RECORD);
    rw_all(q, M_STORE_READ, &two, &bufs[2], 1, res);
    assert_int_equal(res[0], 0);
    assert_true(rec_check(bufs[2], 2, 9));

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
    memset(buf, 0, M_STORE_RECORD);
    rw_all(q, M_STORE_READ, &slot, &buf, 1, &res);
    assert_int_equal(res, 0);
    assert_true(rec_check(buf, slot, 3));
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

/* The server dies while the store is in use: I/Os in flight fail with
 * ECONNRESET, the next submit cannot reconnect (ECONNREFUSED). */
static void test_server_dies(void **state)
{
    (void)state;
    struct server *srv = server_start(NULL);
    struct m_store *s = NULL;
    assert_int_equal(m_store_open(uri_for(NULL, srv->port), &s), 0);
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
    assert_int_equal(m_store_submit(q, p, 1), ECONNREFUSED);
    for (int i = 0; i < 16; i++)
        free(bufs[i]);
    m_store_queue_free(q);
    m_store_close(s); /* logs that the keys could not be removed */
    server_kill(srv);
}

/* A stopped server (SIGSTOP: it still accepts connections, but never
 * answers) gives ETIMEDOUT at open and on I/Os, after the URI's timeout.
 * Once it runs again, another queue's next batch first fences the failed
 * connection (CLIENT KILL), so the write that timed out cannot land after
 * a newer one; the failed queue reconnects at its next submit. */
static void test_timeout_and_fence(void **state)
{
    (void)state;
    struct server *srv = server_start(NULL);
    char uri[160];
    snprintf(uri, sizeof uri, "redis://127.0.0.1:%d?timeout=300&connect_timeout=300", srv->port);
    struct m_store *s = NULL;
    assert_int_equal(m_store_open(uri, &s), 0);
    struct m_store_queue *qa = NULL, *qb = NULL;
    assert_int_equal(m_store_queue_new(s, 4, &qa), 0);
    assert_int_equal(m_store_queue_new(s, 4, &qb), 0);
    uint64_t slot;
    assert_int_equal(m_store_slot_alloc(s, &slot), 0);
    void *buf = rec_new();
    int res;
    rec_fill(buf, slot, 1);
    rw_all(qa, M_STORE_WRITE, &slot, &buf, 1, &res);
    assert_int_equal(res, 0);

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
    memset(buf, 0, M_STORE_RECORD);
    rw_all(qa, M_STORE_READ, &slot, &buf, 1, &res); /* qa reconnects */
    assert_int_equal(res, 0);
    assert_true(rec_check(buf, slot, 3));
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

/* maxmemory reached: writes fail with ENOSPC, every acknowledged record
 * still reads back, and freeing slots makes room again. */
static void test_maxmemory(void **state)
{
    (void)state;
    const char *extra[] = {"--maxmemory", "1mb", "--maxmemory-policy", "noeviction", NULL};
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
    printf("maxmemory 1mb: %zu records acknowledged before ENOSPC\n", acked);
    assert_true(acked > 0);
    int *res = calloc(n, sizeof *res);
    for (size_t i = 0; i < n; i++)
        memset(bufs[i], 0, M_STORE_RECORD);
    rw_all(q, M_STORE_READ, slots, bufs, acked, res);
    for (size_t i = 0; i < acked; i++) {
        assert_int_equal(res[i], 0);
        assert_true(rec_check(bufs[i], slots[i], 5));
    }
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
        cmocka_unit_test(test_maxmemory),
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
