/*
 * test_sgx_mm.c - the drop-in <moat/sgx_mm.h>: Intel's EMM api_tests
 * (intel/linux-sgx sdk/emm/api_tests), ported and run against moat.
 *
 * The program is written against <moat/sgx_mm.h> alone, as enclave code is
 * against <sgx_mm.h>; moat_* is called only to inspect (moat_range) or, in
 * one child, to show that a program may start moat itself.  The scenarios
 * are Intel's: alloc/dealloc, alloc/commit/uncommit, the two "unsafe"
 * sequences, permissions with a handler that raises them on a write fault,
 * commit_data from inside a handler, carving a RESERVE area with FIXED and
 * with hints, running code installed with commit_data(READ_EXEC), and a
 * thread context whose TCS page is made with modify_type.  As in Intel's
 * App, the thread-safe scenarios run in 17 threads at once.  Where moat's
 * documented semantics differ (docs/emm.md), the test expects moat's and
 * says so; test_moat_differences pins each difference.
 *
 * MOAT_RANGE=4G stands for the enclave configuration of Intel's test
 * (ReservedMemMaxSize 0x90000000), so that 2 x 0x90000000 does not fit.
 */
#include <moat/sgx_mm.h>

#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#define SGX_PAGE_SIZE 4096UL
#define PG            SGX_PAGE_SIZE
#define ALLOC_SIZE    0x2000UL
#define NTHREADS      17

#if defined(__SANITIZE_THREAD__)
#define SGX_TEST_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define SGX_TEST_TSAN 1
#endif
#endif
#if defined(SGX_TEST_TSAN)
/* Intel's commit_data handler allocates and frees a page from inside the
 * handler.  moat_alloc may then grow its area table with realloc, which
 * ThreadSanitizer reports as a signal-unsafe call.  For a synchronous fault
 * in ordinary code (no allocator lock held by the faulting thread) that is
 * safe, so exactly that report is suppressed. */
const char *__tsan_default_suppressions(void);
const char *__tsan_default_suppressions(void)
{
    return "signal:tab_reserve\n";
}
#endif

/* ------------------------------------------------------------------------
 * Scenario checks: like Intel's EXPECT_EQ, they print and return 1, so the
 * same scenarios run on the main thread (under cmocka) and in 17 threads.
 * ---------------------------------------------------------------------- */

