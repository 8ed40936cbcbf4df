/*
 * alloc_int.h - the alloc layer's private structures and its fast paths,
 * shared by the files of src/alloc only (the layer's contract with the rest
 * of moat is alloc.h; with programs, include/moat/alloc.h).
 *
 * The shape of the allocator
 * --------------------------
 *   heap -> arenas -> pages -> slabs -> blocks
 *
 * A heap reserves address space in arenas (its whole cap at once when it
 * has one, 1 GiB at a time otherwise).  An arena starts with an array of
 * 40-byte page descriptors, one per data page, then the data pages.  Runs of
 * pages ("spans") are either free, a slab of one size class, or one large
 * object.  A global map from 64 MiB chunks of the address space to arenas
 * finds the descriptor of any pointer in two loads, and says "not ours" for
 * every other pointer.
 *
 * Slabs are shared by all threads: a slab belongs to its class, never to a
 * thread, so a thread that stops allocating strands nothing, and the
 * partially used slabs of a class are few (one set per heap, not per
 * thread).  That is the point of this design: in a 64 MiB heap with twenty
 * threads, per-thread slabs (or per-thread chunk caches, as in the snmalloc
 * report that motivated it) waste a large share of the heap.
 *
 * Threads keep small caches of free blocks instead (struct m_alloc_tcache):
 * a singly-linked list per class, bounded in blocks per class and in bytes
 * per thread.  malloc pops from it and free pushes onto it without a lock or
 * an atomic instruction.  A full cache hands a chain of blocks back to its
 * class with one compare-and-swap (slab.c), so cross-thread frees are
 * lock-free.  A block of a slab another live thread allocates from goes on
 * a separate "remote" list instead of being reused (which would share its
 * cache line between two threads), and back to the class a batch at a time.
 *
 * Free-list links inside free blocks are encoded with the heap's secret keys
 * and the block's own address, and checked when decoded; the second word of
 * a free block holds a tag (its address xor a key) that marks it free, which
 * is how a double free is caught.  Blocks are therefore at least 16 bytes.
 *
 * Locks, in the order they are taken:
 *   m_alloc_global.lock   heap list, TLS slots, cache registries
 *   class->lock           one per size class: its slabs and counters
 *   heap->page_lock       arenas, spans, page counters
 */
#ifndef M_ALLOC_ALLOC_INT_H
#define M_ALLOC_ALLOC_INT_H

#include "alloc/alloc.h"

#include <moat/alloc.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define M_ALLOC_LIKELY(x)   __builtin_expect(!!(x), 1)
#define M_ALLOC_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define M_ALLOC_NOINLINE    __attribute__((noinline))
#define M_ALLOC_COLD        __attribute__((noinline, cold))

#define M_ALLOC_PAGE_SHIFT 12
#define M_ALLOC_PAGE       ((size_t)1 << M_ALLOC_PAGE_SHIFT)
/* Granule of the arena map: arenas from the mmap and region sources are
 * aligned to it, so a chunk belongs to at most one of them. */
#define M_ALLOC_CHUNK_SHIFT 26
#define M_ALLOC_CHUNK       ((size_t)1 << M_ALLOC_CHUNK_SHIFT)
/* User space of x86-64 (and aarch64 with 48-bit VAs). */
#define M_ALLOC_VA_BITS 47
#define M_ALLOC_NCHUNKS ((size_t)1 << (M_ALLOC_VA_BITS - M_ALLOC_CHUNK_SHIFT))

#define M_ALLOC_NCLASSES       MOAT_ALLOC_NCLASSES
#define M_ALLOC_SMALL_MAX      32768u
#define M_ALLOC_MAX_SLAB_PAGES 16u
#define M_ALLOC_NBUCKETS       4
#define M_ALLOC_TRANSFER_SLOTS 64
#define M_ALLOC_NFREEBINS      64
/* Unlimited heaps grow in arenas of this much address space. */
#define M_ALLOC_ARENA_DEFAULT ((size_t)1 << 30)
/* A heap with a TLS slot gets per-thread caches; slot M_ALLOC_TLS_SLOTS is
 * the "no cache" sentinel, always NULL. */
#define M_ALLOC_TLS_SLOTS 8
#define M_ALLOC_NO_SLOT   M_ALLOC_TLS_SLOTS

/* ------------------------------------------------------------------------
 * Locks
 *
 * Class and page locks are a three-state futex mutex (0 free, 1 held, 2
 * held with waiters) that spins briefly before it sleeps: one atomic
 * instruction each way when uncontended.  They are not pthread mutexes so
 * that fork's prepare handler can hold every one of them (72 a heap) without
 * running into ThreadSanitizer's limit of 64 locks held at once; TSan still
 * sees the acquire/release atomics that order the data they guard.
 * ---------------------------------------------------------------------- */

typedef struct {
    _Atomic uint32_t v;
} m_alloc_lock_t;

void m_alloc_lock_slow(m_alloc_lock_t *l);
void m_alloc_unlock_wake(m_alloc_lock_t *l);

static inline void m_alloc_lock_init(m_alloc_lock_t *l)
{
    atomic_init(&l->v, 0);
}

static inline void m_alloc_lock(m_alloc_lock_t *l)
{
    uint32_t c = 0;
    if (M_ALLOC_LIKELY(atomic_compare_exchange_strong_explicit(&l->v, &c, 1, memory_order_acquire,
                                                               memory_order_relaxed)))
        return;
    m_alloc_lock_slow(l);
}

static inline bool m_alloc_trylock(m_alloc_lock_t *l)
{
    uint32_t c = 0;
    return atomic_compare_exchange_strong_explicit(&l->v, &c, 1, memory_order_acquire,
                                                   memory_order_relaxed);
}

static inline void m_alloc_unlock(m_alloc_lock_t *l)
{
    if (M_ALLOC_UNLIKELY(atomic_fetch_sub_explicit(&l->v, 1, memory_order_release) != 1))
        m_alloc_unlock_wake(l);
}

/* ------------------------------------------------------------------------
 * Size classes
 *
 * Classes 0-7 are 16..128 bytes in steps of 16; above 128 each doubling
 * (2^k, 2^(k+1)] has eight classes 2^k + j * 2^(k-3), j = 1..8.  A request
 * n > 128 lands in a class less than n + n/8; n <= 128 wastes at most 15
 * bytes.  The class of n is computed, not looked up: a branch and a clz.
 * ---------------------------------------------------------------------- */

