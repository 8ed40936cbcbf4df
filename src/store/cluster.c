/*
 * cluster.c - the redis stores: sealed records spread over the primaries of
 * a Redis Cluster,
 * "redis+cluster://[user:password@]host:port[,host:port...][?options]",
 * or kept in one server, "redis://[user:password@]host:port[/db][?options]".
 *
 * One server is a cluster of one node (cs->single): node 0 owns every hash
 * slot for good, keys carry no group in their tag ("moat:{ID}:n"), a
 * "refresh" reads INFO replication instead of CLUSTER SLOTS, and SELECT db
 * follows AUTH on every connection.  Everything else below (batching,
 * retries, WAIT, fencing, liveness, clean-up, gc, statistics) is the same
 * code for both, so the single server has replicas and retries too.
 *
 * Routing.  At open the store asks the seeds, one after the other, for the
 * slot map (CLUSTER SLOTS) and keeps, for each of the 16384 hash slots, the
 * index of its primary in a node table.  A key goes to the primary of
 * CRC16(hash tag) mod 16384 (m_store_cluster_keyslot).  A MOVED reply
 * updates that slot at once, asks for a full refresh, and sends the command
 * again to the node named; an ASK reply sends "ASKING" and the command to
 * the node named, once, without touching the map (the slot is migrating).
 *
 * Keys.  Store slot n of instance ID lives under "moat:{ID:G}:n" with
 * G = n / 16: the hash tag varies with the group of 16 slots, so records
 * spread over all hash slots (and nodes) while 16 neighbours (a read-ahead
 * run) share one node and one pipeline.  The liveness key is
 * "moat:{ID}:alive" (EX 30), refreshed by submits at most every 10 s and,
 * when the instance is idle, by a thread of the store (cl_alive_main).
 * Every key of an instance starts with "moat:{ID", which is what close and
 * `moat store gc` SCAN every primary for.  An instance whose image ends
 * without close (exec; exit under `moat run`) is found through a record per
 * pid in /dev/shm and removed by the next image or by `moat run`'s sweep
 * (see "Instances left behind by exec and by exit without close").
 *
 * Batching.  Each queue has one connection per node, opened when first
 * needed.  submit() appends each command to the connection of its node and
 * then writes every touched connection's pipeline once: a batch spread over
 * three primaries costs three writes and one round-trip time.  reap() polls
 * all connections with commands in flight and takes replies as they come.
 *
 * Replicas.  With replicas=N every pipeline that carries writes ends with
 * "WAIT N wait_timeout"; the SETs of that pipeline complete only when the
 * WAIT reply says at least N replicas have them.  Otherwise they fail with
 * EREMOTEIO: the caller keeps the pages resident, so a primary that dies
 * right after cannot lose an acknowledged page.  A primary that CLUSTER
 * NODES shows with fewer than N live replicas (after a failover) has its
 * writes refused at once instead of waiting out WAIT (cl_count_replicas).
 *
 * Failures.  A connection that breaks, times out (no reply for timeout ms)
 * or cannot be made, and the replies CLUSTERDOWN, TRYAGAIN, LOADING and
 * READONLY, make the I/Os concerned wait and retry with exponential backoff
 * (10 ms doubling to 500 ms) and a refresh of the slot map, which is how a
 * failover is followed; after retry_timeout ms an I/O fails with ETIMEDOUT
 * and a log line naming the node, the key and the last cause.  A node
 * unreachable for a whole retry_timeout counts as dead: an I/O that fails
 * there gives up at once, until a connection to it succeeds again.  With
 * retry_timeout=0 an I/O fails at once with the cause itself: ECONNRESET
 * (connection lost), ECONNREFUSED, ETIMEDOUT, ENETDOWN (CLUSTERDOWN).
 * Never retried: EACCES (authentication), ENOSPC (OOM), EIO (a missing key
 * or a malformed value: never zeros), EREMOTEIO (too few replicas).
 * Fencing: a connection that timed out may still have commands in the
 * server's socket buffer, which a stopped or slow server runs later; a
 * stale SET could then land after a newer write of the same slot.  So the
 * CLIENT IDs of failed connections are kept per node, and the next
 * pipeline of every queue to that node begins with CLIENT KILL ID for each
 * (commands on one connection run in order).
 *
 * Options after '?': timeout=MS (a reply, default 5000), connect_timeout=MS
 * (2000), retry_timeout=MS (total retrying of one I/O, default 15000,
 * env MOAT_STORE_TIMEOUT through m_store_open_opts), replicas=N (0),
 * wait_timeout=MS (WAIT's own timeout, default 1000), spin=US (poll
 * without sleeping before waiting for replies, default 0: see cl_wait).
 * The same for both schemes.
 */
#include "store/cluster.h"
#include "store/redis.h"
#include "store/store.h"

#include "common/log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CL_NSLOTS             M_STORE_CLUSTER_SLOTS
#define CL_MAX_NODES          M_STORE_CLUSTER_MAX_NODES
#define CL_NONE               0xffu /* a hash slot without a primary */
#define CL_GROUP_SHIFT        4     /* 16 store slots share a hash tag */
#define CL_KEY_MAX            80
#define CL_CONNECT_TIMEOUT_MS 2000
#define CL_COMMAND_TIMEOUT_MS 5000
#define CL_RETRY_TIMEOUT_MS   15000
#define CL_WAIT_TIMEOUT_MS    1000
#define CL_ALIVE_TTL_S        30
#define CL_ALIVE_REFRESH_S    10
#define CL_DEL_BATCH          256u
#define CL_FENCE_MAX          16
#define CL_REDIRECT_MAX       16
#define CL_BACKOFF_MIN_MS     10
#define CL_BACKOFF_MAX_MS     500
#define CL_REFRESH_MIN_MS     100
#define CL_SCAN_COUNT         1000
#define CL_MAX_REPLICAS       16
#define CL_SPIN_US            0

/* ---------------------------------------------------------------------------
 * CRC16 and hash slots
 * ------------------------------------------------------------------------- */

/* CRC16-CCITT (XMODEM): polynomial 0x1021, initial value 0, no reflection,
 * as Redis Cluster defines it ("123456789" -> 0x31C3).  Keys are ~30 bytes
 * and hashed once per command, so the bitwise form is fast enough. */
static uint16_t cl_crc16(const unsigned char *p, size_t len)
{
    uint16_t crc = 0;
    for (size_t i = 0; i < len; i++) {
        crc ^= (uint16_t)(p[i] << 8);
        for (int b = 0; b < 8; b++)
            crc = (uint16_t)(crc & 0x8000 ? (crc << 1) ^ 0x1021 : crc << 1);
    }
    return crc;
}

unsigned m_store_cluster_keyslot(const char *key, size_t len)
{
    const char *open = memchr(key, '{', len);
    if (open) {
        size_t rest = len - (size_t)(open - key) - 1;
        const char *close = memchr(open + 1, '}', rest);
        if (close && close > open + 1)
            return cl_crc16((const unsigned char *)open + 1, (size_t)(close - open - 1)) &
                   (CL_NSLOTS - 1);
    }
    return cl_crc16((const unsigned char *)key, len) & (CL_NSLOTS - 1);
}

/* ---------------------------------------------------------------------------
 * Types
 * ------------------------------------------------------------------------- */

enum cl_kind { CL_IO = 1, CL_DEL, CL_ALIVE, CL_FENCE, CL_ASKING, CL_WAIT };

/* One command in flight on a connection, or one I/O waiting to be retried. */
struct cl_req {
    uint8_t kind;
    bool asking;        /* CL_IO: send ASKING first (an ASK redirection) */
    uint16_t redirects; /* CL_IO: MOVED/ASK followed so far */
    uint32_t attempts;  /* CL_IO: failures retried so far */
    int node;           /* CL_IO: node to send to (ASK), -1 = by the slot map */
    struct m_store_io *io;
    uint64_t slot;       /* CL_DEL: the store slot */
    int64_t deadline_ns; /* CL_IO: give up retrying at this time */
    int64_t ready_ns;    /* in a retry list: not before this time */
};

struct cl_node {
    /* Set once before the node is published (nnodes), then read-only. */
    char host[64];
    int port;
    char addr[80];
    /* Under store->lock. */
    long long fence_ids[CL_FENCE_MAX]; /* CLIENT IDs of failed connections, a ring */
    uint64_t nfence;
    _Atomic bool failed;           /* a connection failed and none succeeded since */
    _Atomic int64_t down_since_ns; /* when `failed` was last set from clear (0: up) */
    _Atomic int replicas_seen;     /* live replicas in the last CLUSTER NODES; -1 unknown */
    _Atomic uint64_t reads, writes, bytes_read, bytes_written, round_trips, commands, retries,
        moved, asks, conn_failures, wait_failures, failovers;
};

struct cl_store {
    struct m_store base;
    char *user, *pass;
    char name[256];  /* "redis+cluster://seed,seed" or "redis://host:port/db": no password */
    char prefix[40]; /* "moat:{ID" */
    unsigned nseeds; /* nodes[0..nseeds) are the seeds from the URI */
    bool single;     /* redis://: one server, node 0, no slot map (see the banner) */
    int db;          /* redis://: SELECT db on every connection */
    int timeout_ms, connect_timeout_ms, retry_timeout_ms, wait_timeout_ms;
    unsigned replicas;
    int spin_us; /* poll without blocking this long before sleeping (cl_wait) */

    struct cl_node nodes[CL_MAX_NODES];
    _Atomic unsigned nnodes;              /* published nodes; appended under nodes_lock */
    pthread_mutex_t nodes_lock;           /* serialises node additions */
    _Atomic uint8_t slot_node[CL_NSLOTS]; /* hash slot -> node index, CL_NONE */
    pthread_mutex_t refresh_lock;         /* one refresh at a time */
    _Atomic bool refresh_wanted;
    _Atomic int64_t refreshed_ns;

    _Atomic unsigned nqueues;
    _Atomic uint64_t logged_errnos; /* bit e set once errno e < 64 was logged */
    _Atomic int64_t alive_at;       /* CLOCK_MONOTONIC seconds of the last refresh */
    _Atomic int64_t gaveup_logged_ns;
    /* The liveness refresher (see cl_alive_main); stop under alive_lock. */
    pthread_t alive_thread;
    bool alive_started, alive_stop;
    pthread_mutex_t alive_lock;
    pthread_cond_t alive_cond;

    pthread_mutex_t lock; /* guards the slot bitmap down to `used`, and nodes' fences */
    uint64_t *map;        /* bit per store slot: allocated, or its DEL in flight */
    size_t nwords;
    uint64_t hint, next;
    uint64_t *pending; /* freed slots waiting for their DEL */
    size_t npending, cap_pending;
    uint64_t used;

    _Atomic uint64_t reads, writes, bytes_read, bytes_written, errors, dels, fences;
    _Atomic uint64_t refreshes, failovers, retries, redirections, timeouts, wait_failures;
    _Atomic uint64_t bytes_sent, bytes_received; /* protocol bytes written, values read */
    pid_t exec_pid; /* recorded for exec in this pid's file (cl_exec_record), 0: not */
};

struct cl_conn {
    redisContext *c;     /* NULL: not connected */
    long long client_id; /* c's CLIENT ID (0 = unknown) */
    uint64_t fenced;     /* node's failed connections this one has fenced */
    struct cl_req *reqs; /* FIFO ring of commands in flight */
    size_t cap, head, count;
    struct cl_req *held; /* SETs answered OK, waiting for their WAIT */
    size_t nheld, cap_held;
    unsigned unwaited;     /* SETs appended since the last WAIT */
    bool dirty;            /* commands appended, not written yet */
    int64_t progress_ns;   /* last reply (or first send): the command timeout runs from here */
    int64_t down_until_ns; /* a connect failed: do not try again before */
    int down_err;
};

struct cl_queue {
    struct m_store_queue base;
    struct cl_conn conns[CL_MAX_NODES];
    struct cl_req *retry; /* I/Os waiting for their backoff */
    struct cl_req *due;   /* scratch for cl_run_retries */
    size_t nretry;
    struct m_store_io **done; /* completed, not handed back yet: a FIFO ring of depth */
    size_t dhead, ndone;
    unsigned nio; /* I/Os submitted and not handed back */
};

static inline struct cl_store *cl_of(struct m_store *s)
{
    return (struct cl_store *)s;
}
static inline struct cl_queue *clq_of(struct m_store_queue *q)
{
    return (struct cl_queue *)q;
}

static int64_t cl_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Node nd failed (a connection broke or could not be made) / answered. */
static void cl_node_down(struct cl_node *nd)
{
    atomic_store(&nd->failed, true);
    int64_t up = 0;
    atomic_compare_exchange_strong(&nd->down_since_ns, &up, cl_now_ns());
}

static void cl_node_up(struct cl_node *nd)
{
    atomic_store(&nd->failed, false);
    atomic_store(&nd->down_since_ns, 0);
}

static struct timeval cl_tv(int ms)
{
    return (struct timeval){.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
}

#define CL_INC(field)    atomic_fetch_add_explicit(&(field), 1, memory_order_relaxed)
#define CL_ADD(field, n) atomic_fetch_add_explicit(&(field), (n), memory_order_relaxed)
#define CL_GET(field)    atomic_load_explicit(&(field), memory_order_relaxed)

static void cl_log_once(struct cl_store *cs, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void cl_log_once(struct cl_store *cs, int err, const char *fmt, ...)
{
    uint64_t bit = err > 0 && err < 64 ? 1ull << err : 1ull;
    if (atomic_fetch_or_explicit(&cs->logged_errnos, bit, memory_order_relaxed) & bit)
        return;
    char msg[640];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    m_warn("store", "%s: %s (further %s errors are counted, not logged)", cs->name, msg,
           strerror(err));
}

/* Errors worth waiting out: the node or the cluster may come back or fail
 * over.  The others are answers. */
static bool cl_retryable(int err)
{
    return err == ECONNRESET || err == ECONNREFUSED || err == ETIMEDOUT || err == ENETDOWN ||
           err == EAGAIN || err == EHOSTUNREACH || err == ENETUNREACH;
}

/* ---------------------------------------------------------------------------
 * Error mapping
 * ------------------------------------------------------------------------- */

/* The errno for a failed context.  hiredis keeps only the message, so the
 * message is matched against the errno texts it was made from. */
static int cl_ctx_errno(const redisContext *c)
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
        if (strstr(c->errstr, "timed out") || strstr(c->errstr, "imeout"))
            return ETIMEDOUT;
    }
    if (c->err == REDIS_ERR_OTHER && strstr(c->errstr, "resolve"))
        return EHOSTUNREACH;
    return EIO;
}

