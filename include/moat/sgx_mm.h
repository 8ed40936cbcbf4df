/*
 * moat/sgx_mm.h - a drop-in replacement for Intel's <sgx_mm.h> (the SGX
 * Enclave Memory Manager API of intel/linux-sgx, sdk/emm) on top of moat.
 *
 * Code written for an SGX2 enclave compiles unchanged against this header
 * and links against libmoat: the functions have Intel's exact prototypes,
 * the SGX_EMA_* constants have Intel's values, and sgx_pfinfo has Intel's
 * field names and bit layout.  Every call returns 0 or a positive errno
 * value, as Intel's do; nothing is written to errno.
 *
 * Start-up: the first sgx_mm_* call starts moat from the environment
 * (moat_init, once, thread-safe), with one default changed to match Intel's
 * EMM: a first touch of a COMMIT_ON_DEMAND page commits that page only
 * (fault_ahead 1, unless MOAT_FAULT_AHEAD is set).  MOAT_RANGE plays the part of the
 * enclave's ReservedMemMaxSize, MOAT_BUDGET the EPC, MOAT_LOG / MOAT_LOG_FILE
 * say where diagnostics go (moat.h lists them all).  A program that wants
 * other options calls moat_init itself before its first sgx_mm_* call; that
 * is detected (moat_init's EALREADY) and fine.  If moat cannot start, the
 * call returns moat_init's error (ENOSYS: no userfaultfd; EINVAL: a bad
 * environment value; ENOMEM: the range cannot be reserved; ...) and the log
 * says why; so does every later call until moat runs.
 *
 * Where moat's behaviour differs from Intel's (a few error codes, dealloc of
 * part of a RESERVE area, holes at the start of a range), docs/emm.md says
 * how and why; each function's comment below names the differences.
 *
 * Fault handlers: sgx_pfinfo is the same type as moat_pfinfo and
 * sgx_enclave_fault_handler_t the same type as moat_fault_handler_t, so a
 * handler written for Intel's EMM is passed to moat unchanged, without a
 * cast or a trampoline.  It runs synchronously on the faulting thread, inside
 * moat's SIGSEGV handler, for an access to an uncommitted page of its region
 * or an access the page's permissions forbid (first touches of committed
 * pages and page-ins after eviction are transparent, as EPC paging is in an
 * enclave).  It may call sgx_mm_commit, sgx_mm_commit_data and
 * sgx_mm_modify_permissions, fault again, or siglongjmp out.
 * SGX_MM_EXCEPTION_CONTINUE_EXECUTION retries the access;
 * SGX_MM_EXCEPTION_CONTINUE_SEARCH passes the fault on: to the SIGSEGV
 * handler the program had installed before moat started, else the process
 * dies of SIGSEGV after a [FATAL] log line naming the region and address.
 */
#ifndef SGX_MM_H_
/* Intel's include guard too: including both headers is harmless, the first
 * one wins and the two declare the same things. */
#define SGX_MM_H_
#define MOAT_SGX_MM_H 1

#include <moat.h>

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------
 * Page-fault information and custom handlers
 * ---------------------------------------------------------------------- */

/*
 * sgx_pfinfo - what a custom handler learns about a fault: Intel's
 * `struct _sgx_pfinfo` { uint64_t maddr; union _pfec { uint32_t errcd;
 * struct { p:1, rw:1, :13, sgx:1, :16 }; } pfec; uint32_t reserved; },
 * 16 bytes.  It is moat_pfinfo itself (declared in moat.h with the same
 * fields, order and bit-fields), so the handler types below are one and the
 * same.  The two macros keep Intel's tag names usable
 * (`struct _sgx_pfinfo`, `union _pfec`).
 *
 * moat fills it as follows: maddr is the exact faulting address (si_addr);
 * p is 1 if the page is committed (a permission fault) and 0 if it is not;
 * rw is 1 for a write and 0 for a read or an instruction fetch; sgx is
 * always 1, so errcd is never 0; reserved is 0.
 */
typedef moat_pfinfo sgx_pfinfo;
#define _sgx_pfinfo moat_pfinfo
#define _pfec       moat_pfec

#ifndef __cplusplus
_Static_assert(sizeof(sgx_pfinfo) == 16, "sgx_pfinfo is 16 bytes, as in Intel's sgx_mm.h");
_Static_assert(offsetof(sgx_pfinfo, maddr) == 0, "sgx_pfinfo.maddr at offset 0");
_Static_assert(offsetof(sgx_pfinfo, pfec) == 8, "sgx_pfinfo.pfec at offset 8");
_Static_assert(offsetof(sgx_pfinfo, reserved) == 12, "sgx_pfinfo.reserved at offset 12");
_Static_assert(sizeof(((sgx_pfinfo *)0)->pfec) == 4, "sgx_pfinfo.pfec is one 32-bit word");
#endif

