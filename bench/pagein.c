/*
 * pagein.c - page-in throughput with a working set larger than memory.
 *
 * One program, two memories, the same loop:
 *
 *   --mode plain  anonymous mmap (THP off).  Run alone it is the no-limit
 *                 baseline; run by swap_baseline.sh inside a memory cgroup
 *                 limited to the budget it is the kernel's own swap.
 *   --mode moat   a MOAT_COMMIT_ON_DEMAND region under moat's budget
 *                 (--budget), sealed pages in moat's store (default: a file
 *                 in $TMPDIR, O_DIRECT; --store to choose).
 *
 * A run maps --size bytes (default 256 MiB, 4x the default 64 MiB budget),
 * then:
 *   populate  writes every page once, in address order;
 *   seq       --passes (3) passes in address order;
 *   random    one pass in the order of a fixed-seed random permutation
 *             (every page exactly once).
 * Each page visit reads the page's first word, checks it against what the
 * previous visit wrote and adds it to a checksum, then writes a new value
 * (one 8-byte read and one 8-byte write a page).  A page that does not hold
 * what was last written to it is a lost write or a wrong read: it is reported
 * and makes the exit status 1 (timings are never checked).
 *
 * Times are the medians of --runs runs (a fresh area each run).  The last
 * line, starting "RESULT", is for scripts.  Built as pagein_plain without
 * libmoat (PAGEIN_PLAIN_ONLY) so the kernel baseline runs without moat's
 * code in the process.
 */
#include "bench.h"

#ifndef PAGEIN_PLAIN_ONLY
#include <moat.h>
#endif

#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>

#define MAX_RUNS 21

enum phase { PH_POPULATE, PH_SEQ, PH_RANDOM, PH_N };
static const char *const phase_names[PH_N] = {"populate", "seq", "random"};

struct opts {
    bool moat;
    size_t nbytes, budget;
    unsigned passes, runs;
    uint64_t seed;
    const char *store;
};

/* What a page holds after visit `gen` (0 = populate). */
static inline uint64_t page_value(size_t page, uint64_t gen)
{
    return (gen << 40 | page) * 0x9e3779b97f4a7c15ULL + 1;
}

struct visit_state {
    uint64_t checksum;
    uint64_t bad;
};

static inline void visit(uint8_t *base, size_t page, uint64_t gen, struct visit_state *st)
{
    volatile uint64_t *w = (volatile uint64_t *)(base + page * BENCH_PAGE);
    if (gen > 0) {
        uint64_t v = *w;
        st->checksum += v;
        if (v != page_value(page, gen - 1)) {
            if (st->bad < 5)
                fprintf(stderr, "pagein: page %zu holds %#llx, expected %#llx (pass %llu)\n", page,
                        (unsigned long long)v, (unsigned long long)page_value(page, gen - 1),
                        (unsigned long long)gen);
            st->bad++;
        }
    }
    *w = page_value(page, gen);
}

/* The memory limit of this process's cgroup, for the report; "" if none. */
static void cgroup_limit(char *out, size_t outlen)
{
    out[0] = 0;
    FILE *f = fopen("/proc/self/cgroup", "r");
    if (!f)
        return;
    char line[512], path[600];
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2)
            continue;
        *c2 = 0;
        const char *ctrl = c1 + 1, *cg = c2 + 1;
        const char *file = NULL;
        if (strcmp(ctrl, "memory") == 0)
            snprintf(path, sizeof path, "/sys/fs/cgroup/memory%s/memory.limit_in_bytes",
                     (file = cg));
        else if (ctrl[0] == 0 && strcmp(line, "0") == 0)
            snprintf(path, sizeof path, "/sys/fs/cgroup%s/memory.max", (file = cg));
        if (!file)
            continue;
        FILE *l = fopen(path, "r");
        if (!l && ctrl[0] == 0) { /* a hybrid layout mounts v2 at unified/ */
            snprintf(path, sizeof path, "/sys/fs/cgroup/unified%s/memory.max", cg);
            l = fopen(path, "r");
        }
        if (!l)
            continue;
        char v[64] = "";
        if (fgets(v, sizeof v, l)) {
            v[strcspn(v, "\n")] = 0;
            unsigned long long n = strtoull(v, NULL, 10);
            if (strcmp(v, "max") != 0 && n > 0 && n < (1ULL << 50))
                snprintf(out, outlen, "%s (%s: %llu MiB)", cg, ctrl[0] ? "v1" : "v2", n >> 20);
        }
        fclose(l);
        if (out[0])
            break;
    }
    fclose(f);
}

static uint32_t *make_permutation(size_t n, uint64_t seed)
{
    uint32_t *perm = malloc(n * sizeof *perm);
    if (!perm)
        return NULL;
    struct bench_rng r;
    bench_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++)
        perm[i] = (uint32_t)i;
    for (size_t i = n - 1; i > 0; i--) {
        size_t j = (size_t)bench_rng_below(&r, (uint64_t)i + 1);
        uint32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    return perm;
}