#define EXPECT_EQ(a, b)                                                                            \
    do {                                                                                           \
        intptr_t a_ = (intptr_t)(a), b_ = (intptr_t)(b);                                           \
        if (a_ != b_) {                                                                            \
            fprintf(stderr, "%s:%d: %s is %#lx, expected %s (%#lx)\n", __FILE__, __LINE__, #a,     \
                    (unsigned long)a_, #b, (unsigned long)b_);                                     \
            return 1;                                                                              \
        }                                                                                          \
    } while (0)

#define EXPECT_NEQ(a, b)                                                                           \
    do {                                                                                           \
        intptr_t a_ = (intptr_t)(a), b_ = (intptr_t)(b);                                           \
        if (a_ == b_) {                                                                            \
            fprintf(stderr, "%s:%d: %s is %#lx, which it must not be\n", __FILE__, __LINE__, #a,   \
                    (unsigned long)a_);                                                            \
            return 1;                                                                              \
        }                                                                                          \
    } while (0)

/* rd / wr - an access that may fault into a handler.  The fence keeps the
 * compiler from reusing values the handler may have changed (struct pf_data)
 * across the access. */
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

static void *page_of(const void *p, size_t i)
{
    return (uint8_t *)p + i * PG;
}

/* Areas one scenario leaves for another thread to free (Intel's
 * allocated_blocks). */
static pthread_mutex_t blocks_lock = PTHREAD_MUTEX_INITIALIZER;
static void *blocks[4 * NTHREADS];
static size_t nblocks;

static void block_queue(void *addr)
{
    pthread_mutex_lock(&blocks_lock);
    if (nblocks < sizeof blocks / sizeof blocks[0])
        blocks[nblocks++] = addr;
    pthread_mutex_unlock(&blocks_lock);
}

/* ------------------------------------------------------------------------
 * Handlers (Intel's permissions_handler and commit_data_handler)
 * ---------------------------------------------------------------------- */

struct pf_data {
    sgx_pfinfo pf;   /* the last fault */
    int access;      /* the access the scenario makes next */
    int magic;       /* the byte commit_data_handler fills pages with */
    void *expected;  /* the page commit_data_handler serves */
    unsigned nfault; /* faults seen */
};

static void *fault_page(const sgx_pfinfo *pf)
{
    return (void *)(uintptr_t)(pf->maddr & ~(uint64_t)(PG - 1));
}

_Noreturn static void handler_failed(const char *what, int err)
{
    fprintf(stderr, "fault handler: %s failed with %d (%s)\n", what, err, strerror(err));
    abort();
}

/* A write fault raises the page to RW; a read fault to whatever the
 * scenario says it reads with.  Anything else is a test failure. */
static int permissions_handler(const sgx_pfinfo *pfinfo, void *private_data)
{
    struct pf_data *pd = private_data;
    pd->pf = *pfinfo;
    pd->nfault++;
    void *page = fault_page(pfinfo);
    int err;
    if (pfinfo->pfec.rw == 1 && pd->access == SGX_EMA_PROT_WRITE)
        err = sgx_mm_modify_permissions(page, PG, SGX_EMA_PROT_READ_WRITE);
    else if (pfinfo->pfec.rw == 0 && (pd->access & SGX_EMA_PROT_READ))
        err = sgx_mm_modify_permissions(page, PG, pd->access);
    else
        handler_failed("an unexpected fault", EFAULT);
    if (err)
        handler_failed("sgx_mm_modify_permissions", err);
    return SGX_MM_EXCEPTION_CONTINUE_EXECUTION;
}

/* The expected page is filled on its first (read) fault by commit_data from
 * a temporary area allocated and freed inside the handler, read-only; a
 * later write fault there raises it to RW. */
static int commit_data_handler(const sgx_pfinfo *pfinfo, void *private_data)
{
    struct pf_data *pd = private_data;
    pd->pf = *pfinfo;
    pd->nfault++;
    void *page = fault_page(pfinfo);
    if (page != pd->expected)
        return SGX_MM_EXCEPTION_CONTINUE_SEARCH;
    int err;
    if (pd->access == SGX_EMA_PROT_WRITE && pfinfo->pfec.rw == 1) {
        err = sgx_mm_modify_permissions(page, PG, SGX_EMA_PROT_READ_WRITE);
        if (err)
            handler_failed("sgx_mm_modify_permissions", err);
        return SGX_MM_EXCEPTION_CONTINUE_EXECUTION;
    }
    void *tmp = NULL;
    err = sgx_mm_alloc(NULL, PG, SGX_EMA_COMMIT_NOW, NULL, NULL, &tmp);
    if (err || !tmp)
        handler_failed("sgx_mm_alloc", err);
    memset(tmp, pd->magic, PG);
    err = sgx_mm_commit_data(page, PG, tmp, SGX_EMA_PROT_READ);
    if (err)
        handler_failed("sgx_mm_commit_data", err);
    err = sgx_mm_dealloc(tmp, PG);
    if (err)
        handler_failed("sgx_mm_dealloc", err);
    return SGX_MM_EXCEPTION_CONTINUE_EXECUTION;
}

/* ------------------------------------------------------------------------
 * Intel's scenarios
 * ---------------------------------------------------------------------- */

static int scenario_alloc_dealloc(void)
{
    EXPECT_EQ(sgx_mm_dealloc(NULL, ALLOC_SIZE), EINVAL);
    void *addr = NULL;
    EXPECT_EQ(sgx_mm_alloc(NULL, ALLOC_SIZE, SGX_EMA_COMMIT_NOW, NULL, NULL, &addr), 0);
    EXPECT_NEQ(addr, NULL);
    uint8_t *d = addr;
    EXPECT_EQ(d[0], 0);
    d[ALLOC_SIZE - 1] = 0x42;
    EXPECT_EQ(d[ALLOC_SIZE - 1], 0x42);
    EXPECT_EQ(sgx_mm_dealloc(addr, ALLOC_SIZE), 0);
    return 0;
}

static int scenario_alloc_commit_uncommit(void)
{
    EXPECT_EQ(sgx_mm_dealloc(NULL, ALLOC_SIZE), EINVAL);
    void *addr = NULL;
    EXPECT_EQ(sgx_mm_alloc(NULL, ALLOC_SIZE, SGX_EMA_COMMIT_NOW, NULL, NULL, &addr), 0);
    EXPECT_NEQ(addr, NULL);
    EXPECT_EQ(sgx_mm_commit(addr, ALLOC_SIZE), 0); /* committed already */
    void *addr1 = NULL;
    EXPECT_EQ(
        sgx_mm_alloc(addr, ALLOC_SIZE, SGX_EMA_COMMIT_NOW | SGX_EMA_FIXED, NULL, NULL, &addr1),
        EEXIST);
    EXPECT_EQ(addr1, NULL); /* out_addr is written on success only */
    uint8_t *d = addr;
    d[0] = 1;
    d[PG] = 2;
    EXPECT_EQ(sgx_mm_uncommit(addr, ALLOC_SIZE), 0);
    EXPECT_EQ(sgx_mm_uncommit(addr, ALLOC_SIZE), 0); /* nothing left to uncommit: fine */
    EXPECT_EQ(sgx_mm_commit(addr, ALLOC_SIZE), 0);   /* re-commit a COMMIT_NOW area */
    EXPECT_EQ(d[0], 0);                              /* fresh pages */
    EXPECT_EQ(d[PG], 0);
    block_queue(addr); /* freed by whichever thread runs scenario_dealloc next */
    return 0;
}

static int scenario_dealloc(void)
{
    int failures = 0;
    pthread_mutex_lock(&blocks_lock);
    size_t kept = 0;
    for (size_t i = 0; i < nblocks; i++) {
        int err = sgx_mm_dealloc(blocks[i], ALLOC_SIZE);
        if (err) {
            fprintf(stderr, "dealloc of a queued block %p failed: %d\n", blocks[i], err);
            failures++;
            blocks[kept++] = blocks[i];
        }
    }
    nblocks = kept;
    pthread_mutex_unlock(&blocks_lock);
    return failures;
}

static int scenario_permissions(bool then_dealloc)
{
    struct pf_data pd;
    memset(&pd, 0, sizeof pd);
    void *addr = NULL;
    EXPECT_EQ(sgx_mm_alloc(NULL, ALLOC_SIZE, SGX_EMA_COMMIT_NOW, permissions_handler, &pd, &addr),
              0);
    EXPECT_NEQ(addr, NULL);
    uint8_t *data = addr;
    EXPECT_EQ(rd(data), 0);
    EXPECT_EQ(pd.pf.pfec.errcd, 0); /* read without a fault */
    wr(data, 0xFF);
    EXPECT_EQ(pd.pf.pfec.errcd, 0); /* write without a fault */

    /* reduce the first page to R */
    EXPECT_EQ(sgx_mm_modify_permissions(addr, ALLOC_SIZE / 2, SGX_EMA_PROT_READ), 0);
    pd.access = SGX_EMA_PROT_READ;
    EXPECT_EQ(rd(data), 0xFF);
    EXPECT_EQ(pd.pf.pfec.errcd, 0); /* read without a fault */
    pd.access = SGX_EMA_PROT_WRITE;
    wr(data + ALLOC_SIZE - 1, 0xFF); /* the second page is still RW */
    EXPECT_EQ(pd.pf.pfec.errcd, 0);  /* write without a fault */

    /* a write to the R page faults into the handler, which raises it */
    wr(data, 0xFE);
    EXPECT_NEQ(pd.pf.pfec.errcd, 0);
    EXPECT_EQ(pd.pf.pfec.rw, 1);
    EXPECT_EQ(pd.pf.pfec.p, 1); /* committed: a permission fault */
    EXPECT_EQ(pd.pf.pfec.sgx, 1);
    EXPECT_EQ(pd.pf.maddr, (uintptr_t)addr);
    EXPECT_EQ(pd.nfault, 1);
    EXPECT_EQ(rd(data), 0xFE);

    memset(&pd, 0, sizeof pd);
    pd.access = SGX_EMA_PROT_READ | SGX_EMA_PROT_EXEC;
    if (then_dealloc) {
        EXPECT_EQ(sgx_mm_dealloc(addr, ALLOC_SIZE), 0);
        EXPECT_EQ(pd.pf.pfec.errcd, 0); /* dealloc raised no fault */
    } else {
        block_queue(addr);
    }
    return 0;
}

#if defined(__x86_64__)
/* mov eax, 0x600d; ret */
static const uint8_t returns_600d[] = {0xb8, 0x0d, 0x60, 0x00, 0x00, 0xc3};
#endif

/* alone: no other thread allocates meanwhile, so freed places stay free */
static int scenario_commit_data(bool alone)
{
    struct pf_data pd;
    memset(&pd, 0, sizeof pd);
    void *addr = NULL;
    EXPECT_EQ(
        sgx_mm_alloc(NULL, ALLOC_SIZE, SGX_EMA_COMMIT_ON_DEMAND, commit_data_handler, &pd, &addr),
        0);
    EXPECT_NEQ(addr, NULL);
    pd.expected = addr;
    pd.magic = 0x55;

    /* the first read faults; the handler installs 0x55 read-only */
    uint8_t *data = addr;
    for (size_t i = 0; i < PG; i++)
        EXPECT_EQ(rd(data + i), 0x55);
    EXPECT_NEQ(pd.pf.pfec.errcd, 0);
    EXPECT_EQ(pd.pf.pfec.rw, 0);
    EXPECT_EQ(pd.pf.pfec.p, 0); /* not committed */
    EXPECT_EQ(pd.nfault, 1);

    /* a write faults again (the page is R); the handler raises it */
    pd.access = SGX_EMA_PROT_WRITE;
    wr(data, 0xFF);
    EXPECT_NEQ(pd.pf.pfec.errcd, 0);
    EXPECT_EQ(pd.pf.pfec.rw, 1);
    EXPECT_EQ(pd.pf.pfec.p, 1);
    EXPECT_EQ(pd.nfault, 2);

    /* commit_data straight onto the second page, from the first */
    void *ptr = page_of(addr, 1);
    EXPECT_EQ(sgx_mm_commit_data(ptr, PG, addr, SGX_EMA_PROT_READ), 0);
    EXPECT_EQ(memcmp(ptr, addr, PG), 0);
    EXPECT_EQ(pd.nfault, 2);

    /* carving a RESERVE area of 13 pages */
    void *pages13[13];
    memset(pages13, 0, sizeof pages13);
    EXPECT_EQ(sgx_mm_alloc(NULL, 13 * PG, SGX_EMA_RESERVE, NULL, NULL, &pages13[0]), 0);
    EXPECT_NEQ(pages13[0], NULL);
    void *base = pages13[0];
    /* -x----------- */
    EXPECT_EQ(sgx_mm_alloc(page_of(base, 1), PG, SGX_EMA_COMMIT_ON_DEMAND | SGX_EMA_FIXED, NULL,
                           NULL, &pages13[1]),
              0);
    EXPECT_EQ(pages13[1], page_of(base, 1));
    EXPECT_EQ(sgx_mm_commit_data(base, PG, addr, SGX_EMA_PROT_READ), EACCES); /* RESERVE */
    EXPECT_EQ(sgx_mm_commit_data(pages13[1], PG, addr, SGX_EMA_PROT_READ), 0);
    EXPECT_EQ(memcmp(addr, pages13[1], PG), 0);
    /* -d----------- committed already: EACCES (as in Intel's: the page is R) */
    EXPECT_EQ(sgx_mm_commit_data(pages13[1], PG, addr, SGX_EMA_PROT_READ), EACCES);
    EXPECT_EQ(sgx_mm_alloc(base, 4 * PG, SGX_EMA_COMMIT_ON_DEMAND | SGX_EMA_FIXED, NULL, NULL,
                           &pages13[0]),
              EEXIST); /* spans a non-RESERVE area */
    EXPECT_EQ(pages13[0], base);
    EXPECT_EQ(
        sgx_mm_alloc(base, PG, SGX_EMA_COMMIT_ON_DEMAND | SGX_EMA_FIXED, NULL, NULL, &pages13[0]),
        0);
    EXPECT_EQ(pages13[0], base);
    /* xd----------- */
    EXPECT_EQ(sgx_mm_commit_data(base, PG, addr, SGX_EMA_PROT_READ), 0);
    /* dd----------- */
    EXPECT_EQ(sgx_mm_alloc(page_of(base, 2), 2 * PG, SGX_EMA_COMMIT_ON_DEMAND | SGX_EMA_FIXED, NULL,
                           NULL, &pages13[2]),
              0);
    EXPECT_EQ(pages13[2], page_of(base, 2));
    /* ddxx--------- (the source's second page is the R copy made above) */
    EXPECT_EQ(sgx_mm_commit_data(pages13[2], 2 * PG, addr, SGX_EMA_PROT_READ), 0);
    EXPECT_EQ(memcmp(addr, pages13[2], 2 * PG), 0);
    /* dddd--------- hints inside the reserve are honoured exactly */
    for (size_t i = 7; i < 11; i++) {
        EXPECT_EQ(
            sgx_mm_alloc(page_of(base, i), PG, SGX_EMA_COMMIT_ON_DEMAND, NULL, NULL, &pages13[i]),
            0);
        EXPECT_EQ(pages13[i], page_of(base, i));
    }
    /* dddd---xxxx-- one commit_data over four adjacent areas */
    EXPECT_EQ(sgx_mm_commit_data(pages13[7], 4 * PG, base, SGX_EMA_PROT_READ), 0);
    EXPECT_EQ(memcmp(pages13[7], base, 4 * PG), 0);
    /* dddd---dddd-- */
#if defined(__x86_64__)
    EXPECT_EQ(sgx_mm_modify_permissions(base, PG, SGX_EMA_PROT_READ_WRITE), 0);
    memcpy(base, returns_600d, sizeof returns_600d);
    EXPECT_EQ(
        sgx_mm_alloc(page_of(base, 12), PG, SGX_EMA_COMMIT_ON_DEMAND, NULL, NULL, &pages13[12]), 0);
    EXPECT_EQ(pages13[12], page_of(base, 12));
    /* dddd---ddddx- (Intel's test does not check this result; we do) */
    EXPECT_EQ(sgx_mm_commit_data(pages13[12], PG, base, SGX_EMA_PROT_READ_EXEC), 0);
    int (*fn)(void);
    void *code = pages13[12];
    memcpy(&fn, &code, sizeof fn);
    EXPECT_EQ(fn(), 0x600d);
    /* dddd---ddddc- */
#endif
    /* a mix of RESERVE remnants and carved areas, freed in one call */
    EXPECT_EQ(sgx_mm_dealloc(base, 13 * PG), 0);
    if (alone)
        EXPECT_EQ(sgx_mm_dealloc(base, 13 * PG), EINVAL); /* all gone */
    EXPECT_EQ(sgx_mm_dealloc(addr, ALLOC_SIZE), 0);
    EXPECT_EQ(pd.nfault, 2);
    return 0;
}

static int scenario_unsafe1(void)
{
    EXPECT_EQ(sgx_mm_dealloc(NULL, ALLOC_SIZE), EINVAL);
    void *addr = NULL;
    EXPECT_EQ(sgx_mm_alloc(NULL, ALLOC_SIZE, SGX_EMA_COMMIT_NOW, NULL, NULL, &addr), 0);
    EXPECT_NEQ(addr, NULL);
    EXPECT_EQ(sgx_mm_commit(addr, ALLOC_SIZE), 0);
    void *addr1 = NULL;
    EXPECT_EQ(
        sgx_mm_alloc(addr, ALLOC_SIZE, SGX_EMA_COMMIT_NOW | SGX_EMA_FIXED, NULL, NULL, &addr1),
        EEXIST);
    EXPECT_EQ(addr1, NULL);
    EXPECT_EQ(sgx_mm_uncommit(addr, ALLOC_SIZE), 0);
    EXPECT_EQ(sgx_mm_uncommit(addr, ALLOC_SIZE), 0);
    EXPECT_EQ(sgx_mm_commit(addr, ALLOC_SIZE), 0);
    EXPECT_EQ(sgx_mm_dealloc(addr, ALLOC_SIZE), 0);
    EXPECT_EQ(sgx_mm_dealloc(addr, ALLOC_SIZE), EINVAL);  /* already freed */
    EXPECT_EQ(sgx_mm_uncommit(addr, ALLOC_SIZE), EINVAL); /* likewise */

    void *addr2 = NULL;
    EXPECT_EQ(sgx_mm_alloc(addr, ALLOC_SIZE, SGX_EMA_COMMIT_ON_DEMAND | SGX_EMA_FIXED, NULL, NULL,
                           &addr2),
              0);
    EXPECT_EQ(addr2, addr); /* the freed place, exactly */
    EXPECT_EQ(sgx_mm_dealloc(addr, ALLOC_SIZE), 0);
    EXPECT_EQ(sgx_mm_alloc(addr, ALLOC_SIZE, SGX_EMA_COMMIT_ON_DEMAND | SGX_EMA_FIXED, NULL, NULL,
                           &addr2),
              0);
    EXPECT_EQ(addr2, addr);
    /* the same place without FIXED is a hint over a taken place: elsewhere */
    EXPECT_EQ(sgx_mm_alloc(addr, ALLOC_SIZE, SGX_EMA_COMMIT_ON_DEMAND, NULL, NULL, &addr2), 0);
    EXPECT_NEQ(addr2, addr);
    volatile uint8_t *data = addr2;
    data[0] = 0xFF; /* committed on demand */
    data[ALLOC_SIZE - 1] = 0xFF;
    EXPECT_EQ(data[0], 0xFF);
    EXPECT_EQ(data[ALLOC_SIZE - 1], 0xFF);
    EXPECT_EQ(data[1], 0);
    EXPECT_EQ(sgx_mm_dealloc(addr, ALLOC_SIZE), 0);
    EXPECT_EQ(sgx_mm_dealloc(addr2, ALLOC_SIZE), 0);
    return 0;
}

static int scenario_unsafe2(void)
{
    EXPECT_EQ(sgx_mm_dealloc(NULL, ALLOC_SIZE), EINVAL);
    void *addr = NULL;
    EXPECT_EQ(sgx_mm_alloc(NULL, ALLOC_SIZE, SGX_EMA_COMMIT_NOW, NULL, NULL, &addr), 0);
    EXPECT_NEQ(addr, NULL);
    /* Intel's test assumes free space follows the block; so do we, checked */
    EXPECT_EQ(sgx_mm_dealloc((uint8_t *)addr + ALLOC_SIZE, ALLOC_SIZE), EINVAL);
    EXPECT_EQ(sgx_mm_commit(addr, ALLOC_SIZE), 0);
    void *addr1 = NULL;
    EXPECT_EQ(
        sgx_mm_alloc(addr, ALLOC_SIZE, SGX_EMA_COMMIT_NOW | SGX_EMA_FIXED, NULL, NULL, &addr1),
        EEXIST);
    EXPECT_EQ(addr1, NULL);
    EXPECT_EQ(sgx_mm_uncommit(addr, 2 * ALLOC_SIZE), EINVAL); /* trailing hole */
    EXPECT_EQ(sgx_mm_uncommit(addr, ALLOC_SIZE), 0);
    EXPECT_EQ(sgx_mm_commit(addr, ALLOC_SIZE), 0);
    EXPECT_EQ(sgx_mm_dealloc(addr, 2 * ALLOC_SIZE), 0); /* holes are fine for dealloc */
    EXPECT_EQ(sgx_mm_dealloc(addr, ALLOC_SIZE), EINVAL);
    const size_t max_size = 0x90000000; /* the "enclave" configuration */
    void *big = NULL;
    EXPECT_EQ(sgx_mm_alloc(NULL, max_size * 2, SGX_EMA_COMMIT_NOW, NULL, NULL, &big), ENOMEM);
    EXPECT_EQ(big, NULL);
    return 0;
}

/* Intel SDK thread context: 16 guard | 5 stack | 16 guard | TCS | 2 SSA |
 * 16 guard | TLS, carved out of one RESERVE area.  There is no EENTER here;
 * what the TCS page must be afterwards is checked instead. */
#define CTX_PAGES (16 * 3 + 5 + 1 + 2 + 1)

static int scenario_alloc_context(void **tcs_out)
{
    void *addr = NULL, *tmp = NULL;
    EXPECT_EQ(sgx_mm_alloc(NULL, CTX_PAGES * PG, SGX_EMA_RESERVE, NULL, NULL, &addr), 0);
    EXPECT_NEQ(addr, NULL);
    void *stack = page_of(addr, 16);
    EXPECT_EQ(sgx_mm_alloc(stack, 5 * PG, SGX_EMA_COMMIT_NOW | SGX_EMA_FIXED, NULL, NULL, &tmp), 0);
    EXPECT_EQ(tmp, stack);
    void *tcs = page_of(addr, 37);
    EXPECT_EQ(sgx_mm_alloc(tcs, PG, SGX_EMA_COMMIT_NOW | SGX_EMA_FIXED, NULL, NULL, &tmp), 0);
    EXPECT_EQ(tmp, tcs);
    void *ssa = page_of(tcs, 1);
    EXPECT_EQ(sgx_mm_alloc(ssa, 2 * PG, SGX_EMA_COMMIT_NOW | SGX_EMA_FIXED, NULL, NULL, &tmp), 0);
    EXPECT_EQ(tmp, ssa);
    void *tls = page_of(ssa, 18);
    EXPECT_EQ(sgx_mm_alloc(tls, PG, SGX_EMA_COMMIT_NOW | SGX_EMA_FIXED, NULL, NULL, &tmp), 0);
    EXPECT_EQ(tmp, tls);

    /* fill in the TCS fields (reserved, oentry, ossa, cssa, nssa, ...) */
    uint64_t *t = tcs;
    t[2] = 0x1000;                                  /* oentry */
    t[3] = (uintptr_t)ssa - (uintptr_t)addr;        /* ossa */
    t[4] = 2ULL << 32;                              /* cssa 0, nssa 2 */
    t[6] = t[7] = (uintptr_t)tls - (uintptr_t)addr; /* ofs_base, ogs_base */
    EXPECT_EQ(sgx_mm_modify_type(tcs, PG, SGX_EMA_PAGE_TYPE_TCS), 0);

    /* what EENTER would rely on: the TCS is fixed and the rest still works */
    EXPECT_EQ(sgx_mm_modify_type(tcs, PG, SGX_EMA_PAGE_TYPE_TCS), 0); /* already TCS */
    EXPECT_EQ(sgx_mm_modify_permissions(tcs, PG, SGX_EMA_PROT_READ_WRITE), EPERM);
    EXPECT_EQ(sgx_mm_commit(tcs, PG), EACCES);
    EXPECT_EQ(sgx_mm_commit_data(tcs, PG, stack, SGX_EMA_PROT_READ), EINVAL); /* COMMIT_NOW */
    uint8_t *s = stack, *a = ssa, *l = tls;
    s[5 * PG - 1] = 1;
    a[2 * PG - 1] = 2;
    l[0] = 3;
    EXPECT_EQ(s[5 * PG - 1] + a[2 * PG - 1] + l[0], 6);
    *tcs_out = tcs;
    return 0;
}

static int scenario_dealloc_context(void *tcs)
{
    void *base = (uint8_t *)tcs - 37 * PG;
    EXPECT_EQ(sgx_mm_dealloc(base, CTX_PAGES * PG), 0);
    return 0;
}

/* Intel's ecall_test_sgx_mm followed by its test_tcs, for one thread. */
static int scenario_thread_safe(unsigned sid)
{
    unsigned seed = sid;
    usleep((unsigned)rand_r(&seed) % 11);
    int failures = scenario_alloc_dealloc();
    failures += scenario_alloc_commit_uncommit();
    failures += scenario_permissions(false);
    failures += scenario_permissions(true);
    failures += scenario_commit_data(false);
    failures += scenario_dealloc();
    usleep((unsigned)rand_r(&seed) % 11);
    void *tcs = NULL;
    int f = scenario_alloc_context(&tcs);
    failures += f;
    if (!f)
        failures += scenario_dealloc_context(tcs);
    if (failures)
        fprintf(stderr, "!!! %d failure(s) in thread %u\n", failures, sid);
    return failures;
}

/* ------------------------------------------------------------------------
 * cmocka tests
 * ---------------------------------------------------------------------- */

static const char *test_dir(void)
{
    const char *d = getenv("MOAT_TEST_TMP");
    return d && *d ? d : "/tmp";
}

static bool file_contains(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    return strstr(buf, needle) != NULL;
}

static int run_child(int (*fn)(const char *), const char *arg)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0)
        _exit(fn(arg));
    int status = 0;
    waitpid(pid, &status, 0);
    return status;
}

