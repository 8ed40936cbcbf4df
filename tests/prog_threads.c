/*
 * prog_threads.c - a program for tests/test_run_config.sh: how many threads
 * may it have at once under `moat run --config`?
 *
 * usage: prog_threads N
 *
 * Round 1 starts up to N threads that wait on a pipe, stopping at the first
 * pthread_create that fails; then it lets them end (half return, half call
 * pthread_exit) and joins them.  Round 2 does the same again: the slots of
 * ended threads must be free.  Each round prints one line:
 *
 *   round R: started K of N: <the first error's name, or "ok">
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int gate[2];

static void *waiter(void *arg)
{
    char c;
    while (read(gate[0], &c, 1) < 0 && errno == EINTR)
        ;
    if ((uintptr_t)arg & 1)
        pthread_exit(NULL);
    return NULL;
}

static const char *err_name(int e)
{
    switch (e) {
    case 0:
        return "ok";
    case EAGAIN:
        return "EAGAIN";
    case ENOMEM:
        return "ENOMEM";
    case EPERM:
        return "EPERM";
    case EINVAL:
        return "EINVAL";
    default:
        return strerror(e);
    }
}

static int round_trip(int r, long n, pthread_t *t)
{
    if (pipe(gate) != 0) {
        perror("pipe");
        return 1;
    }
    long k = 0;
    int err = 0;
    for (; k < n; k++) {
        err = pthread_create(&t[k], NULL, waiter, (void *)(uintptr_t)k);
        if (err)
            break;
    }
    printf("round %d: started %ld of %ld: %s\n", r, k, n, err_name(err));
    fflush(stdout);
    close(gate[1]); /* every waiter's read returns 0 */
    for (long i = 0; i < k; i++)
        pthread_join(t[i], NULL);
    close(gate[0]);
    return 0;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? strtol(argv[1], NULL, 10) : 0;
    if (n < 1 || n > 100000) {
        fprintf(stderr, "usage: prog_threads N (1 to 100000)\n");
        return 2;
    }
    pthread_t *t = calloc((size_t)n, sizeof *t);
    if (!t)
        return 1;
    int rc = round_trip(1, n, t) || round_trip(2, n, t);
    free(t);
    return rc;
}