/*
 * sgx_enclave_fault_handler_t - a custom page-fault handler, passed to
 * sgx_mm_alloc with its private pointer.  Returns
 * SGX_MM_EXCEPTION_CONTINUE_EXECUTION if it resolved the fault (typically by
 * sgx_mm_commit_data or sgx_mm_modify_permissions), or
 * SGX_MM_EXCEPTION_CONTINUE_SEARCH to pass it on (see the banner).
 * Identical to moat_fault_handler_t.
 */
typedef int (*sgx_enclave_fault_handler_t)(const sgx_pfinfo *pfinfo, void *private_data);

/* Return values of a handler (Intel's values, equal to moat's). */
#define SGX_MM_EXCEPTION_CONTINUE_SEARCH    0
#define SGX_MM_EXCEPTION_CONTINUE_EXECUTION -1

/* ------------------------------------------------------------------------
 * Flags (Intel's values; each equals the MOAT_* constant of the same name)
 * ---------------------------------------------------------------------- */

/* Bits 0-7: allocation flags. */
#define SGX_EMA_ALLOC_FLAGS_SHIFT 0
#define SGX_EMA_ALLOC_FLAGS(n)    ((n) << SGX_EMA_ALLOC_FLAGS_SHIFT)
#define SGX_EMA_ALLOC_FLAGS_MASK  SGX_EMA_ALLOC_FLAGS(0xFF)
/* Reserve an address range only; nothing in it is accessible until a later
 * FIXED or hinted allocation carves an area out of it. */
#define SGX_EMA_RESERVE SGX_EMA_ALLOC_FLAGS(0x1)
/* Commit every page now. */
#define SGX_EMA_COMMIT_NOW SGX_EMA_ALLOC_FLAGS(0x2)
/* Commit each page at its first access, or by sgx_mm_commit(_data). */
#define SGX_EMA_COMMIT_ON_DEMAND SGX_EMA_ALLOC_FLAGS(0x4)
/* Growth direction hints (recorded; they change nothing in moat, as they
 * change almost nothing in Intel's EMM). */
#define SGX_EMA_GROWSDOWN SGX_EMA_ALLOC_FLAGS(0x10)
#define SGX_EMA_GROWSUP   SGX_EMA_ALLOC_FLAGS(0x20)
/* Allocate exactly at addr (EEXIST if anything but RESERVE areas is there). */
#define SGX_EMA_FIXED SGX_EMA_ALLOC_FLAGS(0x40)

/* Bits 8-15: page types (the SGX EPCM types shifted by 8). */
#define SGX_EMA_PAGE_TYPE_SHIFT    8
#define SGX_EMA_PAGE_TYPE(n)       ((n) << SGX_EMA_PAGE_TYPE_SHIFT)
#define SGX_EMA_PAGE_TYPE_MASK     SGX_EMA_PAGE_TYPE(0xFF)
#define SGX_EMA_PAGE_TYPE_TCS      SGX_EMA_PAGE_TYPE(0x1)
#define SGX_EMA_PAGE_TYPE_REG      SGX_EMA_PAGE_TYPE(0x2) /* the default */
#define SGX_EMA_PAGE_TYPE_TRIM     SGX_EMA_PAGE_TYPE(0x4)
#define SGX_EMA_PAGE_TYPE_SS_FIRST SGX_EMA_PAGE_TYPE(0x5)
#define SGX_EMA_PAGE_TYPE_SS_REST  SGX_EMA_PAGE_TYPE(0x6)

/* Bits 24-31: alignment, as log2 (n >= 12; 0 means page alignment). */
#define SGX_EMA_ALIGNMENT_SHIFT 24
#define SGX_EMA_ALIGNED(n)      (((unsigned int)(n) << SGX_EMA_ALIGNMENT_SHIFT))
#define SGX_EMA_ALIGNMENT_MASK  SGX_EMA_ALIGNED(0xFFUL)
#define SGX_EMA_ALIGNMENT_64KB  SGX_EMA_ALIGNED(16UL)
#define SGX_EMA_ALIGNMENT_16MB  SGX_EMA_ALIGNED(24UL)
#define SGX_EMA_ALIGNMENT_4GB   SGX_EMA_ALIGNED(32UL)

/* Permissions. */
#define SGX_EMA_PROT_NONE       0x0
#define SGX_EMA_PROT_READ       0x1
#define SGX_EMA_PROT_WRITE      0x2
#define SGX_EMA_PROT_EXEC       0x4
#define SGX_EMA_PROT_READ_WRITE (SGX_EMA_PROT_READ | SGX_EMA_PROT_WRITE)
#define SGX_EMA_PROT_READ_EXEC  (SGX_EMA_PROT_READ | SGX_EMA_PROT_EXEC)
#define SGX_EMA_PROT_MASK       (SGX_EMA_PROT_READ_WRITE | SGX_EMA_PROT_EXEC)

/* ------------------------------------------------------------------------
 * Functions (exported by libmoat; src/region/sgx_mm.c)
 * ---------------------------------------------------------------------- */

#pragma GCC visibility push(default)

