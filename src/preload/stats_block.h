/*
 * stats_block.h - the statistics block a program running under `moat run`
 * publishes, and `moat run` / `moat stat` read.
 *
 * The block is a small file in /dev/shm, named moat-<pid>.stats after the
 * process that publishes it, mapped MAP_SHARED by the writer (the preload
 * library inside the program) and by any number of readers.  The writer
 * updates it from a thread every MOAT_STATS_INTERVAL milliseconds and once
 * more at exit.  Updates follow a sequence lock: `seq` is odd while the
 * writer is in the middle of an update; a reader copies the block and keeps
 * the copy only if `seq` was even and unchanged around the copy.
 *
 * A process that ends without exit() (killed, or _exit as dash does) leaves
 * its block behind; `moat run` removes the blocks of its dead descendants
 * (run_pid) when the program has finished.
 *
 * The layout is fixed (all fields naturally aligned, little-endian host
 * order); `version` changes if it ever does.
 */
#ifndef M_PRELOAD_STATS_BLOCK_H
#define M_PRELOAD_STATS_BLOCK_H

#include <moat.h>

#include <stdint.h>

#define M_STATS_BLOCK_MAGIC 0x54414f4du /* "MOAT" */
#define M_STATS_BLOCK_VERSION                                                                      \
    11u /* 2: threads_*; 3: alloc_*; 4: user_*; 5: store_node*; 6: tracking; 7: pagein_batch*;     \
           8: pagein_readahead; 9: pagein_refault_hot; 10: store_meta_bytes; 11: wp_calls,         \
           zap_calls */
/* printf format of the file name under /dev/shm (and of the shm_open name
 * with a leading slash). */
#define M_STATS_BLOCK_NAME "moat-%ld.stats"
#define M_STATS_BLOCK_DIR  "/dev/shm/"
/* Store nodes the block has room for (store_node[]). */
#define M_STATS_BLOCK_NODES 16

enum m_stats_state {
    M_STATS_CREATED = 0, /* made by `moat run`, the program has not started moat yet */
    M_STATS_RUNNING = 1, /* moat is running in the program */
    M_STATS_EXITED = 2,  /* the program called exit(); the numbers are final */
    M_STATS_FAILED = 3,  /* moat could not start in the program */
};

struct m_stats_block {
    uint32_t magic;   /* M_STATS_BLOCK_MAGIC once the writer has started */
    uint32_t version; /* M_STATS_BLOCK_VERSION */
    uint64_t seq;     /* sequence lock: odd while an update is in progress */
    int64_t pid;      /* the publishing process */
    uint32_t state;   /* enum m_stats_state */
    uint32_t interval_ms;
    uint64_t start_realtime_ns; /* CLOCK_REALTIME when moat started */
    uint64_t elapsed_ns;        /* CLOCK_MONOTONIC since then, at this update */
    uint64_t updates;           /* number of completed updates */
    struct moat_stats stats;    /* the counters, as moat_stats() returned them */
    int64_t run_pid; /* the `moat run` this process descends from ($MOAT_RUN_PID), or 0 */
    /* The program's threads (tcs.c: m_preload_tcs_stats), main thread
     * included, moat's own excluded; 0 when the writer does not count them. */
    uint64_t threads_live;
    uint64_t threads_peak;
    /* The allocator's program heap (malloc.c): live bytes asked for, bytes in
     * slabs and large objects, and committed (those plus free pages not yet
     * given back); peaks of the first two as sampled at each update.  Frees
     * of pointers that were not moat's. */
    uint64_t alloc_requested_bytes;
    uint64_t alloc_reserved_bytes;
    uint64_t alloc_committed_bytes;
    uint64_t alloc_peak_requested_bytes;
    uint64_t alloc_peak_reserved_bytes;
    uint64_t alloc_foreign_frees;
    /* The user space (`moat run --config`, preload.c): pages committed at
     * start (MOAT_USER_INIT; 0 without it), and the peak of the pages the
     * program used, touched ones (resident or evicted): peak_resident_pages
     * or, if more, resident + evicted as sampled at each update. */
    uint64_t user_init_pages;
    uint64_t user_peak_used_pages;
    /* The redis store's nodes (redis:// is one node, redis+cluster:// one
     * per primary it has talked to), as m_store_cluster_stats reports them;
     * store_nnodes 0 for the file store.  Counters are totals since start;
     * pages and bytes are this program's records a node holds now.  `moat
     * run --trace FILE` writes them to FILE.nodes.csv. */
    uint64_t store_nnodes; /* entries used in store_node[] */
    struct m_stats_node {
        char addr[48];    /* "host:port" */
        uint64_t primary; /* 1 while it owns hash slots (one server: always) */
        uint64_t pages;   /* records held now */
        uint64_t bytes;   /* pages * M_STORE_RECORD (4128, a sealed record) */
        uint64_t reads;   /* GETs completed */
        uint64_t writes;  /* SETs completed (acknowledged by the replicas asked for) */
        uint64_t bytes_read, bytes_written;
        uint64_t round_trips;   /* pipelines written to it */
        uint64_t retries;       /* I/Os retried after a failure on it */
        uint64_t redirections;  /* MOVED + ASK it answered */
        uint64_t conn_failures; /* connections to it that failed */
        uint64_t wait_failures; /* WAITs that came back with too few replicas */
        uint64_t failovers;     /* times its slots moved away after it failed */
    } store_node[M_STATS_BLOCK_NODES];
};

#endif
