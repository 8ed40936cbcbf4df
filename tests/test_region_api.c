/*
 * test_region_api.c - every region function and its error codes, following
 * Intel's EMM: alloc flags, RESERVE carving, commit / uncommit, commit_data
 * (including executing installed code), permissions, page types, pinning,
 * dealloc splitting, and fatal accesses (in child processes).
 */
#include "moat_test.h"

#include "common/zap.h"
#include "region/region.h"

#include <moat/alloc.h>
#include <pthread.h>

#define PG 4096UL

static int setup(void **state)
{
    (void)state;
    mt_start(0);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    moat_shutdown();
    return 0;
}

static void test_not_running(void **state)
{
    (void)state;
    moat_shutdown();
    void *p;
    size_t n;
    assert_int_equal(moat_range(&p, &n), ENODEV);
    assert_int_equal(moat_alloc(NULL, PG, MOAT_COMMIT_NOW, NULL, NULL, &p), ENODEV);
    assert_int_equal(moat_commit((void *)0x100000, PG), ENODEV);
    struct moat_stats s;
    assert_int_equal(moat_stats(&s), ENODEV);
    mt_start(0);
    assert_int_equal(mt_start_opts(0, NULL, NULL), EALREADY);
    assert_int_equal(moat_range(NULL, &n), EINVAL);
    assert_int_equal(moat_range(&p, NULL), EINVAL);
    assert_int_equal(moat_stats(NULL), EINVAL);
    assert_int_equal(moat_range(&p, &n), 0);
    assert_true(n == 4ULL << 30);
}

static void test_bad_env(void **state)
{
    (void)state;
    moat_shutdown();
    setenv("MOAT_BUDGET", "lots", 1);
    assert_int_equal(moat_init(NULL), EINVAL);
    unsetenv("MOAT_BUDGET");
    setenv("MOAT_LOW", "95", 1);
    setenv("MOAT_HIGH", "90", 1);
    assert_int_equal(moat_init(NULL), EINVAL);
    unsetenv("MOAT_LOW");
    unsetenv("MOAT_HIGH");
    setenv("MOAT_LOG", "chatty", 1);
    assert_int_equal(moat_init(NULL), EINVAL);
    unsetenv("MOAT_LOG");
    setenv("MOAT_STORE", "nosuch://x", 1);
    assert_int_equal(moat_init(NULL), EINVAL);
    unsetenv("MOAT_STORE");
    setenv("MOAT_RANGE", "1G", 1);
    setenv("MOAT_BUDGET", "8M", 1);
    assert_int_equal(moat_init(NULL), 0);
    void *b;
    size_t n;
    assert_int_equal(moat_range(&b, &n), 0);
    assert_true(n == 1ULL << 30);
    assert_int_equal(MT_STAT(budget_pages), 2048);
    unsetenv("MOAT_RANGE");
    unsetenv("MOAT_BUDGET");
    moat_shutdown();
    mt_start(0);
}

