/*
 * purge.c - the background purger: gives free pages back once the program
 * has stopped freeing them.
 *
 * Pages freed in a burst are kept dirty for a moment (they coalesce into
 * large spans, and a program that frees and allocates in waves reuses them
 * without a decommit and the page faults after it).  But a program that
 * frees and then goes quiet makes no further allocator call that could give
 * them back.  So when a heap holds more dirty pages than its allowance, a
 * thread ("moat-purge", started on first need, all signals blocked, never
 * allocating) wakes 10 ms later and decommits the largest dirty spans of the
 * heap down to half the allowance - unless the heap took pages from its
 * free spans in the meantime (it is in a wave of allocations that may reuse
 * them), in which case it looks again every 10 ms, for at most 100 ms.  Then
 * it sleeps until the next free that crosses the allowance wakes it.  So
 * memory a program frees is back in the region within about 10 ms of the
 * program going quiet, and within 100 ms in any case.
 *
 * Before it purges a heap it takes back the caches of the heap's idle
 * threads (tcache.c, m_alloc_tcache_reclaim): a cached block pins its
 * slab, so a thread that frees a burst and then sleeps would otherwise keep
 * its slabs committed.  A cache overflowing also asks for a look (a free
 * burst may end in sleep); a cache found busy gets another look every
 * period, for at most M_PURGE_MAX_WAITS periods.
 *
 * The thread is started from a point of the allocator where no lock is held
 * (pthread_create allocates the new thread's TLS with malloc, which may be
 * us).  MOAT_ALLOC_PURGE_THREAD=0 disables it: frees then purge on their own
 * (up to twice the allowance late, see page.c).  After fork() the child has
 * no purger; the next need starts one.
 */
#include "alloc/alloc_int.h"

#include <errno.h>
#include <linux/membarrier.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define M_PURGE_PERIOD_NS (10L * 1000 * 1000)
/* Periods a heap that keeps taking pages may postpone its purge. */
#define M_PURGE_MAX_WAITS 10

_Atomic int m_alloc_purge_wanted;

/* Idle caches can be reclaimed (the membarrier is registered; the knob
 * MOAT_ALLOC_RECLAIM=0 turns it off).  Purger thread only. */
static bool reclaim_ok;

static bool membarrier_private(void)
{
    return syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0;
}

static struct {
    pthread_mutex_t lock; /* guards state and the condition */
    pthread_cond_t cv;
    _Atomic int state; /* 0 none, 1 starting or running, -1 disabled */
    _Atomic bool idle; /* waiting without a timeout */
} purger = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, false};

/* One pass over the heaps; true if a heap over its allowance is still
 * busy taking pages (look again after a period). */
static bool purge_pass(void)
{
    bool again = false;
    pthread_mutex_lock(&m_alloc_global.lock);
    for (struct moat_heap *h = m_alloc_global.heaps; h; h = h->next_heap) {
        m_alloc_lock(&h->page_lock);
        size_t retain = m_alloc_retain_pages(h);
        bool over = h->pages_dirty > retain / 2;
        bool look = atomic_exchange_explicit(&h->reclaim_wanted, 0, memory_order_relaxed) ||
                    h->reclaim_waits;
        if (over && h->carves != h->purge_seen && h->purge_waits < M_PURGE_MAX_WAITS) {
            /* it is still taking pages: those may be reused; wait */
            h->purge_seen = h->carves;
            h->purge_waits++;
            again = true;
            if (look)
                atomic_store_explicit(&h->reclaim_wanted, 1, memory_order_relaxed);
        } else if (over || look) {
            /* blocks in idle threads' caches and parked in transit hold
             * slabs: back to them first */
            m_alloc_unlock(&h->page_lock);
            unsigned taken = 0;
            if (reclaim_ok) {
                /* a cache seen busy gets another look a period later, for
                 * at most M_PURGE_MAX_WAITS periods (then the next overflow
                 * asks again) */
                unsigned busy = m_alloc_tcache_reclaim(h, membarrier_private, &taken);
                h->reclaim_waits =
                    busy && h->reclaim_waits < M_PURGE_MAX_WAITS ? h->reclaim_waits + 1 : 0;
                again |= h->reclaim_waits != 0;
            }
            /* what a reclaim just handed back must reach its slabs now:
             * a class lock busy at this moment would otherwise leave it in
             * transit until the next pass (waiting is in lock order:
             * global, then class) */
            if (over || taken)
                m_alloc_drain_all(h, taken > 0);
            m_alloc_lock(&h->page_lock);
            if (over || taken)
                m_alloc_purge(h, retain / 2);
            h->purge_waits = 0;
        }
        m_alloc_unlock(&h->page_lock);
    }
    pthread_mutex_unlock(&m_alloc_global.lock);
    return again;
}

