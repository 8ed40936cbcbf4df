/*
 * fault.c - userfaultfd handler threads and the SIGSEGV path.
 *
 * Where handler threads run and how they wait
 * -------------------------------------------
 * A fault round trip through a thread blocked in poll() on another CPU costs
 * ~65 us on this kind of machine, against ~10 us when the handler already
 * runs; the ioctls themselves are 1-2 us.  So each handler thread reads up to
 * 32 messages per read() (a burst of faults from many threads costs one
 * wake-up), spins briefly on a non-blocking read before it sleeps in poll(),
 * and resolves pages without waking anyone twice (UFFDIO_COPY wakes the
 * faulting threads itself).  Several threads share the one userfaultfd so a
 * page-in that waits for the store does not stall faults on other pages.
 *
 * When there are as many handler threads as CPUs the process may use (the
 * default two on a two-CPU machine), each is pinned to one of them
 * (MOAT_FAULT_PIN=auto; 1 pins round robin whatever the counts, 0 never).
 * A fault then always has a handler on the faulting thread's own CPU, which
 * the faulting thread has just left: its wake-up is local and the round trip
 * stays on that CPU, instead of a wake-up of a halted CPU and back.  Left to
 * the scheduler, both handlers sat on one CPU in 3 of 10 looks at an xz run
 * (`ps -L -o psr`), and the program itself moves.  xz -9 under 32M: 7.1-7.7
 * s -> 6.4-6.7 s (store on disk), 4.8 -> 4.1 s (store in tmpfs, which leaves
 * only the fault path); docs/design.md has the rest.  With more CPUs than
 * handlers nothing is pinned by default: pinning a few handlers to a few
 * CPUs would make faults from the others remote for certain.
 *
 * Messages are idempotent: a fault is re-derived from the page's current
 * state, so a stale or duplicate message (the page was resolved meanwhile)
 * only wakes the range.
 *
 * Fatal faults (an access to a RESERVE area that reaches us, an uncommitted
 * page of a COMMIT_NOW area, a budget with nothing reclaimable, a sealed page
 * that fails verification) log one line naming the page and the reason and
 * send the faulting thread SIGBUS (or SIGSEGV) with si_addr set, through
 * rt_tgsigqueueinfo: the thread wakes from the fault with the signal pending.
 */
#include "fault/fault.h"

#include "budget/budget.h"
#include "common/engine.h"
#include "common/log.h"
#include "common/uffd_compat.h"
#include "region/region.h"
#include "seal/seal.h"
#include "store/store.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#define FAULT_MAX_THREADS 16
#define FAULT_BATCH       32

static struct {
    int stop_fd;
    unsigned nthreads;
    pthread_t threads[FAULT_MAX_THREADS];
    struct sigaction prev_segv;
    bool segv_installed;
    bool batch;      /* batched page-in (m_fault_start) */
    unsigned pinned; /* threads pinned one per CPU */
} fs = {.stop_fd = -1};

static _Alignas(4096) const uint8_t fault_zero_page[4096];

/* ------------------------------------------------------------------------
 * Opening and probing
 * ---------------------------------------------------------------------- */

static int uffd_create(void)
{
    int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    if (fd >= 0)
        return fd;
    int err = errno;
    int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
    if (dev >= 0) {
        fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
        close(dev);
        if (fd >= 0)
            return fd;
    }
    /* Last resort: user-mode faults only.  A system call that touches an
     * evicted page would then fail with EFAULT instead of waiting, so say it. */
    fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | 1 /* UFFD_USER_MODE_ONLY */);
    if (fd >= 0) {
        m_warn("fault",
               "userfaultfd is restricted to user-mode faults (vm.unprivileged_userfaultfd=0 "
               "and no access to /dev/userfaultfd): system calls that read or write evicted "
               "pages may fail with EFAULT; run as root or grant access to /dev/userfaultfd");
        return fd;
    }
    errno = err;
    return -1;
}

int m_fault_open(uintptr_t base, size_t size)
{
    int fd = uffd_create();
    if (fd < 0) {
        int err = errno;
        m_error("fault",
                "userfaultfd is not available (%s): moat needs Linux >= 5.7 with "
                "CONFIG_USERFAULTFD, and permission (root, /dev/userfaultfd access, or "
                "vm.unprivileged_userfaultfd=1)",
                strerror(err));
        return err == EPERM || err == EACCES ? EPERM : ENOSYS;
    }
    struct uffdio_api api = {.api = UFFD_API, .features = 0};
    if (ioctl(fd, UFFDIO_API, &api) != 0) {
        int err = errno;
        close(fd);
        m_error("fault", "UFFDIO_API handshake failed: %s", strerror(err));
        return ENOSYS;
    }
    uint64_t have = api.features;
    uint64_t need = UFFD_FEATURE_PAGEFAULT_FLAG_WP;
    if ((have & need) != need) {
        close(fd);
        m_error("fault", "the kernel's userfaultfd lacks write-protect support "
                         "(UFFD_FEATURE_PAGEFAULT_FLAG_WP, Linux >= 5.7): cannot evict "
                         "pages safely");
        return ENOSYS;
    }
    close(fd);
    /* The API handshake can be done once per descriptor: open again with
     * the features we use. */
    fd = uffd_create();
    if (fd < 0)
        return ENOSYS;
    api = (struct uffdio_api){.api = UFFD_API, .features = need | (have & UFFD_FEATURE_THREAD_ID)};
    if (ioctl(fd, UFFDIO_API, &api) != 0) {
        int err = errno;
        close(fd);
        m_error("fault", "UFFDIO_API with features %#llx failed: %s",
                (unsigned long long)api.features, strerror(err));
        return ENOSYS;
    }
    if (!(have & UFFD_FEATURE_THREAD_ID))
        m_warn("fault", "UFFD_FEATURE_THREAD_ID is missing: fatal faults will signal the "
                        "whole process instead of the faulting thread");
    struct uffdio_register reg = {
        .range = {.start = base, .len = size},
        .mode = UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP,
    };
    if (ioctl(fd, UFFDIO_REGISTER, &reg) != 0) {
        int err = errno;
        close(fd);
        m_error("fault", "cannot register the range with userfaultfd (MISSING|WP): %s",
                strerror(err));
        return ENOSYS;
    }
    m_engine.uffd = fd;
    m_engine.uffd_features = api.features;
    m_debug("fault", "userfaultfd ready, kernel features %#llx", (unsigned long long)have);
    return 0;
}

/* ------------------------------------------------------------------------
 * Resolving
 * ---------------------------------------------------------------------- */

static void fault_wake(uintptr_t addr)
{
    struct uffdio_range r = {.start = addr & ~(M_PAGE_SIZE - 1), .len = M_PAGE_SIZE};
    ioctl(m_engine.uffd, UFFDIO_WAKE, &r);
}

/* fault_signal - deliver a fatal signal to the faulting thread (tid 0: the
 * process).  The kernel lets a thread queue a fault's siginfo (si_code
 * BUS_ADRERR, si_addr) only to itself, and a handler thread is never the
 * faulting one, so the signal goes with tgkill (si_code SI_TKILL) to that
 * very thread; kill(), which lets any thread of the process take it, only
 * when the thread is unknown.  Send it before waking the thread: a thread
 * woken with the signal pending takes it instead of faulting again. */
static void fault_signal(pid_t tid, uintptr_t addr, int sig, int code)
{
    m_counter_add(&m_engine.c.faults_fatal, 1);
    pid_t pid = getpid();
    if (tid > 0 && tid == (pid_t)syscall(SYS_gettid)) {
        siginfo_t si;
        memset(&si, 0, sizeof si);
        si.si_signo = sig;
        si.si_code = code;
        si.si_addr = (void *)addr;
        if (syscall(SYS_rt_tgsigqueueinfo, pid, tid, sig, &si) == 0)
            return;
    }
    if (tid > 0 && syscall(SYS_tgkill, pid, tid, sig) == 0)
        return;
    kill(pid, sig);
}

/* uffd_copy - install one page; 0, EEXIST (a page is already there) or an
 * errno. */
