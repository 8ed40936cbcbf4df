/*
 * tlb_cost.c - what one page-table change costs moat, alone and while
 * another thread of the process runs on another CPU.
 *
 * Every write-protection moat sets or lifts (UFFDIO_WRITEPROTECT: write
 * sampling, the protection before a page is sealed, the end of a
 * write-protect fault) and every zap (MADV_DONTNEED after eviction) ends in
 * a TLB flush.  The kernel flushes the local TLB itself, but any other CPU
 * that is running a thread of the same process must be interrupted (an
 * inter-processor interrupt, a "shootdown") and the caller waits until it
 * has flushed too.  The kernel's own reclaim batches that: it unmaps a batch
 * of pages and flushes once.  moat can batch its zaps (one process_madvise
 * for a reclaim batch, src/common/zap.c) but not its write-protections of
 * scattered pages: one ioctl, one flush, per run of pages.
 *
 * Measured, each as the median of --runs runs of --calls calls on random
 * resident pages of a 16 MiB area registered with userfaultfd:
 *
 *   wp            UFFDIO_WRITEPROTECT of one page
 *   unwp          lifting it again (as a write-protect fault ends)
 *   zap           MADV_DONTNEED of one resident page
 *   zap/32        process_madvise(MADV_DONTNEED) of 32 scattered resident
 *                 pages in one call, per page
 *
 * once with no other thread and once with a sibling thread spinning on
 * another CPU (pinned), and the sibling's own loss: its loop rate while this
 * thread protects and unprotects pages as fast as it can, against its rate
 * alone, as nanoseconds lost per shootdown it received.
 *
 * Usage: tlb_cost [--runs N] [--calls N].  Prints a table and one RESULT
 * line (scripts/bench.sh's summary).  Needs userfaultfd with write-protection
 * (Linux 5.7+) and two CPUs for the sibling columns.
 */
#include "bench.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <linux/userfaultfd.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>

#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC_NEW _IO(0xAA, 0x00)
#endif

#define AREA_PAGES 4096u
#define ZAP_VEC    32u
#define MAX_RUNS   101

static int uffd = -1;
static uint8_t *area;
static int pidfd = -1;

/* ------------------------------------------------------------------------
 * The sibling: a thread of this process spinning on another CPU
 * ---------------------------------------------------------------------- */

static _Atomic bool sibling_stop;
static _Atomic uint64_t sibling_rounds;
static pthread_t sibling;
static int sibling_cpu = -1;

static void pin_to(int cpu)
{
    cpu_set_t s;
    CPU_ZERO(&s);
    CPU_SET(cpu, &s);
    (void)sched_setaffinity(0, sizeof s, &s);
}

static void *sibling_main(void *arg)
{
    (void)arg;
    pin_to(sibling_cpu);
    /* 32 KiB: in the L1 cache, so the loop rate measures interruptions,
     * not memory */
    static volatile uint8_t buf[32768];
    while (!atomic_load_explicit(&sibling_stop, memory_order_relaxed)) {
        for (size_t i = 0; i < sizeof buf; i += 64)
            buf[i]++;
        atomic_fetch_add_explicit(&sibling_rounds, 1, memory_order_relaxed);
    }
    return NULL;
}

static void sibling_start(void)
{
    atomic_store(&sibling_stop, false);
    if (pthread_create(&sibling, NULL, sibling_main, NULL) != 0) {
        fprintf(stderr, "tlb_cost: pthread_create failed\n");
        exit(1);
    }
    usleep(20000); /* let it reach its CPU */
}

static void sibling_end(void)
{
    atomic_store(&sibling_stop, true);
    pthread_join(sibling, NULL);
}

/* ------------------------------------------------------------------------
 * The operations
 * ---------------------------------------------------------------------- */

