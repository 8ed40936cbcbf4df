/*
 * redis.c - the redis backend: sealed records kept as string values in one
 * redis server, "redis://[user:password@]host:port[/db][?options]".
 * Options: timeout=MS (command timeout, default 10000) and
 * connect_timeout=MS (default 2000).
 *
 * Keys.  Every moat instance draws a random 64-bit id at open; slot n lives
 * under "moat:{ID}:n" (ID in hex) and the instance's liveness under
 * "moat:{ID}:alive", a key that expires (EX 30) unless refreshed, at most
 * once every 10 s, by the next submit.  So several programs share one server
 * safely, and keys left by an instance that died can be told from those of a
 * live one.  At close the instance removes its keys (SCAN MATCH + UNLINK).
 * The value of a slot is the whole record, M_STORE_RECORD bytes, already
 * sealed by the caller: nothing else ever reaches the server.
 *
 * Batching.  Each queue owns one connection (a blocking redisContext with
 * connect and command timeouts).  submit() appends a SET or GET per I/O to
 * the connection's output buffer (redisAppendCommand, binary-safe %b) and
 * writes the whole pipeline at once; reap() takes the replies in order with
 * redisGetReply (blocking) or, when it must not wait, only those that have
 * already arrived (poll, redisBufferRead, redisGetReplyFromReader).  A batch
 * of N records thus costs one round trip; the stats count round trips, I/Os
 * and their ratio, the batching factor.
 *
 * Freed slots.  slot_free() only queues the slot; the next submit on any
 * queue pipelines a DEL for it with its own commands, and the slot returns to
 * the free bitmap when that DEL is acknowledged, so a reused slot can never
 * be hit by a late DEL of its previous life.  If no slot is free but some
 * are still waiting for their DEL, slot_alloc takes one of those and cancels
 * its DEL (the old value stays until the new owner's SET replaces it).
 * Slots are reused lowest first from the bitmap, as in the file backend.
 *
 * Errors, each distinct and logged once per kind with the server's name:
 *   ECONNREFUSED  nothing listens at host:port
 *   ETIMEDOUT     connect or command timeout
 *   ECONNRESET    the server closed the connection
 *   EACCES        authentication refused (WRONGPASS, NOAUTH, NOPERM)
 *   ENOSPC        "OOM command not allowed" (maxmemory reached)
 *   EIO           anything else, and a GET of a missing key (never zeros)
 *   EINVAL        a malformed URI (at open)
 * A connection that failed fails every I/O in flight on it with that errno
 * and is reconnected at the queue's next submit.  A failed write leaves the
 * caller's page resident (see store.h); nothing acknowledged is lost.
 * Writes to the socket are made with SIGPIPE blocked, so a server that goes
 * away is an error, not the death of the program.
 *
 * Fencing.  A connection that timed out may still have commands in the
 * server's socket buffer, which a stopped or slow server executes later: a
 * stale SET (or DEL) could then land after a newer write of the same slot
 * made on another connection.  So every connection's CLIENT ID is taken at
 * connect, the ids of failed connections are kept (the last 64), and each
 * queue puts "CLIENT KILL ID old" in front of its next pipeline for every
 * failed connection it has not fenced yet.  Commands on one connection run
 * in order, so by the time that queue's writes run the old connection is
 * either gone with its unread commands, or finished.
 *
 * Liveness.  Submits refresh the liveness key as a side effect; a thread
 * of the store refreshes it when no submit has for 10 s, so an idle
 * instance never looks dead to `moat store gc`.
 *
 * Redis Cluster is cluster.c, which shares this file's error mapping.  Not
 * done here: replicas (WAIT) and retries, which only the cluster backend
 * has (see docs/redis.md).
 */
#include "store/redis.h"
#include "store/store.h"

#include "common/log.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#define REDIS_CONNECT_TIMEOUT_MS 2000
#define REDIS_COMMAND_TIMEOUT_MS 10000
#define REDIS_ALIVE_TTL_S        30
#define REDIS_ALIVE_REFRESH_S    10
/* DELs of freed slots carried by one submit. */
#define REDIS_DEL_BATCH 256u
/* Keys asked per SCAN and removed per UNLINK at close. */
#define REDIS_SCAN_COUNT 1000
#define REDIS_KEY_MAX    64

/* REQ_DONE: its connection failed and it was accounted; only skipped. */
enum redis_kind { REQ_IO = 1, REQ_DEL = 2, REQ_ALIVE = 3, REQ_FENCE = 4, REQ_DONE = 5 };

/* Failed connections remembered for fencing (see "Fencing" above). */
#define REDIS_FENCE_MAX 64

/* One command in flight; replies come back in this order. */
struct redis_req {
    enum redis_kind kind;
    struct m_store_io *io; /* REQ_IO */
    uint64_t slot;         /* REQ_DEL */
};

struct redis_store {
    struct m_store base;
    char *host;
    int port;
    int db;
    char *user;      /* NULL = default user */
    char *pass;      /* NULL = no AUTH */
    char name[300];  /* "redis://host:port/db", no password: for logs */
    char prefix[32]; /* "moat:{ID}:" */
    int timeout_ms, connect_timeout_ms;
    redisContext *admin; /* open-time connection, reused at close; under lock */
    _Atomic unsigned nqueues;
    _Atomic uint64_t logged_errnos; /* bit e set once errno e < 64 was logged */
    _Atomic int64_t alive_at;       /* CLOCK_MONOTONIC seconds of the last refresh */
    pthread_t alive_thread;         /* see redis_alive_main */
    bool alive_started, alive_stop; /* alive_stop under alive_lock */
    pthread_mutex_t alive_lock;
    pthread_cond_t alive_cond;

    pthread_mutex_t lock; /* guards the fields down to `nfence` */
    uint64_t *map;        /* bit per slot: allocated, or its DEL in flight */
    size_t nwords;
    uint64_t hint;     /* no free slot below this */
    uint64_t next;     /* slots >= next were never allocated */
    uint64_t *pending; /* freed slots waiting for their DEL to be sent */
    size_t npending, cap_pending;
    uint64_t used;                        /* allocated slots (not counting DELs in flight) */
    long long fence_ids[REDIS_FENCE_MAX]; /* CLIENT IDs of failed connections, a ring */
    uint64_t nfence;                      /* ids ever added */

    _Atomic uint64_t reads, writes, bytes_read, bytes_written, errors;
    _Atomic uint64_t round_trips, dels, bytes_sent, bytes_received, fences;
};

