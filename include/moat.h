/*
 * moat.h - the public interface of libmoat.
 *
 * moat gives an ordinary Linux process the memory model of an SGX2 enclave:
 * one large reserved range (the emulated ELRANGE) in which regions are
 * reserved, committed up front or on demand, uncommitted and re-protected
 * with the semantics of Intel's SGX Enclave Memory Manager (EMM), under a
 * hard budget of resident pages (the "EPC").  Pages beyond the budget are
 * sealed with AES-256-GCM and evicted to a store.
 *
 * Conventions: every function returns 0 on success or a positive errno value
 * on failure (as Intel's EMM does); nothing sets errno as its only report.
 * Sizes are in bytes and must be multiples of MOAT_PAGE_SIZE where they
 * describe memory.  All functions are thread-safe.
 *
 * The region functions and constants mirror <sgx_mm.h>: code written for it
 * ports by renaming sgx_mm_ to moat_ and SGX_EMA_ to MOAT_, or compiles
 * unchanged against <moat/sgx_mm.h>.
 */
#ifndef MOAT_H
#define MOAT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* libmoat is built with hidden visibility; everything declared here is its
 * exported interface. */
#pragma GCC visibility push(default)

#define MOAT_PAGE_SIZE 4096UL

/* ------------------------------------------------------------------------
 * Allocation flags (same values as SGX_EMA_*)
 * ---------------------------------------------------------------------- */

/* Reserve the range: nothing is accessible until a later MOAT_FIXED (or
 * hinted) allocation carves an area out of it. */
#define MOAT_RESERVE 0x1
/* Commit every page now (zero-filled; materialised at first touch). */
#define MOAT_COMMIT_NOW 0x2
/* Commit each page at its first access, or by moat_commit/moat_commit_data. */
#define MOAT_COMMIT_ON_DEMAND 0x4
/* Growth direction hints of stacks and heaps (recorded, reported). */
#define MOAT_GROWSDOWN 0x10
#define MOAT_GROWSUP   0x20
/* Allocate exactly at addr: fails with EEXIST if anything but a RESERVE
 * area is there. */
#define MOAT_FIXED            0x40
#define MOAT_ALLOC_FLAGS_MASK 0xFF

/* Page types, bits 8-15. */
#define MOAT_PAGE_TYPE_SHIFT    8
#define MOAT_PAGE_TYPE_TCS      (0x1 << MOAT_PAGE_TYPE_SHIFT)
#define MOAT_PAGE_TYPE_REG      (0x2 << MOAT_PAGE_TYPE_SHIFT)
#define MOAT_PAGE_TYPE_TRIM     (0x4 << MOAT_PAGE_TYPE_SHIFT)
#define MOAT_PAGE_TYPE_SS_FIRST (0x5 << MOAT_PAGE_TYPE_SHIFT)
#define MOAT_PAGE_TYPE_SS_REST  (0x6 << MOAT_PAGE_TYPE_SHIFT)
#define MOAT_PAGE_TYPE_MASK     (0xFF << MOAT_PAGE_TYPE_SHIFT)

/* Alignment, bits 24-31: MOAT_ALIGNED(n) aligns the area to 2^n bytes
 * (n >= 12; 0 means page alignment). */
#define MOAT_ALIGNMENT_SHIFT 24
#define MOAT_ALIGNED(n)      (((unsigned int)(n)) << MOAT_ALIGNMENT_SHIFT)
#define MOAT_ALIGNMENT_MASK  MOAT_ALIGNED(0xFFUL)

/* Permissions. */
#define MOAT_PROT_NONE            0x0
#define MOAT_PROT_READ            0x1
#define MOAT_PROT_WRITE           0x2
#define MOAT_PROT_EXEC            0x4
#define MOAT_PROT_READ_WRITE      (MOAT_PROT_READ | MOAT_PROT_WRITE)
#define MOAT_PROT_READ_EXEC       (MOAT_PROT_READ | MOAT_PROT_EXEC)
#define MOAT_PROT_READ_WRITE_EXEC (MOAT_PROT_READ | MOAT_PROT_WRITE | MOAT_PROT_EXEC)
#define MOAT_PROT_MASK            0x7

/* ------------------------------------------------------------------------
 * Custom fault handlers (mirror of sgx_pfinfo / sgx_enclave_fault_handler_t)
 * ---------------------------------------------------------------------- */