#define M_ALLOC_CLASS_G(c) ((c) < 8u ? 0u : ((c)-8u) / 8u)
#define M_ALLOC_CLASS_J(c) ((c) < 8u ? 0u : ((c)-8u) % 8u + 1u)
#define M_ALLOC_CLASS_SIZE(c)                                                                      \
    ((c) < 8u ? 16u * ((c) + 1u)                                                                   \
              : (128u << M_ALLOC_CLASS_G(c)) + M_ALLOC_CLASS_J(c) * (16u << M_ALLOC_CLASS_G(c)))
/* ceil(2^32 / size): (off * magic) >> 32 == off / size for off < 2^16 and
 * size <= 2^15 (a slab is at most 64 KiB); the class test checks it. */
#define M_ALLOC_CLASS_MAGIC(c) ((uint32_t)(0xFFFFFFFFu / M_ALLOC_CLASS_SIZE(c) + 1u))

extern const uint32_t m_alloc_class_size[M_ALLOC_NCLASSES];
extern const uint32_t m_alloc_class_magic[M_ALLOC_NCLASSES];

/* Per-class geometry and cache sizing, computed once by m_alloc_classes_init. */
struct m_alloc_class_info {
    uint32_t slab_pages; /* pages per slab */
    uint32_t capacity;   /* blocks per slab */
    uint32_t batch;      /* blocks a cache moves at a time (slow start step) */
    uint32_t bin_cap;    /* most blocks a thread may cache for the class */
    uint32_t cap_magic;  /* floor(2^32 / capacity): fullness buckets without division */
    uint32_t used_bytes; /* capacity * block size: offsets past it are the slab's tail */
};
extern struct m_alloc_class_info m_alloc_class_info[M_ALLOC_NCLASSES];

/*
 * What free's fast path needs of a class, in one 8-byte entry.  With
 * mul = floor(2^32 / size) + 1, size * mul = 2^32 + e for some e in
 * [1, size], so an offset off = k * size + r in a slab multiplies to
 * (uint32_t)(off * mul) = k * e + r * mul (no wrap-around for the sizes and
 * offsets of a slab): below capacity * e exactly for block starts (r = 0,
 * k < capacity), and at least mul > capacity * e for every other offset
 * (r > 0).  So one multiplication and one compare against limit = capacity
 * * e tell a block's start from an interior or tail pointer;
 * test_alloc_classes checks it for every class and every offset of a slab.
 */
struct m_alloc_class_check {
    uint32_t mul;
    uint32_t limit;
};
/* Indexed by a page's map entry's cls: [c + 1] for class c, and [0] (for
 * every page that is not a slab's) {0, 0}, which no offset passes - so
 * free's one test also turns away large objects and free pages. */
extern struct m_alloc_class_check m_alloc_class_check[M_ALLOC_NCLASSES + 1];
_Static_assert(M_ALLOC_NCLASSES + 1 <= 255, "a page's map entry holds 1 + its class in a byte");

void m_alloc_classes_init(void);

/* class of n <= M_ALLOC_SMALL_MAX by 16-byte granule (filled by
 * m_alloc_classes_init; class sizes are multiples of 16, so a granule has
 * one class): 2 KiB, of which a program's usual sizes touch a few lines.
 * One load for every small size: the clz path above 1 KiB cost malloc a
 * compare and a branch more per call. */
#define M_ALLOC_LUT_SIZE (M_ALLOC_SMALL_MAX / 16 + 1)
extern uint8_t m_alloc_class_lut[M_ALLOC_LUT_SIZE];

static inline unsigned m_alloc_size_class_calc(size_t n)
{
    if (n <= 128)
        return n ? (unsigned)((n - 1) >> 4) : 0;
    unsigned k = 63u - (unsigned)__builtin_clzll((unsigned long long)(n - 1));
    return 8u + (k - 7u) * 8u + (unsigned)(((n - 1) >> (k - 3u)) & 7u);
}

/* The class of n <= M_ALLOC_SMALL_MAX. */
static inline unsigned m_alloc_size_class(size_t n)
{
    return m_alloc_class_lut[(n + 15) >> 4];
}

/* ------------------------------------------------------------------------
 * Pages, spans and arenas
 * ---------------------------------------------------------------------- */

enum m_alloc_page_kind {
    M_ALLOC_PK_FREE = 0, /* in a free span, or no page at all (zero descriptors) */
    M_ALLOC_PK_SLAB = 1,
    M_ALLOC_PK_LARGE = 2,
    M_ALLOC_PK_META = 3, /* the arena's header and descriptors */
};

/* Free span flags (in `flags`). */
#define M_ALLOC_SPAN_DIRTY 0x1 /* may hold committed pages */
/* Large object flags. */
#define M_ALLOC_LARGE_ZERO 0x2 /* came from decommitted pages: reads as zero */

/*
 * One per data page.  Every page of a span has kind, cls and offset (so a
 * pointer anywhere finds its span's head in one step); the rest is valid in
 * the head only.  Slab fields are guarded by the class lock, span fields by
 * the heap's page lock; a span changes hands between them only with both.
 */
struct m_alloc_page {
    uint8_t kind;    /* enum m_alloc_page_kind */
    uint8_t cls;     /* slab: size class */
    uint8_t bucket;  /* slab: fullness bucket + 1 while on a partial list, else 0 */
    uint8_t flags;   /* spans: M_ALLOC_SPAN_DIRTY, M_ALLOC_LARGE_ZERO */
    uint32_t offset; /* pages back to the head (0 at the head) */
    uint32_t npages; /* head: pages in the span */
    /* slab: blocks carved so far; read without the lock by free's pointer check */
    _Atomic uint16_t bumped;
    uint16_t used;  /* slab: blocks out of the slab (live, cached or in transit) */
    uintptr_t free; /* slab: first free block (links inside are encoded); large: bytes requested */
    struct m_alloc_page *next, *prev; /* partial list of the class, or free-span bin */
};

/*
 * An arena is one reservation: its header and page descriptors first, then
 * data pages; pages[i] describes the page at (arena + i pages), so the
 * descriptors of the header's own pages are unused (kind META).
 *
 * "Normal" arenas are aligned to a 64 MiB chunk and fit in it (a capped
 * heap's may be shorter), and their descriptor array always covers the
 * whole chunk: free finds the arena of a pointer by masking it and the
 * descriptor by indexing, and only checks the chunk map (in parallel) to
 * know the pointer is ours.  An object too big for a normal arena gets a
 * "huge" arena of its own (released when it is freed); a heap made on a
 * caller's region has one "odd" arena there, not aligned.  Those two go
 * through the slow path.
 */
/*
 * The read-mostly part of a page's description, in an array of its own:
 * free's fast path reads only this (8 bytes a page), so slab updates under
 * the class lock (used counts, free lists, list links in struct
 * m_alloc_page) do not invalidate the cache lines every free reads.  kind,
 * cls and offset (in bytes here) mirror struct m_alloc_page's and change
 * only when a span changes hands.
 */