struct redis_queue {
    struct m_store_queue base;
    redisContext *c;        /* NULL after a failure: reconnected at the next submit */
    long long client_id;    /* c's CLIENT ID (0 = unknown) */
    uint64_t fenced;        /* store's failed connections this queue has fenced */
    struct redis_req *reqs; /* FIFO ring of commands in flight */
    size_t cap, head, count;
    unsigned nio; /* I/Os (not DELs) in flight */
};

static inline struct redis_store *redis_of(struct m_store *s)
{
    return (struct redis_store *)s;
}
static inline struct redis_queue *queue_of(struct m_store_queue *q)
{
    return (struct redis_queue *)q;
}

static int64_t redis_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec;
}

static struct timeval redis_tv(int ms)
{
    return (struct timeval){.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
}

/* Log the first failure of each errno; later ones only count. */
static void redis_log_once(struct redis_store *rs, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void redis_log_once(struct redis_store *rs, int err, const char *fmt, ...)
{
    uint64_t bit = err > 0 && err < 64 ? 1ull << err : 1ull;
    if (atomic_fetch_or_explicit(&rs->logged_errnos, bit, memory_order_relaxed) & bit)
        return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    m_warn("store", "%s: %s (further %s errors are counted, not logged)", rs->name, msg,
           strerror(err));
}

/* hiredis writes with write(2): to a server that went away that raises
 * SIGPIPE, which would kill the program.  Writes are made with SIGPIPE
 * blocked in the calling thread, and a SIGPIPE they raised is taken before
 * unblocking (EPIPE tells the story). */
struct redis_nopipe {
    sigset_t old;
    bool blocked; /* SIGPIPE was unblocked before, we blocked it */
};

static void redis_nopipe_begin(struct redis_nopipe *np)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    np->blocked =
        pthread_sigmask(SIG_BLOCK, &set, &np->old) == 0 && !sigismember(&np->old, SIGPIPE);
}

static void redis_nopipe_end(struct redis_nopipe *np)
{
    if (!np->blocked)
        return;
    sigset_t set, pending;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    if (sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE)) {
        const struct timespec zero = {0, 0};
        (void)sigtimedwait(&set, NULL, &zero);
    }
    pthread_sigmask(SIG_SETMASK, &np->old, NULL);
}

/* ---------------------------------------------------------------------------
 * Error mapping
 * ------------------------------------------------------------------------- */

/* The errno for a failed context.  hiredis keeps only the message, so the
 * message is matched against the errno texts it was made from. */
static int redis_ctx_errno(const redisContext *c)
{
    if (!c)
        return ENOMEM;
    if (c->err == REDIS_ERR_EOF)
        return ECONNRESET;
    if (c->err == REDIS_ERR_OOM)
        return ENOMEM;
    if (c->err == REDIS_ERR_IO) {
        static const int known[] = {ECONNREFUSED, ETIMEDOUT,   EAGAIN, EINPROGRESS,  ECONNRESET,
                                    EHOSTUNREACH, ENETUNREACH, EPIPE,  ECONNABORTED, EADDRNOTAVAIL};
        for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
            if (strstr(c->errstr, strerror(known[i]))) {
                int e = known[i];
                /* A blocking read that hit SO_RCVTIMEO says EAGAIN. */
                if (e == EAGAIN || e == EINPROGRESS)
                    return ETIMEDOUT;
                if (e == EPIPE || e == ECONNABORTED)
                    return ECONNRESET;
                return e;
            }
        }
        if (strstr(c->errstr, "timed out") || strstr(c->errstr, "Timeout"))
            return ETIMEDOUT;
    }
    if (c->err == REDIS_ERR_OTHER && strstr(c->errstr, "resolve"))
        return EHOSTUNREACH;
    return EIO;
}

/* The errno for an error reply. */
static int redis_reply_errno(const redisReply *r)
{
    if (strncmp(r->str, "OOM", 3) == 0)
        return ENOSPC;
    if (strncmp(r->str, "NOAUTH", 6) == 0 || strncmp(r->str, "WRONGPASS", 9) == 0 ||
        strncmp(r->str, "NOPERM", 6) == 0 || strstr(r->str, "invalid password"))
        return EACCES;
    return EIO;
}

static const char *redis_err_hint(int err)
{
    switch (err) {
    case ECONNREFUSED:
        return "nothing listens there; is redis-server running?";
    case ETIMEDOUT:
        return "the server did not answer in time";
    case ECONNRESET:
        return "the server closed the connection";
    case EACCES:
        return "check the user and password in the store URI";
    case ENOSPC:
        return "the server reached maxmemory; raise it or use another store";
    default:
        return "";
    }
}

/* ---------------------------------------------------------------------------
 * URI and connections
 * ------------------------------------------------------------------------- */

static int redis_bad_uri(const char *rest, const char *why)
{
    m_error("store", "store URI \"redis:%s\": %s (expected redis://[user:password@]host:port[/db])",
            rest, why);
    return EINVAL;
}

static int redis_parse_int(const char *s, size_t len, long lo, long hi, long *out)
{
    if (len == 0 || len > 10)
        return EINVAL;
    long v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return EINVAL;
        v = v * 10 + (s[i] - '0');
    }
    if (v < lo || v > hi)
        return EINVAL;
    *out = v;
    return 0;
}

/* Options after '?', "k=v&k=v":
 *   timeout=MS          command timeout (default 10000): a reply that takes
 *                       longer fails its I/Os with ETIMEDOUT
 *   connect_timeout=MS  connect timeout (default 2000) */
static int redis_parse_opts(struct redis_store *rs, const char *rest, const char *opts)
{
    while (*opts) {
        size_t len = strcspn(opts, "&");
        const char *eq = memchr(opts, '=', len);
        long v = 0;
        if (!eq || redis_parse_int(eq + 1, (size_t)(opts + len - eq - 1), 1, 3600000, &v)) {
            m_error("store",
                    "store URI \"redis:%s\": option \"%.*s\" must be name=milliseconds (1 to "
                    "3600000)",
                    rest, (int)len, opts);
            return EINVAL;
        }
        size_t klen = (size_t)(eq - opts);
        if (klen == 7 && strncmp(opts, "timeout", 7) == 0) {
            rs->timeout_ms = (int)v;
        } else if (klen == 15 && strncmp(opts, "connect_timeout", 15) == 0) {
            rs->connect_timeout_ms = (int)v;
        } else {
            m_error("store",
                    "store URI \"redis:%s\": unknown option \"%.*s\" (known: timeout, "
                    "connect_timeout)",
                    rest, (int)klen, opts);
            return EINVAL;
        }
        opts += len + (opts[len] == '&');
    }
    return 0;
}

