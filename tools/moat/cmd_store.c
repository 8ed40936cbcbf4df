/*
 * cmd_store.c - `moat store gc URI`: remove from a Redis server, or from
 * every primary of a Redis Cluster, the keys of moat instances that are no
 * longer alive (killed before they could clean up; their liveness key has
 * expired).
 */
#include "cli.h"

#include "common/log.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#ifdef M_STORE_HAVE_REDIS
#include "store/cluster.h"
#include "store/redis.h"
#endif

static void store_usage(FILE *f)
{
    fprintf(f, "usage: moat store gc URI\n"
               "\n"
               "Remove the keys of dead moat instances from the Redis server at URI\n"
               "(redis://[user:password@]host:port[/db]) or from every primary of the\n"
               "Redis Cluster at URI (redis+cluster://[user:password@]host:port[,...]).\n"
               "An instance is dead when its liveness key (moat:{ID}:alive, refreshed\n"
               "while it runs) has expired; live instances are never touched.\n");
}

int moat_cmd_store(int argc, char **argv)
{
    if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        store_usage(stdout);
        return MOAT_EXIT_OK;
    }
    if (argc != 3 || strcmp(argv[1], "gc") != 0) {
        if (argc >= 2 && strcmp(argv[1], "gc") != 0)
            fprintf(stderr, "moat store: unknown subcommand '%s'\n", argv[1]);
        store_usage(stderr);
        return MOAT_EXIT_USAGE;
    }
#ifdef M_STORE_HAVE_REDIS
    m_log_open(MOAT_LOG_WARN, NULL);
    uint64_t ninstances = 0, nkeys = 0;
    bool cluster = strncmp(argv[2], "redis+cluster:", 14) == 0;
    int err = cluster ? m_store_cluster_gc(argv[2], &ninstances, &nkeys)
                      : m_store_redis_gc(argv[2], &ninstances, &nkeys);
    if (err == EINVAL) {
        fprintf(stderr, "moat store gc: '%s' is not a valid redis:// or redis+cluster:// URI\n",
                argv[2]);
        return MOAT_EXIT_USAGE;
    }
    if (err) {
        fprintf(stderr, "moat store gc: %s: %s\n", argv[2], strerror(err));
        return MOAT_EXIT_RUNTIME;
    }
    printf("removed %" PRIu64 " keys of %" PRIu64 " dead instances\n", nkeys, ninstances);
    return MOAT_EXIT_OK;
#else
    fprintf(stderr, "moat store gc: this moat was built without the redis backend "
                    "(install libhiredis-dev and rebuild)\n");
    return MOAT_EXIT_RUNTIME;
#endif
}
