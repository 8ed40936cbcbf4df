/*
 * cli.h - the subcommands of the `moat` executable.  Each returns the
 * process exit code: 0 success, 2 usage error, 3 configuration error,
 * 4 runtime failure (or a program's own exit status, for `run`).
 */
#ifndef MOAT_TOOLS_CLI_H
#define MOAT_TOOLS_CLI_H

enum {
    MOAT_EXIT_OK = 0,
    MOAT_EXIT_FAIL = 1,
    MOAT_EXIT_USAGE = 2,
    MOAT_EXIT_CONFIG = 3,
    MOAT_EXIT_RUNTIME = 4,
};

int moat_cmd_config(int argc, char **argv); /* cmd_config.c */
int moat_cmd_demo(int argc, char **argv);   /* cmd_demo.c */
int moat_cmd_run(int argc, char **argv);    /* cmd_run.c */
int moat_cmd_stat(int argc, char **argv);   /* cmd_stat.c */
int moat_cmd_plot(int argc, char **argv);   /* cmd_plot.c */
int moat_cmd_store(int argc, char **argv);  /* cmd_store.c */

#endif