/* The first call starts moat from the environment; a failure is returned
 * by every call and logged.  Runs in a child, before this process starts
 * moat. */
static int child_start_fails(const char *log)
{
    setenv("MOAT_STORE", "nosuch://x", 1);
    setenv("MOAT_LOG_FILE", log, 1);
    void *p = NULL;
    if (sgx_mm_alloc(NULL, PG, SGX_EMA_COMMIT_NOW, NULL, NULL, &p) != EINVAL || p)
        return 10;
    if (sgx_mm_commit((void *)0x10000, PG) != EINVAL) /* every later call: the same error */
        return 11;
    return 0;
}

/* A program may start moat itself with its own options first. */
static int child_started_by_program(const char *unused)
{
    (void)unused;
    struct moat_options o = {.range_size = 1ULL << 30, .log_level = -1};
    if (moat_init(&o) != 0)
        return 20;
    void *p = NULL;
    if (sgx_mm_alloc(NULL, PG, SGX_EMA_COMMIT_NOW, NULL, NULL, &p) != 0 || !p)
        return 21;
    void *base;
    size_t size;
    if (moat_range(&base, &size) != 0 || size != 1ULL << 30)
        return 22; /* the drop-in did not start a second, default engine */
    if ((uintptr_t)p < (uintptr_t)base || (uintptr_t)p >= (uintptr_t)base + size)
        return 23;
    *(volatile uint8_t *)p = 1;
    return sgx_mm_dealloc(p, PG) == 0 ? 0 : 24;
}

