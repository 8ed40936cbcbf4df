/*
 * test_store_file.c - the file store on real files: record round trips in
 * O_DIRECT and buffered mode, slot reuse and hole punching, four threads with
 * a queue each, queue-depth limits, URI errors, the size cap, a 1 MiB
 * tmpfs filled until ENOSPC, and O_DIRECT on a device with 4 KiB sectors.
 *
 * Files go to $MOAT_TEST_TMP (or /tmp); O_DIRECT and buffered mode are both
 * run explicitly, whatever file system that is.  The tmpfs, ramfs and
 * loop-device tests mount file systems and need root; without it they skip, and the program
 * then exits 77 after the other tests pass, saying which tests did not run.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "store/store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include "store_records.h"

static bool skipped_any;

/* A record's bytes in the file, and the file's stride: its ciphertext (the
 * trailer stays in memory). */
#define STRIDE M_STORE_DATA

/* ---------------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------------- */

static const char *test_dir(void)
{
    const char *d = getenv("MOAT_TEST_TMP");
    return d && *d ? d : "/tmp";
}

static bool rec_is_zero(const void *buf)
{
    const unsigned char *p = buf;
    for (size_t i = 0; i < M_STORE_RECORD; i++)
        if (p[i])
            return false;
    return true;
}

static struct m_store *store_open_fmt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static struct m_store *store_open_fmt(const char *fmt, ...)
{
    char uri[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(uri, sizeof uri, fmt, ap);
    va_end(ap);
    struct m_store *s = NULL;
    int rc = m_store_open(uri, &s);
    if (rc)
        fprintf(stderr, "m_store_open(%s): %s\n", uri, strerror(rc));
    assert_int_equal(rc, 0);
    return s;
}

/* One synchronous I/O. */
static int rec_io(struct m_store_queue *q, int op, uint64_t slot, void *buf)
{
    struct m_store_io io = {.op = op, .slot = slot, .buf = buf};
    struct m_store_io *p = &io;
    assert_int_equal(m_store_rw(q, &p, 1), 0);
    return io.result;
}

/* The open flags of our descriptor for path, from /proc/self/fdinfo. */
static int fd_flags_of(const char *path)
{
    DIR *d = opendir("/proc/self/fd");
    assert_non_null(d);
    int flags = -1;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char link[300], target[4096];
        snprintf(link, sizeof link, "/proc/self/fd/%s", e->d_name);
        ssize_t n = readlink(link, target, sizeof target - 1);
        if (n < 0)
            continue;
        target[n] = '\0';
        if (strcmp(target, path) != 0)
            continue;
        char info[300], line[256];
        snprintf(info, sizeof info, "/proc/self/fdinfo/%s", e->d_name);
        FILE *f = fopen(info, "r");
        if (!f)
            continue;
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "flags: %o", (unsigned *)&flags) == 1)
                break;
        fclose(f);
        break;
    }
    closedir(d);
    return flags;
}

static long fs_type_of(const char *path)
{
    struct statfs sfs;
    assert_int_equal(statfs(path, &sfs), 0);
    return (long)sfs.f_type;
}

/* ---------------------------------------------------------------------------
 * Round trips
 * ------------------------------------------------------------------------- */

static void round_trip_one_batch(int direct)
{
    struct m_store *s = store_open_fmt("file:%s?direct=%d", test_dir(), direct);
    int flags = fd_flags_of(m_store_describe(s));
    assert_true(flags >= 0);
    if (!direct)
        assert_false(flags & O_DIRECT);
    else if (fs_type_of(test_dir()) == 0xEF53) /* ext2/3/4 do O_DIRECT */
        assert_true(flags & O_DIRECT);

    enum { N = 300 };
    struct m_store_queue *q;
    assert_int_equal(m_store_queue_new(s, 64, &q), 0); /* N > depth: m_store_rw chunks */
    static struct m_store_io ios[N];
    static struct m_store_io *p[N];
    void *bufs[N];
    for (uint64_t i = 0; i < N; i++) {
        uint64_t slot;
        assert_int_equal(m_store_slot_alloc(s, &slot), 0);
        assert_int_equal(slot, i);
        bufs[i] = rec_new();
        rec_fill(bufs[i], slot, 1);
        ios[i] = (struct m_store_io){.op = M_STORE_WRITE, .slot = slot, .buf = bufs[i]};
        ios[i].result = -1;
        p[i] = &ios[i];
    }
    assert_int_equal(m_store_rw(q, p, N), 0);
    for (size_t i = 0; i < N; i++) {
        assert_int_equal(ios[i].result, 0);
        memset(bufs[i], 0xa5, M_STORE_RECORD);
        ios[i].op = M_STORE_READ;
        ios[i].result = -1;
    }
    assert_int_equal(m_store_rw(q, p, N), 0);
    for (size_t i = 0; i < N; i++) {
        assert_int_equal(ios[i].result, 0);
        assert_true(rec_check(bufs[i], i, 1));
        free(bufs[i]);
    }
    struct m_store_stats st;
    m_store_stats(s, &st);
    assert_int_equal(st.slots_used, N);
    assert_int_equal(st.slots_high, N);
    assert_int_equal(st.writes, N);
    assert_int_equal(st.reads, N);
    assert_int_equal(st.bytes_written, (uint64_t)N * M_STORE_RECORD);
    assert_int_equal(st.bytes_read, (uint64_t)N * M_STORE_RECORD);
    assert_int_equal(st.errors, 0);
    /* the trailers are in memory, the file holds the ciphertexts alone */
    assert_int_equal(st.meta_bytes, (uint64_t)N * M_STORE_TRAILER);
    struct stat sb;
    assert_int_equal(stat(m_store_describe(s), &sb), 0);
    if (direct) /* zero-filled ahead, up to 2 MiB */
        assert_true(sb.st_size >= (off_t)N * STRIDE && sb.st_size <= (off_t)N * STRIDE + (2 << 20));
    else
        assert_int_equal(sb.st_size, (off_t)N * STRIDE);
    assert_int_equal(sb.st_mode & 0777, 0600);
    m_store_queue_free(q);
    m_store_close(s);
}

static void test_one_batch_direct(void **state)
{
    (void)state;
    round_trip_one_batch(1);
}

static void test_one_batch_buffered(void **state)
{
    (void)state;
    round_trip_one_batch(0);
}

/* Many batches of random sizes through submit/reap, rewriting slots with new
 * generations, with reads of earlier generations in the same batches. */