/* Parse "//[user:password@]host:port[/db][?options]" into rs. */
static int redis_parse_uri(struct redis_store *rs, const char *rest)
{
    if (strncmp(rest, "//", 2) != 0)
        return redis_bad_uri(rest, "it must start with redis://");
    const char *p = rest + 2;
    const char *end = p + strcspn(p, "/?");
    const char *at = NULL;
    for (const char *q = p; q < end; q++)
        if (*q == '@')
            at = q; /* the last '@': a password may contain one */
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (!colon)
            return redis_bad_uri(rest, "credentials must be user:password@ (user may be empty)");
        if (colon > p && !(rs->user = strndup(p, (size_t)(colon - p))))
            return ENOMEM;
        if (!(rs->pass = strndup(colon + 1, (size_t)(at - colon - 1))))
            return ENOMEM;
        p = at + 1;
    }
    const char *colon = NULL;
    for (const char *q = p; q < end; q++)
        if (*q == ':')
            colon = q;
    if (!colon)
        return redis_bad_uri(rest, "the port is missing");
    if (colon == p)
        return redis_bad_uri(rest, "the host is missing");
    long port = 0;
    if (redis_parse_int(colon + 1, (size_t)(end - colon - 1), 1, 65535, &port))
        return redis_bad_uri(rest, "the port must be a number from 1 to 65535");
    rs->port = (int)port;
    const char *h = p;
    size_t hlen = (size_t)(colon - p);
    if (h[0] == '[' && hlen > 2 && h[hlen - 1] == ']') { /* [IPv6] */
        h++;
        hlen -= 2;
    }
    bool bracketed = h != p;
    for (size_t i = 0; i < hlen; i++)
        if ((unsigned char)h[i] <= ' ' || h[i] == '@' || h[i] == '[' || h[i] == ']' ||
            (h[i] == ':' && !bracketed))
            return redis_bad_uri(rest, "the host contains an invalid character");
    if (!(rs->host = strndup(h, hlen)))
        return ENOMEM;
    const char *opts = end;
    if (*end == '/') {
        const char *d = end + 1;
        size_t dlen = strcspn(d, "?");
        long db = 0;
        if (dlen && redis_parse_int(d, dlen, 0, INT_MAX, &db))
            return redis_bad_uri(rest, "the database after '/' must be a number");
        rs->db = (int)db;
        opts = d + dlen;
    }
    if (*opts == '?') {
        int rc = redis_parse_opts(rs, rest, opts + 1);
        if (rc)
            return rc;
    } else if (*opts) {
        return redis_bad_uri(rest, "unexpected text after host:port");
    }
    snprintf(rs->name, sizeof rs->name, "redis://%s:%d/%d", rs->host, rs->port, rs->db);
    return 0;
}

/* Run one command on c and check that it did not fail. */
static int redis_cmd_ok(struct redis_store *rs, redisContext *c, const char *what, const char *fmt,
                        ...)
{
    va_list ap;
    struct redis_nopipe np;
    redis_nopipe_begin(&np);
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    redis_nopipe_end(&np);
    if (!r) {
        int err = redis_ctx_errno(c);
        m_error("store", "%s: %s failed: %s (%s) %s", rs->name, what, c->errstr, strerror(err),
                redis_err_hint(err));
        return err;
    }
    int err = 0;
    if (r->type == REDIS_REPLY_ERROR) {
        err = redis_reply_errno(r);
        m_error("store", "%s: %s refused: %s (%s) %s", rs->name, what, r->str, strerror(err),
                redis_err_hint(err));
    }
    freeReplyObject(r);
    return err;
}

/* A new connection: connect, AUTH, SELECT, with timeouts set; its CLIENT
 * ID in *id if id is not NULL (0 if the server will not say). */
static int redis_connect(struct redis_store *rs, redisContext **out, long long *id)
{
    *out = NULL;
    redisContext *c = redisConnectWithTimeout(rs->host, rs->port, redis_tv(rs->connect_timeout_ms));
    if (!c || c->err) {
        int err = redis_ctx_errno(c);
        m_error("store", "cannot connect to redis at %s:%d: %s (%s) %s", rs->host, rs->port,
                c ? c->errstr : "out of memory", strerror(err), redis_err_hint(err));
        if (c)
            redisFree(c);
        return err;
    }
    if (redisSetTimeout(c, redis_tv(rs->timeout_ms)) != REDIS_OK)
        m_warn("store", "%s: cannot set the command timeout: %s", rs->name, c->errstr);
    int err = 0;
    if (rs->pass && rs->user)
        err = redis_cmd_ok(rs, c, "AUTH", "AUTH %s %s", rs->user, rs->pass);
    else if (rs->pass)
        err = redis_cmd_ok(rs, c, "AUTH", "AUTH %s", rs->pass);
    if (!err && rs->db)
        err = redis_cmd_ok(rs, c, "SELECT", "SELECT %d", rs->db);
    if (err) {
        redisFree(c);
        return err;
    }
    if (id) {
        struct redis_nopipe np;
        redis_nopipe_begin(&np);
        redisReply *r = redisCommand(c, "CLIENT ID");
        redis_nopipe_end(&np);
        if (!r) {
            err = redis_ctx_errno(c);
            m_error("store", "%s: CLIENT ID failed: %s (%s)", rs->name, c->errstr, strerror(err));
            redisFree(c);
            return err;
        }
        *id = r->type == REDIS_REPLY_INTEGER ? r->integer : 0;
        freeReplyObject(r);
    }
    *out = c;
    return 0;
}

/* ---------------------------------------------------------------------------
 * Slots
 * ------------------------------------------------------------------------- */

static int redis_map_grow(struct redis_store *rs, uint64_t slot)
{
    if (slot / 64 < rs->nwords)
        return 0;
    size_t nwords = rs->nwords ? rs->nwords : 64;
    while (nwords <= slot / 64)
        nwords *= 2;
    uint64_t *map = realloc(rs->map, nwords * sizeof *map);
    if (!map)
        return ENOMEM;
    memset(map + rs->nwords, 0, (nwords - rs->nwords) * sizeof *map);
    rs->map = map;
    rs->nwords = nwords;
    return 0;
}

static int redis_slot_alloc(struct m_store *s, uint64_t *slot)
{
    struct redis_store *rs = redis_of(s);
    pthread_mutex_lock(&rs->lock);
    uint64_t n = UINT64_MAX;
    for (uint64_t w = rs->hint / 64; w < (rs->next + 63) / 64; w++) {
        uint64_t bits = ~rs->map[w];
        if (w == rs->hint / 64)
            bits &= ~0ull << (rs->hint % 64);
        if (bits) {
            uint64_t cand = w * 64 + (uint64_t)__builtin_ctzll(bits);
            if (cand < rs->next)
                n = cand;
            break;
        }
    }
    if (n == UINT64_MAX && rs->npending) {
        n = rs->pending[--rs->npending]; /* still marked in map: cancel its DEL */
    } else if (n == UINT64_MAX) {
        rs->hint = rs->next;
        n = rs->next;
        int rc = redis_map_grow(rs, n);
        if (rc) {
            pthread_mutex_unlock(&rs->lock);
            return rc;
        }
        rs->next++;
        rs->map[n / 64] |= 1ull << (n % 64);
    } else {
        rs->map[n / 64] |= 1ull << (n % 64);
        rs->hint = n + 1;
    }
    rs->used++;
    pthread_mutex_unlock(&rs->lock);
    *slot = n;
    return 0;
}