static int open_uffd(void)
{
    int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
    if (fd < 0)
        fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
        if (dev >= 0) {
            fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
            close(dev);
        }
    }
    if (fd < 0)
        return -1;
    struct uffdio_api api = {.api = UFFD_API};
    if (ioctl(fd, UFFDIO_API, &api) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void wp_page(size_t i, bool on)
{
    struct uffdio_writeprotect wp = {
        .range = {.start = (uintptr_t)(area + i * BENCH_PAGE), .len = BENCH_PAGE},
        .mode = on ? UFFDIO_WRITEPROTECT_MODE_WP : 0};
    if (ioctl(uffd, UFFDIO_WRITEPROTECT, &wp) != 0) {
        fprintf(stderr, "tlb_cost: UFFDIO_WRITEPROTECT: %s\n", strerror(errno));
        exit(1);
    }
}

/* Every page resident and writable, none protected. */
static void populate(void)
{
    for (size_t i = 0; i < AREA_PAGES; i++)
        area[i * BENCH_PAGE] = (uint8_t)i;
}

enum op { OP_WP, OP_UNWP, OP_ZAP, OP_ZAPV, OP_COUNT };
static const char *const op_name[OP_COUNT] = {"wp", "unwp", "zap", "zap/32"};

/* ns per page of `calls` operations of kind op on random pages. */
static double run_op(enum op op, size_t calls, struct bench_rng *r)
{
    populate();
    uint64_t spent = 0;
    if (op == OP_WP || op == OP_UNWP) {
        for (size_t k = 0; k < calls; k++) {
            size_t i = (size_t)bench_rng_below(r, AREA_PAGES);
            uint64_t t0 = bench_now_ns();
            wp_page(i, true);
            uint64_t t1 = bench_now_ns();
            wp_page(i, false);
            uint64_t t2 = bench_now_ns();
            spent += op == OP_WP ? t1 - t0 : t2 - t1;
        }
        return (double)spent / (double)calls;
    }
    if (op == OP_ZAP) {
        for (size_t k = 0; k < calls; k++) {
            size_t i = (size_t)bench_rng_below(r, AREA_PAGES);
            area[i * BENCH_PAGE] = 1; /* resident again (not timed) */
            uint64_t t0 = bench_now_ns();
            madvise(area + i * BENCH_PAGE, BENCH_PAGE, MADV_DONTNEED);
            spent += bench_now_ns() - t0;
        }
        return (double)spent / (double)calls;
    }
    struct iovec iov[ZAP_VEC];
    size_t pages = 0;
    for (size_t k = 0; k < calls; k += ZAP_VEC) {
        for (size_t j = 0; j < ZAP_VEC; j++) {
            /* distinct, non-adjacent pages: one range each */
            size_t i = 2 * (j * (AREA_PAGES / 2 / ZAP_VEC) +
                            (size_t)bench_rng_below(r, AREA_PAGES / 2 / ZAP_VEC));
            area[i * BENCH_PAGE] = 1;
            iov[j] = (struct iovec){.iov_base = area + i * BENCH_PAGE, .iov_len = BENCH_PAGE};
        }
        uint64_t t0 = bench_now_ns();
        long n = syscall(SYS_process_madvise, pidfd, iov, (size_t)ZAP_VEC, MADV_DONTNEED, 0u);
        spent += bench_now_ns() - t0;
        if (n != (long)(ZAP_VEC * BENCH_PAGE))
            return -1.0;
        pages += ZAP_VEC;
    }
    return (double)spent / (double)pages;
}

/* The sibling's loss: ns of its time per shootdown it received, from its
 * loop rate during `ms` of protect/unprotect pairs against `ms` alone. */
static double sibling_loss(unsigned ms, struct bench_rng *r)
{
    populate();
    sibling_start();
    uint64_t r0 = atomic_load(&sibling_rounds), t0 = bench_now_ns();
    usleep(ms * 1000u);
    uint64_t r1 = atomic_load(&sibling_rounds), t1 = bench_now_ns();
    uint64_t flushes = 0;
    while (bench_now_ns() - t1 < (uint64_t)ms * 1000000u) {
        size_t i = (size_t)bench_rng_below(r, AREA_PAGES);
        wp_page(i, true);
        wp_page(i, false);
        flushes += 2;
    }
    uint64_t r2 = atomic_load(&sibling_rounds), t2 = bench_now_ns();
    sibling_end();
    double ns_per_round = (double)(t1 - t0) / (double)(r1 - r0 ? r1 - r0 : 1);
    double lost_ns = (double)(t2 - t1) - (double)(r2 - r1) * ns_per_round;
    return lost_ns > 0 ? lost_ns / (double)flushes : 0.0;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: tlb_cost [--runs N] [--calls N]\n"
               "  --runs N    runs of each measurement, median printed (default 5)\n"
               "  --calls N   operations per run (default 20000)\n");
}