static void many_batches(int direct)
{
    struct m_store *s = store_open_fmt("file:%s?direct=%d", test_dir(), direct);
    enum { NSLOTS = 200, DEPTH = 32, ROUNDS = 150 };
    struct m_store_queue *q;
    assert_int_equal(m_store_queue_new(s, DEPTH, &q), 0);
    uint64_t gen[NSLOTS] = {0}; /* 0 = never written */
    for (uint64_t i = 0; i < NSLOTS; i++) {
        uint64_t slot;
        assert_int_equal(m_store_slot_alloc(s, &slot), 0);
    }
    struct m_store_io ios[DEPTH];
    struct m_store_io *p[DEPTH];
    uint64_t want_gen[DEPTH];
    void *bufs[DEPTH];
    for (int i = 0; i < DEPTH; i++)
        bufs[i] = rec_new();
    unsigned seed = 12345;
    uint64_t verified = 0;
    for (int round = 0; round < ROUNDS; round++) {
        size_t n = 1 + (size_t)rand_r(&seed) % DEPTH;
        bool busy[NSLOTS] = {false}; /* one I/O per slot per batch */
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            uint64_t slot = (uint64_t)rand_r(&seed) % NSLOTS;
            if (busy[slot])
                continue;
            busy[slot] = true;
            bool write = gen[slot] == 0 || rand_r(&seed) % 2;
            ios[k] = (struct m_store_io){.slot = slot, .buf = bufs[k], .user = &want_gen[k]};
            if (write) {
                gen[slot]++;
                rec_fill(bufs[k], slot, gen[slot]);
                ios[k].op = M_STORE_WRITE;
            } else {
                memset(bufs[k], 0, M_STORE_RECORD);
                ios[k].op = M_STORE_READ;
            }
            want_gen[k] = gen[slot];
            p[k] = &ios[k];
            k++;
        }
        assert_int_equal(m_store_submit(q, p, k), 0);
        size_t got = 0;
        while (got < k) {
            struct m_store_io *done[DEPTH];
            size_t nd = 0;
            size_t max = 1 + (size_t)rand_r(&seed) % DEPTH;
            assert_int_equal(m_store_reap(q, done, max, 1, &nd), 0);
            assert_true(nd >= 1 && nd <= max);
            for (size_t i = 0; i < nd; i++) {
                assert_int_equal(done[i]->result, 0);
                if (done[i]->op == M_STORE_READ) {
                    assert_true(rec_check(done[i]->buf, done[i]->slot, *(uint64_t *)done[i]->user));
                    verified++;
                }
            }
            got += nd;
        }
        /* Nothing more may come. */
        size_t nd = 7;
        struct m_store_io *none[1];
        assert_int_equal(m_store_reap(q, none, 1, 1, &nd), 0);
        assert_int_equal(nd, 0);
    }
    assert_true(verified > 100);
    /* A final pass reads every written slot back. */
    for (uint64_t slot = 0; slot < NSLOTS; slot++) {
        if (!gen[slot])
            continue;
        assert_int_equal(rec_io(q, M_STORE_READ, slot, bufs[0]), 0);
        assert_true(rec_check(bufs[0], slot, gen[slot]));
    }
    for (int i = 0; i < DEPTH; i++)
        free(bufs[i]);
    m_store_queue_free(q);
    m_store_close(s);
}

static void test_many_batches_direct(void **state)
{
    (void)state;
    many_batches(1);
}

static void test_many_batches_buffered(void **state)
{
    (void)state;
    many_batches(0);
}

/* A hole inside the file reads as zeros (the sealing layer rejects it); a
 * read past the end of the file is EIO. */
static void test_read_hole_and_eof(void **state)
{
    (void)state;
    for (int direct = 0; direct <= 1; direct++) {
        /* No zero-filling ahead: the file ends at the last record. */
        struct m_store *s = store_open_fmt("file:%s?direct=%d&prefill=0", test_dir(), direct);
        struct m_store_queue *q;
        assert_int_equal(m_store_queue_new(s, 4, &q), 0);
        uint64_t slot = 0;
        for (int i = 0; i < 6; i++)
            assert_int_equal(m_store_slot_alloc(s, &slot), 0);
        void *buf = rec_new();
        rec_fill(buf, 5, 1);
        assert_int_equal(rec_io(q, M_STORE_WRITE, 5, buf), 0);
        memset(buf, 0xff, M_STORE_RECORD);
        assert_int_equal(rec_io(q, M_STORE_READ, 2, buf), 0);
        assert_true(rec_is_zero(buf));
        assert_int_equal(rec_io(q, M_STORE_READ, 6, buf), EIO);
        assert_int_equal(rec_io(q, M_STORE_READ, 1000, buf), EIO);
        struct m_store_stats st;
        m_store_stats(s, &st);
        assert_int_equal(st.errors, 2);
        /* The queue still works after errors. */
        assert_int_equal(rec_io(q, M_STORE_READ, 5, buf), 0);
        assert_true(rec_check(buf, 5, 1));
        /* A record cut short by the end of the file is EIO, not a record
         * padded with zeros: the first read returns part, the rest hits EOF. */
        assert_int_equal(truncate(m_store_describe(s), 5 * STRIDE + 1024), 0);
        assert_int_equal(rec_io(q, M_STORE_READ, 5, buf), EIO);
        m_store_stats(s, &st);
        assert_int_equal(st.errors, 3);
        free(buf);
        m_store_queue_free(q);
        m_store_close(s);
    }
}

/* ---------------------------------------------------------------------------
 * Slots and holes
 * ------------------------------------------------------------------------- */

static void test_slot_reuse_lowest_first(void **state)
{
    (void)state;
    struct m_store *s = store_open_fmt("file:%s", test_dir());
    uint64_t slot;
    for (uint64_t i = 0; i < 10; i++) {
        assert_int_equal(m_store_slot_alloc(s, &slot), 0);
        assert_int_equal(slot, i);
    }
    m_store_slot_free(s, 7);
    m_store_slot_free(s, 3);
    m_store_slot_free(s, 5);
    struct m_store_stats st;
    m_store_stats(s, &st);
    assert_int_equal(st.slots_used, 7);
    assert_int_equal(st.slots_high, 10);
    const uint64_t want[] = {3, 5, 7, 10, 11};
    for (size_t i = 0; i < 5; i++) {
        assert_int_equal(m_store_slot_alloc(s, &slot), 0);
        assert_int_equal(slot, want[i]);
    }
    /* Double free and a slot never handed out are refused (and logged). */
    m_store_slot_free(s, 4);
    m_store_slot_free(s, 4);
    m_store_slot_free(s, 5000);
    m_store_stats(s, &st);
    assert_int_equal(st.slots_used, 11);
    assert_int_equal(m_store_slot_alloc(s, &slot), 0);
    assert_int_equal(slot, 4);

    /* Beyond one bitmap word and one summary word: free a scattered set
     * across 10000 slots and get them back in ascending order. */
    for (uint64_t i = 12; i < 10000; i++)
        assert_int_equal(m_store_slot_alloc(s, &slot), 0);
    const uint64_t scattered[] = {9999, 64, 4095, 4096, 130, 8191, 63, 5000};
    for (size_t i = 0; i < 8; i++)
        m_store_slot_free(s, scattered[i]);
    const uint64_t sorted[] = {63, 64, 130, 4095, 4096, 5000, 8191, 9999, 10000};
    for (size_t i = 0; i < 9; i++) {
        assert_int_equal(m_store_slot_alloc(s, &slot), 0);
        assert_int_equal(slot, sorted[i]);
    }
    /* After 5 is taken, the next hole lies past two full summary words. */
    m_store_slot_free(s, 9990);
    m_store_slot_free(s, 5);
    const uint64_t far[] = {5, 9990, 10001};
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(m_store_slot_alloc(s, &slot), 0);
        assert_int_equal(slot, far[i]);
    }
    m_store_close(s);
}

