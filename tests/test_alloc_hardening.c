/*
 * test_alloc_hardening.c - misuse the allocator must catch: double frees
 * (from the thread's cache, from the class, across threads, of large
 * objects), pointers moat did not allocate, pointers into the middle of a
 * block, a pointer of another heap, and a free list overwritten as a buffer
 * overflow would.  Each case runs in a forked child; the test checks that
 * the child died of SIGABRT and that its one line on stderr says what
 * happened and names the address.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <moat/alloc.h>

/* How the child ended and what it wrote to stderr. */
struct outcome {
    int status;
    char err[2048];
};

typedef void (*misuse_fn)(void);

static void run_child(misuse_fn fn, struct outcome *o)
{
    int errpipe[2];
    assert_int_equal(pipe(errpipe), 0);
    fflush(stdout);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        signal(SIGABRT, SIG_DFL);
        dup2(errpipe[1], STDERR_FILENO);
        close(errpipe[0]);
        fn();
        _exit(0); /* not reached if the misuse is caught */
    }
    close(errpipe[1]);
    memset(o, 0, sizeof *o);
    size_t n = 0;
    ssize_t r;
    while (n < sizeof o->err - 1 && (r = read(errpipe[0], o->err + n, sizeof o->err - 1 - n)) > 0)
        n += (size_t)r;
    close(errpipe[0]);
    assert_int_equal(waitpid(pid, &o->status, 0), pid);
}

/* The child writes the address it is about to misuse to stderr first; the
 * fatal line that follows must name the same address. */
static void note(const void *p)
{
    fprintf(stderr, "target %p\n", p);
    fflush(stderr);
}

static void expect_death(misuse_fn fn, const char *what)
{
    struct outcome o;
    run_child(fn, &o);
    printf("child said: %s", o.err);
    if (!WIFSIGNALED(o.status) || WTERMSIG(o.status) != SIGABRT)
        fail_msg("expected death by SIGABRT for \"%s\", status 0x%x", what, o.status);
    assert_non_null(strstr(o.err, "[FATAL]-[alloc]"));
    if (!strstr(o.err, what))
        fail_msg("the message does not say \"%s\": %s", what, o.err);
    /* the address the child noted appears in the fatal line */
    char *t = strstr(o.err, "target ");
    assert_non_null(t);
    char addr[32];
    assert_int_equal(sscanf(t, "target %31s", addr), 1);
    char *fatal = strstr(o.err, "[FATAL]");
    if (!strstr(fatal, addr))
        fail_msg("the fatal line does not name %s: %s", addr, fatal);
}

static void double_free_cached(void)
{
    void *p = moat_malloc(40);
    note(p);
    moat_free(p);
    moat_free(p);
}

static void double_free_central(void)
{
    void *keep = moat_malloc(40); /* keeps the slab alive */
    void *p = moat_malloc(40);
    note(p);
    moat_free(p);
    moat_alloc_thread_flush(); /* p goes back to its slab */
    moat_free(p);
    moat_free(keep);
}

static void *free_it(void *p)
{
    moat_free(p);
    return NULL;
}

static void double_free_cross_thread(void)
{
    void *p = moat_malloc(300);
    note(p);
    pthread_t t;
    pthread_create(&t, NULL, free_it, p);
    pthread_join(t, NULL);
    moat_free(p);
}

static void double_free_large(void)
{
    void *p = moat_malloc(100000);
    note(p);
    moat_free(p);
    moat_free(p);
}

static void foreign_stack(void)
{
    int x = 0;
    note(&x);
    moat_free(&x);
}

static void foreign_libc(void)
{
    char *p = malloc(64); /* glibc's, not moat's */
    if (!p)
        abort();
    memset(p, 0, 64); /* gcc 12: note() would read it uninitialised */
    note(p);
    moat_free(p);
}

static void interior(void)
{
    char *p = moat_malloc(100);
    note(p + 16);
    moat_free(p + 16);
}

static void interior_large(void)
{
    char *p = moat_malloc(200000);
    note(p + 8192);
    moat_free(p + 8192);
}

static void foreign_low(void)
{
    /* chunk 0 of the address space (where a non-PIE binary lives) */
    void *p = (void *)0x401000;
    note(p);
    moat_free(p);
}

static void foreign_kernel(void)
{
    void *p = (void *)0xffffffff81000000ULL;
    note(p);
    moat_free(p);
}

static void realloc_foreign(void)
{
    static char buf[64];
    note(buf);
    moat_realloc(buf, 100);
}

static void wrong_heap(void)
{
    moat_heap *h;
    struct moat_heap_config cfg = {.source = MOAT_HEAP_SOURCE_MMAP};
    moat_heap_new(&cfg, &h);
    void *p = moat_malloc(64); /* default heap */
    note(p);
    moat_heap_free(h, p);
}

static void overflow_into_free_block(void)
{
    void *x = moat_malloc(64), *y = moat_malloc(64);
    moat_free(y);
    moat_free(x); /* x heads the cache list; its first word links to y */
    note(x);
    /* a buffer overflow from the block before x lands here */
    memset(x, 0x41, 16);
    void *z = moat_malloc(64); /* pops x, decodes garbage */
    (void)z;
    moat_malloc(64);
}

static void test_double_free(void **state)
{
    (void)state;
    expect_death(double_free_cached, "double free");
    expect_death(double_free_central, "double free");
    expect_death(double_free_cross_thread, "double free");
    expect_death(double_free_large, "double free");
}

static void test_foreign_pointers(void **state)
{
    (void)state;
    expect_death(foreign_stack, "moat did not allocate it");
    expect_death(foreign_libc, "moat did not allocate it");
    expect_death(foreign_low, "moat did not allocate it");
    expect_death(foreign_kernel, "moat did not allocate it");
    expect_death(realloc_foreign, "realloc(): invalid pointer");
    expect_death(wrong_heap, "belongs to another heap");
}

static void test_interior_pointers(void **state)
{
    (void)state;
    expect_death(interior, "not the start of a block");
    expect_death(interior_large, "inside a large object");
}

static void test_free_list_overwritten(void **state)
{
    (void)state;
    expect_death(overflow_into_free_block, "heap corruption");
}

static void fine(void)
{
    note(NULL);
    void *p = moat_malloc(64);
    moat_free(p);
    moat_free(NULL);
    p = moat_malloc(64); /* the same block again: not a double free */
    moat_free(p);
}

static void test_no_false_alarm(void **state)
{
    (void)state;
    struct outcome o;
    run_child(fine, &o);
    assert_true(WIFEXITED(o.status) && WEXITSTATUS(o.status) == 0);
    assert_null(strstr(o.err, "FATAL"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_double_free),       cmocka_unit_test(test_foreign_pointers),
        cmocka_unit_test(test_interior_pointers), cmocka_unit_test(test_free_list_overwritten),
        cmocka_unit_test(test_no_false_alarm),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
