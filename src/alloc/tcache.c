/*
 * tcache.c - per-thread caches of free blocks: their bounds, how they adapt,
 * and how a thread gives everything back.
 *
 * Bounds.  Each class's list holds at most `max` blocks, and the sum of
 * max * block size over a thread's classes stays under the thread's byte
 * cap: 1/64 of the heap's cap shared by the threads using it (a 64 MiB heap
 * with 20 threads: 52 KiB a thread, 1 MiB in all), clamped to
 * [16 KiB, 1 MiB]; uncapped heaps give each thread 8 MiB / threads in
 * [64 KiB, 512 KiB].  The knob MOAT_ALLOC_TCACHE (or the heap config) fixes it.
 *
 * Adapting, with hysteresis.  A class's `max` starts at zero and grows by a
 * batch each time the list runs dry and has to be refilled (slow start), as
 * long as the thread's cap allows: only classes a thread really cycles
 * through get room.  A list that overflows gives back all but max/2 blocks,
 * so the next max/2 frees and allocations stay local.  Every 256 slow-path
 * events, each list that did not run dry since the last look gives back
 * half of its blocks and shrinks `max` by as much: a thread that stops
 * using a class returns it within a few rounds, a class it keeps emptying
 * does not move.  What a decay gives back is parked in the class's
 * transfer slots for other threads' refills, and drained into the slabs
 * if nobody takes it (m_alloc_class_age).
 *
 * Idle threads.  A thread that stops calling the allocator keeps its cache,
 * and every cached block pins a slab; the purger takes such caches back
 * (m_alloc_tcache_reclaim, by the handshake described in alloc_int.h).
 * The *_leave functions are the fast paths' slow paths, which end the
 * allocator call for the handshake.
 *
 * Giving back.  moat_alloc_thread_flush (the end of an ECall) and thread
 * exit hand every list back to its class and drain it into the slabs
 * (thread exit from an uncapped heap parks the lists in the transfer slots
 * instead, for the next threads' refills); thread exit also returns the
 * cache structure to a pool, so a thread that lives for one call and dies
 * leaves nothing behind.  When a capped heap runs
 * short it bumps `pressure`, and every thread flushes at its next slow path.
 *
 * Thread-local storage is one initial-exec TLS block (the drop-in is
 * preloaded, so its TLS is static and touching it never calls malloc); the
 * exit hook is a pthread key destructor.
 */
#include "alloc/alloc_int.h"

#include <sys/mman.h>

/* Never registered, never used: its checks fail (see M_ALLOC_TC_NONE). */
struct m_alloc_tcache m_alloc_tcache_none = {
    .live_heap = (struct moat_heap *)(uintptr_t)1, /* bit 0: M_ALLOC_STOLEN */
    .heap_id = M_ALLOC_STOLEN,
};

__thread struct m_alloc_tls m_alloc_tls __attribute__((tls_model("initial-exec"))) = {
    .dflt = M_ALLOC_TC_NONE,
    .tc = {[0 ... M_ALLOC_TLS_SLOTS] = M_ALLOC_TC_NONE},
};

#define M_DECAY_EVENTS 256

_Atomic uint8_t m_alloc_tag_live[256];
static uint32_t tag_next = 1; /* global lock */

/* A tag no live cache holds (global lock held); 0 if all 255 are taken,
 * which only makes every free look remote-or-adoptable, never wrong. */
static uint8_t tag_take(void)
{
    for (int i = 0; i < 255; i++) {
        uint8_t t = (uint8_t)(1 + (tag_next + (uint32_t)i) % 255);
        if (!atomic_load_explicit(&m_alloc_tag_live[t], memory_order_relaxed)) {
            atomic_store_explicit(&m_alloc_tag_live[t], 1, memory_order_relaxed);
            tag_next = t;
            return t;
        }
    }
    return 0;
}

static void tag_put(uint8_t t)
{
    if (t)
        atomic_store_explicit(&m_alloc_tag_live[t], 0, memory_order_relaxed);
}
#define M_POOL_CHUNK (64u << 10)

/* ------------------------------------------------------------------------
 * The pool of cache structures (global lock held)
 * ---------------------------------------------------------------------- */