static int uffd_copy(uintptr_t addr, const void *src, bool wp)
{
    struct uffdio_copy c = {
        .dst = addr,
        .src = (uintptr_t)src,
        .len = M_PAGE_SIZE,
        .mode = wp ? UFFDIO_COPY_MODE_WP : 0,
    };
    for (;;) {
        if (ioctl(m_engine.uffd, UFFDIO_COPY, &c) == 0)
            return 0;
        if (errno == EAGAIN) /* the mm changed under us (e.g. mprotect): retry */
            continue;
        return errno;
    }
}

int m_fault_copy_in(uintptr_t addr, const void *src)
{
    return uffd_copy(addr, src, false);
}

static void fault_budget_exhausted(pid_t tid, uintptr_t addr)
{
    m_fatal("fault",
            "budget exhausted: page %#lx cannot be made resident: %llu of %llu budget pages "
            "are resident and %llu are unreclaimable; raise the budget (MOAT_BUDGET) or "
            "unpin memory",
            (unsigned long)addr, (unsigned long long)atomic_load(&m_engine.c.resident),
            (unsigned long long)m_engine.budget_pages,
            (unsigned long long)atomic_load(&m_engine.c.unreclaimable));
    fault_signal(tid, addr, SIGBUS, BUS_ADRERR);
}

/*
 * Resolving more than one page per fault
 * --------------------------------------
 * A fault round trip costs 10-65 us; installing a page costs 1-2 us.  So
 * when a fault continues a sequential stream, the handler also installs the
 * pages after it that are in the same state: up to fault_ahead (default 16)
 * zero pages in one UFFDIO_COPY for first touches, as many sealed pages read
 * in one store submission for page-ins (above the page along an upward
 * stream, below it along a downward one: fault_readahead).  fault_ahead = 1 restores Intel
 * EMM's exact one-page commit per fault.  Pages installed ahead count as
 * committed and resident like any other; pages loaded ahead are installed
 * clean (write-protected) so reclaim can drop them for free if they go
 * unused.
 *
 * What counts as a stream: a fault exactly where an earlier fault's run
 * ended (the page after the last one it installed).  So the first fault of
 * a stream installs one page, the second (at the next page) starts reading
 * ahead, and each later one lands on the end of the previous run.  An older
 * rule, "the page before is resident", took random first touches next to
 * resident pages for streams: in xz's randomly probed 64 MiB hash table it
 * committed 16 untouched pages per probe, which were then sealed and
 * written out, 26 times the kernel's swap traffic (docs/bench.md).
 * Streams are kept in a small table of expected next pages, one per
 * recent stream, so a few threads sweeping at once each keep theirs; the
 * table is a hint read and written without locks (a lost update costs one
 * fault-ahead, never correctness).
 */
#define FAULT_AHEAD   M_FAULT_AHEAD_MAX /* the most; m_engine.fault_ahead is the setting */
#define FAULT_STREAMS 16
/* First touches of a stream ramp up: each run twice the last, from
 * fault_ahead up to this many pages, as the kernel's readahead window does.
 * A page costs 1-2 us to install and a fault 10-65 us, so long sweeps (a
 * heap growing, a big calloc) take a fault per 512 KiB instead of per
 * 64 KiB: python's 260 MiB under a big budget went from 0.85 s to 0.64 s
 * with 32 pages a fault, against 0.44 s without moat. */
#define FAULT_ZERO_MAX 128

/* the source of zero-fill copies: in .bss, so it costs no file space and
 * reads as the kernel's zero page */
static _Alignas(4096) uint8_t fault_zero_run[FAULT_ZERO_MAX * 4096];
/* Streams run up (fault_up: a heap growing, a sweep) or down (fault_down:
 * GNU sort fills its buffer from both ends, stacks grow down); `next` is
 * the page a stream expects next, 0 for none. */
struct fault_streams {
    _Atomic size_t next[FAULT_STREAMS];
    _Atomic size_t len[FAULT_STREAMS]; /* pages of its last run */
    _Atomic unsigned victim;
};
static struct fault_streams fault_up, fault_down;

/* fault_stream_slot - the stream of t expecting index, or -1. */
static int fault_stream_slot(struct fault_streams *t, size_t index)
{
    for (int i = 0; i < FAULT_STREAMS; i++)
        if (atomic_load_explicit(&t->next[i], memory_order_relaxed) == index)
            return i;
    return -1;
}

/* fault_sequential - does a fault at index continue an upward stream? */
static bool fault_sequential(size_t index)
{
    return index != 0 && fault_stream_slot(&fault_up, index) >= 0;
}

/* fault_zero_window - pages a first touch at index may install along the
 * streams of t: 1 off a stream; on one, twice its last run, at least
 * fault_ahead, at most FAULT_ZERO_MAX (and 1 when fault_ahead is 1: EMM's
 * exact commit). */
static size_t fault_zero_window(struct fault_streams *t, size_t index)
{
    size_t ahead = m_engine.fault_ahead;
    int i = index != 0 && ahead > 1 ? fault_stream_slot(t, index) : -1;
    if (i < 0)
        return 1;
    size_t w = 2 * atomic_load_explicit(&t->len[i], memory_order_relaxed);
    if (w < ahead)
        w = ahead;
    return w > FAULT_ZERO_MAX ? FAULT_ZERO_MAX : w;
}

/* fault_stream_set - the stream of t that expected index (or a new one,
 * replacing the oldest) ran n pages and now expects next. */
static void fault_stream_set(struct fault_streams *t, size_t index, size_t next, size_t n)
{
    int i = fault_stream_slot(t, index);
    if (i < 0)
        i = (int)(atomic_fetch_add_explicit(&t->victim, 1, memory_order_relaxed) % FAULT_STREAMS);
    atomic_store_explicit(&t->len[i], n, memory_order_relaxed);
    atomic_store_explicit(&t->next[i], next, memory_order_relaxed);
}

/* fault_stream_note - a fault at index installed n pages upwards. */
static void fault_stream_note(size_t index, size_t n)
{
    fault_stream_set(&fault_up, index, index + n, n);
}

static void fault_streams_forget(struct fault_streams *t, size_t first, size_t end)
{
    for (int i = 0; i < FAULT_STREAMS; i++) {
        size_t next = atomic_load_explicit(&t->next[i], memory_order_relaxed);
        if (next >= first && next <= end)
            atomic_store_explicit(&t->next[i], 0, memory_order_relaxed);
    }
}

void m_fault_streams_forget(size_t first, size_t end)
{
    /* a stream that expected the range's first page (or, downwards, its
     * last) is over too: that page is a fresh one now */
    fault_streams_forget(&fault_up, first, end);
    fault_streams_forget(&fault_down, first > 0 ? first - 1 : 0, end);
}

/* fault_ahead_limit - how many pages from index a batch may cover. */
static size_t fault_ahead_limit(size_t index, const struct m_region_info *r, size_t want)
{
    if (!r)
        return 1;
    size_t left = (r->end - m_engine_addr(index)) >> M_PAGE_SHIFT;
    return left < want ? left : want;
}

/* pages read ahead of page-in faults (moat_stats.pagein_readahead) */
static _Atomic uint64_t fault_readahead_pages;

/* fault_readahead - how many pages a page-in at index reads, itself
 * included, and in which direction: along an upward stream the pages above
 * it, along a downward one the pages below it (python walks its heap
 * downwards: 15-16 s -> 6 s for tests' big.py under 48M), 1 off any stream
 * or outside a region. */
static size_t fault_readahead(size_t index, const struct m_region_info *r, bool *down)
{
    *down = false;
    if (!r)
        return 1;
    if (fault_sequential(index))
        return fault_ahead_limit(index, r, m_engine.fault_ahead);
    if (index == 0 || fault_stream_slot(&fault_down, index) < 0)
        return 1;
    size_t below = (m_engine_addr(index) - r->start) >> M_PAGE_SHIFT; /* pages under it */
    size_t limit = m_engine.fault_ahead <= below + 1 ? m_engine.fault_ahead : below + 1;
    *down = limit > 1;
    return limit;
}

/* fault_readahead_note - a page-in at index loaded n pages (down: below it):
 * the stream goes on from the end of the run.  A lone page-in may start a
 * stream either way. */
