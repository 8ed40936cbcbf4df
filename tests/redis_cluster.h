/*
 * redis_cluster.h - a real Redis Cluster for moat's tests: six redis-server
 * processes (redis_server.h) on loopback in cluster mode, joined by
 * `redis-cli --cluster create ... --cluster-replicas 1 --cluster-yes`, so
 * three primaries with one replica each.  cluster-node-timeout is 1000 ms so
 * a killed primary fails over in a few seconds.  Nodes can be killed and
 * restarted with the same port and directory (nodes.conf), so a restarted
 * former primary rejoins as a replica.  Include after cmocka.h.
 */
#ifndef MOAT_REDIS_CLUSTER_H
#define MOAT_REDIS_CLUSTER_H

#include "redis_server.h"

#include <time.h>

#define CLUSTER_NODES 6

static struct server *cluster[CLUSTER_NODES];

static inline bool have_redis_cli(void)
{
    return system("redis-cli --version >/dev/null 2>&1") == 0;
}

static const char *const cluster_args[] = {"--cluster-enabled",
                                           "yes",
                                           "--cluster-config-file",
                                           "nodes.conf",
                                           "--cluster-node-timeout",
                                           "1000",
                                           "--cluster-replica-validity-factor",
                                           "0",
                                           "--repl-diskless-sync-delay",
                                           "0",
                                           NULL};

static inline double cluster_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static inline bool node_state_ok(int port)
{
    char *info = server_str(port, "CLUSTER INFO");
    bool ok = info && strstr(info, "cluster_state:ok");
    free(info);
    return ok;
}

/* A primary, or a replica whose link to its primary is up (synced). */
static inline bool node_synced(int port)
{
    char *info = server_str(port, "INFO replication");
    bool ok = info && (strstr(info, "role:master") || strstr(info, "master_link_status:up"));
    free(info);
    return ok;
}

/* cluster_wait_nodes - true once ok(port) holds for every live node in the
 * same sweep; false after `seconds`. */
static inline bool cluster_wait_nodes(double seconds, bool (*ok)(int port))
{
    double end = cluster_now() + seconds;
    while (cluster_now() < end) {
        bool all = true;
        for (int i = 0; i < CLUSTER_NODES && all; i++)
            if (cluster[i]->pid > 0 && !ok(cluster[i]->port))
                all = false;
        if (all)
            return true;
        usleep(100000);
    }
    return false;
}

/* The node says cluster_state:ok and, if a replica, has synced. */
static inline bool node_ok(int port)
{
    return node_state_ok(port) && node_synced(port);
}

/* node_ok, and the node flags no other as failing (a replica that was
 * stopped and continued is only seen live again after a while): what
 * writes with replicas=N check before they are accepted. */
static inline bool node_healthy(int port)
{
    if (!node_ok(port))
        return false;
    char *nodes = server_str(port, "CLUSTER NODES");
    bool ok = nodes && !strstr(nodes, "fail");
    free(nodes);
    return ok;
}

/* The node's CLUSTER NODES lists CLUSTER_NODES / 2 primaries and as many
 * replicas, none failing, in handshake or disconnected; and, if it is a
 * primary, it has its replica attached (INFO replication).  Right after
 * `redis-cli --cluster create` a node can already say cluster_state:ok while
 * its view of the replicas is still forming: moat's store counts live
 * replicas from one node's CLUSTER NODES, so writes with replicas=N would be
 * refused until it sees them. */
static inline bool node_sees_all(int port)
{
    char *nodes = server_str(port, "CLUSTER NODES");
    if (!nodes)
        return false;
    int primaries = 0, replicas = 0;
    bool ok = true;
    for (char *line = nodes; ok && line && *line;) {
        char *eol = strchr(line, '\n');
        if (eol)
            *eol = '\0';
        if (strstr(line, "fail") || strstr(line, "handshake") || strstr(line, "noaddr") ||
            strstr(line, "disconnected"))
            ok = false;
        else if (strstr(line, "master"))
            primaries++;
        else if (strstr(line, "slave"))
            replicas++;
        line = eol ? eol + 1 : NULL;
    }
    free(nodes);
    if (!ok || primaries != CLUSTER_NODES / 2 || replicas != CLUSTER_NODES / 2)
        return false;
    char *info = server_str(port, "INFO replication");
    ok = info && (!strstr(info, "role:master") || strstr(info, "connected_slaves:1"));
    free(info);
    return ok;
}

/* Up to `seconds`: every live node node_ok / node_healthy / node_sees_all. */
static inline bool cluster_wait_ok(double seconds)
{
    return cluster_wait_nodes(seconds, node_ok);
}
static inline bool cluster_wait_healthy(double seconds)
{
    return cluster_wait_nodes(seconds, node_healthy);
}
static inline bool cluster_wait_topology(double seconds)
{
    return cluster_wait_nodes(seconds, node_sees_all);
}

/* Start CLUSTER_NODES servers and make them a cluster with redis-cli.  On
 * a loaded machine `redis-cli --cluster create` now and then gives up
 * (nodes slow to join): its output is shown and the cluster is made again
 * from new servers, up to three times. */