/* Write n records of generation 1 to slots 0..n-1. */
static void write_first(struct m_store *s, struct m_store_queue *q, size_t n)
{
    struct m_store_io *ios = calloc(n, sizeof *ios);
    struct m_store_io **p = calloc(n, sizeof *p);
    void **bufs = calloc(n, sizeof *bufs);
    assert_non_null(ios);
    assert_non_null(p);
    assert_non_null(bufs);
    for (uint64_t i = 0; i < n; i++) {
        uint64_t slot;
        assert_int_equal(m_store_slot_alloc(s, &slot), 0);
        assert_int_equal(slot, i);
        bufs[i] = rec_new();
        rec_fill(bufs[i], slot, 1);
        ios[i] = (struct m_store_io){.op = M_STORE_WRITE, .slot = slot, .buf = bufs[i]};
        p[i] = &ios[i];
    }
    assert_int_equal(m_store_rw(q, p, n), 0);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(ios[i].result, 0);
        free(bufs[i]);
    }
    free(bufs);
    free(p);
    free(ios);
}

static blkcnt_t blocks_of(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return st.st_blocks;
}

/* slack=0: every free punches at once. */
static void test_hole_punch(void **state)
{
    (void)state;
    struct m_store *s = store_open_fmt("file:%s?direct=1&slack=0", test_dir());
    const char *path = m_store_describe(s);
    struct m_store_queue *q;
    assert_int_equal(m_store_queue_new(s, 64, &q), 0);
    enum { N = 64 };
    static struct m_store_io ios[N];
    static struct m_store_io *p[N];
    void *buf = rec_new();
    void *bufs[N];
    for (uint64_t i = 0; i < N; i++) {
        uint64_t slot;
        assert_int_equal(m_store_slot_alloc(s, &slot), 0);
        bufs[i] = rec_new();
        rec_fill(bufs[i], slot, 1);
        ios[i] = (struct m_store_io){.op = M_STORE_WRITE, .slot = slot, .buf = bufs[i]};
        p[i] = &ios[i];
    }
    assert_int_equal(m_store_rw(q, p, N), 0);
    for (size_t i = 0; i < N; i++) {
        assert_int_equal(ios[i].result, 0);
        free(bufs[i]);
    }
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(fsync(fd), 0);
    struct stat before, after;
    assert_int_equal(fstat(fd, &before), 0);
    assert_true(before.st_blocks >= (blkcnt_t)N * STRIDE / 512);

    /* 32 adjacent slots hold 131072 bytes, 32 whole 4 KiB blocks (a record
     * is one block): all must go. */
    for (uint64_t slot = 8; slot < 40; slot++)
        m_store_slot_free(s, slot);
    assert_int_equal(fstat(fd, &after), 0);
    fprintf(stderr, "# st_blocks %lld -> %lld after freeing 32 slots\n",
            (long long)before.st_blocks, (long long)after.st_blocks);
    assert_true(after.st_blocks <= before.st_blocks - 32 * STRIDE / 512);
    assert_int_equal(after.st_size, before.st_size);

    /* Neighbours of freed slots are intact: blocks they share were kept. */
    m_store_slot_free(s, 50);
    m_store_slot_free(s, 52);
    const uint64_t live[] = {7, 40, 49, 51, 53};
    for (size_t i = 0; i < 5; i++) {
        assert_int_equal(rec_io(q, M_STORE_READ, live[i], buf), 0);
        assert_true(rec_check(buf, live[i], 1));
    }
    /* 51 is now the only live slot among 50..52; free it: the hole covers all
     * three and 49 and 53 still read back. */
    assert_int_equal(fstat(fd, &after), 0);
    blkcnt_t b51 = after.st_blocks;
    m_store_slot_free(s, 51);
    assert_int_equal(fstat(fd, &after), 0);
    assert_true(after.st_blocks < b51);
    const uint64_t still[] = {7, 40, 49, 53};
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(rec_io(q, M_STORE_READ, still[i], buf), 0);
        assert_true(rec_check(buf, still[i], 1));
    }
    /* A freed record reads back as zeros: its data is gone from the disk. */
    assert_int_equal(rec_io(q, M_STORE_READ, 20, buf), 0);
    assert_true(rec_is_zero(buf));
    /* Freed slots are reused lowest first and rewrite cleanly. */
    uint64_t slot;
    assert_int_equal(m_store_slot_alloc(s, &slot), 0);
    assert_int_equal(slot, 8);
    rec_fill(buf, 8, 2);
    assert_int_equal(rec_io(q, M_STORE_WRITE, 8, buf), 0);
    assert_int_equal(rec_io(q, M_STORE_READ, 8, buf), 0);
    assert_true(rec_check(buf, 8, 2));
    assert_int_equal(rec_io(q, M_STORE_READ, 7, buf), 0);
    assert_true(rec_check(buf, 7, 1));
    close(fd);
    free(buf);
    m_store_queue_free(q);
    m_store_close(s);
}

/* With slack, freed records keep their blocks (a reused slot is overwritten
 * in place) until more than `slack` bytes are free; then the highest are
 * punched in batches down to half the slack. */
static void test_hole_punch_deferred(void **state)
{
    (void)state;
    void *buf = rec_new();
    struct m_store_queue *q;

    /* Default slack (64 MiB): nothing is punched for 32 freed records. */
    struct m_store *s = store_open_fmt("file:%s?direct=1", test_dir());
    assert_int_equal(m_store_queue_new(s, 64, &q), 0);
    write_first(s, q, 64);
    blkcnt_t before = blocks_of(m_store_describe(s));
    for (uint64_t slot = 8; slot < 40; slot++)
        m_store_slot_free(s, slot);
    assert_int_equal(blocks_of(m_store_describe(s)), before);
    uint64_t slot;
    assert_int_equal(m_store_slot_alloc(s, &slot), 0);
    assert_int_equal(slot, 8);
    rec_fill(buf, 8, 2);
    assert_int_equal(rec_io(q, M_STORE_WRITE, 8, buf), 0);
    assert_int_equal(rec_io(q, M_STORE_READ, 8, buf), 0);
    assert_true(rec_check(buf, 8, 2));
    m_store_queue_free(q);
    m_store_close(s);

    /* slack=64K is 16 records: freeing 32 adjacent ones punches all but at
     * most 16, highest first, and the records around them survive. */
    s = store_open_fmt("file:%s?direct=1&slack=64K", test_dir());
    assert_int_equal(m_store_queue_new(s, 64, &q), 0);
    write_first(s, q, 64);
    before = blocks_of(m_store_describe(s));
    for (uint64_t n = 8; n < 40; n++)
        m_store_slot_free(s, n);
    blkcnt_t after = blocks_of(m_store_describe(s));
    fprintf(stderr, "# slack=64K: st_blocks %lld -> %lld after freeing 32 slots\n",
            (long long)before, (long long)after);
    assert_true(after <= before - 16 * STRIDE / 512);
    assert_true(after >= before - 32 * STRIDE / 512);
    for (uint64_t n = 0; n < 64; n++) {
        if (n >= 8 && n < 40)
            continue;
        assert_int_equal(rec_io(q, M_STORE_READ, n, buf), 0);
        assert_true(rec_check(buf, n, 1));
    }
    /* Lowest first: the unpunched low slots come back, then the punched. */
    for (uint64_t n = 8; n < 40; n++) {
        assert_int_equal(m_store_slot_alloc(s, &slot), 0);
        assert_int_equal(slot, n);
        rec_fill(buf, n, 3);
        assert_int_equal(rec_io(q, M_STORE_WRITE, n, buf), 0);
    }
    for (uint64_t n = 0; n < 64; n++) {
        assert_int_equal(rec_io(q, M_STORE_READ, n, buf), 0);
        assert_true(rec_check(buf, n, n >= 8 && n < 40 ? 3 : 1));
    }
    m_store_queue_free(q);
    m_store_close(s);
    free(buf);
}