/* The errno for an error reply.  EAGAIN stands for the replies that ask to
 * try again later; it is retried, never returned. */
static int cl_reply_errno(const redisReply *r)
{
    if (strncmp(r->str, "CLUSTERDOWN", 11) == 0)
        return ENETDOWN;
    if (strncmp(r->str, "TRYAGAIN", 8) == 0 || strncmp(r->str, "LOADING", 7) == 0 ||
        strncmp(r->str, "READONLY", 8) == 0 || strncmp(r->str, "MASTERDOWN", 10) == 0)
        return EAGAIN;
    if (strncmp(r->str, "OOM", 3) == 0)
        return ENOSPC;
    if (strncmp(r->str, "NOAUTH", 6) == 0 || strncmp(r->str, "WRONGPASS", 9) == 0 ||
        strncmp(r->str, "NOPERM", 6) == 0 || strstr(r->str, "invalid password"))
        return EACCES;
    return EIO;
}

static const char *cl_err_hint(int err)
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
    case ENETDOWN:
        return "the cluster is down (CLUSTERDOWN: some hash slots have no primary)";
    case EREMOTEIO:
        return "too few replicas acknowledged the writes (WAIT); the pages stay resident";
    case EAGAIN:
        return "the server asked to try again (migration, loading or a failover)";
    default:
        return "";
    }
}

/* hiredis writes with write(2): to a server that went away that raises
 * SIGPIPE, which would kill the program.  Writes are made with SIGPIPE
 * blocked in the calling thread, and a SIGPIPE they raised is taken before
 * unblocking (EPIPE tells the story). */
struct cl_nopipe {
    sigset_t old;
    bool blocked; /* SIGPIPE was unblocked before, we blocked it */
};

static void cl_nopipe_begin(struct cl_nopipe *np)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    np->blocked =
        pthread_sigmask(SIG_BLOCK, &set, &np->old) == 0 && !sigismember(&np->old, SIGPIPE);
}

static void cl_nopipe_end(struct cl_nopipe *np)
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
 * Keys
 * ------------------------------------------------------------------------- */

/* "moat:{ID:G}:N" on a cluster (the tag spreads groups over the nodes),
 * "moat:{ID}:N" on one server. */
static size_t cl_key(const struct cl_store *cs, uint64_t slot, char *key)
{
    int n = cs->single
                ? snprintf(key, CL_KEY_MAX, "%s}:%llu", cs->prefix, (unsigned long long)slot)
                : snprintf(key, CL_KEY_MAX, "%s:%llu}:%llu", cs->prefix,
                           (unsigned long long)(slot >> CL_GROUP_SHIFT), (unsigned long long)slot);
    return (size_t)n;
}

static size_t cl_alive_key(const struct cl_store *cs, char *key)
{
    return (size_t)snprintf(key, CL_KEY_MAX, "%s}:alive", cs->prefix);
}

/* ---------------------------------------------------------------------------
 * Nodes and connections
 * ------------------------------------------------------------------------- */

/* The index of host:port in the node table, added if new; -1 if full. */
static int cl_node_get(struct cl_store *cs, const char *host, size_t hlen, int port)
{
    if (hlen >= sizeof cs->nodes[0].host)
        return -1;
    unsigned n = atomic_load_explicit(&cs->nnodes, memory_order_acquire);
    for (unsigned i = 0; i < n; i++)
        if (cs->nodes[i].port == port && strlen(cs->nodes[i].host) == hlen &&
            memcmp(cs->nodes[i].host, host, hlen) == 0)
            return (int)i;
    pthread_mutex_lock(&cs->nodes_lock);
    n = atomic_load_explicit(&cs->nnodes, memory_order_acquire);
    int found = -1;
    for (unsigned i = 0; i < n && found < 0; i++)
        if (cs->nodes[i].port == port && strlen(cs->nodes[i].host) == hlen &&
            memcmp(cs->nodes[i].host, host, hlen) == 0)
            found = (int)i;
    if (found < 0 && n < CL_MAX_NODES) {
        struct cl_node *nd = &cs->nodes[n];
        memcpy(nd->host, host, hlen);
        nd->host[hlen] = '\0';
        nd->port = port;
        snprintf(nd->addr, sizeof nd->addr, "%.*s:%d", (int)hlen, host, port);
        atomic_store(&nd->replicas_seen, -1);
        atomic_store_explicit(&cs->nnodes, n + 1, memory_order_release);
        found = (int)n;
    } else if (found < 0) {
        m_error("store", "%s: more than %u nodes; %.*s:%d is ignored", cs->name, CL_MAX_NODES,
                (int)hlen, host, port);
    }
    pthread_mutex_unlock(&cs->nodes_lock);
    return found;
}

static int cl_cmd_ok(struct cl_store *cs, struct cl_node *nd, redisContext *c, const char *what,
                     const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static int cl_cmd_ok(struct cl_store *cs, struct cl_node *nd, redisContext *c, const char *what,
                     const char *fmt, ...)
{
    va_list ap;
    struct cl_nopipe np;
    cl_nopipe_begin(&np);
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    cl_nopipe_end(&np);
    if (!r) {
        int err = cl_ctx_errno(c);
        m_error("store", "%s: node %s: %s failed: %s (%s) %s", cs->name, nd->addr, what, c->errstr,
                strerror(err), cl_err_hint(err));
        return err;
    }
    int err = 0;
    if (r->type == REDIS_REPLY_ERROR) {
        err = cl_reply_errno(r);
        m_error("store", "%s: node %s: %s refused: %s (%s) %s", cs->name, nd->addr, what, r->str,
                strerror(err), cl_err_hint(err));
    }
    freeReplyObject(r);
    return err;
}

/* Connect to node i: AUTH, command timeout, CLIENT ID into *id if id. */
static int cl_connect(struct cl_store *cs, int i, redisContext **out, long long *id, bool quiet)
{
    struct cl_node *nd = &cs->nodes[i];
    *out = NULL;
    redisContext *c = redisConnectWithTimeout(nd->host, nd->port, cl_tv(cs->connect_timeout_ms));
    if (!c || c->err) {
        int err = cl_ctx_errno(c);
        if (!quiet)
            m_error("store", "%s: cannot connect to node %s: %s (%s) %s", cs->name, nd->addr,
                    c ? c->errstr : "out of memory", strerror(err), cl_err_hint(err));
        if (c)
            redisFree(c);
        return err;
    }
    (void)redisSetTimeout(c, cl_tv(cs->timeout_ms));
    int err = 0;
    if (cs->pass && cs->user)
        err = cl_cmd_ok(cs, nd, c, "AUTH", "AUTH %s %s", cs->user, cs->pass);
    else if (cs->pass)
        err = cl_cmd_ok(cs, nd, c, "AUTH", "AUTH %s", cs->pass);
    if (!err && cs->db)
        err = cl_cmd_ok(cs, nd, c, "SELECT", "SELECT %d", cs->db);
    if (!err && id) {
        struct cl_nopipe np;
        cl_nopipe_begin(&np);
        redisReply *r = redisCommand(c, "CLIENT ID");
        cl_nopipe_end(&np);
        if (!r)
            err = cl_ctx_errno(c);
        else
            *id = r->type == REDIS_REPLY_INTEGER ? r->integer : 0;
        if (r)
            freeReplyObject(r);
    }
    if (err) {
        redisFree(c);
        return err;
    }
    *out = c;
    return 0;
}

/* Connect to node i and run one command on that new connection.  The
 * reply, or NULL with *err set (a refusal is not NULL: the caller looks);
 * *cp is the connection (or NULL), which the caller frees. */
static redisReply *cl_node_vcommand(struct cl_store *cs, int i, bool quiet, redisContext **cp,
                                    int *err, const char *fmt, va_list ap)
{
    *err = cl_connect(cs, i, cp, NULL, quiet);
    if (*err)
        return NULL;
    struct cl_nopipe np;
    cl_nopipe_begin(&np);
    redisReply *r = redisvCommand(*cp, fmt, ap);
    cl_nopipe_end(&np);
    *err = r ? 0 : cl_ctx_errno(*cp);
    return r;
}

static redisReply *cl_node_command(struct cl_store *cs, int i, bool quiet, redisContext **cp,
                                   int *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = cl_node_vcommand(cs, i, quiet, cp, err, fmt, ap);
    va_end(ap);
    return r;
}

/* ---------------------------------------------------------------------------
 * The slot map
 * ------------------------------------------------------------------------- */

/* The index of host:port in the node table, or -1 (nothing is added). */
static int cl_node_find(struct cl_store *cs, const char *host, size_t hlen, int port)
{
    unsigned n = atomic_load_explicit(&cs->nnodes, memory_order_acquire);
    for (unsigned i = 0; i < n; i++)
        if (cs->nodes[i].port == port && strlen(cs->nodes[i].host) == hlen &&
            memcmp(cs->nodes[i].host, host, hlen) == 0)
            return (int)i;
    return -1;
}

/*
 * Live replicas of each primary, from CLUSTER NODES: a replica counts when
 * it is not flagged "fail" and its cluster link is connected.  With
 * replicas=N, a write to a primary that has fewer is refused at once
 * (EREMOTEIO) instead of waiting out WAIT's timeout on every batch: after
 * a failover the new primary has no replica until one comes back, and each
 * eviction batch would otherwise stall for wait_timeout.  A replica that is
 * listed but does not ack still goes through WAIT.  Lines look like
 * "<id> <ip:port@bus[,host]> <flags> <primary-id|-> <ping> <pong> <epoch>
 * <link> [slots...]".
 */
static void cl_count_replicas(struct cl_store *cs, redisContext *c)
{
    struct cl_nopipe np;
    cl_nopipe_begin(&np);
    redisReply *r = redisCommand(c, "CLUSTER NODES");
    cl_nopipe_end(&np);
    if (!r)
        return;
    if (r->type != REDIS_REPLY_STRING) {
        freeReplyObject(r);
        return;
    }
    struct {
        char id[64];
        int node;
        int nrep;
    } prim[CL_MAX_NODES];
    size_t np_ = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (const char *line = r->str; line && *line;) {
            const char *eol = strchr(line, '\n');
            char buf[512];
            size_t len = eol ? (size_t)(eol - line) : strlen(line);
            snprintf(buf, sizeof buf, "%.*s", (int)(len < sizeof buf ? len : sizeof buf - 1), line);
            line = eol ? eol + 1 : NULL;
            char id[64], addr[160], flags[160], primary[64], link[32];
            long long ping, pong, epoch;
            if (sscanf(buf, "%63s %159s %159s %63s %lld %lld %lld %31s", id, addr, flags, primary,
                       &ping, &pong, &epoch, link) != 8)
                continue;
            bool failed = strstr(flags, "fail") && !strstr(flags, "fail?");
            if (pass == 0 && strstr(flags, "master") && np_ < CL_MAX_NODES) {
                char *at = strchr(addr, '@');
                if (at)
                    *at = '\0';
                char *colon = strrchr(addr, ':');
                if (!colon || colon == addr)
                    continue;
                int node = cl_node_find(cs, addr, (size_t)(colon - addr), atoi(colon + 1));
                if (node < 0)
                    continue;
                snprintf(prim[np_].id, sizeof prim[np_].id, "%s", id);
                prim[np_].node = node;
                prim[np_].nrep = 0;
                np_++;
            } else if (pass == 1 && strstr(flags, "slave") && !failed &&
                       strcmp(link, "connected") == 0) {
                for (size_t k = 0; k < np_; k++)
                    if (strcmp(prim[k].id, primary) == 0)
                        prim[k].nrep++;
            }
        }
    }
    freeReplyObject(r);
    for (size_t k = 0; k < np_; k++)
        atomic_store(&cs->nodes[prim[k].node].replicas_seen, prim[k].nrep);
}

/*
 * A refresh asks one node after the other (those that have not failed
 * first) for CLUSTER SLOTS, builds a whole new map, and publishes it slot by
 * slot.  Routing reads slots without a lock: a command routed with the old
 * owner just gets a MOVED.  A node is "failed" from a failed connection to
 * it until a connection to it succeeds; slots that move away from a failed
 * node count as a failover.  The same connection then asks CLUSTER NODES
 * how many live replicas each primary has (cl_count_replicas).
 */
static int cl_refresh_from(struct cl_store *cs, int i, bool quiet)
{
    redisContext *c = NULL;
    int err = 0;
    redisReply *r = cl_node_command(cs, i, true, &c, &err, "CLUSTER SLOTS");
    if (!r) {
        if (c)
            redisFree(c);
        return err;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        err = strstr(r->str, "cluster support disabled") ? EPROTONOSUPPORT : cl_reply_errno(r);
        if (!quiet || err == EPROTONOSUPPORT)
            m_error("store", "%s: node %s: CLUSTER SLOTS refused: %s%s", cs->name,
                    cs->nodes[i].addr, r->str,
                    err == EPROTONOSUPPORT ? " (not a cluster node: use redis://host:port)" : "");
        freeReplyObject(r);
        redisFree(c);
        return err;
    }
    static _Thread_local uint8_t map[CL_NSLOTS];
    memset(map, CL_NONE, sizeof map);
    err = r->type == REDIS_REPLY_ARRAY ? 0 : EIO;
    for (size_t k = 0; !err && k < r->elements; k++) {
        redisReply *e = r->element[k];
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 ||
            e->element[0]->type != REDIS_REPLY_INTEGER ||
            e->element[1]->type != REDIS_REPLY_INTEGER ||
            e->element[2]->type != REDIS_REPLY_ARRAY || e->element[2]->elements < 2) {
            err = EIO;
            break;
        }
        redisReply *p = e->element[2];
        const char *host = p->element[0]->type == REDIS_REPLY_STRING ? p->element[0]->str : "";
        size_t hlen = strlen(host);
        if (hlen == 0 || strcmp(host, "?") == 0) { /* unknown address: the one we asked */
            host = cs->nodes[i].host;
            hlen = strlen(host);
        }
        int node = cl_node_get(cs, host, hlen, (int)p->element[1]->integer);
        long long lo = e->element[0]->integer, hi = e->element[1]->integer;
        if (node < 0 || lo < 0 || hi >= CL_NSLOTS || lo > hi) {
            err = EIO;
            break;
        }
        memset(map + lo, node, (size_t)(hi - lo + 1));
    }
    freeReplyObject(r);
    if (!err)
        cl_count_replicas(cs, c);
    redisFree(c);
    if (err) {
        m_error("store", "%s: node %s: malformed CLUSTER SLOTS reply", cs->name, cs->nodes[i].addr);
        return err;
    }
    uint64_t lost[CL_MAX_NODES] = {0};
    for (unsigned s = 0; s < CL_NSLOTS; s++) {
        uint8_t old = atomic_load_explicit(&cs->slot_node[s], memory_order_relaxed);
        if (old != map[s]) {
            if (old != CL_NONE)
                lost[old]++;
            atomic_store_explicit(&cs->slot_node[s], map[s], memory_order_relaxed);
        }
    }
    unsigned n = atomic_load_explicit(&cs->nnodes, memory_order_acquire);
    for (unsigned k = 0; k < n; k++) {
        if (lost[k] && atomic_load(&cs->nodes[k].failed)) {
            CL_INC(cs->nodes[k].failovers);
            CL_INC(cs->failovers);
            m_warn("store",
                   "%s: node %s failed and %llu hash slots moved to other nodes "
                   "(failover)",
                   cs->name, cs->nodes[k].addr, (unsigned long long)lost[k]);
        }
    }
    cl_node_up(&cs->nodes[i]); /* it answered */
    return 0;
}