static void test_alloc_flags(void **state)
{
    (void)state;
    void *p = NULL, *base;
    size_t size;
    assert_int_equal(moat_range(&base, &size), 0);
    /* one of RESERVE / COMMIT_NOW / COMMIT_ON_DEMAND, exactly */
    assert_int_equal(moat_alloc(NULL, PG, 0, NULL, NULL, &p), EINVAL);
    assert_int_equal(moat_alloc(NULL, PG, MOAT_FIXED, NULL, NULL, &p), EINVAL);
    /* several kinds: RESERVE wins (as in Intel's EMM) */
    assert_int_equal(moat_alloc(NULL, PG, MOAT_RESERVE | MOAT_COMMIT_NOW, NULL, NULL, &p), 0);
    assert_int_equal(moat_commit(p, PG), EACCES);
    assert_int_equal(moat_dealloc(p, PG), 0);
    assert_int_equal(
        moat_alloc(NULL, PG, MOAT_COMMIT_NOW | MOAT_GROWSDOWN | MOAT_GROWSUP, NULL, NULL, &p),
        EINVAL);
    assert_int_equal(moat_alloc(NULL, PG, MOAT_COMMIT_NOW | 0x8, NULL, NULL, &p), EINVAL);
    /* sizes and alignment */
    assert_int_equal(moat_alloc(NULL, 0, MOAT_COMMIT_NOW, NULL, NULL, &p), EINVAL);
    assert_int_equal(moat_alloc(NULL, 100, MOAT_COMMIT_NOW, NULL, NULL, &p), EINVAL);
    assert_int_equal(moat_alloc(NULL, PG, MOAT_COMMIT_NOW | MOAT_ALIGNED(11), NULL, NULL, &p),
                     EINVAL);
    assert_int_equal(moat_alloc((char *)base + 1, PG, MOAT_COMMIT_NOW | MOAT_FIXED, NULL, NULL, &p),
                     EINVAL);
    assert_int_equal(moat_alloc(NULL, PG, MOAT_COMMIT_NOW | MOAT_FIXED, NULL, NULL, &p), EINVAL);
    /* page types */
    assert_int_equal(
        moat_alloc(NULL, PG, MOAT_COMMIT_ON_DEMAND | MOAT_PAGE_TYPE_TCS, NULL, NULL, &p), EINVAL);
    assert_int_equal(moat_alloc(NULL, PG, MOAT_COMMIT_NOW | MOAT_PAGE_TYPE_TRIM, NULL, NULL, &p),
                     EINVAL);
    assert_int_equal(
        moat_alloc(NULL, 2 * PG, MOAT_COMMIT_NOW | MOAT_PAGE_TYPE_SS_FIRST, NULL, NULL, &p),
        EINVAL);
    /* outside the range */
    void *outside = (char *)base + size;
    assert_int_equal(moat_alloc(outside, PG, MOAT_COMMIT_NOW | MOAT_FIXED, NULL, NULL, &p), EPERM);
    assert_int_equal(moat_alloc((char *)base + size - PG, 2 * PG, MOAT_COMMIT_NOW, NULL, NULL, &p),
                     EACCES);
    /* too large */
    assert_int_equal(moat_alloc(NULL, size + PG, MOAT_RESERVE, NULL, NULL, &p), ENOMEM);
    /* alignment is honoured */
    assert_int_equal(moat_alloc(NULL, PG, MOAT_COMMIT_NOW | MOAT_ALIGNED(21), NULL, NULL, &p), 0);
    assert_int_equal((uintptr_t)p & ((1UL << 21) - 1), 0);
    assert_int_equal(moat_dealloc(p, PG), 0);
    /* out_addr may be NULL */
    assert_int_equal(moat_alloc(NULL, PG, MOAT_COMMIT_NOW, NULL, NULL, NULL), 0);
}

static void test_on_demand_first_touch(void **state)
{
    (void)state;
    uint8_t *p;
    assert_int_equal(moat_alloc(NULL, 64 * PG, MOAT_COMMIT_ON_DEMAND, NULL, NULL, (void **)&p), 0);
    uint64_t c0 = MT_STAT(committed_pages), f0 = MT_STAT(faults_commit);
    /* a first touch out of sequence commits that page alone */
    assert_int_equal(p[5 * PG], 0);
    assert_int_equal(MT_STAT(committed_pages) - c0, 1);
    /* sequential first touches commit ahead: fewer faults than pages */
    for (size_t i = 0; i < 64; i++)
        assert_int_equal(p[i * PG + 7], 0);
    for (size_t i = 0; i < 64; i++)
        p[i * PG] = (uint8_t)i;
    for (size_t i = 0; i < 64; i++)
        assert_int_equal(p[i * PG], (uint8_t)i);
    assert_int_equal(MT_STAT(committed_pages) - c0, 64);
    assert_true(MT_STAT(faults_commit) - f0 >= 64 / 16);
    assert_true(MT_STAT(faults_commit) - f0 < 64);
    /* a first touch next to resident pages, but where no stream of faults
     * ended, is random (a probed hash table): it commits that page alone */
    assert_int_equal(moat_uncommit(p + 40 * PG, 24 * PG), 0);
    uint64_t c1 = MT_STAT(committed_pages);
    p[50 * PG] = 1;
    assert_int_equal(MT_STAT(committed_pages) - c1, 1);
    p[40 * PG] = 1; /* page 39 is resident: still not a stream */
    assert_int_equal(MT_STAT(committed_pages) - c1, 2);
    p[41 * PG] = 1; /* the page after the last fault: a stream, read ahead */
    assert_true(MT_STAT(committed_pages) - c1 > 3);
    /* downwards too (a buffer filled from its end): a fault on the page
     * below the last one commits a run below it */
    uint64_t c2 = MT_STAT(committed_pages);
    p[63 * PG] = 1;
    assert_int_equal(MT_STAT(committed_pages) - c2, 1);
    p[62 * PG] = 1;
    assert_true(MT_STAT(committed_pages) - c2 > 3);
    for (size_t i = 40; i < 64; i++)
        assert_int_equal(p[i * PG + 9], 0);
    /* uncommit: contents are gone, the next touch commits a zero page */
    assert_int_equal(moat_uncommit(p, 64 * PG), 0);
    assert_int_equal(moat_uncommit(p, 64 * PG), 0); /* already uncommitted: fine */
    assert_int_equal(MT_STAT(committed_pages), c0);
    assert_int_equal(p[PG], 0);
    assert_int_equal(moat_dealloc(p, 64 * PG), 0);
}