struct m_alloc_pmap {
    uint8_t kind;
    uint8_t cls;   /* 1 + the size class on a slab's pages, 0 on every other page */
    uint8_t owner; /* a slab: tag of the cache that last took blocks from it,
                    * in every page's entry, so that free finds it in the
                    * entry it reads anyway (written under the class lock,
                    * read by free; both with __atomic builtins) */
    uint8_t pad;
    /* bytes back to the span's head (its page offset << M_ALLOC_PAGE_SHIFT):
     * free adds it to the pointer's offset in its page without a shift */
    uint32_t off_bytes;
};
_Static_assert(sizeof(struct m_alloc_pmap) == 8, "free computes a slab head's entry by a shift");

struct m_alloc_arena {
    /* read by free's fast path */
    struct moat_heap *heap;
    uint64_t heap_id;
    struct m_alloc_pmap *pmap; /* pmap[i] describes page i, like pages[i] */
    int slot;                  /* the heap's TLS slot */
    uintptr_t base;            /* first data page */
    uintptr_t end;             /* past the last data page */
    size_t npages;             /* pages from the arena's start to end */
    size_t first;              /* index of the first data page */
    size_t resv_nbytes;
    bool odd;  /* not chunk-aligned (a caller's region) */
    bool huge; /* one large object */
    struct m_alloc_arena *next;
    struct m_alloc_page *pages;
};

/* Where a normal arena's pmap starts: right after its header, so free finds
 * a page's entry from the pointer alone (page.c lays arenas out so). */
#define M_ALLOC_PMAP_AT ((sizeof(struct m_alloc_arena) + 63) & ~(size_t)63)

static inline struct m_alloc_pmap *m_alloc_pmap_of(const struct m_alloc_arena *ar,
                                                   const struct m_alloc_page *pg)
{
    return &ar->pmap[pg - ar->pages];
}

#define M_ALLOC_CHUNK_PAGES (M_ALLOC_CHUNK >> M_ALLOC_PAGE_SHIFT)

/* Chunk -> arena: 0 for none, the arena's address | 2, or 1 for a chunk
 * shared by arenas that are not chunk-aligned (a caller's region), which
 * are looked up in a short list instead.  Bit 1 keeps chunk 0 (addresses
 * below 64 MiB) from ever matching. */
#define M_ALLOC_CHUNK_ARENA 2u
extern _Atomic(uintptr_t) m_alloc_chunk_map[M_ALLOC_NCHUNKS];

/* Chunk -> 1 + the TLS slot of the heap of the normal arena that starts
 * there, 0 for every other chunk: free's fast path reads this byte (one
 * load tells it the pointer is in a normal arena and which of the thread's
 * caches it goes to; no compare with the chunk's address, no load of the
 * arena's slot). */
extern _Atomic uint8_t m_alloc_chunk_slot[M_ALLOC_NCHUNKS];

struct m_alloc_arena *m_alloc_arena_of_odd(uintptr_t a);

static inline uintptr_t m_alloc_chunk_entry(uintptr_t a)
{
    /* the mask keeps the index in the map; an address above the user
     * space then meets an entry that cannot match its chunk */
    return atomic_load_explicit(
        &m_alloc_chunk_map[(a >> M_ALLOC_CHUNK_SHIFT) & (M_ALLOC_NCHUNKS - 1)],
        memory_order_acquire);
}

/* The arena holding data address a, or NULL if it is not moat's. */
static inline struct m_alloc_arena *m_alloc_arena_of(uintptr_t a)
{
    uintptr_t e = m_alloc_chunk_entry(a);
    if (M_ALLOC_UNLIKELY(e & 1))
        return m_alloc_arena_of_odd(a);
    struct m_alloc_arena *ar = (struct m_alloc_arena *)(e & ~(uintptr_t)3);
    if (M_ALLOC_UNLIKELY(!ar || a < ar->base || a >= ar->end))
        return NULL;
    return ar;
}

static inline size_t m_alloc_page_index(const struct m_alloc_arena *ar, uintptr_t a)
{
    return (a - (uintptr_t)ar) >> M_ALLOC_PAGE_SHIFT;
}

static inline uintptr_t m_alloc_page_addr(const struct m_alloc_arena *ar,
                                          const struct m_alloc_page *pg)
{
    return (uintptr_t)ar + ((uintptr_t)(pg - ar->pages) << M_ALLOC_PAGE_SHIFT);
}

/* ------------------------------------------------------------------------
 * Size classes of a heap (central state)
 * ---------------------------------------------------------------------- */

struct m_alloc_class {
    m_alloc_lock_t lock; /* guards everything below except `returned*` */
    /* Chain of free blocks handed back lock-free by caches (push with CAS,
     * taken whole with exchange under `lock`). */
    _Atomic uintptr_t returned;
    _Atomic uint32_t returned_count;
    /* Chains a thread's cache overflowed with, handed whole to the next
     * refill: head | count << 48 (user addresses fit in 47 bits), 0 when
     * empty.  Lock-free both ways; no walking of the blocks. */
    _Atomic uint64_t transfer[M_ALLOC_TRANSFER_SLOTS];
    /* a refill took a chain since the last m_alloc_class_age look */
    _Atomic uint32_t xfer_taken;
    struct m_alloc_page *partial[M_ALLOC_NBUCKETS]; /* slabs with free blocks, by fullness */
    uint64_t used;                                  /* blocks out of slabs */
    uint64_t slabs;
    uint64_t peak_used;
    uint64_t peak_slabs;
    /* statistics of released caches (live caches keep their own) and of
     * uncached allocations */
    _Atomic uint64_t allocs_done;
    _Atomic uint64_t sample_bytes_done;
    _Atomic uint64_t samples_done;
} __attribute__((aligned(64)));

/* ------------------------------------------------------------------------
 * Thread caches
 * ---------------------------------------------------------------------- */

/*
 * Fields written only by the owner thread but read by statistics from any
 * thread ("owner counters") are plain integers read with a relaxed atomic
 * load: the owner's updates then compile to one add to memory.  Under
 * ThreadSanitizer the owner's updates are relaxed atomics too, so the
 * reads are not reported as races.
 */
#ifdef MOAT_TSAN
#define M_ALLOC_OWNER_SET(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELAXED)
#define M_ALLOC_OWNER_ADD(x, v)                                                                    \
    __atomic_store_n(&(x), __atomic_load_n(&(x), __ATOMIC_RELAXED) + (v), __ATOMIC_RELAXED)