/* Zero-filling ahead of the high mark happens while earlier records are
 * still being written: it must never touch one.  Slots are allocated one at
 * a time with up to 16 writes in flight, across many prefill pieces. */
static void prefill_while_writing(const char *opts)
{
    struct m_store *s = store_open_fmt("file:%s?direct=1&%s", test_dir(), opts);
    enum { N = 1200, DEPTH = 16 };
    struct m_store_queue *q;
    assert_int_equal(m_store_queue_new(s, DEPTH, &q), 0);
    struct m_store_io ios[DEPTH];
    void *bufs[DEPTH];
    unsigned free_idx[DEPTH], nfree = DEPTH;
    for (unsigned i = 0; i < DEPTH; i++) {
        bufs[i] = rec_new();
        free_idx[i] = i;
    }
    size_t written = 0, inflight = 0;
    while (written < N || inflight) {
        if (written < N && nfree) {
            unsigned k = free_idx[--nfree];
            uint64_t slot;
            assert_int_equal(m_store_slot_alloc(s, &slot), 0);
            assert_int_equal(slot, written);
            rec_fill(bufs[k], slot, 1);
            ios[k] = (struct m_store_io){
                .op = M_STORE_WRITE, .slot = slot, .buf = bufs[k], .user = (void *)(uintptr_t)k};
            struct m_store_io *p = &ios[k];
            assert_int_equal(m_store_submit(q, &p, 1), 0);
            written++;
            inflight++;
            continue;
        }
        struct m_store_io *done[DEPTH];
        size_t nd;
        assert_int_equal(m_store_reap(q, done, DEPTH, 1, &nd), 0);
        for (size_t i = 0; i < nd; i++) {
            assert_int_equal(done[i]->result, 0);
            free_idx[nfree++] = (unsigned)(uintptr_t)done[i]->user;
        }
        inflight -= nd;
    }
    struct stat sb;
    assert_int_equal(stat(m_store_describe(s), &sb), 0);
    fprintf(stderr, "# %s: %d records, file size %lld\n", opts, N, (long long)sb.st_size);
    assert_true(sb.st_size >= (off_t)N * STRIDE);
    for (uint64_t slot = 0; slot < N; slot++) {
        assert_int_equal(rec_io(q, M_STORE_READ, slot, bufs[0]), 0);
        assert_true(rec_check(bufs[0], slot, 1));
    }
    for (unsigned i = 0; i < DEPTH; i++)
        free(bufs[i]);
    m_store_queue_free(q);
    m_store_close(s);
}

static void test_prefill(void **state)
{
    (void)state;
    long type = fs_type_of(test_dir());
    bool ramfs = type == 0x01021994 || type == (long)0x858458f6;
    /* The first allocation zero-fills the first MiB (not on a RAM file
     * system, where it would only take RAM), prefill=0 nothing. */
    struct m_store *s = store_open_fmt("file:%s?direct=1", test_dir());
    uint64_t slot;
    assert_int_equal(m_store_slot_alloc(s, &slot), 0);
    struct stat sb;
    assert_int_equal(stat(m_store_describe(s), &sb), 0);
    if (!ramfs && (fd_flags_of(m_store_describe(s)) & O_DIRECT))
        assert_int_equal(sb.st_size, 1 << 20);
    /* A zero-filled slot never written reads as zeros (a hole, for the
     * layer above), and a written one next to it is intact. */
    struct m_store_queue *q;
    assert_int_equal(m_store_queue_new(s, 2, &q), 0);
    void *buf = rec_new();
    rec_fill(buf, slot, 1);
    assert_int_equal(rec_io(q, M_STORE_WRITE, slot, buf), 0);
    assert_int_equal(m_store_slot_alloc(s, &slot), 0);
    memset(buf, 0xff, M_STORE_RECORD);
    assert_int_equal(rec_io(q, M_STORE_READ, slot, buf), 0);
    assert_true(rec_is_zero(buf));
    assert_int_equal(rec_io(q, M_STORE_READ, 0, buf), 0);
    assert_true(rec_check(buf, 0, 1));
    free(buf);
    m_store_queue_free(q);
    m_store_close(s);
    s = store_open_fmt("file:%s?direct=1&prefill=0", test_dir());
    assert_int_equal(m_store_slot_alloc(s, &slot), 0);
    assert_int_equal(stat(m_store_describe(s), &sb), 0);
    assert_int_equal(sb.st_size, 0);
    m_store_close(s);
    /* With max=, zeros stop at the cap. */
    s = store_open_fmt("file:%s?direct=1&max=100K", test_dir());
    assert_int_equal(m_store_slot_alloc(s, &slot), 0);
    assert_int_equal(stat(m_store_describe(s), &sb), 0);
    assert_true(sb.st_size <= 100 * 1024);
    m_store_close(s);

    prefill_while_writing("prefill=1M");
    prefill_while_writing("prefill=64K");
    prefill_while_writing("prefill=0");

    char uri[512];
    snprintf(uri, sizeof uri, "file:%s?prefill=1000", test_dir());
    assert_int_equal(m_store_open(uri, &s), EINVAL);
}

/* ---------------------------------------------------------------------------
 * Threads
 * ------------------------------------------------------------------------- */

enum { NTHREADS = 4, OWNERS = 1 << 14 };

struct thread_arg {
    struct m_store *s;
    int id;
    _Atomic uint64_t *owner; /* slot -> thread id + 1 while allocated */
    _Atomic int *failures;
    uint64_t ops;
};