static void test_first_call_starts_moat(void **state)
{
    (void)state;
    char log[512];
    snprintf(log, sizeof log, "%s/moat-test-%d-sgx-start.log", test_dir(), (int)getpid());
    unlink(log);
    int st = run_child(child_start_fails, log);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    assert_true(file_contains(log, "[ERROR]-[store]"));
    assert_true(file_contains(log, "[ERROR]-[sgx_mm] - cannot start moat from the environment"));
    unlink(log);
    st = run_child(child_started_by_program, NULL);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

/* Intel's values, literally, and Intel's pfinfo layout. */
static void test_abi(void **state)
{
    (void)state;
    assert_int_equal(SGX_EMA_ALLOC_FLAGS_SHIFT, 0);
    assert_int_equal(SGX_EMA_ALLOC_FLAGS(3), 3);
    assert_int_equal(SGX_EMA_ALLOC_FLAGS_MASK, 0xFF);
    assert_int_equal(SGX_EMA_RESERVE, 0x1);
    assert_int_equal(SGX_EMA_COMMIT_NOW, 0x2);
    assert_int_equal(SGX_EMA_COMMIT_ON_DEMAND, 0x4);
    assert_int_equal(SGX_EMA_GROWSDOWN, 0x10);
    assert_int_equal(SGX_EMA_GROWSUP, 0x20);
    assert_int_equal(SGX_EMA_FIXED, 0x40);
    assert_int_equal(SGX_EMA_PAGE_TYPE_SHIFT, 8);
    assert_int_equal(SGX_EMA_PAGE_TYPE(3), 0x300);
    assert_int_equal(SGX_EMA_PAGE_TYPE_MASK, 0xFF00);
    assert_int_equal(SGX_EMA_PAGE_TYPE_TCS, 0x100);
    assert_int_equal(SGX_EMA_PAGE_TYPE_REG, 0x200);
    assert_int_equal(SGX_EMA_PAGE_TYPE_TRIM, 0x400);
    assert_int_equal(SGX_EMA_PAGE_TYPE_SS_FIRST, 0x500);
    assert_int_equal(SGX_EMA_PAGE_TYPE_SS_REST, 0x600);
    assert_int_equal(SGX_EMA_ALIGNMENT_SHIFT, 24);
    assert_int_equal(SGX_EMA_ALIGNED(21), 0x15000000u);
    assert_int_equal(SGX_EMA_ALIGNMENT_MASK, 0xFF000000u);
    assert_int_equal(SGX_EMA_ALIGNMENT_64KB, 0x10000000u);
    assert_int_equal(SGX_EMA_ALIGNMENT_16MB, 0x18000000u);
    assert_int_equal(SGX_EMA_ALIGNMENT_4GB, 0x20000000u);
    assert_int_equal(SGX_EMA_PROT_NONE, 0);
    assert_int_equal(SGX_EMA_PROT_READ, 1);
    assert_int_equal(SGX_EMA_PROT_WRITE, 2);
    assert_int_equal(SGX_EMA_PROT_EXEC, 4);
    assert_int_equal(SGX_EMA_PROT_READ_WRITE, 3);
    assert_int_equal(SGX_EMA_PROT_READ_EXEC, 5);
    assert_int_equal(SGX_EMA_PROT_MASK, 7);
    assert_int_equal(SGX_MM_EXCEPTION_CONTINUE_SEARCH, 0);
    assert_int_equal(SGX_MM_EXCEPTION_CONTINUE_EXECUTION, -1);

    /* the layout, field by field and bit by bit */
    assert_int_equal(sizeof(sgx_pfinfo), 16);
    assert_int_equal(offsetof(struct _sgx_pfinfo, maddr), 0);
    assert_int_equal(offsetof(sgx_pfinfo, pfec), 8);
    assert_int_equal(offsetof(sgx_pfinfo, reserved), 12);
    union _pfec e;
    e.errcd = 1u << 0;
    assert_true(e.p == 1 && e.rw == 0 && e.sgx == 0);
    e.errcd = 1u << 1;
    assert_true(e.p == 0 && e.rw == 1 && e.sgx == 0);
    e.errcd = 1u << 15;
    assert_true(e.p == 0 && e.rw == 0 && e.sgx == 1);
    e.errcd = 0xFFFF7FFCu; /* every other bit */
    assert_true(e.p == 0 && e.rw == 0 && e.sgx == 0);
    /* one handler type: a handler written for either API is the other's */
    sgx_enclave_fault_handler_t h = permissions_handler;
    moat_fault_handler_t m = h;
    assert_true(m == permissions_handler);
    assert_int_equal(_Generic(h, moat_fault_handler_t : 1, default : 0), 1);
}

/*
 * cmocka installs its own SIGSEGV handler around every test and fixture and
 * puts back the one it found afterwards, so moat's handler - installed when
 * the first sgx_mm_* call starts moat, inside some test - would be gone from
 * the next test on, and with it every custom fault handler.  The first call
 * is therefore made here; moat's handler is kept and installed again at the
 * start of each test that touches moat memory.  Faults that are not moat's
 * go on to cmocka's handler, which fails the test.
 */
static struct sigaction moat_segv;
static bool have_moat_segv;

static void use_moat(void)
{
    if (!have_moat_segv) {
        struct sigaction before;
        sigaction(SIGSEGV, NULL, &before);
        void *p = NULL;
        assert_int_equal(sgx_mm_alloc(NULL, PG, SGX_EMA_COMMIT_NOW, NULL, NULL, &p), 0);
        assert_int_equal(sgx_mm_dealloc(p, PG), 0);
        sigaction(SIGSEGV, NULL, &moat_segv);
        assert_true((moat_segv.sa_flags & SA_SIGINFO) &&
                    moat_segv.sa_sigaction != before.sa_sigaction);
        have_moat_segv = true;
    }
    sigaction(SIGSEGV, &moat_segv, NULL);
}

static void test_alloc_dealloc(void **state)
{
    (void)state;
    use_moat();
    assert_int_equal(scenario_alloc_dealloc(), 0);
}

static void test_alloc_commit_uncommit(void **state)
{
    (void)state;
    use_moat();
    assert_int_equal(scenario_alloc_commit_uncommit(), 0);
    assert_int_equal(scenario_alloc_commit_uncommit(), 0);
    assert_int_equal(scenario_dealloc(), 0);
    assert_int_equal(nblocks, 0);
}

static void test_unsafe1(void **state)
{
    (void)state;
    use_moat();
    assert_int_equal(scenario_unsafe1(), 0);
}

static void test_unsafe2(void **state)
{
    (void)state;
    use_moat();
    assert_int_equal(scenario_unsafe2(), 0);
}

static void test_permissions(void **state)
{
    (void)state;
    use_moat();
    assert_int_equal(scenario_permissions(false), 0);
    assert_int_equal(scenario_permissions(true), 0);
    assert_int_equal(scenario_dealloc(), 0);
}

static void test_commit_data(void **state)
{
    (void)state;
    use_moat();
    assert_int_equal(scenario_commit_data(true), 0);
}

static sigjmp_buf probe_jmp;
static void probe_on_segv(int sig)
{
    (void)sig;
    siglongjmp(probe_jmp, 1);
}

/* readable - does reading p fault?  Replaces the SIGSEGV handler for a
 * moment, so single-threaded only, and only for areas without a custom
 * handler. */
static bool readable(const void *p)
{
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = probe_on_segv;
    sa.sa_flags = SA_NODEFER;
    sigaction(SIGSEGV, &sa, &old);
    bool ok = false;
    if (sigsetjmp(probe_jmp, 1) == 0) {
        (void)*(const volatile uint8_t *)p;
        ok = true;
    }
    sigaction(SIGSEGV, &old, NULL);
    return ok;
}

static void test_thread_context(void **state)
{
    (void)state;
    use_moat();
    void *tcs = NULL;
    assert_int_equal(scenario_alloc_context(&tcs), 0);
    /* a TCS page is not accessible to the code that uses it */
    assert_false(readable(tcs));
    assert_true(readable((uint8_t *)tcs + PG)); /* its SSA is */
    assert_int_equal(scenario_dealloc_context(tcs), 0);
    assert_int_equal(sgx_mm_modify_type(tcs, PG, SGX_EMA_PAGE_TYPE_TCS), EINVAL); /* gone */
}

static void *thread_main(void *arg)
{
    return (void *)(intptr_t)scenario_thread_safe((unsigned)(uintptr_t)arg);
}

/* Intel's App: the thread-safe scenarios in 17 threads at once, then the
 * unsafe ones on one thread. */
static void test_17_threads(void **state)
{
    (void)state;
    use_moat();
    pthread_t t[NTHREADS];
    for (uintptr_t i = 0; i < NTHREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, thread_main, (void *)i), 0);
    intptr_t failures = 0;
    for (size_t i = 0; i < NTHREADS; i++) {
        void *r;
        pthread_join(t[i], &r);
        failures += (intptr_t)r;
    }
    assert_int_equal(failures, 0);
    assert_int_equal(scenario_dealloc(), 0); /* blocks queued after the last dealloc ran */
    assert_int_equal(nblocks, 0);
    assert_int_equal(scenario_unsafe1(), 0);
    assert_int_equal(scenario_unsafe2(), 0);
}

