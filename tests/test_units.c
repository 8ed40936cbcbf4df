/*
 * test_units.c - unit tests of the small layers: size strings, the log line
 * format, page sealing (round trip, tampering, replay, binding to the page
 * identity, fresh nonces) and dropping many page ranges at once (zap).
 */
#include "moat_test.h"

#include "common/log.h"
#include "common/size.h"
#include "common/zap.h"
#include "seal/seal.h"
#include "store/store.h"

#include <sys/mman.h>
#include <sys/utsname.h>

static void test_size_parse(void **state)
{
    (void)state;
    size_t v;
    assert_int_equal(m_size_parse("4096", &v), 0);
    assert_true(v == 4096);
    assert_int_equal(m_size_parse("64M", &v), 0);
    assert_true(v == 64u << 20);
    assert_int_equal(m_size_parse("64MiB", &v), 0);
    assert_true(v == 64u << 20);
    assert_int_equal(m_size_parse("64mb", &v), 0);
    assert_true(v == 64u << 20);
    assert_int_equal(m_size_parse(" 1G ", &v), 0);
    assert_true(v == 1u << 30);
    assert_int_equal(m_size_parse("1.5G", &v), 0);
    assert_true(v == 3u << 29);
    assert_int_equal(m_size_parse("2T", &v), 0);
    assert_true(v == 2ULL << 40);
    assert_int_equal(m_size_parse("12B", &v), 0);
    assert_true(v == 12);
    assert_int_equal(m_size_parse("", &v), EINVAL);
    assert_int_equal(m_size_parse("M", &v), EINVAL);
    assert_int_equal(m_size_parse("-1M", &v), EINVAL);
    assert_int_equal(m_size_parse("1.5", &v), EINVAL);
    assert_int_equal(m_size_parse("1X", &v), EINVAL);
    assert_int_equal(m_size_parse("1MiBs", &v), EINVAL);
    assert_int_equal(m_size_parse("1.", &v), EINVAL);
    assert_int_equal(m_size_parse("99999999999999999999", &v), ERANGE);
    assert_int_equal(m_size_parse("17000000T", &v), ERANGE);
    assert_int_equal(m_size_parse(NULL, &v), EINVAL);
    char buf[32];
    assert_string_equal(m_size_format(64u << 20, buf, sizeof buf), "64.0 MiB");
    assert_string_equal(m_size_format(100, buf, sizeof buf), "100 B");
}

static void test_log_format(void **state)
{
    (void)state;
    char path[256];
    mt_path(path, sizeof path, "units.log");
    unlink(path);
    assert_int_equal(m_log_open(MOAT_LOG_INFO, path), 0);
    m_debug("unit", "not shown");
    m_warn("reclaim", "a message %d", 42);
    m_log_close();
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[512];
    assert_non_null(fgets(line, sizeof line, f));
    fclose(f);
    int y, mo, d, h, mi, s, ms;
    char rest[256];
    assert_int_equal(sscanf(line, "[%4d-%2d-%2d %2d:%2d:%2d.%3d]:%255[^\n]", &y, &mo, &d, &h, &mi,
                            &s, &ms, rest),
                     8);
    assert_string_equal(rest, "[WARN]-[reclaim] - a message 42");
    assert_false(mt_file_contains(path, "not shown"));
    assert_int_equal(m_log_parse_level("debug"), MOAT_LOG_DEBUG);
    assert_int_equal(m_log_parse_level("ERROR"), MOAT_LOG_ERROR);
    assert_int_equal(m_log_parse_level("2"), MOAT_LOG_WARN);
    assert_int_equal(m_log_parse_level("loud"), -1);
    m_log_open(MOAT_LOG_WARN, NULL);
    unlink(path);
}