static void test_commit_now(void **state)
{
    (void)state;
    uint8_t *p;
    uint64_t c0 = MT_STAT(committed_pages);
    assert_int_equal(moat_alloc(NULL, 16 * PG, MOAT_COMMIT_NOW, NULL, NULL, (void **)&p), 0);
    assert_int_equal(MT_STAT(committed_pages) - c0, 16);
    memset(p, 0xab, 16 * PG);
    assert_int_equal(p[16 * PG - 1], 0xab);
    assert_int_equal(moat_commit(p, PG), 0); /* committed already: nothing to do */
    assert_int_equal(moat_uncommit(p + PG, PG), 0);
    assert_int_equal(MT_STAT(committed_pages) - c0, 15);
    /* re-commit of a COMMIT_NOW page (EMM allows it): zero again */
    assert_int_equal(moat_commit(p, 2 * PG), 0);
    assert_int_equal(MT_STAT(committed_pages) - c0, 16);
    assert_int_equal(p[PG + 5], 0);
    assert_int_equal(p[0], 0xab);
    /* reduced permissions: commit is EACCES */
    assert_int_equal(moat_modify_permissions(p + 2 * PG, PG, MOAT_PROT_READ), 0);
    assert_int_equal(moat_commit(p, 4 * PG), EACCES);
    assert_int_equal(moat_dealloc(p, 16 * PG), 0);
    assert_int_equal(MT_STAT(committed_pages), c0);
}