static void fault_readahead_note(size_t index, size_t n, bool down)
{
    if (down) {
        fault_stream_set(&fault_down, index, index >= n ? index - n : 0, n);
        return;
    }
    fault_stream_note(index, n);
    if (n == 1)
        fault_stream_set(&fault_down, index, index ? index - 1 : 0, 1);
}

/* fault_zero_fill - UNTOUCHED -> RESIDENT for index and, if r is given and
 * the fault continues a stream, for the UNTOUCHED (or uncommitted, in a
 * COMMIT_ON_DEMAND area) pages next to it in the stream's direction: above
 * it for an upward stream, below it for a downward one.  0, ENOMEM, or
 * EAGAIN (state changed, or the faulting page was not installed: re-derive).
 * Page k of the run is index + k upwards, index - k downwards; the run is
 * installed with one UFFDIO_COPY from its lowest page. */
static int fault_zero_fill(size_t index, bool pin, const struct m_region_info *r)
{
    size_t limit = r ? fault_ahead_limit(index, r, fault_zero_window(&fault_up, index)) : 1;
    bool down = false;
    if (r && limit == 1) {
        size_t below = (m_engine_addr(index) - r->start) >> M_PAGE_SHIFT; /* pages under it */
        size_t w = fault_zero_window(&fault_down, index);
        limit = w <= below + 1 ? w : below + 1;
        down = limit > 1;
    }
    bool commit_ahead = r && (r->flags & MOAT_COMMIT_ON_DEMAND) && !r->handler;
    uint32_t fl[FAULT_ZERO_MAX], orig[FAULT_ZERO_MAX];
    size_t n = 0, ncommitted = 0;
#define RUN_PAGE(k) (down ? index - (k) : index + (k))
    uint32_t f = m_page_lock(m_engine_page(index));
    if (m_page_state(f) != M_PS_UNTOUCHED) {
        m_page_unlock(m_engine_page(index), f);
        return EAGAIN;
    }
    orig[n] = f;
    fl[n++] = f;
    while (n < limit) {
        struct m_page *q = m_engine_page(RUN_PAGE(n));
        if (!m_page_trylock(q, &f))
            break;
        orig[n] = f;
        unsigned st = m_page_state(f);
        if (st == M_PS_UNCOMMITTED && commit_ahead) {
            f = m_page_set_state(f, M_PS_UNTOUCHED) & ~M_PF_PROT_MASK;
            f |= (uint32_t)(r->prot & MOAT_PROT_MASK) << M_PF_PROT_SHIFT;
            ncommitted++;
        } else if (st != M_PS_UNTOUCHED || !(m_page_prot(f) & MOAT_PROT_WRITE)) {
            m_page_unlock(q, f);
            break;
        }
        fl[n++] = f;
    }
    /* Charging under page locks is safe: reclaim only ever trylocks pages
     * (a locked page is skipped), so it cannot wait on ours. */
    bool charged = false;
    size_t keep = n;
    if (n > m_engine.fault_ahead && m_budget_try_charge(n) == 0)
        charged = true;
    else if (n > m_engine.fault_ahead)
        keep = m_engine.fault_ahead; /* a window the budget cannot take at once */
    if (!charged && keep > 1) {
        if (m_budget_try_charge(keep) == 0)
            charged = true;
        else
            keep = 1; /* tight budget: keep the faulting page only */
    }
    for (size_t k = keep; k < n; k++) {
        m_page_unlock(m_engine_page(RUN_PAGE(k)), orig[k]);
        if (m_page_state(orig[k]) == M_PS_UNCOMMITTED)
            ncommitted--;
    }
    n = keep;
    if (!charged && m_budget_charge(1) != 0) {
        m_page_unlock(m_engine_page(index), fl[0]);
        return ENOMEM;
    }
    if (ncommitted)
        m_counter_level(&m_engine.c.committed, &m_engine.c.peak_committed, ncommitted);
    /* counted before the copy: UFFDIO_COPY wakes the faulting thread, which
     * may read the statistics, or take its next fault, at once */
    m_counter_add(&m_engine.c.faults_commit, 1);
    if (r) {
        if (down) {
            fault_stream_set(&fault_down, index, index >= n ? index - n : 0, n);
        } else {
            fault_stream_note(index, n);
            if (n == 1) /* a lone fault may start a stream either way */
                fault_stream_set(&fault_down, index, index ? index - 1 : 0, 1);
        }
    }
    size_t base = down ? index - (n - 1) : index;
    struct uffdio_copy c = {
        .dst = m_engine_addr(base), .src = (uintptr_t)fault_zero_run, .len = n * M_PAGE_SIZE};
    while (ioctl(m_engine.uffd, UFFDIO_COPY, &c) != 0 && errno == EAGAIN)
        ;
    /* c.copy: bytes installed from the lowest page, or a negative error; a
     * page mapped meanwhile (EEXIST) ends the run early, and the pages after
     * it stay untouched */
    size_t done = c.copy > 0 ? (size_t)c.copy / M_PAGE_SIZE : 0;
    if (c.copy == -EEXIST && done == 0 && !down)
        done = 1; /* the faulting page was mapped by someone else: fine */
    if (done == 0) {
        m_counter_sub(&m_engine.c.faults_commit, 1);
        if (c.copy != -EEXIST)
            m_error("fault", "UFFDIO_COPY of zero pages at %#lx failed: %s",
                    (unsigned long)m_engine_addr(base), strerror((int)-c.copy));
    }
    for (size_t k = 0; k < n; k++) {
        struct m_page *q = m_engine_page(RUN_PAGE(k));
        size_t off = down ? n - 1 - k : k; /* from the lowest page */
        f = fl[k];
        if (off < done) {
            f = m_page_set_state(f, M_PS_RESIDENT) | M_PF_DIRTY;
            if (pin && k == 0) {
                f |= M_PF_PINNED;
                m_counter_add(&m_engine.c.unreclaimable, 1);
            } else {
                f = m_reclaim_track(RUN_PAGE(k), f);
            }
        }
        m_page_unlock(q, f);
    }
#undef RUN_PAGE
    if (n > done)
        m_budget_uncharge(n - done);
    if (down && done < n)
        return done || c.copy == -EEXIST ? EAGAIN : EIO; /* the faulting page is the top one */
    return done ? 0 : EIO;
}

/*
 * Clean or dirty?  A page loaded by a read fault is installed write-protected,
 * so it stays clean (reclaim drops it without a write) until a write faults
 * once more: a second round trip.  When most pages loaded clean are written
 * soon after anyway (read-modify-write sweeps), that round trip is wasted, so
 * the handler watches the ratio over the last 64 clean loads and, above one
 * half, installs loaded pages writable and dirty instead (still sampling one
 * load in 16 clean, so a change of pattern is noticed).
 */
static _Atomic uint32_t load_clean_count, load_dirtied_count, load_count;
static _Atomic bool load_dirty_mode;

static bool fault_load_dirty(void)
{
    return atomic_load_explicit(&load_dirty_mode, memory_order_relaxed);
}

static void fault_note_clean_load(void)
{
    uint32_t n = atomic_fetch_add_explicit(&load_clean_count, 1, memory_order_relaxed) + 1;
    if (n % 64 == 0) {
        uint32_t d = atomic_exchange(&load_dirtied_count, 0);
        atomic_store(&load_dirty_mode, d > 32);
    }
}

/* fault_load_fail - the page at index could not be loaded: back to
 * EVICTED; `bad` marks it so every access gets SIGBUS.  The page's waiters
 * are woken, except for a bad page: its caller signals the faulting thread
 * first and then wakes them (fault_signal). */
static void fault_load_fail(size_t index, bool bad, bool charged)
{
    struct m_page *p = m_engine_page(index);
    uint32_t f = m_page_lock(p);
    f = m_page_set_state(f, M_PS_EVICTED);
    if (bad)
        f |= M_PF_BAD;
    m_page_unlock(p, f);
    if (charged)
        m_budget_uncharge(1);
    if (!bad)
        fault_wake(m_engine_addr(index));
}