/*
 * One server has no slot map to refresh: a refresh checks that it answers
 * and counts its replicas that are online (INFO replication lists each as
 * "slaveK:ip=...,state=online,..."), for the same reason as
 * cl_count_replicas: with replicas=N, writes are refused at once while
 * fewer are attached instead of each batch waiting out WAIT, and resume as
 * soon as one is back.
 */
static int cl_refresh_single(struct cl_store *cs, bool quiet)
{
    redisContext *c = NULL;
    int err = 0;
    redisReply *r = cl_node_command(cs, 0, quiet, &c, &err, "INFO replication");
    if (!r) {
        /* err says why */
    } else if (r->type == REDIS_REPLY_ERROR) {
        err = cl_reply_errno(r);
        if (!quiet)
            m_error("store", "%s: INFO replication refused: %s (%s) %s", cs->name, r->str,
                    strerror(err), cl_err_hint(err));
    } else if (r->type == REDIS_REPLY_STRING) {
        int online = 0;
        for (const char *line = r->str; line && *line;) {
            const char *eol = strchr(line, '\n');
            size_t len = eol ? (size_t)(eol - line) : strlen(line);
            if (len > 6 && strncmp(line, "slave", 5) == 0 && line[5] >= '0' && line[5] <= '9' &&
                memmem(line, len, "state=online", 12))
                online++;
            line = eol ? eol + 1 : NULL;
        }
        atomic_store(&cs->nodes[0].replicas_seen, online);
    }
    if (r)
        freeReplyObject(r);
    if (c)
        redisFree(c);
    if (!err)
        cl_node_up(&cs->nodes[0]);
    return err;
}

static int cl_refresh(struct cl_store *cs, bool quiet)
{
    pthread_mutex_lock(&cs->refresh_lock);
    int err = ECONNREFUSED;
    if (cs->single) {
        err = cl_refresh_single(cs, quiet);
        goto out;
    }
    unsigned n = atomic_load_explicit(&cs->nnodes, memory_order_acquire);
    for (int pass = 0; pass < 2; pass++) {
        for (unsigned i = 0; i < n; i++) {
            if (atomic_load(&cs->nodes[i].failed) != (pass == 1))
                continue;
            err = cl_refresh_from(cs, (int)i, quiet);
            if (err == 0 || err == EACCES || err == EPROTONOSUPPORT)
                goto out;
        }
    }
out:
    if (!err) {
        CL_INC(cs->refreshes);
        atomic_store(&cs->refresh_wanted, false);
    }
    atomic_store(&cs->refreshed_ns, cl_now_ns());
    pthread_mutex_unlock(&cs->refresh_lock);
    return err;
}

/* A refresh if one was asked for, at most every CL_REFRESH_MIN_MS, and not
 * while another thread does one. */
static void cl_maybe_refresh(struct cl_store *cs)
{
    if (!atomic_load(&cs->refresh_wanted))
        return;
    if (cl_now_ns() - atomic_load(&cs->refreshed_ns) < CL_REFRESH_MIN_MS * 1000000LL)
        return;
    (void)cl_refresh(cs, true);
}

static int cl_route(struct cl_store *cs, const char *key, size_t klen)
{
    if (cs->single)
        return 0;
    unsigned hs = m_store_cluster_keyslot(key, klen);
    uint8_t node = atomic_load_explicit(&cs->slot_node[hs], memory_order_relaxed);
    return node == CL_NONE ? -1 : node;
}

/* ---------------------------------------------------------------------------
 * Store slots: lowest reused first, freed after their DEL
 * ------------------------------------------------------------------------- */

static int cl_map_grow(struct cl_store *cs, uint64_t slot)
{
    if (slot / 64 < cs->nwords)
        return 0;
    size_t nwords = cs->nwords ? cs->nwords : 64;
    while (nwords <= slot / 64)
        nwords *= 2;
    /* The DEL queue gets room for every slot the map can hold, here: a
     * slot_free must not allocate.  Under `moat run` it is called from
     * inside the allocator (its purger returning pages holds the
     * allocator's lock), and a realloc there deadlocked on that lock. */
    if (cs->cap_pending < nwords * 64) {
        uint64_t *p = realloc(cs->pending, nwords * 64 * sizeof *p);
        if (!p)
            return ENOMEM;
        cs->pending = p;
        cs->cap_pending = nwords * 64;
    }
    uint64_t *map = realloc(cs->map, nwords * sizeof *map);
    if (!map)
        return ENOMEM;
    memset(map + cs->nwords, 0, (nwords - cs->nwords) * sizeof *map);
    cs->map = map;
    cs->nwords = nwords;
    return 0;
}

static int cl_slot_alloc(struct m_store *s, uint64_t *slot)
{
    struct cl_store *cs = cl_of(s);
    pthread_mutex_lock(&cs->lock);
    uint64_t n = UINT64_MAX;
    for (uint64_t w = cs->hint / 64; w < (cs->next + 63) / 64; w++) {
        uint64_t bits = ~cs->map[w];
        if (w == cs->hint / 64)
            bits &= ~0ull << (cs->hint % 64);
        if (bits) {
            uint64_t cand = w * 64 + (uint64_t)__builtin_ctzll(bits);
            if (cand < cs->next)
                n = cand;
            break;
        }
    }
    if (n == UINT64_MAX && cs->npending) {
        n = cs->pending[--cs->npending]; /* still marked: cancel its DEL */
    } else if (n == UINT64_MAX) {
        cs->hint = cs->next;
        n = cs->next;
        int rc = cl_map_grow(cs, n);
        if (rc) {
            pthread_mutex_unlock(&cs->lock);
            return rc;
        }
        cs->next++;
        cs->map[n / 64] |= 1ull << (n % 64);
    } else {
        cs->map[n / 64] |= 1ull << (n % 64);
        cs->hint = n + 1;
    }
    cs->used++;
    pthread_mutex_unlock(&cs->lock);
    *slot = n;
    return 0;
}

static void cl_pending_push(struct cl_store *cs, uint64_t slot)
{
    if (cs->npending == cs->cap_pending) {
        size_t cap = cs->cap_pending ? cs->cap_pending * 2 : 256;
        uint64_t *p = realloc(cs->pending, cap * sizeof *p);
        if (!p) {
            m_warn("store", "%s: out of memory queueing the DEL of slot %llu; it stays in use",
                   cs->name, (unsigned long long)slot);
            return;
        }
        cs->pending = p;
        cs->cap_pending = cap;
    }
    cs->pending[cs->npending++] = slot;
}

static void cl_slot_free(struct m_store *s, uint64_t slot)
{
    struct cl_store *cs = cl_of(s);
    pthread_mutex_lock(&cs->lock);
    if (slot >= cs->next || !(cs->map[slot / 64] >> (slot % 64) & 1)) {
        pthread_mutex_unlock(&cs->lock);
        m_error("store", "%s: slot %llu freed but not allocated (double free?)", cs->name,
                (unsigned long long)slot);
        return;
    }
    cl_pending_push(cs, slot);
    cs->used--;
    pthread_mutex_unlock(&cs->lock);
}

static void cl_slot_release(struct cl_store *cs, uint64_t slot)
{
    pthread_mutex_lock(&cs->lock);
    cs->map[slot / 64] &= ~(1ull << (slot % 64));
    if (slot < cs->hint)
        cs->hint = slot;
    pthread_mutex_unlock(&cs->lock);
}

static void cl_slot_requeue(struct cl_store *cs, uint64_t slot)
{
    pthread_mutex_lock(&cs->lock);
    cl_pending_push(cs, slot);
    pthread_mutex_unlock(&cs->lock);
}

/* ---------------------------------------------------------------------------
 * Queues: lists
 * ------------------------------------------------------------------------- */

static int cl_grow(void **arr, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap)
        return 0;
    size_t c = *cap ? *cap : 64;
    while (c < need)
        c *= 2;
    void *p = realloc(*arr, c * size);
    if (!p)
        return ENOMEM;
    *arr = p;
    *cap = c;
    return 0;
}

static int cl_conn_push(struct cl_conn *cn, struct cl_req r)
{
    if (cn->count == cn->cap) {
        size_t cap = cn->cap ? cn->cap * 2 : 128;
        struct cl_req *n = malloc(cap * sizeof *n);
        if (!n)
            return ENOMEM;
        for (size_t i = 0; i < cn->count; i++)
            n[i] = cn->reqs[(cn->head + i) % cn->cap];
        free(cn->reqs);
        cn->reqs = n;
        cn->cap = cap;
        cn->head = 0;
    }
    if (cn->count == 0) /* the command timeout runs from the oldest command */
        cn->progress_ns = cl_now_ns();
    cn->reqs[(cn->head + cn->count) % cn->cap] = r;
    cn->count++;
    return 0;
}

static struct cl_req cl_conn_pop(struct cl_conn *cn)
{
    struct cl_req r = cn->reqs[cn->head];
    cn->head = (cn->head + 1) % cn->cap;
    cn->count--;
    return r;
}

/* Lists are reserved at submit for the I/Os in flight (nio <= depth), so
 * pushing a completion or a retry cannot fail for lack of memory. */
static void cl_done(struct cl_store *cs, struct cl_queue *q, struct m_store_io *io, int err,
                    int node)
{
    io->result = err;
    if (err) {
        CL_INC(cs->errors);
    } else if (io->op == M_STORE_READ) {
        CL_INC(cs->reads);
        CL_ADD(cs->bytes_read, M_STORE_RECORD);
        if (node >= 0) {
            CL_INC(cs->nodes[node].reads);
            CL_ADD(cs->nodes[node].bytes_read, M_STORE_RECORD);
        }
    } else {
        CL_INC(cs->writes);
        CL_ADD(cs->bytes_written, M_STORE_RECORD);
        if (node >= 0) {
            CL_INC(cs->nodes[node].writes);
            CL_ADD(cs->nodes[node].bytes_written, M_STORE_RECORD);
        }
    }
    q->done[(q->dhead + q->ndone++) % q->base.depth] = io;
}

/* A retryable failure of req at node: wait and retry, or give up when its
 * deadline has passed. */
static void cl_retry_or_fail(struct cl_store *cs, struct cl_queue *q, struct cl_req req, int err,
                             int node)
{
    int64_t now = cl_now_ns();
    const char *where = node >= 0 ? cs->nodes[node].addr : "(no primary)";
    if (cl_retryable(err)) {
        atomic_store(&cs->refresh_wanted, true);
        /* A node unreachable for a whole retry timeout is taken for dead:
         * an I/O that fails there gives up at once instead of waiting out
         * a timeout of its own (with a dead server, page-ins would
         * otherwise come back one per retry timeout); the node's first
         * successful connection ends that. */
        int64_t deadline = req.deadline_ns;
        int64_t since = node >= 0 ? atomic_load(&cs->nodes[node].down_since_ns) : 0;
        if (since && since + (int64_t)cs->retry_timeout_ms * 1000000 < deadline)
            deadline = since + (int64_t)cs->retry_timeout_ms * 1000000;
        if (cs->retry_timeout_ms > 0 && now < deadline) {
            unsigned shift = req.attempts < 6 ? req.attempts : 6;
            int64_t ms = (int64_t)CL_BACKOFF_MIN_MS << shift;
            if (ms > CL_BACKOFF_MAX_MS)
                ms = CL_BACKOFF_MAX_MS;
            req.attempts++;
            req.node = -1;
            req.asking = false;
            req.ready_ns = now + ms * 1000000;
            q->retry[q->nretry++] = req;
            CL_INC(cs->retries);
            if (node >= 0)
                CL_INC(cs->nodes[node].retries);
            return;
        }
        if (cs->retry_timeout_ms > 0) {
            /* One line a second: a dead node fails many I/Os at once. */
            uint64_t n = CL_INC(cs->timeouts);
            int64_t last = atomic_load(&cs->gaveup_logged_ns);
            if (now - last >= 1000000000LL &&
                atomic_compare_exchange_strong(&cs->gaveup_logged_ns, &last, now)) {
                char key[CL_KEY_MAX];
                cl_key(cs, req.io->slot, key);
                m_error("store",
                        "%s: %s of key %s (store slot %llu) at node %s gave up after %u attempts "
                        "over %d ms: last error %s; %s (%llu I/Os gave up so far)",
                        cs->name, req.io->op == M_STORE_READ ? "GET" : "SET", key,
                        (unsigned long long)req.io->slot, where, req.attempts + 1,
                        cs->retry_timeout_ms, strerror(err), cl_err_hint(err),
                        (unsigned long long)n + 1);
            }
            err = ETIMEDOUT;
        }
    }
    char key[CL_KEY_MAX];
    cl_key(cs, req.io->slot, key);
    cl_log_once(cs, err, "%s of key %s (store slot %llu) at node %s failed: %s %s",
                req.io->op == M_STORE_READ ? "GET" : "SET", key, (unsigned long long)req.io->slot,
                where, strerror(err), cl_err_hint(err));
    cl_done(cs, q, req.io, err, node);
}

/* The connection to node i failed: everything in flight on it is retried
 * (or fails), DELs are queued again, and the connection is fenced. */