static inline void cluster_start(void)
{
    char log[300];
    snprintf(log, sizeof log, "%s/moat-cluster-create-%d.log", redis_test_dir(), (int)getpid());
    for (int attempt = 1;; attempt++) {
        for (int i = 0; i < CLUSTER_NODES; i++)
            cluster[i] = server_start(cluster_args);
        char cmd[1024];
        int off = snprintf(cmd, sizeof cmd, "redis-cli --cluster create");
        for (int i = 0; i < CLUSTER_NODES; i++)
            off += snprintf(cmd + off, sizeof cmd - (size_t)off, " 127.0.0.1:%d", cluster[i]->port);
        snprintf(cmd + off, sizeof cmd - (size_t)off,
                 " --cluster-replicas 1 --cluster-yes >%s 2>&1", log);
        int rc = system(cmd);
        if (rc == 0 && cluster_wait_ok(30) && cluster_wait_topology(30))
            break;
        fprintf(stderr, "making the cluster failed (attempt %d, redis-cli status %#x):\n", attempt,
                rc);
        snprintf(cmd, sizeof cmd, "cat %s >&2", log);
        if (system(cmd) != 0)
            fprintf(stderr, "(no output from redis-cli)\n");
        for (int i = 0; i < CLUSTER_NODES; i++)
            server_kill(cluster[i]);
        assert_true(attempt < 3);
    }
    unlink(log);
}

static inline const char *node_role(int port, char *buf, size_t len)
{
    char *info = server_str(port, "INFO replication");
    const char *role = info && strstr(info, "role:master") ? "master" : "slave";
    snprintf(buf, len, "%s", info ? role : "down");
    free(info);
    return buf;
}

static inline bool node_is_primary(int port)
{
    char b[16];
    return strcmp(node_role(port, b, sizeof b), "master") == 0;
}

/* The cluster node index serving hash slot hs (CLUSTER SLOTS from any live
 * node), or -1. */
static inline int cluster_owner(unsigned hs)
{
    for (int i = 0; i < CLUSTER_NODES; i++) {
        if (cluster[i]->pid <= 0)
            continue;
        redisContext *c = connect_port(cluster[i]->port);
        if (!c)
            continue;
        redisReply *r = redisCommand(c, "CLUSTER SLOTS");
        int owner = -1;
        for (size_t k = 0; r && r->type == REDIS_REPLY_ARRAY && k < r->elements; k++) {
            redisReply *e = r->element[k];
            if ((unsigned)e->element[0]->integer <= hs && hs <= (unsigned)e->element[1]->integer) {
                int port = (int)e->element[2]->element[1]->integer;
                for (int j = 0; j < CLUSTER_NODES; j++)
                    if (cluster[j]->port == port)
                        owner = j;
            }
        }
        if (r)
            freeReplyObject(r);
        redisFree(c);
        return owner;
    }
    return -1;
}

/* The node's id (CLUSTER MYID) into buf. */
static inline void node_id(int port, char *buf, size_t len)
{
    char *id = server_str(port, "CLUSTER MYID");
    assert_non_null(id);
    snprintf(buf, len, "%s", id);
    free(id);
}

/* Kill a node, keeping its directory (and nodes.conf) for a restart. */
static inline void node_kill(struct server *s)
{
    if (s->pid > 0) {
        kill(s->pid, SIGKILL);
        waitpid(s->pid, NULL, 0);
        s->pid = 0;
    }
}

/* Start a killed node again on its port and directory. */
static inline void node_restart(struct server *s)
{
    pid_t pid = server_spawn(s->port, s->dir, cluster_args);
    s->pid = pid;
    for (int i = 0; i < 500; i++) {
        redisContext *c = connect_port(s->port);
        if (c) {
            redisFree(c);
            return;
        }
        usleep(10000);
    }
    fail_msg("could not restart redis-server on port %d", s->port);
}

/* Wait until some other node has taken over the slots of a killed primary. */
static inline bool cluster_wait_failover(unsigned hs, int dead, double seconds)
{
    double end = cluster_now() + seconds;
    while (cluster_now() < end) {
        int o = cluster_owner(hs);
        if (o >= 0 && o != dead && node_state_ok(cluster[o]->port))
            return true;
        usleep(100000);
    }
    return false;
}

/* "redis+cluster://127.0.0.1:P1,127.0.0.1:P2[opts]" with two seeds. */
static inline void cluster_uri(char *buf, size_t len, const char *opts)
{
    snprintf(buf, len, "redis+cluster://127.0.0.1:%d,127.0.0.1:%d%s", cluster[0]->port,
             cluster[1]->port, opts ? opts : "");
}

/* Keys matching pattern over all live primaries. */
static inline long long cluster_count(const char *pattern)
{
    long long n = 0;
    for (int i = 0; i < CLUSTER_NODES; i++)
        if (cluster[i]->pid > 0 && node_is_primary(cluster[i]->port))
            n += server_count(cluster[i]->port, pattern);
    return n;
}

#endif
