/*
 * test_fault_handler.c - custom fault handlers of regions: what a handler is
 * told (maddr, the rw / p / sgx bits, errcd), handlers that commit and
 * continue, CONTINUE_SEARCH as a fatal fault (in a child, with the log line)
 * or handed on to the program's own SIGSEGV handler, handlers that
 * siglongjmp out, nested faults, write faults on pages made read-only, and
 * eight threads faulting at once in one region and in separate ones.
 *
 * Every test starts moat in its body: cmocka installs its own SIGSEGV
 * handler around each test and fixture and puts the previous one back
 * afterwards, which would drop moat's if moat were started elsewhere.
 */
#include "moat_test.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#define PG 4096UL

static int teardown(void **state)
{
    (void)state;
    moat_shutdown();
    return 0;
}

/* rd / wr - an access that may fault into a handler; the fence keeps the
 * compiler from reusing values the handler changes across the access. */
static uint8_t rd(const void *p)
{
    uint8_t v = *(const volatile uint8_t *)p;
    atomic_signal_fence(memory_order_seq_cst);
    return v;
}

static void wr(void *p, uint8_t v)
{
    *(volatile uint8_t *)p = v;
    atomic_signal_fence(memory_order_seq_cst);
}

static void *page_down(uint64_t addr)
{
    return (void *)(uintptr_t)(addr & ~(uint64_t)(PG - 1));
}

/* ------------------------------------------------------------------------
 * What the handler is told
 * ---------------------------------------------------------------------- */

#define MAX_SEEN 16

struct record {
    moat_pfinfo seen[MAX_SEEN];
    void *priv_seen[MAX_SEEN];
    unsigned n;
    int fail; /* an errno from inside the handler, for the test to report */
};

/* Records the fault, then resolves it: an uncommitted page is committed,
 * a committed one is given the permissions the access needs. */
static int recording_handler(const moat_pfinfo *pf, void *priv)
{
    struct record *rec = priv;
    if (rec->n < MAX_SEEN) {
        rec->seen[rec->n] = *pf;
        rec->priv_seen[rec->n] = priv;
    }
    rec->n++;
    void *page = page_down(pf->maddr);
    int err;
    if (!pf->pfec.p)
        err = moat_commit(page, PG);
    else
        err = moat_modify_permissions(page, PG, MOAT_PROT_READ_WRITE);
    if (err) {
        rec->fail = err;
        return MOAT_FAULT_CONTINUE_SEARCH;
    }
    return MOAT_FAULT_CONTINUE_EXECUTION;
}

static void expect_fault(const struct record *rec, unsigned i, const void *addr, unsigned rw,
                         unsigned p)
{
    assert_true(i < rec->n);
    const moat_pfinfo *pf = &rec->seen[i];
    assert_int_equal(pf->maddr, (uintptr_t)addr);
    assert_int_equal(pf->pfec.rw, rw);
    assert_int_equal(pf->pfec.p, p);
    assert_int_equal(pf->pfec.sgx, 1);
    assert_int_not_equal(pf->pfec.errcd, 0);
    assert_int_equal(pf->reserved, 0);
    assert_ptr_equal(rec->priv_seen[i], rec);
}

