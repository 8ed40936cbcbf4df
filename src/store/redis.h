/*
 * redis.h - what the redis backend (redis.c) offers beyond store.h: its
 * ops table and the counters that only a network store has.
 *
 * Private to the store layer and its tests; when store.h grows these
 * counters (round trips, batching factor) for every backend, this header
 * folds into it.
 */
#ifndef M_STORE_REDIS_H
#define M_STORE_REDIS_H

#include "store/store.h"

#include <stdint.h>

struct m_store_redis_stats {
    uint64_t round_trips;    /* pipelines written: one per submit */
    uint64_t ios;            /* reads and writes completed, failed ones too */
    uint64_t dels;           /* DELs of freed slots acknowledged */
    uint64_t fences;         /* CLIENT KILLs of failed connections acknowledged */
    uint64_t bytes_sent;     /* protocol bytes written */
    uint64_t bytes_received; /* value bytes read */
    uint64_t errors;         /* I/Os that failed */
    char prefix[32];         /* "moat:{ID}:", this instance's key prefix */
};

/* m_store_redis_stats - EINVAL if s is not a redis store.  The batching
 * factor is ios / round_trips. */
int m_store_redis_stats(struct m_store *s, struct m_store_redis_stats *out);

/* m_store_redis_gc - remove the keys of moat instances that are no longer
 * alive (their liveness key expired) from the server at `uri`
 * ("redis://..."); counts what it removed.  0, EINVAL for a bad URI, or the
 * connection's errno (ECONNREFUSED, EACCES, ETIMEDOUT, EIO). */
int m_store_redis_gc(const char *uri, uint64_t *ninstances, uint64_t *nkeys);

/* Shared with the cluster backend (cluster.c), which speaks the same
 * protocol to many servers. */
struct redisContext;
struct redisReply;

/* m_store_redis_ctx_errno - the errno for a failed hiredis context:
 * ECONNREFUSED, ETIMEDOUT, ECONNRESET, EHOSTUNREACH, ENETUNREACH, ENOMEM or
 * EIO. */
int m_store_redis_ctx_errno(const struct redisContext *c);
/* m_store_redis_reply_errno - the errno for an error reply: ENOSPC for OOM,
 * EACCES for NOAUTH / WRONGPASS / NOPERM, EIO otherwise. */
int m_store_redis_reply_errno(const struct redisReply *r);
/* m_store_redis_err_hint - a sentence telling the user what to check. */
const char *m_store_redis_err_hint(int err);

/* Writes to a socket whose peer went away raise SIGPIPE; these bracket a
 * write so that it is an error (EPIPE) instead of the death of the program. */
struct m_store_redis_nopipe {
    uint64_t opaque[17]; /* a struct redis_nopipe: sigset_t and a flag */
};
void m_store_redis_nopipe_begin(struct m_store_redis_nopipe *np);
void m_store_redis_nopipe_end(struct m_store_redis_nopipe *np);

extern const struct m_store_ops m_store_redis_ops;

#endif
