/*
 * cmd_demo.c - `moat demo`: drive the library through a working set larger
 * than its budget and print what happened.  It fills a COMMIT_ON_DEMAND
 * region with a pattern that encodes each word's address, then makes random
 * reads (verified) and writes across it, then verifies every page: every
 * page goes through first-touch commit, sealing, eviction and page-in.
 */
#include "cli.h"

#include "common/size.h"

#include <moat.h>

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void demo_usage(FILE *f)
{
    fprintf(f, "usage: moat demo [--budget SIZE] [--factor N] [--ops N] [--store URI]\n"
               "\n"
               "Reserve a region N times the budget (default 8), write every page, make\n"
               "random verified reads and writes, verify everything, print the statistics.\n"
               "\n"
               "  --budget SIZE  resident budget (default 32M); SIZE is bytes or a number\n"
               "                 with K, M, G, T (binary), e.g. 4096, 64M, 64MiB, 1.5G\n"
               "  --factor N     working set as a multiple of the budget (default 8)\n"
               "  --ops N        random operations after the first pass (default 200000)\n"
               "  --store URI    where evicted pages go (default: a file in $TMPDIR)\n");
}

static uint64_t demo_word(uint64_t i, uint64_t gen)
{
    return (i * 0x9E3779B97F4A7C15ULL) ^ gen;
}

static double demo_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int moat_cmd_demo(int argc, char **argv)
{
    size_t budget = 32u << 20;
    unsigned long factor = 8, ops = 200000;
    const char *store = NULL;
    static const struct option longopts[] = {
        {"budget", required_argument, NULL, 'b'}, {"factor", required_argument, NULL, 'f'},
        {"ops", required_argument, NULL, 'o'},    {"store", required_argument, NULL, 's'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "b:f:o:s:h", longopts, NULL)) != -1) {
        char *end;
        switch (c) {
        case 'b':
            if (m_size_parse(optarg, &budget) != 0) {
                fprintf(stderr, "moat demo: --budget '%s' is not a size (e.g. 64M)\n", optarg);
                return MOAT_EXIT_USAGE;
            }
            break;
        case 'f':
            factor = strtoul(optarg, &end, 10);
            if (*end || factor < 1 || factor > 64) {
                fprintf(stderr, "moat demo: --factor '%s' must be a whole number from 1 to 64\n",
                        optarg);
                return MOAT_EXIT_USAGE;
            }
            break;
        case 'o':
            ops = strtoul(optarg, &end, 10);
            if (*end) {
                fprintf(stderr, "moat demo: --ops '%s' is not a whole number\n", optarg);
                return MOAT_EXIT_USAGE;
            }
            break;
        case 's':
            store = optarg;
            break;
        case 'h':
            demo_usage(stdout);
            return MOAT_EXIT_OK;
        default:
            demo_usage(stderr);
            return MOAT_EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "moat demo: unexpected argument '%s'\n", argv[optind]);
        return MOAT_EXIT_USAGE;
    }
    struct moat_options o = {.budget = budget, .store = store, .log_level = -1};
    int err = moat_init(&o);
    if (err) {
        fprintf(stderr, "moat demo: cannot start moat: %s\n", strerror(err));
        return err == EINVAL ? MOAT_EXIT_CONFIG : MOAT_EXIT_RUNTIME;
    }
    size_t nbytes = budget * factor;
    nbytes &= ~(MOAT_PAGE_SIZE - 1);
    uint64_t *mem;
    err = moat_alloc(NULL, nbytes, MOAT_COMMIT_ON_DEMAND, NULL, NULL, (void **)&mem);
    if (err) {
        fprintf(stderr, "moat demo: cannot allocate %zu bytes: %s\n", nbytes, strerror(err));
        moat_shutdown();
        return MOAT_EXIT_RUNTIME;
    }
    char b1[32], b2[32];
    printf("moat demo: %s working set over a %s budget (%lux)\n",
           m_size_format(nbytes, b1, sizeof b1), m_size_format(budget, b2, sizeof b2), factor);
    size_t nwords = nbytes / sizeof(uint64_t), words_per_page = MOAT_PAGE_SIZE / sizeof(uint64_t);
    size_t npages = nbytes / MOAT_PAGE_SIZE;
    uint32_t *gen = calloc(npages, sizeof *gen); /* per-page generation, to verify writes */
    if (!gen) {
        moat_shutdown();
        return MOAT_EXIT_RUNTIME;
    }
    double t0 = demo_now();
    for (size_t i = 0; i < nwords; i++)
        mem[i] = demo_word(i, 0);
    double t1 = demo_now();
    uint64_t rng = 0x2545F4914F6CDD1DULL, mismatches = 0;
    for (unsigned long k = 0; k < ops; k++) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        size_t pg = rng % npages, w = (rng >> 32) % words_per_page, i = pg * words_per_page + w;
        if (k % 3 == 0) {
            gen[pg]++;
            for (size_t j = 0; j < words_per_page; j += 64)
                mem[pg * words_per_page + j] = demo_word(pg * words_per_page + j, gen[pg]);
        } else {
            uint64_t want = demo_word(i, (w % 64 == 0) ? gen[pg] : 0);
            if (mem[i] != want)
                mismatches++;
        }
    }
    double t2 = demo_now();
    for (size_t i = 0; i < nwords; i++) {
        size_t pg = i / words_per_page;
        if (mem[i] != demo_word(i, (i % words_per_page) % 64 == 0 ? gen[pg] : 0))
            mismatches++;
    }
    double t3 = demo_now();
    printf("  first pass  %.2f s (%.0f pages/s)\n", t1 - t0, (double)npages / (t1 - t0));
    printf("  random ops  %.2f s (%lu operations, 1/3 writes)\n", t2 - t1, ops);
    printf("  verify pass %.2f s\n", t3 - t2);
    printf("  mismatches  %" PRIu64 "\n\n", mismatches);
    fflush(stdout); /* the statistics are written to the descriptor directly */
    moat_stats_print(STDOUT_FILENO);
    free(gen);
    moat_dealloc(mem, nbytes);
    moat_shutdown();
    return mismatches ? MOAT_EXIT_RUNTIME : MOAT_EXIT_OK;
}