static void *thread_main(void *p)
{
    struct thread_arg *a = p;
    struct m_store_queue *q;
    if (m_store_queue_new(a->s, 8, &q) != 0) {
        atomic_fetch_add(a->failures, 1);
        return NULL;
    }
    enum { BATCH = 8, LIVE = 24 };
    uint64_t live[LIVE], live_gen[LIVE];
    size_t nlive = 0;
    struct m_store_io ios[BATCH];
    struct m_store_io *ptr[BATCH];
    void *bufs[BATCH];
    for (int i = 0; i < BATCH; i++)
        if (posix_memalign(&bufs[i], M_STORE_ALIGN, M_STORE_RECORD) != 0)
            abort();
    unsigned seed = (unsigned)a->id * 7919u + 1;
    for (uint64_t round = 1; round <= 300; round++) {
        size_t n = 1 + (size_t)rand_r(&seed) % BATCH;
        for (size_t i = 0; i < n; i++) {
            uint64_t slot;
            if (m_store_slot_alloc(a->s, &slot) != 0 || slot >= OWNERS) {
                atomic_fetch_add(a->failures, 1);
                goto out;
            }
            uint64_t expect = 0;
            if (!atomic_compare_exchange_strong(&a->owner[slot], &expect, (uint64_t)a->id + 1))
                atomic_fetch_add(a->failures, 1); /* handed out twice */
            uint64_t gen = round * NTHREADS + (uint64_t)a->id;
            rec_fill(bufs[i], slot, gen);
            ios[i] = (struct m_store_io){.op = M_STORE_WRITE, .slot = slot, .buf = bufs[i]};
            ios[i].user = (void *)(uintptr_t)gen;
            ptr[i] = &ios[i];
        }
        if (m_store_rw(q, ptr, n) != 0)
            atomic_fetch_add(a->failures, 1);
        for (size_t i = 0; i < n; i++) {
            if (ios[i].result)
                atomic_fetch_add(a->failures, 1);
            memset(bufs[i], 0, M_STORE_RECORD);
            ios[i].op = M_STORE_READ;
        }
        if (m_store_rw(q, ptr, n) != 0)
            atomic_fetch_add(a->failures, 1);
        a->ops += 2 * n;
        for (size_t i = 0; i < n; i++) {
            uint64_t slot = ios[i].slot;
            if (ios[i].result || !rec_check(bufs[i], slot, (uint64_t)(uintptr_t)ios[i].user))
                atomic_fetch_add(a->failures, 1);
            /* Keep some records alive for a while so frees interleave with
             * other threads' writes next to them. */
            if (nlive < LIVE && rand_r(&seed) % 2) {
                live[nlive] = slot;
                live_gen[nlive++] = (uint64_t)(uintptr_t)ios[i].user;
                continue;
            }
            atomic_store(&a->owner[slot], 0);
            m_store_slot_free(a->s, slot);
            a->ops++;
        }
        if (nlive == LIVE) {
            /* Check the survivors, then free half of them. */
            for (size_t i = 0; i < LIVE; i += BATCH) {
                size_t k = LIVE - i < BATCH ? LIVE - i : BATCH;
                for (size_t j = 0; j < k; j++) {
                    ios[j] = (struct m_store_io){
                        .op = M_STORE_READ, .slot = live[i + j], .buf = bufs[j]};
                    ptr[j] = &ios[j];
                }
                if (m_store_rw(q, ptr, k) != 0)
                    atomic_fetch_add(a->failures, 1);
                for (size_t j = 0; j < k; j++)
                    if (ios[j].result || !rec_check(bufs[j], live[i + j], live_gen[i + j]))
                        atomic_fetch_add(a->failures, 1);
                a->ops += k;
            }
            size_t keep = 0;
            for (size_t i = 0; i < LIVE; i++) {
                if (i % 2) {
                    atomic_store(&a->owner[live[i]], 0);
                    m_store_slot_free(a->s, live[i]);
                } else {
                    live[keep] = live[i];
                    live_gen[keep++] = live_gen[i];
                }
            }
            nlive = keep;
        }
    }
out:
    for (size_t i = 0; i < nlive; i++) {
        atomic_store(&a->owner[live[i]], 0);
        m_store_slot_free(a->s, live[i]);
    }
    for (int i = 0; i < BATCH; i++)
        free(bufs[i]);
    m_store_queue_free(q);
    return NULL;
}

/* Each thread keeps records alive while others free and punch around them:
 * with slack=0 every free punches, racing the other threads' allocations. */
static void threads(const char *opts)
{
    struct m_store *s = store_open_fmt("file:%s?%s", test_dir(), opts);
    static _Atomic uint64_t owner[OWNERS];
    _Atomic int failures = 0;
    struct thread_arg args[NTHREADS];
    pthread_t th[NTHREADS];
    for (int i = 0; i < NTHREADS; i++) {
        args[i] = (struct thread_arg){.s = s, .id = i, .owner = owner, .failures = &failures};
        assert_int_equal(pthread_create(&th[i], NULL, thread_main, &args[i]), 0);
    }
    uint64_t ops = 0;
    for (int i = 0; i < NTHREADS; i++) {
        pthread_join(th[i], NULL);
        ops += args[i].ops;
    }
    fprintf(stderr, "# %d threads, %s: %llu store operations\n", NTHREADS, opts,
            (unsigned long long)ops);
    assert_int_equal(atomic_load(&failures), 0);
    assert_true(ops >= 4000);
    struct m_store_stats st;
    m_store_stats(s, &st);
    assert_int_equal(st.slots_used, 0);
    assert_int_equal(st.errors, 0);
    /* Reuse kept the file compact: every thread's live set and a batch in
     * flight each, plus slots reserved by a punch running meanwhile (up to
     * 64 dirty slots and their neighbours). */
    fprintf(stderr, "# slots_high %llu\n", (unsigned long long)st.slots_high);
    assert_true(st.slots_high <= NTHREADS * (24 + 8) + 3 * 64);
    /* Every slot is free again, none is left reserved: they come back in
     * order. */
    for (uint64_t i = 0; i < st.slots_high + 1; i++) {
        uint64_t slot;
        assert_int_equal(m_store_slot_alloc(s, &slot), 0);
        assert_int_equal(slot, i);
    }
    m_store_close(s);
}

static void test_threads_slack_default(void **state)
{
    (void)state;
    threads("direct=1");
}

static void test_threads_punch_every_free(void **state)
{
    (void)state;
    threads("direct=1&slack=0");
}

static void test_threads_punch_batches(void **state)
{
    (void)state;
    threads("direct=0&slack=20K");
}

/* ---------------------------------------------------------------------------
 * Queue limits and bad input
 * ------------------------------------------------------------------------- */