static void cl_conn_fail(struct cl_store *cs, struct cl_queue *q, int i, int err)
{
    struct cl_conn *cn = &q->conns[i];
    struct cl_node *nd = &cs->nodes[i];
    cl_log_once(cs, err, "connection to node %s failed with %zu commands in flight: %s (%s) %s",
                nd->addr, cn->count + cn->nheld, cn->c && cn->c->errstr[0] ? cn->c->errstr : "-",
                strerror(err), cl_err_hint(err));
    CL_INC(nd->conn_failures);
    cl_node_down(nd);
    atomic_store(&cs->refresh_wanted, true);
    if (cn->c) {
        redisFree(cn->c);
        cn->c = NULL;
    }
    if (cn->client_id > 0) {
        pthread_mutex_lock(&cs->lock);
        nd->fence_ids[nd->nfence++ % CL_FENCE_MAX] = cn->client_id;
        pthread_mutex_unlock(&cs->lock);
        cn->client_id = 0;
    }
    for (size_t k = 0; k < cn->nheld; k++)
        cl_retry_or_fail(cs, q, cn->held[k], err, i);
    cn->nheld = 0;
    while (cn->count) {
        struct cl_req r = cl_conn_pop(cn);
        if (r.kind == CL_IO)
            cl_retry_or_fail(cs, q, r, err, i);
        else if (r.kind == CL_DEL)
            cl_slot_requeue(cs, r.slot);
    }
    cn->head = 0;
    cn->unwaited = 0;
    cn->dirty = false;
    cn->down_until_ns = cl_now_ns() + CL_BACKOFF_MIN_MS * 1000000LL;
    cn->down_err = err;
}

/* The connection to node i, connected; fences of the node's failed
 * connections go first.  0 or the errno of the connect. */
static int cl_conn_ready(struct cl_store *cs, struct cl_queue *q, int i)
{
    struct cl_conn *cn = &q->conns[i];
    struct cl_node *nd = &cs->nodes[i];
    if (!cn->c) {
        int64_t now = cl_now_ns();
        if (now < cn->down_until_ns && cs->retry_timeout_ms > 0)
            return cn->down_err;
        int err = cl_connect(cs, i, &cn->c, &cn->client_id, true);
        if (!err)
            cl_node_up(nd);
        if (err) {
            cl_log_once(cs, err, "cannot connect to node %s: %s %s", nd->addr, strerror(err),
                        cl_err_hint(err));
            CL_INC(nd->conn_failures);
            cl_node_down(nd);
            atomic_store(&cs->refresh_wanted, true);
            cn->down_until_ns = now + CL_BACKOFF_MIN_MS * 1000000LL;
            cn->down_err = err;
            return err;
        }
    }
    long long fences[CL_FENCE_MAX];
    size_t nf = 0;
    pthread_mutex_lock(&cs->lock);
    if (nd->nfence - cn->fenced > CL_FENCE_MAX)
        cn->fenced = nd->nfence - CL_FENCE_MAX;
    for (; cn->fenced < nd->nfence; cn->fenced++)
        fences[nf++] = nd->fence_ids[cn->fenced % CL_FENCE_MAX];
    pthread_mutex_unlock(&cs->lock);
    for (size_t k = 0; k < nf; k++) {
        if (fences[k] == cn->client_id) /* the server restarted and reused the id */
            continue;
        if (redisAppendCommand(cn->c, "CLIENT KILL ID %lld", fences[k]) != REDIS_OK ||
            cl_conn_push(cn, (struct cl_req){.kind = CL_FENCE}))
            return ENOMEM;
        cn->dirty = true;
    }
    return 0;
}

/* Append req's command to the connection of its node. */
static void cl_send_io(struct cl_store *cs, struct cl_queue *q, struct cl_req req)
{
    char key[CL_KEY_MAX];
    size_t klen = cl_key(cs, req.io->slot, key);
    int i = req.node >= 0 ? req.node : cl_route(cs, key, klen);
    if (i < 0) {
        cl_retry_or_fail(cs, q, req, ENETDOWN, -1);
        return;
    }
    if (req.io->op == M_STORE_WRITE && cs->replicas) {
        int seen = atomic_load(&cs->nodes[i].replicas_seen);
        if (seen >= 0 && (unsigned)seen < cs->replicas) {
            CL_INC(cs->wait_failures);
            CL_INC(cs->nodes[i].wait_failures);
            atomic_store(&cs->refresh_wanted, true); /* to see a replica come back */
            cl_log_once(cs, EREMOTEIO,
                        "node %s has %d live replica(s) and %u are asked for: writes to it "
                        "are refused (their pages stay resident) until one is back",
                        cs->nodes[i].addr, seen, cs->replicas);
            cl_done(cs, q, req.io, EREMOTEIO, i);
            return;
        }
    }
    int err = cl_conn_ready(cs, q, i);
    if (err) {
        if (err == ENOMEM)
            cl_done(cs, q, req.io, ENOMEM, i);
        else
            cl_retry_or_fail(cs, q, req, err, i);
        return;
    }
    struct cl_conn *cn = &q->conns[i];
    bool ok = true;
    if (req.asking) {
        ok &= redisAppendCommand(cn->c, "ASKING") == REDIS_OK;
        ok &= cl_conn_push(cn, (struct cl_req){.kind = CL_ASKING}) == 0;
    }
    if (req.io->op == M_STORE_WRITE) {
        ok &= redisAppendCommand(cn->c, "SET %b %b", key, klen, req.io->buf,
                                 (size_t)M_STORE_RECORD) == REDIS_OK;
        cn->unwaited++;
    } else {
        ok &= redisAppendCommand(cn->c, "GET %b", key, klen) == REDIS_OK;
    }
    req.kind = CL_IO;
    if (!ok || cl_conn_push(cn, req)) {
        /* The pipeline no longer matches the commands: drop the connection. */
        if (ok)
            cl_done(cs, q, req.io, ENOMEM, i);
        cl_conn_fail(cs, q, i, ENOMEM);
        return;
    }
    cn->dirty = true;
}

/* Append a command that is not an I/O (a DEL, the liveness key) to the
 * connection of the key's node.  0 or an errno (the caller requeues). */
static int cl_send_other(struct cl_store *cs, struct cl_queue *q, struct cl_req r, const char *key,
                         size_t klen, const char *fmt, ...)
{
    int i = cl_route(cs, key, klen);
    if (i < 0)
        return ENETDOWN;
    int err = cl_conn_ready(cs, q, i);
    if (err)
        return err;
    struct cl_conn *cn = &q->conns[i];
    va_list ap;
    va_start(ap, fmt);
    int ok = redisvAppendCommand(cn->c, fmt, ap);
    va_end(ap);
    if (ok != REDIS_OK || cl_conn_push(cn, r)) {
        cl_conn_fail(cs, q, i, ENOMEM);
        return ENOMEM;
    }
    cn->dirty = true;
    return 0;
}

/* Write every connection's pipeline, each ending with a WAIT if it carries
 * writes and replicas are asked for. */
static void cl_flush(struct cl_store *cs, struct cl_queue *q)
{
    unsigned n = atomic_load_explicit(&cs->nnodes, memory_order_acquire);
    for (unsigned i = 0; i < n; i++) {
        struct cl_conn *cn = &q->conns[i];
        if (!cn->dirty || !cn->c)
            continue;
        if (cs->replicas && cn->unwaited) {
            if (redisAppendCommand(cn->c, "WAIT %u %d", cs->replicas, cs->wait_timeout_ms) !=
                    REDIS_OK ||
                cl_conn_push(cn, (struct cl_req){.kind = CL_WAIT})) {
                cl_conn_fail(cs, q, (int)i, ENOMEM);
                continue;
            }
            cn->unwaited = 0;
        }
        int wdone = 0;
        CL_ADD(cs->bytes_sent, sdslen(cn->c->obuf));
        struct cl_nopipe np;
        cl_nopipe_begin(&np);
        while (!wdone)
            if (redisBufferWrite(cn->c, &wdone) != REDIS_OK)
                break;
        cl_nopipe_end(&np);
        cn->dirty = false;
        CL_INC(cs->nodes[i].round_trips);
        if (!wdone)
            cl_conn_fail(cs, q, (int)i, cl_ctx_errno(cn->c));
    }
}

/* ---------------------------------------------------------------------------
 * Replies
 * ------------------------------------------------------------------------- */

/* "MOVED 3999 127.0.0.1:6381" / "ASK ...": the node index, or -1. */
static int cl_parse_redirect(struct cl_store *cs, int from, const char *s, unsigned *hslot)
{
    const char *sp = strchr(s, ' ');
    if (!sp)
        return -1;
    char *end;
    unsigned long hs = strtoul(sp + 1, &end, 10);
    if (*end != ' ' || hs >= CL_NSLOTS)
        return -1;
    const char *addr = end + 1;
    const char *colon = strrchr(addr, ':');
    if (!colon)
        return -1;
    long port = strtol(colon + 1, &end, 10);
    if (port <= 0 || port > 65535)
        return -1;
    size_t hlen = (size_t)(colon - addr);
    const char *host = addr;
    if (hlen == 0) { /* "MOVED 1 :6380": the host of the node that answered */
        host = cs->nodes[from].host;
        hlen = strlen(host);
    }
    *hslot = (unsigned)hs;
    return cl_node_get(cs, host, hlen, (int)port);
}

static void cl_on_reply(struct cl_store *cs, struct cl_queue *q, int i, redisReply *r)
{
    struct cl_conn *cn = &q->conns[i];
    struct cl_node *nd = &cs->nodes[i];
    struct cl_req req = cl_conn_pop(cn);
    CL_INC(nd->commands);
    bool is_err = r->type == REDIS_REPLY_ERROR;
    switch (req.kind) {
    case CL_ASKING:
        return;
    case CL_FENCE:
        if (!is_err)
            CL_INC(cs->fences);
        return;
    case CL_ALIVE:
        if (is_err)
            cl_log_once(cs, cl_reply_errno(r), "refreshing the liveness key on %s refused: %s",
                        nd->addr, r->str);
        return;
    case CL_DEL:
        if (is_err) {
            unsigned hs;
            int to = -1;
            if (strncmp(r->str, "MOVED ", 6) == 0 &&
                (to = cl_parse_redirect(cs, i, r->str, &hs)) >= 0)
                atomic_store_explicit(&cs->slot_node[hs], (uint8_t)to, memory_order_relaxed);
            atomic_store(&cs->refresh_wanted, true);
            cl_slot_requeue(cs, req.slot);
        } else {
            CL_INC(cs->dels);
            cl_slot_release(cs, req.slot);
        }
        return;
    case CL_WAIT: {
        long long acks = r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
        bool enough = acks >= (long long)cs->replicas;
        if (!enough && cn->nheld) {
            CL_INC(cs->wait_failures);
            CL_INC(nd->wait_failures);
            atomic_store(&cs->refresh_wanted, true); /* a replica gone shows in the refresh */
            cl_log_once(cs, EREMOTEIO,
                        "node %s: %zu writes reached %lld of the %u replicas asked for within "
                        "%d ms%s%s; they fail and their pages stay resident",
                        nd->addr, cn->nheld, acks < 0 ? 0 : acks, cs->replicas, cs->wait_timeout_ms,
                        is_err ? ": " : "", is_err ? r->str : "");
        }
        for (size_t k = 0; k < cn->nheld; k++)
            cl_done(cs, q, cn->held[k].io, enough ? 0 : EREMOTEIO, i);
        cn->nheld = 0;
        return;
    }
    default:
        break;
    }
    struct m_store_io *io = req.io;
    if (is_err) {
        unsigned hs = 0;
        bool moved = strncmp(r->str, "MOVED ", 6) == 0, ask = strncmp(r->str, "ASK ", 4) == 0;
        if (moved || ask) {
            int to = cl_parse_redirect(cs, i, r->str, &hs);
            CL_INC(cs->redirections);
            CL_INC(*(moved ? &nd->moved : &nd->asks));
            if (to < 0 || ++req.redirects > CL_REDIRECT_MAX) {
                cl_log_once(cs, EIO, "node %s: redirection loop or bad redirection \"%s\"",
                            nd->addr, r->str);
                cl_done(cs, q, io, EIO, i);
                return;
            }
            if (moved) {
                atomic_store_explicit(&cs->slot_node[hs], (uint8_t)to, memory_order_relaxed);
                atomic_store(&cs->refresh_wanted, true);
                req.node = -1;
                req.asking = false;
            } else {
                req.node = to;
                req.asking = true;
            }
            cl_send_io(cs, q, req);
            return;
        }
        int err = cl_reply_errno(r);
        if (cl_retryable(err)) {
            cl_retry_or_fail(cs, q, req, err, i);
            return;
        }
        char key[CL_KEY_MAX];
        cl_key(cs, io->slot, key);
        cl_log_once(cs, err, "node %s: %s of key %s refused: %s (%s) %s", nd->addr,
                    io->op == M_STORE_READ ? "GET" : "SET", key, r->str, strerror(err),
                    cl_err_hint(err));
        cl_done(cs, q, io, err, i);
        return;
    }
    if (io->op == M_STORE_WRITE) {
        if (r->type != REDIS_REPLY_STATUS) {
            cl_log_once(cs, EIO, "node %s: SET: unexpected reply type %d", nd->addr, r->type);
            cl_done(cs, q, io, EIO, i);
        } else if (cs->replicas) {
            if (cl_grow((void **)&cn->held, &cn->cap_held, cn->nheld + 1, sizeof *cn->held)) {
                cl_done(cs, q, io, ENOMEM, i);
                return;
            }
            cn->held[cn->nheld++] = req;
        } else {
            cl_done(cs, q, io, 0, i);
        }
        return;
    }
    char key[CL_KEY_MAX];
    if (r->type == REDIS_REPLY_NIL) {
        cl_key(cs, io->slot, key);
        cl_log_once(cs, EIO, "key %s (store slot %llu) is missing on node %s", key,
                    (unsigned long long)io->slot, nd->addr);
        cl_done(cs, q, io, EIO, i);
    } else if (r->type != REDIS_REPLY_STRING || r->len != M_STORE_RECORD) {
        cl_key(cs, io->slot, key);
        cl_log_once(cs, EIO, "key %s on node %s: %zu bytes, not a %u-byte record", key, nd->addr,
                    r->type == REDIS_REPLY_STRING ? r->len : (size_t)0, M_STORE_RECORD);
        cl_done(cs, q, io, EIO, i);
    } else {
        memcpy(io->buf, r->str, M_STORE_RECORD);
        CL_ADD(cs->bytes_received, r->len);
        cl_done(cs, q, io, 0, i);
    }
}