static void test_pfinfo(void **state)
{
    (void)state;
    mt_start(0);
    struct record rec;
    memset(&rec, 0, sizeof rec);
    uint8_t *p;
    assert_int_equal(
        moat_alloc(NULL, 4 * PG, MOAT_COMMIT_ON_DEMAND, recording_handler, &rec, (void **)&p), 0);
    uint64_t h0 = MT_STAT(faults_handler);

    /* read of an uncommitted page: rw 0, p 0, the exact address */
    assert_int_equal(rd(p + 123), 0);
    assert_int_equal(rec.n, 1);
    expect_fault(&rec, 0, p + 123, 0, 0);

    /* write to an uncommitted page: rw 1, p 0 */
    wr(p + PG + 7, 0x77);
    assert_int_equal(rec.n, 2);
    expect_fault(&rec, 1, p + PG + 7, 1, 0);
    assert_int_equal(rd(p + PG + 7), 0x77);

    /* committed pages are not the handler's business */
    wr(p + 5, 5);
    assert_int_equal(rd(p + PG + 8), 0);
    assert_int_equal(rec.n, 2);

    /* read of a committed page made inaccessible: rw 0, p 1 */
    assert_int_equal(moat_modify_permissions(p + PG, PG, MOAT_PROT_NONE), 0);
    assert_int_equal(rd(p + PG + 7), 0x77);
    assert_int_equal(rec.n, 3);
    expect_fault(&rec, 2, p + PG + 7, 0, 1);

    /* write to a committed page made read-only: rw 1, p 1 */
    assert_int_equal(moat_modify_permissions(p, PG, MOAT_PROT_READ), 0);
    assert_int_equal(rd(p + 5), 5); /* reads are fine */
    assert_int_equal(rec.n, 3);
    wr(p + 9, 9);
    assert_int_equal(rec.n, 4);
    expect_fault(&rec, 3, p + 9, 1, 1);
    assert_int_equal(rd(p + 5), 5);
    assert_int_equal(rd(p + 9), 9);

    /* an uncommitted page of a COMMIT_NOW area after uncommit: p 0 */
    uint8_t *q;
    assert_int_equal(
        moat_alloc(NULL, 2 * PG, MOAT_COMMIT_NOW, recording_handler, &rec, (void **)&q), 0);
    wr(q + PG, 1); /* committed: no fault */
    assert_int_equal(rec.n, 4);
    assert_int_equal(moat_uncommit(q + PG, PG), 0);
    assert_int_equal(rd(q + PG + 64), 0); /* zero again after re-commit */
    assert_int_equal(rec.n, 5);
    expect_fault(&rec, 4, q + PG + 64, 0, 0);

    assert_int_equal(rec.fail, 0);
    assert_true(MT_STAT(faults_handler) - h0 >= 5);
    assert_int_equal(moat_dealloc(p, 4 * PG), 0);
    assert_int_equal(moat_dealloc(q, 2 * PG), 0);
}

#if defined(__x86_64__)
/* On an instruction fetch (rw 0, p 1) grant R+X and continue. */
static int exec_handler(const moat_pfinfo *pf, void *priv)
{
    struct record *rec = priv;
    if (rec->n < MAX_SEEN) {
        rec->seen[rec->n] = *pf;
        rec->priv_seen[rec->n] = priv;
    }
    rec->n++;
    if (pf->pfec.rw || !pf->pfec.p)
        return MOAT_FAULT_CONTINUE_SEARCH;
    rec->fail = moat_modify_permissions(page_down(pf->maddr), PG, MOAT_PROT_READ_EXEC);
    return rec->fail ? MOAT_FAULT_CONTINUE_SEARCH : MOAT_FAULT_CONTINUE_EXECUTION;
}

static void test_exec_fault(void **state)
{
    (void)state;
    mt_start(0);
    struct record rec;
    memset(&rec, 0, sizeof rec);
    uint8_t *q;
    assert_int_equal(moat_alloc(NULL, PG, MOAT_COMMIT_NOW, exec_handler, &rec, (void **)&q), 0);
    static const uint8_t ret42[] = {0xb8, 0x2a, 0x00, 0x00, 0x00, 0xc3}; /* mov eax,42; ret */
    memcpy(q, ret42, sizeof ret42);
    int (*fn)(void);
    void *code = q;
    memcpy(&fn, &code, sizeof fn);
    assert_int_equal(fn(), 42); /* RW page: the fetch faults, the handler grants R+X */
    assert_int_equal(rec.n, 1);
    expect_fault(&rec, 0, q, 0, 1);
    assert_int_equal(fn(), 42); /* no second fault */
    assert_int_equal(rec.n, 1);
    assert_int_equal(moat_dealloc(q, PG), 0);
}
#endif