/* Each deliberate difference from Intel's EMM (docs/emm.md), pinned. */
static void test_moat_differences(void **state)
{
    (void)state;
    use_moat();
    void *p = NULL, *r = NULL;
    /* alloc: zero length, TRIM, TCS/SS_* without COMMIT_NOW, both GROWS*,
     * FIXED without an address: EINVAL (Intel accepts them) */
    assert_int_equal(sgx_mm_alloc(NULL, 0, SGX_EMA_COMMIT_NOW, NULL, NULL, &p), EINVAL);
    assert_int_equal(
        sgx_mm_alloc(NULL, PG, SGX_EMA_COMMIT_NOW | SGX_EMA_PAGE_TYPE_TRIM, NULL, NULL, &p),
        EINVAL);
    assert_int_equal(
        sgx_mm_alloc(NULL, PG, SGX_EMA_COMMIT_ON_DEMAND | SGX_EMA_PAGE_TYPE_TCS, NULL, NULL, &p),
        EINVAL);
    assert_int_equal(
        sgx_mm_alloc(NULL, PG, SGX_EMA_RESERVE | SGX_EMA_PAGE_TYPE_SS_FIRST, NULL, NULL, &p),
        EINVAL);
    assert_int_equal(sgx_mm_alloc(NULL, PG, SGX_EMA_COMMIT_ON_DEMAND | SGX_EMA_PAGE_TYPE_SS_REST,
                                  NULL, NULL, &p),
                     EINVAL);
    assert_int_equal(
        sgx_mm_alloc(NULL, 2 * PG, SGX_EMA_COMMIT_NOW | SGX_EMA_PAGE_TYPE_SS_FIRST, NULL, NULL, &p),
        EINVAL); /* the first shadow-stack page is one page */
    assert_int_equal(sgx_mm_alloc(NULL, PG,
                                  SGX_EMA_COMMIT_NOW | SGX_EMA_GROWSDOWN | SGX_EMA_GROWSUP, NULL,
                                  NULL, &p),
                     EINVAL);
    assert_int_equal(sgx_mm_alloc(NULL, PG, SGX_EMA_COMMIT_NOW | SGX_EMA_FIXED, NULL, NULL, &p),
                     EINVAL);
    assert_null(p);
    /* ... and the page types that are accepted, with COMMIT_NOW */
    assert_int_equal(
        sgx_mm_alloc(NULL, PG, SGX_EMA_COMMIT_NOW | SGX_EMA_PAGE_TYPE_SS_FIRST, NULL, NULL, &p), 0);
    assert_int_equal(sgx_mm_dealloc(p, PG), 0);
    assert_int_equal(
        sgx_mm_alloc(NULL, PG, SGX_EMA_COMMIT_NOW | SGX_EMA_PAGE_TYPE_TCS, NULL, NULL, &p), 0);
    assert_false(readable(p));
    assert_int_equal(sgx_mm_modify_type(p, PG, SGX_EMA_PAGE_TYPE_TCS), 0);
    assert_int_equal(sgx_mm_dealloc(p, PG), 0);

    /* commit_data on a committed page that is still RW: EACCES (Intel:
     * EINVAL); on one made R: EACCES in both */
    uint8_t *d;
    uint8_t src[PG + 1];
    memset(src, 0x3c, sizeof src);
    assert_int_equal(sgx_mm_alloc(NULL, 4 * PG, SGX_EMA_COMMIT_ON_DEMAND, NULL, NULL, (void **)&d),
                     0);
    /* the source may be anywhere, unaligned (Intel: a page-aligned source
     * inside the enclave, else EINVAL) */
    assert_int_equal(sgx_mm_commit_data(d + PG, PG, src + 1, SGX_EMA_PROT_READ_WRITE), 0);
    assert_int_equal(d[PG + 4095], 0x3c);
    assert_int_equal(sgx_mm_commit_data(d + PG, PG, src, SGX_EMA_PROT_READ), EACCES);
    assert_int_equal(sgx_mm_commit(d, PG), 0);
    assert_int_equal(sgx_mm_commit_data(d, PG, src, SGX_EMA_PROT_READ), EACCES);
    assert_int_equal(sgx_mm_commit_data(d + 2 * PG, PG, NULL, SGX_EMA_PROT_READ), EINVAL);
    /* prot bits outside the mask: EINVAL (Intel passes them on) */
    assert_int_equal(sgx_mm_modify_permissions(d, PG, 0x8), EINVAL);
    /* misaligned dealloc: EINVAL (Intel does not check) */
    assert_int_equal(sgx_mm_dealloc(d + 1, PG), EINVAL);
    assert_int_equal(sgx_mm_dealloc(d, 4 * PG), 0);

    /* dealloc of part of a RESERVE area splits it (Intel frees it whole) */
    assert_int_equal(sgx_mm_alloc(NULL, 4 * PG, SGX_EMA_RESERVE, NULL, NULL, &r), 0);
    assert_int_equal(sgx_mm_dealloc(page_of(r, 1), 2 * PG), 0);
    assert_int_equal(sgx_mm_commit(r, PG), EACCES);             /* still RESERVE */
    assert_int_equal(sgx_mm_commit(page_of(r, 3), PG), EACCES); /* still RESERVE */
    assert_int_equal(sgx_mm_commit(page_of(r, 1), PG), EINVAL); /* free */
    assert_int_equal(sgx_mm_alloc(page_of(r, 1), 2 * PG, SGX_EMA_COMMIT_ON_DEMAND | SGX_EMA_FIXED,
                                  NULL, NULL, &p),
                     0);
    assert_ptr_equal(p, page_of(r, 1));

    /* FIXED over RESERVE areas with a free gap between them: carved (Intel:
     * EEXIST) */
    void *r2 = NULL, *f = NULL;
    assert_int_equal(sgx_mm_alloc(NULL, 8 * PG, SGX_EMA_RESERVE, NULL, NULL, &r2), 0);
    assert_int_equal(sgx_mm_dealloc(page_of(r2, 3), 2 * PG), 0);
    assert_int_equal(
        sgx_mm_alloc(page_of(r2, 2), 4 * PG, SGX_EMA_COMMIT_NOW | SGX_EMA_FIXED, NULL, NULL, &f),
        0);
    assert_ptr_equal(f, page_of(r2, 2));
    wr(page_of(r2, 5), 1);
    assert_int_equal(sgx_mm_commit(r2, PG), EACCES); /* the rest is still RESERVE */
    assert_int_equal(sgx_mm_dealloc(r2, 8 * PG), 0);

    /* a hole at the start of a range: EINVAL (Intel ignores it) */
    assert_int_equal(sgx_mm_dealloc(r, PG), 0); /* [r] is a hole now */
    assert_int_equal(sgx_mm_commit(r, 2 * PG), EINVAL);
    assert_int_equal(sgx_mm_uncommit(r, 2 * PG), EINVAL);
    assert_int_equal(sgx_mm_commit(p, 2 * PG), 0);
    assert_int_equal(sgx_mm_modify_permissions(r, 2 * PG, SGX_EMA_PROT_READ), EINVAL);
    assert_int_equal(sgx_mm_commit_data(r, 2 * PG, src, SGX_EMA_PROT_READ), EINVAL);
    assert_int_equal(sgx_mm_dealloc(r, 4 * PG), 0);
}

