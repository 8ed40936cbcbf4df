/*
 * firsttouch.c - the cost of committing a page on first touch.
 *
 * Touches every page of a fresh area once (one 8-byte write a page, in
 * address order) and reports nanoseconds per page for:
 *
 *   plain       anonymous private mmap, transparent huge pages off
 *               (MADV_NOHUGEPAGE: one 4 KiB fault a page, as moat takes)
 *   moat        a MOAT_COMMIT_ON_DEMAND region, unlimited budget
 *   moat+budget the same with a budget of twice the area (the budget
 *               accounting runs, but nothing has to be evicted)
 *
 * Each figure is the median of --runs runs after one warm-up run, on a fresh
 * area each time (the area is freed between runs, not timed).  The touched
 * pages are read back afterwards (not timed) and any page that does not hold
 * what was written is reported and makes the exit status 1.
 *
 * The environment variables that moat_init reads for the budget, watermarks
 * and range are cleared first, so the configurations are exactly the ones
 * named; MOAT_STORE and MOAT_LOG are left to the caller.
 */
#include "bench.h"

#include <moat.h>

#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define MAX_RUNS 101

static uint64_t touch_pages(uint8_t *base, size_t npages)
{
    uint64_t t0 = bench_now_ns();
    for (size_t i = 0; i < npages; i++)
        *(volatile uint64_t *)(base + i * BENCH_PAGE) = i ^ 0x5bd1e995u;
    return bench_now_ns() - t0;
}

static size_t verify_pages(const uint8_t *base, size_t npages)
{
    size_t bad = 0;
    for (size_t i = 0; i < npages; i++) {
        uint64_t v = *(const volatile uint64_t *)(base + i * BENCH_PAGE);
        if (v != (i ^ 0x5bd1e995u)) {
            if (bad < 5)
                fprintf(stderr, "firsttouch: page %zu holds %#llx, expected %#llx\n", i,
                        (unsigned long long)v, (unsigned long long)(i ^ 0x5bd1e995u));
            bad++;
        }
    }
    return bad;
}

/* One run of the plain baseline: ns per page, or a negative value on error. */
static double run_plain(size_t nbytes, size_t *bad)
{
    uint8_t *p = mmap(NULL, nbytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        fprintf(stderr, "firsttouch: mmap %zu bytes: %s\n", nbytes, strerror(errno));
        return -1;
    }
    madvise(p, nbytes, MADV_NOHUGEPAGE);
    size_t npages = nbytes / BENCH_PAGE;
    uint64_t ns = touch_pages(p, npages);
    *bad += verify_pages(p, npages);
    munmap(p, nbytes);
    return (double)ns / (double)npages;
}

static double run_moat(size_t nbytes, size_t *bad, uint64_t *faults)
{
    void *p = NULL;
    struct moat_stats before, after;
    int err = moat_alloc(NULL, nbytes, MOAT_COMMIT_ON_DEMAND, NULL, NULL, &p);
    if (err) {
        fprintf(stderr, "firsttouch: moat_alloc %zu bytes: %s\n", nbytes, strerror(err));
        return -1;
    }
    size_t npages = nbytes / BENCH_PAGE;
    moat_stats(&before);
    uint64_t ns = touch_pages(p, npages);
    moat_stats(&after);
    *faults = after.faults_commit - before.faults_commit;
    *bad += verify_pages(p, npages);
    err = moat_dealloc(p, nbytes);
    if (err) {
        fprintf(stderr, "firsttouch: moat_dealloc: %s\n", strerror(err));
        return -1;
    }
    return (double)ns / (double)npages;
}

struct config {
    const char *name;
    size_t budget; /* 0 = unlimited; SIZE_MAX = plain memory */
};

