/*
 * run.h - what `moat run`, `moat stat` and `moat plot` share: access to the
 * statistics block a program under moat publishes (src/preload/
 * stats_block.h), the summary and JSON forms of it, and the trace format.
 */
#ifndef MOAT_TOOLS_RUN_H
#define MOAT_TOOLS_RUN_H

#include "preload/stats_block.h"

#include <stdio.h>
#include <sys/types.h>

/* The CSV trace: one row per sample; sizes in pages of 4096 bytes, times in
 * seconds (time_s) and nanoseconds (fault_ns).  `moat plot` relies on the
 * column order. */
#define M_RUN_TRACE_HEADER                                                                         \
    "time_s,budget_pages,resident_pages,committed_pages,evicted_pages,unreclaimable_pages,"        \
    "faults_commit,faults_pagein,faults_wp,evictions_written,evictions_clean,"                     \
    "store_bytes_written,store_bytes_read,fault_ns,alloc_requested_bytes,alloc_reserved_bytes"

/* m_run_trace_row - one CSV row of the trace (M_RUN_TRACE_HEADER). */
void m_run_trace_row(FILE *f, const struct m_stats_block *b);

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

#endif