/* Page types as Intel's EMM tests them: "regular" is a bit test (REG and
 * SS_REST pass, TCS and SS_FIRST do not) for commit (EACCES) and
 * modify_permissions (EPERM); modify_type wants exactly REG (EACCES). */
static void test_page_types(void **state)
{
    (void)state;
    use_moat();
    void *ss1 = NULL, *ss = NULL, *tcs = NULL;
    assert_int_equal(
        sgx_mm_alloc(NULL, PG, SGX_EMA_COMMIT_NOW | SGX_EMA_PAGE_TYPE_SS_FIRST, NULL, NULL, &ss1),
        0);
    assert_int_equal(sgx_mm_modify_permissions(ss1, PG, SGX_EMA_PROT_READ), EPERM);
    assert_int_equal(sgx_mm_modify_type(ss1, PG, SGX_EMA_PAGE_TYPE_TCS), EACCES);
    assert_int_equal(sgx_mm_uncommit(ss1, PG), 0);
    assert_int_equal(sgx_mm_commit(ss1, PG), EACCES);
    assert_int_equal(sgx_mm_dealloc(ss1, PG), 0);

    assert_int_equal(
        sgx_mm_alloc(NULL, 2 * PG, SGX_EMA_COMMIT_NOW | SGX_EMA_PAGE_TYPE_SS_REST, NULL, NULL, &ss),
        0);
    wr(ss, 7);
    assert_int_equal(sgx_mm_modify_permissions(ss, PG, SGX_EMA_PROT_READ), 0);
    assert_int_equal(rd(ss), 7);
    assert_int_equal(sgx_mm_modify_type(page_of(ss, 1), PG, SGX_EMA_PAGE_TYPE_TCS), EACCES);
    assert_int_equal(sgx_mm_uncommit(page_of(ss, 1), PG), 0);
    assert_int_equal(sgx_mm_commit(page_of(ss, 1), PG), 0);
    assert_int_equal(sgx_mm_dealloc(ss, 2 * PG), 0);

    assert_int_equal(
        sgx_mm_alloc(NULL, PG, SGX_EMA_COMMIT_NOW | SGX_EMA_PAGE_TYPE_TCS, NULL, NULL, &tcs), 0);
    assert_int_equal(sgx_mm_modify_permissions(tcs, PG, SGX_EMA_PROT_READ_WRITE), EPERM);
    assert_int_equal(sgx_mm_uncommit(tcs, PG), 0);
    assert_int_equal(sgx_mm_commit(tcs, PG), EACCES); /* not back as a regular page */
    assert_int_equal(sgx_mm_modify_type(tcs, PG, SGX_EMA_PAGE_TYPE_TCS), EACCES);
    assert_int_equal(sgx_mm_dealloc(tcs, PG), 0);
}

