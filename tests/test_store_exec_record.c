/*
 * test_store_exec.c - the records that let a redis store's keys go when
 * their image ends without close (src/store/cluster.c, "Instances left
 * behind by exec and by exit without close"), against a real redis-server
 * on loopback, without exec, so that it runs under ASan and TSan too
 * (tests/test_store_exec.sh runs real exec chains under `moat run`):
 *  - a record left by "another image of this process" (this pid, this start
 *    time, another token: what an exec leaves) makes the next open remove
 *    that instance's keys, and keeps other keys; close removes the record;
 *  - a child (fork + exec) that opens and closes a store of its own does
 *    not touch its parent's record or keys;
 *  - a child that ends without close leaves its keys, and
 *    m_store_redis_sweep removes them (and its record) while a live
 *    instance's keys stay.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "store/store.h"

#if __has_include(<hiredis/hiredis.h>)

#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "store/redis.h"

#include "redis_server.h"

static struct server *srv;
static char uri[64];

static void record_path(pid_t pid, char *path, size_t size)
{
    snprintf(path, size, "/dev/shm/moat-redis-%u-%d", (unsigned)getuid(), (int)pid);
}

/* The record file of pid as text ("" if there is none). */
static void read_record(pid_t pid, char *buf, size_t size)
{
    char path[64];
    record_path(pid, path, sizeof path);
    buf[0] = '\0';
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    size_t n = fread(buf, 1, size - 1, f);
    buf[n] = '\0';
    fclose(f);
}

/* This instance's id, from its stats ("moat:{ID}:"). */
static unsigned long long instance_id(struct m_store *s)
{
    struct m_store_redis_stats st;
    assert_int_equal(m_store_redis_stats(s, &st), 0);
    unsigned long long id = 0;
    assert_int_equal(sscanf(st.prefix, "moat:{%16llx", &id), 1);
    return id;
}

static long long keys_of(unsigned long long id)
{
    redisContext *c = connect_port(srv->port);
    assert_non_null(c);
    long long n = 0;
    redisReply *r = redisCommand(c, "KEYS moat:{%016llx*", id);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    n = (long long)r->elements;
    freeReplyObject(r);
    redisFree(c);
    return n;
}

static void set_key(const char *key)
{
    redisContext *c = connect_port(srv->port);
    assert_non_null(c);
    redisReply *r = redisCommand(c, "SET %s x", key);
    assert_non_null(r);
    freeReplyObject(r);
    redisFree(c);
}

/* Run this program again, forked and exec'd (as a child under `moat run`
 * would be; and TSan allows no threads in a fork child of a threaded
 * process): it opens a store on uri, writes the instance id to the pipe,
 * and closes the store ("close") or ends without ("keep").  Its pid. */
static pid_t spawn_child(const char *mode, unsigned long long *id)
{
    int pfd[2];
    assert_int_equal(pipe(pfd), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(pfd[0]);
        char fd[16];
        snprintf(fd, sizeof fd, "%d", pfd[1]);
        execl("/proc/self/exe", "test_store_exec_record", mode, uri, fd, (char *)NULL);
        _exit(127);
    }
    close(pfd[1]);
    *id = 0;
    assert_int_equal(read(pfd[0], id, sizeof *id), (ssize_t)sizeof *id);
    close(pfd[0]);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    assert_true(*id != 0);
    return pid;
}

static int child_main(const char *mode, const char *u, int fd)
{
    struct m_store *c = NULL;
    unsigned long long id = 0;
    if (m_store_open(u, &c) == 0)
        id = instance_id(c);
    if (write(fd, &id, sizeof id) != (ssize_t)sizeof id || !id)
        return 1;
    if (strcmp(mode, "close") == 0)
        m_store_close(c);
    return 0; /* "keep": ends without close, as under `moat run` */
}

/* An exec leaves the old image's record: same pid and start time, another
 * token.  The next open removes that instance's keys, not others. */
