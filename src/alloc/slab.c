/*
 * slab.c - the central side of a size class: its slabs, handing blocks to
 * thread caches (refill) and taking them back (give back, drain).
 *
 * A class keeps its slabs that have free blocks on four lists by fullness
 * (used / capacity in quarters) and always serves the fullest first: free
 * blocks get used up in slabs that are nearly full while nearly empty slabs
 * drain, reach zero and go back to the page allocator.  Full slabs are on no
 * list; a slab goes back on one when a block returns to it.
 *
 * Blocks come back lock-free, two ways.  A cache that overflowed puts its
 * chain (head and length in one word) into one of the class's transfer
 * slots with one compare-and-swap; the next refill takes a chain whole,
 * without the lock and without walking it - blocks freed by one thread flow
 * to another that allocates (at most h->xfer_bytes of a class wait there,
 * in up to 64 chains: see m_alloc_xfer_bytes).  A thread exiting from an
 * uncapped heap parks its cache there too.  Otherwise - a cache that is
 * flushed, or full slots - the chain is pushed onto the class's `returned`
 * stack and put back into its slabs ("drained") by the pusher itself once
 * a batch has piled up, if a trylock gets it the class lock: the pusher
 * freed those blocks, so they are still in its cache.  A refill leaves
 * them alone unless more than M_ALLOC_TRANSIT_BATCHES batches wait.  A
 * refill takes a slab's whole free list at once when it is about the size
 * wanted, without walking it: the first touch of each block then happens
 * in malloc, spread over time, rather than all at once under the lock.
 *
 * A chain parked in a transfer slot that nobody takes is drained into its
 * slabs by the second decay that looks at it (m_alloc_class_age marks it
 * old first), or by the purger.
 *
 * The hand-off cannot strand blocks: a pusher that fails the trylock pushed
 * before it tried, and the holder looks at `returned` after it unlocks.
 */
#include "alloc/alloc_int.h"

#include <linux/futex.h>

/* Blocks in transit (`returned`) a refill tolerates, in batches. */
#define M_ALLOC_TRANSIT_BATCHES 4
/* A transfer slot: chain head (bits 0-46: user addresses), "old" mark (bit
 * 47: seen by a decay already), block count (bits 48-63). */