/* Queue slot for a DEL.  Under rs->lock.  Without memory the slot stays
 * marked in the map, never reused: its key goes at close. */
static void redis_pending_push(struct redis_store *rs, uint64_t slot)
{
    if (rs->npending == rs->cap_pending) {
        size_t cap = rs->cap_pending ? rs->cap_pending * 2 : 256;
        uint64_t *p = realloc(rs->pending, cap * sizeof *p);
        if (!p) {
            m_warn("store", "%s: out of memory queueing the DEL of slot %llu; it stays in use",
                   rs->name, (unsigned long long)slot);
            return;
        }
        rs->pending = p;
        rs->cap_pending = cap;
    }
    rs->pending[rs->npending++] = slot;
}

static void redis_slot_free(struct m_store *s, uint64_t slot)
{
    struct redis_store *rs = redis_of(s);
    pthread_mutex_lock(&rs->lock);
    if (slot >= rs->next || !(rs->map[slot / 64] >> (slot % 64) & 1)) {
        pthread_mutex_unlock(&rs->lock);
        m_error("store", "%s: slot %llu freed but not allocated (double free?)", rs->name,
                (unsigned long long)slot);
        return;
    }
    /* The slot stays set in the map until its DEL is acknowledged. */
    redis_pending_push(rs, slot);
    rs->used--;
    pthread_mutex_unlock(&rs->lock);
}

/* A DEL was acknowledged (or the slot was found gone): the slot is free. */
static void redis_slot_release(struct redis_store *rs, uint64_t slot)
{
    pthread_mutex_lock(&rs->lock);
    rs->map[slot / 64] &= ~(1ull << (slot % 64));
    if (slot < rs->hint)
        rs->hint = slot;
    pthread_mutex_unlock(&rs->lock);
}

/* A DEL did not happen: queue it again. */
static void redis_slot_requeue(struct redis_store *rs, uint64_t slot)
{
    pthread_mutex_lock(&rs->lock);
    redis_pending_push(rs, slot);
    pthread_mutex_unlock(&rs->lock);
}

/* ---------------------------------------------------------------------------
 * Open and close
 * ------------------------------------------------------------------------- */

static void redis_key(const struct redis_store *rs, uint64_t slot, char *key, size_t *len)
{
    int n = snprintf(key, REDIS_KEY_MAX, "%s%llu", rs->prefix, (unsigned long long)slot);
    *len = (size_t)n;
}

static void redis_destroy(struct redis_store *rs)
{
    pthread_mutex_destroy(&rs->alive_lock);
    pthread_cond_destroy(&rs->alive_cond);
    if (rs->admin)
        redisFree(rs->admin);
    pthread_mutex_destroy(&rs->lock);
    free(rs->map);
    free(rs->pending);
    free(rs->host);
    free(rs->user);
    if (rs->pass) {
        explicit_bzero(rs->pass, strlen(rs->pass));
        free(rs->pass);
    }
    free(rs);
}

static int redis_set_alive(struct redis_store *rs, redisContext *c)
{
    return redis_cmd_ok(rs, c, "setting the liveness key", "SET %salive %d EX %d", rs->prefix,
                        (int)getpid(), REDIS_ALIVE_TTL_S);
}

/* Refresh the liveness key when no submit has for REDIS_ALIVE_REFRESH_S,
 * on a connection of its own, so an idle instance is not taken for dead by
 * `moat store gc` (which would remove its pages). */
static void *redis_alive_main(void *arg)
{
    struct redis_store *rs = arg;
    struct redis_nopipe np;
    redis_nopipe_begin(&np); /* for the life of the thread */
    pthread_mutex_lock(&rs->alive_lock);
    while (!rs->alive_stop) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += 1;
        pthread_cond_timedwait(&rs->alive_cond, &rs->alive_lock, &ts);
        if (rs->alive_stop)
            break;
        int64_t now = redis_now_s();
        int64_t last = atomic_load(&rs->alive_at);
        if (now - last < REDIS_ALIVE_REFRESH_S ||
            !atomic_compare_exchange_strong(&rs->alive_at, &last, now))
            continue;
        pthread_mutex_unlock(&rs->alive_lock);
        redisContext *c = NULL;
        int err = redis_connect(rs, &c, NULL);
        if (!err)
            err = redis_set_alive(rs, c);
        if (c)
            redisFree(c);
        if (err) {
            redis_log_once(rs, err,
                           "refreshing the liveness key failed; `moat store gc` may take this "
                           "instance for dead in %d s",
                           REDIS_ALIVE_TTL_S);
            /* Try again in a second, not in 10. */
            int64_t mine = now;
            atomic_compare_exchange_strong(&rs->alive_at, &mine, last);
        }
        pthread_mutex_lock(&rs->alive_lock);
    }
    pthread_mutex_unlock(&rs->alive_lock);
    redis_nopipe_end(&np);
    return NULL;
}

static int redis_open(const char *rest, struct m_store **out)
{
    struct redis_store *rs = calloc(1, sizeof *rs);
    if (!rs)
        return ENOMEM;
    rs->base.ops = &m_store_redis_ops;
    pthread_mutex_init(&rs->lock, NULL);
    pthread_mutex_init(&rs->alive_lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&rs->alive_cond, &ca);
    pthread_condattr_destroy(&ca);
    rs->timeout_ms = REDIS_COMMAND_TIMEOUT_MS;
    rs->connect_timeout_ms = REDIS_CONNECT_TIMEOUT_MS;
    int rc = redis_parse_uri(rs, rest);
    if (rc)
        goto fail;
    uint64_t id = 0;
    if (getrandom(&id, sizeof id, 0) != (ssize_t)sizeof id) {
        rc = errno ? errno : EIO;
        m_error("store", "%s: no random instance id: %s", rs->name, strerror(rc));
        goto fail;
    }
    snprintf(rs->prefix, sizeof rs->prefix, "moat:{%016llx}:", (unsigned long long)id);
    /* Fail at open, not at the first eviction, if the server is not there,
     * refuses us, or is out of memory. */
    rc = redis_connect(rs, &rs->admin, NULL);
    if (rc)
        goto fail;
    rc = redis_set_alive(rs, rs->admin);
    if (rc)
        goto fail;
    atomic_store(&rs->alive_at, redis_now_s());
    if (pthread_create(&rs->alive_thread, NULL, redis_alive_main, rs) == 0)
        rs->alive_started = true;
    else
        m_warn("store", "%s: no liveness thread; the liveness key is refreshed by I/O only",
               rs->name);
    m_info("store", "store %s: keys %s*, connect timeout %d ms, command timeout %d ms", rs->name,
           rs->prefix, rs->connect_timeout_ms, rs->timeout_ms);
    *out = &rs->base;
    return 0;
fail:
    redis_destroy(rs);
    return rc;
}