static uint8_t *area_map(const struct opts *o)
{
#ifndef PAGEIN_PLAIN_ONLY
    if (o->moat) {
        void *p = NULL;
        int err = moat_alloc(NULL, o->nbytes, MOAT_COMMIT_ON_DEMAND, NULL, NULL, &p);
        if (err) {
            fprintf(stderr, "pagein: moat_alloc %zu bytes: %s\n", o->nbytes, strerror(err));
            return NULL;
        }
        return p;
    }
#endif
    void *p = mmap(NULL, o->nbytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        fprintf(stderr, "pagein: mmap %zu bytes: %s\n", o->nbytes, strerror(errno));
        return NULL;
    }
    /* 4 KiB pages, as moat and the swap path use. */
    madvise(p, o->nbytes, MADV_NOHUGEPAGE);
    return p;
}

static void area_unmap(const struct opts *o, uint8_t *p)
{
#ifndef PAGEIN_PLAIN_ONLY
    if (o->moat) {
        int err = moat_dealloc(p, o->nbytes);
        if (err)
            fprintf(stderr, "pagein: moat_dealloc: %s\n", strerror(err));
        return;
    }
#endif
    munmap(p, o->nbytes);
}

/* One run: seconds per phase into t[]. */
static int run_once(const struct opts *o, const uint32_t *perm, double t[PH_N],
                    struct visit_state *st)
{
    uint8_t *base = area_map(o);
    if (!base)
        return -1;
    size_t npages = o->nbytes / BENCH_PAGE;
    uint64_t gen = 0;

    uint64_t t0 = bench_now_ns();
    for (size_t i = 0; i < npages; i++)
        visit(base, i, gen, st);
    t[PH_POPULATE] = (double)(bench_now_ns() - t0) / 1e9;

    t0 = bench_now_ns();
    for (unsigned pass = 0; pass < o->passes; pass++) {
        gen++;
        for (size_t i = 0; i < npages; i++)
            visit(base, i, gen, st);
    }
    t[PH_SEQ] = (double)(bench_now_ns() - t0) / 1e9;

    gen++;
    t0 = bench_now_ns();
    for (size_t i = 0; i < npages; i++)
        visit(base, perm[i], gen, st);
    t[PH_RANDOM] = (double)(bench_now_ns() - t0) / 1e9;

    area_unmap(o, base);
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: pagein --mode plain|moat [--size 256M] [--budget 64M (moat)] "
               "[--passes 3] [--runs 3]\n"
               "              [--seed 1] [--store URI (moat)]\n");
}

