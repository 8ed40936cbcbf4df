/*
 * redis_server.h - real redis-server processes for moat's tests: started on
 * 127.0.0.1 at a random port in 20000-40000 (retried if taken), in a
 * temporary directory, with no persistence, as children of the test; and
 * killed at exit (register servers_kill_all with atexit, so a failing test
 * leaves no server behind).  Also: a port where nothing listens, and
 * commands through a connection of the test's own.  Include it after
 * cmocka.h: failures are cmocka assertions.
 */
#ifndef MOAT_REDIS_SERVER_H
#define MOAT_REDIS_SERVER_H

#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---------------------------------------------------------------------------
 * redis-server processes
 * ------------------------------------------------------------------------- */

#define MAX_SERVERS 40

struct server {
    pid_t pid;
    int port;
    char dir[256];
};

static struct server servers[MAX_SERVERS];
static int nservers;

static inline void server_kill(struct server *s)
{
    if (s->pid > 0) {
        kill(s->pid, SIGKILL);
        waitpid(s->pid, NULL, 0);
        s->pid = 0;
    }
    if (s->dir[0]) {
        char cmd[300];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", s->dir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", s->dir);
        s->dir[0] = '\0';
    }
}

static inline void servers_kill_all(void)
{
    for (int i = 0; i < nservers; i++)
        server_kill(&servers[i]);
}

static inline const char *redis_test_dir(void)
{
    const char *d = getenv("MOAT_TEST_TMP");
    return d && *d ? d : "/tmp";
}

static inline bool have_redis_server(void)
{
    const char *path = getenv("PATH");
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path ? path : "/usr/bin:/bin");
    char *save = NULL;
    for (char *d = strtok_r(buf, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        char p[4200];
        snprintf(p, sizeof p, "%s/redis-server", d);
        if (access(p, X_OK) == 0)
            return true;
    }
    return false;
}

static inline redisContext *connect_port(int port)
{
    struct timeval tv = {.tv_sec = 1};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    if (c && c->err) {
        redisFree(c);
        return NULL;
    }
    return c;
}

/* Fork and exec redis-server on 127.0.0.1:port in dir, no persistence,
 * with extra arguments (NULL-terminated); its output goes to /dev/null, its
 * log to dir/redis.log.  The child's pid. */
static inline pid_t server_spawn(int port, const char *dir, const char *const *extra)
{
    char portstr[16];
    snprintf(portstr, sizeof portstr, "%d", port);
    const char *argv[40] = {
        "redis-server", "--port", portstr,       "--bind", "127.0.0.1", "--save", "",
        "--appendonly", "no",     "--daemonize", "no",     "--dir",     dir,      "--logfile",
        "redis.log"};
    int argc = 15;
    for (int i = 0; extra && extra[i] && argc < 39; i++)
        argv[argc++] = extra[i];
    argv[argc] = NULL;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open("/dev/null", O_WRONLY);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execvp("redis-server", (char *const *)argv);
        _exit(127);
    }
    return pid;
}

/* Start redis-server with extra arguments (NULL-terminated); wait until it
 * answers PING (an error reply such as NOAUTH counts: it is up). */
static inline struct server *server_start(const char *const *extra)
{
    assert_true(nservers < MAX_SERVERS);
    struct server *s = &servers[nservers++];
    snprintf(s->dir, sizeof s->dir, "%s/moat-redis-%d-XXXXXX", redis_test_dir(), (int)getpid());
    assert_non_null(mkdtemp(s->dir));
    for (int attempt = 0; attempt < 20; attempt++) {
        uint32_t r = 0;
        assert_int_equal(getrandom(&r, sizeof r, 0), (ssize_t)sizeof r);
        s->port = 20000 + (int)(r % 20000);
        pid_t pid = server_spawn(s->port, s->dir, extra);
        s->pid = pid;
        for (int i = 0; i < 500; i++) {
            int st;
            if (waitpid(pid, &st, WNOHANG) == pid) {
                s->pid = 0; /* exited: most likely the port was taken */
                break;
            }
            redisContext *c = connect_port(s->port);
            if (c) {
                redisReply *rep = redisCommand(c, "PING");
                bool up = rep != NULL;
                if (rep)
                    freeReplyObject(rep);
                redisFree(c);
                if (up)
                    return s;
            }
            usleep(10000);
        }
        if (s->pid) {
            kill(s->pid, SIGKILL);
            waitpid(s->pid, NULL, 0);
            s->pid = 0;
        }
    }
    fail_msg("could not start redis-server (see %s/redis.log)", s->dir);
    return NULL;
}

/* A port where nothing listens: bound, then released. */
static inline int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t len = sizeof a;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static inline long long server_int(int port, const char *auth, const char *fmt, ...)
{
    redisContext *c = connect_port(port);
    assert_non_null(c);
    if (auth) {
        redisReply *a = redisCommand(c, "AUTH %s", auth);
        assert_non_null(a);
        freeReplyObject(a);
    }
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    long long v = r->integer;
    freeReplyObject(r);
    redisFree(c);
    return v;
}

/* A string reply of a command to port (NULL on failure); free() it. */
static inline char *server_str(int port, const char *fmt, ...)
{
    redisContext *c = connect_port(port);
    if (!c)
        return NULL;
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    char *s = NULL;
    if (r && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS ||
              r->type == REDIS_REPLY_ERROR))
        s = strdup(r->str);
    if (r)
        freeReplyObject(r);
    redisFree(c);
    return s;
}

/* Keys on the server matching pattern (SCAN, like the store's clean-up, but
 * through a connection of its own). */
static inline long long server_count(int port, const char *pattern)
{
    redisContext *c = connect_port(port);
    assert_non_null(c);
    long long n = 0;
    char cursor[32] = "0";
    do {
        redisReply *r = redisCommand(c, "SCAN %s MATCH %s COUNT 1000", cursor, pattern);
        assert_non_null(r);
        assert_int_equal(r->type, REDIS_REPLY_ARRAY);
        snprintf(cursor, sizeof cursor, "%s", r->element[0]->str);
        n += (long long)r->element[1]->elements;
        freeReplyObject(r);
    } while (strcmp(cursor, "0") != 0);
    redisFree(c);
    return n;
}

#endif
