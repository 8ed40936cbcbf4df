/*
 * report.c - what the allocator says: fatal errors, warnings and the
 * statistics table.
 *
 * Nothing here may allocate: a fatal error is often found inside malloc or
 * free (of the drop-in, where malloc is us), possibly with a lock held.  So
 * lines are built in a stack buffer by hand and written with one write(2),
 * in the format of common/log.h; the time stamp is UTC because the local
 * time zone is loaded with malloc on first use.
 */
#include "alloc/alloc_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct line {
    char buf[512];
    size_t len;
};

static void put_str(struct line *l, const char *s)
{
    while (s && *s && l->len < sizeof l->buf - 2)
        l->buf[l->len++] = *s++;
}

static void put_dec(struct line *l, uint64_t v, int width)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n < width)
        tmp[n++] = '0';
    while (n > 0 && l->len < sizeof l->buf - 2)
        l->buf[l->len++] = tmp[--n];
}

static void put_hex(struct line *l, uintptr_t v)
{
    put_str(l, "0x");
    char tmp[20];
    int n = 0;
    do {
        tmp[n++] = "0123456789abcdef"[v & 15];
        v >>= 4;
    } while (v);
    while (n > 0 && l->len < sizeof l->buf - 2)
        l->buf[l->len++] = tmp[--n];
}

/* "[2026-01-02 03:04:05.678]:[LEVEL]-[alloc] - " */
static void put_prefix(struct line *l, const char *level)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t days = ts.tv_sec / 86400, secs = ts.tv_sec % 86400;
    /* civil date from days since 1970-01-01 (Howard Hinnant's algorithm) */
    int64_t z = days + 719468, era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t y = yoe + era * 400, doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153, d = doy - (153 * mp + 2) / 5 + 1;
    int64_t m = mp < 10 ? mp + 3 : mp - 9;
    if (m <= 2)
        y++;
    put_str(l, "[");
    put_dec(l, (uint64_t)y, 4);
    put_str(l, "-");
    put_dec(l, (uint64_t)m, 2);
    put_str(l, "-");
    put_dec(l, (uint64_t)d, 2);
    put_str(l, " ");
    put_dec(l, (uint64_t)(secs / 3600), 2);
    put_str(l, ":");
    put_dec(l, (uint64_t)(secs / 60 % 60), 2);
    put_str(l, ":");
    put_dec(l, (uint64_t)(secs % 60), 2);
    put_str(l, ".");
    put_dec(l, (uint64_t)(ts.tv_nsec / 1000000), 3);
    put_str(l, "]:[");
    put_str(l, level);
    put_str(l, "]-[alloc] - ");
}

static void put_end(struct line *l)
{
    l->buf[l->len++] = '\n';
    ssize_t w = write(STDERR_FILENO, l->buf, l->len);
    (void)w;
}

_Noreturn void m_alloc_die(const char *what, const void *p, const char *detail)
{
    struct line l = {.len = 0};
    put_prefix(&l, "FATAL");
    put_str(&l, what);
    if (p) {
        put_str(&l, " at ");
        put_hex(&l, (uintptr_t)p);
    }
    if (detail) {
        put_str(&l, ": ");
        put_str(&l, detail);
    }
    put_end(&l);
    abort();
}

void m_alloc_die_double_free(const void *p)
{
    m_alloc_die("free(): double free", p, "the block is already free");
}

_Noreturn void m_alloc_die_corrupt(const void *blk)
{
    m_alloc_die("heap corruption: bad free-list link in the free block", blk,
                "it was overwritten (a buffer overflow or a use after free)");
}

void m_alloc_warn(const char *msg, const char *detail, int err)
{
    int saved = errno;
    struct line l = {.len = 0};
    put_prefix(&l, "WARN");
    put_str(&l, msg);
    if (detail) {
        put_str(&l, " ");
        put_str(&l, detail);
    }
    if (err) {
        put_str(&l, " (errno ");
        put_dec(&l, (uint64_t)err, 1);
        put_str(&l, ")");
    }
    put_end(&l);
    errno = saved;
}

/* ------------------------------------------------------------------------
 * The statistics table (snprintf of integers and strings does not allocate)
 * ---------------------------------------------------------------------- */