/* Take every reply node i's connection has buffered. */
static void cl_drain(struct cl_store *cs, struct cl_queue *q, int i)
{
    struct cl_conn *cn = &q->conns[i];
    while (cn->c && cn->count) {
        void *p = NULL;
        if (redisGetReplyFromReader(cn->c, &p) != REDIS_OK) {
            cl_conn_fail(cs, q, i, EIO);
            return;
        }
        if (!p)
            return;
        cn->progress_ns = cl_now_ns();
        cl_on_reply(cs, q, i, p);
        freeReplyObject(p);
    }
}

/* ---------------------------------------------------------------------------
 * Submit and reap
 * ------------------------------------------------------------------------- */

static int cl_submit(struct m_store_queue *bq, struct m_store_io *const *ios, size_t n)
{
    struct cl_queue *q = clq_of(bq);
    struct cl_store *cs = cl_of(bq->store);
    if (n == 0)
        return 0;
    if (q->nio + n > bq->depth)
        return EAGAIN;
    for (size_t i = 0; i < n; i++) {
        const struct m_store_io *io = ios[i];
        if (!io || (io->op != M_STORE_READ && io->op != M_STORE_WRITE) || !io->buf) {
            m_error("store", "submit to %s: I/O %zu of %zu is malformed; nothing submitted",
                    cs->name, i, n);
            return EINVAL;
        }
    }
    cl_maybe_refresh(cs);
    int64_t now = cl_now_ns();

    /* Freed slots ride along; a DEL that cannot be sent now waits. */
    uint64_t dels[CL_DEL_BATCH];
    size_t ndel = 0;
    pthread_mutex_lock(&cs->lock);
    while (ndel < CL_DEL_BATCH && cs->npending)
        dels[ndel++] = cs->pending[--cs->npending];
    pthread_mutex_unlock(&cs->lock);
    char key[CL_KEY_MAX];
    for (size_t k = 0; k < ndel; k++) {
        size_t klen = cl_key(cs, dels[k], key);
        if (cl_send_other(cs, q, (struct cl_req){.kind = CL_DEL, .slot = dels[k]}, key, klen,
                          "DEL %b", key, klen))
            cl_slot_requeue(cs, dels[k]);
    }
    int64_t now_s = now / 1000000000;
    int64_t last = atomic_load(&cs->alive_at);
    if (now_s - last >= CL_ALIVE_REFRESH_S &&
        atomic_compare_exchange_strong(&cs->alive_at, &last, now_s)) {
        size_t klen = cl_alive_key(cs, key);
        (void)cl_send_other(cs, q, (struct cl_req){.kind = CL_ALIVE}, key, klen, "SET %b %d EX %d",
                            key, klen, (int)getpid(), CL_ALIVE_TTL_S);
    }

    q->nio += (unsigned)n;
    for (size_t k = 0; k < n; k++) {
        ios[k]->result = 0;
        cl_send_io(cs, q,
                   (struct cl_req){.kind = CL_IO,
                                   .io = ios[k],
                                   .node = -1,
                                   .deadline_ns = now + (int64_t)cs->retry_timeout_ms * 1000000});
    }
    cl_flush(cs, q);
    return 0;
}

/*
 * Waiting for replies.  A thread blocked in poll() is woken by the reply's
 * arrival through the scheduler, which on a virtual machine can cost as
 * much as the round trip to a server on loopback (DESIGN.md: a blocked
 * wake-up on another CPU ~65 us against ~21 us spinning).  With the URI
 * option spin=US the waiting thread first polls without blocking for up to
 * that long, yielding the CPU between polls (a server on the same CPU
 * runs).  It is off by default: on this 2-vCPU machine, with the
 * server on the same machine and other work running, the spinning thread
 * takes the CPU the server needs, and one faulting thread's random
 * page-ins were slower with it (docs/redis.md, "Waiting for replies").
 */
static int cl_wait(struct cl_store *cs, struct pollfd *pfd, nfds_t np, int64_t wait_ns)
{
    if (wait_ns > 0 && cs->spin_us > 0 && np > 0) {
        int64_t until = cl_now_ns() + (int64_t)cs->spin_us * 1000;
        if (until > cl_now_ns() + wait_ns)
            until = cl_now_ns() + wait_ns;
        do {
            int k = poll(pfd, np, 0);
            if (k != 0)
                return k;
            sched_yield(); /* a server sharing this CPU runs meanwhile */
        } while (cl_now_ns() < until);
    }
    int ms = (int)((wait_ns + 999999) / 1000000);
    return poll(pfd, np, ms);
}

static void cl_run_retries(struct cl_store *cs, struct cl_queue *q, int64_t now)
{
    if (!q->nretry)
        return;
    cl_maybe_refresh(cs);
    size_t n = q->nretry, keep = 0;
    /* Sending may add retries (a connect that fails again): take the list. */
    struct cl_req *due = q->due;
    size_t ndue = 0;
    for (size_t k = 0; k < n; k++) {
        if (q->retry[k].ready_ns <= now)
            due[ndue++] = q->retry[k];
        else
            q->retry[keep++] = q->retry[k];
    }
    q->nretry = keep;
    for (size_t k = 0; k < ndue; k++)
        cl_send_io(cs, q, due[k]);
}

static int cl_reap(struct m_store_queue *bq, struct m_store_io **done, size_t max, size_t min,
                   size_t *ndone)
{
    struct cl_queue *q = clq_of(bq);
    struct cl_store *cs = cl_of(bq->store);
    size_t got = 0;
    *ndone = 0;
    if (min > max)
        min = max;
    if (min > q->nio)
        min = q->nio;
    for (;;) {
        while (got < max && q->ndone) {
            /* In completion order: on one server, the order of submission. */
            done[got++] = q->done[q->dhead];
            q->dhead = (q->dhead + 1) % q->base.depth;
            q->ndone--;
            q->nio--;
        }
        if (got >= max || q->nio == 0)
            break;
        int64_t now = cl_now_ns();
        cl_run_retries(cs, q, now);
        cl_flush(cs, q);
        if (q->ndone && got < max)
            continue;

        /* Wait for replies, the next retry, or a command timeout. */
        unsigned nn = atomic_load_explicit(&cs->nnodes, memory_order_acquire);
        struct pollfd pfd[CL_MAX_NODES];
        int idx[CL_MAX_NODES];
        nfds_t np = 0;
        int64_t wait_ns = got >= min ? 0 : 100 * 1000000LL;
        for (unsigned i = 0; i < nn; i++) {
            struct cl_conn *cn = &q->conns[i];
            if (!cn->c || !cn->count)
                continue;
            int64_t left = cn->progress_ns + (int64_t)cs->timeout_ms * 1000000 - now;
            if (left <= 0) {
                cl_conn_fail(cs, q, (int)i, ETIMEDOUT);
                continue;
            }
            if (left < wait_ns)
                wait_ns = left;
            pfd[np] = (struct pollfd){.fd = cn->c->fd, .events = POLLIN};
            idx[np++] = (int)i;
        }
        for (size_t k = 0; k < q->nretry; k++) {
            int64_t left = q->retry[k].ready_ns - now;
            if (left < wait_ns)
                wait_ns = left < 0 ? 0 : left;
        }
        if (q->ndone)
            continue;
        if (np == 0 && q->nretry == 0) {
            /* Every I/O is either handed back, in flight or waiting to be
             * retried: this cannot happen unless the accounting is wrong. */
            m_error("store", "%s: %u I/Os lost track of in a queue", cs->name, q->nio);
            *ndone = got;
            return EIO;
        }
        if (np == 1 && q->nretry == 0 && got < min && cs->spin_us == 0) {
            /* One connection to wait for and nothing else to do (a page-in
             * on one server): a blocking read, bounded by the socket's
             * timeout (the command timeout, set at connect), saves the
             * poll() of every page-in. */
            struct cl_conn *cn = &q->conns[idx[0]];
            if (redisBufferRead(cn->c) != REDIS_OK) {
                cl_drain(cs, q, idx[0]);
                if (cn->c)
                    cl_conn_fail(cs, q, idx[0], cl_ctx_errno(cn->c));
                continue;
            }
            cn->progress_ns = cl_now_ns();
            cl_drain(cs, q, idx[0]);
            continue;
        }
        int k = cl_wait(cs, pfd, np, wait_ns);
        if (k <= 0) {
            if (got >= min)
                break;
            continue;
        }
        for (nfds_t j = 0; j < np; j++) {
            if (!pfd[j].revents)
                continue;
            struct cl_conn *cn = &q->conns[idx[j]];
            if (!cn->c)
                continue;
            if (redisBufferRead(cn->c) != REDIS_OK) {
                cl_drain(cs, q, idx[j]); /* replies that came before the failure */
                if (cn->c)
                    cl_conn_fail(cs, q, idx[j], cl_ctx_errno(cn->c));
                continue;
            }
            cl_drain(cs, q, idx[j]);
        }
        if (got >= min && !q->ndone)
            break;
    }
    *ndone = got;
    return 0;
}

/* ---------------------------------------------------------------------------
 * Queues
 * ------------------------------------------------------------------------- */

static int cl_queue_new(struct m_store *s, unsigned depth, struct m_store_queue **out)
{
    struct cl_store *cs = cl_of(s);
    *out = NULL;
    if (depth == 0 || depth > 32768)
        return EINVAL;
    struct cl_queue *q = calloc(1, sizeof *q);
    if (!q)
        return ENOMEM;
    /* Every I/O in flight can be in both lists at most once. */
    q->retry = malloc(depth * sizeof *q->retry);
    q->due = malloc(depth * sizeof *q->due);
    q->done = malloc(depth * sizeof *q->done);
    if (!q->retry || !q->due || !q->done) {
        free(q->retry);
        free(q->due);
        free(q->done);
        free(q);
        return ENOMEM;
    }
    q->base.store = s;
    q->base.depth = depth;
    atomic_fetch_add(&cs->nqueues, 1);
    *out = &q->base;
    return 0;
}

static void cl_queue_free(struct m_store_queue *bq)
{
    struct cl_queue *q = clq_of(bq);
    struct cl_store *cs = cl_of(bq->store);
    if (q->nio)
        m_error("store", "queue on %s freed with %u I/Os in flight", cs->name, q->nio);
    for (unsigned i = 0; i < CL_MAX_NODES; i++) {
        struct cl_conn *cn = &q->conns[i];
        /* DELs in flight are waited for, so their slots can be reused. */
        while (!q->nio && cn->c && !cn->c->err && cn->count) {
            void *p = NULL;
            if (redisGetReply(cn->c, &p) != REDIS_OK || !p)
                break;
            cl_on_reply(cs, q, (int)i, p);
            freeReplyObject(p);
        }
        while (cn->count) {
            struct cl_req r = cl_conn_pop(cn);
            if (r.kind == CL_DEL)
                cl_slot_requeue(cs, r.slot);
        }
        if (cn->c)
            redisFree(cn->c);
        free(cn->reqs);
        free(cn->held);
    }
    free(q->retry);
    free(q->due);
    free(q->done);
    free(q);
    atomic_fetch_sub(&cs->nqueues, 1);
}

/* ---------------------------------------------------------------------------
 * URI, open, close
 * ------------------------------------------------------------------------- */

static int cl_bad_uri(const struct cl_store *cs, const char *rest, const char *why)
{
    if (cs->single)
        m_error("store",
                "store URI \"redis:%s\": %s (expected "
                "redis://[user:password@]host:port[/db][?options])",
                rest, why);
    else
        m_error("store",
                "store URI \"redis+cluster:%s\": %s (expected "
                "redis+cluster://[user:password@]host:port[,host:port...][?options])",
                rest, why);
    return EINVAL;
}

static int cl_parse_long(const char *s, size_t len, long lo, long hi, long *out)
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

/* Options after '?', "k=v&k=v" (see the banner):
 *   timeout=MS          no reply for this long fails the connection (5000)
 *   connect_timeout=MS  (2000)
 *   retry_timeout=MS    how long an I/O keeps retrying (15000; 0 = never)
 *   replicas=N          WAIT for N replicas after writes (0)
 *   wait_timeout=MS     WAIT's timeout (1000)
 * An option given twice takes its last value. */
static int cl_parse_opts(struct cl_store *cs, const char *rest, const char *opts)
{
    static const struct {
        const char *name;
        long lo, hi;
    } known[] = {{"timeout", 1, 3600000},       {"connect_timeout", 1, 3600000},
                 {"retry_timeout", 0, 3600000}, {"replicas", 0, CL_MAX_REPLICAS},
                 {"wait_timeout", 1, 3600000},  {"spin", 0, 1000}};
    while (*opts) {
        size_t len = strcspn(opts, "&");
        const char *eq = memchr(opts, '=', len);
        size_t klen = eq ? (size_t)(eq - opts) : len;
        size_t k = 0;
        for (; k < sizeof known / sizeof known[0]; k++)
            if (strlen(known[k].name) == klen && strncmp(opts, known[k].name, klen) == 0)
                break;
        if (k == sizeof known / sizeof known[0]) {
            m_error("store",
                    "store URI \"%s:%s\": unknown option \"%.*s\" (known: timeout, "
                    "connect_timeout, retry_timeout, replicas, wait_timeout, spin)",
                    cs->single ? "redis" : "redis+cluster", rest, (int)klen, opts);
            return EINVAL;
        }
        long v = 0;
        if (!eq ||
            cl_parse_long(eq + 1, (size_t)(opts + len - eq - 1), known[k].lo, known[k].hi, &v)) {
            m_error("store",
                    "store URI \"%s:%s\": option \"%.*s\" must be a whole number "
                    "from %ld to %ld",
                    cs->single ? "redis" : "redis+cluster", rest, (int)len, opts, known[k].lo,
                    known[k].hi);
            return EINVAL;
        }
        switch (k) {
        case 0:
            cs->timeout_ms = (int)v;
            break;
        case 1:
            cs->connect_timeout_ms = (int)v;
            break;
        case 2:
            cs->retry_timeout_ms = (int)v;
            break;
        case 3:
            cs->replicas = (unsigned)v;
            break;
        case 4:
            cs->wait_timeout_ms = (int)v;
            break;
        default:
            cs->spin_us = (int)v;
            break;
        }
        opts += len + (opts[len] == '&');
    }
    return 0;
}

