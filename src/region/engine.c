/*
 * engine.c - moat_init / moat_shutdown, options and the environment, and
 * the statistics.
 *
 * Start-up order: options -> log -> seal key -> store -> ELRANGE and page
 * table -> userfaultfd -> reclaimer -> fault threads.  Shutdown runs it
 * backwards, frees every area, removes the store file and wipes the key.
 */
#include "budget/budget.h"
#include "common/engine.h"
#include "common/log.h"
#include "common/size.h"
#include "common/uffd_compat.h"
#include "fault/fault.h"
#include "region/region.h"
#include "seal/seal.h"
#include "store/cluster.h"
#include "store/store.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

struct m_engine m_engine = {.uffd = -1};
static pthread_mutex_t engine_lock = PTHREAD_MUTEX_INITIALIZER; /* init/shutdown */

#define DEFAULT_RANGE   (64ULL << 30)
#define DEFAULT_BATCH   32
#define DEFAULT_THREADS 2
#define DEFAULT_AHEAD   16

__thread unsigned m_engine_internal __attribute__((tls_model("initial-exec")));
void (*m_engine_thread_hook)(void);
_Atomic bool m_engine_forked;

void m_engine_thread_enter(void)
{
    m_engine_internal = 1;
    if (m_engine_thread_hook)
        m_engine_thread_hook();
}

uint64_t m_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* env_size / env_pct - read an environment override; a malformed value is an
 * error that names the variable. */
static int env_size(const char *name, size_t *v)
{
    const char *s = getenv(name);
    if (!s || !*s)
        return 0;
    int err = m_size_parse(s, v);
    if (err)
        m_error("init", "%s='%s' is not a size (examples: 4096, 64M, 1.5G)", name, s);
    return err ? EINVAL : 0;
}

static int env_pct(const char *name, unsigned *v)
{
    const char *s = getenv(name);
    if (!s || !*s)
        return 0;
    char *end;
    errno = 0;
    unsigned long x = strtoul(s, &end, 10);
    if (errno || end == s || *end || x > 100) {
        m_error("init", "%s='%s' is not a percentage from 0 to 100", name, s);
        return EINVAL;
    }
    *v = (unsigned)x;
    return 0;
}

static int env_uint(const char *name, unsigned lo, unsigned hi, unsigned *v)
{
    const char *s = getenv(name);
    if (!s || !*s)
        return 0;
    char *end;
    errno = 0;
    unsigned long x = strtoul(s, &end, 10);
    if (errno || end == s || *end || x < lo || x > hi) {
        m_error("init", "%s='%s' is not a whole number from %u to %u", name, s, lo, hi);
        return EINVAL;
    }
    *v = (unsigned)x;
    return 0;
}

/* env_auto - an "auto", "0" or "1" variable: *v becomes off or on for 0 or
 * 1 and is left alone for auto (or unset); anything else is EINVAL, named. */
static int env_auto(const char *name, unsigned off, unsigned on, unsigned *v)
{
    const char *s = getenv(name);
    if (!s || !*s || strcmp(s, "auto") == 0)
        return 0;
    if (strcmp(s, "0") != 0 && strcmp(s, "1") != 0) {
        m_error("init", "%s='%s' must be auto, 0 or 1", name, s);
        return EINVAL;
    }
    *v = s[0] == '1' ? on : off;
    return 0;
}

/* The ELRANGE starts on a 64 MiB boundary: the allocator's arenas are
 * aligned to 64 MiB chunks, and a small range (an enclave's user space of a
 * few tens of MiB) must still hold one. */
#define ENGINE_RANGE_ALIGN (64UL << 20)