/* ------------------------------------------------------------------------
 * A handler that commits and continues
 * ---------------------------------------------------------------------- */

/* Fills a page with its own address, word by word, via commit_data; a page
 * another thread committed first (EACCES) is fine. */
static _Thread_local _Alignas(4096) uint64_t fill_buf[PG / 8];
static _Atomic unsigned fill_calls;

static int fill_handler(const moat_pfinfo *pf, void *priv)
{
    (void)priv;
    atomic_fetch_add(&fill_calls, 1);
    uint64_t *page = page_down(pf->maddr);
    for (size_t i = 0; i < PG / 8; i++)
        fill_buf[i] = (uint64_t)(uintptr_t)&page[i];
    int err = moat_commit_data(page, PG, (uint8_t *)fill_buf, MOAT_PROT_READ_WRITE);
    if (err && err != EACCES)
        return MOAT_FAULT_CONTINUE_SEARCH;
    return MOAT_FAULT_CONTINUE_EXECUTION;
}

static bool page_holds_addresses(const void *page)
{
    const volatile uint64_t *w = page;
    for (size_t i = 0; i < PG / 8; i++)
        if (w[i] != (uint64_t)(uintptr_t)&w[i])
            return false;
    return true;
}

static void test_commit_and_continue(void **state)
{
    (void)state;
    mt_start(0);
    uint8_t *p;
    assert_int_equal(
        moat_alloc(NULL, 16 * PG, MOAT_COMMIT_ON_DEMAND, fill_handler, NULL, (void **)&p), 0);
    atomic_store(&fill_calls, 0);
    for (size_t i = 0; i < 16; i++)
        assert_true(page_holds_addresses(p + i * PG));
    assert_int_equal(atomic_load(&fill_calls), 16);
    /* the pages are RW now: a write neither faults nor loses data */
    wr(p + 3 * PG, 0xEE);
    assert_int_equal(rd(p + 3 * PG), 0xEE);
    assert_int_equal(atomic_load(&fill_calls), 16);
    assert_int_equal(MT_STAT(committed_pages), 16);
    /* uncommit: the next access asks the handler again */
    assert_int_equal(moat_uncommit(p + 3 * PG, PG), 0);
    assert_true(page_holds_addresses(p + 3 * PG));
    assert_int_equal(atomic_load(&fill_calls), 17);
    assert_int_equal(moat_dealloc(p, 16 * PG), 0);
}

/* ------------------------------------------------------------------------
 * CONTINUE_SEARCH
 * ---------------------------------------------------------------------- */

static int search_handler(const moat_pfinfo *pf, void *priv)
{
    (void)pf;
    atomic_fetch_add((_Atomic unsigned *)priv, 1);
    return MOAT_FAULT_CONTINUE_SEARCH;
}

struct search_case {
    const char *log;
    int pipe_w;    /* the child reports the address it touches */
    bool own_segv; /* install a SIGSEGV handler before moat_init */
};

static int own_segv_pipe = -1;
static void own_segv(int sig, siginfo_t *si, void *uc)
{
    (void)sig;
    (void)uc;
    char line[64];
    int n = snprintf(line, sizeof line, "own %p\n", si->si_addr);
    ssize_t w = write(own_segv_pipe, line, (size_t)n);
    (void)w;
    _exit(42);
}