static int cl_parse_uri(struct cl_store *cs, const char *rest)
{
    if (strncmp(rest, "//", 2) != 0)
        return cl_bad_uri(cs, rest,
                          cs->single ? "it must start with redis://"
                                     : "it must start with redis+cluster://");
    const char *p = rest + 2;
    const char *end = p + strcspn(p, "/?");
    const char *at = NULL;
    for (const char *x = p; x < end; x++)
        if (*x == '@')
            at = x;
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (!colon)
            return cl_bad_uri(cs, rest, "credentials must be user:password@ (user may be empty)");
        if (colon > p && !(cs->user = strndup(p, (size_t)(colon - p))))
            return ENOMEM;
        if (!(cs->pass = strndup(colon + 1, (size_t)(at - colon - 1))))
            return ENOMEM;
        p = at + 1;
    }
    if (p == end)
        return cl_bad_uri(cs, rest, cs->single ? "the host is missing" : "no seed node");
    size_t off = (size_t)snprintf(cs->name, sizeof cs->name, "redis+cluster://");
    while (p < end) {
        const char *e = memchr(p, ',', (size_t)(end - p));
        if (!e)
            e = end;
        const char *colon = NULL;
        for (const char *x = p; x < e; x++)
            if (*x == ':')
                colon = x;
        if (!colon)
            return cl_bad_uri(cs, rest,
                              cs->single ? "the port is missing" : "a seed's port is missing");
        if (colon == p)
            return cl_bad_uri(cs, rest,
                              cs->single ? "the host is missing" : "a seed's host is missing");
        long port = 0;
        if (cl_parse_long(colon + 1, (size_t)(e - colon - 1), 1, 65535, &port))
            return cl_bad_uri(cs, rest, "a port must be a number from 1 to 65535");
        const char *h = p;
        size_t hlen = (size_t)(colon - p);
        if (h[0] == '[' && hlen > 2 && h[hlen - 1] == ']') {
            h++;
            hlen -= 2;
        }
        for (size_t i = 0; i < hlen; i++)
            if ((unsigned char)h[i] <= ' ' || h[i] == '@' || h[i] == '[' || h[i] == ']' ||
                (h[i] == ':' && h == p))
                return cl_bad_uri(cs, rest, "a host contains an invalid character");
        if (cl_node_get(cs, h, hlen, (int)port) < 0)
            return cl_bad_uri(cs, rest, "too many seeds, or a host name too long");
        if (off < sizeof cs->name)
            off += (size_t)snprintf(cs->name + off, sizeof cs->name - off, "%s%.*s:%ld",
                                    cs->nseeds ? "," : "", (int)hlen, h, port);
        cs->nseeds++;
        p = e < end ? e + 1 : e;
        if (e < end && p == end)
            return cl_bad_uri(cs, rest, "a seed is empty");
    }
    const char *opts = end;
    if (cs->single) {
        if (cs->nseeds != 1)
            return cl_bad_uri(cs, rest, "one server only (for a cluster use redis+cluster://)");
        if (*end == '/') {
            const char *d = end + 1;
            size_t dlen = strcspn(d, "?");
            long db = 0;
            if (dlen && cl_parse_long(d, dlen, 0, INT_MAX, &db))
                return cl_bad_uri(cs, rest, "the database after '/' must be a number");
            cs->db = (int)db;
            opts = d + dlen;
        }
        snprintf(cs->name, sizeof cs->name, "redis://%s:%d/%d", cs->nodes[0].host,
                 cs->nodes[0].port, cs->db);
    } else if (*end == '/') {
        return cl_bad_uri(cs, rest, "a cluster has no databases: remove the /db");
    }
    if (*opts == '?') {
        int rc = cl_parse_opts(cs, rest, opts + 1);
        if (rc)
            return rc;
    } else if (*opts) {
        return cl_bad_uri(cs, rest, "unexpected text after host:port");
    }
    if (cs->replicas && cs->timeout_ms <= cs->wait_timeout_ms) {
        /* WAIT holds its reply up to wait_timeout: the connection would
         * time out first and every write would be retried. */
        m_error("store",
                "store URI \"%s:%s\": timeout (%d ms) must be longer than "
                "wait_timeout (%d ms) when replicas are asked for",
                cs->single ? "redis" : "redis+cluster", rest, cs->timeout_ms, cs->wait_timeout_ms);
        return EINVAL;
    }
    return 0;
}

static void cl_destroy(struct cl_store *cs)
{
    pthread_mutex_destroy(&cs->alive_lock);
    pthread_cond_destroy(&cs->alive_cond);
    pthread_mutex_destroy(&cs->lock);
    pthread_mutex_destroy(&cs->nodes_lock);
    pthread_mutex_destroy(&cs->refresh_lock);
    free(cs->map);
    free(cs->pending);
    free(cs->user);
    if (cs->pass) {
        explicit_bzero(cs->pass, strlen(cs->pass));
        free(cs->pass);
    }
    free(cs);
}

static struct cl_store *cl_new(bool single)
{
    struct cl_store *cs = calloc(1, sizeof *cs);
    if (!cs)
        return NULL;
    cs->single = single;
    cs->base.ops = single ? &m_store_redis_ops : &m_store_cluster_ops;
    pthread_mutex_init(&cs->lock, NULL);
    pthread_mutex_init(&cs->nodes_lock, NULL);
    pthread_mutex_init(&cs->refresh_lock, NULL);
    pthread_mutex_init(&cs->alive_lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&cs->alive_cond, &ca);
    pthread_condattr_destroy(&ca);
    cs->timeout_ms = CL_COMMAND_TIMEOUT_MS;
    cs->connect_timeout_ms = CL_CONNECT_TIMEOUT_MS;
    cs->retry_timeout_ms = CL_RETRY_TIMEOUT_MS;
    cs->wait_timeout_ms = CL_WAIT_TIMEOUT_MS;
    cs->spin_us = CL_SPIN_US;
    /* One server owns every hash slot: node 0, for good. */
    for (unsigned s = 0; s < CL_NSLOTS; s++)
        atomic_init(&cs->slot_node[s], (uint8_t)(single ? 0 : CL_NONE));
    return cs;
}

/* Which nodes own hash slots now. */
static void cl_primaries(struct cl_store *cs, bool primary[CL_MAX_NODES])
{
    memset(primary, 0, CL_MAX_NODES * sizeof *primary);
    for (unsigned s = 0; s < CL_NSLOTS; s++) {
        uint8_t k = atomic_load(&cs->slot_node[s]);
        if (k != CL_NONE)
            primary[k] = true;
    }
}

/* The fewest replicas connected to any primary (INFO replication,
 * connected_slaves).  CLUSTER SLOTS is no help here: Redis 7.0 leaves out
 * replicas whose replication offset is still 0, that is every replica of an
 * empty primary. */
static int cl_min_replicas(struct cl_store *cs, unsigned *out)
{
    bool primary[CL_MAX_NODES];
    cl_primaries(cs, primary);
    unsigned minr = UINT_MAX;
    unsigned n = atomic_load_explicit(&cs->nnodes, memory_order_acquire);
    for (unsigned i = 0; i < n; i++) {
        if (!primary[i])
            continue;
        redisContext *c = NULL;
        int err = 0;
        redisReply *r = cl_node_command(cs, (int)i, false, &c, &err, "INFO replication");
        unsigned nrep = 0;
        const char *p =
            r && r->type == REDIS_REPLY_STRING ? strstr(r->str, "connected_slaves:") : NULL;
        if (p)
            nrep = (unsigned)strtoul(p + 17, NULL, 10);
        if (r)
            freeReplyObject(r);
        if (c)
            redisFree(c);
        if (err)
            return err;
        if (nrep < minr)
            minr = nrep;
    }
    *out = minr == UINT_MAX ? 0 : minr;
    return 0;
}

/* redis:// naming a node of a cluster would see its keys answered with
 * MOVED by the other nodes' hash slots, which one server does not follow:
 * refuse it at open, as a cluster store refuses a server that is not a
 * cluster node.  0, EPROTONOSUPPORT, or the errno of the connection. */
static int cl_single_not_cluster(struct cl_store *cs)
{
    redisContext *c = NULL;
    int err = 0;
    redisReply *r = cl_node_command(cs, 0, false, &c, &err, "INFO cluster");
    if (r && r->type == REDIS_REPLY_STRING && strstr(r->str, "cluster_enabled:1")) {
        m_error("store", "%s: this server is a Redis Cluster node: use redis+cluster://%s",
                cs->name, cs->nodes[0].addr);
        err = EPROTONOSUPPORT;
    }
    if (r)
        freeReplyObject(r);
    if (c)
        redisFree(c);
    return err;
}

/* One synchronous command to the primary of key (open, close, gc). */
static redisReply *cl_key_command(struct cl_store *cs, const char *key, size_t klen, int *err,
                                  const char *fmt, ...)
{
    int i = cl_route(cs, key, klen);
    *err = ENETDOWN;
    if (i < 0)
        return NULL;
    redisContext *c = NULL;
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = cl_node_vcommand(cs, i, false, &c, err, fmt, ap);
    va_end(ap);
    if (r && r->type == REDIS_REPLY_ERROR) {
        *err = cl_reply_errno(r);
        m_error("store", "%s: node %s refused: %s (%s) %s", cs->name, cs->nodes[i].addr, r->str,
                strerror(*err), cl_err_hint(*err));
        freeReplyObject(r);
        r = NULL;
    }
    if (c)
        redisFree(c);
    return r;
}

/* Whether every hash slot has a primary; logs the first that has not. */
static bool cl_map_complete(struct cl_store *cs)
{
    for (unsigned s = 0; s < CL_NSLOTS; s++) {
        if (atomic_load(&cs->slot_node[s]) == CL_NONE) {
            m_error("store", "%s: hash slot %u has no primary: the cluster is down (%s)", cs->name,
                    s, strerror(ENETDOWN));
            return false;
        }
    }
    return true;
}

/*
 * The liveness key must not lapse while the instance lives, or `moat store
 * gc` would take a live instance for dead and remove its pages.  Submits
 * refresh it as a side effect, but an idle instance makes none: this thread
 * refreshes it when no submit has for CL_ALIVE_REFRESH_S, on a connection of
 * its own (so it never waits behind a queue), and logs a failure once.
 */
static void *cl_alive_main(void *arg)
{
    struct cl_store *cs = arg;
    struct cl_nopipe np;
    cl_nopipe_begin(&np); /* for the life of the thread */
    pthread_mutex_lock(&cs->alive_lock);
    while (!cs->alive_stop) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += 1;
        pthread_cond_timedwait(&cs->alive_cond, &cs->alive_lock, &ts);
        if (cs->alive_stop)
            break;
        int64_t now_s = cl_now_ns() / 1000000000;
        int64_t last = atomic_load(&cs->alive_at);
        if (now_s - last < CL_ALIVE_REFRESH_S ||
            !atomic_compare_exchange_strong(&cs->alive_at, &last, now_s))
            continue;
        pthread_mutex_unlock(&cs->alive_lock);
        cl_maybe_refresh(cs);
        char key[CL_KEY_MAX];
        size_t klen = cl_alive_key(cs, key);
        int err = 0;
        redisReply *r = NULL;
        /* An idle instance learns of a failover here first: on a failure,
         * refresh the map and try once more. */
        for (int attempt = 0; attempt < 2 && !r; attempt++) {
            if (attempt)
                (void)cl_refresh(cs, true);
            r = cl_key_command(cs, key, klen, &err, "SET %b %d EX %d", key, klen, (int)getpid(),
                               CL_ALIVE_TTL_S);
        }
        if (r) {
            freeReplyObject(r);
        } else {
            cl_log_once(cs, err,
                        "refreshing the liveness key failed: %s; `moat store gc` may "
                        "take this instance for dead in %d s",
                        strerror(err), CL_ALIVE_TTL_S);
            /* Try again in a second, not in 10 (a failover takes a few). */
            int64_t mine = now_s;
            atomic_compare_exchange_strong(&cs->alive_at, &mine, last);
        }
        pthread_mutex_lock(&cs->alive_lock);
    }
    pthread_mutex_unlock(&cs->alive_lock);
    cl_nopipe_end(&np);
    return NULL;
}

static void cl_exec_record(struct cl_store *cs);

static int cl_open_any(const char *rest, bool single, struct m_store **out)
{
    struct cl_store *cs = cl_new(single);
    if (!cs)
        return ENOMEM;
    int rc = cl_parse_uri(cs, rest);
    if (rc)
        goto fail;
    uint64_t id = 0;
    if (getrandom(&id, sizeof id, 0) != (ssize_t)sizeof id) {
        rc = errno ? errno : EIO;
        goto fail;
    }
    snprintf(cs->prefix, sizeof cs->prefix, "moat:{%016llx", (unsigned long long)id);
    unsigned minr = 0;
    rc = cl_refresh(cs, false);
    if (rc) {
        if (!single)
            m_error("store", "%s: no seed answered CLUSTER SLOTS: %s %s", cs->name, strerror(rc),
                    cl_err_hint(rc));
        goto fail;
    }
    if (!cl_map_complete(cs)) {
        rc = ENETDOWN;
        goto fail;
    }
    if (single && (rc = cl_single_not_cluster(cs)) != 0)
        goto fail;
    if (cs->replicas && (rc = cl_min_replicas(cs, &minr)) != 0)
        goto fail;
    if (cs->replicas > minr) {
        m_error("store",
                "%s: replicas=%u asked for, but %s has only %u replica(s) attached: every "
                "eviction would fail (%s)",
                cs->name, cs->replicas, single ? "the server" : "some primary", minr,
                strerror(EREMOTEIO));
        rc = EREMOTEIO;
        goto fail;
    }
    char key[CL_KEY_MAX];
    size_t klen = cl_alive_key(cs, key);
    redisReply *r = cl_key_command(cs, key, klen, &rc, "SET %b %d EX %d", key, klen, (int)getpid(),
                                   CL_ALIVE_TTL_S);
    if (!r)
        goto fail;
    freeReplyObject(r);
    atomic_store(&cs->alive_at, cl_now_ns() / 1000000000);
    cl_exec_record(cs);
    if (pthread_create(&cs->alive_thread, NULL, cl_alive_main, cs) == 0)
        cs->alive_started = true;
    else
        m_warn("store", "%s: no liveness thread; the liveness key is refreshed by I/O only",
               cs->name);
    m_info("store",
           "store %s: %u nodes known, keys %s%s, timeout %d ms, retry timeout %d ms, "
           "replicas %u (WAIT %d ms)",
           cs->name, atomic_load(&cs->nnodes), cs->prefix, single ? "}:N" : ":G}:N", cs->timeout_ms,
           cs->retry_timeout_ms, cs->replicas, cs->wait_timeout_ms);
    *out = &cs->base;
    return 0;
fail:
    cl_destroy(cs);
    return rc;
}

static int cl_open(const char *rest, struct m_store **out)
{
    return cl_open_any(rest, false, out);
}