#else
#define M_ALLOC_OWNER_SET(x, v) ((x) = (v))
#define M_ALLOC_OWNER_ADD(x, v) ((x) += (v))
#endif
#define M_ALLOC_OWNER_READ(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)

struct m_alloc_bin {
    uintptr_t head; /* first cached block; its links are encoded */
    /* max minus the blocks cached (owner counter; see m_alloc_bin_count):
     * negative once the list is over its bound.  Kept this way round so
     * that free's push tests the bound with the decrement itself */
    int32_t room;
    uint32_t max;     /* adaptive bound on the blocks cached (owner counter) */
    uint32_t refills; /* times the list ran dry since the last decay */
    uint32_t rcount;  /* blocks on the remote list (owner counter) */
    /* Blocks of slabs another cache took its blocks from: never reused by
     * this thread (its writes would share cache lines with that thread's
     * blocks - passive false sharing); handed back a batch at a time. */
    uintptr_t rhead;
    uintptr_t rtail; /* last block of the remote list (64 bytes: a bin is found by a shift) */
    uint64_t allocs; /* statistics (owner counters): allocations served, */
    /* and the request sizes of the allocations that refilled the list: a
     * sample of the class's requests (recording every request would cost
     * the fast path an add) */
    uint64_t sample_bytes;
    uint64_t samples;
};

struct m_alloc_tcache {
    struct moat_heap *heap;
    /* the heap while it lives; NULL once destroyed (written under the
     * global lock by moat_heap_destroy, read by the owner without it) */
    _Atomic(struct moat_heap *) live_heap;
    /* the heap's id; 0 once the heap is destroyed (written under the global
     * lock by moat_heap_destroy, read by the owner without it) */
    _Atomic uint64_t heap_id;
    uintptr_t key[2];        /* copies of the heap's keys, next to the bins */
    uintptr_t lo, span;      /* a copy of the heap's bounds (they only grow) */
    size_t cap_bytes;        /* bound on the sum of max * block size */
    size_t max_bytes;        /* current sum of max * block size */
    struct m_alloc_tls *tls; /* the owner thread's */
    uint32_t events_total;   /* slow-path events (owner counter) */
    uint32_t reclaim_seen;   /* events_total at the purger's last look (global lock) */
    bool reclaiming;         /* the purger's mark (global lock) */
    uint32_t events;         /* slow-path events since the last decay */
    /* classes this cache parked chains of in the transfer slots, in this
     * decay period and the one before: only those are drained at a decay */
    uint64_t parked[2][2];
    uint32_t pressure_seen;
    uint8_t tag; /* owner tag written into slabs this cache takes blocks from */
    int slot;
    struct m_alloc_tcache *reg_next, *reg_prev; /* heap's registry (global lock) */
    struct m_alloc_tcache *pool_next;           /* free pool */
    union {
        struct m_alloc_bin bins1[M_ALLOC_NCLASSES + 1]; /* by class + 1 (free's fast path) */
        struct {
            struct m_alloc_bin unused;
            struct m_alloc_bin bins[M_ALLOC_NCLASSES]; /* by class */
        };
    };
};

enum m_alloc_tls_state {
    M_ALLOC_TLS_NEW = 0,  /* no cache yet, exit hook not armed */
    M_ALLOC_TLS_LIVE = 1, /* exit hook armed */
    M_ALLOC_TLS_BUSY = 2, /* creating a cache: nested calls go uncached */
    M_ALLOC_TLS_DEAD = 3, /* thread exiting: everything uncached from now on */
};

/*
 * A thread without a cache for a slot (or for the default heap) has
 * M_ALLOC_TC_NONE there, never NULL: a cache that no heap check passes
 * (live_heap and heap_id carry M_ALLOC_STOLEN), so the fast paths need one
 * test, not a NULL test and then the heap check.  The slow paths read the
 * slots through m_alloc_tls_cache(), which turns it back into NULL.
 */
extern struct m_alloc_tcache m_alloc_tcache_none;
#define M_ALLOC_TC_NONE (&m_alloc_tcache_none)

struct m_alloc_tls {
    struct m_alloc_tcache *dflt; /* this thread's cache of the default heap */
    struct m_alloc_tcache *tc[M_ALLOC_TLS_SLOTS + 1];
    int state;
    /* 1 inside an allocator call's fast path, and slow paths entered:
     * owner counters the purger reads (see "Reclaiming idle caches") */
    uint32_t depth;
    uint32_t slow_depth;
};

extern __thread struct m_alloc_tls m_alloc_tls __attribute__((tls_model("initial-exec")));

/* Blocks cached in bin b (another thread may read it, for statistics). */
static inline uint32_t m_alloc_bin_count(const struct m_alloc_bin *b)
{
    return (uint32_t)((int64_t)M_ALLOC_OWNER_READ(b->max) - M_ALLOC_OWNER_READ(b->room));
}

/* This thread's cache in TLS slot s, or NULL. */
static inline struct m_alloc_tcache *m_alloc_tls_cache(int s)
{
    struct m_alloc_tcache *tc = m_alloc_tls.tc[s];
    return tc == M_ALLOC_TC_NONE ? NULL : tc;
}

/* Set TLS slot s (NULL: no cache). */
static inline void m_alloc_tls_set(int s, struct m_alloc_tcache *tc)
{
    m_alloc_tls.tc[s] = tc ? tc : M_ALLOC_TC_NONE;
}

/*
 * Reclaiming idle caches
 *
 * A thread that frees a burst and then sleeps keeps its cache, and every
 * cached block pins its slab: a hundred blocks of random classes can hold
 * a couple of MiB.  The purger (purge.c) therefore takes back the caches of
 * threads that are not inside an allocator call, without costing the owner
 * an atomic instruction, by an asymmetric Dekker handshake:
 *
 *   owner, at every entry:  depth = 1 (plain store); then loads heap_id or
 *                           live_heap of its cache (the fast paths' check)
 *   owner, at every exit:   depth = 0 (release store)
 *   purger (global lock):   tags heap_id and live_heap (M_ALLOC_STOLEN);
 *                           membarrier(PRIVATE_EXPEDITED); reads depth
 *
 * The membarrier makes every running thread execute a full barrier, so
 * either the owner's load sees the tag (its fast path fails, and the slow
 * path waits for the purger on the global lock) or the purger sees depth
 * != 0 (and leaves that cache alone).  With both at 0 the cache is the
 * purger's until it clears the tag (release; the owner's check loads are
 * acquire).  The fast paths store constants, not depth + 1: an increment
 * would chain every call to the previous one through memory (a
 * store-forwarding latency per call, 10% of a malloc/free loop).  Slow
 * paths may call malloc (pthread_create, pthread_setspecific), whose exit
 * clears depth: they count themselves in slow_depth instead (the *_leave
 * functions of tcache.c, m_alloc_tcache_flush).  Every access to a cache's
 * lists must be inside one of the two and behind a check of the tag: the
 * fast paths below, and the slow paths they call, are.
 */