static void search_child(void *arg)
{
    struct search_case *c = arg;
    if (c->own_segv) {
        own_segv_pipe = c->pipe_w;
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = own_segv;
        sa.sa_flags = SA_SIGINFO;
        sigaction(SIGSEGV, &sa, NULL);
    }
    /* with own_segv, the handler ends the child with _exit(42): log an INFO
     * line first so the fatal line is not the process's first (the first
     * m_log loads the time zone with malloc, which ThreadSanitizer reports
     * inside a signal handler and then turns exit status 42 into 66) */
    if (c->own_segv)
        setenv("MOAT_LOG", "info", 1);
    if (mt_start_opts(0, NULL, c->log) != 0)
        _exit(3);
    static _Atomic unsigned calls;
    uint8_t *p;
    if (moat_alloc(NULL, 4 * PG, MOAT_COMMIT_ON_DEMAND, search_handler, (void *)&calls,
                   (void **)&p) != 0)
        _exit(4);
    char line[64];
    int n = snprintf(line, sizeof line, "touch %p\n", (void *)(p + PG + 8));
    if (write(c->pipe_w, line, (size_t)n) != n)
        _exit(5);
    (void)rd(p + PG + 8);
    _exit(6); /* not reached: the fault is fatal */
}

static void run_search_child(bool own)
{
    char log[256];
    mt_path(log, sizeof log, "search.log");
    unlink(log);
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    struct search_case c = {.log = log, .pipe_w = fds[1], .own_segv = own};
    int st = mt_child(search_child, &c);
    close(fds[1]);
    char out[256] = {0};
    ssize_t n = read(fds[0], out, sizeof out - 1);
    close(fds[0]);
    assert_true(n > 0);
    void *touched = NULL;
    assert_int_equal(sscanf(out, "touch %p", &touched), 1);
    char expect[128];
    snprintf(expect, sizeof expect, "did not handle a read at %#lx", (unsigned long)touched);
    assert_true(mt_file_contains(log, "[FATAL]-[fault]"));
    assert_true(mt_file_contains(log, expect));
    if (own) {
        /* handed on to the handler the program had before moat */
        assert_true(WIFEXITED(st));
        assert_int_equal(WEXITSTATUS(st), 42);
        char own_line[64];
        snprintf(own_line, sizeof own_line, "own %p", touched);
        assert_non_null(strstr(out, own_line));
    } else {
        assert_true(WIFSIGNALED(st));
        assert_int_equal(WTERMSIG(st), SIGSEGV);
    }
    unlink(log);
}

static void test_continue_search_is_fatal(void **state)
{
    (void)state;
    run_search_child(false);
}

static void test_continue_search_chains(void **state)
{
    (void)state;
    run_search_child(true);
}

/* ------------------------------------------------------------------------
 * siglongjmp out of a handler
 * ---------------------------------------------------------------------- */

static sigjmp_buf escape;
static _Atomic unsigned escape_calls;
static bool escape_resolve; /* resolve the fault instead of jumping out */

static int escape_handler(const moat_pfinfo *pf, void *priv)
{
    (void)priv;
    atomic_fetch_add(&escape_calls, 1);
    if (escape_resolve)
        return moat_commit(page_down(pf->maddr), PG) == 0 ? MOAT_FAULT_CONTINUE_EXECUTION
                                                          : MOAT_FAULT_CONTINUE_SEARCH;
    siglongjmp(escape, 1);
}

static void test_siglongjmp_out(void **state)
{
    (void)state;
    mt_start(0);
    uint8_t *p;
    assert_int_equal(
        moat_alloc(NULL, 4 * PG, MOAT_COMMIT_ON_DEMAND, escape_handler, NULL, (void **)&p), 0);
    atomic_store(&escape_calls, 0);
    escape_resolve = false;
    for (unsigned i = 0; i < 100; i++) {
        volatile bool finished = false;
        if (sigsetjmp(escape, 1) == 0) {
            wr(p + (i % 4) * PG, 1);
            finished = true; /* abandoned: never reached */
        }
        assert_false(finished);
        assert_int_equal(atomic_load(&escape_calls), i + 1);
    }
    /* the thread goes on normally: moat's locks are free (alloc takes the
     * area lock for writing), and the signal mask lets SIGSEGV through */
    sigset_t mask;
    pthread_sigmask(SIG_SETMASK, NULL, &mask);
    assert_false(sigismember(&mask, SIGSEGV));
    uint8_t *other;
    assert_int_equal(moat_alloc(NULL, PG, MOAT_COMMIT_NOW, NULL, NULL, (void **)&other), 0);
    wr(other, 3);
    assert_int_equal(moat_dealloc(other, PG), 0);
    assert_int_equal(MT_STAT(committed_pages), 0); /* the abandoned pages stayed uncommitted */
    /* a later fault still reaches the handler */
    escape_resolve = true;
    wr(p + 2 * PG, 9);
    assert_int_equal(atomic_load(&escape_calls), 101);
    assert_int_equal(rd(p + 2 * PG), 9);
    assert_int_equal(moat_dealloc(p, 4 * PG), 0);
}

