/*
 * prog_mmap.c - a program for tests/test_run_config.sh: how much private
 * anonymous memory may it map under `moat run --config`?
 *
 * usage: prog_mmap MIB
 *
 * Maps up to MIB mappings of 1 MiB each (read-write, private, anonymous:
 * what moat serves), writing to every page, and stops at the first mmap
 * that fails.  Prints one line:
 *
 *   mapped K of MIB MiB: <the error's name, or "ok">
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

int main(int argc, char **argv)
{
    long n = argc > 1 ? strtol(argv[1], NULL, 10) : 0;
    if (n < 1 || n > 1L << 20) {
        fprintf(stderr, "usage: prog_mmap MIB (1 to 1048576)\n");
        return 2;
    }
    long k = 0;
    int err = 0;
    for (; k < n; k++) {
        char *p = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) {
            err = errno;
            break;
        }
        for (size_t off = 0; off < 1 << 20; off += 4096)
            p[off] = (char)off;
    }
    printf("mapped %ld of %ld MiB: %s\n", k, n,
           err == 0        ? "ok"
           : err == ENOMEM ? "ENOMEM"
                           : strerror(err));
    return 0;
}