/* fault_load_one - finish the load of page idx, whose read gave e (0: its
 * sealed record is in rec): open the seal into plain and install the page,
 * or put it back EVICTED.  `faulting` is the page a thread faulted on (the
 * others were read ahead): only its failures are logged and mark it BAD (so
 * every access gets SIGBUS), and only it can be installed writable for a
 * write fault, or pinned.  The page's budget charge is the caller's and is
 * returned on failure.  0 or the page's error. */
static int fault_load_one(size_t idx, uint32_t pf, uint64_t region_id, bool faulting, bool write,
                          bool pin, const void *rec, void *plain, int e)
{
    struct m_page *q = m_engine_page(idx);
    uintptr_t addr = m_engine_addr(idx);
    uint64_t found = 0;
    if (e) {
        if (faulting)
            m_error("fault", "reading page %#lx from the store (slot %u) failed: %s",
                    (unsigned long)addr, q->slot, strerror(e));
        m_counter_add(&m_engine.c.store_errors, 1);
    } else {
        m_counter_add(&m_engine.c.store_bytes_read, M_STORE_RECORD);
        struct m_seal_id id = {.region_id = region_id, .page_index = idx, .version = q->version};
        e = m_seal_open(rec, &id, plain, &found);
        if (e && faulting) {
            m_counter_add(&m_engine.c.integrity_failures, 1);
            if (e == ESTALE)
                m_error("integrity",
                        "page %#lx (region %llu, index %zu): replayed sealed copy: version "
                        "%llu found, %u expected; the page is not mapped",
                        (unsigned long)addr, (unsigned long long)region_id, idx,
                        (unsigned long long)found, q->version);
            else
                m_error("integrity",
                        "page %#lx (region %llu, index %zu, version %u): sealed copy fails "
                        "authentication (%s); the page is not mapped",
                        (unsigned long)addr, (unsigned long long)region_id, idx, q->version,
                        e == EBADMSG ? "tampered, foreign or replayed record" : strerror(e));
        }
    }
    if (!e) {
        bool wp = !(write && faulting) && (m_page_prot(pf) & MOAT_PROT_WRITE);
        /* in dirty mode one load in 16 stays clean, to keep sampling */
        if (wp && fault_load_dirty() &&
            (atomic_fetch_add_explicit(&load_count, 1, memory_order_relaxed) & 15) != 0)
            wp = false;
        if (wp)
            fault_note_clean_load();
        m_counter_sub(&m_engine.c.evicted, 1);
        m_counter_add(&m_engine.c.faults_pagein, 1);
        e = uffd_copy(addr, plain, wp);
        if (e == EEXIST)
            e = 0;
        if (!e) {
            uint32_t f = m_page_lock(q);
            f = m_page_set_state(f & ~M_PF_STAMP_MASK, M_PS_RESIDENT);
            f |= wp ? M_PF_WP : M_PF_DIRTY;
            if (faulting)
                f |= m_reclaim_refault(pf);
            if (pin && faulting) {
                f |= M_PF_PINNED;
                m_counter_add(&m_engine.c.unreclaimable, 1);
            } else {
                f = m_reclaim_track(idx, f);
            }
            m_page_unlock(q, f);
        } else {
            m_counter_add(&m_engine.c.evicted, 1);
            m_counter_sub(&m_engine.c.faults_pagein, 1);
            m_error("fault", "UFFDIO_COPY at %#lx failed: %s", (unsigned long)addr, strerror(e));
        }
    }
    /* a page read ahead that fails is simply not installed: its own fault
     * will report it */
    if (e)
        fault_load_fail(idx, faulting, true);
    return e;
}

/* fault_take_ahead - page idx, read ahead of a page-in, if it is EVICTED
 * (not bad) and its lock is free at once: LOADING now, its flags before in
 * *f.  false: the run of read-ahead stops there. */
static bool fault_take_ahead(size_t idx, uint32_t *f)
{
    struct m_page *q = m_engine_page(idx);
    if (!m_page_trylock(q, f))
        return false;
    if (m_page_state(*f) != M_PS_EVICTED || (*f & M_PF_BAD)) {
        m_page_unlock(q, *f);
        return false;
    }
    m_page_unlock(q, m_page_set_state(*f, M_PS_LOADING));
    return true;
}

/* fault_load - EVICTED -> LOADING -> RESIDENT for index, and when the fault
 * looks sequential for the EVICTED pages right after it (read in the same
 * store submission).  0, ENOMEM, EAGAIN (state changed), or the
 * integrity/I-O error of the faulting page (which is then marked BAD; the
 * caller signals the faulting thread and then wakes the page's waiters, who
 * fault again and take their own signal). */
static int fault_load(size_t index, bool write, bool pin, const struct m_region_info *r)
{
    struct m_io_ctx *io = m_io_ctx_get();
    if (!io)
        return EIO;
    bool down;
    size_t limit = fault_readahead(index, r, &down);
    if (limit > io->nrecords)
        limit = io->nrecords;
#define LOAD_PAGE(k) (down ? index - (k) : index + (k))
    uint64_t region_id = r ? r->id : 0;
    uint32_t fl[FAULT_AHEAD];
    size_t n = 0;
    struct m_page *p = m_engine_page(index);
    uint32_t f = m_page_lock(p);
    if (m_page_state(f) != M_PS_EVICTED || (f & M_PF_BAD)) {
        m_page_unlock(p, f);
        return (f & M_PF_BAD) ? EBADMSG : EAGAIN;
    }
    fl[n++] = f;
    m_page_unlock(p, m_page_set_state(f, M_PS_LOADING));
    while (n < limit && fault_take_ahead(LOAD_PAGE(n), &f))
        fl[n++] = f;
    /* LOADING: this thread owns slot and version of these pages now. */
    if (n > 1 && m_budget_try_charge(n) != 0) {
        for (size_t k = 1; k < n; k++)
            fault_load_fail(LOAD_PAGE(k), false, false);
        n = 1;
    }
    if (n == 1 && m_budget_charge(1) != 0) {
        fault_load_fail(index, false, false);
        return ENOMEM;
    }
    struct m_store_io ios[FAULT_AHEAD], *iop[FAULT_AHEAD];
    for (size_t k = 0; k < n; k++) {
        ios[k] = (struct m_store_io){.op = M_STORE_READ,
                                     .slot = m_slot_store(m_engine_page(LOAD_PAGE(k))->slot),
                                     .buf = io->records + k * M_IO_STRIDE};
        iop[k] = &ios[k];
    }
    /* noted before the first install wakes the faulting thread */
    if (r)
        fault_readahead_note(index, n, down);
    if (n > 1)
        m_counter_add(&fault_readahead_pages, n - 1);
    int err = m_store_rw(io->queue, iop, n);
    int first_err = 0;
    for (size_t k = 0; k < n; k++) {
        int e = fault_load_one(LOAD_PAGE(k), fl[k], region_id, k == 0, write, pin, ios[k].buf,
                               io->plain, err ? err : ios[k].result);
        if (k == 0)
            first_err = e;
    }
    memset(io->plain, 0, M_PAGE_SIZE);
    return first_err;
#undef LOAD_PAGE
}

static const char *fault_region_kind(const struct m_region_info *r)
{
    if (m_region_is_reserve(r))
        return "a RESERVE area (reserved, not committed)";
    if (r->flags & MOAT_COMMIT_ON_DEMAND)
        return "a COMMIT_ON_DEMAND area";
    return "a COMMIT_NOW area";
}