int main(int argc, char **argv)
{
    unsigned runs = 5;
    size_t calls = 20000;
    static const struct option opts[] = {{"runs", required_argument, NULL, 'r'},
                                         {"calls", required_argument, NULL, 'c'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        char *end;
        unsigned long v;
        switch (c) {
        case 'r':
            v = strtoul(optarg, &end, 10);
            if (*end || v < 1 || v > MAX_RUNS) {
                fprintf(stderr, "tlb_cost: --runs: '%s' is not 1..%d\n", optarg, MAX_RUNS);
                return 2;
            }
            runs = (unsigned)v;
            break;
        case 'c':
            v = strtoul(optarg, &end, 10);
            if (*end || v < ZAP_VEC || v > 10000000) {
                fprintf(stderr, "tlb_cost: --calls: '%s' is not %u..10000000\n", optarg, ZAP_VEC);
                return 2;
            }
            calls = v;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return 2;
    }

    uffd = open_uffd();
    if (uffd < 0) {
        fprintf(stderr, "tlb_cost: no userfaultfd here (%s)\n", strerror(errno));
        return 1;
    }
    area = mmap(NULL, AREA_PAGES * BENCH_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                -1, 0);
    if (area == MAP_FAILED) {
        perror("tlb_cost: mmap");
        return 1;
    }
    madvise(area, AREA_PAGES * BENCH_PAGE, MADV_NOHUGEPAGE);
    populate();
    struct uffdio_register reg = {
        .range = {.start = (uintptr_t)area, .len = AREA_PAGES * BENCH_PAGE},
        .mode = UFFDIO_REGISTER_MODE_WP};
    if (ioctl(uffd, UFFDIO_REGISTER, &reg) != 0) {
        fprintf(stderr, "tlb_cost: registering for write-protection failed: %s\n", strerror(errno));
        return 1;
    }
    pidfd = (int)syscall(SYS_pidfd_open, getpid(), 0u);

    /* this thread on the first CPU it may use, the sibling on another */
    cpu_set_t allowed;
    int here = -1;
    if (sched_getaffinity(0, sizeof allowed, &allowed) == 0) {
        for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
            if (!CPU_ISSET(cpu, &allowed))
                continue;
            if (here < 0)
                here = cpu;
            else if (sibling_cpu < 0)
                sibling_cpu = cpu;
        }
    }
    if (here >= 0)
        pin_to(here);

    bench_print_machine(stdout);
    printf("# tlb_cost: ns per page, medians of %u runs of %zu calls; sibling: a thread of "
           "this process spinning on CPU %d\n",
           runs, calls, sibling_cpu);
    printf("| operation | alone | with a sibling running | ratio |\n|---|---:|---:|---:|\n");
    struct bench_rng r;
    bench_rng_seed(&r, 42);
    /* RESULT line for scripts/bench.sh: <op>_ns and <op>_sibling_ns */
    static const char *const key[OP_COUNT] = {"wp", "unwp", "zap", "zapv"};
    char result[512];
    size_t used = (size_t)snprintf(result, sizeof result, "RESULT");
    for (int op = 0; op < OP_COUNT; op++) {
        double v[2][MAX_RUNS];
        bool ok = true;
        for (int with = 0; with < 2 && ok; with++) {
            if (with && sibling_cpu < 0)
                break;
            if (with)
                sibling_start();
            for (unsigned k = 0; k < runs; k++) {
                v[with][k] = run_op((enum op)op, calls, &r);
                if (v[with][k] < 0)
                    ok = false;
            }
            if (with)
                sibling_end();
        }
        if (!ok) {
            printf("| %s | unsupported here (process_madvise MADV_DONTNEED needs Linux 6.13) "
                   "| | |\n",
                   op_name[op]);
            continue;
        }
        double alone = bench_median(v[0], runs);
        used +=
            (size_t)snprintf(result + used, sizeof result - used, " %s_ns=%.0f", key[op], alone);
        if (sibling_cpu < 0) {
            printf("| %s | %.0f | (one CPU) | |\n", op_name[op], alone);
            continue;
        }
        double with = bench_median(v[1], runs);
        used += (size_t)snprintf(result + used, sizeof result - used, " %s_sibling_ns=%.0f",
                                 key[op], with);
        printf("| %s | %.0f | %.0f | %.1f |\n", op_name[op], alone, with,
               alone > 0 ? with / alone : 0.0);
    }
    if (sibling_cpu >= 0) {
        double loss[MAX_RUNS];
        for (unsigned k = 0; k < runs; k++)
            loss[k] = sibling_loss(200, &r);
        double lost = bench_median(loss, runs);
        printf("\nsibling's loss per shootdown it received: %.0f ns\n", lost);
        used +=
            (size_t)snprintf(result + used, sizeof result - used, " sibling_loss_ns=%.0f", lost);
    }
    printf("%s\n", result);
    return 0;
}