static void test_exec_record_removes_old_image(void **state)
{
    (void)state;
    struct m_store *a = NULL;
    assert_int_equal(m_store_open(uri, &a), 0);
    char rec[4096];
    read_record(getpid(), rec, sizeof rec);
    unsigned long long start, ns, token;
    assert_int_equal(
        sscanf(rec, "moat-redis-exec start=%llu ns=%llu token=%llx", &start, &ns, &token), 3);
    unsigned long long ida = instance_id(a);
    char line[128];
    snprintf(line, sizeof line, "%016llx redis://127.0.0.1:%d/0\n", ida, srv->port);
    assert_non_null(strstr(rec, line));
    /* The old image: instance 0xdead01 with 3 pages and its liveness key,
     * and a key of someone else. */
    unsigned long long old = 0xdead01;
    for (int n = 0; n < 3; n++) {
        char key[64];
        snprintf(key, sizeof key, "moat:{%016llx}:%d", old, n);
        set_key(key);
    }
    char key[64];
    snprintf(key, sizeof key, "moat:{%016llx}:alive", old);
    set_key(key);
    set_key("moat:{00000000000a11fe}:0");
    assert_int_equal(keys_of(old), 4);
    char path[64];
    record_path(getpid(), path, sizeof path);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "moat-redis-exec start=%llu ns=%llu token=%016llx\n%016llx redis://127.0.0.1:%d/0\n",
            start, ns, token ^ 1, old, srv->port);
    fclose(f);
    /* a is still open (this image): only the file says it is an old image's */
    struct m_store *b = NULL;
    assert_int_equal(m_store_open(uri, &b), 0);
    assert_int_equal(keys_of(old), 0);
    assert_int_equal(keys_of(0xa11fe), 1);
    read_record(getpid(), rec, sizeof rec);
    assert_null(strstr(rec, "0000000000dead01"));
    snprintf(line, sizeof line, "%016llx redis://", instance_id(b));
    assert_non_null(strstr(rec, line));
    m_store_close(b);
    m_store_close(a);
    assert_int_equal(access(path, F_OK), -1); /* the last close removes it */
}

/* A fork child's store has a record of its own: the parent's stays. */
static void test_fork_child_leaves_parent(void **state)
{
    (void)state;
    struct m_store *a = NULL;
    assert_int_equal(m_store_open(uri, &a), 0);
    unsigned long long ida = instance_id(a);
    char before[4096], after[4096];
    read_record(getpid(), before, sizeof before);
    unsigned long long idc;
    pid_t pid = spawn_child("close", &idc);
    assert_int_equal(keys_of(idc), 0);
    read_record(getpid(), after, sizeof after);
    assert_string_equal(before, after);
    assert_int_equal(keys_of(ida), 1); /* its liveness key */
    char path[64];
    record_path(pid, path, sizeof path);
    assert_int_equal(access(path, F_OK), -1);
    m_store_close(a);
}

/* A child that ends without close: the sweep removes its keys and record,
 * never a live instance's. */
static void test_sweep_exited(void **state)
{
    (void)state;
    struct m_store *a = NULL;
    assert_int_equal(m_store_open(uri, &a), 0);
    unsigned long long ida = instance_id(a);
    unsigned long long idc;
    pid_t pid = spawn_child("keep", &idc);
    assert_int_equal(keys_of(idc), 1);
    char path[64];
    record_path(pid, path, sizeof path);
    assert_int_equal(access(path, F_OK), 0);
    uint64_t ninst = 0, nkeys = 0;
    assert_int_equal(m_store_redis_sweep(uri, &ninst, &nkeys), 0);
    assert_true(ninst >= 1);
    assert_true(nkeys >= 1);
    assert_int_equal(keys_of(idc), 0);
    assert_int_equal(access(path, F_OK), -1);
    assert_int_equal(keys_of(ida), 1); /* alive: untouched */
    record_path(getpid(), path, sizeof path);
    assert_int_equal(access(path, F_OK), 0);
    m_store_close(a);
    assert_int_equal(m_store_redis_sweep("file:/nope", &ninst, &nkeys), EINVAL);
}

int main(int argc, char **argv)
{
    if (argc == 4)
        return child_main(argv[1], argv[2], atoi(argv[3]));
    struct m_store *probe = NULL;
    if (m_store_open("redis://127.0.0.1:1", &probe) == EINVAL) {
        fprintf(stderr, "SKIP: this moat was built without the redis backend\n");
        return 77;
    }
    if (!have_redis_server()) {
        fprintf(stderr, "SKIP: redis-server is not installed\n");
        return 77;
    }
    if (access("/dev/shm", W_OK) != 0 || access("/proc/self/stat", R_OK) != 0) {
        fprintf(stderr, "SKIP: no writable /dev/shm or no /proc: nothing is recorded\n");
        return 77;
    }
    atexit(servers_kill_all);
    srv = server_start(NULL);
    snprintf(uri, sizeof uri, "redis://127.0.0.1:%d", srv->port);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exec_record_removes_old_image),
        cmocka_unit_test(test_fork_child_leaves_parent),
        cmocka_unit_test(test_sweep_exited),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    servers_kill_all();
    return failed ? 1 : 0;
}

#else
#include <stdio.h>
int main(void)
{
    fprintf(stderr, "SKIP: hiredis headers are missing (Debian: libhiredis-dev)\n");
    return 77;
}
#endif