#define M_ALLOC_STOLEN ((uint64_t)1 << 63) /* in heap_id; bit 0 in live_heap */

static inline void m_alloc_enter(void)
{
    M_ALLOC_OWNER_SET(m_alloc_tls.depth, 1);
    atomic_signal_fence(memory_order_seq_cst);
}

static inline void m_alloc_leave(void)
{
    __atomic_store_n(&m_alloc_tls.depth, 0, __ATOMIC_RELEASE);
}

static inline void m_alloc_slow_enter(void)
{
    M_ALLOC_OWNER_SET(m_alloc_tls.slow_depth, m_alloc_tls.slow_depth + 1);
    atomic_signal_fence(memory_order_seq_cst);
}

static inline void m_alloc_slow_leave(void)
{
    __atomic_store_n(&m_alloc_tls.slow_depth, m_alloc_tls.slow_depth - 1, __ATOMIC_RELEASE);
}

/* ------------------------------------------------------------------------
 * Heaps
 * ---------------------------------------------------------------------- */

struct moat_heap {
    /* Read-mostly, read by every fast path: keep on one line. */
    uint64_t id;
    int slot;
    bool builtin;         /* the built-in default heap (static storage, never destroyed) */
    uintptr_t key[2];     /* [0] free-list links (m_alloc_enc), [1] free tags (m_alloc_tag) */
    _Atomic uintptr_t lo; /* all arenas lie in [lo, lo + span) */
    _Atomic uintptr_t span;

    size_t limit_pages;  /* SIZE_MAX: no cap */
    uint32_t xfer_bytes; /* most bytes of a class parked in its transfer slots */
    size_t tcache_bytes; /* 0: adaptive */
    size_t retain_bytes; /* 0: adaptive */
    /* pages more the heap may keep free and committed now (0: none); set by
     * the owner of the program heap (preload) before any other thread uses
     * it: while moat does not track the program's memory, free pages cost
     * nothing, and purging them costs refaults */
    size_t (*retain_hint)(void);
    struct m_alloc_source src;
    _Atomic uint32_t pressure; /* bumped when a capped heap runs short */
    _Atomic uint32_t ntcaches;
    struct m_alloc_tcache *tcaches; /* registry (m_alloc_global.lock) */
    struct moat_heap *next_heap;    /* m_alloc_global.heaps */

    m_alloc_lock_t page_lock;        /* guards everything down to the classes */
    struct m_alloc_arena *arenas;    /* normal arenas, newest first */
    struct m_alloc_arena *odd_arena; /* the caller's region, set once at creation */
    struct m_alloc_arena *huge;      /* huge arenas (one object each) */
    size_t narenas;
    struct m_alloc_page *free_bins[2][M_ALLOC_NFREEBINS]; /* [dirty][bin] */
    size_t pages_used;                                    /* in slabs and large objects */
    size_t pages_dirty;                                   /* free, maybe committed */
    size_t peak_pages_used;
    size_t peak_pages_committed;
    size_t meta_bytes;
    uint64_t large_objects;
    uint64_t large_requested;
    uint64_t large_pages;
    uint64_t large_allocs;
    uint64_t decommitted_pages;
    uint64_t decommit_calls;
    uint64_t last_purge_ns;
    uint64_t carves;     /* spans taken from the free bins */
    uint64_t purge_seen; /* carves at the purger's last look */
    uint32_t purge_waits;
    uint32_t reclaim_waits;          /* purger passes that found busy caches (purger only) */
    _Atomic uint32_t reclaim_wanted; /* a cache overflowed since the purger's last look */
    _Atomic uint64_t reclaimed;      /* caches the purger took back */
    _Atomic uint64_t alloc_failures;

    struct m_alloc_class classes[M_ALLOC_NCLASSES];
};

/*
 * Bytes of a class its transfer slots may hold: 1/2048 of a capped heap
 * (all 72 classes full: 3.5% of the cap; 32 KiB a class in a 64 MiB
 * heap), 512 KiB in an uncapped one.  Producer/consumer bursts need the
 * room: with 32 KiB, half of the blocks of alloc_speed prodcons went back
 * through their slabs (drain, then refill: 30% of its time); with 512 KiB,
 * 1 in 12.  The chains of a class nobody takes from are still drained
 * within three decay periods (m_alloc_class_age), and by the purger.
 */
static inline uint32_t m_alloc_xfer_bytes(size_t limit)
{
    size_t b = limit ? limit / 2048 : (512u << 10);
    return b < (32u << 10) ? 32u << 10 : b > (512u << 10) ? 512u << 10 : (uint32_t)b;
}

/* The arena whose descriptor array holds pg: normal arenas keep their
 * descriptors in their own chunk; a heap has at most one odd arena. */
static inline struct m_alloc_arena *m_alloc_arena_of_desc(const struct moat_heap *h,
                                                          const struct m_alloc_page *pg)
{
    struct m_alloc_arena *odd = h->odd_arena;
    if (M_ALLOC_UNLIKELY(odd != NULL) && pg >= odd->pages && pg < odd->pages + odd->npages)
        return odd;
    return (struct m_alloc_arena *)((uintptr_t)pg & ~(uintptr_t)(M_ALLOC_CHUNK - 1));
}

/* Owner tags of the live caches (1 while a cache holds the tag). */
extern _Atomic uint8_t m_alloc_tag_live[256];

struct m_alloc_global {
    _Atomic int state; /* 0 none, 1 initialising, 2 ready */
    pthread_mutex_t lock;
    pthread_key_t key;
    struct moat_heap *heaps;
    uint32_t slots_used; /* bitmap of TLS slots */
    _Atomic uint64_t next_id;
    struct m_alloc_tcache *pool; /* free cache structures */
    size_t pool_bytes;
};
extern struct m_alloc_global m_alloc_global;
/* The default heap (NULL before the first use): a variable of its own,
 * hidden, so that malloc's fast path loads it with one instruction. */
extern _Atomic(struct moat_heap *) m_alloc_default_heap __attribute__((visibility("hidden")));

/* ------------------------------------------------------------------------
 * Encoded links and free tags
 * ---------------------------------------------------------------------- */

static inline uintptr_t m_alloc_rotl(uintptr_t x, unsigned r)
{
    return (x << r) | (x >> (64u - r));
}