typedef struct moat_pfinfo {
    uint64_t maddr; /* the faulting address */
    union moat_pfec {
        uint32_t errcd; /* never 0 for a delivered fault */
        struct {
            uint32_t p : 1;  /* 1 if the page was committed (a permission fault) */
            uint32_t rw : 1; /* 0 read, 1 write */
            uint32_t : 13;
            uint32_t sgx : 1; /* always 1 */
            uint32_t : 16;
        };
    } pfec;
    uint32_t reserved;
} moat_pfinfo;

/* Return values of a fault handler. */
#define MOAT_FAULT_CONTINUE_SEARCH    0
#define MOAT_FAULT_CONTINUE_EXECUTION -1

/*
 * A handler is called synchronously on the faulting thread (inside a signal
 * handler) for every fault in its region: an access to an uncommitted page,
 * or an access the page's permissions forbid.  It may call moat_commit,
 * moat_commit_data and moat_modify_permissions, fault again, or longjmp
 * (siglongjmp) out.  CONTINUE_EXECUTION retries the access; CONTINUE_SEARCH
 * makes the fault fatal, as an unhandled SIGSEGV would be.
 */
typedef int (*moat_fault_handler_t)(const moat_pfinfo *pfinfo, void *private_data);

/* ------------------------------------------------------------------------
 * Engine set-up
 * ---------------------------------------------------------------------- */

enum moat_log_level {
    MOAT_LOG_DEBUG = 0,
    MOAT_LOG_INFO = 1,
    MOAT_LOG_WARN = 2,
    MOAT_LOG_ERROR = 3,
    MOAT_LOG_FATAL = 4,
};

struct moat_options {
    size_t range_size;         /* emulated ELRANGE; 0 = 64 GiB (env MOAT_RANGE) */
    size_t budget;             /* resident budget in bytes; 0 = unlimited (env MOAT_BUDGET) */
    unsigned low_pct;          /* reclaim runs down to this % of budget (MOAT_LOW); 0 = 2% of
                                  the budget below high, at least 2 batches (~97%) */
    unsigned high_pct;         /* reclaim starts above this % of budget (MOAT_HIGH); 0 = 1% of
                                  the budget below it, at least 1 batch (~99%) */
    unsigned batch_pages;      /* pages evicted per reclaim batch; 0 = 32 */
    unsigned fault_threads;    /* userfaultfd handler threads, 1-16; 0 = 2 (MOAT_FAULT_THREADS) */
    unsigned fault_ahead;      /* pages a sequential fault installs at once (commit ahead,
                                  read ahead), 1..32; 0 = 16 (MOAT_FAULT_AHEAD); 1 gives
                                  Intel EMM's exact one-page-per-fault commit */
    const char *store;         /* store URI, "file:PATH"; NULL = a file in $TMPDIR (MOAT_STORE) */
    int log_level;             /* enum moat_log_level; -1 = default WARN (MOAT_LOG) */
    const char *log_file;      /* NULL = stderr (MOAT_LOG_FILE) */
    unsigned store_replicas;   /* redis+cluster store: an eviction counts only once this many
                                  replicas have the page (Redis WAIT), else it fails and the
                                  page stays resident; 0 = none (MOAT_STORE_REPLICAS, 0-16) */
    unsigned store_timeout_ms; /* redis stores: how long a page I/O may wait and retry before
                                  it fails; 0 = the store's default (MOAT_STORE_TIMEOUT, ms) */
    int lazy;                  /* 1: lazy tracking (below); -1: pages are tracked from the
                                  start; 0 = MOAT_LAZY (0 or 1), else -1.  The preload
                                  library (moat run) defaults to 1 */
};

/*
 * Lazy tracking.  While the pages of every area that is not RESERVE add up
 * to no more than the budget's high watermark, no access can break the
 * budget, so a lazy engine leaves first touches to the kernel: nothing is
 * registered with userfaultfd and no fault reaches moat.  The first call that
 * would take the areas above the watermark (or that needs exact page states:
 * moat_commit_data, moat_modify_type, moat_pin, moat_modify_permissions over
 * pages never committed) starts tracking: the range is registered, and every
 * page the kernel gave meanwhile (present or swapped, from
 * /proc/self/pagemap) becomes a committed, resident, dirty page charged to
 * the budget.  From then on the engine is exactly as without lazy tracking.
 * Before that, moat_stats samples resident pages (mincore) and counts no
 * faults; an unlimited budget never starts tracking.  See docs/design.md.
 */