/* Remove every key of this instance: SCAN MATCH prefix*, UNLINK in batches. */
static int redis_remove_keys(struct redis_store *rs, redisContext *c, uint64_t *nremoved)
{
    char pattern[REDIS_KEY_MAX];
    snprintf(pattern, sizeof pattern, "%s*", rs->prefix);
    char cursor[32] = "0";
    *nremoved = 0;
    do {
        redisReply *r =
            redisCommand(c, "SCAN %s MATCH %s COUNT %d", cursor, pattern, REDIS_SCAN_COUNT);
        if (!r)
            return redis_ctx_errno(c);
        if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
            r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_ARRAY) {
            int err = r->type == REDIS_REPLY_ERROR ? redis_reply_errno(r) : EIO;
            freeReplyObject(r);
            return err;
        }
        snprintf(cursor, sizeof cursor, "%s", r->element[0]->str);
        redisReply *keys = r->element[1];
        if (keys->elements) {
            const char **argv = malloc((keys->elements + 1) * sizeof *argv);
            size_t *argl = malloc((keys->elements + 1) * sizeof *argl);
            if (!argv || !argl) {
                free(argv);
                free(argl);
                freeReplyObject(r);
                return ENOMEM;
            }
            argv[0] = "UNLINK";
            argl[0] = 6;
            for (size_t i = 0; i < keys->elements; i++) {
                argv[i + 1] = keys->element[i]->str;
                argl[i + 1] = keys->element[i]->len;
            }
            redisReply *u = redisCommandArgv(c, (int)keys->elements + 1, argv, argl);
            free(argv);
            free(argl);
            if (!u) {
                freeReplyObject(r);
                return redis_ctx_errno(c);
            }
            if (u->type == REDIS_REPLY_INTEGER)
                *nremoved += (uint64_t)u->integer;
            freeReplyObject(u);
        }
        freeReplyObject(r);
    } while (strcmp(cursor, "0") != 0);
    return 0;
}

/*
 * Garbage collection of dead instances
 * ------------------------------------
 * Every instance keeps moat:{ID}:alive with a TTL while it runs and removes
 * its keys at close.  An instance that was killed leaves its keys behind
 * until the liveness key expires; m_store_redis_gc finds the instance ids
 * present on the server (SCAN MATCH moat:{*), and removes the keys of every
 * id whose liveness key is gone.  Live instances are never touched.
 */
#define REDIS_GC_MAX_IDS 4096

int m_store_redis_gc(const char *uri, uint64_t *ninstances, uint64_t *nkeys)
{
    *ninstances = 0;
    *nkeys = 0;
    if (!uri || strncmp(uri, "redis:", 6) != 0) {
        m_error("store", "store gc: \"%s\" is not a redis:// URI", uri ? uri : "(null)");
        return EINVAL;
    }
    struct redis_store *rs = calloc(1, sizeof *rs);
    if (!rs)
        return ENOMEM;
    pthread_mutex_init(&rs->lock, NULL);
    pthread_mutex_init(&rs->alive_lock, NULL);
    pthread_cond_init(&rs->alive_cond, NULL);
    rs->timeout_ms = REDIS_COMMAND_TIMEOUT_MS;
    rs->connect_timeout_ms = REDIS_CONNECT_TIMEOUT_MS;
    int rc = redis_parse_uri(rs, uri + 6);
    if (!rc)
        rc = redis_connect(rs, &rs->admin, NULL);
    static uint64_t ids[REDIS_GC_MAX_IDS];
    size_t nids = 0;
    char cursor[32] = "0";
    while (!rc) {
        redisReply *r =
            redisCommand(rs->admin, "SCAN %s MATCH moat:{* COUNT %d", cursor, REDIS_SCAN_COUNT);
        if (!r) {
            rc = redis_ctx_errno(rs->admin);
            break;
        }
        if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
            r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_ARRAY) {
            rc = r->type == REDIS_REPLY_ERROR ? redis_reply_errno(r) : EIO;
            freeReplyObject(r);
            break;
        }
        snprintf(cursor, sizeof cursor, "%s", r->element[0]->str);
        redisReply *keys = r->element[1];
        for (size_t i = 0; i < keys->elements; i++) {
            unsigned long long id;
            char close_brace;
            if (sscanf(keys->element[i]->str, "moat:{%16llx%c", &id, &close_brace) != 2 ||
                close_brace != '}')
                continue;
            size_t k = 0;
            while (k < nids && ids[k] != id)
                k++;
            if (k == nids && nids < REDIS_GC_MAX_IDS)
                ids[nids++] = id;
        }
        freeReplyObject(r);
        if (strcmp(cursor, "0") == 0)
            break;
    }
    for (size_t k = 0; !rc && k < nids; k++) {
        snprintf(rs->prefix, sizeof rs->prefix, "moat:{%016llx}:", (unsigned long long)ids[k]);
        redisReply *r = redisCommand(rs->admin, "EXISTS %salive", rs->prefix);
        if (!r) {
            rc = redis_ctx_errno(rs->admin);
            break;
        }
        bool alive = r->type == REDIS_REPLY_INTEGER && r->integer > 0;
        freeReplyObject(r);
        if (alive)
            continue;
        uint64_t removed = 0;
        rc = redis_remove_keys(rs, rs->admin, &removed);
        if (!rc) {
            (*ninstances)++;
            *nkeys += removed;
            m_info("store", "store gc %s: removed %llu keys of dead instance %s*", rs->name,
                   (unsigned long long)removed, rs->prefix);
        }
    }
    if (rc)
        m_error("store", "store gc %s: %s", rs->name[0] ? rs->name : uri, strerror(rc));
    redis_destroy(rs);
    return rc;
}

