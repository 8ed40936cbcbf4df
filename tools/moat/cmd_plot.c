/*
 * cmd_plot.c - `moat plot TRACE.csv -o OUT.svg|OUT.png`: draw a `moat run
 * --trace` time series with gnuplot: resident, committed and evicted memory
 * over time, with the budget as a line.  The CSV's header is checked first,
 * so a wrong file gets a clear message rather than an empty plot.  When the
 * trace has a store nodes' file beside it (TRACE.csv.nodes.csv, written for
 * a redis store), a second panel below shows the pages each node holds.
 */
#include "cli.h"
#include "run.h"

#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void plot_usage(FILE *f)
{
    fprintf(f, "usage: moat plot TRACE.csv -o OUT.svg|OUT.png [--title TEXT]\n"
               "\n"
               "Draw resident, committed and evicted memory over time, and the budget,\n"
               "from a trace written by `moat run --trace TRACE.csv`; with a redis store,\n"
               "also the pages each store node holds (TRACE.csv.nodes.csv).  Needs gnuplot\n"
               "(Debian: gnuplot-nox).\n");
}

/* gnuplot reads its script from a pipe; the file names go in as strings, so
 * quotes in them are refused rather than escaped. */
static bool plot_quotable(const char *s)
{
    return !strpbrk(s, "\"'\\\n");
}

/* The store nodes' file beside the trace: its path in path, the number of
 * nodes (highest index + 1, at most M_STATS_BLOCK_NODES) as the result, and
 * their addresses, space-separated, in titles (a gnuplot word list).  0 when
 * there is no such file, or it is not one. */
static unsigned plot_nodes(const char *in, char *path, size_t plen, char *titles, size_t tlen)
{
    snprintf(path, plen, "%s%s", in, M_RUN_TRACE_NODES_SUFFIX);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    char line[1024];
    char addr[M_STATS_BLOCK_NODES][64] = {{0}};
    unsigned n = 0;
    bool ok = fgets(line, sizeof line, f) &&
              !strncmp(line, M_RUN_TRACE_NODES_HEADER, strlen(M_RUN_TRACE_NODES_HEADER));
    while (ok && fgets(line, sizeof line, f)) {
        double t;
        unsigned i;
        char a[64];
        if (sscanf(line, "%lf,%u,%63[^,],", &t, &i, a) != 3 || i >= M_STATS_BLOCK_NODES)
            continue;
        snprintf(addr[i], sizeof addr[i], "%s", a);
        if (i + 1 > n)
            n = i + 1;
    }
    fclose(f);
    size_t off = 0;
    titles[0] = '\0';
    for (unsigned i = 0; i < n && off < tlen; i++)
        off += (size_t)snprintf(titles + off, tlen - off, "%s%s", i ? " " : "",
                                addr[i][0] && plot_quotable(addr[i]) ? addr[i] : "?");
    return ok ? n : 0;
}

