/*
 * cmd_run.c - `moat run`: run a program with libmoat_preload.so preloaded,
 * under a resident budget, and report what its memory did.
 *
 * The settings travel to the program as MOAT_* environment variables (read
 * by moat_init in the preload's constructor).  Before exec the child creates
 * the statistics block /dev/shm/moat-<pid>.stats (stats_block.h) and marks
 * itself its owner (MOAT_STATS_OWNER), so the parent can map the block as
 * soon as exec succeeded and read the final numbers after the program has
 * exited; the parent removes the block after waitpid, also when the
 * program was killed.  A close-on-exec pipe tells the parent whether exec
 * worked.  The parent samples the block every --trace-interval into the
 * --trace CSV while it waits on a pidfd.
 *
 * --config Occlum.json rehearses an enclave: the layout the config layer
 * derives sets the program's limits (run_config.c), and the run's peaks
 * are reported against them at exit.
 */
#include "cli.h"
#include "run.h"
#include "run_config.h"

#include "common/size.h"
#include "store/store.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdbool.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static void run_usage(FILE *f)
{
    fprintf(f,
            "usage: moat run [OPTIONS] [--] PROGRAM [ARGS...]\n"
            "\n"
            "Run PROGRAM with moat preloaded: its private anonymous memory (mmap) is\n"
            "served from moat regions under a hard resident budget; pages above it are\n"
            "sealed (AES-256-GCM) and evicted to the store.  Programs it starts (fork +\n"
            "exec) run under moat too, each with a budget of its own of the same size.\n"
            "\n"
            "  --budget SIZE        resident budget (default $MOAT_BUDGET, else 64M); SIZE is\n"
            "                       bytes or a number with K, M, G, T (binary): 4096, 64M,\n"
            "                       64MiB, 1.5G\n"
            "  --low PCT            reclaim runs down to PCT%% of the budget (default: 2%%\n"
            "                       of the budget below --high, about 97)\n"
            "  --high PCT           reclaim starts above PCT%% of the budget (default: 1%%\n"
            "                       of the budget free, at least 32 pages; about 99)\n"
            "  --store URI          where evicted pages go: file:PATH, redis://HOST:PORT,\n"
            "                       redis+cluster://HOST:PORT[,HOST:PORT...]\n"
            "                       (default: an unlinked file in $TMPDIR)\n"
            "  --store-replicas N   a Redis Cluster store: every eviction is acknowledged by N\n"
            "                       replicas (WAIT) before the page is dropped\n"
            "  --stats-json FILE    write every statistic at exit as JSON\n"
            "  --trace FILE         sample the statistics into a CSV time series\n"
            "  --trace-interval MS  sampling interval, 10-60000 ms (default 100)\n"
            "  --quiet              no summary on stderr\n"
            "\n"
            "Rehearsing an enclave (docs/run.md):\n"
            "  --config FILE        apply the Occlum.json FILE (invalid: exit 3): the program's\n"
            "                       managed memory is capped at the user space Max\n"
            "                       (ENOMEM beyond), threads at the maximum (pthread_create\n"
            "                       fails with EAGAIN beyond); at exit the peaks are reported\n"
            "                       against Init and Max, with suggested values\n"
            "  --edmm, --no-edmm    the platform to derive for (default: feature.enable_edmm)\n"
            "  --sgx-mode MODE      HW (default) or SIM, as SGX_MODE\n"
            "  --compat MODE        guide (default) or occlum-tool, as in moat config\n"
            "  --epc SIZE           the EPC size: the resident budget (instead of --budget);\n"
            "                       SIZE as for --budget, or as Occlum writes it (128MB)\n"
            "\n"
            "Exit status: the program's own, 128+N if it was killed by signal N, 2 for a\n"
            "usage error, 3 for a configuration error, 4 if moat or the program could\n"
            "not be started.  `moat stat PID` shows a running program's numbers.\n");
}

/* --budget and --epc: moat's sizes (64M, 1.5G) or Occlum's (64MB). */
static int run_size(const char *name, const char *s, size_t *out)
{
    uint64_t v = 0;
    int bad = m_size_parse(s, out);
    if (bad && m_config_size_parse(s, strlen(s), M_CONFIG_COMPAT_GUIDE, &v) == M_CONFIG_SIZE_OK &&
        v <= SIZE_MAX) {
        *out = (size_t)v;
        bad = 0;
    }
    /* 16 pages: the engine's minimum (moat_init refuses less). */
    if (bad || *out < 16 * MOAT_PAGE_SIZE) {
        fprintf(stderr, "moat run: %s '%s' is not a size of at least 64K (e.g. 64M)\n", name, s);
        return MOAT_EXIT_USAGE;
    }
    return 0;
}