static void redis_close(struct m_store *s)
{
    struct redis_store *rs = redis_of(s);
    unsigned nq = atomic_load(&rs->nqueues);
    if (nq)
        m_error("store", "store %s closed with %u queue(s) still open: their memory is lost",
                rs->name, nq);
    if (rs->alive_started) {
        pthread_mutex_lock(&rs->alive_lock);
        rs->alive_stop = true;
        pthread_cond_signal(&rs->alive_cond);
        pthread_mutex_unlock(&rs->alive_lock);
        pthread_join(rs->alive_thread, NULL);
    }
    struct redis_nopipe np;
    redis_nopipe_begin(&np);
    redisContext *c = rs->admin;
    int rc = 0;
    if (!c || c->err) {
        if (c)
            redisFree(c);
        rs->admin = NULL;
        rc = redis_connect(rs, &rs->admin, NULL);
        c = rs->admin;
    }
    uint64_t nremoved = 0;
    if (!rc)
        rc = redis_remove_keys(rs, c, &nremoved);
    if (rc && c && c->err) {
        /* The open-time connection went stale (server restarted?): once more. */
        redisFree(rs->admin);
        rs->admin = NULL;
        rc = redis_connect(rs, &rs->admin, NULL);
        if (!rc)
            rc = redis_remove_keys(rs, rs->admin, &nremoved);
    }
    if (rc)
        m_warn("store",
               "%s: could not remove this instance's keys %s* at close: %s; they stay until "
               "removed (their liveness key expires in %d s)",
               rs->name, rs->prefix, strerror(rc), REDIS_ALIVE_TTL_S);
    redis_nopipe_end(&np);
    uint64_t rt = atomic_load(&rs->round_trips);
    uint64_t nio = atomic_load(&rs->reads) + atomic_load(&rs->writes);
    m_info("store",
           "closing %s: removed %llu keys; %llu round trips, %llu I/Os (%.1f a round trip), "
           "%llu DELs, %llu fences, %llu bytes sent, %llu received, %llu errors",
           rs->name, (unsigned long long)nremoved, (unsigned long long)rt, (unsigned long long)nio,
           rt ? (double)nio / (double)rt : 0.0, (unsigned long long)atomic_load(&rs->dels),
           (unsigned long long)atomic_load(&rs->fences),
           (unsigned long long)atomic_load(&rs->bytes_sent),
           (unsigned long long)atomic_load(&rs->bytes_received),
           (unsigned long long)atomic_load(&rs->errors));
    redis_destroy(rs);
}

/* ---------------------------------------------------------------------------
 * Queues
 * ------------------------------------------------------------------------- */

static int redis_queue_new(struct m_store *s, unsigned depth, struct m_store_queue **out)
{
    struct redis_store *rs = redis_of(s);
    *out = NULL;
    if (depth == 0 || depth > 32768)
        return EINVAL;
    struct redis_queue *q = calloc(1, sizeof *q);
    if (!q)
        return ENOMEM;
    q->cap = 64;
    while (q->cap < (size_t)depth + REDIS_DEL_BATCH + 1)
        q->cap *= 2;
    q->reqs = calloc(q->cap, sizeof *q->reqs);
    if (!q->reqs) {
        free(q);
        return ENOMEM;
    }
    int rc = redis_connect(rs, &q->c, &q->client_id);
    if (rc) {
        free(q->reqs);
        free(q);
        return rc;
    }
    q->base.store = s;
    q->base.depth = depth;
    atomic_fetch_add(&rs->nqueues, 1);
    *out = &q->base;
    return 0;
}

static void redis_req_push(struct redis_queue *q, struct redis_req r)
{
    q->reqs[(q->head + q->count) % q->cap] = r;
    q->count++;
}

/* Room in q's ring for `more` commands. */
static int redis_reqs_reserve(struct redis_queue *q, size_t more)
{
    if (q->count + more <= q->cap)
        return 0;
    size_t cap = q->cap;
    while (cap < q->count + more)
        cap *= 2;
    struct redis_req *r = malloc(cap * sizeof *r);
    if (!r)
        return ENOMEM;
    for (size_t i = 0; i < q->count; i++)
        r[i] = q->reqs[(q->head + i) % q->cap];
    free(q->reqs);
    q->reqs = r;
    q->cap = cap;
    q->head = 0;
    return 0;
}

/* The connection failed: every I/O in flight fails with err (reap hands
 * them back in order), DELs go back to the pending list, and the queue
 * reconnects at its next submit. */
static void redis_queue_fail(struct redis_queue *q, int err)
{
    struct redis_store *rs = redis_of(q->base.store);
    redis_log_once(rs, err, "connection failed with %zu commands in flight: %s (%s) %s", q->count,
                   q->c && q->c->errstr[0] ? q->c->errstr : "-", strerror(err),
                   redis_err_hint(err));
    if (q->c) {
        redisFree(q->c);
        q->c = NULL;
    }
    if (q->client_id > 0) {
        pthread_mutex_lock(&rs->lock);
        rs->fence_ids[rs->nfence++ % REDIS_FENCE_MAX] = q->client_id;
        pthread_mutex_unlock(&rs->lock);
        q->client_id = 0;
    }
    for (size_t i = 0; i < q->count; i++) {
        struct redis_req *r = &q->reqs[(q->head + i) % q->cap];
        if (r->kind == REQ_DEL) {
            redis_slot_requeue(rs, r->slot);
            r->kind = REQ_DONE;
        } else if (r->kind == REQ_IO) {
            r->io->result = err;
            atomic_fetch_add_explicit(&rs->errors, 1, memory_order_relaxed);
        } else {
            r->kind = REQ_DONE;
        }
    }
}

