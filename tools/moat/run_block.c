/*
 * run_block.c - reading and describing the statistics block of a program
 * under moat (see run.h and src/preload/stats_block.h).
 */
#include "run.h"

#include "common/size.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdint.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void block_name(pid_t pid, char *buf, size_t buflen)
{
    snprintf(buf, buflen, "/" M_STATS_BLOCK_NAME, (long)pid);
}

int m_run_block_create(pid_t pid)
{
    char name[64];
    block_name(pid, name, sizeof name);
    int fd = shm_open(name, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return errno;
    int err = ftruncate(fd, (off_t)sizeof(struct m_stats_block)) == 0 ? 0 : errno;
    close(fd);
    return err;
}

struct m_stats_block *m_run_block_map(pid_t pid, int *err)
{
    char name[64];
    block_name(pid, name, sizeof name);
    int fd = shm_open(name, O_RDONLY | O_CLOEXEC, 0);
    struct stat st;
    void *p = MAP_FAILED;
    int e = 0;
    if (fd < 0)
        e = errno;
    else if (fstat(fd, &st) != 0)
        e = errno;
    else if ((size_t)st.st_size < sizeof(struct m_stats_block))
        e = EPROTO;
    else if ((p = mmap(NULL, sizeof(struct m_stats_block), PROT_READ, MAP_SHARED, fd, 0)) ==
             MAP_FAILED)
        e = errno;
    if (fd >= 0)
        close(fd);
    if (err)
        *err = e;
    return p == MAP_FAILED ? NULL : p;
}

int m_run_block_read(const struct m_stats_block *blk, struct m_stats_block *out)
{
    /* The reader's half of the writer's protocol (pl_block_write in
     * src/preload/preload.c): acquire loads, word by word. */
    _Atomic uint64_t *src = (_Atomic uint64_t *)(void *)(uintptr_t)blk;
    uint64_t *dst = (uint64_t *)(void *)out;
    const size_t seq_word = offsetof(struct m_stats_block, seq) / 8;
    for (int tries = 0; tries < 1000; tries++) {
        uint64_t s1 = atomic_load_explicit(&src[seq_word], memory_order_acquire);
        if (s1 & 1) {
            usleep(100);
            continue;
        }
        for (size_t i = 0; i < sizeof *out / 8; i++)
            dst[i] = atomic_load_explicit(&src[i], memory_order_acquire);
        uint64_t s2 = atomic_load_explicit(&src[seq_word], memory_order_relaxed);
        if (s1 != s2)
            continue;
        out->seq = s1;
        if (out->magic == 0)
            return 0; /* created, the program has not started moat yet */
        if (out->magic != M_STATS_BLOCK_MAGIC || out->version != M_STATS_BLOCK_VERSION)
            return EPROTO;
        return 0;
    }
    return EAGAIN;
}

void m_run_block_unlink(pid_t pid)
{
    char name[64];
    block_name(pid, name, sizeof name);
    shm_unlink(name);
}

int m_run_block_sweep(pid_t run_pid)
{
    DIR *d = opendir(M_STATS_BLOCK_DIR);
    if (!d)
        return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        long pid;
        char tail[16];
        if (sscanf(e->d_name, "moat-%ld.%15s", &pid, tail) != 2 || strcmp(tail, "stats") != 0 ||
            pid <= 0)
            continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH)
            continue; /* still running */
        struct m_stats_block *b = m_run_block_map((pid_t)pid, NULL), snap;
        if (!b)
            continue;
        if (m_run_block_read(b, &snap) == 0 && snap.run_pid == run_pid) {
            m_run_block_unlink((pid_t)pid);
            n++;
        }
        munmap(b, sizeof *b);
    }
    closedir(d);
    return n;
}

static const char *mib(uint64_t pages, char *buf, size_t n)
{
    return m_size_format((size_t)(pages * 4096), buf, n);
}

/* The nodes file of the trace opened by m_run_trace_open (one at a time:
 * `moat run` writes one trace). */
static struct {
    FILE *trace; /* the trace it belongs to */
    char *path;  /* FILE.nodes.csv */
    FILE *nodes; /* NULL until a sample has store nodes */
    bool failed; /* could not create it: said once */
} trace_nodes;