/* fault_missing - a missing-page fault at addr by thread tid. */
static void fault_missing(uintptr_t addr, bool write, pid_t tid)
{
    size_t index = m_engine_index(addr);
    struct m_page *p = m_engine_page(index);
    struct m_region_info r;
    bool have_region = m_region_find(addr, &r) == 0;
    for (;;) {
        uint32_t f = atomic_load(&p->flags);
        switch (m_page_state(f)) {
        case M_PS_UNCOMMITTED:
            if (!have_region || !(r.flags & MOAT_COMMIT_ON_DEMAND) || r.handler) {
                /* Outside any area, in a RESERVE area, or an uncommitted page
                 * that is not committed on demand: all of these are
                 * PROT_NONE, so a real access raises SIGSEGV (and moat's
                 * handler reports it) before it can reach userfaultfd.  This
                 * message is stale: its thread was woken by another
                 * resolution and the area was freed since.  Signalling it
                 * now would hit a thread that is elsewhere; wake instead, and
                 * a thread that really waits retries into the SIGSEGV. */
                m_debug("fault", "stale fault at %#lx (thread %d): no committable page there",
                        (unsigned long)addr, (int)tid);
                fault_wake(addr);
                return;
            }
            f = m_page_lock(p);
            if (m_page_state(f) == M_PS_UNCOMMITTED) {
                f = m_page_set_state(f, M_PS_UNTOUCHED) & ~M_PF_PROT_MASK;
                f |= (uint32_t)(r.prot & MOAT_PROT_MASK) << M_PF_PROT_SHIFT;
                m_counter_level(&m_engine.c.committed, &m_engine.c.peak_committed, 1);
            }
            m_page_unlock(p, f);
            continue;
        case M_PS_UNTOUCHED: {
            int err = fault_zero_fill(index, false, have_region ? &r : NULL);
            if (err == EAGAIN)
                continue;
            if (err == ENOMEM)
                fault_budget_exhausted(tid, addr);
            else if (err)
                fault_signal(tid, addr, SIGBUS, BUS_ADRERR);
            return;
        }
        case M_PS_RESIDENT: {
            /* Resolved meanwhile, or the program discarded the page itself
             * (madvise): a discarded private page reads as zeros. */
            f = m_page_lock(p);
            if (m_page_state(f) == M_PS_RESIDENT && uffd_copy(addr, fault_zero_page, false) == 0)
                f = (f | M_PF_DIRTY) & ~M_PF_WP;
            m_page_unlock(p, f);
            fault_wake(addr);
            return;
        }
        case M_PS_EVICTED: {
            if (f & M_PF_BAD) {
                fault_signal(tid, addr, SIGBUS, BUS_ADRERR);
                return;
            }
            int err = fault_load(index, write, false, have_region ? &r : NULL);
            if (err == EAGAIN)
                continue;
            if (err == ENOMEM) {
                fault_budget_exhausted(tid, addr);
            } else if (err) {
                fault_signal(tid, addr, SIGBUS, BUS_ADRERR);
                fault_wake(addr);
            }
            return;
        }
        case M_PS_LOADING:
            /* the loader's UFFDIO_COPY (or its failure path) wakes us */
            return;
        case M_PS_EVICTING:
        default:
            /* Only a page the program zapped itself can miss while it is
             * being written out: wait for the evictor, then load it. */
            usleep(20);
            continue;
        }
    }
}

/* fault_wp - a write to a write-protected page. */
static void fault_wp(uintptr_t addr)
{
    size_t index = m_engine_index(addr);
    struct m_page *p = m_engine_page(index);
    uint32_t f = m_page_lock(p);
    unsigned st = m_page_state(f);
    if (st == M_PS_EVICTING) {
        /* The evictor wakes us after the zap; the retry then misses and
         * waits for the page-in. */
        m_page_unlock(p, f | M_PF_WAITER);
        return;
    }
    if (st == M_PS_RESIDENT && (f & M_PF_WP)) {
        struct uffdio_writeprotect wp = {
            .range = {.start = addr & ~(M_PAGE_SIZE - 1), .len = M_PAGE_SIZE}, .mode = 0};
        m_counter_add(&m_engine.c.wp_calls, 1);
        if (ioctl(m_engine.uffd, UFFDIO_WRITEPROTECT, &wp) == 0) {
            if (f & M_PF_SAMPLED) { /* hot: the next laps keep it without a sample */
                f = (f & ~M_PF_HOT_MASK) | M_PF_HOT_MASK;
                m_budget_sample_rescued(index);
            } else if (!(f & M_PF_DIRTY)) {
                /* a page loaded clean, written: "Clean or dirty?" above
                 * (a sampled page is dirty already and says nothing about
                 * loads; counting it made pages load dirty) */
                atomic_fetch_add_explicit(&load_dirtied_count, 1, memory_order_relaxed);
            }
            f = (f & ~M_PF_WP) | M_PF_DIRTY | M_PF_REF;
            m_counter_add(&m_engine.c.faults_wp, 1);
        } else {
            m_error("fault", "cannot lift write protection at %#lx: %s", (unsigned long)addr,
                    strerror(errno));
        }
        m_page_unlock(p, f);
        return;
    }
    m_page_unlock(p, f);
    fault_wake(addr);
}

int m_fault_install(size_t index, bool pin)
{
    struct m_page *p = m_engine_page(index);
    for (;;) {
        uint32_t f = m_page_lock(p);
        switch (m_page_state(f)) {
        case M_PS_UNCOMMITTED:
            m_page_unlock(p, f);
            return EACCES;
        case M_PS_RESIDENT:
            if (pin && !(f & M_PF_PINNED)) {
                f |= M_PF_PINNED;
                m_counter_add(&m_engine.c.unreclaimable, 1);
            }
            m_page_unlock(p, f);
            return 0;
        case M_PS_UNTOUCHED: {
            m_page_unlock(p, f);
            int err = fault_zero_fill(index, pin, NULL);
            if (err != EAGAIN)
                return err;
            continue;
        }
        case M_PS_EVICTED: {
            m_page_unlock(p, f);
            struct m_region_info r;
            bool have = m_region_find(m_engine_addr(index), &r) == 0;
            int err = fault_load(index, false, pin, have ? &r : NULL);
            if (err && err != EAGAIN && err != ENOMEM)
                fault_wake(m_engine_addr(index)); /* its waiters take SIGBUS */
            if (err != EAGAIN)
                return err;
            continue;
        }
        default:
            m_page_unlock(p, f);
            usleep(20);
            continue;
        }
    }
}

/* ------------------------------------------------------------------------
 * Handler threads
 * ---------------------------------------------------------------------- */

static void fault_dispatch(const struct uffd_msg *msg)
{
    if (msg->event != UFFD_EVENT_PAGEFAULT)
        return;
    uint64_t t0 = m_now_ns();
    uintptr_t addr = (uintptr_t)msg->arg.pagefault.address & ~(M_PAGE_SIZE - 1);
    uint64_t flags = msg->arg.pagefault.flags;
    pid_t tid =
        (m_engine.uffd_features & UFFD_FEATURE_THREAD_ID) ? (pid_t)msg->arg.pagefault.feat.ptid : 0;
    if (!m_engine_contains(addr))
        fault_wake(addr);
    else if (flags & UFFD_PAGEFAULT_FLAG_WP)
        fault_wp(addr);
    else
        fault_missing(addr, flags & UFFD_PAGEFAULT_FLAG_WRITE, tid);
    m_counter_add(&m_engine.c.fault_ns, m_now_ns() - t0);
}

/*
 * Batched, pipelined page-in
 * --------------------------
 * A random page-in is one store round trip.  Served one at a time, the
 * page-ins in flight are as many as the handler threads, and a disk that
 * does 16k random reads a second at queue depth 1 does 59k at depth 8
 * (fio, this machine's virtio disk): the kernel's swap gets that depth for
 * free, every faulting thread reads its own page.  So a handler thread does
 * not wait for a page-in before it takes the next fault: the MISSING faults
 * of each read() of the userfaultfd whose pages are EVICTED are started
 * together - every page marked LOADING (with its read-ahead when the fault
 * continues a stream, exactly as fault_load does), the budget charged once
 * for all, all the reads in one store submission (on a redis store one
 * pipeline a node; on the file store one io_uring submit) - and the handler
 * goes back to the userfaultfd, reaping completions between reads: each
 * page is opened and installed as its reply comes, which wakes its thread.
 * Up to FAULT_BATCH_RECORDS pages are in flight per handler; when nothing
 * else is to be done it spins a little on both, then waits for the store.
 *
 * The rules of a single page-in hold page by page (fault_load_one):
 * integrity or I/O errors give the faulting thread SIGBUS, a page read ahead
 * that fails is just not installed.  A fault on a page in flight (LOADING) is
 * dropped: the page's UFFDIO_COPY wakes every thread waiting on it.  Faults
 * that are not page-ins of EVICTED pages are served one by one as before,
 * and so are page-ins beyond the handler's free records.
 *
 * Pages in flight are charged to the budget but cannot be reclaimed until
 * they are installed, so a handler keeps at most a quarter of the budget in
 * flight, and installs what it has in flight before it waits for the budget
 * (a handler waiting on its own uninstalled pages would wait forever).
 *
 * 8 threads paging under 32M (bench/programs.sh's threads, 5 runs each,
 * interleaved): 6.5 s median with one batch at a time per handler, 6.2 s
 * pipelined - within this machine's noise, where the disk is the limit (it
 * runs at queue depth 8 either way); a handler no longer sits idle in a
 * read while other faults (first touches, write-protect faults) wait.
 *
 * Each handler thread has its own store queue and records for batches
 * (fault_batcher, made at the first batch), separate from its I/O context,
 * which the budget's synchronous reclaim uses while a batch is charged.
 */