#define M_XFER_OLD ((uint64_t)1 << 47)
#define M_XFER_PTR (M_XFER_OLD - 1)
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* ------------------------------------------------------------------------
 * The futex lock of alloc_int.h (Drepper's "mutex 2")
 * ---------------------------------------------------------------------- */

void m_alloc_lock_slow(m_alloc_lock_t *l)
{
    /* spin a little: holders run short critical sections */
    for (int i = 0; i < 100; i++) {
        uint32_t c = 0;
        if (atomic_load_explicit(&l->v, memory_order_relaxed) == 0 &&
            atomic_compare_exchange_weak_explicit(&l->v, &c, 1, memory_order_acquire,
                                                  memory_order_relaxed))
            return;
        __builtin_ia32_pause();
    }
    uint32_t c = atomic_exchange_explicit(&l->v, 2, memory_order_acquire);
    while (c != 0) {
        syscall(SYS_futex, &l->v, FUTEX_WAIT_PRIVATE, 2, NULL, NULL, 0);
        c = atomic_exchange_explicit(&l->v, 2, memory_order_acquire);
    }
}

void m_alloc_unlock_wake(m_alloc_lock_t *l)
{
    atomic_store_explicit(&l->v, 0, memory_order_release);
    syscall(SYS_futex, &l->v, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

void m_alloc_class_init(struct m_alloc_class *cl)
{
    m_alloc_lock_init(&cl->lock);
    atomic_init(&cl->returned, 0);
    atomic_init(&cl->returned_count, 0);
    for (int i = 0; i < M_ALLOC_TRANSFER_SLOTS; i++)
        atomic_init(&cl->transfer[i], 0);
    atomic_init(&cl->xfer_taken, 0);
    memset(cl->partial, 0, sizeof cl->partial);
    cl->used = cl->slabs = cl->peak_used = cl->peak_slabs = 0;
    atomic_init(&cl->allocs_done, 0);
    atomic_init(&cl->sample_bytes_done, 0);
    atomic_init(&cl->samples_done, 0);
}

/* ------------------------------------------------------------------------
 * Partial lists
 * ---------------------------------------------------------------------- */

static void list_remove(struct m_alloc_class *cl, struct m_alloc_page *s)
{
    if (!s->bucket)
        return;
    if (s->prev)
        s->prev->next = s->next;
    else
        cl->partial[s->bucket - 1] = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->next = s->prev = NULL;
    s->bucket = 0;
}

/* Put s on the list its fullness calls for (none when full). */
static void list_update(struct m_alloc_class *cl, struct m_alloc_page *s, uint32_t capacity,
                        uint32_t cap_magic)
{
    if (s->used >= capacity) {
        list_remove(cl, s);
        return;
    }
    /* used * NBUCKETS / capacity, by the class's reciprocal (no division) */
    uint8_t b = (uint8_t)(1u + (((uint64_t)s->used * M_ALLOC_NBUCKETS * cap_magic) >> 32));
    if (s->bucket == b)
        return;
    list_remove(cl, s);
    s->bucket = b;
    s->prev = NULL;
    s->next = cl->partial[b - 1];
    if (s->next)
        s->next->prev = s;
    cl->partial[b - 1] = s;
}

/* ------------------------------------------------------------------------
 * Slabs
 * ---------------------------------------------------------------------- */

static struct m_alloc_page *slab_new(struct moat_heap *h, unsigned c, struct m_alloc_arena **arp)
{
    const struct m_alloc_class_info *ci = &m_alloc_class_info[c];
    bool zero;
    m_alloc_lock(&h->page_lock);
    struct m_alloc_page *s = m_alloc_span_alloc(h, ci->slab_pages, 1, &zero, arp);
    if (s) {
        m_alloc_set_span_pages(*arp, s, M_ALLOC_PK_SLAB, (uint8_t)c);
        s->flags = 0;
        m_alloc_slab_owner_set(m_alloc_pmap_of(*arp, s), c, 0);
        s->bucket = 0;
        s->used = 0;
        s->free = 0;
        s->next = s->prev = NULL;
        atomic_store_explicit(&s->bumped, 0, memory_order_relaxed);
    }
    m_alloc_unlock(&h->page_lock);
    if (s) {
        struct m_alloc_class *cl = &h->classes[c];
        cl->slabs++;
        if (cl->slabs > cl->peak_slabs)
            cl->peak_slabs = cl->slabs;
    }
    return s;
}

static void slab_release(struct moat_heap *h, struct m_alloc_class *cl, struct m_alloc_arena *ar,
                         struct m_alloc_page *s)
{
    list_remove(cl, s);
    cl->slabs--;
    m_alloc_lock(&h->page_lock);
    m_alloc_span_free(h, ar, s);
    m_alloc_unlock(&h->page_lock);
}

/* The arena and slab head of a block handed back; dies if it is not a block
 * of this heap and class (the chain was corrupted). */
static struct m_alloc_page *block_slab(struct moat_heap *h, unsigned c, uintptr_t blk,
                                       struct m_alloc_arena **arp)
{
    struct m_alloc_arena *ar = m_alloc_arena_of(blk);
    if (!ar || ar->heap != h)
        m_alloc_die_corrupt((void *)blk);
    struct m_alloc_page *pg = &ar->pages[m_alloc_page_index(ar, blk)];
    struct m_alloc_page *s = pg - pg->offset;
    if (pg->kind != M_ALLOC_PK_SLAB || s->kind != M_ALLOC_PK_SLAB || s->cls != c)
        m_alloc_die_corrupt((void *)blk);
    *arp = ar;
    return s;
}

/* ------------------------------------------------------------------------
 * Draining: blocks from `returned` back into their slabs (lock held)
 * ---------------------------------------------------------------------- */

/* Put the blocks of a NULL-terminated chain back into their slabs (class
 * lock held); returns how many there were. */
static uint32_t drain_chain(struct moat_heap *h, unsigned c, uintptr_t blk)
{
    struct m_alloc_class *cl = &h->classes[c];
    uint32_t capacity = m_alloc_class_info[c].capacity;
    uint32_t n = 0;
    while (blk) {
        uintptr_t *w = (uintptr_t *)blk;
        uintptr_t next = m_alloc_dec(h->key, blk, w[0]);
        if (!m_alloc_link_ok(h, next))
            m_alloc_die_corrupt((void *)blk);
        struct m_alloc_arena *ar;
        struct m_alloc_page *s = block_slab(h, c, blk, &ar);
        w[0] = m_alloc_enc(h->key, blk, s->free);
        s->free = blk;
        s->used--;
        cl->used--;
        n++;
        if (s->used == 0)
            slab_release(h, cl, ar, s);
        else
            list_update(cl, s, capacity, m_alloc_class_info[c].cap_magic);
        blk = next;
    }
    return n;
}

static void drain_locked(struct moat_heap *h, unsigned c)
{
    struct m_alloc_class *cl = &h->classes[c];
    uintptr_t chain = atomic_exchange_explicit(&cl->returned, 0, memory_order_acquire);
    if (chain)
        atomic_fetch_sub_explicit(&cl->returned_count, drain_chain(h, c, chain),
                                  memory_order_relaxed);
}

/* Transfer chains back into their slabs too (class lock held). */
static void drain_transfer_locked(struct moat_heap *h, unsigned c)
{
    struct m_alloc_class *cl = &h->classes[c];
    for (int i = 0; i < M_ALLOC_TRANSFER_SLOTS; i++) {
        uint64_t v = atomic_exchange_explicit(&cl->transfer[i], 0, memory_order_acquire);
        if (v)
            drain_chain(h, c, (uintptr_t)(v & M_XFER_PTR));
    }
}

/* Unlock, then drain whatever was pushed while we held the lock and whose
 * pusher could not get it (see the banner). */
static void class_unlock(struct moat_heap *h, unsigned c, uint32_t threshold)
{
    struct m_alloc_class *cl = &h->classes[c];
    m_alloc_unlock(&cl->lock);
    while (atomic_load_explicit(&cl->returned_count, memory_order_seq_cst) >= threshold &&
           atomic_load_explicit(&cl->returned, memory_order_relaxed) != 0 &&
           m_alloc_trylock(&cl->lock)) {
        drain_locked(h, c);
        m_alloc_unlock(&cl->lock);
    }
}

void m_alloc_class_drain(struct moat_heap *h, unsigned c, bool wait)
{
    struct m_alloc_class *cl = &h->classes[c];
    bool transfer = false;
    for (int i = 0; i < M_ALLOC_TRANSFER_SLOTS; i++)
        transfer |= atomic_load_explicit(&cl->transfer[i], memory_order_relaxed) != 0;
    if (!transfer && !atomic_load_explicit(&cl->returned, memory_order_relaxed))
        return;
    if (wait)
        m_alloc_lock(&cl->lock);
    else if (!m_alloc_trylock(&cl->lock))
        return;
    drain_transfer_locked(h, c);
    drain_locked(h, c);
    class_unlock(h, c, 1);
}

/* Age the transfer chains of class c: unless a refill took one of its
 * chains since the last look, a chain already marked old (it sat through a
 * whole decay period of the cache that looks, untaken) goes back to its
 * slabs and the others are marked.  So chains flow between threads as
 * long as someone takes them, and a class nobody allocates any more gets
 * its blocks back within three periods. */
void m_alloc_class_age(struct moat_heap *h, unsigned c)
{
    struct m_alloc_class *cl = &h->classes[c];
    uintptr_t old[M_ALLOC_TRANSFER_SLOTS];
    int nold = 0;
    /* chains are being taken: the class is in use, its parked chains are
     * what keeps it flowing (with 64 slots some sit longer than a period
     * even so: refills take the first they find) */
    if (atomic_load_explicit(&cl->xfer_taken, memory_order_relaxed)) {
        atomic_store_explicit(&cl->xfer_taken, 0, memory_order_relaxed);
        return;
    }
    for (int i = 0; i < M_ALLOC_TRANSFER_SLOTS; i++) {
        uint64_t v = atomic_load_explicit(&cl->transfer[i], memory_order_relaxed);
        if (!v)
            continue;
        if (!(v & M_XFER_OLD)) {
            /* fails if a refill took it meanwhile: then it is not idle */
            atomic_compare_exchange_strong_explicit(&cl->transfer[i], &v, v | M_XFER_OLD,
                                                    memory_order_relaxed, memory_order_relaxed);
            continue;
        }
        if (!atomic_compare_exchange_strong_explicit(&cl->transfer[i], &v, 0, memory_order_acquire,
                                                     memory_order_relaxed))
            continue;
        old[nold++] = (uintptr_t)(v & M_XFER_PTR);
    }
    if (!nold)
        return;
    m_alloc_lock(&cl->lock);
    for (int i = 0; i < nold; i++)
        drain_chain(h, c, old[i]);
    class_unlock(h, c, 1);
}

void m_alloc_drain_all(struct moat_heap *h, bool wait)
{
    for (unsigned c = 0; c < M_ALLOC_NCLASSES; c++)
        m_alloc_class_drain(h, c, wait);
}

void m_alloc_give_back(struct moat_heap *h, unsigned c, uintptr_t first, uintptr_t last, uint32_t n,
                       bool transfer)
{
    struct m_alloc_class *cl = &h->classes[c];
    /* transfer chains hold at most h->xfer_bytes of a class */
    uint64_t nbytes = (uint64_t)n * m_alloc_class_size[c];
    int slots = nbytes ? (int)(h->xfer_bytes / nbytes) : 0;
    if (slots > M_ALLOC_TRANSFER_SLOTS)
        slots = M_ALLOC_TRANSFER_SLOTS;
    if (transfer && n < (1u << 16) && slots > 0) {
        ((uintptr_t *)last)[0] = m_alloc_enc(h->key, last, 0);
        uint64_t v = (uint64_t)first | ((uint64_t)n << 48);
        for (int i = 0; i < slots; i++) {
            uint64_t empty = 0;
            if (atomic_load_explicit(&cl->transfer[i], memory_order_relaxed) == 0 &&
                atomic_compare_exchange_strong_explicit(&cl->transfer[i], &empty, v,
                                                        memory_order_release, memory_order_relaxed))
                return;
        }
    }
    uintptr_t top = atomic_load_explicit(&cl->returned, memory_order_relaxed);
    do {
        ((uintptr_t *)last)[0] = m_alloc_enc(h->key, last, top);
    } while (!atomic_compare_exchange_weak_explicit(&cl->returned, &top, first,
                                                    memory_order_release, memory_order_relaxed));
    uint32_t count = atomic_fetch_add_explicit(&cl->returned_count, n, memory_order_seq_cst) + n;
    uint32_t threshold = m_alloc_class_info[c].batch;
    if (count >= threshold && m_alloc_trylock(&cl->lock)) {
        drain_locked(h, c);
        class_unlock(h, c, threshold);
    }
}

/* ------------------------------------------------------------------------
 * Refill
 * ---------------------------------------------------------------------- */

uintptr_t m_alloc_refill(struct moat_heap *h, unsigned c, uint32_t want, uint8_t tag, uint32_t *got)
{
    struct m_alloc_class *cl = &h->classes[c];
    const struct m_alloc_class_info *ci = &m_alloc_class_info[c];
    uint32_t size = m_alloc_class_size[c];
    uint32_t transit = ci->batch * M_ALLOC_TRANSIT_BATCHES;
    uintptr_t first = 0, last = 0;
    uint32_t n = 0;
    bool terminated = false;

    /* A chain another cache overflowed with: no lock, no walking.  Not for
     * a single block (an uncached allocation): the rest of the chain would
     * have nowhere to go. */
    for (int i = 0; want > 1 && i < M_ALLOC_TRANSFER_SLOTS; i++) {
        if (atomic_load_explicit(&cl->transfer[i], memory_order_relaxed) == 0)
            continue;
        uint64_t v = atomic_exchange_explicit(&cl->transfer[i], 0, memory_order_acquire);
        if (v) {
            if (!atomic_load_explicit(&cl->xfer_taken, memory_order_relaxed))
                atomic_store_explicit(&cl->xfer_taken, 1, memory_order_relaxed);
            *got = (uint32_t)(v >> 48);
            return (uintptr_t)(v & M_XFER_PTR);
        }
    }

    m_alloc_lock(&cl->lock);
    if (atomic_load_explicit(&cl->returned_count, memory_order_relaxed) >= transit)
        drain_locked(h, c);

    /* The fullest slabs first, then a new one. */
    while (n < want) {
        struct m_alloc_page *s = NULL;
        for (int b = M_ALLOC_NBUCKETS - 1; b >= 0 && !s; b--)
            s = cl->partial[b];
        struct m_alloc_arena *ar;
        if (s)
            ar = m_alloc_arena_of_desc(h, s);
        else if (!(s = slab_new(h, c, &ar)))
            break;
        uint32_t bumped = atomic_load_explicit(&s->bumped, memory_order_relaxed);
        uint32_t nfree = bumped - s->used; /* blocks on s->free */
        uint32_t taken = 0;
        if (nfree > 4 && nfree <= 2 * (want - n)) {
            /* take the whole list without walking it: its blocks were last
             * touched by the threads that freed them, and walking them here
             * would take those cache misses all at once */
            if (last)
                ((uintptr_t *)last)[0] = m_alloc_enc(h->key, last, s->free);
            else
                first = s->free;
            s->free = 0;
            taken = nfree;
            terminated = true;
        }
        while (!terminated && n + taken < want && s->free) {
            uintptr_t blk = s->free;
            uintptr_t next = m_alloc_dec(h->key, blk, ((uintptr_t *)blk)[0]);
            if (!m_alloc_link_ok(h, next))
                m_alloc_die_corrupt((void *)blk);
            s->free = next;
            if (last)
                ((uintptr_t *)last)[0] = m_alloc_enc(h->key, last, blk);
            else
                first = blk;
            last = blk;
            taken++;
        }
        uintptr_t start = m_alloc_page_addr(ar, s);
        while (!terminated && n + taken < want && bumped < ci->capacity) {
            uintptr_t blk = start + (uintptr_t)bumped * size;
            ((uintptr_t *)blk)[1] = m_alloc_tag(h->key, blk);
            bumped++;
            if (last)
                ((uintptr_t *)last)[0] = m_alloc_enc(h->key, last, blk);
            else
                first = blk;
            last = blk;
            taken++;
        }
        atomic_store_explicit(&s->bumped, (uint16_t)bumped, memory_order_release);
        struct m_alloc_pmap *pm = m_alloc_pmap_of(ar, s);
        if (__atomic_load_n(&pm->owner, __ATOMIC_RELAXED) != tag)
            m_alloc_slab_owner_set(pm, c, tag); /* lines free reads */
        s->used = (uint16_t)(s->used + taken);
        cl->used += taken;
        n += taken;
        list_update(cl, s, ci->capacity, ci->cap_magic);
        if (terminated)
            break;
    }
    if (last && !terminated)
        ((uintptr_t *)last)[0] = m_alloc_enc(h->key, last, 0);
    if (cl->used > cl->peak_used)
        cl->peak_used = cl->used;
    class_unlock(h, c, transit);
    *got = n;
    return first;
}