static int run_pct(const char *name, const char *s, unsigned *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || end == s || *end || v < 1 || v > 100) {
        fprintf(stderr, "moat run: %s '%s' must be a whole percentage from 1 to 100\n", name, s);
        return MOAT_EXIT_USAGE;
    }
    *out = (unsigned)v;
    return 0;
}

/* The preload library: $MOAT_PRELOAD, else next to this executable. */
static int run_find_preload(char *buf, size_t buflen)
{
    const char *env = getenv("MOAT_PRELOAD");
    if (env && *env) {
        snprintf(buf, buflen, "%s", env);
    } else {
        char exe[PATH_MAX - 32];
        ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
        if (n <= 0)
            return errno ? errno : ENOENT;
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash)
            *slash = '\0';
        int n2 = snprintf(buf, buflen, "%s/libmoat_preload.so", exe);
        if (n2 < 0 || (size_t)n2 >= buflen)
            return ENAMETOOLONG;
    }
    return access(buf, R_OK) == 0 ? 0 : errno;
}

static int run_setenv_num(const char *name, unsigned long long v)
{
    char b[32];
    snprintf(b, sizeof b, "%llu", v);
    return setenv(name, b, 1);
}

static volatile sig_atomic_t run_child_pid;

/* SIGTERM/SIGHUP to `moat run` go to the program, which decides. */
static void run_forward(int sig)
{
    if (run_child_pid > 0)
        kill((pid_t)run_child_pid, sig);
}

static void run_write_trace_row(FILE *f, const struct m_stats_block *b)
{
    m_run_trace_row(f, b);
}