/* ------------------------------------------------------------------------
 * Nested faults
 * ---------------------------------------------------------------------- */

struct nest {
    uint8_t *base;
    unsigned depth, max_depth, calls;
    uintptr_t order[8];
    int fail;
};

/* A fault on page i < 2 first reads page i+1, itself uncommitted: the
 * handler faults again from inside itself, three levels deep. */
static int nest_handler(const moat_pfinfo *pf, void *priv)
{
    struct nest *n = priv;
    uint8_t *page = page_down(pf->maddr);
    size_t i = (size_t)(page - n->base) / PG;
    if (n->calls < 8)
        n->order[n->calls] = (uintptr_t)page;
    n->calls++;
    n->depth++;
    if (n->depth > n->max_depth)
        n->max_depth = n->depth;
#if defined(MOAT_TEST_TSAN)
    /* ThreadSanitizer runs every signal handler with all signals blocked
     * (its sigaction wrapper fills sa_mask), so a second SIGSEGV would kill
     * the process.  moat should unblock SIGSEGV before calling a custom
     * handler itself; test_nested_fault_under_wrapping_handler reproduces
     * that without TSan.  Until then, the handler does it. */
    sigset_t segv;
    sigemptyset(&segv);
    sigaddset(&segv, SIGSEGV);
    pthread_sigmask(SIG_UNBLOCK, &segv, NULL);
#endif
    if (i < 2 && rd(page + PG) != (uint8_t)(i + 2))
        n->fail = EIO;
    int err = moat_commit(page, PG);
    if (err)
        n->fail = err;
    else
        wr(page, (uint8_t)(i + 1));
    n->depth--;
    return err ? MOAT_FAULT_CONTINUE_SEARCH : MOAT_FAULT_CONTINUE_EXECUTION;
}

static void test_nested_faults(void **state)
{
    (void)state;
    mt_start(0);
    struct nest n;
    memset(&n, 0, sizeof n);
    assert_int_equal(
        moat_alloc(NULL, 4 * PG, MOAT_COMMIT_ON_DEMAND, nest_handler, &n, (void **)&n.base), 0);
    assert_int_equal(rd(n.base), 1);
    assert_int_equal(n.fail, 0);
    assert_int_equal(n.calls, 3);
    assert_int_equal(n.max_depth, 3);
    assert_int_equal(n.depth, 0);
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(n.order[i], (uintptr_t)(n.base + i * PG));
        assert_int_equal(rd(n.base + i * PG), i + 1);
    }
    assert_int_equal(n.calls, 3); /* all committed now */
    assert_int_equal(moat_dealloc(n.base, 4 * PG), 0);
}

/*
 * Reproducer: a program that installs its own SIGSEGV handler after moat
 * started and passes faults on to moat's (crash reporters, sanitizers) often
 * does so with every signal blocked in its handler (sa_mask filled, as
 * ThreadSanitizer's interceptor does).  moat's handler then runs with
 * SIGSEGV blocked, and a custom handler that faults again - which moat.h
 * allows - takes the whole process down.  moat should unblock SIGSEGV before
 * it calls a custom handler.  Runs in a child.
 */
static struct sigaction moat_segv_action;

static void wrapping_segv(int sig, siginfo_t *si, void *uc)
{
    moat_segv_action.sa_sigaction(sig, si, uc);
}