static void test_queue_depth(void **state)
{
    (void)state;
    struct m_store *s = store_open_fmt("file:%s", test_dir());
    struct m_store_queue *q;
    assert_int_equal(m_store_queue_new(s, 0, &q), EINVAL);
    assert_int_equal(m_store_queue_new(s, 5, &q), 0);
    assert_int_equal(q->depth, 5);
    struct m_store_io ios[8];
    struct m_store_io *p[8];
    void *bufs[8];
    for (uint64_t i = 0; i < 8; i++) {
        uint64_t slot;
        assert_int_equal(m_store_slot_alloc(s, &slot), 0);
        bufs[i] = rec_new();
        rec_fill(bufs[i], slot, 1);
        ios[i] = (struct m_store_io){.op = M_STORE_WRITE, .slot = slot, .buf = bufs[i]};
        p[i] = &ios[i];
    }
    assert_int_equal(m_store_submit(q, p, 6), EAGAIN);
    assert_int_equal(m_store_submit(q, p, 3), 0);
    assert_int_equal(m_store_submit(q, p + 3, 3), EAGAIN);
    assert_int_equal(m_store_submit(q, p + 3, 2), 0);
    assert_int_equal(m_store_submit(q, p + 5, 1), EAGAIN);
    struct m_store_io *done[8];
    size_t nd = 0, total = 0;
    /* min larger than what is in flight is clamped, not a hang. */
    assert_int_equal(m_store_reap(q, done, 8, 8, &nd), 0);
    total += nd;
    while (total < 5) {
        assert_int_equal(m_store_reap(q, done, 8, 1, &nd), 0);
        total += nd;
    }
    assert_int_equal(total, 5);
    assert_int_equal(m_store_submit(q, p + 5, 3), 0);
    total = 0;
    while (total < 3) {
        assert_int_equal(m_store_reap(q, done, 2, 2, &nd), 0);
        assert_true(nd <= 2);
        total += nd;
    }
    for (int i = 0; i < 8; i++)
        assert_int_equal(ios[i].result, 0);

    /* Bad I/Os are refused whole: nothing is submitted. */
    void *odd = (char *)bufs[0] + 512;
    ios[0] = (struct m_store_io){.op = M_STORE_READ, .slot = 0, .buf = odd};
    assert_int_equal(m_store_submit(q, p, 2), EINVAL);
    ios[0] = (struct m_store_io){.op = 3, .slot = 0, .buf = bufs[0]};
    assert_int_equal(m_store_submit(q, p, 1), EINVAL);
    ios[0] = (struct m_store_io){.op = M_STORE_READ, .slot = UINT64_MAX / 2, .buf = bufs[0]};
    assert_int_equal(m_store_submit(q, p, 1), EINVAL);
    assert_int_equal(m_store_reap(q, done, 8, 1, &nd), 0);
    assert_int_equal(nd, 0);

    /* m_store_rw gives the batch's error to the I/Os it did not carry out. */
    for (int i = 0; i < 8; i++)
        ios[i] = (struct m_store_io){.op = M_STORE_READ, .slot = (uint64_t)i, .buf = bufs[i]};
    ios[7].buf = odd;
    assert_int_equal(m_store_rw(q, p, 8), EINVAL);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(ios[i].result, 0);
        assert_true(rec_check(bufs[i], (uint64_t)i, 1));
    }
    /* How many of 5 and 6 went out before 7 was refused depends on how
     * fast the first five completed (the queue refills as they do). */
    for (int i = 5; i < 7; i++) {
        if (ios[i].result == 0)
            assert_true(rec_check(bufs[i], (uint64_t)i, 1));
        else
            assert_int_equal(ios[i].result, EINVAL);
    }
    assert_int_equal(ios[7].result, EINVAL);
    for (int i = 0; i < 8; i++)
        free(bufs[i]);
    m_store_queue_free(q);
    m_store_close(s);
}

static void test_bad_uris(void **state)
{
    (void)state;
    struct m_store *s = (struct m_store *)&s;
    assert_int_equal(m_store_open("nosuch://host/x", &s), EINVAL);
    assert_null(s);
    assert_int_equal(m_store_open("ftp:x", &s), EINVAL);
    assert_int_equal(m_store_open("file:", &s), EINVAL);
    assert_int_equal(m_store_open("file://", &s), EINVAL);
    assert_int_equal(m_store_open("file:?direct=0", &s), EINVAL);
    assert_int_equal(m_store_open("file:/nonexistent-moat-dir/sub/store", &s), ENOENT);
    assert_int_equal(m_store_open("/nonexistent-moat-dir/store", &s), ENOENT);
    assert_int_equal(m_store_open("file:/dev/null", &s), EINVAL); /* not a regular file */
    char uri[512];
    snprintf(uri, sizeof uri, "file:%s?bogus=1", test_dir());
    assert_int_equal(m_store_open(uri, &s), EINVAL);
    snprintf(uri, sizeof uri, "file:%s?direct=2", test_dir());
    assert_int_equal(m_store_open(uri, &s), EINVAL);
    snprintf(uri, sizeof uri, "file:%s?direct", test_dir());
    assert_int_equal(m_store_open(uri, &s), EINVAL);
    snprintf(uri, sizeof uri, "file:%s?max=lots", test_dir());
    assert_int_equal(m_store_open(uri, &s), EINVAL);
    snprintf(uri, sizeof uri, "file:%s?max=4000", test_dir()); /* < one record */
    assert_int_equal(m_store_open(uri, &s), EINVAL);
    assert_null(s);
    /* Scheme names are case-insensitive, and file:/// is file:/. */
    snprintf(uri, sizeof uri, "FILE://%s", test_dir());
    assert_int_equal(m_store_open(uri, &s), 0);
    m_store_close(s);
    m_store_close(NULL);
}

static void test_max_cap(void **state)
{
    (void)state;
    /* 10K holds two 4096-byte records. */
    struct m_store *s = store_open_fmt("file:%s?max=10K", test_dir());
    uint64_t a, b, c;
    assert_int_equal(m_store_slot_alloc(s, &a), 0);
    assert_int_equal(m_store_slot_alloc(s, &b), 0);
    assert_int_equal(m_store_slot_alloc(s, &c), ENOSPC);
    m_store_slot_free(s, a);
    assert_int_equal(m_store_slot_alloc(s, &c), 0);
    assert_int_equal(c, a);
    assert_int_equal(m_store_slot_alloc(s, &c), ENOSPC);
    struct m_store_stats st;
    m_store_stats(s, &st);
    assert_int_equal(st.slots_used, 2);
    assert_int_equal(st.slots_high, 2);
    m_store_close(s);
}

/* ---------------------------------------------------------------------------
 * Where the file lives and what happens to it
 * ------------------------------------------------------------------------- */

static void test_file_lifetime(void **state)
{
    (void)state;
    char dir[512], path[600], prefix[64];
    snprintf(dir, sizeof dir, "%s/moat-store-test-XXXXXX", test_dir());
    assert_non_null(mkdtemp(dir));
    snprintf(prefix, sizeof prefix, "moat-%d-", (int)getpid());

    /* No URI: a unique file in $TMPDIR, removed at close. */
    const char *old_tmpdir = getenv("TMPDIR");
    char *saved = old_tmpdir ? strdup(old_tmpdir) : NULL;
    setenv("TMPDIR", dir, 1);
    struct m_store *s = NULL, *s2 = NULL;
    assert_int_equal(m_store_open(NULL, &s), 0);
    assert_int_equal(m_store_open("", &s2), 0);
    if (saved) {
        setenv("TMPDIR", saved, 1);
        free(saved);
    } else {
        unsetenv("TMPDIR");
    }
    snprintf(path, sizeof path, "%s", m_store_describe(s));
    assert_int_equal(strncmp(path, dir, strlen(dir)), 0);
    assert_non_null(strstr(path, prefix));
    assert_string_not_equal(path, m_store_describe(s2));
    /* an anonymous store is unlinked at once: nothing is left behind even
     * if the process is killed */
    struct stat st;
    assert_int_equal(stat(path, &st), -1);
    assert_int_equal(errno, ENOENT);
    m_store_close(s);
    m_store_close(s2);

    /* A directory: a unique file inside it, removed at close. */
    s = store_open_fmt("file:%s", dir);
    snprintf(path, sizeof path, "%s", m_store_describe(s));
    assert_non_null(strstr(path, prefix));
    m_store_close(s);
    assert_int_equal(stat(path, &st), -1);

    /* A new named file: created 0600, removed at close unless keep=1. */
    snprintf(path, sizeof path, "%s/named", dir);
    s = store_open_fmt("file:%s", path);
    assert_string_equal(m_store_describe(s), path);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    m_store_close(s);
    assert_int_equal(stat(path, &st), -1);

    s = store_open_fmt("%s?keep=1&prefill=0", path); /* a bare absolute path */
    struct m_store_queue *q;
    assert_int_equal(m_store_queue_new(s, 2, &q), 0);
    void *buf = rec_new();
    uint64_t slot;
    assert_int_equal(m_store_slot_alloc(s, &slot), 0);
    rec_fill(buf, slot, 1);
    assert_int_equal(rec_io(q, M_STORE_WRITE, slot, buf), 0);
    m_store_queue_free(q);
    m_store_close(s);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_size, STRIDE);

    /* An existing file is someone's old records: truncated at open, and
     * (not ours to remove) truncated again at close. */
    s = store_open_fmt("file:%s?prefill=0", path);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_size, 0);
    assert_int_equal(m_store_queue_new(s, 2, &q), 0);
    assert_int_equal(m_store_slot_alloc(s, &slot), 0);
    assert_int_equal(rec_io(q, M_STORE_READ, slot, buf), EIO); /* old data is gone */
    rec_fill(buf, slot, 2);
    assert_int_equal(rec_io(q, M_STORE_WRITE, slot, buf), 0);
    m_store_queue_free(q);
    m_store_close(s);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_size, 0);
    assert_int_equal(unlink(path), 0);
    free(buf);
    assert_int_equal(rmdir(dir), 0);
}

