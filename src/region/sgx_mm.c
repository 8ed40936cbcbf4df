/*
 * sgx_mm.c - Intel's SGX EMM API (<moat/sgx_mm.h>) on top of moat's region
 * API.
 *
 * The region API already follows Intel's EMM (same flags, same handler type,
 * the same error codes where moat can honour them), so each sgx_mm_* function
 * is the moat_* function of the same name behind one step: the first call in
 * the process starts moat from the environment (with Intel's one page per
 * fault, see sgx_start), as an enclave's EMM is ready before the first line
 * of enclave code runs.  Real exported functions rather
 * than inline wrappers, so objects compiled against Intel's own header link
 * against libmoat too.
 */
#include <moat/sgx_mm.h>

#include "common/engine.h"
#include "common/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* The handler types are one type (sgx_mm.h makes sgx_pfinfo a typedef of
 * moat_pfinfo); these catch an edit that breaks that. */
_Static_assert(MOAT_FAULT_CONTINUE_SEARCH == SGX_MM_EXCEPTION_CONTINUE_SEARCH &&
                   MOAT_FAULT_CONTINUE_EXECUTION == SGX_MM_EXCEPTION_CONTINUE_EXECUTION,
               "handler return values match Intel's");
_Static_assert(MOAT_RESERVE == SGX_EMA_RESERVE && MOAT_COMMIT_NOW == SGX_EMA_COMMIT_NOW &&
                   MOAT_COMMIT_ON_DEMAND == SGX_EMA_COMMIT_ON_DEMAND &&
                   MOAT_GROWSDOWN == SGX_EMA_GROWSDOWN && MOAT_GROWSUP == SGX_EMA_GROWSUP &&
                   MOAT_FIXED == SGX_EMA_FIXED && MOAT_ALLOC_FLAGS_MASK == SGX_EMA_ALLOC_FLAGS_MASK,
               "allocation flags match Intel's");
_Static_assert(MOAT_PAGE_TYPE_TCS == SGX_EMA_PAGE_TYPE_TCS &&
                   MOAT_PAGE_TYPE_REG == SGX_EMA_PAGE_TYPE_REG &&
                   MOAT_PAGE_TYPE_TRIM == SGX_EMA_PAGE_TYPE_TRIM &&
                   MOAT_PAGE_TYPE_SS_FIRST == SGX_EMA_PAGE_TYPE_SS_FIRST &&
                   MOAT_PAGE_TYPE_SS_REST == SGX_EMA_PAGE_TYPE_SS_REST &&
                   MOAT_PAGE_TYPE_MASK == SGX_EMA_PAGE_TYPE_MASK,
               "page types match Intel's");
_Static_assert(MOAT_ALIGNMENT_SHIFT == SGX_EMA_ALIGNMENT_SHIFT &&
                   MOAT_ALIGNED(16) == SGX_EMA_ALIGNMENT_64KB,
               "alignment encoding matches Intel's");
_Static_assert(MOAT_PROT_READ == SGX_EMA_PROT_READ && MOAT_PROT_WRITE == SGX_EMA_PROT_WRITE &&
                   MOAT_PROT_EXEC == SGX_EMA_PROT_EXEC && MOAT_PROT_MASK == SGX_EMA_PROT_MASK,
               "permissions match Intel's");

static pthread_once_t sgx_once = PTHREAD_ONCE_INIT;
static int sgx_start_err; /* written once, under sgx_once */

/*
 * sgx_start - moat_init from the environment, with one exception: unless
 * MOAT_FAULT_AHEAD says otherwise, a first touch commits exactly one page,
 * as Intel's #PF handler EACCEPTs exactly one.  (moat's own default commits
 * a run of pages ahead of a sequential fault, which is faster but visible:
 * commit_data on a page committed ahead fails with EACCES.)
 */
static void sgx_start(void)
{
    struct moat_options o = {.log_level = -1};
    const char *ahead = getenv("MOAT_FAULT_AHEAD");
    if (!ahead || !*ahead)
        o.fault_ahead = 1;
    int err = moat_init(&o);
    if (err == EALREADY) /* the program started moat itself, with its options */
        err = 0;
    if (err)
        m_error("sgx_mm",
                "cannot start moat from the environment for the sgx_mm_* API: %s (error %d); "
                "the lines above say why, and every sgx_mm_* call returns this error until "
                "moat_init succeeds",
                strerror(err), err);
    sgx_start_err = err;
}

/* sgx_ready - 0 once moat runs.  After a failed start, a later moat_init by
 * the program is honoured; after moat_shutdown, the moat_* function reports
 * ENODEV itself. */
static int sgx_ready(void)
{
    pthread_once(&sgx_once, sgx_start);
    if (sgx_start_err && !atomic_load(&m_engine.running))
        return sgx_start_err;
    return 0;
}

int sgx_mm_alloc(void *addr, size_t length, int flags, sgx_enclave_fault_handler_t handler,
                 void *handler_private, void **out_addr)
{
    int err = sgx_ready();
    return err ? err : moat_alloc(addr, length, flags, handler, handler_private, out_addr);
}

int sgx_mm_uncommit(void *addr, size_t length)
{
    int err = sgx_ready();
    return err ? err : moat_uncommit(addr, length);
}

int sgx_mm_dealloc(void *addr, size_t length)
{
    int err = sgx_ready();
    return err ? err : moat_dealloc(addr, length);
}

int sgx_mm_modify_permissions(void *addr, size_t length, int prot)
{
    int err = sgx_ready();
    return err ? err : moat_modify_permissions(addr, length, prot);
}

int sgx_mm_modify_type(void *addr, size_t length, int type)
{
    int err = sgx_ready();
    return err ? err : moat_modify_type(addr, length, type);
}

int sgx_mm_commit(void *addr, size_t length)
{
    int err = sgx_ready();
    return err ? err : moat_commit(addr, length);
}

int sgx_mm_commit_data(void *addr, size_t length, uint8_t *data, int prot)
{
    int err = sgx_ready();
    return err ? err : moat_commit_data(addr, length, data, prot);
}
