/*
 * test_seal_integrity.c - what reaches the store and what comes back:
 *   - plaintext of an evicted page never reaches the store (invariant 4);
 *   - a tampered sealed page is never mapped: the faulting thread gets
 *     SIGBUS and the log names the page and the reason (invariant 2);
 *   - a replayed (older, authentic) sealed page likewise: with the file
 *     store only its ciphertext is in the file (the trailer that would let
 *     it tell a replay stays in memory), so it fails authentication; the
 *     diagnosis of a replay is tested in test_units and test_engine_cluster;
 *   - a store on a filesystem that fills up: a clear error, nothing lost
 *     (invariant 5).
 * Scenarios that must die run in child processes the test watches.
 */
#include "moat_test.h"

#include <sched.h>
#include <sys/mount.h>

#define PG     4096UL
#define REC    4096UL /* a record's stride in the store file (its trailer stays in memory) */
#define NPAGES 64

static void fill(uint8_t *p, size_t page, int gen)
{
    char tag[64];
    int n = snprintf(tag, sizeof tag, "MOAT-PLAINTEXT-%zu-%d|", page, gen);
    memset(p, 0, PG);
    for (size_t off = 0; off + (size_t)n <= PG; off += (size_t)n)
        memcpy(p + off, tag, (size_t)n);
}

static void write_all(uint8_t *mem, int gen)
{
    for (size_t i = 0; i < NPAGES; i++)
        fill(mem + i * PG, i, gen);
}

struct scenario {
    char store[256], log[256];
    int replay;
};

static uint8_t *start_small(struct scenario *s)
{
    char uri[300];
    snprintf(uri, sizeof uri, "file:%s?keep=1", s->store);
    if (mt_start_opts(16 * PG, uri, s->log) != 0)
        _exit(3);
    uint8_t *mem;
    if (moat_alloc(NULL, NPAGES * PG, MOAT_COMMIT_ON_DEMAND, NULL, NULL, (void **)&mem) != 0)
        _exit(4);
    return mem;
}