int moat_cmd_plot(int argc, char **argv)
{
    const char *out = NULL, *title = NULL;
    static const struct option longopts[] = {{"output", required_argument, NULL, 'o'},
                                             {"title", required_argument, NULL, 't'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "o:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'o':
            out = optarg;
            break;
        case 't':
            title = optarg;
            break;
        case 'h':
            plot_usage(stdout);
            return MOAT_EXIT_OK;
        default:
            plot_usage(stderr);
            return MOAT_EXIT_USAGE;
        }
    }
    if (optind != argc - 1 || !out) {
        fprintf(stderr, "moat plot: expected one TRACE.csv and -o OUT.svg|OUT.png\n");
        plot_usage(stderr);
        return MOAT_EXIT_USAGE;
    }
    const char *in = argv[optind];
    const char *dot = strrchr(out, '.');
    const char *term = NULL;
    char npath[4200], ntitles[M_STATS_BLOCK_NODES * 64];
    unsigned nnodes = plot_nodes(in, npath, sizeof npath, ntitles, sizeof ntitles);
    if (nnodes && !plot_quotable(npath))
        nnodes = 0;
    /* Taller with the nodes' panel below. */
    if (dot && !strcasecmp(dot, ".svg"))
        term = nnodes ? "svg size 1000,960 dynamic background rgb 'white'"
                      : "svg size 1000,560 dynamic background rgb 'white'";
    else if (dot && !strcasecmp(dot, ".png"))
        term = nnodes ? "pngcairo size 1000,960" : "pngcairo size 1000,560";
    if (!term) {
        fprintf(stderr, "moat plot: -o '%s' must end in .svg or .png\n", out);
        return MOAT_EXIT_USAGE;
    }
    if (!plot_quotable(in) || !plot_quotable(out) || (title && !plot_quotable(title))) {
        fprintf(stderr, "moat plot: file names and titles must not contain quotes, "
                        "backslashes or newlines\n");
        return MOAT_EXIT_USAGE;
    }
    FILE *f = fopen(in, "r");
    if (!f) {
        fprintf(stderr, "moat plot: TRACE.csv '%s': %s\n", in, strerror(errno));
        return MOAT_EXIT_CONFIG;
    }
    char line[1024];
    bool ok = fgets(line, sizeof line, f) != NULL;
    line[strcspn(line, "\r\n")] = '\0';
    /* traces written before the allocator's columns existed end at fault_ns */
    bool alloc_cols = ok && !strcmp(line, M_RUN_TRACE_HEADER);
    size_t v1 = strlen(M_RUN_TRACE_HEADER) - strlen(",alloc_requested_bytes,alloc_reserved_bytes");
    ok = ok && (alloc_cols || (strlen(line) == v1 && !strncmp(line, M_RUN_TRACE_HEADER, v1)));
    bool rows = ok && fgets(line, sizeof line, f) != NULL;
    fclose(f);
    if (!ok) {
        fprintf(stderr,
                "moat plot: '%s' is not a moat run --trace file (its first line is not "
                "the trace header)\n",
                in);
        return MOAT_EXIT_CONFIG;
    }
    if (!rows) {
        fprintf(stderr, "moat plot: '%s' has no samples\n", in);
        return MOAT_EXIT_CONFIG;
    }
    FILE *gp = popen("gnuplot", "w");
    if (!gp) {
        fprintf(stderr,
                "moat plot: cannot start gnuplot: %s (Debian: apt-get install "
                "gnuplot-nox)\n",
                strerror(errno));
        return MOAT_EXIT_RUNTIME;
    }
    /* Columns: see M_RUN_TRACE_HEADER (1 time_s, 2 budget, 3 resident,
     * 4 committed, 5 evicted, all pages of 4 KiB). */
    fprintf(
        gp,
        "set terminal %s\n"
        "set output '%s'\n"
        "%s"
        "set datafile separator ','\n"
        "set key autotitle columnhead top left\n"
        "set title '%s'\n"
        "set xlabel 'time (s)'\n"
        "set ylabel 'MiB'\n"
        "set grid\n"
        "mib(p) = p * 4096.0 / 1048576.0\n"
        "plot '%s' using 1:(mib($2)) with lines lw 2 dt 2 lc rgb '#d62728' title 'budget', "
        "'' using 1:(mib($3)) with lines lw 2 lc rgb '#1f77b4' title 'resident', "
        "'' using 1:(mib($4)) with lines lw 2 lc rgb '#2ca02c' title 'committed', "
        "'' using 1:(mib($5)) with lines lw 2 lc rgb '#ff7f0e' title 'evicted (in the store)'%s\n",
        term, out, nnodes ? "set multiplot layout 2,1\n" : "",
        title ? title : "moat run: memory over time", in,
        alloc_cols ? ", '' using 1:($15 / 1048576.0) with lines lw 1.5 lc rgb '#9467bd' title "
                     "'malloc requested', '' using 1:($16 / 1048576.0) with lines lw 1.5 dt 3 "
                     "lc rgb '#8c564b' title 'malloc reserved'"
                   : "");
    /* Columns of the nodes' file: see M_RUN_TRACE_NODES_HEADER (1 time_s,
     * 2 node, 6 bytes held now). */
    if (nnodes)
        fprintf(gp,
                "set title 'redis store: sealed pages each node holds (MiB)'\n"
                "set key autotitle columnhead top left\n"
                "nodes = '%s'\n"
                "plot for [i=0:%u] '%s' using 1:(column(2) == i ? column(6) / 1048576.0 : 1/0) "
                "with lines lw 2 title word(nodes, i + 1)\n"
                "unset multiplot\n",
                ntitles, nnodes - 1, npath);
    int st = pclose(gp);
    if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "moat plot: gnuplot failed (status %d)%s\n",
                WIFEXITED(st) ? WEXITSTATUS(st) : -1,
                WIFEXITED(st) && WEXITSTATUS(st) == 127 ? ": is gnuplot installed?" : "");
        return MOAT_EXIT_RUNTIME;
    }
    return MOAT_EXIT_OK;
}
