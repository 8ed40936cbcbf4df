/*
 * redis.h - the single-server redis store ("redis://"): its ops table, the
 * counters only a network store has, and the garbage collection of dead
 * instances' keys.
 *
 * The store itself is the engine in cluster.c, run with one node and no
 * slot map (see its banner): a single server gets the cluster's batching,
 * retries with backoff, WAIT for replicas and fencing, from the same code.
 * m_store_cluster_stats (cluster.h) also accepts a redis:// store and
 * reports its one node.
 *
 * Private to the store layer, the command line (moat store gc) and tests.
 */
#ifndef M_STORE_REDIS_H
#define M_STORE_REDIS_H

#include "store/store.h"

#include <stdint.h>

struct m_store_redis_stats {
    uint64_t round_trips;    /* pipelines written */
    uint64_t ios;            /* reads and writes completed, failed ones too */
    uint64_t dels;           /* DELs of freed slots acknowledged */
    uint64_t fences;         /* CLIENT KILLs of failed connections acknowledged */
    uint64_t bytes_sent;     /* protocol bytes written */
    uint64_t bytes_received; /* value bytes read */
    uint64_t errors;         /* I/Os that failed */
    uint64_t retries;        /* I/O retries after a failure (connection lost, timeout, LOADING) */
    uint64_t wait_failures;  /* batches of writes refused for lack of replica acks */
    uint64_t timeouts;       /* I/Os that gave up after retry_timeout (ETIMEDOUT) */
    unsigned replicas;       /* WAIT for this many replicas after writes (0 = no WAIT) */
    char prefix[48];         /* "moat:{ID}:", this instance's key prefix */
};

/* m_store_redis_stats - EINVAL if s is not a redis:// store.  The batching
 * factor is ios / round_trips. */
int m_store_redis_stats(struct m_store *s, struct m_store_redis_stats *out);

/* m_store_redis_gc - remove the keys of moat instances that are no longer
 * alive (their liveness key expired) from the server at `uri`
 * ("redis://..."); counts what it removed.  0, EINVAL for a bad URI, or the
 * connection's errno (ECONNREFUSED, EACCES, ETIMEDOUT, EIO). */
int m_store_redis_gc(const char *uri, uint64_t *ninstances, uint64_t *nkeys);

/* m_store_redis_sweep - remove from the store at `uri` ("redis://..." or
 * "redis+cluster://...") the instances of this user's processes on this host
 * that have ended without closing their store (exec, or exit under `moat
 * run`), as recorded in /dev/shm/moat-redis-<uid>-<pid> (cluster.c, "Instances
 * left behind by exec"); running processes' instances are never touched.
 * Counts what it removed.  0, EINVAL for a bad URI, or the connection's
 * errno (the records then stay for a later sweep). */
int m_store_redis_sweep(const char *uri, uint64_t *ninstances, uint64_t *nkeys);

extern const struct m_store_ops m_store_redis_ops;

#endif
