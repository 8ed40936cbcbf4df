/*
 * lru_sim.c - trace-driven miss-ratio simulator for moat's eviction policy.
 *
 * moat cannot read hardware accessed bits: a resident page is mapped and the
 * CPU touches it without telling anyone.  The only reference signals the
 * engine sees for free are faults it already takes, and the one fault a
 * resident page gives is the write-protect fault on the first write after it
 * was loaded clean (moat needs that fault anyway to know the page is dirty).
 * This program measures what that costs, by replaying the same traces
 * through:
 *
 *   OPT         Belady's optimum for demand paging (evict the page whose next
 *               use is furthest away); the lower bound.
 *   LRU         exact least-recently-used.
 *   CLOCK       second chance over the install-order FIFO with a perfect
 *               reference bit (what hardware accessed bits would give).
 *   SFIFO       segmented FIFO (VAX/VMS): the oldest quarter of the budget
 *               (--sfifo) is kept resident but armed, so any access to it
 *               takes a cheap "soft" fault and moves the page back to the
 *               FIFO's tail; evict from the cold end of that segment.
 *   CLOCK-W     CLOCK with a perfect *write* bit only (what UFFD WP_ASYNC +
 *               PAGEMAP_SCAN can report without a fault).
 *   moat+rearm  moat's policy, plus: a page given a second chance is
 *               write-protected again, so its next write signals again.
 *   moat        the policy the engine implements: FIFO in install order; the
 *               referenced bit is set only by the write fault on a page that
 *               was installed clean (by a read); a page installed by a write
 *               is dirty from the start and never signals.  Victim choice is
 *               CLOCK over the FIFO: pop the head, if referenced clear the
 *               bit and push it to the tail, else evict.
 *   FIFO        install order, no second chance.
 *
 * Misses count every access to a non-resident page, cold misses included
 * (the same for every policy).  "Extra faults" are the faults a policy takes
 * only to learn about references: none for moat (its write-protect faults
 * are taken anyway to track dirtiness) and for CLOCK-W read through
 * PAGEMAP_SCAN; the re-armed write-protect faults of moat+rearm; SFIFO's soft
 * faults.  A third table turns both into an estimated stall per access with
 * a simple cost model (--miss-us for a page-in with its share of eviction,
 * --fault-us for a fault round trip without I/O); OPT, LRU and CLOCK are
 * shown with no extra faults, as the bounds they are (none of them can be
 * implemented without hardware accessed bits).
 *
 * Traces are generated with fixed seeds (see trace_generate) or read from
 * files: one access a line, a page number (decimal or 0x hex; --shift 12
 * turns addresses into pages) and optionally r or w (default r), in either
 * order; '#' starts a comment.
 */
#include "bench.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------
 * Traces
 * ---------------------------------------------------------------------- */

/* An access is (page << 1) | is_write; pages are dense ids 0..npages-1. */
struct trace {
    char name[64];
    uint32_t *acc;
    size_t n;
    uint32_t npages;
};

#define ACC_PAGE(a)  ((a) >> 1)
#define ACC_WRITE(a) ((a)&1u)

static void *xmalloc(size_t nbytes)
{
    void *p = malloc(nbytes ? nbytes : 1);
    if (!p) {
        fprintf(stderr, "lru_sim: out of memory (%zu bytes)\n", nbytes);
        exit(1);
    }
    return p;
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) {
        fprintf(stderr, "lru_sim: out of memory (%zu x %zu bytes)\n", n, size);
        exit(1);
    }
    return p;
}

enum trace_kind {
    T_SEQ,
    T_UNIFORM,
    T_ZIPF08,
    T_ZIPF11,
    T_ZIPF11_RMW,
    T_HOTCOLD,
    T_HOTCOLD_RO,
    T_SCANHOT,
    T_NKINDS
};

static const char *const trace_names[] = {
    [T_SEQ] = "seq-loop",           [T_UNIFORM] = "uniform",         [T_ZIPF08] = "zipf-0.8",
    [T_ZIPF11] = "zipf-1.1",        [T_ZIPF11_RMW] = "zipf-1.1-rmw", [T_HOTCOLD] = "hot10/90",
    [T_HOTCOLD_RO] = "hot10/90-ro", [T_SCANHOT] = "scan+hot",
};