static void test_reserve_and_fixed(void **state)
{
    (void)state;
    uint8_t *r, *p;
    assert_int_equal(moat_alloc(NULL, 64 * PG, MOAT_RESERVE, NULL, NULL, (void **)&r), 0);
    /* commit / uncommit on a RESERVE area: EACCES */
    assert_int_equal(moat_commit(r, PG), EACCES);
    assert_int_equal(moat_uncommit(r, PG), EACCES);
    assert_int_equal(moat_modify_permissions(r, PG, MOAT_PROT_READ), EPERM);
    assert_int_equal(moat_modify_type(r, PG, MOAT_PAGE_TYPE_TCS), EACCES);
    assert_int_equal(moat_commit_data(r, PG, (uint8_t *)"x", MOAT_PROT_READ), EACCES);
    /* carve with FIXED */
    assert_int_equal(
        moat_alloc(r + 8 * PG, 8 * PG, MOAT_COMMIT_NOW | MOAT_FIXED, NULL, NULL, (void **)&p), 0);
    assert_ptr_equal(p, r + 8 * PG);
    p[0] = 1;
    p[8 * PG - 1] = 2;
    /* FIXED over a committed area: EEXIST */
    assert_int_equal(moat_alloc(r + 8 * PG, PG, MOAT_COMMIT_NOW | MOAT_FIXED, NULL, NULL, NULL),
                     EEXIST);
    assert_int_equal(moat_alloc(r + 4 * PG, 8 * PG, MOAT_COMMIT_NOW | MOAT_FIXED, NULL, NULL, NULL),
                     EEXIST);
    /* a hint inside the RESERVE area carves it too */
    uint8_t *q;
    assert_int_equal(
        moat_alloc(r + 32 * PG, 4 * PG, MOAT_COMMIT_ON_DEMAND, NULL, NULL, (void **)&q), 0);
    assert_ptr_equal(q, r + 32 * PG);
    q[5] = 5;
    /* a hint over a taken place is only a hint */
    uint8_t *h;
    assert_int_equal(moat_alloc(p, PG, MOAT_COMMIT_NOW, NULL, NULL, (void **)&h), 0);
    assert_ptr_not_equal(h, p);
    assert_int_equal(moat_dealloc(h, PG), 0);
    /* commit over a range with a RESERVE part: EACCES; with a hole: EINVAL */
    assert_int_equal(moat_commit(q, 8 * PG), EACCES);
    assert_int_equal(moat_dealloc(r, 64 * PG), 0);
    assert_int_equal(moat_commit(q, PG), EINVAL);
    assert_int_equal(moat_uncommit(q, PG), EINVAL);
    /* nothing overlaps any more */
    assert_int_equal(moat_dealloc(r, 64 * PG), EINVAL);
}

static void test_dealloc_split(void **state)
{
    (void)state;
    uint8_t *p;
    assert_int_equal(moat_alloc(NULL, 16 * PG, MOAT_COMMIT_ON_DEMAND, NULL, NULL, (void **)&p), 0);
    memset(p, 7, 16 * PG);
    uint64_t regions = MT_STAT(regions);
    assert_int_equal(moat_dealloc(p + 4 * PG, 4 * PG), 0); /* a hole in the middle */
    assert_int_equal(MT_STAT(regions), regions + 1);
    assert_int_equal(p[0], 7);
    assert_int_equal(p[12 * PG], 7);
    assert_int_equal(moat_commit(p + 4 * PG, PG), EINVAL);
    assert_int_equal(moat_commit(p, 8 * PG), EINVAL); /* hole inside */
    /* dealloc over the hole and beyond frees both neighbours */
    assert_int_equal(moat_dealloc(p, 16 * PG), 0);
    assert_int_equal(MT_STAT(regions), regions - 1);
    /* misaligned arguments */
    assert_int_equal(moat_dealloc(p + 1, PG), EINVAL);
    assert_int_equal(moat_dealloc(p, 1), EINVAL);
    assert_int_equal(moat_dealloc(NULL, PG), EINVAL);
}

static void test_commit_data(void **state)
{
    (void)state;
    uint8_t *p, *n;
    uint8_t data[2 * PG];
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = (uint8_t)(i * 7);
    assert_int_equal(moat_alloc(NULL, 8 * PG, MOAT_COMMIT_ON_DEMAND, NULL, NULL, (void **)&p), 0);
    assert_int_equal(moat_alloc(NULL, 8 * PG, MOAT_COMMIT_NOW, NULL, NULL, (void **)&n), 0);
    assert_int_equal(moat_commit_data(n, PG, data, MOAT_PROT_READ), EINVAL); /* not on demand */
    assert_int_equal(moat_commit_data(p, PG, NULL, MOAT_PROT_READ), EINVAL);
    assert_int_equal(moat_commit_data(p, PG, data, 0x8), EINVAL);
    assert_int_equal(moat_commit_data(p, 2 * PG, data, MOAT_PROT_READ), 0);
    assert_memory_equal(p, data, 2 * PG);
    assert_int_equal(moat_commit_data(p, PG, data, MOAT_PROT_READ), EACCES); /* committed */
    p[3 * PG] = 1;                                                           /* commits page 3 */
    assert_int_equal(moat_commit_data(p + 2 * PG, 2 * PG, data, MOAT_PROT_READ), EACCES);
    assert_int_equal(moat_commit(p + 4 * PG, PG), 0);
    assert_int_equal(moat_commit_data(p + 4 * PG, PG, data, MOAT_PROT_READ), EACCES);
#if defined(__x86_64__)
    /* code installed with EXEC runs: mov eax, 42; ret */
    uint8_t code[PG];
    memset(code, 0xcc, sizeof code);
    const uint8_t fn[] = {0xb8, 0x2a, 0x00, 0x00, 0x00, 0xc3};
    memcpy(code, fn, sizeof fn);
    assert_int_equal(moat_commit_data(p + 6 * PG, PG, code, MOAT_PROT_READ_EXEC), 0);
    int (*f)(void);
    void *fp = p + 6 * PG;
    memcpy(&f, &fp, sizeof f);
    assert_int_equal(f(), 42);
#endif
    assert_int_equal(moat_dealloc(p, 8 * PG), 0);
    assert_int_equal(moat_dealloc(n, 8 * PG), 0);
}