/*
 * A free block's link to the next: rotl(next, 23) + (blk ^ key[0]).  The
 * addend depends on a secret and on the block, so a link written by an
 * overflow, or copied from another block, decodes to garbage; and any
 * change of the encoded word below 2^23 (an overwrite of its low bytes, a
 * copy from a block less than 8 MiB away) changes the decoded link's top
 * 23 bits, which puts it far outside the heap, where the bounds check
 * catches it (test_alloc_classes checks both).  One key: a second one
 * xored into `next` (the encoding up to the seventh session) made a reader
 * of two links, rather than one, needed to recover the key, and cost 4-6% of
 * the single-thread loop's time, its decode being on malloc's path.
 */
static inline uintptr_t m_alloc_enc(const uintptr_t *key, uintptr_t blk, uintptr_t next)
{
    return m_alloc_rotl(next, 23) + (blk ^ key[0]);
}

static inline uintptr_t m_alloc_dec(const uintptr_t *key, uintptr_t blk, uintptr_t enc)
{
    return m_alloc_rotl(enc - (blk ^ key[0]), 41);
}

/* A decoded link must be NULL or a 16-byte aligned address in the heap. */
static inline bool m_alloc_link_ok(const struct moat_heap *h, uintptr_t next)
{
    uintptr_t lo = atomic_load_explicit(&h->lo, memory_order_acquire);
    uintptr_t span = atomic_load_explicit(&h->span, memory_order_relaxed);
    return next == 0 || ((next & 15) == 0 && next - lo < span);
}

static inline uintptr_t m_alloc_tag(const uintptr_t *key, uintptr_t blk)
{
    return blk ^ key[1];
}

/* ------------------------------------------------------------------------
 * Functions of the layer (slow paths)
 * ---------------------------------------------------------------------- */

/* report.c: fatal errors (one line on stderr, then abort) */
_Noreturn void m_alloc_die(const char *what, const void *p, const char *detail);
/* The same for a double free, declared as returning so that free's fast
 * path reaches it by a jump (a call of a _Noreturn function would make it
 * keep the stack aligned for the call: two instructions every free). */
void m_alloc_die_double_free(const void *p);
_Noreturn void m_alloc_die_corrupt(const void *blk);
void m_alloc_warn(const char *msg, const char *detail, int err);
void m_alloc_stats_write(struct moat_heap *h, int fd);

/* page.c */
int m_alloc_chunk_register(struct m_alloc_arena *ar);
void m_alloc_chunk_unregister(struct m_alloc_arena *ar);
/* m_alloc_span_alloc - npages aligned to align_pages (a power of two), with
 * the page lock held.  Sets *zero if the pages read as zero. */
struct m_alloc_page *m_alloc_span_alloc(struct moat_heap *h, size_t npages, size_t align_pages,
                                        bool *zero, struct m_alloc_arena **arp);
void m_alloc_span_free(struct moat_heap *h, struct m_alloc_arena *ar, struct m_alloc_page *head);
/* m_alloc_span_shrink - give back the tail of a large span beyond npages. */
void m_alloc_span_shrink(struct moat_heap *h, struct m_alloc_arena *ar, struct m_alloc_page *head,
                         size_t npages);
/* m_alloc_span_grow - extend a large span in place into a free neighbour. */
bool m_alloc_span_grow(struct moat_heap *h, struct m_alloc_arena *ar, struct m_alloc_page *head,
                       size_t npages);
void m_alloc_purge(struct moat_heap *h, size_t target_dirty_pages);
size_t m_alloc_retain_pages(const struct moat_heap *h);
int m_alloc_arena_add(struct moat_heap *h, size_t min_data_pages, bool huge,
                      struct m_alloc_arena **out);
void m_alloc_huge_release(struct moat_heap *h, struct m_alloc_arena *ar, size_t npages);
/* data pages of a normal arena, rounded down (a page of slack for the
 * alignment of the descriptor arrays): larger objects get a huge arena */
#define M_ALLOC_DESC_BYTES (sizeof(struct m_alloc_page) + sizeof(struct m_alloc_pmap))
#define M_ALLOC_NORMAL_PAGES                                                                       \
    (M_ALLOC_CHUNK_PAGES - 1 -                                                                     \
     (sizeof(struct m_alloc_arena) + 128 + M_ALLOC_CHUNK_PAGES * M_ALLOC_DESC_BYTES +              \
      M_ALLOC_PAGE - 1) /                                                                          \
         M_ALLOC_PAGE)
void m_alloc_arenas_release(struct moat_heap *h);
void m_alloc_set_span_pages(struct m_alloc_arena *ar, struct m_alloc_page *head, uint8_t kind,
                            uint8_t cls);

/* slab.c */
void m_alloc_class_init(struct m_alloc_class *cl);
/* m_alloc_refill - up to `want` blocks of class c as a chain linked with the
 * heap's encoding; returns its head and sets *got (0: out of memory).  The
 * slabs it takes blocks from are marked with `tag` (0: no cache). */
uintptr_t m_alloc_refill(struct moat_heap *h, unsigned c, uint32_t want, uint8_t tag,
                         uint32_t *got);
/* m_alloc_give_back - hand a chain [first..last] of n free blocks (tags set,
 * last's link not yet written) to class c; lock-free.  transfer: it may go
 * whole to the next refill (a cache that overflowed) rather than back to
 * its slabs (a cache that is let go). */
void m_alloc_give_back(struct moat_heap *h, unsigned c, uintptr_t first, uintptr_t last, uint32_t n,
                       bool transfer);
void m_alloc_class_drain(struct moat_heap *h, unsigned c, bool wait);
void m_alloc_class_age(struct moat_heap *h, unsigned c);
void m_alloc_drain_all(struct moat_heap *h, bool wait);

/* tcache.c */
struct m_alloc_tcache *m_alloc_tcache_get(struct moat_heap *h);
uintptr_t m_alloc_bin_pop_checked(struct m_alloc_tcache *tc, const struct moat_heap *h, unsigned c,
                                  size_t n);
void *m_alloc_tcache_refill_pop(struct m_alloc_tcache *tc, unsigned c, size_t n);
void m_alloc_tcache_overflow(struct m_alloc_tcache *tc, unsigned c);
void m_alloc_tcache_flush(struct m_alloc_tcache *tc);
unsigned m_alloc_tcache_reclaim(struct moat_heap *h, bool (*barrier)(void), unsigned *taken);
void m_alloc_tcache_release(struct m_alloc_tcache *tc, bool heap_alive);
void m_alloc_thread_exit(void *arg);
void m_alloc_tcache_fork_child(void);
void m_alloc_tcache_orphan_all(struct moat_heap *h);
size_t m_alloc_tcache_cap(const struct moat_heap *h);

