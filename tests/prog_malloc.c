/*
 * prog_malloc.c - a program for tests/test_run_config.sh: heap memory the
 * program uses, to see where an enclave's initial user space goes.
 *
 * usage: prog_malloc KIB [KIB2]
 *
 * mallocs KIB KiB in blocks of 1 KiB and writes every block, reads them all
 * back and frees them, then mallocs, writes and reads KIB2 KiB (default 0)
 * the same way.  Prints one line:
 *
 *   malloc K KiB: ok          (or "corrupt", or the error's name)
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BLOCK 1024

#define CORRUPT (-1)

/* Fresh memory must read as zeros (calloc) and keep what was written, also
 * after its pages were evicted and read back. */
static int fill(char **v, long n)
{
    for (long i = 0; i < n; i++) {
        v[i] = calloc(1, BLOCK);
        if (!v[i])
            return errno ? errno : ENOMEM;
        for (size_t k = 0; k < BLOCK; k++)
            if (v[i][k])
                return CORRUPT;
        memset(v[i], (int)(i & 0x7f) + 1, BLOCK);
    }
    for (long i = 0; i < n; i++)
        for (size_t k = 0; k < BLOCK; k++)
            if (v[i][k] != (char)((i & 0x7f) + 1))
                return CORRUPT;
    return 0;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? strtol(argv[1], NULL, 10) : 0;
    long n2 = argc > 2 ? strtol(argv[2], NULL, 10) : 0;
    if (n < 1 || n > 1L << 22 || n2 < 0 || n2 > 1L << 22) {
        fprintf(stderr, "usage: prog_malloc KIB [KIB2] (1 to 4194304)\n");
        return 2;
    }
    long most = n > n2 ? n : n2;
    char **v = calloc((size_t)most, sizeof *v);
    if (!v) {
        printf("malloc 0 KiB: ENOMEM\n");
        return 0;
    }
    int err = fill(v, n);
    for (long i = 0; i < n && v[i]; i++)
        free(v[i]);
    if (!err && n2) {
        memset(v, 0, (size_t)most * sizeof *v);
        err = fill(v, n2);
        for (long i = 0; i < n2 && v[i]; i++)
            free(v[i]);
    }
    free(v);
    printf("malloc %ld KiB: %s\n", n + n2,
           err == 0        ? "ok"
           : err == ENOMEM ? "ENOMEM"
                           : strerror(err));
    return 0;
}