static void *read_file(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return NULL;
    struct stat st;
    fstat(fd, &st);
    *len = (size_t)st.st_size;
    void *buf = malloc(*len + 1);
    size_t got = 0;
    while (got < *len) {
        ssize_t r = pread(fd, (char *)buf + got, *len - got, (off_t)got);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    *len = got;
    return buf;
}

static void write_file(const char *path, const void *buf, size_t len)
{
    int fd = open(path, O_WRONLY);
    if (fd < 0)
        _exit(5);
    if (pwrite(fd, buf, len, 0) != (ssize_t)len)
        _exit(6);
    fsync(fd);
    close(fd);
}

/* The child: evict page 0, then corrupt or replay its record, then read it. */
static void attack_child(void *arg)
{
    struct scenario *s = arg;
    uint8_t *mem = start_small(s);
    write_all(mem, 1);
    size_t len = 0;
    uint8_t *snap = read_file(s->store, &len);
    if (!snap || len < REC)
        _exit(7);
    if (s->replay) {
        /* a second generation evicts page 0 again, at a newer version */
        write_all(mem, 2);
        write_file(s->store, snap, len);
    } else {
        for (size_t off = 100; off < len; off += REC)
            snap[off] ^= 0x5a;
        write_file(s->store, snap, len);
    }
    volatile uint8_t v = mem[0]; /* must raise SIGBUS */
    (void)v;
    _exit(0);
}

static void run_attack(int replay, const char *expect)
{
    struct scenario s = {.replay = replay};
    mt_path(s.store, sizeof s.store, replay ? "replay.store" : "tamper.store");
    mt_path(s.log, sizeof s.log, replay ? "replay.log" : "tamper.log");
    unlink(s.log);
    int st = mt_child(attack_child, &s);
    if (!(WIFSIGNALED(st) && WTERMSIG(st) == SIGBUS))
        fail_msg("child ended with status %#x, not SIGBUS", st);
    assert_true(mt_file_contains(s.log, expect));
    assert_true(mt_file_contains(s.log, "[ERROR]-[integrity]"));
    assert_true(mt_file_contains(s.log, "the page is not mapped"));
    unlink(s.store);
    unlink(s.log);
}

static void test_tamper(void **state)
{
    (void)state;
    run_attack(0, "sealed copy fails authentication");
}

static void test_replay(void **state)
{
    (void)state;
    run_attack(1, "sealed copy fails authentication (tampered, foreign or replayed record)");
}

static void test_no_plaintext_in_store(void **state)
{
    (void)state;
    struct scenario s = {0};
    mt_path(s.store, sizeof s.store, "plain.store");
    char uri[300];
    snprintf(uri, sizeof uri, "file:%s?keep=1", s.store);
    assert_int_equal(mt_start_opts(16 * PG, uri, NULL), 0);
    uint8_t *mem;
    assert_int_equal(
        moat_alloc(NULL, NPAGES * PG, MOAT_COMMIT_ON_DEMAND, NULL, NULL, (void **)&mem), 0);
    write_all(mem, 1);
    write_all(mem, 2);
    assert_true(MT_STAT(evictions_written) >= NPAGES);
    size_t len = 0;
    uint8_t *file = read_file(s.store, &len);
    assert_non_null(file);
    assert_true(len >= 40 * REC);
    file[len] = 0;
    assert_null(memmem(file, len, "MOAT-PLAINTEXT", 14));
    free(file);
    /* and everything reads back */
    for (size_t i = 0; i < NPAGES; i++) {
        uint8_t want[PG];
        fill(want, i, 2);
        assert_memory_equal(mem + i * PG, want, PG);
    }
    moat_shutdown();
    unlink(s.store);
}

/* A store on a 1 MiB tmpfs: it fills, the API reports ENOMEM, the log says
 * why, nothing acknowledged is lost, and freeing pages makes room again. */
static void test_store_full(void **state)
{
    (void)state;
    if (unshare(CLONE_NEWNS) != 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) {
        printf("SKIP: cannot make a private mount namespace (%s); the store-full test needs "
               "root\n",
               strerror(errno));
        skip();
    }
    char dir[256];
    mt_path(dir, sizeof dir, "tinyfs");
    mkdir(dir, 0700);
    if (mount("tmpfs", dir, "tmpfs", 0, "size=1m") != 0) {
        printf("SKIP: cannot mount a tmpfs (%s)\n", strerror(errno));
        rmdir(dir);
        skip();
    }
    char uri[300], log[256];
    snprintf(uri, sizeof uri, "file:%s/store", dir);
    mt_path(log, sizeof log, "full.log");
    unlink(log);
    assert_int_equal(mt_start_opts(16 * PG, uri, log), 0);
    size_t max = 600;
    uint8_t *mem;
    assert_int_equal(moat_alloc(NULL, max * PG, MOAT_COMMIT_ON_DEMAND, NULL, NULL, (void **)&mem),
                     0);
    uint8_t page[PG];
    size_t n = 0;
    int err = 0;
    for (; n < max; n++) {
        fill(page, n, 7);
        err = moat_commit_data(mem + n * PG, PG, page, MOAT_PROT_READ_WRITE);
        if (err)
            break;
    }
    printf("store full after %zu pages: %s\n", n, strerror(err));
    assert_int_equal(err, ENOMEM);
    assert_true(n > 100 && n < max);
    assert_true(MT_STAT(store_errors) > 0);
    assert_true(mt_file_contains(log, "No space left on device"));
    /* free 64 pages' worth of store; everything else must still be there */
    assert_int_equal(moat_uncommit(mem + 32 * PG, 64 * PG), 0);
    for (size_t i = 0; i < n; i++) {
        if (i >= 32 && i < 96)
            continue;
        fill(page, i, 7);
        if (memcmp(mem + i * PG, page, PG) != 0)
            fail_msg("page %zu lost its contents", i);
    }
    /* and there is room to go on */
    fill(page, n, 7);
    assert_int_equal(moat_commit_data(mem + n * PG, PG, page, MOAT_PROT_READ_WRITE), 0);
    moat_shutdown();
    umount(dir);
    rmdir(dir);
    unlink(log);
}

/* A fault that needs room when nothing can be evicted (the store is capped
 * and full): a fatal "budget exhausted" line with the numbers and SIGBUS,
 * not a hang. */
static void exhaust_child(void *arg)
{
    struct scenario *s = arg;
    char uri[300];
    snprintf(uri, sizeof uri, "file:%s?max=64K", s->store);
    if (mt_start_opts(16 * PG, uri, s->log) != 0)
        _exit(3);
    uint8_t *mem;
    if (moat_alloc(NULL, NPAGES * PG, MOAT_COMMIT_ON_DEMAND, NULL, NULL, (void **)&mem) != 0)
        _exit(4);
    write_all(mem, 1);
    _exit(0);
}

static void test_budget_exhausted_fault(void **state)
{
    (void)state;
    struct scenario s = {0};
    mt_path(s.store, sizeof s.store, "capped.store");
    mt_path(s.log, sizeof s.log, "capped.log");
    unlink(s.log);
    int st = mt_child(exhaust_child, &s);
    if (!(WIFSIGNALED(st) && WTERMSIG(st) == SIGBUS))
        fail_msg("child ended with status %#x, not SIGBUS", st);
    assert_true(mt_file_contains(s.log, "[FATAL]-[fault] - budget exhausted"));
    unlink(s.store);
    unlink(s.log);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_plaintext_in_store),
        cmocka_unit_test(test_tamper),
        cmocka_unit_test(test_replay),
        cmocka_unit_test(test_store_full),
        cmocka_unit_test(test_budget_exhausted_fault),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