FILE *m_run_trace_open(const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return NULL;
    fprintf(f, "%s\n", M_RUN_TRACE_HEADER);
    free(trace_nodes.path);
    trace_nodes.path = NULL;
    if (asprintf(&trace_nodes.path, "%s%s", path, M_RUN_TRACE_NODES_SUFFIX) < 0)
        trace_nodes.path = NULL;
    trace_nodes.trace = f;
    trace_nodes.nodes = NULL;
    trace_nodes.failed = false;
    return f;
}

static void trace_nodes_rows(FILE *f, const struct m_stats_block *b)
{
    if (f != trace_nodes.trace || !trace_nodes.path || trace_nodes.failed || !b->store_nnodes)
        return;
    if (!trace_nodes.nodes) {
        trace_nodes.nodes = fopen(trace_nodes.path, "w");
        if (!trace_nodes.nodes) {
            fprintf(stderr, "moat run: cannot write the store nodes' trace %s: %s\n",
                    trace_nodes.path, strerror(errno));
            trace_nodes.failed = true;
            return;
        }
        fprintf(trace_nodes.nodes, "%s\n", M_RUN_TRACE_NODES_HEADER);
    }
    uint64_t n = b->store_nnodes < M_STATS_BLOCK_NODES ? b->store_nnodes : M_STATS_BLOCK_NODES;
    for (uint64_t i = 0; i < n; i++) {
        const struct m_stats_node *nd = &b->store_node[i];
        char addr[sizeof nd->addr + 1];
        memcpy(addr, nd->addr, sizeof nd->addr);
        addr[sizeof nd->addr] = '\0';
        addr[strcspn(addr, ",\"\n")] = '\0'; /* never breaks the CSV */
        fprintf(trace_nodes.nodes,
                "%.3f,%" PRIu64 ",%s,%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%" PRIu64
                ",%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%" PRIu64
                ",%" PRIu64 "\n",
                (double)b->elapsed_ns / 1e9, i, addr, nd->primary, nd->pages, nd->bytes, nd->reads,
                nd->writes, nd->bytes_read, nd->bytes_written, nd->round_trips, nd->retries,
                nd->redirections, nd->conn_failures, nd->wait_failures, nd->failovers);
    }
}

void m_run_trace_close(FILE *f)
{
    if (f && f == trace_nodes.trace) {
        if (trace_nodes.nodes)
            fclose(trace_nodes.nodes);
        free(trace_nodes.path);
        trace_nodes.path = NULL;
        trace_nodes.nodes = NULL;
        trace_nodes.trace = NULL;
    }
    if (f)
        fclose(f);
}

void m_run_trace_row(FILE *f, const struct m_stats_block *b)
{
    trace_nodes_rows(f, b);
    const struct moat_stats *s = &b->stats;
    fprintf(f,
            "%.3f,%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%" PRIu64
            ",%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%" PRIu64
            ",%" PRIu64 "\n",
            (double)b->elapsed_ns / 1e9, s->budget_pages, s->resident_pages, s->committed_pages,
            s->evicted_pages, s->resident_unreclaimable, s->faults_commit, s->faults_pagein,
            s->faults_wp, s->evictions_written, s->evictions_clean, s->store_bytes_written,
            s->store_bytes_read, s->fault_ns, b->alloc_requested_bytes, b->alloc_reserved_bytes);
}

