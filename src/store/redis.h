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

extern const struct m_store_ops m_store_redis_ops;

#endif