#define FAULT_BATCH_RECORDS 128 /* pages one handler has in flight at most */
#define FAULT_WAIT_SPIN     32  /* idle rounds with pages in flight before waiting */

static _Atomic uint64_t fault_batches, fault_batch_pages;

void m_fault_batch_stats(uint64_t *batches, uint64_t *pages, uint64_t *readahead)
{
    *batches = atomic_load_explicit(&fault_batches, memory_order_relaxed);
    *pages = atomic_load_explicit(&fault_batch_pages, memory_order_relaxed);
    *readahead = atomic_load_explicit(&fault_readahead_pages, memory_order_relaxed);
}

/* One page read by a batch. */
struct fault_item {
    struct m_store_io io;
    size_t index;
    uint32_t flags; /* at the LOADING transition */
    uint64_t region_id;
    uintptr_t fault_addr; /* the faulting page, 0 for a page read ahead */
    uint64_t t0;          /* when its fault was read (fault_ns) */
    pid_t tid;
    bool write;
    bool region; /* the page is in a region (fault-ahead streams) */
    bool down;   /* its read-ahead runs downwards */
};

struct fault_batcher {
    struct m_store_queue *queue;
    uint8_t *mem;     /* one plaintext page, then FAULT_BATCH_RECORDS records */
    uint8_t *records; /* at M_IO_STRIDE; record k belongs to items[k] */
    struct fault_item items[FAULT_BATCH_RECORDS];
    uint16_t free[FAULT_BATCH_RECORDS]; /* items not in flight */
    size_t nfree;
};

#define FAULT_BATCHER_BYTES (M_PAGE_SIZE + FAULT_BATCH_RECORDS * M_IO_STRIDE)

static size_t fault_batch_inflight(const struct fault_batcher *b)
{
    return FAULT_BATCH_RECORDS - b->nfree;
}

