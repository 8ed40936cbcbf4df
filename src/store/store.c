/*
 * store.c - the backend-independent part of the store: URI dispatch and the
 * submit-and-wait helper.
 *
 * A URI is "scheme:rest" where scheme follows RFC 3986 (a letter, then
 * letters, digits, '+', '-', '.'); anything else is a path for the file
 * backend, and NULL or "" asks the file backend for a fresh temporary file.
 * Backends are listed in one table; a scheme moat knows but was built
 * without gets a message that says so, instead of a bare "unknown".
 */
#include "store/store.h"
#include "store/cluster.h"
#ifdef M_STORE_HAVE_REDIS
#include "store/redis.h"
#endif

#include "common/log.h"

#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static const struct m_store_ops *const store_backends[] = {
    &m_store_file_ops,
#ifdef M_STORE_HAVE_REDIS
    &m_store_redis_ops,
    &m_store_cluster_ops,
#endif
};

/* Schemes that exist in moat but need an optional dependency. */
#ifdef M_STORE_HAVE_REDIS
static const char *const store_optional_schemes[] = {""}; /* none: all are built */
#else
static const char *const store_optional_schemes[] = {"redis", "redis+cluster"};
#endif

/* Length of the scheme at the start of uri, or 0 if uri does not start with
 * "scheme:". */
static size_t store_scheme_len(const char *uri)
{
    if (!isalpha((unsigned char)uri[0]))
        return 0;
    size_t n = 1;
    while (isalnum((unsigned char)uri[n]) || uri[n] == '+' || uri[n] == '-' || uri[n] == '.')
        n++;
    return uri[n] == ':' ? n : 0;
}

static int store_unknown(const char *uri, size_t scheme_len)
{
    char known[256];
    size_t off = 0;
    known[0] = '\0';
    for (size_t i = 0; i < sizeof store_backends / sizeof store_backends[0]; i++) {
        int w = snprintf(known + off, sizeof known - off, "%s%s:", i ? ", " : "",
                         store_backends[i]->scheme);
        if (w < 0 || (size_t)w >= sizeof known - off)
            break;
        off += (size_t)w;
    }
    for (size_t i = 0; i < sizeof store_optional_schemes / sizeof store_optional_schemes[0]; i++) {
        if (strlen(store_optional_schemes[i]) == scheme_len &&
            strncasecmp(uri, store_optional_schemes[i], scheme_len) == 0) {
            m_error("store",
                    "store URI \"%s\": this moat was built without the %s backend "
                    "(install libhiredis-dev and rebuild); known schemes: %s or a plain path",
                    uri, store_optional_schemes[i], known);
            return EINVAL;
        }
    }
    m_error("store", "store URI \"%s\": unknown scheme \"%.*s\"; known schemes: %s or a plain path",
            uri, (int)scheme_len, uri, known);
    return EINVAL;
}

int m_store_open(const char *uri, struct m_store **out)
{
    if (!out)
        return EINVAL;
    *out = NULL;
    if (!uri || !*uri)
        return m_store_file_ops.open(NULL, out);
    size_t n = store_scheme_len(uri);
    if (n == 0)
        return m_store_file_ops.open(uri, out);
    for (size_t i = 0; i < sizeof store_backends / sizeof store_backends[0]; i++) {
        const struct m_store_ops *ops = store_backends[i];
        if (strlen(ops->scheme) != n || strncasecmp(uri, ops->scheme, n) != 0)
            continue;
        const char *rest = uri + n + 1;
        /* "file:///abs/path" is the same as "file:/abs/path". */
        if (ops == &m_store_file_ops && rest[0] == '/' && rest[1] == '/')
            rest += 2;
        return ops->open(rest, out);
    }
    return store_unknown(uri, n);
}

/* Whether the query part of uri names option `name`. */
static bool store_uri_has_opt(const char *uri, const char *name)
{
    const char *q = strchr(uri, '?');
    size_t len = strlen(name);
    while (q) {
        q++;
        if (strncmp(q, name, len) == 0 && q[len] == '=')
            return true;
        q = strchr(q, '&');
    }
    return false;
}