void m_run_summary(FILE *f, const struct m_stats_block *b, int sig)
{
    const struct moat_stats *s = &b->stats;
    char b1[32], b2[32], b3[32], b4[32];
    uint64_t evicted = s->evictions_written + s->evictions_clean;
    fprintf(f, "moat: %s %.2f s: peak resident %s of %s budget, peak committed %s\n",
            sig ? "killed after" : "ran", (double)b->elapsed_ns / 1e9,
            mib(s->peak_resident_pages, b1, sizeof b1),
            s->budget_pages ? mib(s->budget_pages, b2, sizeof b2) : "an unlimited",
            mib(s->peak_committed_pages, b3, sizeof b3));
    fprintf(f,
            "moat: pages evicted %" PRIu64 " (%" PRIu64 " sealed and written, %" PRIu64
            " clean), loaded %" PRIu64 "; sealed %s, read back %s\n",
            evicted, s->evictions_written, s->evictions_clean, s->faults_pagein,
            m_size_format((size_t)s->store_bytes_written, b1, sizeof b1),
            m_size_format((size_t)s->store_bytes_read, b4, sizeof b4));
    if (s->store_meta_bytes)
        fprintf(f, "moat: store: %s of record trailers kept in memory, outside the budget\n",
                m_size_format((size_t)s->store_meta_bytes, b1, sizeof b1));
    if (s->wp_calls || s->zap_calls)
        fprintf(f,
                "moat: page tables: %" PRIu64 " write-protect calls, %" PRIu64
                " zap calls (each a TLB shootdown while other CPUs run the program)\n",
                s->wp_calls, s->zap_calls);
    fprintf(f,
            "moat: faults %" PRIu64 " (first touch %" PRIu64 ", page-in %" PRIu64
            ", write-protect %" PRIu64 "), %.3f s in faults, %.3f s evicting\n",
            s->faults_commit + s->faults_pagein + s->faults_wp, s->faults_commit, s->faults_pagein,
            s->faults_wp, (double)s->fault_ns / 1e9, (double)s->reclaim_ns / 1e9);
    if (s->pagein_readahead)
        fprintf(f,
                "moat: read ahead: %" PRIu64 " of the %" PRIu64
                " page-ins, along streams of faults\n",
                s->pagein_readahead, s->faults_pagein);
    if (s->pagein_refault_hot)
        fprintf(f,
                "moat: refaults: %" PRIu64 " page-ins came back soon after their eviction "
                "(kept hot)\n",
                s->pagein_refault_hot);
    if (s->pagein_batches)
        fprintf(f,
                "moat: batched page-in: %" PRIu64 " faults of threads faulting together loaded "
                "in %" PRIu64 " store submissions (%.1f each)\n",
                s->pagein_batched_faults, s->pagein_batches,
                (double)s->pagein_batched_faults / (double)s->pagein_batches);
    if (!s->tracking)
        fprintf(f,
                "moat: pages were not tracked: the program's memory never exceeded the budget's "
                "high watermark, so the kernel served its first touches (resident sampled every "
                "%u ms; MOAT_LAZY=0 tracks from the start)\n",
                b->interval_ms);
    if (b->alloc_peak_reserved_bytes) {
        double frag =
            b->alloc_reserved_bytes
                ? 100.0 * (1.0 - (double)b->alloc_requested_bytes / (double)b->alloc_reserved_bytes)
                : 0.0;
        fprintf(f,
                "moat: malloc: peak requested %s, peak reserved %s; at exit %s requested in %s "
                "reserved (%.1f%% fragmentation)\n",
                m_size_format((size_t)b->alloc_peak_requested_bytes, b1, sizeof b1),
                m_size_format((size_t)b->alloc_peak_reserved_bytes, b2, sizeof b2),
                m_size_format((size_t)b->alloc_requested_bytes, b3, sizeof b3),
                m_size_format((size_t)b->alloc_reserved_bytes, b4, sizeof b4), frag);
    }
    if (s->fork_loaded_pages || s->resident_unreclaimable)
        fprintf(f,
                "moat: %s pinned at exit (allocator metadata); %" PRIu64
                " evicted pages read back for fork children\n",
                mib(s->resident_unreclaimable, b1, sizeof b1), s->fork_loaded_pages);
    if (s->store_round_trips) {
        uint64_t ios = 0;
        for (uint64_t i = 0; i < b->store_nnodes && i < M_STATS_BLOCK_NODES; i++)
            ios += b->store_node[i].reads + b->store_node[i].writes;
        fprintf(f,
                "moat: redis store: %" PRIu64 " node%s, %" PRIu64
                " round trips (%.1f I/Os each), %" PRIu64 " retries, %" PRIu64
                " redirections, %" PRIu64 " failovers\n",
                s->store_nodes, s->store_nodes == 1 ? "" : "s", s->store_round_trips,
                (double)ios / (double)s->store_round_trips, s->store_retries, s->store_redirections,
                s->store_failovers);
        for (uint64_t i = 0; i < b->store_nnodes && i < M_STATS_BLOCK_NODES; i++) {
            const struct m_stats_node *nd = &b->store_node[i];
            fprintf(f,
                    "moat:   node %.48s%s: %" PRIu64 " pages (%s) now, %" PRIu64 " reads, %" PRIu64
                    " writes, %" PRIu64 " round trips, %" PRIu64 " retries\n",
                    nd->addr, nd->primary ? "" : " (not a primary now)", nd->pages,
                    m_size_format((size_t)nd->bytes, b1, sizeof b1), nd->reads, nd->writes,
                    nd->round_trips, nd->retries);
        }
    }
    if (s->store_errors || s->integrity_failures || s->faults_fatal)
        fprintf(f,
                "moat: %" PRIu64 " store errors, %" PRIu64 " integrity failures, %" PRIu64
                " fatal faults\n",
                s->store_errors, s->integrity_failures, s->faults_fatal);
}