/* Touching a page of a COMMIT_ON_DEMAND area commits that page and no
 * other (Intel's #PF handler EACCEPTs exactly one page): the pages after it
 * are still free for commit_data, and uncommit releases only what was
 * touched. */
static void test_on_demand_commits_one_page(void **state)
{
    (void)state;
    use_moat();
    uint8_t *d;
    uint8_t src[PG];
    memset(src, 0xa5, sizeof src);
    assert_int_equal(sgx_mm_alloc(NULL, 8 * PG, SGX_EMA_COMMIT_ON_DEMAND, NULL, NULL, (void **)&d),
                     0);
    wr(d, 1); /* the first page of the area: a sequential start */
    for (size_t i = 1; i < 8; i++)
        assert_int_equal(sgx_mm_commit_data(d + i * PG, PG, src, SGX_EMA_PROT_READ), 0);
    assert_int_equal(rd(d), 1);
    assert_int_equal(rd(d + 7 * PG + 5), 0xa5);
    assert_int_equal(sgx_mm_dealloc(d, 8 * PG), 0);
}

int main(void)
{
    /* the "enclave size" of Intel's test configuration, for unsafe2 */
    setenv("MOAT_RANGE", "4G", 1);
    unsetenv("MOAT_STORE");
    const struct CMUnitTest tests[] = {
        /* first: they fork while this process has not started moat */
        cmocka_unit_test(test_first_call_starts_moat),
        cmocka_unit_test(test_abi),
        cmocka_unit_test(test_alloc_dealloc),
        cmocka_unit_test(test_alloc_commit_uncommit),
        cmocka_unit_test(test_unsafe1),
        cmocka_unit_test(test_unsafe2),
        cmocka_unit_test(test_permissions),
        cmocka_unit_test(test_commit_data),
        cmocka_unit_test(test_thread_context),
        cmocka_unit_test(test_17_threads),
        cmocka_unit_test(test_moat_differences),
        cmocka_unit_test(test_page_types),
        cmocka_unit_test(test_on_demand_commits_one_page),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