int m_store_open_opts(const char *uri, unsigned replicas, unsigned timeout_ms, struct m_store **out)
{
    if (!out)
        return EINVAL;
    *out = NULL;
    if (!replicas && !timeout_ms)
        return m_store_open(uri, out);
    size_t n = uri ? store_scheme_len(uri) : 0;
    bool cluster = n == 13 && strncasecmp(uri, "redis+cluster", 13) == 0;
    bool single = n == 5 && strncasecmp(uri, "redis", 5) == 0;
    if (replicas && !cluster && !single) {
        m_error("store",
                "store replicas=%u (MOAT_STORE_REPLICAS) needs a redis:// or redis+cluster:// "
                "store; the store is \"%s\"",
                replicas, uri ? uri : "(a temporary file)");
        return EINVAL;
    }
    if (!cluster && !single)
        return m_store_open(uri, out); /* a file store has no network timeout */
    char extra[96];
    size_t off = 0;
    extra[0] = '\0';
    const char *topt = "retry_timeout";
    if (replicas && !store_uri_has_opt(uri, "replicas"))
        off += (size_t)snprintf(extra + off, sizeof extra - off, "&replicas=%u", replicas);
    if (timeout_ms && !store_uri_has_opt(uri, topt))
        off += (size_t)snprintf(extra + off, sizeof extra - off, "&%s=%u", topt, timeout_ms);
    if (!off)
        return m_store_open(uri, out);
    size_t len = strlen(uri) + off + 1;
    char *full = malloc(len);
    if (!full)
        return ENOMEM;
    snprintf(full, len, "%s%c%s", uri, strchr(uri, '?') ? '&' : '?', extra + 1);
    int rc = m_store_open(full, out);
    explicit_bzero(full, len); /* it may hold a password */
    free(full);
    return rc;
}

void m_store_close(struct m_store *s)
{
    if (s)
        s->ops->close(s);
}

void m_store_sweep_exited(const char *uri)
{
#ifdef M_STORE_HAVE_REDIS
    uint64_t ninstances = 0, nkeys = 0;
    if (uri && strstr(uri, "://") && strncmp(uri, "redis", 5) == 0 &&
        m_store_redis_sweep(uri, &ninstances, &nkeys) == 0 && ninstances)
        m_info("store", "removed %llu keys of %llu instances of exited processes",
               (unsigned long long)nkeys, (unsigned long long)ninstances);
#else
    (void)uri;
#endif
}

#ifndef M_STORE_HAVE_REDIS
/* Built without hiredis there is no redis store, so no store has network
 * counters; the engine and the preload ask all the same. */
int m_store_cluster_stats(struct m_store *s, struct m_store_cluster_stats *out,
                          struct m_store_cluster_node_stats *nodes, size_t max, size_t *nnodes)
{
    (void)s;
    (void)out;
    (void)nodes;
    (void)max;
    if (nnodes)
        *nnodes = 0;
    return EINVAL;
}
#endif

/* ---------------------------------------------------------------------------
 * Submit and wait
 * ------------------------------------------------------------------------- */

/* Completions are collected this many at a time; the I/Os themselves carry
 * their results, so the pointers are only counted. */
#define STORE_RW_REAP 64

int m_store_rw(struct m_store_queue *q, struct m_store_io *const *ios, size_t n)
{
    struct m_store_io *done[STORE_RW_REAP];
    size_t next = 0, inflight = 0;
    int err = 0;

    while (next < n || inflight > 0) {
        size_t room = q->depth ? q->depth - inflight : n - next;
        if (!err && next < n && room > 0) {
            size_t chunk = n - next < room ? n - next : room;
            int rc = m_store_submit(q, ios + next, chunk);
            if (rc == 0) {
                next += chunk;
                inflight += chunk;
                continue;
            }
            if (rc != EAGAIN || inflight == 0)
                err = rc;
        }
        if (inflight == 0)
            break;
        size_t ndone = 0;
        int rc = m_store_reap(q, done, STORE_RW_REAP, 1, &ndone);
        if (rc) {
            /* The ring is unusable; the I/Os in flight cannot be accounted. */
            m_error("store", "waiting for %zu I/Os on %s failed: %s", inflight,
                    m_store_describe(q->store), strerror(rc));
            for (size_t i = next; i < n; i++)
                ios[i]->result = rc;
            return rc;
        }
        inflight -= ndone;
    }
    if (err) {
        for (size_t i = next; i < n; i++)
            ios[i]->result = err;
    }
    return err;
}