static void *purger_main(void *arg)
{
    (void)arg;
    const char *s = getenv("MOAT_ALLOC_RECLAIM");
    reclaim_ok = !(s && s[0] == '0') &&
                 syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0;
    for (;;) {
        pthread_mutex_lock(&purger.lock);
        if (!atomic_exchange(&m_alloc_purge_wanted, 0)) {
            /* nothing asked since the last pass: sleep until a free does */
            purger.idle = true;
            while (!atomic_load(&m_alloc_purge_wanted))
                pthread_cond_wait(&purger.cv, &purger.lock);
            purger.idle = false;
            atomic_store(&m_alloc_purge_wanted, 0);
        }
        pthread_mutex_unlock(&purger.lock);
        /* let the burst that asked finish: its pages coalesce meanwhile */
        bool again;
        do {
            struct timespec ts = {0, M_PURGE_PERIOD_NS};
            nanosleep(&ts, NULL);
            again = purge_pass();
        } while (again);
    }
    return NULL;
}

static bool purger_disabled(void)
{
    const char *s = getenv("MOAT_ALLOC_PURGE_THREAD");
    return s && s[0] == '0';
}

void m_alloc_purger_kick(void)
{
    /* the common case, without the lock: running and awake, or disabled */
    int st = atomic_load_explicit(&purger.state, memory_order_relaxed);
    if (st == -1 || (st == 1 && !atomic_load_explicit(&purger.idle, memory_order_relaxed)))
        return;
    pthread_mutex_lock(&purger.lock);
    int state = purger.state;
    if (state == 0)
        purger.state = purger_disabled() ? -1 : 1;
    else if (state == 1 && purger.idle)
        pthread_cond_signal(&purger.cv);
    pthread_mutex_unlock(&purger.lock);
    if (state != 0 || purger.state == -1)
        return;
    /* start it: no allocator lock is held here */
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 64u << 10);
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_t t;
    int err = pthread_create(&t, &attr, purger_main, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    if (err) {
        /* frees keep purging on their own */
        pthread_mutex_lock(&purger.lock);
        purger.state = -1;
        pthread_mutex_unlock(&purger.lock);
        return;
    }
    pthread_setname_np(t, "moat-purge");
}

bool m_alloc_purger_running(void)
{
    return atomic_load_explicit(&purger.state, memory_order_relaxed) == 1;
}

void m_alloc_purger_fork_prepare(void)
{
    pthread_mutex_lock(&purger.lock);
}

void m_alloc_purger_fork_parent(void)
{
    pthread_mutex_unlock(&purger.lock);
}

void m_alloc_purger_fork_child(void)
{
    /* the thread did not come along */
    pthread_mutex_init(&purger.lock, NULL);
    pthread_cond_init(&purger.cv, NULL);
    if (purger.state == 1)
        purger.state = 0;
    purger.idle = false;
    /* a request the parent's purger had not taken yet is the parent's: the
     * child starts a purger only for its own need (ThreadSanitizer kills a
     * fork child that starts a thread, and test_fork forks often) */
    atomic_store(&m_alloc_purge_wanted, 0);
    for (struct moat_heap *h = m_alloc_global.heaps; h; h = h->next_heap) {
        atomic_store(&h->reclaim_wanted, 0);
        h->reclaim_waits = 0;
    }
}