/* ---------------------------------------------------------------------------
 * Small file systems: ENOSPC, and O_DIRECT refused
 * ------------------------------------------------------------------------- */

/* Mount a file system of `type` on a new directory; NULL (and a loud skip
 * message) if this process may not mount. */
static char *mount_scratch(const char *type, const char *opts, char *dir, size_t dirlen)
{
    snprintf(dir, dirlen, "%s/moat-%s-XXXXXX", test_dir(), type);
    assert_non_null(mkdtemp(dir));
    if (mount(type, dir, type, 0, opts) != 0) {
        fprintf(stderr, "SKIP: cannot mount %s on %s (%s); this test needs root (CAP_SYS_ADMIN)\n",
                type, dir, strerror(errno));
        rmdir(dir);
        skipped_any = true;
        return NULL;
    }
    return dir;
}

/* io_uring drops a ring's registered files after io_uring_queue_exit()
 * returns (the teardown is deferred to a kernel worker), so the mount may be
 * busy for a moment after the store is closed. */
static void unmount_scratch(const char *dir)
{
    int rc = -1;
    for (int i = 0; i < 200 && rc != 0; i++) {
        rc = umount2(dir, 0);
        if (rc != 0 && errno != EBUSY)
            break;
        if (rc != 0) {
            fprintf(stderr, "# %s busy, retrying\n", dir);
            usleep(10000);
        }
    }
    if (rc != 0) {
        fprintf(stderr, "umount %s: %s\n", dir, strerror(errno));
        (void)umount2(dir, MNT_DETACH);
    }
    assert_int_equal(rc, 0);
    assert_int_equal(rmdir(dir), 0);
}

static void tiny_write(struct m_store_queue *q, const uint64_t *slots, size_t n, uint64_t gen,
                       void **bufs, int *results)
{
    struct m_store_io ios[16];
    struct m_store_io *p[16];
    assert_true(n <= 16);
    for (size_t i = 0; i < n; i++) {
        rec_fill(bufs[i], slots[i], gen);
        ios[i] = (struct m_store_io){.op = M_STORE_WRITE, .slot = slots[i], .buf = bufs[i]};
        p[i] = &ios[i];
    }
    assert_int_equal(m_store_rw(q, p, n), 0);
    for (size_t i = 0; i < n; i++)
        results[i] = ios[i].result;
}

/* Fill a 1 MiB tmpfs until ENOSPC; what was acknowledged must read back,
 * and space freed afterwards must take new writes. */
static void tiny_fs(int direct, const char *slack)
{
    char dir[512];
    if (!mount_scratch("tmpfs", "size=1m", dir, sizeof dir)) {
        skip();
        return;
    }
    struct m_store *s = store_open_fmt("file:%s/store?direct=%d%s", dir, direct, slack);
    struct m_store_queue *q;
    assert_int_equal(m_store_queue_new(s, 8, &q), 0);
    enum { MAXREC = 1024, BATCH = 8 };
    static uint64_t gen[MAXREC]; /* 0 = nothing acknowledged */
    memset(gen, 0, sizeof gen);
    void *bufs[16];
    for (int i = 0; i < 16; i++)
        bufs[i] = rec_new();
    uint64_t slots[16];
    int res[16];

    int nfull = 0;
    size_t nacked = 0;
    while (!nfull) {
        for (int i = 0; i < BATCH; i++) {
            assert_int_equal(m_store_slot_alloc(s, &slots[i]), 0);
            assert_true(slots[i] < MAXREC);
        }
        tiny_write(q, slots, BATCH, 1, bufs, res);
        for (int i = 0; i < BATCH; i++) {
            if (res[i] == 0) {
                gen[slots[i]] = 1;
                nacked++;
            } else {
                assert_int_equal(res[i], ENOSPC);
                nfull++;
                m_store_slot_free(s, slots[i]); /* the caller keeps the page */
            }
        }
    }
    struct m_store_stats st;
    m_store_stats(s, &st);
    fprintf(stderr, "# 1 MiB tmpfs, direct=%d%s: %zu records acknowledged, %d ENOSPC\n", direct,
            slack, nacked, nfull);
    assert_true(nacked >= 150 && nacked <= 1024 * 1024 / STRIDE);
    assert_true(st.errors >= (uint64_t)nfull);
    for (uint64_t slot = 0; slot < MAXREC; slot++) {
        if (!gen[slot])
            continue;
        memset(bufs[0], 0, M_STORE_RECORD);
        assert_int_equal(rec_io(q, M_STORE_READ, slot, bufs[0]), 0);
        assert_true(rec_check(bufs[0], slot, gen[slot]));
    }

    /* Slots for four new records (the ones that failed), then free 16 old
     * records.  Writing the four needs space that only the freed records
     * hold: with slack they still hold it, and the ENOSPC that follows
     * punches them and the write is retried. */
    uint64_t fresh[4];
    for (int i = 0; i < 4; i++) {
        assert_int_equal(m_store_slot_alloc(s, &fresh[i]), 0);
        assert_int_equal(gen[fresh[i]], 0);
    }
    for (uint64_t slot = 20; slot < 36; slot++) {
        assert_int_equal(gen[slot], 1);
        gen[slot] = 0;
        m_store_slot_free(s, slot);
    }
    tiny_write(q, fresh, 4, 2, bufs, res);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(res[i], 0);
        gen[fresh[i]] = 2;
    }
    /* The freed slots are reused lowest first and take new records too. */
    for (int i = 0; i < BATCH; i++) {
        assert_int_equal(m_store_slot_alloc(s, &slots[i]), 0);
        assert_int_equal(slots[i], 20 + (uint64_t)i);
    }
    tiny_write(q, slots, BATCH, 3, bufs, res);
    for (int i = 0; i < BATCH; i++) {
        assert_int_equal(res[i], 0);
        gen[slots[i]] = 3;
    }
    for (uint64_t slot = 0; slot < MAXREC; slot++) {
        if (!gen[slot])
            continue;
        assert_int_equal(rec_io(q, M_STORE_READ, slot, bufs[0]), 0);
        assert_true(rec_check(bufs[0], slot, gen[slot]));
    }
    for (int i = 0; i < 16; i++)
        free(bufs[i]);
    m_store_queue_free(q);
    m_store_close(s);
    unmount_scratch(dir);
}