static void write_to(void *arg)
{
    *(volatile uint8_t *)arg = 1;
}
static void read_from(void *arg)
{
    (void)*(volatile uint8_t *)arg;
}

static void test_permissions(void **state)
{
    (void)state;
    uint8_t *p;
    assert_int_equal(moat_alloc(NULL, 4 * PG, MOAT_COMMIT_NOW, NULL, NULL, (void **)&p), 0);
    p[0] = 9;
    assert_int_equal(moat_modify_permissions(p, PG, 0x10), EINVAL);
    assert_int_equal(moat_modify_permissions(p, PG, MOAT_PROT_READ), 0);
    assert_int_equal(p[0], 9);
    assert_int_equal(mt_signal_of(write_to, p), SIGSEGV);
    assert_int_equal(moat_modify_permissions(p, PG, MOAT_PROT_READ_WRITE), 0);
    p[0] = 10;
    assert_int_equal(moat_uncommit(p + PG, PG), 0);
    assert_int_equal(moat_modify_permissions(p, 2 * PG, MOAT_PROT_READ), EINVAL);
    assert_int_equal(moat_modify_permissions(p, PG, MOAT_PROT_EXEC), EINVAL);
    assert_int_equal(moat_modify_permissions(p + 3 * PG, 2 * PG, MOAT_PROT_READ), EINVAL);
    assert_int_equal(moat_dealloc(p, 4 * PG), 0);
}

static void test_modify_type(void **state)
{
    (void)state;
    uint8_t *p;
    assert_int_equal(moat_alloc(NULL, 4 * PG, MOAT_COMMIT_ON_DEMAND, NULL, NULL, (void **)&p), 0);
    assert_int_equal(moat_modify_type(p, PG, MOAT_PAGE_TYPE_REG), EPERM);
    assert_int_equal(moat_modify_type(p, PG, MOAT_PAGE_TYPE_TRIM), EPERM);
    assert_int_equal(moat_modify_type(p, 2 * PG, MOAT_PAGE_TYPE_TCS), EINVAL);
    assert_int_equal(moat_modify_type(p, PG, MOAT_PAGE_TYPE_TCS), EACCES); /* not committed */
    assert_int_equal(moat_commit(p, PG), 0);
    assert_int_equal(moat_modify_permissions(p + PG, PG, MOAT_PROT_READ), EINVAL);
    assert_int_equal(moat_commit(p + PG, PG), 0);
    assert_int_equal(moat_modify_permissions(p + PG, PG, MOAT_PROT_READ), 0);
    assert_int_equal(moat_modify_type(p + PG, PG, MOAT_PAGE_TYPE_TCS), EPERM); /* not RW */
    uint64_t u0 = MT_STAT(resident_unreclaimable);
    assert_int_equal(moat_modify_type(p, PG, MOAT_PAGE_TYPE_TCS), 0);
    assert_int_equal(MT_STAT(resident_unreclaimable), u0 + 1);
    assert_int_equal(moat_modify_type(p, PG, MOAT_PAGE_TYPE_TCS), 0); /* already TCS */
    assert_int_equal(moat_modify_permissions(p, PG, MOAT_PROT_READ_WRITE), EPERM);
    assert_int_equal(mt_signal_of(read_from, p), SIGSEGV); /* a TCS page is not accessible */
    assert_int_equal(moat_dealloc(p, 4 * PG), 0);
    assert_int_equal(MT_STAT(resident_unreclaimable), u0);
}