void m_run_json(FILE *f, const struct m_stats_block *b, int status)
{
    const struct moat_stats *s = &b->stats;
    fprintf(f, "{\n  \"pid\": %" PRId64 ",\n", b->pid);
    static const char *const states[] = {"created", "running", "exited", "failed"};
    fprintf(f, "  \"state\": \"%s\",\n", b->state < 4 ? states[b->state] : "unknown");
    if (status >= 0) {
        if (WIFEXITED(status))
            fprintf(f, "  \"exit_status\": %d,\n", WEXITSTATUS(status));
        else if (WIFSIGNALED(status))
            fprintf(f, "  \"signal\": %d,\n", WTERMSIG(status));
    }
    fprintf(f, "  \"start_realtime_ns\": %" PRIu64 ",\n  \"elapsed_ns\": %" PRIu64 ",\n",
            b->start_realtime_ns, b->elapsed_ns);
    fprintf(f, "  \"updates\": %" PRIu64 ",\n  \"interval_ms\": %u,\n  \"page_size\": 4096,\n",
            b->updates, b->interval_ms);
#define J(field) fprintf(f, "  \"" #field "\": %" PRIu64 ",\n", s->field)
    J(budget_pages);
    J(committed_pages);
    J(resident_pages);
    J(resident_unreclaimable);
    J(evicted_pages);
    J(peak_committed_pages);
    J(peak_resident_pages);
    J(regions);
    J(faults_commit);
    J(faults_pagein);
    J(faults_wp);
    J(faults_handler);
    J(faults_fatal);
    J(evictions_written);
    J(evictions_clean);
    J(reclaim_sync);
    J(store_bytes_written);
    J(store_bytes_read);
    J(store_errors);
    J(integrity_failures);
    J(fault_ns);
    J(fork_loaded_pages);
    J(store_nodes);
    J(store_round_trips);
    J(store_retries);
    J(store_redirections);
    J(store_failovers);
    J(tracking);
    J(untracked_pages);
    J(pagein_batches);
    J(pagein_batched_faults);
    J(pagein_readahead);
    J(pagein_refault_hot);
    J(store_meta_bytes);
    J(wp_calls);
    J(zap_calls);
#undef J
#define A(field) fprintf(f, "  \"" #field "\": %" PRIu64 ",\n", b->field)
    A(threads_live);
    A(threads_peak);
    A(alloc_requested_bytes);
    A(alloc_reserved_bytes);
    A(alloc_committed_bytes);
    A(alloc_peak_requested_bytes);
    A(alloc_peak_reserved_bytes);
    A(alloc_foreign_frees);
#undef A
    /* The redis store's nodes (stats_block.h store_node[]), as in the
     * trace's FILE.nodes.csv. */
    fprintf(f, "  \"store_node\": [");
    for (uint64_t i = 0; i < b->store_nnodes && i < M_STATS_BLOCK_NODES; i++) {
        const struct m_stats_node *nd = &b->store_node[i];
        char addr[sizeof nd->addr + 1];
        memcpy(addr, nd->addr, sizeof nd->addr);
        addr[sizeof nd->addr] = '\0';
        addr[strcspn(addr, "\"\\")] = '\0';
        fprintf(f,
                "%s\n    {\"addr\": \"%s\", \"primary\": %s, \"pages\": %" PRIu64
                ", \"bytes\": %" PRIu64 ", \"reads\": %" PRIu64 ", \"writes\": %" PRIu64
                ", \"bytes_read\": %" PRIu64 ", \"bytes_written\": %" PRIu64
                ", \"round_trips\": %" PRIu64 ", \"retries\": %" PRIu64
                ", \"redirections\": %" PRIu64 ", \"conn_failures\": %" PRIu64
                ", \"wait_failures\": %" PRIu64 ", \"failovers\": %" PRIu64 "}",
                i ? "," : "", addr, nd->primary ? "true" : "false", nd->pages, nd->bytes, nd->reads,
                nd->writes, nd->bytes_read, nd->bytes_written, nd->round_trips, nd->retries,
                nd->redirections, nd->conn_failures, nd->wait_failures, nd->failovers);
    }
    fprintf(f, "%s],\n", b->store_nnodes ? "\n  " : "");
    fprintf(f, "  \"reclaim_ns\": %" PRIu64 "\n}\n", s->reclaim_ns);
}