/*
 * moat_init - start the engine.  opts may be NULL for defaults; each field
 * left 0 (or NULL, or -1 for log_level) takes its value from the environment
 * variable named above, then from the built-in default.  Sizes in the
 * environment accept a suffix K, M, G, T (binary, optional "iB").
 *
 * Errors: EALREADY already initialised; EINVAL a bad option or environment
 * value (the log names it); ENOSYS userfaultfd unavailable (the log names the
 * missing feature); ENOMEM the range cannot be reserved; EIO/ENOENT/EACCES
 * the store cannot be opened.
 */
int moat_init(const struct moat_options *opts);

/* moat_shutdown - stop the engine, free every region, remove the store file
 * and wipe the sealing key.  Safe to call when not initialised. */
void moat_shutdown(void);

/* moat_range - report the emulated ELRANGE.  EINVAL on NULL arguments,
 * ENODEV before moat_init. */
int moat_range(void **base, size_t *size);

/* ------------------------------------------------------------------------
 * Regions (mirror of sgx_mm_*)
 * ---------------------------------------------------------------------- */

/*
 * moat_alloc - allocate an area of `length` bytes.
 * flags: at least one of MOAT_RESERVE, MOAT_COMMIT_NOW, MOAT_COMMIT_ON_DEMAND
 *   (as in Intel's EMM, RESERVE wins over the others; COMMIT_NOW with
 *   COMMIT_ON_DEMAND commits now and re-commits on demand after uncommit),
 *   optionally GROWSDOWN or GROWSUP, FIXED, one page type (REG by default;
 *   TCS, SS_FIRST and SS_REST are accepted with COMMIT_NOW) and
 *   MOAT_ALIGNED(n).
 * addr: NULL to let moat choose, a hint, or the exact address with FIXED.
 * handler/handler_private: an optional custom fault handler.
 * Errors: EINVAL bad flags, length or alignment, or FIXED without addr;
 *   EPERM addr outside the range; EACCES the area would run past its end;
 *   EEXIST FIXED over a non-RESERVE area;
 *   ENOMEM no free space of that size; ENODEV engine not initialised
 *   (the sgx_mm drop-in initialises it itself).
 */
int moat_alloc(void *addr, size_t length, int flags, moat_fault_handler_t handler,
               void *handler_private, void **out_addr);

/* moat_dealloc - free every area in [addr, addr+length), splitting areas that
 * straddle the ends.  EINVAL if nothing at all overlaps or arguments are
 * misaligned. */
int moat_dealloc(void *addr, size_t length);

/* moat_commit - commit the uncommitted pages in the range (committed pages are
 * left alone; COMMIT_NOW areas may be re-committed after an uncommit, as in
 * Intel's EMM).  EINVAL range not fully covered by areas; EACCES part of it
 * is a RESERVE area, a TCS page, or a page whose permissions lack WRITE. */
int moat_commit(void *addr, size_t length);

/* moat_uncommit - release the pages (contents are lost, store copies freed).
 * Already uncommitted pages are fine.  EINVAL range not covered; EACCES a
 * RESERVE area in it. */
int moat_uncommit(void *addr, size_t length);

/* moat_commit_data - commit uncommitted pages of a COMMIT_ON_DEMAND area and
 * fill them with `data`, then apply `prot` (which may include EXEC).
 * EINVAL not COMMIT_ON_DEMAND, bad prot or NULL data; EACCES a RESERVE
 * area, or a page is already committed; ENOMEM the budget has no room. */
int moat_commit_data(void *addr, size_t length, uint8_t *data, int prot);

/* moat_modify_permissions - change the permissions of committed pages.
 * EINVAL bad prot (EXEC needs READ), a range with holes, or uncommitted
 * pages; EPERM a RESERVE area or pages that are not regular (TCS), as in
 * Intel's EMM. */
int moat_modify_permissions(void *addr, size_t length, int prot);

/* moat_modify_type - only MOAT_PAGE_TYPE_TCS, on one committed read-write
 * regular page (it becomes unreclaimable and inaccessible, like a TCS page).
 * 0 if it already is TCS; EPERM another type, or a page that is not
 * read-write; EACCES a RESERVE area or an uncommitted page; EINVAL a length
 * other than one page or a bad range. */
int moat_modify_type(void *addr, size_t length, int type);

/* moat_pin / moat_unpin - make committed pages unreclaimable (they are
 * loaded first if evicted) or reclaimable again.  Pinned pages count against
 * the budget, separately.  ENOMEM if pinning would leave the budget with no
 * reclaimable room; EACCES uncommitted pages; EINVAL bad range. */