static void nested_wrapped_child(void *arg)
{
    (void)arg;
    if (mt_start_opts(0, NULL, NULL) != 0)
        _exit(3);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = wrapping_segv;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigfillset(&sa.sa_mask);
    if (sigaction(SIGSEGV, &sa, &moat_segv_action) != 0 ||
        !(moat_segv_action.sa_flags & SA_SIGINFO))
        _exit(4);
    static struct nest n;
    if (moat_alloc(NULL, 4 * PG, MOAT_COMMIT_ON_DEMAND, nest_handler, &n, (void **)&n.base) != 0)
        _exit(5);
    if (rd(n.base) != 1 || n.fail || n.max_depth != 3)
        _exit(6);
    _exit(0);
}

static void test_nested_fault_under_wrapping_handler(void **state)
{
    (void)state;
    int st = mt_child(nested_wrapped_child, NULL);
    if (WIFSIGNALED(st))
        fprintf(stderr,
                "the child died of signal %d: a nested fault inside a custom handler "
                "met a blocked SIGSEGV\n",
                WTERMSIG(st));
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

/* ------------------------------------------------------------------------
 * Many threads
 * ---------------------------------------------------------------------- */

#define NT           8
#define SHARED_PAGES 256
#define OWN_PAGES    64

static pthread_barrier_t start_line;
static uint8_t *shared_area;

struct own_area {
    uint8_t *p;
    unsigned calls; /* only the owner thread faults here */
    int fail;
};

static int own_handler(const moat_pfinfo *pf, void *priv)
{
    struct own_area *a = priv;
    a->calls++;
    int err = moat_commit(page_down(pf->maddr), PG);
    if (err)
        a->fail = err;
    return err ? MOAT_FAULT_CONTINUE_SEARCH : MOAT_FAULT_CONTINUE_EXECUTION;
}

static void *thread_shared(void *arg)
{
    size_t t = (size_t)(uintptr_t)arg;
    pthread_barrier_wait(&start_line);
    /* every thread reads every page, each in its own order */
    size_t bad = 0;
    for (size_t k = 0; k < SHARED_PAGES; k++) {
        size_t i = (k * 37 + t * 101) % SHARED_PAGES;
        if (!page_holds_addresses(shared_area + i * PG))
            bad++;
    }
    return (void *)(uintptr_t)bad;
}

static void *thread_own(void *arg)
{
    struct own_area *a = arg;
    pthread_barrier_wait(&start_line);
    size_t bad = 0;
    for (size_t i = 0; i < OWN_PAGES; i++) {
        uint64_t *w = (uint64_t *)(a->p + i * PG);
        for (size_t j = 0; j < PG / 8; j += 8)
            w[j] = (uint64_t)(uintptr_t)&w[j] ^ 0x5a5a;
    }
    for (size_t i = 0; i < OWN_PAGES; i++) {
        const uint64_t *w = (const uint64_t *)(a->p + i * PG);
        for (size_t j = 0; j < PG / 8; j += 8)
            if (w[j] != ((uint64_t)(uintptr_t)&w[j] ^ 0x5a5a))
                bad++;
    }
    return (void *)(uintptr_t)bad;
}

static void test_threads(void **state)
{
    (void)state;
    mt_start(0);
    /* one area, all threads at once: pages resolved by whichever thread
     * gets there first; the others see EACCES and continue */
    assert_int_equal(moat_alloc(NULL, SHARED_PAGES * PG, MOAT_COMMIT_ON_DEMAND, fill_handler, NULL,
                                (void **)&shared_area),
                     0);
    atomic_store(&fill_calls, 0);
    pthread_t th[NT];
    assert_int_equal(pthread_barrier_init(&start_line, NULL, NT), 0);
    for (size_t t = 0; t < NT; t++)
        assert_int_equal(pthread_create(&th[t], NULL, thread_shared, (void *)(uintptr_t)t), 0);
    size_t bad = 0;
    for (size_t t = 0; t < NT; t++) {
        void *r;
        pthread_join(th[t], &r);
        bad += (size_t)(uintptr_t)r;
    }
    pthread_barrier_destroy(&start_line);
    assert_int_equal(bad, 0);
    assert_true(atomic_load(&fill_calls) >= SHARED_PAGES);
    assert_int_equal(MT_STAT(committed_pages), SHARED_PAGES);

    /* an area each, all at once */
    struct own_area areas[NT];
    memset(areas, 0, sizeof areas);
    for (size_t t = 0; t < NT; t++)
        assert_int_equal(moat_alloc(NULL, OWN_PAGES * PG, MOAT_COMMIT_ON_DEMAND, own_handler,
                                    &areas[t], (void **)&areas[t].p),
                         0);
    assert_int_equal(pthread_barrier_init(&start_line, NULL, NT), 0);
    for (size_t t = 0; t < NT; t++)
        assert_int_equal(pthread_create(&th[t], NULL, thread_own, &areas[t]), 0);
    for (size_t t = 0; t < NT; t++) {
        void *r;
        pthread_join(th[t], &r);
        bad += (size_t)(uintptr_t)r;
    }
    pthread_barrier_destroy(&start_line);
    assert_int_equal(bad, 0);
    for (size_t t = 0; t < NT; t++) {
        assert_int_equal(areas[t].fail, 0);
        assert_int_equal(areas[t].calls, OWN_PAGES); /* one fault a page, no more */
        assert_int_equal(moat_dealloc(areas[t].p, OWN_PAGES * PG), 0);
    }
    assert_int_equal(moat_dealloc(shared_area, SHARED_PAGES * PG), 0);
}

/* ------------------------------------------------------------------------
 * Write to a page the region made read-only (Intel's permissions test)
 * ---------------------------------------------------------------------- */

static void test_write_to_read_only(void **state)
{
    (void)state;
    mt_start(0);
    struct record rec;
    memset(&rec, 0, sizeof rec);
    uint8_t *p;
    assert_int_equal(
        moat_alloc(NULL, 2 * PG, MOAT_COMMIT_NOW, recording_handler, &rec, (void **)&p), 0);
    wr(p, 0x11);
    wr(p + PG, 0x22);
    assert_int_equal(rec.n, 0); /* committed: first touches are transparent */
    assert_int_equal(moat_modify_permissions(p, PG, MOAT_PROT_READ), 0);
    assert_int_equal(rd(p), 0x11);
    wr(p + PG + 1, 0x23); /* the other page is still RW */
    assert_int_equal(rec.n, 0);
    wr(p + 100, 0x33);
    assert_int_equal(rec.n, 1);
    expect_fault(&rec, 0, p + 100, 1, 1);
    assert_int_equal(rd(p), 0x11);
    assert_int_equal(rd(p + 100), 0x33);
    wr(p + 101, 0x34); /* RW again: no second fault */
    assert_int_equal(rec.n, 1);
    assert_int_equal(rec.fail, 0);
    /* dealloc of reduced pages raises no fault */
    assert_int_equal(moat_modify_permissions(p, 2 * PG, MOAT_PROT_NONE), 0);
    assert_int_equal(moat_dealloc(p, 2 * PG), 0);
    assert_int_equal(rec.n, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_pfinfo, teardown),
#if defined(__x86_64__)
        cmocka_unit_test_teardown(test_exec_fault, teardown),
#endif
        cmocka_unit_test_teardown(test_commit_and_continue, teardown),
        cmocka_unit_test_teardown(test_continue_search_is_fatal, teardown),
        cmocka_unit_test_teardown(test_continue_search_chains, teardown),
        cmocka_unit_test_teardown(test_siglongjmp_out, teardown),
        cmocka_unit_test_teardown(test_nested_faults, teardown),
        cmocka_unit_test_teardown(test_nested_fault_under_wrapping_handler, teardown),
        cmocka_unit_test_teardown(test_threads, teardown),
        cmocka_unit_test_teardown(test_write_to_read_only, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