struct gen_params {
    uint32_t npages;
    size_t length;
    uint64_t seed;
    double write_frac;
};

/* A fixed-seed permutation, so "hot" pages are scattered over the range (the
 * policies here do not care, but a fed-back fault trace would). */
static uint32_t *random_permutation(uint32_t n, struct bench_rng *r)
{
    uint32_t *p = xmalloc(n * sizeof *p);
    for (uint32_t i = 0; i < n; i++)
        p[i] = i;
    for (uint32_t i = n - 1; i > 0; i--) {
        uint32_t j = (uint32_t)bench_rng_below(r, (uint64_t)i + 1);
        uint32_t t = p[i];
        p[i] = p[j];
        p[j] = t;
    }
    return p;
}

/* Zipf over ranks 1..n: P(rank k) ~ 1/k^alpha, sampled by binary search in
 * the cumulative distribution. */
static double *zipf_cdf(uint32_t n, double alpha)
{
    double *cdf = xmalloc(n * sizeof *cdf);
    double sum = 0;
    for (uint32_t k = 0; k < n; k++) {
        sum += 1.0 / pow((double)k + 1.0, alpha);
        cdf[k] = sum;
    }
    for (uint32_t k = 0; k < n; k++)
        cdf[k] /= sum;
    return cdf;
}