int main(int argc, char **argv)
{
    size_t nbytes = 64UL << 20;
    unsigned runs = 7;
    bool moat = true;
    static const struct option opts[] = {
        {"size", required_argument, 0, 's'},
        {"runs", required_argument, 0, 'r'},
        {"plain-only", no_argument, 0, 'p'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 's':
            if (bench_parse_size(optarg, &nbytes) != 0) {
                fprintf(stderr, "firsttouch: bad --size '%s'\n", optarg);
                return 2;
            }
            break;
        case 'r':
            runs = (unsigned)strtoul(optarg, NULL, 0);
            break;
        case 'p':
            moat = false;
            break;
        case 'h':
        default:
            fprintf(c == 'h' ? stdout : stderr,
                    "usage: firsttouch [--size 64M] [--runs 7] [--plain-only]\n");
            return c == 'h' ? 0 : 2;
        }
    }
    nbytes &= ~(BENCH_PAGE - 1);
    if (nbytes == 0 || runs < 1 || runs > MAX_RUNS) {
        fprintf(stderr, "firsttouch: bad arguments (--size >= 4K, 1 <= --runs <= %d)\n", MAX_RUNS);
        return 2;
    }
    unsetenv("MOAT_BUDGET");
    unsetenv("MOAT_LOW");
    unsetenv("MOAT_HIGH");
    unsetenv("MOAT_RANGE");

    size_t npages = nbytes / BENCH_PAGE;
    const struct config configs[] = {
        {"plain mmap", SIZE_MAX},
        {"moat, unlimited budget", 0},
        {"moat, budget 2x the area", 2 * nbytes},
    };
    size_t nconfigs = moat ? 3 : 1;

    bench_print_machine(stdout);
    printf("# firsttouch: %zu pages (%zu MiB) written once each, median of %u runs after a "
           "warm-up\n\n",
           npages, nbytes >> 20, runs);
    printf("| configuration | ns/page (median) | min | max | ratio to plain | commit faults/run "
           "|\n|---|---:|---:|---:|---:|---:|\n");

    size_t bad = 0;
    double plain_med = 0;
    double meds[3] = {-1, -1, -1}; /* for the RESULT line; -1 = not measured */
    int status = 0;
    for (size_t k = 0; k < nconfigs; k++) {
        const struct config *cf = &configs[k];
        uint64_t faults = 0;
        if (cf->budget != SIZE_MAX) {
            struct moat_options o = {.budget = cf->budget, .log_level = -1};
            int err = moat_init(&o);
            if (err) {
                printf("| %s | moat_init failed: %s | | | | |\n", cf->name, strerror(err));
                status = 1;
                continue;
            }
        }
        double v[MAX_RUNS];
        bool ok = true;
        for (unsigned r = 0; r <= runs && ok; r++) { /* run 0 is the warm-up */
            double ns =
                cf->budget == SIZE_MAX ? run_plain(nbytes, &bad) : run_moat(nbytes, &bad, &faults);
            if (ns < 0)
                ok = false;
            else if (r > 0)
                v[r - 1] = ns;
        }
        if (cf->budget != SIZE_MAX)
            moat_shutdown();
        if (!ok) {
            printf("| %s | failed (see above) | | | | |\n", cf->name);
            status = 1;
            continue;
        }
        double med = bench_median(v, runs); /* sorts v */
        meds[k] = med;
        if (cf->budget == SIZE_MAX)
            plain_med = med;
        char fbuf[32] = "-";
        if (cf->budget != SIZE_MAX)
            snprintf(fbuf, sizeof fbuf, "%llu", (unsigned long long)faults);
        printf("| %s | %.0f | %.0f | %.0f | %.2f | %s |\n", cf->name, med, v[0], v[runs - 1],
               plain_med > 0 ? med / plain_med : 0.0, fbuf);
        fflush(stdout);
    }
    if (bad) {
        fprintf(stderr, "firsttouch: %zu pages did not hold what was written\n", bad);
        status = 1;
    }
    printf("\n(target for issue 2: moat within 3x of plain)\n");
    printf("RESULT pages=%zu runs=%u plain_ns=%.1f moat_ns=%.1f moat_budget_ns=%.1f bad=%zu\n",
           npages, runs, meds[0], meds[1], meds[2], bad);
    return status;
}
