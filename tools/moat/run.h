/*
 * run.h - what `moat run`, `moat stat` and `moat plot` share: access to the
 * statistics block a program under moat publishes (src/preload/
 * stats_block.h), the summary and JSON forms of it, and the trace format.
 */
#ifndef MOAT_TOOLS_RUN_H
#define MOAT_TOOLS_RUN_H

#include "preload/stats_block.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

/* The CSV trace: one row per sample; sizes in pages of 4096 bytes, times in
 * seconds (time_s) and nanoseconds (fault_ns).  `moat plot` relies on the
 * column order. */
#define M_RUN_TRACE_HEADER                                                                         \
    "time_s,budget_pages,resident_pages,committed_pages,evicted_pages,unreclaimable_pages,"        \
    "faults_commit,faults_pagein,faults_wp,evictions_written,evictions_clean,"                     \
    "store_bytes_written,store_bytes_read,fault_ns,alloc_requested_bytes,alloc_reserved_bytes"

/* The store's nodes, for a redis store, in a second CSV beside the trace,
 * FILE.nodes.csv: one row per node per sample (long format: a cluster's
 * node set changes over a run, as failovers add nodes), the counters of
 * struct m_stats_node.  `node` is the node's index, stable over the run;
 * pages are this program's records the node holds at that time, the other
 * counters are totals since the program started. */
#define M_RUN_TRACE_NODES_SUFFIX ".nodes.csv"
#define M_RUN_TRACE_NODES_HEADER                                                                   \
    "time_s,node,addr,primary,pages,bytes,reads,writes,bytes_read,bytes_written,round_trips,"      \
    "retries,redirections,conn_failures,wait_failures,failovers"

/* m_run_trace_open - create the trace CSV at path and write its header;
 * FILE.nodes.csv is created with the first sample that has store nodes.
 * NULL with errno set on failure. */
FILE *m_run_trace_open(const char *path);
/* m_run_trace_row - one CSV row of the trace (M_RUN_TRACE_HEADER), and one
 * row per store node in FILE.nodes.csv if f came from m_run_trace_open. */
void m_run_trace_row(FILE *f, const struct m_stats_block *b);
/* m_run_trace_close - close the trace and its nodes file. */
void m_run_trace_close(FILE *f);

/* m_run_block_create - create /dev/shm/moat-<pid>.stats, zeroed, at its full
 * size.  0 or an errno. */
int m_run_block_create(pid_t pid);

/* m_run_block_map - map the block of `pid` read-only; NULL (and *err, if
 * not NULL) when it does not exist or is too small. */
struct m_stats_block *m_run_block_map(pid_t pid, int *err);

/* m_run_block_read - a consistent copy (sequence lock).  EAGAIN if the
 * writer kept it busy, EPROTO if it is not a moat block of this version. */
int m_run_block_read(const struct m_stats_block *blk, struct m_stats_block *out);

void m_run_block_unlink(pid_t pid);

/* m_run_block_sweep - remove the blocks of processes started under the
 * `moat run` with pid `run_pid` that are gone (killed, or left by _exit).
 * Returns how many were removed. */
int m_run_block_sweep(pid_t run_pid);

/* m_run_summary - the few lines `moat run` prints at exit; `sig` is the
 * signal that killed the program, or 0. */
void m_run_summary(FILE *f, const struct m_stats_block *b, int sig);

/* m_run_json - every field as one JSON object; `status` from waitpid, or -1
 * for a live process. */
void m_run_json(FILE *f, const struct m_stats_block *b, int status);

/* Watching for a budget far too small for the program (run_thrash.c). */
struct m_run_thrash {
    uint64_t window_ns;                     /* MOAT_THRASH_WINDOW, default 10 s */
    uint64_t elapsed_ns, fault_ns, pageins; /* at the start of the window */
    bool have, warned;
};
/* m_run_thrash_init - a watch with the window from the environment. */
void m_run_thrash_init(struct m_run_thrash *t);
/* m_run_thrash_check - feed one sample of the program's block; prints the
 * one warning to out (naming prog) and returns true when the program has
 * spent the whole window waiting for page-ins with its budget full. */
bool m_run_thrash_check(struct m_run_thrash *t, const struct m_stats_block *b, FILE *out,
                        const char *prog);

#endif