/* purge.c: the background purger */
extern _Atomic int m_alloc_purge_wanted;
void m_alloc_purger_kick(void);
bool m_alloc_purger_running(void);
void m_alloc_purger_fork_prepare(void);
void m_alloc_purger_fork_parent(void);
void m_alloc_purger_fork_child(void);

/* Call where no allocator lock is held: starts or wakes the purger if a
 * free asked for it. */
static inline void m_alloc_purge_check(void)
{
    if (M_ALLOC_UNLIKELY(atomic_load_explicit(&m_alloc_purge_wanted, memory_order_relaxed)))
        m_alloc_purger_kick();
}

/* heap.c */
void m_alloc_global_init(void);
struct moat_heap *m_alloc_default_slow(void);
void *m_alloc_malloc_slow(struct moat_heap *h, size_t n);
void m_alloc_free_generic(void *p);
void m_alloc_free_uncached(struct moat_heap *h, unsigned c, uintptr_t blk);
uint64_t m_alloc_random(void);

/* ------------------------------------------------------------------------
 * Fast paths
 *
 * Kept small and inline so that moat_malloc and the drop-in's malloc both
 * compile to a handful of instructions when the thread's cache has a block;
 * everything else is a call to a noinline slow path.
 * ---------------------------------------------------------------------- */

static inline struct moat_heap *m_alloc_default(void)
{
    struct moat_heap *h = atomic_load_explicit(&m_alloc_default_heap, memory_order_acquire);
    if (M_ALLOC_UNLIKELY(!h))
        h = m_alloc_default_slow();
    return h;
}

/* Pop a cached block of class c, or 0 (list empty, or its link failed the
 * bounds check: see m_alloc_bin_pop_checked). */
static inline uintptr_t m_alloc_bin_pop(struct m_alloc_tcache *tc, unsigned c, size_t n)
{
    struct m_alloc_bin *b = &tc->bins[c];
    /* computed once: without this the compiler recomputes it at the end */
    __asm__("" : "+r"(b));
    uintptr_t blk = b->head;
    if (M_ALLOC_UNLIKELY(!blk))
        return 0;
    uintptr_t *w = (uintptr_t *)blk;
    uintptr_t next = m_alloc_dec(tc->key, blk, w[0]);
    /* checked against the cache's copy of the heap's bounds (a forged or
     * garbled link lands outside them with near certainty; the slow paths
     * also check alignment); on failure the caller's slow path looks at the
     * heap's own bounds (it may have grown) before it calls it corruption.
     * (Returning rather than calling keeps the fast path free of register
     * saves.) */
    if (M_ALLOC_UNLIKELY(next - tc->lo >= tc->span) && next)
        return 0;
    b->head = next;
    /* the next malloc of the class reads next's link: a block freed a
     * while ago, often out of the cache by then */
    __builtin_prefetch((const void *)next);
    M_ALLOC_OWNER_SET(b->room, b->room + 1);
    w[1] = 0; /* no longer tagged free */
    M_ALLOC_OWNER_ADD(b->allocs, 1);
    (void)n;
    return blk;
}

/* The slow paths the fast paths end in, each followed by m_alloc_leave()
 * (tcache.c): called in tail position, so that the fast paths need no
 * stack frame. */
void *m_alloc_malloc_slow_leave(size_t n, struct moat_heap *h);
void m_alloc_free_generic_leave(void *p);
/* (These take c1 = class + 1, as free's fast path has it.) */
void m_alloc_free_uncached_leave(struct moat_heap *h, size_t c1, uintptr_t blk);
void m_alloc_tcache_overflow_leave(struct m_alloc_tcache *tc, size_t c1);
void m_alloc_free_remote_leave(struct m_alloc_tcache *tc, size_t c1, uintptr_t a,
                               const struct m_alloc_pmap *pm);

/* A free of a block whose slab another cache takes blocks from (see
 * tcache.c).  Only blocks below 256 bytes (four cache lines) take this
 * path: a larger block shares at most the lines at its two ends with its
 * neighbours, so reusing it locally costs little false sharing and saves
 * its round trip through the class. */
#define M_ALLOC_REMOTE_MIN_CLASS 15u /* 256 bytes */
void m_alloc_free_remote(struct m_alloc_tcache *tc, unsigned c, uintptr_t a,
                         const struct m_alloc_pmap *pm);

/* Push free block a onto the cache list of class c (tag it free). */
static inline void m_alloc_bin_push(struct m_alloc_tcache *tc, unsigned c, uintptr_t a)
{
    struct m_alloc_bin *b = &tc->bins[c];
    uintptr_t *w = (uintptr_t *)a;
    uintptr_t link = m_alloc_enc(tc->key, a, b->head), tag = m_alloc_tag(tc->key, a);
    w[0] = link;
    w[1] = tag;
    b->head = a;
    int32_t room = b->room - 1;
    M_ALLOC_OWNER_SET(b->room, room);
    if (M_ALLOC_UNLIKELY(room < 0))
        m_alloc_tcache_overflow(tc, c);
}

/* malloc on the default heap: one TLS load finds the cache, checked
 * against the default heap (which moat_heap_set_default may change). */
static inline void *m_alloc_default_malloc(size_t n)
{
    m_alloc_enter();
    struct m_alloc_tcache *tc = m_alloc_tls.dflt;
    struct moat_heap *h = atomic_load_explicit(&m_alloc_default_heap, memory_order_relaxed);
    if (M_ALLOC_LIKELY(n <= M_ALLOC_SMALL_MAX &&
                       atomic_load_explicit(&tc->live_heap, memory_order_acquire) == h)) {
        uintptr_t blk = m_alloc_bin_pop(tc, m_alloc_size_class(n), n);
        if (M_ALLOC_LIKELY(blk)) {
            m_alloc_leave();
            return (void *)blk;
        }
    }
    /* n first: it stays where the call found it */
    return m_alloc_malloc_slow_leave(n, NULL);
}

static inline void *m_alloc_heap_malloc(struct moat_heap *h, size_t n)
{
    m_alloc_enter();
    struct m_alloc_tcache *tc = m_alloc_tls.tc[h->slot];
    if (M_ALLOC_LIKELY(n <= M_ALLOC_SMALL_MAX &&
                       atomic_load_explicit(&tc->heap_id, memory_order_acquire) == h->id)) {
        uintptr_t blk = m_alloc_bin_pop(tc, m_alloc_size_class(n), n);
        if (M_ALLOC_LIKELY(blk)) {
            m_alloc_leave();
            return (void *)blk;
        }
    }
    return m_alloc_malloc_slow_leave(n, h);
}

