/*
 * cluster.h - the Redis Cluster backend (cluster.c): its ops table, the
 * hash-slot function it routes by, its per-node statistics and the garbage
 * collection of dead instances' keys over every primary.  cluster.c also
 * runs the single-server store (redis.h) as a cluster of one node, so
 * m_store_cluster_stats answers for a redis:// store too.
 *
 * Private to the store layer, the command line (moat store gc) and tests.
 */
#ifndef M_STORE_CLUSTER_H
#define M_STORE_CLUSTER_H

#include "store/store.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define M_STORE_CLUSTER_SLOTS     16384u
#define M_STORE_CLUSTER_MAX_NODES 64u

/* m_store_cluster_keyslot - the Redis Cluster hash slot of a key: CRC16
 * (XMODEM) of the key, or of the text between the first '{' and the next
 * '}' when that text is not empty (the hash tag), modulo 16384. */
unsigned m_store_cluster_keyslot(const char *key, size_t len);

/* Counters of one node (a primary or a former primary; replicas the store
 * never talks to do not appear).  "now" fields are computed when asked. */
struct m_store_cluster_node_stats {
    char addr[80];       /* "host:port" */
    bool primary;        /* owns hash slots in the current map */
    uint32_t nslots;     /* hash slots it owns now */
    uint64_t pages;      /* now: this instance's allocated store slots whose key it owns */
    uint64_t bytes;      /* now: pages * M_STORE_RECORD */
    uint64_t reads;      /* GETs completed on it */
    uint64_t writes;     /* SETs completed on it (acknowledged by the replicas asked for) */
    uint64_t bytes_read; /* value bytes received */
    uint64_t bytes_written;
    uint64_t round_trips;   /* pipelines written to it */
    uint64_t commands;      /* replies taken from it (I/Os, DELs, WAITs, ...) */
    uint64_t retries;       /* I/Os retried after a failure on it */
    uint64_t moved;         /* MOVED replies it gave */
    uint64_t asks;          /* ASK replies it gave */
    uint64_t conn_failures; /* connections to it that failed */
    uint64_t wait_failures; /* WAITs that came back with too few replicas */
    uint64_t failovers;     /* map refreshes that moved its slots away after it failed */
};

struct m_store_cluster_stats {
    unsigned nnodes;        /* nodes known (all have an entry in the node array) */
    uint64_t round_trips;   /* pipelines written, over all nodes */
    uint64_t ios;           /* reads and writes completed, failed ones too */
    double batching;        /* ios / round_trips */
    uint64_t retries;       /* I/O retries (after connection loss, timeouts, CLUSTERDOWN...) */
    uint64_t redirections;  /* MOVED + ASK followed */
    uint64_t refreshes;     /* slot map refreshes */
    uint64_t failovers;     /* refreshes that moved slots away from a failed node */
    uint64_t wait_failures; /* batches of writes refused for lack of replica acks */
    uint64_t timeouts;      /* I/Os that gave up after the retry timeout */
    uint64_t errors;        /* I/Os that failed */
    unsigned replicas;      /* WAIT for this many replicas after writes (0 = no WAIT) */
    char prefix[40];        /* "moat:{ID", the start of every key of this instance */
};

/* m_store_cluster_stats - the store's totals in *out and up to `max` nodes'
 * counters in nodes[0..*nnodes) (nodes may be NULL with max 0).  EINVAL if
 * s is not a redis store (redis:// or redis+cluster://).  Safe to call
 * while I/O runs (counters are read one by one, not as a snapshot).  With
 * nodes, a cluster's per-node pages are counted from the slot bitmap: one
 * CRC16 per 16 allocated store slots, under the slot lock (~2 ms for a
 * million slots), so call it for a report (the preload's publisher does,
 * every interval), not per fault. */
int m_store_cluster_stats(struct m_store *s, struct m_store_cluster_stats *out,
                          struct m_store_cluster_node_stats *nodes, size_t max, size_t *nnodes);

/* m_store_cluster_gc - remove the keys of dead moat instances (liveness key
 * expired) from every primary of the cluster at `uri`
 * ("redis+cluster://...").  0, EINVAL for a bad URI, or the errno of the
 * failure (ECONNREFUSED, EACCES, ETIMEDOUT, ENETDOWN, EIO). */
int m_store_cluster_gc(const char *uri, uint64_t *ninstances, uint64_t *nkeys);

extern const struct m_store_ops m_store_cluster_ops;

#endif
