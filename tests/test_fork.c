/*
 * test_fork.c - fork() of a process whose pages are partly sealed in the
 * store (docs/design.md, "fork").
 *
 * What must hold: a child made by fork() sees exactly its parent's memory,
 * evicted pages included (the parent reads them back first, up to
 * MOAT_FORK_LOAD), or it is stopped with a clear message when it touches a
 * page that stayed in the store; never zeros or stale data.  The parent's
 * memory and budget are unchanged by the fork.  fork followed by exec works.
 *
 * These run inside libmoat, so the fork path is exercised under ASan, UBSan
 * and TSan too (the shell tests that fork under `moat run` skip there: a
 * sanitized preload cannot be loaded into uninstrumented programs).
 */
#include "moat_test.h"

#define PG     4096u
#define NPAGES 2048u /* 8 MiB, four times the budget */
#define BUDGET (2u << 20)

static char log_path[256];

/* the byte at offset o of page i: depends on both, so a page read back at
 * the wrong place or a zero page is caught */
static uint8_t pattern(size_t i, size_t o)
{
    return (uint8_t)(i * 131 + o * 7 + 1);
}

static uint8_t *start_filled(const char *fork_load)
{
    setenv("MOAT_FORK_LOAD", fork_load, 1);
    mt_path(log_path, sizeof log_path, "fork.log");
    unlink(log_path);
    assert_int_equal(mt_start_opts(BUDGET, NULL, log_path), 0);
    unsetenv("MOAT_FORK_LOAD");
    uint8_t *p;
    assert_int_equal(moat_alloc(NULL, NPAGES * PG, MOAT_COMMIT_ON_DEMAND, NULL, NULL, (void **)&p),
                     0);
    for (size_t i = 0; i < NPAGES; i++)
        for (size_t o = 0; o < PG; o += 64)
            p[i * PG + o] = pattern(i, o);
    assert_true(MT_STAT(evictions_written) > 0);
    return p;
}

/* check_pages - 0 if every page holds its pattern, else 1 + the first bad
 * page (capped) */
static int check_pages(const uint8_t *p)
{
    for (size_t i = 0; i < NPAGES; i++)
        for (size_t o = 0; o < PG; o += 64)
            if (p[i * PG + o] != pattern(i, o))
                return 1 + (int)(i < 100 ? i : 100);
    return 0;
}

static void child_check(void *arg)
{
    _exit(check_pages(arg));
}

/* fork_run - fn in a child made by fork(); its wait status.  Unlike
 * mt_child, the child keeps moat's SIGSEGV handler: it is what stops a
 * child that touches a page left in the store. */
static int fork_run(void (*fn)(void *), void *arg)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        fn(arg);
        _exit(0);
    }
    assert_true(pid > 0);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return status;
}

static void wait_within_budget(void)
{
    for (int i = 0; i < 1000 && MT_STAT(resident_pages) > BUDGET / PG; i++)
        usleep(10000);
    assert_true(MT_STAT(resident_pages) <= BUDGET / PG);
}

static void test_child_sees_evicted_pages(void **state)
{
    (void)state;
    uint8_t *p = start_filled("64M");
    uint64_t evicted_before = MT_STAT(evicted_pages);
    assert_true(evicted_before > NPAGES / 2);
    int st = fork_run(child_check, p);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    /* every evicted page was read back for the fork */
    assert_true(MT_STAT(fork_loaded_pages) >= evicted_before);
    /* the extension of the budget ends with the fork */
    wait_within_budget();
    assert_int_equal(check_pages(p), 0);
    /* and a second fork, after reclaim evicted them again, works too */
    st = fork_run(child_check, p);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    assert_int_equal(check_pages(p), 0);
    wait_within_budget();
    assert_int_equal(moat_dealloc(p, NPAGES * PG), 0);
}

static void test_child_stopped_on_lost_page(void **state)
{
    (void)state;
    /* nothing may be read back: the child has evicted pages it cannot see */
    uint8_t *p = start_filled("0");
    assert_true(MT_STAT(evicted_pages) > 0);
    int st = fork_run(child_check, p);
    /* stopped by a signal before it could see a wrong byte */
    assert_true(WIFSIGNALED(st));
    assert_int_equal(WTERMSIG(st), SIGSEGV);
    assert_true(mt_file_contains(log_path, "child made by fork() without exec"));
    assert_int_equal(MT_STAT(fork_loaded_pages), 0);
    /* the parent is untouched */
    assert_int_equal(check_pages(p), 0);
    assert_int_equal(moat_dealloc(p, NPAGES * PG), 0);
}

static void child_exec(void *arg)
{
    (void)arg;
    execl("/bin/sh", "sh", "-c", "exit 7", (char *)NULL);
    _exit(99);
}

static void test_fork_exec(void **state)
{
    (void)state;
    /* the shell's case: exec right after fork; with nothing read back the
     * child never touches the lost pages, so it must not be stopped */
    uint8_t *p = start_filled("0");
    int st = fork_run(child_exec, NULL);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 7);
    assert_int_equal(check_pages(p), 0);
    assert_int_equal(moat_dealloc(p, NPAGES * PG), 0);
}

static int stop(void **state)
{
    (void)state;
    moat_shutdown(); /* also after a failed assertion */
    unlink(log_path);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_child_sees_evicted_pages, stop),
        cmocka_unit_test_teardown(test_child_stopped_on_lost_page, stop),
        cmocka_unit_test_teardown(test_fork_exec, stop),
    };
    if (getenv("MT_FILTER"))
        cmocka_set_test_filter(getenv("MT_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