int moat_cmd_run(int argc, char **argv)
{
    size_t budget = 64u << 20;
    unsigned low = 0, high = 0;
    unsigned long interval_ms = 100;
    const char *store = NULL, *json_path = NULL, *trace_path = NULL;
    bool quiet = false, budget_given = false, epc_given = false, platform_given = false;
    bool edmm_given = false;
    int replicas = -1;
    struct m_run_config rcfg = {
        .opts = {M_CONFIG_COMPAT_GUIDE, M_CONFIG_EDMM_FROM_FILE, M_CONFIG_SGX_HW}};
    const char *envb = getenv("MOAT_BUDGET");
    if (envb && *envb && m_size_parse(envb, &budget) != 0) {
        fprintf(stderr, "moat run: MOAT_BUDGET '%s' is not a size (e.g. 64M)\n", envb);
        return MOAT_EXIT_CONFIG;
    }
    static const struct option longopts[] = {{"budget", required_argument, NULL, 'b'},
                                             {"low", required_argument, NULL, 'l'},
                                             {"high", required_argument, NULL, 'H'},
                                             {"store", required_argument, NULL, 's'},
                                             {"store-replicas", required_argument, NULL, 'R'},
                                             {"stats-json", required_argument, NULL, 'j'},
                                             {"trace", required_argument, NULL, 't'},
                                             {"trace-interval", required_argument, NULL, 'i'},
                                             {"quiet", no_argument, NULL, 'q'},
                                             {"config", required_argument, NULL, 'C'},
                                             {"edmm", no_argument, NULL, 'E'},
                                             {"no-edmm", no_argument, NULL, 'N'},
                                             {"sgx-mode", required_argument, NULL, 'M'},
                                             {"compat", required_argument, NULL, 'P'},
                                             {"epc", required_argument, NULL, 'e'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    int c, rc;
    optind = 1;
    /* "+": options end at PROGRAM, whose own options are left alone. */
    while ((c = getopt_long(argc, argv, "+b:s:qh", longopts, NULL)) != -1) {
        char *end;
        switch (c) {
        case 'b':
        case 'e':
            if (c == 'b' ? epc_given : budget_given) {
                fprintf(stderr, "moat run: --budget and --epc both set the budget; give one\n");
                return MOAT_EXIT_USAGE;
            }
            *(c == 'b' ? &budget_given : &epc_given) = true;
            if ((rc = run_size(c == 'b' ? "--budget" : "--epc", optarg, &budget)))
                return rc;
            break;
        case 'C':
            rcfg.path = optarg;
            break;
        case 'E':
        case 'N': {
            enum m_config_edmm e = c == 'E' ? M_CONFIG_EDMM_ON : M_CONFIG_EDMM_OFF;
            if (edmm_given && e != rcfg.opts.edmm) {
                fprintf(stderr, "moat run: --edmm and --no-edmm contradict each other\n");
                return MOAT_EXIT_USAGE;
            }
            rcfg.opts.edmm = e;
            edmm_given = platform_given = true;
            break;
        }
        case 'M':
            if (strcmp(optarg, "HW") && strcmp(optarg, "SIM")) {
                fprintf(stderr, "moat run: --sgx-mode must be HW or SIM, not '%s'\n", optarg);
                return MOAT_EXIT_USAGE;
            }
            rcfg.opts.sgx_mode = optarg[0] == 'S' ? M_CONFIG_SGX_SIM : M_CONFIG_SGX_HW;
            platform_given = true;
            break;
        case 'P':
            if (strcmp(optarg, "guide") && strcmp(optarg, "occlum-tool")) {
                fprintf(stderr, "moat run: --compat must be guide or occlum-tool, not '%s'\n",
                        optarg);
                return MOAT_EXIT_USAGE;
            }
            rcfg.opts.compat =
                optarg[0] == 'g' ? M_CONFIG_COMPAT_GUIDE : M_CONFIG_COMPAT_OCCLUM_TOOL;
            platform_given = true;
            break;
        case 'l':
            if ((rc = run_pct("--low", optarg, &low)))
                return rc;
            break;
        case 'H':
            if ((rc = run_pct("--high", optarg, &high)))
                return rc;
            break;
        case 's':
            store = optarg;
            break;
        case 'R': {
            errno = 0;
            unsigned long v = strtoul(optarg, &end, 10);
            if (errno || end == optarg || *end || v > 16) {
                fprintf(stderr,
                        "moat run: --store-replicas '%s' must be a whole number from 0 to 16\n",
                        optarg);
                return MOAT_EXIT_USAGE;
            }
            replicas = (int)v;
            break;
        }
        case 'j':
            json_path = optarg;
            break;
        case 't':
            trace_path = optarg;
            break;
        case 'i':
            errno = 0;
            interval_ms = strtoul(optarg, &end, 10);
            if (errno || end == optarg || *end || interval_ms < 10 || interval_ms > 60000) {
                fprintf(stderr, "moat run: --trace-interval '%s' must be 10 to 60000 ms\n", optarg);
                return MOAT_EXIT_USAGE;
            }
            break;
        case 'q':
            quiet = true;
            break;
        case 'h':
            run_usage(stdout);
            return MOAT_EXIT_OK;
        default:
            run_usage(stderr);
            return MOAT_EXIT_USAGE;
        }
    }
    if (optind >= argc) {
        fprintf(stderr, "moat run: no PROGRAM given (moat run [OPTIONS] -- PROGRAM [ARGS...])\n");
        return MOAT_EXIT_USAGE;
    }
    if (low && high && low >= high) {
        fprintf(stderr, "moat run: --low %u must be below --high %u\n", low, high);
        return MOAT_EXIT_USAGE;
    }
    if (platform_given && !rcfg.path) {
        fprintf(stderr, "moat run: --edmm, --no-edmm, --sgx-mode and --compat need --config\n");
        return MOAT_EXIT_USAGE;
    }
    if (rcfg.path && (rc = m_run_config_load(&rcfg, stderr, quiet)) >= 0) {
        m_run_config_free(&rcfg);
        return rc;
    }
    char preload[PATH_MAX];
    int err = run_find_preload(preload, sizeof preload);
    if (err) {
        fprintf(stderr, "moat run: cannot find the preload library %s: %s (set MOAT_PRELOAD)\n",
                preload, strerror(err));
        m_run_config_free(&rcfg);
        return MOAT_EXIT_CONFIG;
    }
    FILE *trace = NULL;
    if (trace_path) {
        trace = m_run_trace_open(trace_path);
        if (!trace) {
            fprintf(stderr, "moat run: --trace '%s': %s\n", trace_path, strerror(errno));
            m_run_config_free(&rcfg);
            return MOAT_EXIT_CONFIG;
        }
    }

    /* The environment the program starts with. */
    const char *old = getenv("LD_PRELOAD");
    char *ld = NULL;
    if (asprintf(&ld, "%s%s%s", preload, old && *old ? ":" : "", old && *old ? old : "") < 0)
        return MOAT_EXIT_RUNTIME;
    setenv("LD_PRELOAD", ld, 1);
    free(ld);
    run_setenv_num("MOAT_BUDGET", budget);
    if (low)
        run_setenv_num("MOAT_LOW", low);
    if (high)
        run_setenv_num("MOAT_HIGH", high);
    if (store)
        setenv("MOAT_STORE", store, 1);
    if (replicas >= 0)
        run_setenv_num("MOAT_STORE_REPLICAS", (unsigned long long)replicas);
    run_setenv_num("MOAT_STATS_INTERVAL", interval_ms);
    run_setenv_num("MOAT_RUN_PID", (unsigned long long)getpid());
    if (rcfg.path && (err = m_run_config_env(&rcfg)) != 0) {
        fprintf(stderr, "moat run: setenv: %s\n", strerror(err));
        return MOAT_EXIT_RUNTIME;
    }

    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) != 0) {
        fprintf(stderr, "moat run: pipe: %s\n", strerror(errno));
        return MOAT_EXIT_RUNTIME;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "moat run: fork: %s\n", strerror(errno));
        return MOAT_EXIT_RUNTIME;
    }
    if (pid == 0) {
        close(pfd[0]);
        int e = m_run_block_create(getpid());
        if (!e) {
            run_setenv_num("MOAT_STATS_OWNER", (unsigned long long)getpid());
            execvp(argv[optind], argv + optind);
            e = errno;
        }
        ssize_t w = write(pfd[1], &e, sizeof e);
        (void)w;
        _exit(127);
    }
    run_child_pid = pid;
    close(pfd[1]);
    struct sigaction sa = {.sa_handler = SIG_IGN};
    sigemptyset(&sa.sa_mask);
    /* Like system(): the terminal's ^C and ^\ are for the program. */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGQUIT, &sa, NULL);
    sa.sa_handler = run_forward;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);

    int child_err = 0;
    ssize_t n;
    while ((n = read(pfd[0], &child_err, sizeof child_err)) < 0 && errno == EINTR)
        ;
    close(pfd[0]);
    struct m_stats_block *blk = NULL;
    if (n > 0) {
        int st;
        waitpid(pid, &st, 0);
        m_run_block_unlink(pid);
        fprintf(stderr, "moat run: cannot run '%s': %s\n", argv[optind], strerror(child_err));
        if (trace)
            m_run_trace_close(trace);
        return MOAT_EXIT_RUNTIME;
    }
    blk = m_run_block_map(pid, NULL);

    /* Wait, sampling the block. */
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    uint64_t last_seq = 0;
    int status = 0;
    struct m_stats_block snap;
    struct m_run_thrash thrash;
    m_run_thrash_init(&thrash);
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            break;
        if (r < 0 && errno != EINTR) {
            fprintf(stderr, "moat run: waitpid: %s\n", strerror(errno));
            break;
        }
        if (pidfd >= 0) {
            struct pollfd p = {.fd = pidfd, .events = POLLIN};
            poll(&p, 1, (int)interval_ms);
        } else {
            usleep((useconds_t)interval_ms * 1000);
        }
        if (blk && m_run_block_read(blk, &snap) == 0 && snap.seq != last_seq &&
            snap.state != M_STATS_CREATED) {
            last_seq = snap.seq;
            if (trace)
                run_write_trace_row(trace, &snap);
            m_run_thrash_check(&thrash, &snap, stderr, argv[optind]);
        }
    }
    if (pidfd >= 0)
        close(pidfd);
    run_child_pid = 0;

    int have = blk && m_run_block_read(blk, &snap) == 0 && snap.state != M_STATS_CREATED;
    if (trace) {
        if (have && snap.seq != last_seq)
            run_write_trace_row(trace, &snap);
        m_run_trace_close(trace);
    }
    if (blk)
        munmap(blk, sizeof *blk);
    m_run_block_unlink(pid);
    m_run_block_sweep(getpid());
    /* A program under moat never closes a redis store (its keys must outlive
     * its exit handlers), and exec skips close too: what ended is removed
     * now. */
    m_store_sweep_exited(getenv("MOAT_STORE"));

    int code = WIFEXITED(status)     ? WEXITSTATUS(status)
               : WIFSIGNALED(status) ? 128 + WTERMSIG(status)
                                     : MOAT_EXIT_RUNTIME;
    if (have && snap.state == M_STATS_FAILED) {
        fprintf(stderr, "moat run: moat could not start in '%s' (the lines above say why)\n",
                argv[optind]);
        return MOAT_EXIT_RUNTIME;
    }
    if (!have) {
        if (!quiet)
            fprintf(stderr,
                    "moat run: no statistics: '%s' did not start moat (a static or "
                    "set-uid program ignores LD_PRELOAD)\n",
                    argv[optind]);
    } else {
        if (!quiet)
            m_run_summary(stderr, &snap, WIFSIGNALED(status) ? WTERMSIG(status) : 0);
        if (!quiet && rcfg.path)
            m_run_config_report(stderr, &rcfg, &snap);
        if (json_path &&
            (err = m_run_config_write_json(json_path, rcfg.path ? &rcfg : NULL, &snap, status)))
            fprintf(stderr, "moat run: --stats-json '%s': %s\n", json_path, strerror(err));
    }
    m_run_config_free(&rcfg);
    return code;
}