static int fault_batcher_ready(struct fault_batcher *b)
{
    if (b->queue)
        return 0;
    if (!b->mem) {
        void *mem = mmap(NULL, FAULT_BATCHER_BYTES, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (mem == MAP_FAILED)
            return errno;
        madvise(mem, FAULT_BATCHER_BYTES, MADV_DONTDUMP); /* plaintext passes through */
        b->mem = mem;
        b->records = b->mem + M_PAGE_SIZE;
    }
    int err = m_store_queue_new(m_engine.store, FAULT_BATCH_RECORDS, &b->queue);
    if (err) {
        m_error("fault",
                "cannot create a store queue for batched page-ins: %s (serving "
                "page-ins one by one)",
                strerror(err));
        return err;
    }
    for (size_t k = 0; k < FAULT_BATCH_RECORDS; k++)
        b->free[k] = (uint16_t)(FAULT_BATCH_RECORDS - 1 - k);
    b->nfree = FAULT_BATCH_RECORDS;
    return 0;
}

static void fault_batcher_free(struct fault_batcher *b)
{
    m_store_queue_free(b->queue);
    b->queue = NULL;
    if (b->mem)
        munmap(b->mem, FAULT_BATCHER_BYTES);
    b->mem = b->records = NULL;
}

/* fault_batchable - is msg a missing-page fault on an EVICTED page (a hint:
 * fault_batch looks again under the page lock)? */
static bool fault_batchable(const struct uffd_msg *msg)
{
    if (msg->event != UFFD_EVENT_PAGEFAULT || (msg->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP))
        return false;
    uintptr_t addr = (uintptr_t)msg->arg.pagefault.address;
    if (!m_engine_contains(addr))
        return false;
    uint32_t f =
        atomic_load_explicit(&m_engine_page(m_engine_index(addr))->flags, memory_order_relaxed);
    return m_page_state(f) == M_PS_EVICTED && !(f & M_PF_BAD);
}

static bool fault_batch_has(const struct fault_item *it, size_t n, size_t index)
{
    for (size_t k = 0; k < n; k++)
        if (it[k].index == index)
            return true;
    return false;
}

/* fault_batch_drop - items [from, n) that are read ahead go back to EVICTED
 * (uncharged); returns the new count, faulting pages kept in order. */
static size_t fault_batch_drop_ahead(struct fault_item *it, size_t from, size_t n)
{
    size_t keep = from;
    for (size_t k = from; k < n; k++) {
        if (it[k].fault_addr)
            it[keep++] = it[k];
        else
            fault_load_fail(it[k].index, false, false);
    }
    return keep;
}

static size_t fault_batch_reap(struct fault_batcher *b, size_t min);

/* fault_batch_charge - charge the budget for items [0, n), or, when it
 * cannot take them at once (after installing this thread's pages in
 * flight), drop the pages read ahead and charge the
 * faulting pages one by one (a page that cannot be charged is put back and
 * its thread gets the budget's fatal error).  Returns the items kept. */
static size_t fault_batch_charge(struct fault_batcher *b, struct fault_item *it, size_t n)
{
    if (m_budget_try_charge(n) == 0)
        return n;
    /* This thread's pages in flight are charged but cannot be reclaimed
     * until it installs them: install them before waiting on the budget. */
    if (fault_batch_inflight(b)) {
        fault_batch_reap(b, fault_batch_inflight(b));
        if (m_budget_try_charge(n) == 0)
            return n;
    }
    size_t nfaulting = fault_batch_drop_ahead(it, 0, n);
    if (nfaulting < n && nfaulting > 1 && m_budget_try_charge(nfaulting) == 0)
        return nfaulting;
    n = nfaulting;
    size_t keep = 0;
    for (size_t k = 0; k < n; k++) {
        if (m_budget_charge(1) == 0) {
            it[keep++] = it[k];
            continue;
        }
        fault_load_fail(it[k].index, false, false);
        fault_budget_exhausted(it[k].tid, it[k].fault_addr);
    }
    return keep;
}

/* fault_batch_finish - item k's read completed with e (0: its record is in
 * its buffer): install the page or fail it, and free the item. */
static void fault_batch_finish(struct fault_batcher *b, struct fault_item *it, int e)
{
    e = fault_load_one(it->index, it->flags, it->region_id, it->fault_addr != 0, it->write, false,
                       it->io.buf, b->mem, e);
    if (e && it->fault_addr) {
        fault_signal(it->tid, it->fault_addr, SIGBUS, BUS_ADRERR);
        fault_wake(it->fault_addr);
    }
    if (it->fault_addr)
        m_counter_add(&m_engine.c.fault_ns, m_now_ns() - it->t0);
    b->free[b->nfree++] = (uint16_t)(it - b->items);
}

/* fault_batch_lost - every page in flight fails with err (the queue broke:
 * its I/Os cannot be accounted; a new queue is made for the next batch). */
static void fault_batch_lost(struct fault_batcher *b, int err)
{
    bool busy[FAULT_BATCH_RECORDS] = {false};
    for (size_t k = 0; k < FAULT_BATCH_RECORDS; k++)
        busy[k] = true;
    for (size_t k = 0; k < b->nfree; k++)
        busy[b->free[k]] = false;
    for (size_t k = 0; k < FAULT_BATCH_RECORDS; k++)
        if (busy[k])
            fault_batch_finish(b, &b->items[k], err);
    memset(b->mem, 0, M_PAGE_SIZE);
    m_store_queue_free(b->queue);
    b->queue = NULL;
}

/* fault_batch_reap - install the pages whose reads completed, waiting for
 * at least `min`.  Returns how many. */
static size_t fault_batch_reap(struct fault_batcher *b, size_t min)
{
    size_t left = fault_batch_inflight(b), total = 0;
    while (left) {
        struct m_store_io *done[FAULT_BATCH_RECORDS];
        size_t nd = 0;
        int err = m_store_reap(b->queue, done, left, min > total ? min - total : 0, &nd);
        for (size_t k = 0; k < nd; k++) {
            struct fault_item *it = done[k]->user;
            fault_batch_finish(b, it, it->io.result);
        }
        total += nd;
        left -= nd;
        if (err) {
            m_error("fault", "waiting for %zu page reads on %s failed: %s", left,
                    m_store_describe(m_engine.store), strerror(err));
            fault_batch_lost(b, err);
            return total;
        }
        if (!nd || total >= min)
            break;
    }
    if (total)
        memset(b->mem, 0, M_PAGE_SIZE);
    return total;
}

/* fault_batch_room - how many more pages this thread may have in flight:
 * free items, and no more than a quarter of the budget in all (pages in
 * flight are charged but cannot be reclaimed). */
static size_t fault_batch_room(const struct fault_batcher *b)
{
    size_t cap = FAULT_BATCH_RECORDS;
    if (m_engine.budget_pages && m_engine.budget_pages / 4 < cap)
        cap = m_engine.budget_pages / 4 ? (size_t)(m_engine.budget_pages / 4) : 1;
    size_t inflight = fault_batch_inflight(b);
    return inflight >= cap ? 0 : cap - inflight < b->nfree ? cap - inflight : b->nfree;
}

/* fault_batch - start the page-ins of msgs[cand[0..nc)] in one store
 * submission.  Messages it did not take (their page changed state, or no
 * record is free) are served one by one afterwards. */
static void fault_batch(struct fault_batcher *b, const struct uffd_msg *msgs, const size_t *cand,
                        size_t nc, uint64_t t0)
{
    const struct uffd_msg *rest[FAULT_BATCH];
    struct fault_item st[FAULT_BATCH_RECORDS];
    if (fault_batch_room(b) == 0) /* full: make room rather than page in one by one */
        fault_batch_reap(b, fault_batch_inflight(b));
    size_t nrest = 0, n = 0, nfaults = 0, room = fault_batch_room(b);
    for (size_t c = 0; c < nc; c++) {
        const struct uffd_msg *msg = &msgs[cand[c]];
        uintptr_t addr = (uintptr_t)msg->arg.pagefault.address & ~(M_PAGE_SIZE - 1);
        size_t index = m_engine_index(addr);
        if (fault_batch_has(st, n, index))
            continue; /* a duplicate: the page's copy wakes this thread too */
        if (n == room) {
            rest[nrest++] = msg;
            continue;
        }
        struct m_page *p = m_engine_page(index);
        uint32_t f = m_page_lock(p);
        if (m_page_state(f) != M_PS_EVICTED || (f & M_PF_BAD)) {
            m_page_unlock(p, f);
            rest[nrest++] = msg;
            continue;
        }
        m_page_unlock(p, m_page_set_state(f, M_PS_LOADING));
        struct m_region_info r;
        bool have_region = m_region_find(addr, &r) == 0;
        uint64_t region_id = have_region ? r.id : 0;
        st[n++] = (struct fault_item){
            .index = index,
            .flags = f,
            .region_id = region_id,
            .fault_addr = addr,
            .t0 = t0,
            .tid = (m_engine.uffd_features & UFFD_FEATURE_THREAD_ID)
                       ? (pid_t)msg->arg.pagefault.feat.ptid
                       : 0,
            .write = (msg->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WRITE) != 0,
            .region = have_region};
        /* read ahead as fault_load does */
        bool down;
        size_t limit = fault_readahead(index, have_region ? &r : NULL, &down);
        st[n - 1].down = down;
        for (size_t k = 1; k < limit && n < room; k++) {
            size_t idx = down ? index - k : index + k;
            if (!fault_take_ahead(idx, &f))
                break;
            st[n++] = (struct fault_item){.index = idx, .flags = f, .region_id = region_id};
        }
    }
    /* LOADING: this thread owns slot and version of these pages now. */
    if (n)
        n = fault_batch_charge(b, st, n);
    /* A reap above (to make room, or before waiting for the budget) may
     * have lost the queue with a store failure: every item is free then,
     * and a new queue is made for these reads. */
    int err = n && !b->queue ? fault_batcher_ready(b) : 0;
    /* streams noted before the first install wakes a faulting thread */
    for (size_t k = 0; k < n; k++) {
        if (!st[k].fault_addr)
            continue;
        size_t run = 1;
        while (k + run < n && !st[k + run].fault_addr)
            run++;
        nfaults++;
        if (st[k].region)
            fault_readahead_note(st[k].index, run, st[k].down);
        if (run > 1)
            m_counter_add(&fault_readahead_pages, run - 1);
    }
    struct m_store_io *iop[FAULT_BATCH_RECORDS];
    for (size_t k = 0; k < n; k++) {
        size_t slot = b->free[--b->nfree];
        struct fault_item *it = &b->items[slot];
        *it = st[k];
        it->io = (struct m_store_io){.op = M_STORE_READ,
                                     .slot = m_slot_store(m_engine_page(it->index)->slot),
                                     .buf = b->records + slot * M_IO_STRIDE,
                                     .user = it};
        iop[k] = &it->io;
    }
    if (nfaults >= 2) { /* counted as a batch when it serves several faults */
        m_counter_add(&fault_batches, 1);
        m_counter_add(&fault_batch_pages, nfaults);
    }
    if (n && !err)
        err = m_store_submit(b->queue, iop, n);
    if (err) {
        /* nothing of it was submitted */
        m_error("fault", "submitting %zu page reads to %s failed: %s", n,
                m_store_describe(m_engine.store), strerror(err));
        for (size_t k = 0; k < n; k++)
            fault_batch_finish(b, iop[k]->user, err);
        memset(b->mem, 0, M_PAGE_SIZE);
    }
    for (size_t k = 0; k < nrest; k++)
        fault_dispatch(rest[k]);
}

/* fault_serve - the messages of one read: page-ins of EVICTED pages started
 * in one batch, everything else one by one. */
static void fault_serve(struct fault_batcher *b, const struct uffd_msg *msgs, size_t n)
{
    uint64_t t0 = m_now_ns();
    size_t cand[FAULT_BATCH], nc = 0;
    for (size_t i = 0; i < n; i++) {
        if (fault_batchable(&msgs[i]))
            cand[nc++] = i;
        else
            fault_dispatch(&msgs[i]);
    }
    if (nc && fault_batcher_ready(b) == 0) {
        fault_batch(b, msgs, cand, nc, t0);
        return;
    }
    for (size_t c = 0; c < nc; c++)
        fault_dispatch(&msgs[cand[c]]);
}

static void *fault_thread(void *arg)
{
    (void)arg;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    pthread_setname_np(pthread_self(), "moat-fault");
    m_engine_thread_enter();
    struct uffd_msg msgs[FAULT_BATCH];
    struct fault_batcher *batcher = fs.batch ? calloc(1, sizeof *batcher) : NULL;
    struct pollfd pfd[2] = {{.fd = m_engine.uffd, .events = POLLIN},
                            {.fd = fs.stop_fd, .events = POLLIN}};
    unsigned idle = 0;
    for (;;) {
        ssize_t n = read(m_engine.uffd, msgs, sizeof msgs);
        bool busy = n > 0;
        if (n > 0) {
            size_t nmsg = (size_t)n / sizeof msgs[0];
            if (batcher) {
                fault_serve(batcher, msgs, nmsg);
            } else {
                for (size_t i = 0; i < nmsg; i++)
                    fault_dispatch(&msgs[i]);
            }
        } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
            m_error("fault", "reading userfaultfd failed: %s", strerror(errno));
            break;
        }
        if (batcher && batcher->queue && fault_batch_inflight(batcher)) {
            /* Pages in flight: install what has come, take new faults, and
             * wait for the store only when both stay quiet a while. */
            if (fault_batch_reap(batcher, 0))
                busy = true;
            if (busy) {
                idle = 0;
            } else if (++idle < FAULT_WAIT_SPIN) {
                sched_yield();
            } else {
                fault_batch_reap(batcher, 1);
                idle = 0;
            }
            continue;
        }
        if (busy) {
            idle = 0;
            continue;
        }
        /* Spin a little before sleeping: faults come in bursts, and a
         * sleeping handler costs the faulting thread a cross-CPU wake-up. */
        if (++idle < 16) {
            sched_yield();
            continue;
        }
        if (poll(pfd, 2, -1) < 0 && errno != EINTR)
            break;
        if (pfd[1].revents)
            break;
        idle = 0;
    }
    if (batcher) {
        while (batcher->queue && fault_batch_inflight(batcher))
            fault_batch_reap(batcher, fault_batch_inflight(batcher));
        fault_batcher_free(batcher);
        free(batcher);
    }
    return NULL;
}

