/*
 * main.c - the `moat` command line: dispatch to a subcommand.
 */
#include "cli.h"

#include <stdio.h>
#include <string.h>

struct moat_cmd {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *summary;
};

static const struct moat_cmd moat_cmds[] = {
    {"demo", moat_cmd_demo, "drive the library through a working set larger than its budget"},
    {"config", moat_cmd_config, "check, explain and derive Occlum.json enclave configurations"},
    {"run", moat_cmd_run, "run a program under a resident budget with sealed paging"},
    {"stat", moat_cmd_stat, "show the live statistics of a program under moat run"},
    {"plot", moat_cmd_plot, "draw a moat run --trace CSV with gnuplot"},
    {"store", moat_cmd_store, "maintain stores: gc removes dead instances' keys from Redis"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: moat COMMAND [ARGS...]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof moat_cmds / sizeof moat_cmds[0]; i++)
        fprintf(f, "  %-8s %s\n", moat_cmds[i].name, moat_cmds[i].summary);
    fprintf(f, "\n'moat COMMAND --help' describes each command.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return MOAT_EXIT_USAGE;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return MOAT_EXIT_OK;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("moat 0.1.0\n");
        return MOAT_EXIT_OK;
    }
    for (size_t i = 0; i < sizeof moat_cmds / sizeof moat_cmds[0]; i++)
        if (!strcmp(argv[1], moat_cmds[i].name))
            return moat_cmds[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "moat: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return MOAT_EXIT_USAGE;
}