/*
 * sgx_mm_alloc - allocate an area of `length` bytes in moat's range (the
 * emulated ELRANGE) and store its address in *out_addr (only on success).
 * flags: one of SGX_EMA_RESERVE / COMMIT_NOW / COMMIT_ON_DEMAND (if several
 *   are given, RESERVE wins, then COMMIT_NOW), optionally one of GROWSDOWN /
 *   GROWSUP, FIXED, SGX_EMA_ALIGNED(n), and a page type: REG (default),
 *   or TCS / SS_FIRST (one page) / SS_REST with COMMIT_NOW.
 * addr: NULL to let moat choose; with FIXED the exact address; without FIXED
 *   a hint, honoured exactly if the range is free or only RESERVE areas are
 *   there (which are then carved), else moat chooses.
 * handler, handler_private: an optional custom fault handler for the area.
 * Errors: EINVAL bad flags (no commit mode, unknown bits, SYSTEM 0x80, both
 *   GROWS*, TRIM or an unknown page type, TCS/SS_* without COMMIT_NOW),
 *   zero or unaligned length, n < 12, addr not aligned to 2^n, FIXED with a
 *   NULL addr; EPERM addr outside moat's range; EACCES the range runs past
 *   its end; EEXIST FIXED over a non-RESERVE area; ENOMEM no free space;
 *   or moat_init's error (see the banner).
 * Differences from Intel: zero length, TRIM/TCS-on-demand page types, both
 *   GROWS* and FIXED with NULL are EINVAL here (Intel accepts them).
 */
int sgx_mm_alloc(void *addr, size_t length, int flags, sgx_enclave_fault_handler_t handler,
                 void *handler_private, void **out_addr);

/*
 * sgx_mm_uncommit - release the committed pages in [addr, addr+length):
 * their contents are lost, the range stays allocated, already uncommitted
 * pages are skipped.  A COMMIT_ON_DEMAND page is committed again (zeroed) by
 * its next access; touching a released page of any other area is fatal
 * (or goes to its custom handler).
 * Errors: EINVAL unaligned or empty range, or a hole anywhere in it (Intel
 *   ignores a hole at the start); EACCES a RESERVE area in it.
 */
int sgx_mm_uncommit(void *addr, size_t length);

/*
 * sgx_mm_dealloc - free every area that overlaps [addr, addr+length): pages
 * are released and the addresses become free.  Holes in the range are fine.
 * Areas that straddle either end, RESERVE areas included, are split and keep
 * their outside part (Intel frees a straddling RESERVE area whole).
 * Errors: EINVAL nothing overlaps the range, or addr/length unaligned, NULL
 *   or zero.
 */
int sgx_mm_dealloc(void *addr, size_t length);

/*
 * sgx_mm_modify_permissions - set the permissions of committed pages
 * (NONE, R, RW, RX, RWX; W implies R on x86, as in the page tables).  Pages
 * keep their contents; a later access the new permissions forbid goes to the
 * area's custom handler or is fatal.
 * Errors: EINVAL zero or unaligned range, a hole anywhere in it, uncommitted
 *   pages, EXEC without READ or bits outside SGX_EMA_PROT_MASK; EPERM a
 *   RESERVE area or a TCS page in it.
 */
int sgx_mm_modify_permissions(void *addr, size_t length, int prot);

/*
 * sgx_mm_modify_type - turn one committed, read-write, regular page into a
 * TCS page: it becomes inaccessible and unreclaimable (never evicted), as a
 * TCS is to enclave code.  A page that is already TCS succeeds unchanged.
 * Errors: EPERM type is not SGX_EMA_PAGE_TYPE_TCS (checked first), or the
 *   page is not read-write; EINVAL length is not one page, or addr is
 *   unaligned or not allocated; EACCES the page is RESERVE or uncommitted.
 */
int sgx_mm_modify_type(void *addr, size_t length, int type);

/*
 * sgx_mm_commit - commit the uncommitted pages in [addr, addr+length) (of
 * COMMIT_ON_DEMAND areas, and of COMMIT_NOW areas after an uncommit): they
 * read as zeros.  Committed pages are left alone.
 * Errors: EINVAL zero or unaligned range, or a hole anywhere in it; EACCES
 *   a RESERVE area, a TCS page or a committed page without WRITE in it.
 */
int sgx_mm_commit(void *addr, size_t length);

/*
 * sgx_mm_commit_data - commit the uncommitted pages of a COMMIT_ON_DEMAND
 * range, filled with a copy of `data` (length bytes; any address, no
 * alignment needed), then give them `prot` (EXEC allowed: code installed
 * this way can run).  Can be called from a custom handler.
 * Errors: EINVAL zero or unaligned range, a hole in it, an area that is not
 *   COMMIT_ON_DEMAND, NULL data, prot bits outside SGX_EMA_PROT_MASK;
 *   EACCES a RESERVE area, or a page that is already committed (Intel:
 *   EINVAL while the page is still writable); ENOMEM the resident budget is
 *   exhausted by unreclaimable pages.
 */
int sgx_mm_commit_data(void *addr, size_t length, uint8_t *data, int prot);

#pragma GCC visibility pop

#ifdef __cplusplus
}
#endif
#endif /* SGX_MM_H_ */