static int redis_submit(struct m_store_queue *bq, struct m_store_io *const *ios, size_t n)
{
    struct redis_queue *q = queue_of(bq);
    struct redis_store *rs = redis_of(bq->store);
    if (n == 0)
        return 0;
    if (q->nio + n > bq->depth)
        return EAGAIN;
    for (size_t i = 0; i < n; i++) {
        const struct m_store_io *io = ios[i];
        const char *why = NULL;
        if (!io)
            why = "is NULL";
        else if (io->op != M_STORE_READ && io->op != M_STORE_WRITE)
            why = "has an unknown op";
        else if (!io->buf)
            why = "has no buffer";
        if (why) {
            m_error("store", "submit to %s: I/O %zu of %zu %s; nothing submitted", rs->name, i, n,
                    why);
            return EINVAL;
        }
    }
    if (!q->c) {
        if (q->nio) /* failed I/Os still to be reaped */
            return EAGAIN;
        q->count = 0;
        q->head = 0;
        int rc = redis_connect(rs, &q->c, &q->client_id);
        if (rc)
            return rc;
        m_info("store", "%s: reconnected", rs->name);
    }
    if (redis_reqs_reserve(q, n + REDIS_DEL_BATCH + REDIS_FENCE_MAX + 1))
        return ENOMEM;
    char key[REDIS_KEY_MAX];
    size_t klen;
    bool appended = true;

    /* Fence failed connections first, then freed slots ride along. */
    long long fences[REDIS_FENCE_MAX];
    size_t nfences = 0;
    uint64_t dels[REDIS_DEL_BATCH];
    size_t ndel = 0;
    pthread_mutex_lock(&rs->lock);
    if (rs->nfence - q->fenced > REDIS_FENCE_MAX)
        q->fenced = rs->nfence - REDIS_FENCE_MAX;
    for (; q->fenced < rs->nfence; q->fenced++)
        fences[nfences++] = rs->fence_ids[q->fenced % REDIS_FENCE_MAX];
    size_t take = rs->npending < REDIS_DEL_BATCH ? rs->npending : REDIS_DEL_BATCH;
    for (; ndel < take; ndel++)
        dels[ndel] = rs->pending[--rs->npending];
    pthread_mutex_unlock(&rs->lock);
    for (size_t i = 0; i < nfences; i++) {
        appended &= redisAppendCommand(q->c, "CLIENT KILL ID %lld", fences[i]) == REDIS_OK;
        redis_req_push(q, (struct redis_req){.kind = REQ_FENCE});
    }
    for (size_t i = 0; i < ndel; i++) {
        redis_key(rs, dels[i], key, &klen);
        appended &= redisAppendCommand(q->c, "DEL %b", key, klen) == REDIS_OK;
        redis_req_push(q, (struct redis_req){.kind = REQ_DEL, .slot = dels[i]});
    }

    int64_t now = redis_now_s();
    int64_t last = atomic_load_explicit(&rs->alive_at, memory_order_relaxed);
    if (now - last >= REDIS_ALIVE_REFRESH_S &&
        atomic_compare_exchange_strong(&rs->alive_at, &last, now)) {
        appended &= redisAppendCommand(q->c, "SET %salive %d EX %d", rs->prefix, (int)getpid(),
                                       REDIS_ALIVE_TTL_S) == REDIS_OK;
        redis_req_push(q, (struct redis_req){.kind = REQ_ALIVE});
    }

    for (size_t i = 0; i < n; i++) {
        struct m_store_io *io = ios[i];
        io->result = 0;
        redis_key(rs, io->slot, key, &klen);
        int ok;
        if (io->op == M_STORE_WRITE)
            ok = redisAppendCommand(q->c, "SET %b %b", key, klen, io->buf, (size_t)M_STORE_RECORD);
        else
            ok = redisAppendCommand(q->c, "GET %b", key, klen);
        appended &= ok == REDIS_OK;
        redis_req_push(q, (struct redis_req){.kind = REQ_IO, .io = io});
    }
    q->nio += (unsigned)n;
    if (!appended) {
        /* The pipeline no longer matches the commands: start over. */
        redis_queue_fail(q, ENOMEM);
        return 0;
    }

    /* One write of the whole pipeline: one round trip for the batch. */
    size_t nbytes = sdslen(q->c->obuf);
    int wdone = 0;
    struct redis_nopipe np;
    redis_nopipe_begin(&np);
    while (!wdone) {
        if (redisBufferWrite(q->c, &wdone) != REDIS_OK)
            break;
    }
    redis_nopipe_end(&np);
    atomic_fetch_add_explicit(&rs->round_trips, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&rs->bytes_sent, nbytes, memory_order_relaxed);
    /* A write failure is reported by reap, with the I/Os it concerns. */
    return 0;
}

/* Account one reply for the oldest command in flight.  Returns the I/O it
 * completed, or NULL for a DEL or liveness reply. */
static struct m_store_io *redis_complete(struct redis_queue *q, redisReply *r)
{
    struct redis_store *rs = redis_of(q->base.store);
    struct redis_req req = q->reqs[q->head];
    q->head = (q->head + 1) % q->cap;
    q->count--;
    int err = 0;
    if (r->type == REDIS_REPLY_ERROR)
        err = redis_reply_errno(r);
    if (req.kind == REQ_DEL) {
        if (err) {
            redis_log_once(rs, err, "DEL of slot %llu refused: %s", (unsigned long long)req.slot,
                           r->str);
            redis_slot_requeue(rs, req.slot);
        } else {
            atomic_fetch_add_explicit(&rs->dels, 1, memory_order_relaxed);
            redis_slot_release(rs, req.slot);
        }
        return NULL;
    }
    if (req.kind == REQ_DONE)
        return NULL;
    if (req.kind == REQ_FENCE) {
        if (err)
            redis_log_once(rs, err,
                           "cannot fence a failed connection (CLIENT KILL refused: %s); a late "
                           "write on it may replay an older record, which the seal layer rejects",
                           r->str);
        else
            atomic_fetch_add_explicit(&rs->fences, 1, memory_order_relaxed);
        return NULL;
    }
    if (req.kind == REQ_ALIVE) {
        if (err)
            redis_log_once(rs, err, "refreshing the liveness key refused: %s", r->str);
        return NULL;
    }
    struct m_store_io *io = req.io;
    q->nio--;
    if (err) {
        redis_log_once(rs, err, "%s of slot %llu refused: %s (%s) %s",
                       io->op == M_STORE_READ ? "GET" : "SET", (unsigned long long)io->slot, r->str,
                       strerror(err), redis_err_hint(err));
    } else if (io->op == M_STORE_WRITE) {
        if (r->type != REDIS_REPLY_STATUS) {
            err = EIO;
            redis_log_once(rs, err, "SET of slot %llu: unexpected reply type %d",
                           (unsigned long long)io->slot, r->type);
        }
    } else if (r->type == REDIS_REPLY_NIL) {
        err = EIO;
        redis_log_once(rs, err, "slot %llu (key %s%llu) is missing on the server",
                       (unsigned long long)io->slot, rs->prefix, (unsigned long long)io->slot);
    } else if (r->type != REDIS_REPLY_STRING || r->len != M_STORE_RECORD) {
        err = EIO;
        redis_log_once(rs, err, "slot %llu: the server returned %zu bytes, not a %u-byte record",
                       (unsigned long long)io->slot,
                       r->type == REDIS_REPLY_STRING ? r->len : (size_t)0, M_STORE_RECORD);
    } else {
        memcpy(io->buf, r->str, M_STORE_RECORD);
    }
    io->result = err;
    if (err) {
        atomic_fetch_add_explicit(&rs->errors, 1, memory_order_relaxed);
    } else if (io->op == M_STORE_READ) {
        atomic_fetch_add_explicit(&rs->reads, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&rs->bytes_read, M_STORE_RECORD, memory_order_relaxed);
    } else {
        atomic_fetch_add_explicit(&rs->writes, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&rs->bytes_written, M_STORE_RECORD, memory_order_relaxed);
    }
    return io;
}