static void *engine_reserve_aligned(size_t size)
{
    size_t total = size + ENGINE_RANGE_ALIGN;
    if (total < size)
        return MAP_FAILED;
    void *p = mmap(NULL, total, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
        return p;
    uintptr_t a = (uintptr_t)p, b = (a + ENGINE_RANGE_ALIGN - 1) & ~(ENGINE_RANGE_ALIGN - 1);
    if (b > a)
        munmap(p, b - a);
    if (a + total > b + size)
        munmap((void *)(b + size), a + total - (b + size));
    return (void *)b;
}

/* MOAT_FORK_LOAD: evicted bytes fork() reads back first (SIZE_MAX: unset,
 * the budget). */
static size_t fork_load_bytes = SIZE_MAX;
#define FORK_LOAD_FLOOR ((size_t)16 << 20)
/* MOAT_FAULT_BATCH: 1 (the default) loads the page-ins of several faults
 * read at once in one store submission; 0 one by one (for comparison). */
static unsigned fault_batch = 1;
static unsigned refault = 1; /* MOAT_REFAULT */
/* MOAT_RECLAIM_SAMPLE: write sampling in victim choice (budget.c) */
static unsigned reclaim_sample = M_SAMPLE_AUTO;
static unsigned sample_by = M_SAMPLE_BY_AUTO; /* MOAT_SAMPLE_BY */
/* MOAT_FAULT_PIN: handler threads pinned one per CPU (M_FAULT_PIN_*) */
static unsigned fault_pin = M_FAULT_PIN_AUTO;

static int engine_options(const struct moat_options *in, struct moat_options *o,
                          const char **log_file)
{
    struct moat_options none = {.log_level = -1};
    if (!in)
        in = &none;
    *o = *in;
    int err = 0;
    const char *lv = getenv("MOAT_LOG");
    if (o->log_level < 0 && lv && *lv) {
        o->log_level = m_log_parse_level(lv);
        if (o->log_level < 0) {
            m_error("init", "MOAT_LOG='%s' is not a level (debug, info, warn, error, fatal)", lv);
            return EINVAL;
        }
    }
    if (o->log_level < 0)
        o->log_level = MOAT_LOG_WARN;
    if (o->log_level > MOAT_LOG_FATAL) {
        m_error("init", "log_level %d is out of range", o->log_level);
        return EINVAL;
    }
    *log_file = o->log_file ? o->log_file : getenv("MOAT_LOG_FILE");
    if (!o->range_size)
        err |= env_size("MOAT_RANGE", &o->range_size);
    if (!o->budget)
        err |= env_size("MOAT_BUDGET", &o->budget);
    if (!o->low_pct)
        err |= env_pct("MOAT_LOW", &o->low_pct);
    if (!o->high_pct)
        err |= env_pct("MOAT_HIGH", &o->high_pct);
    const char *fa = getenv("MOAT_FAULT_AHEAD");
    if (!o->fault_ahead && fa && *fa) {
        char *end;
        unsigned long v = strtoul(fa, &end, 10);
        if (*end || v < 1 || v > M_FAULT_AHEAD_MAX) {
            m_error("init", "MOAT_FAULT_AHEAD='%s' must be a whole number from 1 to %d", fa,
                    M_FAULT_AHEAD_MAX);
            err |= EINVAL;
        } else {
            o->fault_ahead = (unsigned)v;
        }
    }
    fork_load_bytes = SIZE_MAX;
    err |= env_size("MOAT_FORK_LOAD", &fork_load_bytes);
    fault_batch = 1;
    err |= env_uint("MOAT_FAULT_BATCH", 0, 1, &fault_batch);
    refault = 1;
    err |= env_uint("MOAT_REFAULT", 0, 1, &refault);
    reclaim_sample = M_SAMPLE_AUTO;
    err |= env_auto("MOAT_RECLAIM_SAMPLE", M_SAMPLE_OFF, M_SAMPLE_ON, &reclaim_sample);
    sample_by = M_SAMPLE_BY_AUTO;
    const char *by = getenv("MOAT_SAMPLE_BY");
    if (by && *by && strcmp(by, "auto") != 0) {
        if (strcmp(by, "hash") == 0 || strcmp(by, "wp") == 0) {
            sample_by = by[0] == 'h' ? M_SAMPLE_BY_HASH : M_SAMPLE_BY_WP;
        } else {
            m_error("init", "MOAT_SAMPLE_BY='%s' must be auto, hash or wp", by);
            err |= EINVAL;
        }
    }
    fault_pin = M_FAULT_PIN_AUTO;
    err |= env_auto("MOAT_FAULT_PIN", M_FAULT_PIN_OFF, M_FAULT_PIN_ON, &fault_pin);
    if (!o->store)
        o->store = getenv("MOAT_STORE");
    if (!o->store_replicas)
        err |= env_uint("MOAT_STORE_REPLICAS", 0, 16, &o->store_replicas);
    if (!o->store_timeout_ms)
        err |= env_uint("MOAT_STORE_TIMEOUT", 1, 3600000, &o->store_timeout_ms);
    if (!o->fault_threads)
        err |= env_uint("MOAT_FAULT_THREADS", 1, 16, &o->fault_threads);
    if (!o->lazy) {
        unsigned v = 0;
        err |= env_uint("MOAT_LAZY", 0, 1, &v);
        o->lazy = v ? 1 : -1;
    }
    if (err)
        return EINVAL;
    if (!o->range_size)
        o->range_size = DEFAULT_RANGE;
    if (!o->batch_pages)
        o->batch_pages = DEFAULT_BATCH;
    if (!o->fault_threads)
        o->fault_threads = DEFAULT_THREADS;
    if (!o->fault_ahead)
        o->fault_ahead = DEFAULT_AHEAD;
    if (o->fault_ahead > M_FAULT_AHEAD_MAX) {
        m_error("init", "fault_ahead %u is above the maximum of %d", o->fault_ahead,
                M_FAULT_AHEAD_MAX);
        return EINVAL;
    }
    if (o->range_size % M_PAGE_SIZE || o->range_size < (1u << 20) ||
        o->range_size >> M_PAGE_SHIFT > UINT32_MAX) {
        m_error("init", "range size %zu must be a multiple of 4096 between 1 MiB and 16 TiB",
                o->range_size);
        return EINVAL;
    }
    if (o->budget && o->budget < 16 * M_PAGE_SIZE) {
        m_error("init", "budget %zu bytes is below the minimum of 16 pages (64 KiB)", o->budget);
        return EINVAL;
    }
    if (o->low_pct > 100 || o->high_pct > 100 || o->low_pct > o->high_pct) {
        m_error("init", "watermarks low=%u%% high=%u%% must satisfy low <= high <= 100", o->low_pct,
                o->high_pct);
        return EINVAL;
    }
    if (o->batch_pages > 1024) {
        m_error("init", "batch_pages %u is above the maximum of 1024", o->batch_pages);
        return EINVAL;
    }
    return 0;
}

/* The last sample of untracked pages, for callers that ask often
 * (m_engine_stats with `often`): a scan costs ~1.6 ms a GiB of areas and the
 * preload publishes every 100 ms, so a scan that took T is reused for 50 T,
 * at most 2% of a CPU.  Reset by moat_init. */
static struct {
    pthread_mutex_t lock;
    uint64_t at, cost, res, com;
} sample_cache = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void engine_untracked_sample(uint64_t *res, uint64_t *com, bool often)
{
    if (!often) {
        m_region_untracked_sample(res, com);
        return;
    }
    pthread_mutex_lock(&sample_cache.lock);
    uint64_t now = m_now_ns();
    if (!sample_cache.at || now - sample_cache.at >= 50 * sample_cache.cost) {
        m_region_untracked_sample(&sample_cache.res, &sample_cache.com);
        sample_cache.at = m_now_ns();
        sample_cache.cost = sample_cache.at - now;
    }
    *res = sample_cache.res;
    *com = sample_cache.com;
    pthread_mutex_unlock(&sample_cache.lock);
}

/* engine_lazy_start - with lazy tracking, undo the registration m_fault_open
 * made (it proved that registration works here, so starting to track later
 * cannot fail for want of a kernel feature).  No huge pages: the engine's
 * unit is the 4 KiB page, and the pages the kernel gives meanwhile become
 * the engine's when tracking starts. */
static void engine_lazy_start(bool lazy)
{
    m_engine.lazy = lazy;
    atomic_store(&m_engine.tracking, true);
    if (!lazy)
        return;
    struct uffdio_range r = {.start = m_engine.base, .len = m_engine.size};
    if (ioctl(m_engine.uffd, UFFDIO_UNREGISTER, &r) != 0) {
        m_warn("init", "cannot start lazily (UFFDIO_UNREGISTER: %s): tracking every page",
               strerror(errno));
        m_engine.lazy = false;
        return;
    }
    (void)madvise((void *)m_engine.base, m_engine.size, MADV_NOHUGEPAGE);
    atomic_store(&m_engine.tracking, false);
}

int m_engine_track_register(void)
{
    struct uffdio_register reg = {
        .range = {.start = m_engine.base, .len = m_engine.size},
        .mode = UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP,
    };
    if (ioctl(m_engine.uffd, UFFDIO_REGISTER, &reg) != 0) {
        int err = errno;
        m_error("region", "cannot register the range with userfaultfd to start tracking: %s",
                strerror(err));
        return err;
    }
    return 0;
}

static void engine_teardown(void)
{
    /* the reclaimer uses the userfaultfd: stop it before the fault layer
     * closes it */
    m_budget_shutdown();
    m_fault_stop();
    m_io_ctx_release_all();
    m_region_shutdown();
    if (m_engine.pages)
        munmap(m_engine.pages, m_engine.npages * sizeof(struct m_page));
    if (m_engine.base)
        munmap((void *)m_engine.base, m_engine.size);
    if (m_engine.store)
        m_store_close(m_engine.store);
    m_seal_shutdown();
    struct m_engine fresh = {.uffd = -1};
    m_engine = fresh;
}

/* At exit without moat_shutdown the key is still wiped (invariant 4); the
 * anonymous store file is already unlinked. */
static void engine_atexit(void)
{
    m_seal_wipe();
}
/*
 * fork
 *
 * The ELRANGE is inherited like any private memory: the child gets the
 * parent's resident pages copy-on-write, and its copy of the range is no
 * longer registered with the userfaultfd (the engine does not ask for
 * UFFD_FEATURE_EVENT_FORK), so it is plain anonymous memory there.  The
 * child has no engine threads and the key is wiped in it (MADV_WIPEONFORK),
 * so it cannot read what the parent sealed: pages the parent had evicted, or
 * was evicting or loading at the instant of the fork (the page table is
 * copied in the same instant as the mappings: fork holds the mmap lock that
 * every userfaultfd ioctl takes), are made inaccessible in the child, and an
 * access to one stops it with a message (fault.c) instead of reading zeros.
 * Pages the parent never touched read as zeros, as they would have there.
 * fork followed by exec - the common case - costs one scan of the page table
 * up to the highest address ever allocated.
 *
 * So that a child sees evicted pages too, the parent first reads them back
 * (engine_fork_prepare, before the allocator's own fork handler takes its
 * locks) when there are no more than MOAT_FORK_LOAD bytes of them (default:
 * the budget).  They are held above the budget for the
 * instant of the fork, accounted as a temporary extension of it (reported as
 * fork_loaded_pages), and evicted again by the reclaimer afterwards.  A page evicted anyway (by
 * a race with another thread, or because there were more) is only
 * inaccessible in the child, never wrong.
 */
static uint64_t fork_boost; /* pages the budget is extended by, forking thread only */

static void engine_fork_prepare(void)
{
    fork_boost = 0;
    if (!atomic_load(&m_engine.running) || !m_engine.budget_pages)
        return;
    uint64_t ev = m_engine.fork_load_pages ? m_region_fork_count() : 0;
    if (!ev || ev > m_engine.fork_load_pages)
        return;
    /* room for ev more pages without crossing even the low watermark, so a
     * reclaimer already running stops rather than evict what is loaded */
    uint64_t res = atomic_load(&m_engine.c.resident);
    fork_boost =
        ev + m_engine.batch_pages + (res > m_engine.low_pages ? res - m_engine.low_pages : 0);
    m_budget_boost((int64_t)fork_boost);
    m_engine_internal++; /* loading allocates (I/O contexts) */
    /* the boost keeps the reclaimer from starting another batch; a pass
     * waits for pages already in flight; a second pass catches what a
     * batch running at the boost still evicted */
    m_reclaim_wait_idle();
    /* until none is left, or a pass leaves as many as the one before: a
     * pass's net count can be 0 while it loaded pages that a batch in
     * flight evicted meanwhile, so the stop is on what is left, not on
     * what the pass loaded */
    uint64_t left = ev;
    for (int pass = 0; pass < 8; pass++) {
        size_t n = m_region_fork_load();
        m_counter_add(&m_engine.c.fork_loaded, n);
        m_reclaim_wait_idle();
        uint64_t now = m_region_fork_count();
        if (!now || now >= left)
            break;
        left = now;
    }
    m_engine_internal--;
}

static void engine_fork_parent(void)
{
    if (fork_boost)
        m_budget_boost(-(int64_t)fork_boost);
    fork_boost = 0;
}

static void engine_fork_child(void)
{
    fork_boost = 0;
    if (!atomic_load(&m_engine.running))
        return;
    atomic_store(&m_engine.running, false);
    atomic_store(&m_engine_forked, true);
    m_region_fork_protect();
}

static pthread_once_t engine_atexit_once = PTHREAD_ONCE_INIT;
static void engine_atexit_register(void)
{
    atexit(engine_atexit);
    pthread_atfork(engine_fork_prepare, engine_fork_parent, engine_fork_child);
}

/* watermarks_set - the reclaimer's watermarks in pages.  A percentage the
 * caller gave is used as is.  Otherwise they sit just below the budget, as
 * the kernel keeps a memory cgroup at its limit: `high` leaves 1% of the
 * budget (at least one reclaim batch) free for faults, `low` is 2% (at least
 * two batches) below `high`, neither more than 1/8 of the budget.  A program
 * whose hot set is close to the budget pages in far less with every page it
 * may keep (xz -9 under 32M: 139k page-ins at the old 80/90%, 57k at 97/99%;
 * docs/bench.md). */
static size_t clamp_pages(size_t v, size_t lo, size_t hi)
{
    v = v < lo ? lo : v;
    return v > hi ? hi : v;
}

static void watermarks_set(const struct moat_options *o)
{
    size_t budget = m_engine.budget_pages, batch = m_engine.batch_pages;
    size_t high = budget - clamp_pages(budget / 100, batch, budget / 8);
    size_t low = high - clamp_pages(budget / 50, 2 * batch, budget / 8);
    if (o->high_pct)
        high = budget * o->high_pct / 100;
    if (o->low_pct)
        low = budget * o->low_pct / 100;
    else if (low > high)
        low = high;
    if (!o->low_pct || !o->high_pct)
        high = high < low ? low : high;
    m_engine.high_pages = high;
    m_engine.low_pages = low;
}

int moat_init(const struct moat_options *opts)
{
    pthread_once(&engine_atexit_once, engine_atexit_register);
    pthread_mutex_lock(&engine_lock);
    if (atomic_load(&m_engine.running)) {
        pthread_mutex_unlock(&engine_lock);
        return EALREADY;
    }
    struct moat_options o;
    const char *log_file = NULL;
    int err = engine_options(opts, &o, &log_file);
    if (!err) {
        err = m_log_open(o.log_level, log_file);
        if (err)
            m_error("init", "cannot open the log file '%s': %s", log_file, strerror(err));
    }
    if (!err)
        err = m_seal_init();
    if (!err)
        err = m_store_open_opts(o.store, o.store_replicas, o.store_timeout_ms, &m_engine.store);
    if (!err) {
        m_engine.size = o.range_size;
        m_engine.npages = o.range_size >> M_PAGE_SHIFT;
        void *base = engine_reserve_aligned(o.range_size);
        void *pages = mmap(NULL, m_engine.npages * sizeof(struct m_page), PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (base == MAP_FAILED || pages == MAP_FAILED) {
            m_error("init", "cannot reserve a range of %zu bytes: %s", o.range_size,
                    strerror(errno));
            err = ENOMEM;
            if (base != MAP_FAILED)
                munmap(base, o.range_size);
            if (pages != MAP_FAILED)
                munmap(pages, m_engine.npages * sizeof(struct m_page));
        } else {
            m_engine.base = (uintptr_t)base;
            m_engine.pages = pages;
        }
    }
    if (!err) {
        m_engine.budget_pages = o.budget / M_PAGE_SIZE;
        m_engine.batch_pages = o.batch_pages;
        m_engine.reclaim_sample = reclaim_sample;
        m_engine.sample_by = sample_by;
        watermarks_set(&o);
        m_engine.fault_threads = o.fault_threads;
        m_engine.fault_ahead = o.fault_ahead;
        m_engine.refault_hot = refault != 0;
        /* Default: the budget (a fork never holds more than twice it), but
         * at least 16 MiB with a local file store, so that a shell under a
         * tiny budget can still run $(...) and pipelines (forks that touch
         * its heap); a network store keeps the budget, because a fork then
         * waits on every page the store is slow to give back. */
        size_t fl = fork_load_bytes;
        if (fl == SIZE_MAX) {
            bool local = !o.store || !strstr(o.store, "://");
            fl = local && o.budget < FORK_LOAD_FLOOR ? FORK_LOAD_FLOOR : o.budget;
        }
        m_engine.fork_load_pages = fl / M_PAGE_SIZE;
        err = m_region_init();
    }
    if (!err)
        err = m_fault_open(m_engine.base, m_engine.size);
    if (!err) {
        engine_lazy_start(o.lazy > 0);
        pthread_mutex_lock(&sample_cache.lock);
        sample_cache.at = 0;
        pthread_mutex_unlock(&sample_cache.lock);
    }
    if (!err) {
        atomic_store(&m_engine_forked, false);
        atomic_store(&m_engine.running, true);
        err = m_budget_init();
    }
    if (!err)
        err = m_fault_start(o.fault_threads, fault_batch != 0, fault_pin);
    if (err) {
        atomic_store(&m_engine.running, false);
        engine_teardown();
    } else {
        char b[32];
        m_info("init", "moat ready: range %zu GiB at %#lx, budget %s, store %s", o.range_size >> 30,
               (unsigned long)m_engine.base,
               o.budget ? m_size_format(o.budget, b, sizeof b) : "unlimited",
               m_store_describe(m_engine.store));
    }
    pthread_mutex_unlock(&engine_lock);
    return err;
}

void moat_shutdown(void)
{
    pthread_mutex_lock(&engine_lock);
    if (atomic_load(&m_engine.running)) {
        atomic_store(&m_engine.running, false);
        engine_teardown();
    }
    pthread_mutex_unlock(&engine_lock);
}

int moat_range(void **base, size_t *size)
{
    if (!base || !size)
        return EINVAL;
    if (!atomic_load(&m_engine.running))
        return ENODEV;
    *base = (void *)m_engine.base;
    *size = m_engine.size;
    return 0;
}

static void engine_peak(_Atomic uint64_t *peak, uint64_t v)
{
    uint64_t p = atomic_load(peak);
    while (v > p && !atomic_compare_exchange_weak(peak, &p, v))
        ;
}

int moat_stats(struct moat_stats *out)
{
    return m_engine_stats(out, false);
}

int m_engine_stats(struct moat_stats *out, bool often)
{
    if (!out)
        return EINVAL;
    if (!atomic_load(&m_engine.running))
        return ENODEV;
    const struct m_counters *c = &m_engine.c;
    memset(out, 0, sizeof *out);
    out->budget_pages = m_engine.budget_pages;
    out->committed_pages = atomic_load(&c->committed);
    out->resident_pages = atomic_load(&c->resident);
    out->resident_unreclaimable = atomic_load(&c->unreclaimable);
    out->evicted_pages = atomic_load(&c->evicted);
    out->peak_committed_pages = atomic_load(&c->peak_committed);
    out->peak_resident_pages = atomic_load(&c->peak_resident);
    out->regions = m_region_count();
    out->faults_commit = atomic_load(&c->faults_commit);
    out->faults_pagein = atomic_load(&c->faults_pagein);
    out->faults_wp = atomic_load(&c->faults_wp);
    out->faults_handler = atomic_load(&c->faults_handler);
    out->faults_fatal = atomic_load(&c->faults_fatal);
    out->evictions_written = atomic_load(&c->evictions_written);
    out->evictions_clean = atomic_load(&c->evictions_clean);
    out->reclaim_sync = atomic_load(&c->reclaim_sync);
    out->store_bytes_written = atomic_load(&c->store_bytes_written);
    out->store_bytes_read = atomic_load(&c->store_bytes_read);
    out->store_errors = atomic_load(&c->store_errors);
    out->integrity_failures = atomic_load(&c->integrity_failures);
    out->fault_ns = atomic_load(&c->fault_ns);
    out->reclaim_ns = atomic_load(&c->reclaim_ns);
    out->fork_loaded_pages = atomic_load(&c->fork_loaded);
    out->wp_calls = atomic_load(&c->wp_calls);
    out->zap_calls = atomic_load(&c->zap_calls);
    out->tracking = atomic_load(&m_engine.tracking);
    m_fault_batch_stats(&out->pagein_batches, &out->pagein_batched_faults, &out->pagein_readahead);
    out->pagein_refault_hot = m_reclaim_refaults_hot();
    if (m_engine.store) {
        struct m_store_stats ss;
        m_store_stats(m_engine.store, &ss);
        out->store_meta_bytes = ss.meta_bytes;
    }
    if (!out->tracking) {
        uint64_t res = 0, com = 0;
        engine_untracked_sample(&res, &com, often);
        out->untracked_pages = res;
        out->resident_pages += res;
        out->committed_pages += com;
        /* peaks seen by samples; once tracking starts, the counters take
         * over from the charged pages */
        engine_peak(&m_engine.c.peak_resident, out->resident_pages);
        engine_peak(&m_engine.c.peak_committed, out->committed_pages);
        out->peak_resident_pages = atomic_load(&c->peak_resident);
        out->peak_committed_pages = atomic_load(&c->peak_committed);
    }
    struct m_store_cluster_stats cs;
    if (m_engine.store && m_store_cluster_stats(m_engine.store, &cs, NULL, 0, NULL) == 0) {
        out->store_nodes = cs.nnodes;
        out->store_round_trips = cs.round_trips;
        out->store_retries = cs.retries;
        out->store_redirections = cs.redirections;
        out->store_failovers = cs.failovers;
    }
    return 0;
}

void moat_stats_print(int fd)
{
    struct moat_stats s;
    if (moat_stats(&s) != 0) {
        dprintf(fd, "moat: not running\n");
        return;
    }
    char b1[32], b2[32];
    dprintf(fd, "moat statistics\n");
    dprintf(fd, "  budget          %s (%llu pages)\n",
            s.budget_pages ? m_size_format(s.budget_pages * M_PAGE_SIZE, b1, sizeof b1)
                           : "unlimited",
            (unsigned long long)s.budget_pages);
    dprintf(fd, "  resident        %llu pages (peak %llu), %llu unreclaimable\n",
            (unsigned long long)s.resident_pages, (unsigned long long)s.peak_resident_pages,
            (unsigned long long)s.resident_unreclaimable);
    if (!s.tracking)
        dprintf(fd, "  not tracked     %llu resident pages sampled (lazy tracking)\n",
                (unsigned long long)s.untracked_pages);
    dprintf(fd, "  committed       %llu pages (peak %llu), %llu evicted\n",
            (unsigned long long)s.committed_pages, (unsigned long long)s.peak_committed_pages,
            (unsigned long long)s.evicted_pages);
    dprintf(fd,
            "  faults          %llu commit, %llu page-in, %llu write-protect, %llu handler, "
            "%llu fatal\n",
            (unsigned long long)s.faults_commit, (unsigned long long)s.faults_pagein,
            (unsigned long long)s.faults_wp, (unsigned long long)s.faults_handler,
            (unsigned long long)s.faults_fatal);
    if (s.pagein_readahead)
        dprintf(fd, "  read ahead      %llu of the page-ins (along streams of faults)\n",
                (unsigned long long)s.pagein_readahead);
    if (s.pagein_refault_hot)
        dprintf(fd, "  refaults        %llu page-ins soon after their eviction (kept hot)\n",
                (unsigned long long)s.pagein_refault_hot);
    if (s.pagein_batches)
        dprintf(fd, "  batched page-in %llu submissions served %llu faults (%.1f each)\n",
                (unsigned long long)s.pagein_batches, (unsigned long long)s.pagein_batched_faults,
                (double)s.pagein_batched_faults / (double)s.pagein_batches);
    dprintf(fd, "  evictions       %llu written, %llu clean, %llu synchronous reclaims\n",
            (unsigned long long)s.evictions_written, (unsigned long long)s.evictions_clean,
            (unsigned long long)s.reclaim_sync);
    dprintf(fd, "  store           %s written, %s read, %llu errors, %llu integrity failures\n",
            m_size_format(s.store_bytes_written, b1, sizeof b1),
            m_size_format(s.store_bytes_read, b2, sizeof b2), (unsigned long long)s.store_errors,
            (unsigned long long)s.integrity_failures);
    if (s.store_meta_bytes)
        dprintf(fd, "  store metadata  %s in memory (the records' trailers)\n",
                m_size_format(s.store_meta_bytes, b1, sizeof b1));
    if (s.wp_calls || s.zap_calls)
        dprintf(fd,
                "  page tables     %llu write-protect calls, %llu zap calls (each a TLB "
                "shootdown while other CPUs run the program)\n",
                (unsigned long long)s.wp_calls, (unsigned long long)s.zap_calls);
    dprintf(fd, "  time            %.3f s in faults, %.3f s in reclaim\n", (double)s.fault_ns / 1e9,
            (double)s.reclaim_ns / 1e9);
    struct m_store_cluster_stats cs;
    struct m_store_cluster_node_stats nodes[32];
    size_t n = 0;
    if (m_store_cluster_stats(m_engine.store, &cs, nodes, 32, &n) != 0)
        return;
    dprintf(fd,
            "  cluster         %u nodes, %llu round trips (%.1f I/Os each), %llu retries, "
            "%llu redirections, %llu failovers, %llu WAIT failures\n",
            cs.nnodes, (unsigned long long)cs.round_trips, cs.batching,
            (unsigned long long)cs.retries, (unsigned long long)cs.redirections,
            (unsigned long long)cs.failovers, (unsigned long long)cs.wait_failures);
    for (size_t i = 0; i < n; i++)
        dprintf(fd, "    %-21s %s %llu pages (%s), %llu reads, %llu writes, %llu retries\n",
                nodes[i].addr, nodes[i].primary ? "primary" : "replica",
                (unsigned long long)nodes[i].pages, m_size_format(nodes[i].bytes, b1, sizeof b1),
                (unsigned long long)nodes[i].reads, (unsigned long long)nodes[i].writes,
                (unsigned long long)nodes[i].retries);
}