static void test_tiny_fs_direct(void **state)
{
    (void)state;
    tiny_fs(1, "");
}

static void test_tiny_fs_buffered(void **state)
{
    (void)state;
    tiny_fs(0, "");
}

static void test_tiny_fs_punch_every_free(void **state)
{
    (void)state;
    tiny_fs(1, "&slack=0");
}

/* ramfs refuses O_DIRECT and hole punching: the store falls back to
 * buffered I/O and keeps freed space, and works. */
static void test_ramfs_fallback(void **state)
{
    (void)state;
    char dir[512];
    if (!mount_scratch("ramfs", NULL, dir, sizeof dir)) {
        skip();
        return;
    }
    struct m_store *s = store_open_fmt("file:%s?direct=1", dir);
    int flags = fd_flags_of(m_store_describe(s));
    assert_true(flags >= 0);
    assert_false(flags & O_DIRECT);
    struct m_store_queue *q;
    assert_int_equal(m_store_queue_new(s, 4, &q), 0);
    void *buf = rec_new();
    write_first(s, q, 4);
    m_store_slot_free(s, 1);
    m_store_slot_free(s, 2);
    for (uint64_t slot = 0; slot < 4; slot += 3) {
        assert_int_equal(rec_io(q, M_STORE_READ, slot, buf), 0);
        assert_true(rec_check(buf, slot, 1));
    }
    free(buf);
    m_store_queue_free(q);
    m_store_close(s);
    unmount_scratch(dir);
}

/* A device with 4 KiB logical sectors (a loop device made with
 * `losetup --sector-size 4096`, ext4 on it): records are one aligned block
 * each, so the store stays O_DIRECT there (4608-byte records at 4608-byte
 * offsets, the layout before, were refused and fell back to buffered I/O).
 * Needs root, losetup and mkfs.ext4; skips without them. */
static bool sh(const char *cmd, char *out, size_t outlen)
{
    FILE *f = popen(cmd, "r");
    if (!f)
        return false;
    size_t n = out ? fread(out, 1, outlen - 1, f) : 0;
    if (out) {
        out[n] = '\0';
        out[strcspn(out, "\n")] = '\0';
    }
    return pclose(f) == 0;
}

static void test_4k_sectors_direct(void **state)
{
    (void)state;
    char img[512], dev[64], dir[512], cmd[1200];
    snprintf(img, sizeof img, "%s/moat-4k-%d.img", test_dir(), (int)getpid());
    snprintf(cmd, sizeof cmd,
             "truncate -s 64M %s && losetup --sector-size 4096 -f --show %s 2>/dev/null", img, img);
    if (!sh(cmd, dev, sizeof dev) || strncmp(dev, "/dev/loop", 9) != 0) {
        fprintf(stderr, "SKIP: cannot make a loop device with 4096-byte sectors (needs root and "
                        "losetup)\n");
        unlink(img);
        skipped_any = true;
        skip();
        return;
    }
    snprintf(dir, sizeof dir, "%s/moat-4k-XXXXXX", test_dir());
    assert_non_null(mkdtemp(dir));
    snprintf(cmd, sizeof cmd, "mkfs.ext4 -q %s 2>&1", dev);
    char why[256];
    bool made = sh(cmd, why, sizeof why);
    if (!made || mount(dev, dir, "ext4", 0, NULL) != 0) {
        fprintf(stderr, "SKIP: cannot make or mount ext4 on %s (%s)\n", dev,
                made ? strerror(errno) : why);
        snprintf(cmd, sizeof cmd, "losetup -d %s", dev);
        (void)sh(cmd, NULL, 0);
        rmdir(dir);
        unlink(img);
        skipped_any = true;
        skip();
        return;
    }
    snprintf(cmd, sizeof cmd, "cat /sys/block/%s/queue/logical_block_size", dev + 5);
    char lbs[32];
    assert_true(sh(cmd, lbs, sizeof lbs));
    assert_string_equal(lbs, "4096");

    struct m_store *s = store_open_fmt("file:%s?direct=1", dir);
    int flags = fd_flags_of(m_store_describe(s));
    assert_true(flags >= 0);
    assert_true(flags & O_DIRECT);
    struct m_store_queue *q;
    assert_int_equal(m_store_queue_new(s, 16, &q), 0);
    void *buf = rec_new();
    write_first(s, q, 64);
    for (uint64_t slot = 0; slot < 64; slot++) {
        assert_int_equal(rec_io(q, M_STORE_READ, slot, buf), 0);
        assert_true(rec_check(buf, slot, 1));
    }
    struct m_store_stats st;
    m_store_stats(s, &st);
    assert_int_equal(st.errors, 0);
    free(buf);
    m_store_queue_free(q);
    m_store_close(s);
    unmount_scratch(dir);
    snprintf(cmd, sizeof cmd, "losetup -d %s", dev);
    assert_true(sh(cmd, NULL, 0));
    unlink(img);
}

int main(void)
{
    /* Mounts made by the tests vanish with the process even if a test fails
     * before it unmounts: a mount namespace of our own, where allowed. */
    if (unshare(CLONE_NEWNS) == 0)
        (void)mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_batch_direct),
        cmocka_unit_test(test_one_batch_buffered),
        cmocka_unit_test(test_many_batches_direct),
        cmocka_unit_test(test_many_batches_buffered),
        cmocka_unit_test(test_read_hole_and_eof),
        cmocka_unit_test(test_slot_reuse_lowest_first),
        cmocka_unit_test(test_hole_punch),
        cmocka_unit_test(test_hole_punch_deferred),
        cmocka_unit_test(test_prefill),
        cmocka_unit_test(test_threads_slack_default),
        cmocka_unit_test(test_threads_punch_every_free),
        cmocka_unit_test(test_threads_punch_batches),
        cmocka_unit_test(test_queue_depth),
        cmocka_unit_test(test_bad_uris),
        cmocka_unit_test(test_max_cap),
        cmocka_unit_test(test_file_lifetime),
        cmocka_unit_test(test_tiny_fs_direct),
        cmocka_unit_test(test_tiny_fs_buffered),
        cmocka_unit_test(test_tiny_fs_punch_every_free),
        cmocka_unit_test(test_ramfs_fallback),
        cmocka_unit_test(test_4k_sectors_direct),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    if (failed)
        return 1;
    if (skipped_any) {
        fprintf(stderr, "SKIP: the other tests passed, but the mount tests did not run "
                        "(see above); exiting 77\n");
        return 77;
    }
    return 0;
}