static int cl_open_single(const char *rest, struct m_store **out)
{
    return cl_open_any(rest, true, out);
}

/* One page of SCAN results (an array reply of keys) on connection c. */
typedef int (*cl_scan_fn)(struct cl_store *cs, redisContext *c, const redisReply *keys, void *arg);

/* SCAN node i for pattern, calling fn for each page until the cursor comes
 * back to 0.  0, the errno of the connection or of a refusal, or fn's. */
static int cl_scan_node(struct cl_store *cs, int i, const char *pattern, cl_scan_fn fn, void *arg)
{
    redisContext *c = NULL;
    int err = cl_connect(cs, i, &c, NULL, false);
    char cursor[32] = "0";
    while (!err) {
        redisReply *r =
            redisCommand(c, "SCAN %s MATCH %s COUNT %d", cursor, pattern, CL_SCAN_COUNT);
        if (!r) {
            err = cl_ctx_errno(c);
            break;
        }
        if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
            r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_ARRAY) {
            err = r->type == REDIS_REPLY_ERROR ? cl_reply_errno(r) : EIO;
            freeReplyObject(r);
            break;
        }
        snprintf(cursor, sizeof cursor, "%s", r->element[0]->str);
        err = fn(cs, c, r->element[1], arg);
        freeReplyObject(r);
        if (strcmp(cursor, "0") == 0)
            break;
    }
    if (c)
        redisFree(c);
    return err;
}

/* UNLINK the keys of one SCAN page key by key, in one pipeline (keys of one
 * page may live in different hash slots, which a multi-key UNLINK refuses);
 * arg counts what was removed. */
static int cl_unlink_page(struct cl_store *cs, redisContext *c, const redisReply *keys, void *arg)
{
    (void)cs;
    uint64_t *nremoved = arg;
    for (size_t k = 0; k < keys->elements; k++)
        redisAppendCommand(c, "UNLINK %b", keys->element[k]->str, keys->element[k]->len);
    for (size_t k = 0; k < keys->elements; k++) {
        void *u = NULL;
        if (redisGetReply(c, &u) != REDIS_OK || !u)
            return cl_ctx_errno(c);
        redisReply *ur = u;
        if (ur->type == REDIS_REPLY_INTEGER)
            *nremoved += (uint64_t)ur->integer;
        freeReplyObject(ur);
    }
    return 0;
}

/* Remove every key matching pattern from every primary. */
static int cl_remove_keys(struct cl_store *cs, const char *pattern, uint64_t *nremoved)
{
    *nremoved = 0;
    unsigned n = atomic_load_explicit(&cs->nnodes, memory_order_acquire);
    bool primary[CL_MAX_NODES];
    cl_primaries(cs, primary);
    int first_err = 0;
    for (unsigned i = 0; i < n; i++) {
        if (!primary[i])
            continue;
        int err = cl_scan_node(cs, (int)i, pattern, cl_unlink_page, nremoved);
        if (err) {
            m_warn("store", "%s: removing keys %s from node %s: %s", cs->name, pattern,
                   cs->nodes[i].addr, strerror(err));
            if (!first_err)
                first_err = err;
        }
    }
    return first_err;
}

/* ---------------------------------------------------------------------------
 * Instances left behind by exec and by exit without close
 *
 * execve replaces the image without running destructors, and a program
 * under `moat run` never closes its store (the preload keeps the engine
 * running through exit: exit handlers and the final stdio flush may still
 * read evicted pages, so no key can go before the process is gone).  Such
 * an instance's keys would stay until `moat store gc` ran after its
 * liveness key expired; shells and wrapper scripts exec and fork all the
 * time, so a run left thousands.
 *
 * So every open records "image T of process P (start time S, pid namespace
 * N) has instance ID on store NAME" in a small file of its own pid,
 * /dev/shm/moat-redis-<uid>-<pid> (tmpfs: gone at reboot).  S is field 22
 * of /proc/self/stat: an exec keeps the pid and S, a pid reused later has
 * another S.  T is a random token drawn once per image.
 *  - An open that finds its pid's file written by another image of the same
 *    process (same S and N, another T: an exec) or by an earlier process
 *    with this pid (another S) removes the instances listed there on its own
 *    store: their image is gone.  A fork child inherits T but has another
 *    pid, so it never reads or writes its parent's file, and a child that
 *    execs removes only what its own pid left.
 *  - Close removes its line, and the file with the last one.
 *  - `moat run`, once its program has exited, sweeps (m_store_redis_sweep):
 *    for every file of the user whose process is gone (no /proc/P, another
 *    start time there, or a zombie), it removes the instances on its store.
 *    A process that is still running is left alone, so this never touches
 *    a live instance.
 * All of it is best effort: a failure is a log line, never a failed open,
 * and what is left stays for `moat store gc`.  Commands still in the
 * server's socket buffer when an image is replaced could in theory land
 * after the new image's SCAN; gc covers that too.
 * ------------------------------------------------------------------------- */

#define CL_EXEC_DIR    "/dev/shm/"
#define CL_EXEC_MAX    8192 /* bytes of one file: about 60 instances of one image */
#define CL_EXEC_HEADER "moat-redis-exec start=%llu ns=%llu token=%016llx\n"

static pthread_mutex_t cl_exec_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t cl_exec_once = PTHREAD_ONCE_INIT;
static unsigned long long cl_exec_token; /* this image's */

static void cl_exec_token_init(void)
{
    if (getrandom(&cl_exec_token, sizeof cl_exec_token, 0) != (ssize_t)sizeof cl_exec_token)
        cl_exec_token =
            (unsigned long long)cl_now_ns() ^ (unsigned long long)(uintptr_t)&cl_exec_token;
}

/* State (field 3) and start time (field 22) of a /proc/PID/stat file. */
static int cl_exec_stat(const char *path, char *state, unsigned long long *start)
{
    char buf[1024];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    int err = n < 0 ? errno : EIO;
    close(fd);
    if (n <= 0)
        return err;
    buf[n] = '\0';
    /* the command name (field 2) may hold spaces and ')': skip past its end */
    char *p = strrchr(buf, ')');
    if (!p || sscanf(p + 1, " %c", state) != 1)
        return EIO;
    for (int field = 2; p && field < 22; field++)
        p = strchr(p + 1, ' ');
    if (!p || sscanf(p + 1, "%llu", start) != 1)
        return EIO;
    return 0;
}

/* This process's start time and pid namespace, read afresh: a fork child
 * inherits statics but not these.  0 or an errno. */
static int cl_exec_self(unsigned long long *start, unsigned long long *ns)
{
    char state;
    int err = cl_exec_stat("/proc/self/stat", &state, start);
    if (err)
        return err;
    struct stat st;
    if (stat("/proc/self/ns/pid", &st) != 0)
        return errno;
    *ns = (unsigned long long)st.st_ino;
    return 0;
}

/* Whether process pid, started at start, has ended (a zombie has). */
static bool cl_exec_gone(long pid, unsigned long long start)
{
    char path[64], state;
    unsigned long long now;
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    int err = cl_exec_stat(path, &state, &now);
    if (err)
        return err == ENOENT || err == ESRCH;
    return state == 'Z' || state == 'X' || now != start;
}

/* pid's file, opened for update: a regular file of ours (not something
 * another user left in the shared directory); -1 otherwise. */
static int cl_exec_open(long pid, bool create, char *path, size_t size)
{
    snprintf(path, size, CL_EXEC_DIR "moat-redis-%u-%ld", (unsigned)getuid(), pid);
    int fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW | (create ? O_CREAT : 0), 0600);
    if (fd < 0)
        return -1;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != getuid()) {
        close(fd);
        errno = EPERM;
        return -1;
    }
    return fd;
}

/* Read the file into in (NUL-terminated) and parse its header: the header's
 * length, 0 if there is none. */
static size_t cl_exec_read(int fd, char in[CL_EXEC_MAX], unsigned long long *start,
                           unsigned long long *ns, unsigned long long *token)
{
    ssize_t n = pread(fd, in, CL_EXEC_MAX - 1, 0);
    in[n > 0 ? n : 0] = '\0';
    int hlen = 0;
    if (sscanf(in, "moat-redis-exec start=%llu ns=%llu token=%llx%n", start, ns, token, &hlen) !=
            3 ||
        in[hlen] != '\n')
        return 0;
    return (size_t)hlen + 1;
}

/* The entry at *line ("ID NAME\n"), advancing *line; false at the end.  An
 * entry that does not parse has id 0. */
static bool cl_exec_entry(char **line, char **start, size_t *len, unsigned long long *id,
                          char name[256])
{
    if (!**line)
        return false;
    char *next = strchr(*line, '\n');
    next = next ? next + 1 : *line + strlen(*line);
    *start = *line;
    *len = (size_t)(next - *line);
    if (sscanf(*line, "%16llx %255[^\n]", id, name) != 2)
        *id = 0;
    *line = next;
    return true;
}

static void cl_exec_write(int fd, const char *text, size_t len)
{
    if (ftruncate(fd, 0) != 0 || pwrite(fd, text, len, 0) != (ssize_t)len)
        m_warn("store", "cannot write an exec record: %s", strerror(errno));
}

/* Remove the keys of dead instance id from this store. */
static int cl_exec_remove(struct cl_store *cs, unsigned long long id, const char *whose,
                          uint64_t *nkeys)
{
    char pattern[CL_KEY_MAX];
    snprintf(pattern, sizeof pattern, "moat:{%016llx*", id);
    uint64_t removed = 0;
    struct cl_nopipe np;
    cl_nopipe_begin(&np);
    int rc = cl_remove_keys(cs, pattern, &removed);
    cl_nopipe_end(&np);
    if (rc)
        m_warn("store",
               "%s: could not remove the keys %s of %s: %s; `moat store gc` removes them once "
               "its liveness key expires (%d s)",
               cs->name, pattern, whose, strerror(rc), CL_ALIVE_TTL_S);
    else
        m_info("store", "%s: removed %llu keys %s of %s", cs->name, (unsigned long long)removed,
               pattern, whose);
    if (nkeys)
        *nkeys += removed;
    return rc;
}

/* At open (the store answers): remove what an earlier image of this pid
 * left on this store, and record this instance. */
static void cl_exec_record(struct cl_store *cs)
{
    unsigned long long start = 0, ns = 0;
    int err = cl_exec_self(&start, &ns);
    if (err) {
        m_debug("store", "%s: no exec record (/proc/self: %s)", cs->name, strerror(err));
        return;
    }
    pthread_once(&cl_exec_once, cl_exec_token_init);
    unsigned long long self = strtoull(cs->prefix + strlen("moat:{"), NULL, 16);
    pid_t pid = getpid();
    char path[64];
    static char in[CL_EXEC_MAX], out[CL_EXEC_MAX]; /* under cl_exec_lock */
    pthread_mutex_lock(&cl_exec_lock);
    int fd = cl_exec_open(pid, true, path, sizeof path);
    if (fd < 0) {
        m_warn("store",
               "%s: cannot record this instance in %s (%s): if this program execs or exits "
               "without closing its store, its keys stay until `moat store gc`",
               cs->name, path, strerror(errno));
        pthread_mutex_unlock(&cl_exec_lock);
        return;
    }
    unsigned long long fstart = 0, fns = 0, ftoken = 0;
    size_t hlen = cl_exec_read(fd, in, &fstart, &fns, &ftoken);
    bool same_ns = hlen && fns == ns;
    bool this_image = same_ns && fstart == start && ftoken == cl_exec_token;
    const char *whose =
        fstart == start ? "the image this process exec'd from" : "an earlier process with this pid";
    size_t len = (size_t)snprintf(out, sizeof out, CL_EXEC_HEADER, start, ns, cl_exec_token);
    char *line = in + hlen, *at, name[256];
    size_t l;
    unsigned long long id;
    while (hlen && cl_exec_entry(&line, &at, &l, &id, name)) {
        if (!id)
            continue;
        if (this_image) { /* another instance of this image: it stays */
            if (len + l < sizeof out) {
                memcpy(out + len, at, l);
                len += l;
            }
        } else if (same_ns && strcmp(name, cs->name) == 0) {
            (void)cl_exec_remove(cs, id, whose, NULL);
        } else if (same_ns) {
            m_info("store", "%s: %s left instance %016llx on %s; `moat store gc` removes it",
                   cs->name, whose, id, name);
        }
    }
    int n = snprintf(out + len, sizeof out - len, "%016llx %s\n", self, cs->name);
    if (n > 0 && (size_t)n < sizeof out - len) {
        len += (size_t)n;
        cs->exec_pid = pid;
    } else {
        m_warn("store", "%s: %s is full: this instance's keys may stay until `moat store gc`",
               cs->name, path);
    }
    cl_exec_write(fd, out, len);
    close(fd);
    pthread_mutex_unlock(&cl_exec_lock);
}

/* At close: this instance's keys are removed, so drop its line (and the
 * file with the last).  Not in a fork child: the record is its parent's. */
static void cl_exec_forget(struct cl_store *cs)
{
    if (!cs->exec_pid || cs->exec_pid != getpid())
        return;
    unsigned long long self = strtoull(cs->prefix + strlen("moat:{"), NULL, 16);
    char path[64];
    static char in[CL_EXEC_MAX], out[CL_EXEC_MAX]; /* under cl_exec_lock */
    pthread_mutex_lock(&cl_exec_lock);
    int fd = cl_exec_open(cs->exec_pid, false, path, sizeof path);
    if (fd < 0) {
        pthread_mutex_unlock(&cl_exec_lock);
        return;
    }
    unsigned long long fstart = 0, fns = 0, ftoken = 0;
    size_t hlen = cl_exec_read(fd, in, &fstart, &fns, &ftoken);
    if (hlen && ftoken == cl_exec_token) {
        size_t len = hlen, entries = 0, l;
        memcpy(out, in, hlen);
        char *line = in + hlen, *at, name[256];
        unsigned long long id;
        while (cl_exec_entry(&line, &at, &l, &id, name)) {
            if (!id || id == self)
                continue;
            memcpy(out + len, at, l);
            len += l;
            entries++;
        }
        if (entries)
            cl_exec_write(fd, out, len);
        else
            unlink(path);
    }
    close(fd);
    pthread_mutex_unlock(&cl_exec_lock);
}