/* Replies already read from the socket, without blocking; 1 if one was
 * taken, 0 if none is there yet, -1 on a protocol error. */
static int redis_take_buffered(redisContext *c, redisReply **r)
{
    void *p = NULL;
    if (redisGetReplyFromReader(c, &p) != REDIS_OK)
        return -1;
    *r = p;
    return p ? 1 : 0;
}

static int redis_reap(struct m_store_queue *bq, struct m_store_io **done, size_t max, size_t min,
                      size_t *ndone)
{
    struct redis_queue *q = queue_of(bq);
    struct redis_store *rs = redis_of(bq->store);
    size_t got = 0;
    *ndone = 0;
    if (min > max)
        min = max;
    if (min > q->nio)
        min = q->nio; /* waiting for more than can complete would hang */

    while (q->count && got < max) {
        if (!q->c) {
            /* Failed with their connection: hand them back in order. */
            struct redis_req req = q->reqs[q->head];
            q->head = (q->head + 1) % q->cap;
            q->count--;
            if (req.kind == REQ_IO) {
                q->nio--;
                done[got++] = req.io;
            }
            continue;
        }
        if (q->c->err) {
            redis_queue_fail(q, redis_ctx_errno(q->c));
            continue;
        }
        redisReply *r = NULL;
        int k = redis_take_buffered(q->c, &r);
        if (k < 0) {
            redis_queue_fail(q, EIO);
            continue;
        }
        if (k == 0) {
            if (got >= min) {
                struct pollfd pfd = {.fd = q->c->fd, .events = POLLIN};
                if (poll(&pfd, 1, 0) <= 0)
                    break;
            }
            /* Blocks up to the command timeout; a failure sets c->err. */
            (void)redisBufferRead(q->c);
            continue;
        }
        struct m_store_io *io = redis_complete(q, r);
        if (r->type == REDIS_REPLY_STRING)
            atomic_fetch_add_explicit(&rs->bytes_received, r->len, memory_order_relaxed);
        freeReplyObject(r);
        if (io)
            done[got++] = io;
    }
    *ndone = got;
    return 0;
}

static void redis_queue_free(struct m_store_queue *bq)
{
    struct redis_queue *q = queue_of(bq);
    struct redis_store *rs = redis_of(bq->store);
    if (q->nio)
        m_error("store", "queue on %s freed with %u I/Os in flight", rs->name, q->nio);
    /* DELs in flight are waited for, so their slots can be reused; with
     * I/Os abandoned in flight the connection is simply dropped. */
    while (q->c && !q->c->err && q->count && !q->nio) {
        void *p = NULL;
        if (redisGetReply(q->c, &p) != REDIS_OK || !p)
            break;
        (void)redis_complete(q, p);
        freeReplyObject(p);
    }
    for (; q->count; q->count--, q->head = (q->head + 1) % q->cap)
        if (q->reqs[q->head].kind == REQ_DEL)
            redis_slot_requeue(rs, q->reqs[q->head].slot);
    if (q->c)
        redisFree(q->c);
    free(q->reqs);
    free(q);
    atomic_fetch_sub(&rs->nqueues, 1);
}

/* ---------------------------------------------------------------------------
 * Description and statistics
 * ------------------------------------------------------------------------- */

static void redis_stats(struct m_store *s, struct m_store_stats *out)
{
    struct redis_store *rs = redis_of(s);
    pthread_mutex_lock(&rs->lock);
    out->slots_used = rs->used;
    out->slots_high = rs->next;
    pthread_mutex_unlock(&rs->lock);
    out->reads = atomic_load_explicit(&rs->reads, memory_order_relaxed);
    out->writes = atomic_load_explicit(&rs->writes, memory_order_relaxed);
    out->bytes_read = atomic_load_explicit(&rs->bytes_read, memory_order_relaxed);
    out->bytes_written = atomic_load_explicit(&rs->bytes_written, memory_order_relaxed);
    out->errors = atomic_load_explicit(&rs->errors, memory_order_relaxed);
}

int m_store_redis_stats(struct m_store *s, struct m_store_redis_stats *out)
{
    if (!s || !out || s->ops != &m_store_redis_ops)
        return EINVAL;
    struct redis_store *rs = redis_of(s);
    out->round_trips = atomic_load_explicit(&rs->round_trips, memory_order_relaxed);
    out->ios = atomic_load_explicit(&rs->reads, memory_order_relaxed) +
               atomic_load_explicit(&rs->writes, memory_order_relaxed) +
               atomic_load_explicit(&rs->errors, memory_order_relaxed);
    out->dels = atomic_load_explicit(&rs->dels, memory_order_relaxed);
    out->fences = atomic_load_explicit(&rs->fences, memory_order_relaxed);
    out->bytes_sent = atomic_load_explicit(&rs->bytes_sent, memory_order_relaxed);
    out->bytes_received = atomic_load_explicit(&rs->bytes_received, memory_order_relaxed);
    out->errors = atomic_load_explicit(&rs->errors, memory_order_relaxed);
    snprintf(out->prefix, sizeof out->prefix, "%s", rs->prefix);
    return 0;
}

static const char *redis_describe(struct m_store *s)
{
    return redis_of(s)->name;
}

const struct m_store_ops m_store_redis_ops = {
    .scheme = "redis",
    .open = redis_open,
    .close = redis_close,
    .slot_alloc = redis_slot_alloc,
    .slot_free = redis_slot_free,
    .queue_new = redis_queue_new,
    .queue_free = redis_queue_free,
    .submit = redis_submit,
    .reap = redis_reap,
    .stats = redis_stats,
    .describe = redis_describe,
};

/* ---------------------------------------------------------------------------
 * Shared with cluster.c
 * ------------------------------------------------------------------------- */

int m_store_redis_ctx_errno(const struct redisContext *c)
{
    return redis_ctx_errno(c);
}

int m_store_redis_reply_errno(const struct redisReply *r)
{
    return redis_reply_errno(r);
}

const char *m_store_redis_err_hint(int err)
{
    return redis_err_hint(err);
}

_Static_assert(sizeof(struct redis_nopipe) <= sizeof(struct m_store_redis_nopipe),
               "m_store_redis_nopipe is too small");

void m_store_redis_nopipe_begin(struct m_store_redis_nopipe *np)
{
    redis_nopipe_begin((struct redis_nopipe *)(void *)np);
}

void m_store_redis_nopipe_end(struct m_store_redis_nopipe *np)
{
    redis_nopipe_end((struct redis_nopipe *)(void *)np);
}
