/*
 * run_config.h - `moat run --config Occlum.json`: applying an enclave
 * configuration to a run, reporting the run's peaks against it, and the
 * suggestions `moat run` and `moat config suggest` make from those peaks.
 *
 * The layout is derived by the config layer (src/config/config.h) for one
 * platform and handed to the program as environment variables read by
 * libmoat_preload.so (docs/run.md, "Running under an Occlum.json"):
 *
 *   MOAT_RANGE        the ELRANGE: user space Max, in bytes, page-rounded
 *   MOAT_USER_MAX     user space Max in bytes: managed mappings that do not
 *                     fit fail with ENOMEM instead of going to the kernel
 *   MOAT_USER_INIT    user space Init in bytes: committed at start, from the
 *                     program heap's first data page on (preload.c)
 *   MOAT_THREADS_MAX  most live threads, main thread included (tcs.c)
 *   MOAT_BUDGET       the EPC (--epc), as --budget
 */
#ifndef MOAT_TOOLS_RUN_CONFIG_H
#define MOAT_TOOLS_RUN_CONFIG_H

#include "config/config.h"
#include "preload/stats_block.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/* The headroom `moat run` suggests with: the share of Max left unused at
 * the peak (docs/config.md, "Suggesting resource limits"). */
#define M_RUN_HEADROOM_DEFAULT 25u
#define M_RUN_HEADROOM_MAX     90u

struct m_run_config {
    const char *path;          /* the Occlum.json */
    struct m_config_opts opts; /* platform, from --edmm/--no-edmm/--sgx-mode/--compat */
    struct m_config *cfg;
    struct m_config_layout layout;
    bool have_layout;
    uint64_t range; /* MOAT_RANGE: user space Max clamped to what the engine accepts */
};

/* What a run measured, from its statistics. */
struct m_run_peaks {
    uint64_t user_bytes;     /* the program's user space peak: touched managed memory (peak
                                committed managed memory when Init was not committed at start) */
    uint64_t user_init;      /* bytes committed at start (MOAT_USER_INIT); 0 = none */
    uint64_t user_committed; /* peak committed managed memory, Init included */
    uint64_t threads;        /* peak live threads; 0 = not measured */
    uint64_t resident;       /* peak resident bytes */
    uint64_t epc;            /* the budget in bytes; 0 = unlimited */
    uint64_t evicted_pages;  /* pages sealed and evicted (written or clean) */
};

/* A suggested resource_limits section.  Sizes are whole MB. */
struct m_run_suggestion {
    bool edmm;
    unsigned headroom_pct;
    uint64_t user_init, user_max; /* bytes; user_max 0 = not emitted (non-EDMM) */
    bool threads_known;
    uint64_t threads_init, threads_max; /* threads_init 0 = not emitted (non-EDMM) */
    bool threads_clamped;               /* max_num_of_threads held to the tool's 4096 */
};

/* m_run_config_load - read, check and derive rc->path for rc->opts.  Prints
 * the diagnostics on f (errors only when quiet).  Returns -1 when the run
 * may go on, else the exit code (3 for an invalid or unreadable file). */
int m_run_config_load(struct m_run_config *rc, FILE *f, bool quiet);

/* m_run_config_env - set the environment variables above (not
 * MOAT_BUDGET).  Returns 0 or an errno. */
int m_run_config_env(const struct m_run_config *rc);

void m_run_config_free(struct m_run_config *rc);

/* m_run_peaks_from_block - the peaks of a finished run. */
void m_run_peaks_from_block(const struct m_stats_block *b, struct m_run_peaks *p);

/* m_run_suggest - the limits that hold the peaks with headroom_pct of Max
 * left unused: sizes rounded up to whole MB (at least 1MB), on EDMM a 1MB
 * user_space_size and init_num_of_threads = the thread peak (at most the
 * tool's 16), without EDMM user_space_size = the Max and no init field. */
void m_run_suggest(const struct m_run_peaks *p, bool edmm, unsigned headroom_pct,
                   struct m_run_suggestion *s);

/* m_run_suggest_print - s as the members of a resource_limits object,
 * indented by `indent` spaces, after the configured kernel_space_* fields
 * of cfg (NULL: none), each member on a line, no trailing newline. */
void m_run_suggest_print(FILE *f, const struct m_run_suggestion *s, const char *const kernel[3],
                         int indent);

/* m_run_config_report - the lines `moat run --config` prints at exit. */
void m_run_config_report(FILE *f, const struct m_run_config *rc, const struct m_stats_block *b);

/* m_run_config_write_json - the --stats-json file: m_run_json(), plus a
 * "config" member when rc is not NULL.  Returns 0 or an errno. */
int m_run_config_write_json(const char *path, const struct m_run_config *rc,
                            const struct m_stats_block *b, int status);

#endif