/* ------------------------------------------------------------------------
 * SIGSEGV: custom handlers and fatal messages
 * ---------------------------------------------------------------------- */

static void fault_segv_chain(int sig, siginfo_t *si, void *uc)
{
    struct sigaction *prev = &fs.prev_segv;
    if ((prev->sa_flags & SA_SIGINFO) && prev->sa_sigaction) {
        prev->sa_sigaction(sig, si, uc);
        return;
    }
    if (prev->sa_handler == SIG_IGN)
        return;
    if (prev->sa_handler != SIG_DFL && prev->sa_handler) {
        prev->sa_handler(sig);
        return;
    }
    /* Default action: restore it; the access faults again and the kernel
     * ends the process with SIGSEGV as it would have without moat. */
    signal(sig, SIG_DFL);
}

static void fault_sigsegv(int sig, siginfo_t *si, void *ucv)
{
    uintptr_t addr = (uintptr_t)si->si_addr;
    if (m_region_fork_lost(addr)) {
        m_fatal("fault",
                "this process is a child made by fork() without exec, and it touched "
                "%#lx, a page its parent had sealed in moat's store; such a child sees "
                "only its parent's resident pages (docs/run.md, \"fork\")",
                (unsigned long)addr);
        /* the access faults again and the default action ends the child */
        signal(sig, SIG_DFL);
        return;
    }
    if (!atomic_load(&m_engine.running) || !m_engine_contains(addr)) {
        fault_segv_chain(sig, si, ucv);
        return;
    }
    int saved = errno;
    ucontext_t *uc = ucv;
#if defined(__x86_64__)
    bool write = (uc->uc_mcontext.gregs[REG_ERR] & 2) != 0;
#else
    bool write = false;
    (void)uc;
#endif
    size_t index = m_engine_index(addr);
    uint32_t f = atomic_load(&m_engine_page(index)->flags);
    struct m_region_info r;
    if (m_region_find(addr, &r) == 0 && r.handler) {
        moat_pfinfo pf;
        memset(&pf, 0, sizeof pf);
        pf.maddr = addr;
        pf.pfec.sgx = 1;
        pf.pfec.rw = write;
        pf.pfec.p = m_page_state(f) != M_PS_UNCOMMITTED;
        m_counter_add(&m_engine.c.faults_handler, 1);
        /* the handler may fault again (nested faults): whoever ran us may
         * have blocked SIGSEGV (a wrapping handler, a sanitizer) */
        sigset_t segv;
        sigemptyset(&segv);
        sigaddset(&segv, SIGSEGV);
        sigaddset(&segv, SIGBUS);
        pthread_sigmask(SIG_UNBLOCK, &segv, NULL);
        errno = saved;
        if (r.handler(&pf, r.handler_private) == MOAT_FAULT_CONTINUE_EXECUTION)
            return;
        m_fatal("fault", "the fault handler of region [%#lx, %#lx) did not handle a %s at %#lx",
                (unsigned long)r.start, (unsigned long)r.end, write ? "write" : "read",
                (unsigned long)addr);
    } else if (m_region_find(addr, &r) != 0) {
        m_fatal("fault", "%s at %#lx: in moat's range but in no region", write ? "write" : "read",
                (unsigned long)addr);
    } else if (m_region_is_reserve(&r)) {
        m_fatal("fault", "%s at %#lx: in %s [%#lx, %#lx); commit it first",
                write ? "write" : "read", (unsigned long)addr, fault_region_kind(&r),
                (unsigned long)r.start, (unsigned long)r.end);
    } else if (m_page_state(f) == M_PS_UNCOMMITTED) {
        m_fatal("fault", "%s at %#lx: uncommitted page of %s [%#lx, %#lx)",
                write ? "write" : "read", (unsigned long)addr, fault_region_kind(&r),
                (unsigned long)r.start, (unsigned long)r.end);
    } else {
        m_fatal("fault", "%s at %#lx: the page's permissions (%c%c%c) forbid it",
                write ? "write" : "read", (unsigned long)addr,
                (m_page_prot(f) & MOAT_PROT_READ) ? 'r' : '-',
                (m_page_prot(f) & MOAT_PROT_WRITE) ? 'w' : '-',
                (m_page_prot(f) & MOAT_PROT_EXEC) ? 'x' : '-');
    }
    m_counter_add(&m_engine.c.faults_fatal, 1);
    errno = saved;
    fault_segv_chain(sig, si, ucv);
}

unsigned m_fault_pinned(void)
{
    return fs.pinned;
}

int m_fault_start(unsigned nthreads, bool batch, unsigned pin)
{
    fs.batch = batch;
    if (nthreads < 1)
        nthreads = 1;
    if (nthreads > FAULT_MAX_THREADS)
        nthreads = FAULT_MAX_THREADS;
    fs.stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fs.stop_fd < 0)
        return errno;
    fs.nthreads = 0;
    m_fault_streams_forget(0, SIZE_MAX); /* an earlier engine's streams */
    atomic_store(&fault_batches, 0);
    atomic_store(&fault_batch_pages, 0);
    atomic_store(&fault_readahead_pages, 0);
    atomic_store(&load_clean_count, 0); /* an earlier engine's loads */
    atomic_store(&load_dirtied_count, 0);
    atomic_store(&load_dirty_mode, false);
    cpu_set_t allowed;
    int ncpu = 0;
    fs.pinned = 0;
    if (pin != M_FAULT_PIN_OFF && sched_getaffinity(0, sizeof allowed, &allowed) == 0)
        ncpu = CPU_COUNT(&allowed);
    bool pinning = pin == M_FAULT_PIN_ON ? ncpu > 0 : ncpu > 1 && (unsigned)ncpu == nthreads;
    int cpu = -1;
    for (unsigned i = 0; i < nthreads; i++) {
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        if (pinning) {
            /* the next CPU of the allowed set, round robin */
            do
                cpu = (cpu + 1) % CPU_SETSIZE;
            while (!CPU_ISSET(cpu, &allowed));
            cpu_set_t one;
            CPU_ZERO(&one);
            CPU_SET(cpu, &one);
            pthread_attr_setaffinity_np(&attr, sizeof one, &one);
        }
        int err = pthread_create(&fs.threads[i], &attr, fault_thread, NULL);
        pthread_attr_destroy(&attr);
        if (err) {
            m_fault_stop();
            return err;
        }
        fs.nthreads++;
    }
    if (pinning) {
        fs.pinned = nthreads;
        m_debug("fault", "%u handler threads pinned one per CPU (%d CPUs allowed)", nthreads, ncpu);
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = fault_sigsegv;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSEGV, &sa, &fs.prev_segv) == 0)
        fs.segv_installed = true;
    return 0;
}

void m_fault_stop(void)
{
    if (fs.segv_installed) {
        sigaction(SIGSEGV, &fs.prev_segv, NULL);
        fs.segv_installed = false;
    }
    if (fs.stop_fd >= 0) {
        uint64_t one = 1;
        ssize_t w = write(fs.stop_fd, &one, sizeof one);
        (void)w;
        for (unsigned i = 0; i < fs.nthreads; i++)
            pthread_join(fs.threads[i], NULL);
        fs.nthreads = 0;
        close(fs.stop_fd);
        fs.stop_fd = -1;
    }
    if (m_engine.uffd >= 0) {
        close(m_engine.uffd);
        m_engine.uffd = -1;
    }
}