static uint32_t zipf_sample(const double *cdf, uint32_t n, struct bench_rng *r)
{
    double u = bench_rng_unit(r);
    uint32_t lo = 0, hi = n - 1;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (cdf[mid] < u)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static void trace_generate(struct trace *t, enum trace_kind kind, const struct gen_params *gp)
{
    struct bench_rng r;
    bench_rng_seed(&r, gp->seed * 1000003u + (uint64_t)kind);
    uint32_t n = gp->npages;
    uint32_t *perm = random_permutation(n, &r);
    double *cdf = NULL;
    if (kind == T_ZIPF08 || kind == T_ZIPF11 || kind == T_ZIPF11_RMW)
        cdf = zipf_cdf(n, kind == T_ZIPF08 ? 0.8 : 1.1);
    uint32_t nhot = n / 10 ? n / 10 : 1;     /* hot/cold: 10% of the pages ... */
    uint32_t nscanhot = n / 32 ? n / 32 : 1; /* scan+hot: a hot set of 1/32 */
    uint32_t scan_pos = 0;

    snprintf(t->name, sizeof t->name, "%s", trace_names[kind]);
    t->n = gp->length;
    t->npages = n;
    t->acc = xmalloc(t->n * sizeof *t->acc);
    for (size_t i = 0; i < t->n; i++) {
        uint32_t page;
        bool may_write = true;
        switch (kind) {
        case T_SEQ:
            page = (uint32_t)(i % n);
            break;
        case T_UNIFORM:
            page = perm[bench_rng_below(&r, n)];
            break;
        case T_ZIPF08:
        case T_ZIPF11:
        case T_ZIPF11_RMW:
            page = perm[zipf_sample(cdf, n, &r)];
            break;
        case T_HOTCOLD:
        case T_HOTCOLD_RO:
            /* ... get 90% of the accesses.  In the -ro variant the hot pages
             * are only read (a lookup table, code): they never give moat a
             * write fault, so moat's policy cannot see that they are hot. */
            if (bench_rng_unit(&r) < 0.9) {
                page = perm[bench_rng_below(&r, nhot)];
                may_write = kind == T_HOTCOLD;
            } else {
                page = perm[nhot + bench_rng_below(&r, n - nhot)];
            }
            break;
        case T_SCANHOT:
        default:
            /* Half the accesses go to a small hot set, half walk cyclically
             * through everything else (a scan that pollutes the cache). */
            if (bench_rng_unit(&r) < 0.5) {
                page = perm[bench_rng_below(&r, nscanhot)];
            } else {
                page = perm[nscanhot + scan_pos];
                scan_pos = (scan_pos + 1) % (n - nscanhot);
            }
            break;
        }
        uint32_t w = may_write && bench_rng_unit(&r) < gp->write_frac;
        /* -rmw: every write is a read-modify-write (x += 1), so a page
         * loaded by the read is written right away: moat's signal then
         * arrives at install time and says "written", not "used again". */
        if (w && kind == T_ZIPF11_RMW && i + 1 < t->n)
            t->acc[i++] = page << 1;
        t->acc[i] = page << 1 | w;
    }
    free(cdf);
    free(perm);
}

/* Sparse page numbers from a file become dense ids through this table. */
struct page_map {
    uint64_t *keys;
    uint32_t *vals;
    size_t cap, used;
};

static uint32_t page_map_get(struct page_map *m, uint64_t key)
{
    if ((m->used + 1) * 2 > m->cap) {
        struct page_map old = *m;
        m->cap = old.cap ? old.cap * 2 : 1024;
        m->keys = xmalloc(m->cap * sizeof *m->keys);
        m->vals = xmalloc(m->cap * sizeof *m->vals);
        memset(m->vals, 0xff, m->cap * sizeof *m->vals);
        m->used = 0;
        for (size_t i = 0; i < old.cap; i++) {
            if (old.vals[i] == UINT32_MAX)
                continue;
            size_t h = (size_t)(old.keys[i] * 0x9e3779b97f4a7c15ULL) & (m->cap - 1);
            while (m->vals[h] != UINT32_MAX)
                h = (h + 1) & (m->cap - 1);
            m->keys[h] = old.keys[i];
            m->vals[h] = old.vals[i];
            m->used++;
        }
        free(old.keys);
        free(old.vals);
    }
    size_t h = (size_t)(key * 0x9e3779b97f4a7c15ULL) & (m->cap - 1);
    while (m->vals[h] != UINT32_MAX) {
        if (m->keys[h] == key)
            return m->vals[h];
        h = (h + 1) & (m->cap - 1);
    }
    m->keys[h] = key;
    m->vals[h] = (uint32_t)m->used++;
    return m->vals[h];
}

static int trace_load(struct trace *t, const char *path, unsigned shift)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "lru_sim: cannot open trace %s: %s\n", path, strerror(errno));
        return -1;
    }
    struct page_map map = {0};
    size_t cap = 1 << 20, lineno = 0;
    t->acc = xmalloc(cap * sizeof *t->acc);
    t->n = 0;
    char line[256];
    while (fgets(line, sizeof line, f)) {
        lineno++;
        line[strcspn(line, "#\n")] = 0;
        bool have_page = false, write = false;
        uint64_t page = 0;
        for (char *tok = strtok(line, " \t,:"); tok; tok = strtok(NULL, " \t,:")) {
            if ((tok[0] == 'r' || tok[0] == 'R' || tok[0] == 'w' || tok[0] == 'W') && !tok[1]) {
                write = tok[0] == 'w' || tok[0] == 'W';
                continue;
            }
            char *end;
            errno = 0;
            uint64_t v = strtoull(tok, &end, 0);
            if (*end || errno || have_page) {
                fprintf(stderr, "lru_sim: %s:%zu: expected '<page> [r|w]', got '%s'\n", path,
                        lineno, tok);
                fclose(f);
                return -1;
            }
            page = v >> shift;
            have_page = true;
        }
        if (!have_page)
            continue;
        if (t->n == cap) {
            cap *= 2;
            uint32_t *na = realloc(t->acc, cap * sizeof *t->acc);
            if (!na) {
                fprintf(stderr, "lru_sim: out of memory reading %s\n", path);
                exit(1);
            }
            t->acc = na;
        }
        uint32_t id = page_map_get(&map, page);
        if (id >= (1u << 31)) {
            fprintf(stderr, "lru_sim: %s: more than 2^31 distinct pages\n", path);
            exit(1);
        }
        t->acc[t->n++] = id << 1 | (uint32_t)write;
    }
    fclose(f);
    t->npages = (uint32_t)map.used;
    free(map.keys);
    free(map.vals);
    const char *base = strrchr(path, '/');
    snprintf(t->name, sizeof t->name, "%s", base ? base + 1 : path);
    if (t->n == 0) {
        fprintf(stderr, "lru_sim: %s: no accesses\n", path);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------------
 * Policies
 * ---------------------------------------------------------------------- */

struct sim_result {
    uint64_t misses;
    uint64_t extra_faults; /* faults taken only to learn about a reference */
    uint64_t wp_faults;    /* moat's dirty-tracking write faults (taken anyway) */
};

/* The FIFO family: one install-order ring, a per-page flag byte, and a rule
 * for what sets the referenced bit. */
enum ref_rule {
    REF_NONE,     /* FIFO */
    REF_ANY,      /* CLOCK: every hit */
    REF_WRITE,    /* CLOCK-W: every write hit */
    REF_WP_ONCE,  /* moat: the first write hit after a clean install */
    REF_WP_REARM, /* moat+rearm: ... and after each second chance */
};

#define F_RES     1u /* resident */
#define F_REF     2u /* referenced bit */
#define F_ARMED   4u /* write-protected: the next write faults (moat variants) */
#define F_REARMED 8u /* ... and only because of a second chance (an extra fault) */

static void sim_fifo_family(const struct trace *t, uint32_t budget, enum ref_rule rule,
                            struct sim_result *res)
{
    uint8_t *flag = xcalloc(t->npages, 1);
    uint32_t *ring = xmalloc((size_t)budget * sizeof *ring);
    uint32_t head = 0, count = 0;
    uint64_t misses = 0, extra = 0, wp = 0;

    for (size_t i = 0; i < t->n; i++) {
        uint32_t p = ACC_PAGE(t->acc[i]);
        bool w = ACC_WRITE(t->acc[i]);
        if (flag[p] & F_RES) {
            switch (rule) {
            case REF_NONE:
                break;
            case REF_ANY:
                flag[p] |= F_REF;
                break;
            case REF_WRITE:
                if (w)
                    flag[p] |= F_REF;
                break;
            case REF_WP_ONCE:
            case REF_WP_REARM:
                if (w && (flag[p] & F_ARMED)) {
                    if (flag[p] & F_REARMED)
                        extra++;
                    else
                        wp++;
                    flag[p] = (uint8_t)((flag[p] & ~(F_ARMED | F_REARMED)) | F_REF);
                }
                break;
            }
            continue;
        }
        misses++;
        if (count == budget) {
            /* CLOCK over the FIFO: second chances go to the tail.  The ring
             * is full, so "pop head, push tail" is just advancing head. */
            for (;;) {
                uint32_t v = ring[head];
                if (!(flag[v] & F_REF))
                    break;
                flag[v] &= (uint8_t)~F_REF;
                if (rule == REF_WP_REARM)
                    flag[v] |= F_ARMED | F_REARMED;
                head = (head + 1) % budget;
            }
            flag[ring[head]] = 0;
            ring[head] = p;
            head = (head + 1) % budget;
        } else {
            ring[(head + count) % budget] = p;
            count++;
        }
        /* A page installed by a read is mapped write-protected (clean); one
         * installed by a write is dirty from the start and mapped writable. */
        flag[p] = (uint8_t)(F_RES | (w ? 0 : F_ARMED));
    }
    res->misses = misses;
    res->extra_faults = extra;
    res->wp_faults = wp;
    free(ring);
    free(flag);
}

/* Exact LRU and SFIFO share an intrusive doubly linked list over page ids;
 * index npages + k is the head sentinel of list k. */
struct dlist {
    uint32_t *prev, *next;
    uint32_t base; /* npages */
};

static void dl_init(struct dlist *d, uint32_t npages, unsigned nlists)
{
    d->base = npages;
    d->prev = xmalloc(((size_t)npages + nlists) * sizeof *d->prev);
    d->next = xmalloc(((size_t)npages + nlists) * sizeof *d->next);
    for (unsigned k = 0; k < nlists; k++)
        d->prev[npages + k] = d->next[npages + k] = npages + k;
}
static void dl_free(struct dlist *d)
{
    free(d->prev);
    free(d->next);
}
static void dl_unlink(struct dlist *d, uint32_t x)
{
    d->next[d->prev[x]] = d->next[x];
    d->prev[d->next[x]] = d->prev[x];
}
/* Insert at the front (most recent end) of list k. */
static void dl_push_front(struct dlist *d, unsigned k, uint32_t x)
{
    uint32_t h = d->base + k;
    d->next[x] = d->next[h];
    d->prev[x] = h;
    d->prev[d->next[h]] = x;
    d->next[h] = x;
}
/* The back (least recent end) of list k. */
static uint32_t dl_back(const struct dlist *d, unsigned k)
{
    return d->prev[d->base + k];
}

static void sim_lru(const struct trace *t, uint32_t budget, struct sim_result *res)
{
    uint8_t *resident = xcalloc(t->npages, 1);
    struct dlist d;
    dl_init(&d, t->npages, 1);
    uint32_t count = 0;
    uint64_t misses = 0;
    for (size_t i = 0; i < t->n; i++) {
        uint32_t p = ACC_PAGE(t->acc[i]);
        if (resident[p]) {
            dl_unlink(&d, p);
            dl_push_front(&d, 0, p);
            continue;
        }
        misses++;
        if (count == budget) {
            uint32_t v = dl_back(&d, 0);
            dl_unlink(&d, v);
            resident[v] = 0;
        } else {
            count++;
        }
        resident[p] = 1;
        dl_push_front(&d, 0, p);
    }
    res->misses = misses;
    dl_free(&d);
    free(resident);
}

/* Segmented FIFO: list 0 is the accessible FIFO, list 1 the armed segment
 * kept in LRU order (a soft fault moves a page back to list 0). */
static void sim_sfifo(const struct trace *t, uint32_t budget, double seg_frac,
                      struct sim_result *res)
{
    uint32_t nseg = (uint32_t)((double)budget * seg_frac);
    if (nseg < 1)
        nseg = 1;
    if (nseg >= budget)
        nseg = budget - 1;
    uint32_t nfifo = budget - nseg;
    uint8_t *where = xcalloc(t->npages, 1); /* 0 absent, 1 fifo, 2 armed segment */
    struct dlist d;
    dl_init(&d, t->npages, 2);
    uint32_t cnt[2] = {0, 0};
    uint64_t misses = 0, soft = 0;
    for (size_t i = 0; i < t->n; i++) {
        uint32_t p = ACC_PAGE(t->acc[i]);
        if (where[p] == 1)
            continue; /* mapped: invisible */
        if (where[p] == 2) {
            soft++; /* soft fault: no I/O, but a fault round trip */
            dl_unlink(&d, p);
            cnt[1]--;
        } else {
            misses++;
            if (cnt[0] + cnt[1] == budget) {
                uint32_t v = cnt[1] ? dl_back(&d, 1) : dl_back(&d, 0);
                dl_unlink(&d, v);
                cnt[where[v] - 1]--;
                where[v] = 0;
            }
        }
        dl_push_front(&d, 0, p);
        where[p] = 1;
        cnt[0]++;
        if (cnt[0] > nfifo) { /* demote the FIFO's oldest into the armed segment */
            uint32_t v = dl_back(&d, 0);
            dl_unlink(&d, v);
            dl_push_front(&d, 1, v);
            where[v] = 2;
            cnt[0]--;
            cnt[1]++;
        }
    }
    res->misses = misses;
    res->extra_faults = soft;
    dl_free(&d);
    free(where);
}

/* Belady's OPT: a max-heap of resident pages keyed by the index of their
 * next access (UINT32_MAX+ for never), indexed so a hit can update its key. */
static void sim_opt(const struct trace *t, uint32_t budget, struct sim_result *res)
{
    size_t n = t->n;
    uint64_t *next_use = xmalloc(n * sizeof *next_use);
    uint64_t *last = xmalloc((size_t)t->npages * sizeof *last);
    for (uint32_t p = 0; p < t->npages; p++)
        last[p] = UINT64_MAX;
    for (size_t i = n; i-- > 0;) {
        uint32_t p = ACC_PAGE(t->acc[i]);
        next_use[i] = last[p];
        last[p] = i;
    }
    free(last);

    uint32_t *heap = xmalloc((size_t)budget * sizeof *heap);  /* page ids */
    uint64_t *key = xmalloc((size_t)t->npages * sizeof *key); /* next use of each page */
    uint32_t *pos = xmalloc((size_t)t->npages * sizeof *pos); /* heap slot, or UINT32_MAX */
    for (uint32_t p = 0; p < t->npages; p++)
        pos[p] = UINT32_MAX;
    uint32_t hn = 0;
    uint64_t misses = 0;

#define HSWAP(a, b)                                                                                \
    do {                                                                                           \
        uint32_t ta = heap[a];                                                                     \
        heap[a] = heap[b];                                                                         \
        heap[b] = ta;                                                                              \
        pos[heap[a]] = (a);                                                                        \
        pos[heap[b]] = (b);                                                                        \
    } while (0)

    for (size_t i = 0; i < n; i++) {
        uint32_t p = ACC_PAGE(t->acc[i]);
        uint32_t at;
        if (pos[p] != UINT32_MAX) {
            at = pos[p];
        } else {
            misses++;
            if (hn == budget) { /* evict the root: furthest next use */
                pos[heap[0]] = UINT32_MAX;
                heap[0] = p;
                pos[p] = 0;
            } else {
                heap[hn] = p;
                pos[p] = hn;
                hn++;
            }
            at = pos[p];
        }
        key[p] = next_use[i];
        /* The key only grows on a hit, but a replaced root can be smaller
         * than its children: sift both ways. */
        while (at > 0 && key[heap[(at - 1) / 2]] < key[heap[at]]) {
            HSWAP(at, (at - 1) / 2);
            at = (at - 1) / 2;
        }
        for (;;) {
            uint32_t l = 2 * at + 1, r = l + 1, m = at;
            if (l < hn && key[heap[l]] > key[heap[m]])
                m = l;
            if (r < hn && key[heap[r]] > key[heap[m]])
                m = r;
            if (m == at)
                break;
            HSWAP(at, m);
            at = m;
        }
    }
#undef HSWAP
    res->misses = misses;
    free(heap);
    free(key);
    free(pos);
    free(next_use);
}

/* ------------------------------------------------------------------------
 * Driver
 * ---------------------------------------------------------------------- */

enum policy { P_OPT, P_LRU, P_CLOCK, P_SFIFO, P_CLOCKW, P_MOAT_REARM, P_MOAT, P_FIFO, P_N };
static const char *const policy_names[P_N] = {
    "OPT", "LRU", "CLOCK", "SFIFO", "CLOCK-W", "moat+rearm", "moat", "FIFO",
};

static void simulate(const struct trace *t, uint32_t budget, enum policy pol, double seg_frac,
                     struct sim_result *r)
{
    switch (pol) {
    case P_OPT:
        sim_opt(t, budget, r);
        break;
    case P_LRU:
        sim_lru(t, budget, r);
        break;
    case P_CLOCK:
        sim_fifo_family(t, budget, REF_ANY, r);
        break;
    case P_SFIFO:
        sim_sfifo(t, budget, seg_frac, r);
        break;
    case P_CLOCKW:
        sim_fifo_family(t, budget, REF_WRITE, r);
        break;
    case P_MOAT_REARM:
        sim_fifo_family(t, budget, REF_WP_REARM, r);
        break;
    case P_MOAT:
        sim_fifo_family(t, budget, REF_WP_ONCE, r);
        break;
    case P_FIFO:
    default:
        sim_fifo_family(t, budget, REF_NONE, r);
        break;
    }
}

static uint32_t row_budget(const struct trace *t, double fraction)
{
    uint32_t budget = (uint32_t)((double)t->npages * fraction);
    return budget < 2 ? 2 : budget;
}

static void print_header(const char *first)
{
    printf("| %s |", first);
    for (int p = 0; p < P_N; p++)
        printf(" %s |", policy_names[p]);
    printf("\n|%s", strchr(first, '|') ? "---|---|" : "---|");
    for (int p = 0; p < P_N; p++)
        printf("---:|");
    printf("\n");
}

static void usage(FILE *f)
{
    fprintf(f, "usage: lru_sim [options]\n"
               "  --pages N        working set of the generated traces in pages (16384)\n"
               "  --length N       accesses per generated trace (2097152)\n"
               "  --seed N         seed of the generated traces (1)\n"
               "  --writes PCT     percent of accesses that are writes (30)\n"
               "  --fractions LIST budgets as fractions of each trace's pages (0.125,0.25,0.5)\n"
               "  --sfifo F        SFIFO's armed segment as a fraction of the budget (0.25)\n"
               "  --trace FILE     also replay FILE: '<page> [r|w]' a line (repeatable)\n"
               "  --shift BITS     right-shift file page numbers (12 for byte addresses)\n"
               "  --no-synthetic   replay only the --trace files\n"
               "  --miss-us US     cost model: one miss (page-in + its share of eviction) (60)\n"
               "  --fault-us US    cost model: one fault without I/O (15)\n");
}

int main(int argc, char **argv)
{
    struct gen_params gp = {.npages = 16384, .length = 2u << 20, .seed = 1, .write_frac = 0.30};
    double fractions[16] = {0.125, 0.25, 0.5};
    size_t nfrac = 3;
    double seg_frac = 0.25;
    const char *files[32];
    size_t nfiles = 0;
    unsigned shift = 0;
    bool synthetic = true;
    double miss_us = 60, fault_us = 15;

    static const struct option opts[] = {
        {"pages", required_argument, 0, 'p'},
        {"length", required_argument, 0, 'l'},
        {"seed", required_argument, 0, 's'},
        {"writes", required_argument, 0, 'w'},
        {"fractions", required_argument, 0, 'f'},
        {"sfifo", required_argument, 0, 'g'},
        {"trace", required_argument, 0, 't'},
        {"shift", required_argument, 0, 'S'},
        {"no-synthetic", no_argument, 0, 'N'},
        {"help", no_argument, 0, 'h'},
        {"miss-us", required_argument, 0, 'M'},
        {"fault-us", required_argument, 0, 'F'},
        {0, 0, 0, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'p':
            gp.npages = (uint32_t)strtoul(optarg, NULL, 0);
            break;
        case 'l':
            gp.length = (size_t)strtoull(optarg, NULL, 0);
            break;
        case 's':
            gp.seed = strtoull(optarg, NULL, 0);
            break;
        case 'w':
            gp.write_frac = strtod(optarg, NULL) / 100.0;
            break;
        case 'g':
            seg_frac = strtod(optarg, NULL);
            break;
        case 'S':
            shift = (unsigned)strtoul(optarg, NULL, 0);
            break;
        case 'N':
            synthetic = false;
            break;
        case 'M':
            miss_us = strtod(optarg, NULL);
            break;
        case 'F':
            fault_us = strtod(optarg, NULL);
            break;
        case 't':
            if (nfiles == sizeof files / sizeof files[0]) {
                fprintf(stderr, "lru_sim: too many --trace files\n");
                return 2;
            }
            files[nfiles++] = optarg;
            break;
        case 'f': {
            nfrac = 0;
            for (char *s = strtok(optarg, ","); s && nfrac < 16; s = strtok(NULL, ","))
                fractions[nfrac++] = strtod(s, NULL);
            break;
        }
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (gp.npages < 16 || gp.npages >= (1u << 31) || gp.length < 1 || gp.length >= (1ULL << 32) ||
        nfrac == 0 || seg_frac <= 0 || seg_frac >= 1 || shift > 63) {
        fprintf(stderr, "lru_sim: bad arguments (need --pages >= 16, 0 < --sfifo < 1, "
                        "0 < --length < 2^32, fractions)\n");
        return 2;
    }
    for (size_t k = 0; k < nfrac; k++) {
        if (!(fractions[k] > 0 && fractions[k] < 1)) {
            fprintf(stderr, "lru_sim: a budget fraction must be in (0, 1), got %g\n", fractions[k]);
            return 2;
        }
    }

    size_t ntraces = (synthetic ? T_NKINDS : 0) + nfiles;
    if (ntraces == 0) {
        fprintf(stderr, "lru_sim: nothing to replay (--no-synthetic without --trace)\n");
        return 2;
    }
    struct trace *traces = xcalloc(ntraces, sizeof *traces);
    size_t nt = 0;
    if (synthetic)
        for (int k = 0; k < T_NKINDS; k++)
            trace_generate(&traces[nt++], (enum trace_kind)k, &gp);
    for (size_t k = 0; k < nfiles; k++)
        if (trace_load(&traces[nt++], files[k], shift) != 0)
            return 1;

    bench_print_machine(stdout);
    if (synthetic)
        printf("# lru_sim: synthetic traces of %u pages x %zu accesses, %.0f%% writes, seed %llu",
               gp.npages, gp.length, gp.write_frac * 100, (unsigned long long)gp.seed);
    else
        printf("# lru_sim:");
    if (nfiles)
        printf("%s %zu trace file(s)", synthetic ? "; plus" : "", nfiles);
    printf("; SFIFO segment %.0f%% of the budget\n", seg_frac * 100);

    size_t nrows = ntraces * nfrac;
    struct sim_result *all = xcalloc(nrows * P_N, sizeof *all);
    for (size_t ti = 0; ti < ntraces; ti++)
        for (size_t k = 0; k < nfrac; k++)
            for (int p = 0; p < P_N; p++)
                simulate(&traces[ti], row_budget(&traces[ti], fractions[k]), (enum policy)p,
                         seg_frac, &all[(ti * nfrac + k) * P_N + (size_t)p]);

    printf("\n## Miss ratio, %% of accesses (cold misses included); budget as a fraction of the "
           "trace's distinct pages (pages)\n\n");
    print_header("trace | budget");
    for (size_t ti = 0; ti < ntraces; ti++) {
        for (size_t k = 0; k < nfrac; k++) {
            const struct sim_result *r = &all[(ti * nfrac + k) * P_N];
            printf("| %s | %g (%u) |", traces[ti].name, fractions[k],
                   row_budget(&traces[ti], fractions[k]));
            for (int p = 0; p < P_N; p++)
                printf(" %.2f |", 100.0 * (double)r[p].misses / (double)traces[ti].n);
            printf("\n");
        }
    }

    printf("\n## Faults per 100 accesses besides misses: moat's dirty-tracking write faults "
           "(taken by every policy that keeps clean pages), and the extra faults some policies "
           "take only to see references\n\n");
    printf("| trace | budget | dirty-tracking WP (all) | extra: moat+rearm re-armed WP | "
           "extra: SFIFO soft faults |\n|---|---|---:|---:|---:|\n");
    for (size_t ti = 0; ti < ntraces; ti++) {
        for (size_t k = 0; k < nfrac; k++) {
            const struct sim_result *r = &all[(ti * nfrac + k) * P_N];
            double n = (double)traces[ti].n / 100.0;
            printf("| %s | %g | %.2f | %.2f | %.2f |\n", traces[ti].name, fractions[k],
                   (double)r[P_MOAT].wp_faults / n, (double)r[P_MOAT_REARM].extra_faults / n,
                   (double)r[P_SFIFO].extra_faults / n);
        }
    }

    printf("\n## Estimated stall per access, us: misses x %.0f us + extra faults x %.0f us "
           "(OPT, LRU, CLOCK: bounds, not implementable; CLOCK-W read with PAGEMAP_SCAN: no "
           "extra faults)\n\n",
           miss_us, fault_us);
    print_header("trace | budget");
    for (size_t ti = 0; ti < ntraces; ti++) {
        for (size_t k = 0; k < nfrac; k++) {
            const struct sim_result *r = &all[(ti * nfrac + k) * P_N];
            double n = (double)traces[ti].n;
            printf("| %s | %g |", traces[ti].name, fractions[k]);
            for (int p = 0; p < P_N; p++)
                printf(" %.2f |",
                       ((double)r[p].misses * miss_us + (double)r[p].extra_faults * fault_us) / n);
            printf("\n");
        }
    }

    /* One line per policy: how far it is from LRU, averaged over the rows
     * (rows where LRU misses only cold pages would dominate a plain ratio of
     * sums, so this is the mean of per-row ratios). */
    printf("\n## Mean over all rows of misses relative to LRU (1.000 = LRU), and of the "
           "estimated stall relative to moat's\n\n");
    print_header("mean over rows");
    printf("| misses / LRU |");
    for (int p = 0; p < P_N; p++) {
        double sum = 0;
        for (size_t row = 0; row < nrows; row++)
            sum +=
                (double)all[row * P_N + (size_t)p].misses / (double)all[row * P_N + P_LRU].misses;
        printf(" %.3f |", sum / (double)nrows);
    }
    printf("\n| stall / moat |");
    for (int p = 0; p < P_N; p++) {
        double sum = 0;
        for (size_t row = 0; row < nrows; row++) {
            const struct sim_result *r = &all[row * P_N];
            sum += ((double)r[p].misses * miss_us + (double)r[p].extra_faults * fault_us) /
                   ((double)r[P_MOAT].misses * miss_us);
        }
        printf(" %.3f |", sum / (double)nrows);
    }
    printf("\n\nRESULT misses_vs_lru");
    for (int p = 0; p < P_N; p++) {
        double sum = 0;
        for (size_t row = 0; row < nrows; row++)
            sum +=
                (double)all[row * P_N + (size_t)p].misses / (double)all[row * P_N + P_LRU].misses;
        printf(" %s=%.3f", policy_names[p], sum / (double)nrows);
    }
    printf("\n");

    for (size_t ti = 0; ti < ntraces; ti++)
        free(traces[ti].acc);
    free(traces);
    free(all);
    return 0;
}