/* The entry of the head of pm's span: entries are 8 bytes, so the page
 * offset times 8 is off_bytes >> 9 (one shift). */
static inline struct m_alloc_pmap *m_alloc_pmap_head(const struct m_alloc_pmap *pm,
                                                     uint32_t off_bytes)
{
    return (struct m_alloc_pmap *)((uintptr_t)pm - (off_bytes >> (M_ALLOC_PAGE_SHIFT - 3)));
}

/* Mark the slab whose head entry is head (class c) as taken from by the
 * cache with tag `tag`: in all its pages' entries. */
static inline void m_alloc_slab_owner_set(struct m_alloc_pmap *head, unsigned c, uint8_t tag)
{
    for (uint32_t i = 0; i < m_alloc_class_info[c].slab_pages; i++)
        __atomic_store_n(&head[i].owner, tag, __ATOMIC_RELAXED);
}

/* Check that a (in the slab page whose map entry is pm, in arena ar) is the
 * start of a block (else moat did not hand it out: an interior or made-up
 * pointer); then push it onto this thread's cache after checking its free
 * tag (else a double free).  The offset of a in its slab is its offset in
 * its page plus the page's offset in the slab; one multiplication and one
 * compare tell a block's start (struct m_alloc_class_check). */
static inline void m_alloc_slab_free(const struct m_alloc_arena *ar, const struct m_alloc_pmap *pm,
                                     uintptr_t a)
{
    uint32_t offb = pm->off_bytes;
    uint32_t off = (uint32_t)(a & (M_ALLOC_PAGE - 1)) + offb;
    const struct m_alloc_class_check *ck = &m_alloc_class_check[pm->cls];
    unsigned c = pm->cls - 1u;
    if (M_ALLOC_UNLIKELY(off * ck->mul >= ck->limit))
        m_alloc_die("free(): invalid pointer", (void *)a, "not the start of a block");
    struct m_alloc_tcache *tc = m_alloc_tls.tc[ar->slot];
    if (M_ALLOC_LIKELY(atomic_load_explicit(&tc->heap_id, memory_order_acquire) == ar->heap_id)) {
        uintptr_t tag = m_alloc_tag(tc->key, a);
        uint8_t mine = tc->tag;
        if (M_ALLOC_UNLIKELY(((uintptr_t *)a)[1] == tag))
            m_alloc_die("free(): double free", (void *)a, "the block is already free");
        /* one branch (`|`, not `||`): the class test alone is random in a
         * mixed workload, the combined test is not */
        if (M_ALLOC_LIKELY((__atomic_load_n(&pm->owner, __ATOMIC_RELAXED) == mine) |
                           (c >= M_ALLOC_REMOTE_MIN_CLASS)))
            m_alloc_bin_push(tc, c, a);
        else
            m_alloc_free_remote(tc, c, a, pm);
        return;
    }
    m_alloc_free_uncached(ar->heap, c, a);
}

/* m_alloc_slab_free for free's fast path: the same, then m_alloc_leave(),
 * with every slow path in tail position. */
static inline void m_alloc_slab_free_leave(const struct m_alloc_arena *ar,
                                           const struct m_alloc_pmap *pm, uintptr_t a, size_t slot)
{
    size_t c1 = pm->cls; /* c + 1 */
    uint32_t off = (uint32_t)(a & (M_ALLOC_PAGE - 1)) + pm->off_bytes;
    struct m_alloc_class_check ck = m_alloc_class_check[c1];
    if (M_ALLOC_UNLIKELY(off * ck.mul >= ck.limit)) {
        /* not a slab's page, or not a block's start: the generic path
         * sorts it out (a large object) or reports it */
        m_alloc_free_generic_leave((void *)a);
        return;
    }
    struct m_alloc_tcache *tc = m_alloc_tls.tc[slot];
    if (M_ALLOC_UNLIKELY(atomic_load_explicit(&tc->heap_id, memory_order_acquire) != ar->heap_id)) {
        m_alloc_free_uncached_leave(ar->heap, c1, a);
        return;
    }
    uintptr_t *w = (uintptr_t *)a;
    uintptr_t tag = m_alloc_tag(tc->key, a);
    if (M_ALLOC_UNLIKELY(w[1] == tag)) {
        m_alloc_die_double_free((void *)a);
        return;
    }
    /* one branch (`|`, not `||`): the class test alone is random in a
     * mixed workload, the combined test is not */
    if (M_ALLOC_UNLIKELY((__atomic_load_n(&pm->owner, __ATOMIC_RELAXED) != tc->tag) &
                         (c1 <= M_ALLOC_REMOTE_MIN_CLASS))) {
        m_alloc_free_remote_leave(tc, c1, a, pm);
        return;
    }
    struct m_alloc_bin *b = &tc->bins1[c1];
    w[0] = m_alloc_enc(tc->key, a, b->head);
    w[1] = tag;
    b->head = a;
    int32_t room = b->room - 1;
    M_ALLOC_OWNER_SET(b->room, room);
    if (M_ALLOC_UNLIKELY(room < 0)) {
        m_alloc_tcache_overflow_leave(tc, c1);
        return;
    }
    m_alloc_leave();
}

/*
 * Free.  The arena of a pointer in a normal arena is its 64 MiB chunk; the
 * chunk's byte in m_alloc_chunk_slot confirms it and names the thread's
 * cache (a load that does not hold up the others).  Everything else -
 * large objects and free pages (class entry 0), odd and huge arenas,
 * pointers that are not moat's, NULL (chunk 0 never holds an arena) -
 * takes the generic path.
 */
static inline void m_alloc_free_block(void *p)
{
    uintptr_t a = (uintptr_t)p;
    uintptr_t chunk = a & ~(uintptr_t)(M_ALLOC_CHUNK - 1);
    const struct m_alloc_arena *ar = (const struct m_alloc_arena *)chunk;
    m_alloc_enter();
    size_t slot1 = atomic_load_explicit(
        &m_alloc_chunk_slot[(a >> M_ALLOC_CHUNK_SHIFT) & (M_ALLOC_NCHUNKS - 1)],
        memory_order_acquire);
    if (M_ALLOC_LIKELY(slot1 != 0)) {
        const struct m_alloc_pmap *pm = (const struct m_alloc_pmap *)(chunk + M_ALLOC_PMAP_AT) +
                                        ((a - chunk) >> M_ALLOC_PAGE_SHIFT);
        m_alloc_slab_free_leave(ar, pm, a, slot1 - 1);
        return;
    }
    m_alloc_free_generic_leave(p);
}

/* Bytes usable at p, with the same checks as free minus the tag. */
size_t m_alloc_usable(const void *p, struct moat_heap **owner, const char *fn);

#endif
