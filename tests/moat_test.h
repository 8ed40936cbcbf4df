/*
 * moat_test.h - helpers shared by moat's tests: starting the engine on a
 * real store file in the test directory, running a scenario in a child
 * process and checking how it ended, reading the log.
 */
#ifndef MOAT_TEST_H
#define MOAT_TEST_H

#include <moat.h>

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#if defined(__SANITIZE_THREAD__)
#define MOAT_TEST_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define MOAT_TEST_TSAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define MOAT_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MOAT_TEST_ASAN 1
#endif
#endif
#if defined(MOAT_TEST_TSAN) || defined(MOAT_TEST_ASAN)
#define MOAT_TEST_SANITIZED 1
#endif

static inline const char *mt_dir(void)
{
    const char *d = getenv("MOAT_TEST_TMP");
    return d && *d ? d : "/tmp";
}

/* mt_path - a file name unique to this process in the test directory. */
static inline const char *mt_path(char *buf, size_t len, const char *what)
{
    snprintf(buf, len, "%s/moat-test-%d-%s", mt_dir(), (int)getpid(), what);
    return buf;
}

/* mt_start - moat with a budget (bytes, 0 = unlimited) and a log file. */
static inline int mt_start_opts(size_t budget, const char *store, const char *log_file)
{
    struct moat_options o = {.budget = budget,
                             .store = store,
                             .log_level = -1,
                             .log_file = log_file,
                             .range_size = 4ULL << 30};
    return moat_init(&o);
}
static inline void mt_start(size_t budget)
{
    assert_int_equal(mt_start_opts(budget, NULL, NULL), 0);
}

/* mt_child - run fn in a child process; returns its wait status. */
static inline int mt_child(void (*fn)(void *), void *arg)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        /* the test runner's own handlers must not catch the child's signals */
        signal(SIGSEGV, SIG_DFL);
        signal(SIGBUS, SIG_DFL);
        fn(arg);
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    return status;
}

/* mt_signal_of - run fn in this process with a temporary SIGSEGV/SIGBUS
 * handler; returns the signal it raised (0 if none).  Replaces moat's own
 * handler for the duration, so it suits plain accesses, not custom-handler
 * areas. */
static sigjmp_buf mt_jmp;
static volatile sig_atomic_t mt_sig;
static void mt_on_signal(int sig)
{
    mt_sig = sig;
    siglongjmp(mt_jmp, 1);
}
static inline int mt_signal_of(void (*fn)(void *), void *arg)
{
    struct sigaction sa, old_segv, old_bus;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = mt_on_signal;
    sa.sa_flags = SA_NODEFER;
    sigaction(SIGSEGV, &sa, &old_segv);
    sigaction(SIGBUS, &sa, &old_bus);
    mt_sig = 0;
    if (sigsetjmp(mt_jmp, 1) == 0)
        fn(arg);
    sigaction(SIGSEGV, &old_segv, NULL);
    sigaction(SIGBUS, &old_bus, NULL);
    return mt_sig;
}

/* mt_file_contains - does the file contain the string? */
static inline int mt_file_contains(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    return strstr(buf, needle) != NULL;
}

static inline uint64_t mt_stat(size_t offset)
{
    struct moat_stats s;
    assert_int_equal(moat_stats(&s), 0);
    return *(uint64_t *)((char *)&s + offset);
}
#define MT_STAT(field) mt_stat(offsetof(struct moat_stats, field))

/* mt_stats - all the counters at once. */
static inline struct moat_stats mt_stats(void)
{
    struct moat_stats s;
    assert_int_equal(moat_stats(&s), 0);
    return s;
}

/* mt_init_base - moat_init(o), then the start of the ELRANGE. */
static inline char *mt_init_base(const struct moat_options *o)
{
    assert_int_equal(moat_init(o), 0);
    void *b;
    size_t n;
    assert_int_equal(moat_range(&b, &n), 0);
    return b;
}

/* mt_teardown_shutdown - a cmocka teardown that stops moat. */
static inline int mt_teardown_shutdown(void **state)
{
    (void)state;
    moat_shutdown();
    return 0;
}

#endif