static void out(int fd, const char *s, int n)
{
    if (n <= 0)
        return;
    ssize_t w = write(fd, s, (size_t)n);
    (void)w;
}

/* per-mille, printed as a percentage with one decimal */
static unsigned permille(double f)
{
    if (f < 0)
        return 0;
    return (unsigned)(f * 1000.0 + 0.5);
}

void m_alloc_stats_write(struct moat_heap *h, int fd)
{
    struct moat_alloc_stats st;
    moat_heap_stats_get(h, &st);
    char line[256];
    int n;
    n = snprintf(line, sizeof line,
                 "moat alloc: heap %llu, cap %llu KiB (0 = none), %llu threads\n",
                 (unsigned long long)h->id, (unsigned long long)(st.limit_bytes >> 10),
                 (unsigned long long)st.threads);
    out(fd, line, n);
    n = snprintf(line, sizeof line, "%5s %6s %6s %9s %10s %10s %8s %6s %10s %10s %6s %11s\n",
                 "class", "block", "slab", "live", "live_KiB", "req_KiB", "cached", "slabs",
                 "resv_KiB", "peak_KiB", "frag%", "allocs");
    out(fd, line, n);
    for (unsigned c = 0; c < M_ALLOC_NCLASSES; c++) {
        const struct moat_alloc_class_stats *cs = &st.classes[c];
        if (!cs->allocs && !cs->slabs && !cs->peak_reserved_bytes)
            continue;
        unsigned pm = permille(cs->fragmentation);
        n = snprintf(
            line, sizeof line,
            "%5u %6llu %6llu %9llu %10llu %10llu %8llu %6llu %10llu %10llu %4u.%u %11llu\n", c,
            (unsigned long long)cs->block_size, (unsigned long long)cs->slab_size,
            (unsigned long long)cs->live_blocks, (unsigned long long)(cs->live_bytes >> 10),
            (unsigned long long)(cs->requested_bytes >> 10), (unsigned long long)cs->cached_blocks,
            (unsigned long long)cs->slabs, (unsigned long long)(cs->reserved_bytes >> 10),
            (unsigned long long)(cs->peak_reserved_bytes >> 10), pm / 10, pm % 10,
            (unsigned long long)cs->allocs);
        out(fd, line, n);
    }
    n = snprintf(
        line, sizeof line,
        "large: %llu objects, requested %llu KiB, reserved %llu KiB, %llu allocations\n",
        (unsigned long long)st.large_objects, (unsigned long long)(st.large_requested_bytes >> 10),
        (unsigned long long)(st.large_reserved_bytes >> 10), (unsigned long long)st.large_allocs);
    out(fd, line, n);
    unsigned pm = permille(st.fragmentation);
    n = snprintf(line, sizeof line,
                 "total: requested %llu KiB, live %llu KiB, cached %llu KiB, reserved %llu KiB, "
                 "fragmentation %u.%u%%\n",
                 (unsigned long long)(st.requested_bytes >> 10),
                 (unsigned long long)(st.live_bytes >> 10),
                 (unsigned long long)(st.cached_bytes >> 10),
                 (unsigned long long)(st.reserved_bytes >> 10), pm / 10, pm % 10);
    out(fd, line, n);
    n = snprintf(line, sizeof line,
                 "pages: committed %llu KiB (free %llu KiB), peak reserved %llu KiB, peak "
                 "committed %llu KiB, metadata %llu KiB\n",
                 (unsigned long long)(st.committed_bytes >> 10),
                 (unsigned long long)(st.free_committed_bytes >> 10),
                 (unsigned long long)(st.peak_reserved_bytes >> 10),
                 (unsigned long long)(st.peak_committed_bytes >> 10),
                 (unsigned long long)(st.metadata_bytes >> 10));
    out(fd, line, n);
    n = snprintf(line, sizeof line,
                 "returned: %llu KiB decommitted in %llu calls; %llu allocations refused\n",
                 (unsigned long long)(st.decommitted_bytes >> 10),
                 (unsigned long long)st.decommit_calls, (unsigned long long)st.alloc_failures);
    out(fd, line, n);
}