int moat_pin(void *addr, size_t length);
int moat_unpin(void *addr, size_t length);

/* ------------------------------------------------------------------------
 * Statistics
 * ---------------------------------------------------------------------- */

struct moat_stats {
    uint64_t budget_pages;           /* 0 = unlimited */
    uint64_t committed_pages;        /* committed, in any state */
    uint64_t resident_pages;         /* reclaimable + unreclaimable */
    uint64_t resident_unreclaimable; /* pinned, TCS, custom-handler pages */
    uint64_t evicted_pages;          /* sealed in the store */
    uint64_t peak_committed_pages;
    uint64_t peak_resident_pages;
    uint64_t regions;

    uint64_t faults_commit;  /* first touches of uncommitted or untouched pages */
    uint64_t faults_pagein;  /* pages loaded from the store on a fault */
    uint64_t faults_wp;      /* first writes to clean pages */
    uint64_t faults_handler; /* faults delivered to custom handlers */
    uint64_t faults_fatal;   /* faults that killed the faulting thread */

    uint64_t evictions_written; /* dirty pages sealed and written */
    uint64_t evictions_clean;   /* clean pages dropped without writing */
    uint64_t reclaim_sync;      /* times a fault or commit reclaimed itself */
    uint64_t store_bytes_written;
    uint64_t store_bytes_read;
    uint64_t store_errors;
    uint64_t integrity_failures;

    uint64_t fault_ns;   /* total time spent resolving faults */
    uint64_t reclaim_ns; /* total time spent evicting */

    uint64_t fork_loaded_pages; /* evicted pages read back so fork children see them */

    /* Redis stores, redis:// (one node) and redis+cluster:// (0 for the
     * file store): nodes known, pipelines written, I/O retries, MOVED/ASK
     * followed, failovers seen; per node in moat_stats_print. */
    uint64_t store_nodes;
    uint64_t store_round_trips;
    uint64_t store_retries;
    uint64_t store_redirections;
    uint64_t store_failovers;

    /* Lazy tracking (moat_options.lazy): 1 once pages are tracked (always 1
     * without lazy tracking); before that, untracked_pages is how many
     * resident pages moat_stats found (sampled, already part of
     * resident_pages and committed_pages). */
    uint64_t tracking;
    uint64_t untracked_pages;

    /* Batched page-in (MOAT_FAULT_BATCH): store submissions that loaded the
     * page-ins of several faults read from the userfaultfd at once, and the
     * faults they served; pagein_batched_faults / pagein_batches is the
     * batching factor. */
    uint64_t pagein_batches;
    uint64_t pagein_batched_faults;

    /* Page-ins read ahead of a fault along a stream of faults (upward or
     * downward, MOAT_FAULT_AHEAD pages at most a fault); part of
     * faults_pagein. */
    uint64_t pagein_readahead;

    /* Page-ins of pages evicted so recently (among the last budget/16 to
     * go) that they came back referenced and hot, to be kept longer: reads
     * of resident pages are invisible, and this is how moat sees pages that
     * are read a lot (MOAT_REFAULT; part of faults_pagein). */
    uint64_t pagein_refault_hot;

    /* Memory the store keeps for the records it holds, outside the budget:
     * the file store's trailers (nonce and tag, 32 bytes a slot of the
     * file, 1/128 of it); 0 for the Redis stores, whose records are whole
     * on the servers. */
    uint64_t store_meta_bytes;

    /* Page-table changes that end in a TLB flush of every other CPU running
     * a thread of the program (a shootdown: ~14 us to the caller and ~8 us
     * to each CPU interrupted, in a virtual machine; docs/lru.md).
     * wp_calls: UFFDIO_WRITEPROTECT calls that set or lifted write
     * protection (write sampling, the protection before a page is sealed,
     * the end of a write-protect fault), one range each.  zap_calls:
     * system calls that dropped frames (MADV_DONTNEED for evictions,
     * uncommit and dealloc; one process_madvise takes a whole reclaim
     * batch where the kernel allows). */
    uint64_t wp_calls;
    uint64_t zap_calls;
};

/* moat_stats - a consistent-enough snapshot of the counters (each read
 * atomically).  EINVAL on NULL; ENODEV before moat_init. */
int moat_stats(struct moat_stats *out);

/* moat_stats_print - a human-readable dump to `fd`. */
void moat_stats_print(int fd);

#pragma GCC visibility pop

#ifdef __cplusplus
}
#endif
#endif /* MOAT_H */