int m_store_redis_sweep(const char *uri, uint64_t *ninstances, uint64_t *nkeys)
{
    *ninstances = 0;
    *nkeys = 0;
    bool single = strncmp(uri, "redis://", 8) == 0;
    if (!single && strncmp(uri, "redis+cluster://", 16) != 0)
        return EINVAL;
    unsigned long long start = 0, ns = 0;
    if (cl_exec_self(&start, &ns) != 0)
        return 0; /* no /proc: nothing was recorded either */
    DIR *d = opendir(CL_EXEC_DIR);
    if (!d)
        return 0;
    struct cl_store *cs = cl_new(single);
    if (!cs) {
        closedir(d);
        return ENOMEM;
    }
    int rc = cl_parse_uri(cs, uri + (single ? strlen("redis:") : strlen("redis+cluster:")));
    bool connected = false;
    char prefix[48], path[64];
    static char in[CL_EXEC_MAX], out[CL_EXEC_MAX]; /* under cl_exec_lock */
    pthread_mutex_lock(&cl_exec_lock);
    size_t plen = (size_t)snprintf(prefix, sizeof prefix, "moat-redis-%u-", (unsigned)getuid());
    struct dirent *de;
    while (!rc && (de = readdir(d)) != NULL) {
        char *end;
        if (strncmp(de->d_name, prefix, plen) != 0)
            continue;
        long pid = strtol(de->d_name + plen, &end, 10);
        if (*end || pid <= 0 || pid == (long)getpid())
            continue;
        int fd = cl_exec_open(pid, false, path, sizeof path);
        if (fd < 0)
            continue;
        unsigned long long fstart = 0, fns = 0, ftoken = 0;
        size_t hlen = cl_exec_read(fd, in, &fstart, &fns, &ftoken);
        if (!hlen || fns != ns || !cl_exec_gone(pid, fstart)) {
            close(fd);
            continue;
        }
        size_t len = hlen, kept = 0, l;
        memcpy(out, in, hlen);
        char *line = in + hlen, *at, name[256];
        unsigned long long id;
        while (!rc && cl_exec_entry(&line, &at, &l, &id, name)) {
            if (!id)
                continue;
            if (strcmp(name, cs->name) != 0) { /* on another store: its sweep's */
                memcpy(out + len, at, l);
                len += l;
                kept++;
                continue;
            }
            if (!connected && (rc = cl_refresh(cs, false)) == 0)
                connected = true;
            if (!rc && (rc = cl_exec_remove(cs, id, "an exited process", nkeys)) == 0)
                (*ninstances)++;
        }
        if (rc)
            ; /* the file stays for a later sweep */
        else if (kept)
            cl_exec_write(fd, out, len);
        else
            unlink(path);
        close(fd);
    }
    pthread_mutex_unlock(&cl_exec_lock);
    closedir(d);
    if (rc)
        m_warn("store", "%s: sweeping the instances of exited processes: %s %s",
               cs->name[0] ? cs->name : "redis store", strerror(rc), cl_err_hint(rc));
    cl_destroy(cs);
    return rc;
}

static void cl_close(struct m_store *s)
{
    struct cl_store *cs = cl_of(s);
    unsigned nq = atomic_load(&cs->nqueues);
    if (nq)
        m_error("store", "store %s closed with %u queue(s) still open", cs->name, nq);
    if (cs->alive_started) {
        pthread_mutex_lock(&cs->alive_lock);
        cs->alive_stop = true;
        pthread_cond_signal(&cs->alive_cond);
        pthread_mutex_unlock(&cs->alive_lock);
        pthread_join(cs->alive_thread, NULL);
    }
    struct cl_nopipe np;
    cl_nopipe_begin(&np);
    (void)cl_refresh(cs, true);
    char pattern[CL_KEY_MAX];
    snprintf(pattern, sizeof pattern, "%s*", cs->prefix);
    uint64_t nremoved = 0;
    int rc = cl_remove_keys(cs, pattern, &nremoved);
    if (rc)
        m_warn("store",
               "%s: could not remove all of this instance's keys %s at close: %s; `moat store gc` "
               "removes them once the liveness key expires (%d s)",
               cs->name, pattern, strerror(rc), CL_ALIVE_TTL_S);
    cl_nopipe_end(&np);
    cl_exec_forget(cs);
    struct m_store_cluster_stats st;
    (void)m_store_cluster_stats(s, &st, NULL, 0, NULL);
    m_info("store",
           "closing %s: removed %llu keys; %llu round trips over %u nodes, %llu I/Os (%.1f a round "
           "trip), %llu retries, %llu redirections, %llu map refreshes, %llu failovers, %llu WAIT "
           "failures, %llu timeouts, %llu errors",
           cs->name, (unsigned long long)nremoved, (unsigned long long)st.round_trips, st.nnodes,
           (unsigned long long)st.ios, st.batching, (unsigned long long)st.retries,
           (unsigned long long)st.redirections, (unsigned long long)st.refreshes,
           (unsigned long long)st.failovers, (unsigned long long)st.wait_failures,
           (unsigned long long)st.timeouts, (unsigned long long)st.errors);
    cl_destroy(cs);
}

/* ---------------------------------------------------------------------------
 * Garbage collection of dead instances
 * ------------------------------------------------------------------------- */

#define CL_GC_MAX_IDS 4096

struct cl_gc_ids {
    uint64_t id[CL_GC_MAX_IDS];
    size_t n;
};

/* Instance ids on one SCAN page: "moat:{ID}:..." (one server, liveness
 * keys) and "moat:{ID:G}:..." (a cluster's records). */
static int cl_gc_collect(struct cl_store *cs, redisContext *c, const redisReply *keys, void *arg)
{
    (void)cs;
    (void)c;
    struct cl_gc_ids *ids = arg;
    for (size_t k = 0; k < keys->elements; k++) {
        unsigned long long id;
        char after;
        if (sscanf(keys->element[k]->str, "moat:{%16llx%c", &id, &after) != 2 ||
            (after != '}' && after != ':'))
            continue;
        size_t j = 0;
        while (j < ids->n && ids->id[j] != id)
            j++;
        if (j == ids->n && ids->n < CL_GC_MAX_IDS)
            ids->id[ids->n++] = id;
    }
    return 0;
}

static int cl_gc(const char *uri, bool single, uint64_t *ninstances, uint64_t *nkeys)
{
    *ninstances = 0;
    *nkeys = 0;
    const char *scheme = single ? "redis:" : "redis+cluster:";
    if (!uri || strncmp(uri, scheme, strlen(scheme)) != 0) {
        m_error("store", "store gc: \"%s\" is not a %s// URI", uri ? uri : "(null)", scheme);
        return EINVAL;
    }
    struct cl_store *cs = cl_new(single);
    if (!cs)
        return ENOMEM;
    struct cl_nopipe np;
    cl_nopipe_begin(&np);
    int rc = cl_parse_uri(cs, uri + strlen(scheme));
    if (!rc)
        rc = cl_refresh(cs, false);
    struct cl_gc_ids ids = {.n = 0};
    unsigned n = atomic_load(&cs->nnodes);
    bool primary[CL_MAX_NODES];
    cl_primaries(cs, primary);
    for (unsigned i = 0; !rc && i < n; i++)
        if (primary[i])
            rc = cl_scan_node(cs, (int)i, "moat:{*", cl_gc_collect, &ids);
    for (size_t j = 0; !rc && j < ids.n; j++) {
        snprintf(cs->prefix, sizeof cs->prefix, "moat:{%016llx", (unsigned long long)ids.id[j]);
        char key[CL_KEY_MAX];
        size_t klen = cl_alive_key(cs, key);
        redisReply *r = cl_key_command(cs, key, klen, &rc, "EXISTS %b", key, klen);
        if (!r)
            break;
        bool alive = r->type == REDIS_REPLY_INTEGER && r->integer > 0;
        freeReplyObject(r);
        if (alive)
            continue;
        char pattern[CL_KEY_MAX];
        snprintf(pattern, sizeof pattern, "%s*", cs->prefix);
        uint64_t removed = 0;
        rc = cl_remove_keys(cs, pattern, &removed);
        if (!rc) {
            (*ninstances)++;
            *nkeys += removed;
            m_info("store", "store gc %s: removed %llu keys of dead instance %s", cs->name,
                   (unsigned long long)removed, pattern);
        }
    }
    if (rc)
        m_error("store", "store gc %s: %s %s", cs->name[0] ? cs->name : uri, strerror(rc),
                cl_err_hint(rc));
    cl_nopipe_end(&np);
    cl_destroy(cs);
    return rc;
}

int m_store_cluster_gc(const char *uri, uint64_t *ninstances, uint64_t *nkeys)
{
    return cl_gc(uri, false, ninstances, nkeys);
}

int m_store_redis_gc(const char *uri, uint64_t *ninstances, uint64_t *nkeys)
{
    return cl_gc(uri, true, ninstances, nkeys);
}

/* ---------------------------------------------------------------------------
 * Statistics
 * ------------------------------------------------------------------------- */

static void cl_stats(struct m_store *s, struct m_store_stats *out)
{
    struct cl_store *cs = cl_of(s);
    pthread_mutex_lock(&cs->lock);
    out->slots_used = cs->used;
    out->slots_high = cs->next;
    pthread_mutex_unlock(&cs->lock);
    out->reads = CL_GET(cs->reads);
    out->writes = CL_GET(cs->writes);
    out->bytes_read = CL_GET(cs->bytes_read);
    out->bytes_written = CL_GET(cs->bytes_written);
    out->errors = CL_GET(cs->errors);
}

int m_store_cluster_stats(struct m_store *s, struct m_store_cluster_stats *out,
                          struct m_store_cluster_node_stats *nodes, size_t max, size_t *nnodes)
{
    if (!s || !out || (s->ops != &m_store_cluster_ops && s->ops != &m_store_redis_ops))
        return EINVAL;
    struct cl_store *cs = cl_of(s);
    unsigned n = atomic_load_explicit(&cs->nnodes, memory_order_acquire);
    memset(out, 0, sizeof *out);
    out->nnodes = n;
    for (unsigned i = 0; i < n; i++)
        out->round_trips += CL_GET(cs->nodes[i].round_trips);
    out->ios = CL_GET(cs->reads) + CL_GET(cs->writes) + CL_GET(cs->errors);
    out->batching = out->round_trips ? (double)out->ios / (double)out->round_trips : 0.0;
    out->retries = CL_GET(cs->retries);
    out->redirections = CL_GET(cs->redirections);
    out->refreshes = CL_GET(cs->refreshes);
    out->failovers = CL_GET(cs->failovers);
    out->wait_failures = CL_GET(cs->wait_failures);
    out->timeouts = CL_GET(cs->timeouts);
    out->errors = CL_GET(cs->errors);
    out->replicas = cs->replicas;
    snprintf(out->prefix, sizeof out->prefix, "%s", cs->prefix);
    if (nnodes)
        *nnodes = 0;
    if (!nodes || !max)
        return 0;
    size_t m = n < max ? n : max;
    memset(nodes, 0, m * sizeof *nodes);
    uint8_t owner[CL_NSLOTS];
    for (unsigned h = 0; h < CL_NSLOTS; h++) {
        owner[h] = atomic_load_explicit(&cs->slot_node[h], memory_order_relaxed);
        if (owner[h] < m)
            nodes[owner[h]].nslots++;
    }
    /* Pages per node now: one hash per group of 16 store slots. */
    pthread_mutex_lock(&cs->lock);
    if (cs->single)
        nodes[0].pages = cs->used;
    for (uint64_t g = 0; !cs->single && g * 16 < cs->next; g++) {
        uint64_t bits = (cs->map[g / 4] >> ((g % 4) * 16)) & 0xffff;
        if (!bits)
            continue;
        char key[CL_KEY_MAX];
        size_t klen = cl_key(cs, g << CL_GROUP_SHIFT, key);
        uint8_t k = owner[m_store_cluster_keyslot(key, klen)];
        if (k < m)
            nodes[k].pages += (uint64_t)__builtin_popcountll(bits);
    }
    pthread_mutex_unlock(&cs->lock);
    for (size_t i = 0; i < m; i++) {
        const struct cl_node *nd = &cs->nodes[i];
        struct m_store_cluster_node_stats *o = &nodes[i];
        snprintf(o->addr, sizeof o->addr, "%s", nd->addr);
        o->primary = o->nslots > 0;
        o->bytes = o->pages * M_STORE_RECORD;
        o->reads = CL_GET(nd->reads);
        o->writes = CL_GET(nd->writes);
        o->bytes_read = CL_GET(nd->bytes_read);
        o->bytes_written = CL_GET(nd->bytes_written);
        o->round_trips = CL_GET(nd->round_trips);
        o->commands = CL_GET(nd->commands);
        o->retries = CL_GET(nd->retries);
        o->moved = CL_GET(nd->moved);
        o->asks = CL_GET(nd->asks);
        o->conn_failures = CL_GET(nd->conn_failures);
        o->wait_failures = CL_GET(nd->wait_failures);
        o->failovers = CL_GET(nd->failovers);
    }
    if (nnodes)
        *nnodes = m;
    return 0;
}

static const char *cl_describe(struct m_store *s)
{
    return cl_of(s)->name;
}

int m_store_redis_stats(struct m_store *s, struct m_store_redis_stats *out)
{
    if (!s || !out || s->ops != &m_store_redis_ops)
        return EINVAL;
    struct cl_store *cs = cl_of(s);
    struct m_store_cluster_stats st;
    (void)m_store_cluster_stats(s, &st, NULL, 0, NULL);
    out->round_trips = st.round_trips;
    out->ios = st.ios;
    out->dels = CL_GET(cs->dels);
    out->fences = CL_GET(cs->fences);
    out->bytes_sent = CL_GET(cs->bytes_sent);
    out->bytes_received = CL_GET(cs->bytes_received);
    out->errors = st.errors;
    out->retries = st.retries;
    out->wait_failures = st.wait_failures;
    out->timeouts = st.timeouts;
    out->replicas = cs->replicas;
    snprintf(out->prefix, sizeof out->prefix, "%s}:", cs->prefix);
    return 0;
}

/* Both schemes run the same engine; only the URI (and so the mode) differs. */
#define CL_OPS(scheme_, open_)                                                                     \
    {                                                                                              \
        .scheme = scheme_, .open = open_, .close = cl_close, .slot_alloc = cl_slot_alloc,          \
        .slot_free = cl_slot_free, .queue_new = cl_queue_new, .queue_free = cl_queue_free,         \
        .submit = cl_submit, .reap = cl_reap, .stats = cl_stats, .describe = cl_describe,          \
    }

const struct m_store_ops m_store_redis_ops = CL_OPS("redis", cl_open_single);
const struct m_store_ops m_store_cluster_ops = CL_OPS("redis+cluster", cl_open);