int main(int argc, char **argv)
{
    struct opts o = {
        .nbytes = 256UL << 20, .budget = 64UL << 20, .passes = 3, .runs = 3, .seed = 1};
    const char *mode = NULL;
    static const struct option lopts[] = {
        {"mode", required_argument, 0, 'm'},
        {"size", required_argument, 0, 's'},
        {"budget", required_argument, 0, 'b'},
        {"passes", required_argument, 0, 'p'},
        {"runs", required_argument, 0, 'r'},
        {"seed", required_argument, 0, 'S'},
        {"store", required_argument, 0, 'o'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "h", lopts, NULL)) != -1) {
        switch (c) {
        case 'm':
            mode = optarg;
            break;
        case 's':
        case 'b':
            if (bench_parse_size(optarg, c == 's' ? &o.nbytes : &o.budget) != 0) {
                fprintf(stderr, "pagein: bad size '%s'\n", optarg);
                return 2;
            }
            break;
        case 'p':
            o.passes = (unsigned)strtoul(optarg, NULL, 0);
            break;
        case 'r':
            o.runs = (unsigned)strtoul(optarg, NULL, 0);
            break;
        case 'S':
            o.seed = strtoull(optarg, NULL, 0);
            break;
        case 'o':
            o.store = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (!mode || (strcmp(mode, "plain") != 0 && strcmp(mode, "moat") != 0)) {
        usage(stderr);
        return 2;
    }
    o.moat = strcmp(mode, "moat") == 0;
#ifdef PAGEIN_PLAIN_ONLY
    if (o.moat) {
        fprintf(stderr, "pagein: this is pagein_plain, built without libmoat; use pagein for "
                        "--mode moat\n");
        return 2;
    }
#endif
    o.nbytes &= ~(BENCH_PAGE - 1);
    size_t npages = o.nbytes / BENCH_PAGE;
    if (npages < 2 || npages > UINT32_MAX || o.runs < 1 || o.runs > MAX_RUNS || o.passes < 1 ||
        (o.moat && o.budget < BENCH_PAGE)) {
        fprintf(stderr,
                "pagein: bad arguments (--size >= 8K, 1 <= --runs <= %d, --passes >= 1, "
                "--budget >= 4K)\n",
                MAX_RUNS);
        return 2;
    }

    uint32_t *perm = make_permutation(npages, o.seed);
    if (!perm) {
        fprintf(stderr, "pagein: out of memory for the permutation\n");
        return 1;
    }

    bench_print_machine(stdout);
    char limit[700];
    cgroup_limit(limit, sizeof limit);
#ifndef PAGEIN_PLAIN_ONLY
    if (o.moat) {
        /* Exactly the stated configuration: the environment must not change
         * the budget or the watermarks behind the benchmark's back. */
        unsetenv("MOAT_BUDGET");
        unsetenv("MOAT_LOW");
        unsetenv("MOAT_HIGH");
        struct moat_options mo = {.budget = o.budget, .store = o.store, .log_level = -1};
        int err = moat_init(&mo);
        if (err) {
            fprintf(stderr, "pagein: moat_init: %s\n", strerror(err));
            free(perm);
            return 1;
        }
    }
#endif
    printf("# pagein --mode %s: %zu MiB (%zu pages)", mode, o.nbytes >> 20, npages);
    if (o.moat)
        printf(", moat budget %zu MiB, store %s", o.budget >> 20,
               o.store ? o.store : (getenv("MOAT_STORE") ? getenv("MOAT_STORE") : "default"));
    printf("; memory cgroup limit: %s\n", limit[0] ? limit : "none");
    printf("# populate once, %u sequential passes, 1 random pass (seed %llu); median of %u "
           "runs\n\n",
           o.passes, (unsigned long long)o.seed, o.runs);

    double t[PH_N][MAX_RUNS];
    struct visit_state st = {0};
    int status = 0;
    for (unsigned r = 0; r < o.runs; r++) {
        double tr[PH_N];
#ifndef PAGEIN_PLAIN_ONLY
        struct moat_stats s0 = {0}, s1 = {0};
        if (o.moat)
            moat_stats(&s0);
#endif
        if (run_once(&o, perm, tr, &st) != 0) {
            status = 1;
            break;
        }
        for (int ph = 0; ph < PH_N; ph++)
            t[ph][r] = tr[ph];
        printf("run %u: populate %.3f s, seq %.3f s, random %.3f s", r + 1, tr[PH_POPULATE],
               tr[PH_SEQ], tr[PH_RANDOM]);
#ifndef PAGEIN_PLAIN_ONLY
        if (o.moat) {
            moat_stats(&s1);
            printf("; page-ins %llu, evicted written %llu / clean %llu, peak resident %llu of "
                   "%llu pages",
                   (unsigned long long)(s1.faults_pagein - s0.faults_pagein),
                   (unsigned long long)(s1.evictions_written - s0.evictions_written),
                   (unsigned long long)(s1.evictions_clean - s0.evictions_clean),
                   (unsigned long long)s1.peak_resident_pages, (unsigned long long)s1.budget_pages);
            if (s1.budget_pages && s1.peak_resident_pages > s1.budget_pages)
                printf(" (ABOVE THE BUDGET)");
        }
#endif
        printf("\n");
        fflush(stdout);
    }
    free(perm);
    if (status)
        return status;

    double med[PH_N];
    size_t visits[PH_N] = {npages, npages * o.passes, npages};
    printf("\n| phase | pages visited | median s | pages/s | MiB/s |\n|---|---:|---:|---:|---:|\n");
    for (int ph = 0; ph < PH_N; ph++) {
        med[ph] = bench_median(t[ph], o.runs);
        double pps = (double)visits[ph] / med[ph];
        printf("| %s | %zu | %.3f | %.0f | %.1f |\n", phase_names[ph], visits[ph], med[ph], pps,
               pps * BENCH_PAGE / (1 << 20));
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("\nchecksum %#llx, mismatched pages %llu, peak RSS of the process %ld MiB\n",
           (unsigned long long)st.checksum, (unsigned long long)st.bad, ru.ru_maxrss >> 10);
    printf("RESULT mode=%s size_mib=%zu budget_mib=%zu passes=%u runs=%u populate_s=%.4f "
           "seq_s=%.4f random_s=%.4f mismatches=%llu maxrss_mib=%ld\n",
           mode, o.nbytes >> 20, o.moat ? o.budget >> 20 : 0, o.passes, o.runs, med[PH_POPULATE],
           med[PH_SEQ], med[PH_RANDOM], (unsigned long long)st.bad, ru.ru_maxrss >> 10);
    fflush(stdout);
#ifndef PAGEIN_PLAIN_ONLY
    /* After the report, so a failure here cannot hide the numbers. */
    if (o.moat)
        moat_shutdown();
#endif
    return st.bad ? 1 : 0;
}