static struct m_alloc_tcache *pool_get(void)
{
    struct m_alloc_global *g = &m_alloc_global;
    if (!g->pool) {
        void *p =
            mmap(NULL, M_POOL_CHUNK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            return NULL;
        g->pool_bytes += M_POOL_CHUNK;
        size_t n = M_POOL_CHUNK / sizeof(struct m_alloc_tcache);
        struct m_alloc_tcache *arr = p;
        for (size_t i = 0; i < n; i++) {
            arr[i].pool_next = g->pool;
            g->pool = &arr[i];
        }
    }
    struct m_alloc_tcache *tc = g->pool;
    g->pool = tc->pool_next;
    return tc;
}

static void pool_put(struct m_alloc_tcache *tc)
{
    tc->pool_next = m_alloc_global.pool;
    m_alloc_global.pool = tc;
}

/* ------------------------------------------------------------------------
 * Bounds
 * ---------------------------------------------------------------------- */

static size_t clampz(size_t v, size_t lo, size_t hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

size_t m_alloc_tcache_cap(const struct moat_heap *h)
{
    if (h->tcache_bytes)
        return h->tcache_bytes;
    size_t nt = atomic_load_explicit(&h->ntcaches, memory_order_relaxed);
    if (nt == 0)
        nt = 1;
    if (h->limit_pages != SIZE_MAX)
        return clampz(h->limit_pages * M_ALLOC_PAGE / 64 / nt, 16u << 10, 1u << 20);
    return clampz((8u << 20) / nt, 64u << 10, 512u << 10);
}

/* ------------------------------------------------------------------------
 * Moving blocks back to the classes
 * ---------------------------------------------------------------------- */

/* The pop of the slow paths: if the fast pop refused a non-empty list, the
 * heap may have grown since the cache copied its bounds; refresh them and
 * try again, and if the link is still out of bounds, it was overwritten. */
uintptr_t m_alloc_bin_pop_checked(struct m_alloc_tcache *tc, const struct moat_heap *h, unsigned c,
                                  size_t n)
{
    uintptr_t head = tc->bins[c].head;
    if (head) {
        uintptr_t next = m_alloc_dec(tc->key, head, ((uintptr_t *)head)[0]);
        if (next & 15)
            m_alloc_die_corrupt((void *)head);
    }
    uintptr_t blk = m_alloc_bin_pop(tc, c, n);
    if (blk || !tc->bins[c].head)
        return blk;
    tc->lo = atomic_load_explicit(&h->lo, memory_order_acquire);
    tc->span = atomic_load_explicit(&h->span, memory_order_relaxed);
    blk = m_alloc_bin_pop(tc, c, n);
    if (!blk)
        m_alloc_die_corrupt((void *)tc->bins[c].head);
    return blk;
}

/* Give back the first k blocks of bin c (transfer: see m_alloc_give_back). */
static void bin_give_back(struct m_alloc_tcache *tc, unsigned c, uint32_t k, bool transfer)
{
    struct m_alloc_bin *b = &tc->bins[c];
    struct moat_heap *h = tc->heap;
    uint32_t count = m_alloc_bin_count(b);
    if (k > count)
        k = count;
    if (k == 0)
        return;
    uintptr_t first = b->head, last = first;
    for (uint32_t i = 1; i < k; i++) {
        uintptr_t next = m_alloc_dec(tc->key, last, ((uintptr_t *)last)[0]);
        if (!m_alloc_link_ok(h, next) || !next)
            m_alloc_die_corrupt((void *)last);
        last = next;
    }
    uintptr_t rest = m_alloc_dec(tc->key, last, ((uintptr_t *)last)[0]);
    if (!m_alloc_link_ok(h, rest))
        m_alloc_die_corrupt((void *)last);
    b->head = rest;
    M_ALLOC_OWNER_SET(b->room, b->room + (int32_t)k);
    if (transfer)
        tc->parked[0][c / 64] |= 1ULL << (c % 64);
    m_alloc_give_back(h, c, first, last, k, transfer);
}

static void bin_shrink(struct m_alloc_tcache *tc, unsigned c, uint32_t by)
{
    struct m_alloc_bin *b = &tc->bins[c];
    if (by > b->max)
        by = b->max;
    M_ALLOC_OWNER_SET(b->max, b->max - by);
    M_ALLOC_OWNER_SET(b->room, b->room - (int32_t)by);
    tc->max_bytes -= (size_t)by * m_alloc_class_size[c];
}

/* Give back the whole remote list of class c (it stays NULL-terminated:
 * the first remote push linked to the empty list). */
static void remote_give_back(struct m_alloc_tcache *tc, unsigned c, bool transfer)
{
    struct m_alloc_bin *b = &tc->bins[c];
    uint32_t n = b->rcount;
    if (!n)
        return;
    /* the first block pushed is the last of the list: no walk */
    uintptr_t first = b->rhead, last = b->rtail;
    b->rhead = 0;
    M_ALLOC_OWNER_SET(b->rcount, 0);
    if (transfer)
        tc->parked[0][c / 64] |= 1ULL << (c % 64);
    m_alloc_give_back(tc->heap, c, first, last, n, transfer);
}

/*
 * A free of a block from a slab that another cache takes blocks from (its
 * owner tag is not ours).  If that cache is gone (its thread exited), the
 * slab is adopted: it becomes ours and the block goes onto our list.  Else
 * the block goes onto the remote list, which is handed back a batch at a
 * time (to the transfer slots, where the next refill - often the owner's -
 * takes it whole): reusing it here would put this thread's writes on cache
 * lines the owner's thread writes too.
 */
void m_alloc_free_remote(struct m_alloc_tcache *tc, unsigned c, uintptr_t a,
                         const struct m_alloc_pmap *pm)
{
    uint8_t owner = __atomic_load_n(&pm->owner, __ATOMIC_RELAXED);
    if (!atomic_load_explicit(&m_alloc_tag_live[owner], memory_order_relaxed)) {
        m_alloc_slab_owner_set(m_alloc_pmap_head(pm, pm->off_bytes), c, tc->tag);
        m_alloc_bin_push(tc, c, a);
        return;
    }
    struct m_alloc_bin *b = &tc->bins[c];
    uintptr_t *w = (uintptr_t *)a;
    w[0] = m_alloc_enc(tc->key, a, b->rhead);
    w[1] = m_alloc_tag(tc->key, a);
    if (!b->rhead)
        b->rtail = a;
    b->rhead = a;
    uint32_t cnt = b->rcount + 1;
    M_ALLOC_OWNER_SET(b->rcount, cnt);
    if (cnt >= m_alloc_class_info[c].batch)
        remote_give_back(tc, c, true);
}

/* Everything back to the classes (the caller owns the lists: the owner
 * inside an allocator call, or the purger that took the cache), and into
 * their slabs; or, with park, parked in the transfer slots for the next
 * refills (m_alloc_class_age drains what nobody takes). */
static void tcache_flush_how(struct m_alloc_tcache *tc, bool park)
{
    for (unsigned c = 0; c < M_ALLOC_NCLASSES; c++) {
        uint32_t count = m_alloc_bin_count(&tc->bins[c]);
        if (count || tc->bins[c].rcount) {
            bin_give_back(tc, c, count, park);
            remote_give_back(tc, c, park);
            if (!park)
                m_alloc_class_drain(tc->heap, c, true);
        }
    }
}

static void tcache_flush(struct m_alloc_tcache *tc)
{
    tcache_flush_how(tc, false);
}

/* Wait while the purger holds tc (it holds the global lock meanwhile). */
static void wait_while_stolen(struct m_alloc_tcache *tc)
{
    while (atomic_load_explicit(&tc->heap_id, memory_order_acquire) & M_ALLOC_STOLEN) {
        pthread_mutex_lock(&m_alloc_global.lock);
        pthread_mutex_unlock(&m_alloc_global.lock);
    }
}

void m_alloc_tcache_flush(struct m_alloc_tcache *tc)
{
    m_alloc_slow_enter();
    wait_while_stolen(tc);
    tcache_flush(tc);
    m_alloc_slow_leave();
}

static bool tcache_holds(struct m_alloc_tcache *tc)
{
    for (unsigned c = 0; c < M_ALLOC_NCLASSES; c++)
        if (m_alloc_bin_count(&tc->bins[c]) || M_ALLOC_OWNER_READ(tc->bins[c].rcount))
            return true;
    return false;
}

/*
 * m_alloc_tcache_reclaim - the purger takes back the cached blocks of h's
 * idle threads (global lock held; see "Reclaiming idle caches" in
 * alloc_int.h): a cache is idle if its thread had no slow-path event since
 * the purger's previous look, and is taken if its thread is not inside an
 * allocator call.  barrier() is the membarrier; if it fails nothing is
 * taken.  Only the blocks go: a cache keeps its adaptive bounds, so a
 * thread that wakes refills to where it was.  Returns the caches that hold
 * blocks but were active (worth another look a period later); *taken
 * counts the caches taken.
 */
unsigned m_alloc_tcache_reclaim(struct moat_heap *h, bool (*barrier)(void), unsigned *taken)
{
    unsigned tagged = 0, active = 0;
    *taken = 0;
    for (struct m_alloc_tcache *tc = h->tcaches; tc; tc = tc->reg_next) {
        uint32_t ev = M_ALLOC_OWNER_READ(tc->events_total);
        tc->reclaiming = tcache_holds(tc);
        if (tc->reclaiming && ev != tc->reclaim_seen) {
            tc->reclaiming = false;
            active++;
        }
        tc->reclaim_seen = ev;
        if (!tc->reclaiming)
            continue;
        atomic_store_explicit(&tc->heap_id, h->id | M_ALLOC_STOLEN, memory_order_relaxed);
        atomic_store_explicit(&tc->live_heap, (struct moat_heap *)((uintptr_t)h | 1),
                              memory_order_relaxed);
        tagged++;
    }
    if (!tagged)
        return active;
    bool ok = barrier();
    for (struct m_alloc_tcache *tc = h->tcaches; tc; tc = tc->reg_next) {
        if (!tc->reclaiming)
            continue;
        tc->reclaiming = false;
        if (ok && __atomic_load_n(&tc->tls->depth, __ATOMIC_ACQUIRE) == 0 &&
            __atomic_load_n(&tc->tls->slow_depth, __ATOMIC_ACQUIRE) == 0) {
            tcache_flush(tc);
            (*taken)++;
            atomic_fetch_add_explicit(&h->reclaimed, 1, memory_order_relaxed);
        } else {
            active++;
        }
        atomic_store_explicit(&tc->live_heap, h, memory_order_release);
        atomic_store_explicit(&tc->heap_id, h->id, memory_order_release);
    }
    return active;
}

/* Every M_DECAY_EVENTS slow paths: lists that never ran dry in the period
 * hold more than the thread uses; each gives back half and its bound
 * shrinks as much.  Then the cap is obeyed. */
static void tcache_decay(struct m_alloc_tcache *tc)
{
    tc->cap_bytes = m_alloc_tcache_cap(tc->heap);
    for (unsigned c = 0; c < M_ALLOC_NCLASSES; c++) {
        struct m_alloc_bin *b = &tc->bins[c];
        uint32_t count = m_alloc_bin_count(b);
        if (b->max == 0 && count == 0 && b->rcount == 0)
            continue; /* a class this thread does not use */
        /* parked in the transfer slots: another thread's refill takes
         * them whole, else the next decay puts them back into their slabs */
        if (b->refills == 0 && count > 0) {
            uint32_t k = (count + 1) / 2;
            bin_give_back(tc, c, k, true);
            bin_shrink(tc, c, k);
        }
        b->refills = 0;
        remote_give_back(tc, c, true);
        /* transfer chains of the classes this cache parked chains of
         * lately that nobody takes go back to their slabs (see
         * m_alloc_class_age; only those classes: a look reads eight words) */
        if ((tc->parked[0][c / 64] | tc->parked[1][c / 64]) & (1ULL << (c % 64)))
            m_alloc_class_age(tc->heap, c);
    }
    for (int w = 0; w < 2; w++) {
        tc->parked[1][w] = tc->parked[0][w];
        tc->parked[0][w] = 0;
    }
    if (tc->max_bytes > tc->cap_bytes) {
        /* more threads share the heap now: halve every list */
        for (unsigned c = 0; c < M_ALLOC_NCLASSES; c++) {
            struct m_alloc_bin *b = &tc->bins[c];
            bin_shrink(tc, c, (b->max + 1) / 2);
            if (b->room < 0)
                bin_give_back(tc, c, (uint32_t)-b->room, false);
        }
    }
}

static void tcache_event(struct m_alloc_tcache *tc)
{
    M_ALLOC_OWNER_ADD(tc->events_total, 1);
    uint32_t p = atomic_load_explicit(&tc->heap->pressure, memory_order_relaxed);
    if (M_ALLOC_UNLIKELY(p != tc->pressure_seen)) {
        tc->pressure_seen = p;
        m_alloc_tcache_flush(tc);
    }
    if (++tc->events >= M_DECAY_EVENTS) {
        tc->events = 0;
        tcache_decay(tc);
    }
}

/* Let a list grow by `by` blocks if the thread's cap allows. */
static void bin_grow(struct m_alloc_tcache *tc, unsigned c, uint32_t by)
{
    struct m_alloc_bin *b = &tc->bins[c];
    uint32_t cap = m_alloc_class_info[c].bin_cap;
    if (b->max + by > cap)
        by = cap - b->max;
    size_t nbytes = (size_t)by * m_alloc_class_size[c];
    if (by && tc->max_bytes + nbytes <= tc->cap_bytes) {
        M_ALLOC_OWNER_SET(b->max, b->max + by);
        M_ALLOC_OWNER_SET(b->room, b->room + (int32_t)by);
        tc->max_bytes += nbytes;
    }
}

void m_alloc_tcache_overflow(struct m_alloc_tcache *tc, unsigned c)
{
    struct m_alloc_bin *b = &tc->bins[c];
    uint32_t batch = m_alloc_class_info[c].batch;
    /* a thread that only frees this class (a consumer) still gets one
     * batch of room, so its blocks go back a batch at a time */
    if (b->max < batch)
        bin_grow(tc, c, batch - b->max);
    if (b->room >= 0)
        return;
    uint32_t count = m_alloc_bin_count(b);
    uint32_t keep = b->max / 2;
    bin_give_back(tc, c, count - keep, true);
    tcache_event(tc);
    /* blocks are piling up in caches and in transit: have the purger look
     * at this heap's caches (it takes those of threads that went idle).
     * Only a running purger: it is started for free pages alone (a process
     * that never frees a page needs no thread, and a fork child - where
     * ThreadSanitizer forbids new threads - keeps none). */
    struct moat_heap *h = tc->heap;
    if (m_alloc_purger_running() &&
        !atomic_load_explicit(&h->reclaim_wanted, memory_order_relaxed)) {
        atomic_store_explicit(&h->reclaim_wanted, 1, memory_order_relaxed);
        atomic_store_explicit(&m_alloc_purge_wanted, 1, memory_order_relaxed);
    }
    m_alloc_purge_check();
}

void *m_alloc_tcache_refill_pop(struct m_alloc_tcache *tc, unsigned c, size_t n)
{
    struct m_alloc_bin *b = &tc->bins[c];
    struct moat_heap *h = tc->heap;
    const struct m_alloc_class_info *ci = &m_alloc_class_info[c];
    tcache_event(tc);
    bin_grow(tc, c, ci->batch);
    uint32_t want = b->max < ci->batch ? b->max : ci->batch;
    if (want == 0)
        want = 1;
    uint32_t got = 0;
    uintptr_t chain = m_alloc_refill(h, c, want, tc->tag, &got);
    if (!got)
        return NULL;
    b->refills++;
    M_ALLOC_OWNER_ADD(b->sample_bytes, n);
    M_ALLOC_OWNER_ADD(b->samples, 1);
    /* the list was empty: the chain becomes the list */
    b->head = chain;
    M_ALLOC_OWNER_SET(b->room, (int32_t)b->max - (int32_t)got);
    return (void *)m_alloc_bin_pop_checked(tc, h, c, n);
}

/* ------------------------------------------------------------------------
 * The fast paths' slow paths, ending the allocator call (alloc_int.h)
 * ---------------------------------------------------------------------- */

/* Each is entered with depth 1 and a valid (checked) cache where it takes
 * one; slow_depth covers the rest of the call, whatever it calls. */
void *m_alloc_malloc_slow_leave(size_t n, struct moat_heap *h)
{
    m_alloc_slow_enter();
    void *p = m_alloc_malloc_slow(h ? h : m_alloc_default(), n);
    m_alloc_slow_leave();
    m_alloc_leave();
    return p;
}

void m_alloc_free_generic_leave(void *p)
{
    m_alloc_slow_enter();
    m_alloc_free_generic(p);
    m_alloc_slow_leave();
    m_alloc_leave();
}

void m_alloc_free_uncached_leave(struct moat_heap *h, size_t c1, uintptr_t blk)
{
    m_alloc_slow_enter();
    m_alloc_free_uncached(h, (unsigned)(c1 - 1), blk);
    m_alloc_slow_leave();
    m_alloc_leave();
}

void m_alloc_tcache_overflow_leave(struct m_alloc_tcache *tc, size_t c1)
{
    m_alloc_slow_enter();
    m_alloc_tcache_overflow(tc, (unsigned)(c1 - 1));
    m_alloc_slow_leave();
    m_alloc_leave();
}

void m_alloc_free_remote_leave(struct m_alloc_tcache *tc, size_t c1, uintptr_t a,
                               const struct m_alloc_pmap *pm)
{
    m_alloc_slow_enter();
    m_alloc_free_remote(tc, (unsigned)(c1 - 1), a, pm);
    m_alloc_slow_leave();
    m_alloc_leave();
}

/* ------------------------------------------------------------------------
 * Creating and releasing caches
 * ---------------------------------------------------------------------- */

static void tcache_init(struct m_alloc_tcache *tc, struct moat_heap *h)
{
    struct m_alloc_tcache *pool_next = tc->pool_next;
    __builtin_memset(tc, 0, sizeof *tc);
    tc->pool_next = pool_next;
    tc->heap = h;
    atomic_store_explicit(&tc->live_heap, h, memory_order_relaxed);
    atomic_store_explicit(&tc->heap_id, h->id, memory_order_relaxed);
    tc->key[0] = h->key[0];
    tc->key[1] = h->key[1];
    tc->lo = atomic_load_explicit(&h->lo, memory_order_acquire);
    tc->span = atomic_load_explicit(&h->span, memory_order_relaxed);
    tc->slot = h->slot;
    tc->tls = &m_alloc_tls;
    tc->pressure_seen = atomic_load_explicit(&h->pressure, memory_order_relaxed);
}

/* Registry of a heap's caches (global lock held). */
static void registry_add(struct moat_heap *h, struct m_alloc_tcache *tc)
{
    tc->reg_prev = NULL;
    tc->reg_next = h->tcaches;
    if (h->tcaches)
        h->tcaches->reg_prev = tc;
    h->tcaches = tc;
    atomic_fetch_add_explicit(&h->ntcaches, 1, memory_order_relaxed);
}

static void registry_remove(struct moat_heap *h, struct m_alloc_tcache *tc)
{
    if (tc->reg_prev)
        tc->reg_prev->reg_next = tc->reg_next;
    else
        h->tcaches = tc->reg_next;
    if (tc->reg_next)
        tc->reg_next->reg_prev = tc->reg_prev;
    tc->reg_next = tc->reg_prev = NULL;
    atomic_fetch_sub_explicit(&h->ntcaches, 1, memory_order_relaxed);
}

/* Flush tc into its heap, fold its statistics into the classes, unregister
 * it (global lock held; the heap is alive). */
static void tcache_retire(struct m_alloc_tcache *tc)
{
    struct moat_heap *h = tc->heap;
    /* An uncapped heap parks what an exiting thread held: in a server that
     * starts a thread per request (larson) the next thread's refills take
     * it whole.  Draining it, and with it every chain other threads parked
     * in those classes, cost larson 8% of its time in drain_chain and in
     * refills walking slab lists.  A capped heap (an enclave's ECall
     * threads) wants the memory back in its slabs at once. */
    tcache_flush_how(tc, h->limit_pages == SIZE_MAX);
    for (unsigned c = 0; c < M_ALLOC_NCLASSES; c++) {
        struct m_alloc_bin *b = &tc->bins[c];
        atomic_fetch_add_explicit(&h->classes[c].allocs_done, b->allocs, memory_order_relaxed);
        atomic_fetch_add_explicit(&h->classes[c].sample_bytes_done, b->sample_bytes,
                                  memory_order_relaxed);
        atomic_fetch_add_explicit(&h->classes[c].samples_done, b->samples, memory_order_relaxed);
    }
    registry_remove(h, tc);
}

void m_alloc_tcache_release(struct m_alloc_tcache *tc, bool heap_alive)
{
    pthread_mutex_lock(&m_alloc_global.lock);
    if (heap_alive && atomic_load_explicit(&tc->heap_id, memory_order_relaxed) != 0)
        tcache_retire(tc);
    tag_put(tc->tag);
    pool_put(tc);
    pthread_mutex_unlock(&m_alloc_global.lock);
    m_alloc_purge_check();
}

struct m_alloc_tcache *m_alloc_tcache_get(struct moat_heap *h)
{
    if (h->slot == M_ALLOC_NO_SLOT)
        return NULL;
    struct m_alloc_tls *t = &m_alloc_tls;
    struct m_alloc_tcache *tc = m_alloc_tls_cache(h->slot);
    if (tc && atomic_load_explicit(&tc->heap_id, memory_order_acquire) == (h->id | M_ALLOC_STOLEN))
        wait_while_stolen(tc);
    if (tc && atomic_load_explicit(&tc->heap_id, memory_order_acquire) == h->id)
        return tc;
    if (t->state == M_ALLOC_TLS_BUSY || t->state == M_ALLOC_TLS_DEAD)
        return NULL;
    int prev = t->state;
    t->state = M_ALLOC_TLS_BUSY; /* whatever runs below allocates uncached */
    if (tc) {
        /* left over from a destroyed heap that had this slot */
        m_alloc_tls_set(h->slot, NULL);
        if (t->dflt == tc)
            t->dflt = M_ALLOC_TC_NONE;
        m_alloc_tcache_release(tc, false);
    }
    if (prev == M_ALLOC_TLS_NEW)
        pthread_setspecific(m_alloc_global.key, (void *)1);
    pthread_mutex_lock(&m_alloc_global.lock);
    tc = pool_get();
    if (tc) {
        tcache_init(tc, h);
        tc->tag = tag_take();
        registry_add(h, tc);
        tc->cap_bytes = m_alloc_tcache_cap(h);
    }
    pthread_mutex_unlock(&m_alloc_global.lock);
    m_alloc_tls_set(h->slot, tc);
    t->state = M_ALLOC_TLS_LIVE;
    return tc;
}

/* Orphan every cache of a heap being destroyed (global lock held): their
 * threads find heap_id 0 and drop them without touching the heap. */
void m_alloc_tcache_orphan_all(struct moat_heap *h)
{
    while (h->tcaches) {
        struct m_alloc_tcache *tc = h->tcaches;
        registry_remove(h, tc);
        atomic_store_explicit(&tc->heap_id, 0, memory_order_relaxed);
        atomic_store_explicit(&tc->live_heap, NULL, memory_order_relaxed);
    }
}

void m_alloc_thread_exit(void *arg)
{
    (void)arg;
    struct m_alloc_tls *t = &m_alloc_tls;
    t->state = M_ALLOC_TLS_DEAD;
    t->dflt = M_ALLOC_TC_NONE;
    for (int s = 0; s < M_ALLOC_TLS_SLOTS; s++) {
        struct m_alloc_tcache *tc = m_alloc_tls_cache(s);
        if (!tc)
            continue;
        m_alloc_tls_set(s, NULL);
        m_alloc_tcache_release(tc, true);
    }
}

/* In a child after fork(): only this thread exists; the caches of the
 * others will never be used again.  They are dropped, not flushed: their
 * threads may have been in the middle of a push or pop when fork() ran, so
 * their lists cannot be trusted.  Their blocks (a few KiB a thread, within
 * the cache cap) stay counted as in use in the child. */
void m_alloc_tcache_fork_child(void)
{
    struct m_alloc_tls *t = &m_alloc_tls;
    pthread_mutex_lock(&m_alloc_global.lock);
    for (struct moat_heap *h = m_alloc_global.heaps; h; h = h->next_heap) {
        struct m_alloc_tcache *tc = h->tcaches;
        while (tc) {
            struct m_alloc_tcache *next = tc->reg_next;
            if (tc->slot >= M_ALLOC_TLS_SLOTS || t->tc[tc->slot] != tc) {
                registry_remove(h, tc);
                tag_put(tc->tag);
                pool_put(tc);
            }
            tc = next;
        }
    }
    pthread_mutex_unlock(&m_alloc_global.lock);
}