static void test_pin(void **state)
{
    (void)state;
    moat_shutdown();
    mt_start(64 * PG);
    uint8_t *p;
    assert_int_equal(moat_alloc(NULL, 256 * PG, MOAT_COMMIT_ON_DEMAND, NULL, NULL, (void **)&p), 0);
    assert_int_equal(moat_pin(p, PG), EACCES); /* uncommitted */
    assert_int_equal(moat_commit(p, 16 * PG), 0);
    assert_int_equal(moat_pin(p, 16 * PG), 0);
    assert_int_equal(MT_STAT(resident_unreclaimable), 16);
    assert_int_equal(moat_pin(p, 16 * PG), 0); /* again: nothing changes */
    assert_int_equal(MT_STAT(resident_unreclaimable), 16);
    /* pinned pages survive a sweep through 4x the budget */
    memset(p, 0x5a, 16 * PG);
    for (size_t i = 16; i < 256; i++)
        p[i * PG] = (uint8_t)i;
    assert_true(MT_STAT(evictions_written) > 0);
    for (size_t i = 0; i < 16 * PG; i++)
        assert_int_equal(p[i], 0x5a);
    for (size_t i = 16; i < 256; i++)
        assert_int_equal(p[i * PG], (uint8_t)i);
    assert_true(MT_STAT(resident_pages) <= 64);
    /* pinning more than the budget can hold: ENOMEM */
    assert_int_equal(moat_commit(p, 256 * PG), 0);
    assert_int_equal(moat_pin(p + 16 * PG, 100 * PG), ENOMEM);
    assert_int_equal(moat_unpin(p, 16 * PG), 0);
    assert_int_equal(MT_STAT(resident_unreclaimable), 0);
    assert_int_equal(moat_dealloc(p, 256 * PG), 0);
}

/* ------------------------------------------------------------------------
 * Fatal accesses, in children
 * ---------------------------------------------------------------------- */

struct fatal_case {
    int flags;
    size_t offset;
    const char *log;
};

static void fatal_child(void *arg)
{
    struct fatal_case *c = arg;
    if (mt_start_opts(0, NULL, c->log) != 0)
        _exit(3);
    uint8_t *p;
    if (moat_alloc(NULL, 4 * PG, c->flags, NULL, NULL, (void **)&p) != 0)
        _exit(4);
    if (c->flags & MOAT_COMMIT_NOW)
        moat_uncommit(p, PG);
    *(volatile uint8_t *)(p + c->offset) = 1;
    _exit(5);
}

static void test_fatal_accesses(void **state)
{
    (void)state;
    moat_shutdown();
    char log[256];
    mt_path(log, sizeof log, "fatal.log");
    struct fatal_case reserve = {MOAT_RESERVE, PG, log};
    unlink(log);
    int st = mt_child(fatal_child, &reserve);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV);
    assert_true(mt_file_contains(log, "RESERVE area"));
    assert_true(mt_file_contains(log, "[FATAL]-[fault]"));
    struct fatal_case now = {MOAT_COMMIT_NOW, 0, log};
    unlink(log);
    st = mt_child(fatal_child, &now);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV);
    assert_true(mt_file_contains(log, "uncommitted page"));
    unlink(log);
    mt_start(0);
}

/* m_region_uncommit_ranges: several ranges uncommitted with their frames
 * dropped in one call; bad input refused with nothing done. */
