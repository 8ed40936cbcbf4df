/*
 * cmd_stat.c - `moat stat [--once] PID`: show the statistics a program under
 * moat publishes in /dev/shm/moat-PID.stats, once or refreshed every second
 * like top, until the program exits.
 */
#include "cli.h"
#include "run.h"

#include "common/size.h"

#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <inttypes.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static void stat_usage(FILE *f)
{
    fprintf(f, "usage: moat stat [--once] PID\n"
               "\n"
               "Show the moat statistics of process PID (a program started by moat run, or\n"
               "any process with libmoat_preload.so loaded), read from\n"
               "/dev/shm/moat-PID.stats, refreshed every second until it exits.\n"
               "\n"
               "  --once   print them once and exit\n");
}

static void stat_print(FILE *f, const struct m_stats_block *b)
{
    static const char *const states[] = {"starting", "running", "exited", "failed"};
    const struct moat_stats *s = &b->stats;
    char b1[32], b2[32], b3[32], b4[32];
    fprintf(f, "moat stat: pid %" PRId64 ", %s, %.1f s since moat started, update %" PRIu64 "\n",
            b->pid, b->state < 4 ? states[b->state] : "unknown", (double)b->elapsed_ns / 1e9,
            b->updates);
    fprintf(f, "  resident      %12s   (%s unreclaimable) of budget %s\n",
            m_size_format((size_t)(s->resident_pages * 4096), b1, sizeof b1),
            m_size_format((size_t)(s->resident_unreclaimable * 4096), b2, sizeof b2),
            s->budget_pages ? m_size_format((size_t)(s->budget_pages * 4096), b3, sizeof b3)
                            : "unlimited");
    fprintf(f, "  committed     %12s   peak %s, peak resident %s\n",
            m_size_format((size_t)(s->committed_pages * 4096), b1, sizeof b1),
            m_size_format((size_t)(s->peak_committed_pages * 4096), b2, sizeof b2),
            m_size_format((size_t)(s->peak_resident_pages * 4096), b3, sizeof b3));
    if (!s->tracking)
        fprintf(f,
                "  not tracked   %12s   resident, sampled (lazy tracking: under the watermark)\n",
                m_size_format((size_t)(s->untracked_pages * 4096), b1, sizeof b1));
    fprintf(f, "  evicted now   %12s   in %" PRIu64 " regions\n",
            m_size_format((size_t)(s->evicted_pages * 4096), b1, sizeof b1), s->regions);
    fprintf(f,
            "  evictions     %12" PRIu64 "   written %" PRIu64 ", clean %" PRIu64
            ", sync reclaims %" PRIu64 "\n",
            s->evictions_written + s->evictions_clean, s->evictions_written, s->evictions_clean,
            s->reclaim_sync);
    fprintf(f,
            "  faults        %12" PRIu64 "   first touch %" PRIu64 ", page-in %" PRIu64
            ", write-protect %" PRIu64 ", handler %" PRIu64 ", fatal %" PRIu64 "\n",
            s->faults_commit + s->faults_pagein + s->faults_wp + s->faults_handler,
            s->faults_commit, s->faults_pagein, s->faults_wp, s->faults_handler, s->faults_fatal);
    fprintf(f,
            "  store         %12s   written, %s read, %" PRIu64 " errors, %" PRIu64
            " integrity failures\n",
            m_size_format((size_t)s->store_bytes_written, b1, sizeof b1),
            m_size_format((size_t)s->store_bytes_read, b4, sizeof b4), s->store_errors,
            s->integrity_failures);
    if (s->store_meta_bytes)
        fprintf(f, "  store meta    %12s   of record trailers in memory, outside the budget\n",
                m_size_format((size_t)s->store_meta_bytes, b1, sizeof b1));
    if (s->wp_calls || s->zap_calls)
        fprintf(f, "  page tables   %12" PRIu64 "   write-protect calls, %" PRIu64 " zap calls\n",
                s->wp_calls, s->zap_calls);
    fprintf(f, "  time          %10.3f s in faults, %.3f s evicting\n", (double)s->fault_ns / 1e9,
            (double)s->reclaim_ns / 1e9);
}

int moat_cmd_stat(int argc, char **argv)
{
    bool once = false;
    static const struct option longopts[] = {
        {"once", no_argument, NULL, '1'}, {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case '1':
            once = true;
            break;
        case 'h':
            stat_usage(stdout);
            return MOAT_EXIT_OK;
        default:
            stat_usage(stderr);
            return MOAT_EXIT_USAGE;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "moat stat: expected one PID\n");
        stat_usage(stderr);
        return MOAT_EXIT_USAGE;
    }
    char *end;
    errno = 0;
    long pid = strtol(argv[optind], &end, 10);
    if (errno || end == argv[optind] || *end || pid <= 0) {
        fprintf(stderr, "moat stat: PID '%s' is not a process id\n", argv[optind]);
        return MOAT_EXIT_USAGE;
    }
    int err;
    struct m_stats_block *blk = m_run_block_map((pid_t)pid, &err);
    if (!blk) {
        fprintf(
            stderr,
            "moat stat: no moat statistics for process %ld (" M_STATS_BLOCK_DIR M_STATS_BLOCK_NAME
            ": %s)\n",
            pid, pid, strerror(err));
        return MOAT_EXIT_RUNTIME;
    }
    struct m_stats_block snap;
    int rc = MOAT_EXIT_OK;
    for (;;) {
        err = m_run_block_read(blk, &snap);
        if (err) {
            fprintf(stderr, "moat stat: cannot read the statistics of process %ld: %s\n", pid,
                    strerror(err));
            rc = MOAT_EXIT_RUNTIME;
            break;
        }
        if (!once)
            fputs("\033[H\033[2J", stdout);
        if (snap.magic != M_STATS_BLOCK_MAGIC)
            printf("moat stat: process %ld has not started moat yet\n", pid);
        else
            stat_print(stdout, &snap);
        fflush(stdout);
        if (once || snap.state >= M_STATS_EXITED || (kill((pid_t)pid, 0) != 0 && errno == ESRCH))
            break;
        sleep(1);
    }
    munmap(blk, sizeof *blk);
    return rc;
}