static void test_seal_round_trip(void **state)
{
    (void)state;
    assert_int_equal(m_seal_init(), 0);
    static uint8_t plain[M_SEAL_PAGE], back[M_SEAL_PAGE];
    static _Alignas(4096) uint8_t rec[M_STORE_RECORD], rec2[M_STORE_RECORD];
    for (size_t i = 0; i < sizeof plain; i++)
        plain[i] = (uint8_t)(i * 31 + 7);
    struct m_seal_id id = {.region_id = 3, .page_index = 77, .version = 5};
    assert_int_equal(m_seal_page(plain, &id, rec), 0);
    /* the ciphertext does not contain the plaintext */
    assert_null(memmem(rec, M_SEAL_PAGE, plain, 64));
    uint64_t found = 0;
    assert_int_equal(m_seal_open(rec, &id, back, &found), 0);
    assert_memory_equal(plain, back, sizeof plain);
    /* a second seal of the same page uses a fresh nonce */
    assert_int_equal(m_seal_page(plain, &id, rec2), 0);
    assert_memory_not_equal(rec, rec2, M_SEAL_PAGE);
    /* bound to region, index and version */
    struct m_seal_id other = id;
    other.region_id = 4;
    assert_int_equal(m_seal_open(rec, &other, back, &found), EBADMSG);
    other = id;
    other.page_index = 78;
    assert_int_equal(m_seal_open(rec, &other, back, &found), EBADMSG);
    /* an older version put back is a replay */
    other = id;
    other.version = 6;
    assert_int_equal(m_seal_open(rec, &other, back, &found), ESTALE);
    assert_int_equal(found, 5);
    for (size_t i = 0; i < sizeof back; i++)
        assert_int_equal(back[i], 0); /* nothing leaks on failure */
    /* tampering with ciphertext, tag or nonce */
    size_t spots[] = {0, 100, M_SEAL_PAGE - 1, M_SEAL_PAGE + 8, M_SEAL_PAGE + 20};
    for (size_t k = 0; k < sizeof spots / sizeof spots[0]; k++) {
        memcpy(rec2, rec, sizeof rec);
        rec2[spots[k]] ^= 1;
        assert_int_equal(m_seal_open(rec2, &id, back, &found), EBADMSG);
    }
    /* an all-zero record (a hole in the store file) is rejected */
    memset(rec2, 0, sizeof rec2);
    assert_int_equal(m_seal_open(rec2, &id, back, &found), EBADMSG);
    /* a new key: old records no longer open */
    m_seal_shutdown();
    assert_int_equal(m_seal_open(rec, &id, back, &found), ENODEV);
    assert_int_equal(m_seal_init(), 0);
    assert_int_equal(m_seal_open(rec, &id, back, &found), EBADMSG);
    m_seal_shutdown();
}

/* Zap every third run of a scattered set of pages (runs of 1-3 pages) in
 * 64 pages and check that exactly those read as zero afterwards.  Sets
 * *nranges to the ranges zapped; returns the system calls it took. */
static size_t zap_check(uint8_t *mem, size_t npages, size_t *nranges)
{
    const size_t pg = 4096;
    for (size_t i = 0; i < npages; i++)
        memset(mem + i * pg, (int)(i % 251) + 1, pg);
    struct iovec iov[64];
    bool gone[64] = {0};
    size_t n = 0;
    for (size_t i = 0; i + 3 < npages && n < 64; i += 7) {
        size_t len = 1 + i % 3;
        iov[n].iov_base = mem + i * pg;
        iov[n].iov_len = len * pg;
        for (size_t k = 0; k < len; k++)
            gone[i + k] = true;
        n++;
    }
    size_t calls = m_zap_ranges(iov, n);
    for (size_t i = 0; i < npages; i++) {
        uint8_t want = gone[i] ? 0 : (uint8_t)(i % 251 + 1);
        for (size_t b = 0; b < pg; b += 512)
            if (mem[i * pg + b] != want)
                fail_msg("page %zu byte %zu: %u, want %u", i, b, mem[i * pg + b], want);
    }
    *nranges = n;
    return calls;
}

static void test_zap_ranges(void **state)
{
    (void)state;
    const size_t npages = 64;
    uint8_t *mem =
        mmap(NULL, npages * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(mem != MAP_FAILED);
    /* the vectored call where the kernel has it (this machine's has) */
    m_zap_force_ranges(false);
    size_t nranges, calls = zap_check(mem, npages, &nranges);
    assert_true(nranges > 2);
    struct utsname u;
    int major = 0, minor = 0;
    if (uname(&u) == 0 && sscanf(u.release, "%d.%d", &major, &minor) == 2 &&
        (major > 6 || (major == 6 && minor >= 13))) {
        assert_true(m_zap_vectored()); /* process_madvise(MADV_DONTNEED) on itself: 6.13 */
        assert_int_equal(calls, 1);    /* every range in one call, one TLB flush */
    } else {
        /* the vectored attempt, then a madvise per range, or a vectored call */
        assert_true(calls == 1 || calls == nranges + 1);
    }
    /* a forked child zaps its own copy, never its parent's: the pidfd
     * inherited from the parent must not be used */
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        zap_check(mem, npages, &nranges);
        _exit(0);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    for (size_t i = 0; i < npages; i++)
        memset(mem + i * 4096, 0x5a, 4096);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        zap_check(mem, npages, &nranges);
        _exit(0);
    }
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    for (size_t i = 0; i < npages * 4096; i += 512)
        if (mem[i] != 0x5a)
            fail_msg("the child's zap reached the parent at byte %zu", i);
    /* one madvise per range */
    m_zap_force_ranges(true);
    assert_int_equal(zap_check(mem, npages, &nranges), nranges);
    assert_false(m_zap_vectored());
    m_zap_force_ranges(false);
    munmap(mem, npages * 4096);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_size_parse),
        cmocka_unit_test(test_log_format),
        cmocka_unit_test(test_seal_round_trip),
        cmocka_unit_test(test_zap_ranges),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