static void test_uncommit_ranges(void **state)
{
    (void)state;
    uint8_t *p;
    assert_int_equal(moat_alloc(NULL, 64 * PG, MOAT_COMMIT_ON_DEMAND, NULL, NULL, (void **)&p), 0);
    for (size_t i = 0; i < 64; i++)
        memset(p + i * PG, (int)i + 1, PG);
    uint64_t committed = MT_STAT(committed_pages), zaps = MT_STAT(zap_calls);
    /* every other pair of pages: 16 ranges of 2 pages */
    struct iovec r[16];
    for (size_t k = 0; k < 16; k++)
        r[k] = (struct iovec){.iov_base = p + 4 * k * PG, .iov_len = 2 * PG};
    /* a bad range anywhere: EINVAL and nothing uncommitted */
    struct iovec bad[2] = {r[0], {.iov_base = p + 1, .iov_len = PG}};
    assert_int_equal(m_region_uncommit_ranges(bad, 2), EINVAL);
    assert_int_equal(p[0], 1);
    assert_int_equal(m_region_uncommit_ranges(r, M_REGION_UNCOMMIT_MAX + 1), EINVAL);
    assert_int_equal(m_region_uncommit_ranges(r, 16), 0);
    assert_int_equal(MT_STAT(committed_pages), committed - 32);
    uint64_t calls = MT_STAT(zap_calls) - zaps;
    /* one process_madvise (6.13 on), else one madvise a range */
    assert_true(calls == 1 || calls == 16 + 1 || calls == 16);
    if (m_zap_vectored())
        assert_int_equal(calls, 1);
    for (size_t i = 0; i < 64; i++) {
        bool gone = (i / 2) % 2 == 0;
        for (size_t b = 0; b < PG; b += 512)
            assert_int_equal(p[i * PG + b], gone ? 0 : (int)i + 1);
    }
    assert_int_equal(moat_dealloc(p, 64 * PG), 0);
}

/* A heap on moat regions gives its free spans back in batches: a purge of
 * many scattered spans drops their frames in a few calls, the spans read as
 * zeros afterwards and the blocks still in use keep their contents. */
static void test_heap_purge_batched(void **state)
{
    (void)state;
    struct moat_heap_config cfg = {.source = MOAT_HEAP_SOURCE_REGION};
    moat_heap *h = NULL;
    assert_int_equal(moat_heap_new(&cfg, &h), 0);
    enum { N = 256, SZ = 40960 }; /* large objects: 10 pages each */
    uint8_t *b[N];
    for (size_t i = 0; i < N; i++) {
        b[i] = moat_heap_malloc(h, SZ);
        assert_non_null(b[i]);
        memset(b[i], (int)(i % 251) + 1, SZ);
    }
    /* free every other block: 128 spans that cannot coalesce */
    for (size_t i = 0; i < N; i += 2)
        moat_heap_free(h, b[i]);
    uint64_t zaps = MT_STAT(zap_calls), committed = MT_STAT(committed_pages);
    size_t back = moat_heap_trim(h);
    uint64_t calls = MT_STAT(zap_calls) - zaps;
    print_message("trim gave back %zu bytes in %llu zap calls\n", back, (unsigned long long)calls);
    assert_true(back >= (size_t)N / 2 * SZ);
    assert_true(MT_STAT(committed_pages) <= committed - N / 2 * SZ / PG);
    if (m_zap_vectored())
        assert_true(calls <= N / 2 / 8); /* batches of up to 32 spans; far from one a span */
    for (size_t i = 0; i < N; i++) {
        int want = i % 2 ? (int)(i % 251) + 1 : 0;
        for (size_t o = 0; o < SZ; o += 4096)
            assert_int_equal(b[i][o], want);
    }
    for (size_t i = 1; i < N; i += 2)
        moat_heap_free(h, b[i]);
    assert_int_equal(moat_heap_destroy(h), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_not_running, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_env, setup, teardown),
        cmocka_unit_test_setup_teardown(test_alloc_flags, setup, teardown),
        cmocka_unit_test_setup_teardown(test_on_demand_first_touch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_commit_now, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reserve_and_fixed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dealloc_split, setup, teardown),
        cmocka_unit_test_setup_teardown(test_commit_data, setup, teardown),
        cmocka_unit_test_setup_teardown(test_permissions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_modify_type, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pin, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fatal_accesses, setup, teardown),
        cmocka_unit_test_setup_teardown(test_uncommit_ranges, setup, teardown),
        cmocka_unit_test_setup_teardown(test_heap_purge_batched, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
