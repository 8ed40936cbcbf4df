/*
 * store.h - where sealed pages live while they are evicted.
 *
 * One interface, many backends (a vtable): "file:PATH" (the default, io_uring
 * on a file opened O_DIRECT) and later "redis://..." and
 * "redis+cluster://...".  The store knows nothing of pages, keys or
 * encryption: it keeps fixed-size records (M_STORE_RECORD bytes, already
 * sealed by the caller) in numbered slots.
 *
 * I/O is batched and asynchronous: a caller owns a queue (one per thread;
 * queues are not shared), submits many reads and writes at once and reaps
 * their completions.  Slot allocation is thread-safe and lock-light.
 *
 * Errors are positive errno values.  A failed write (ENOSPC, EIO) leaves the
 * caller's page untouched: the caller keeps it resident and reports.
 */
#ifndef M_STORE_STORE_H
#define M_STORE_STORE_H

#include <stddef.h>
#include <stdint.h>

/* A record: 4096 bytes of ciphertext followed by a 32-byte trailer (nonce,
 * tag and the low bits of the sealed version; see seal.h).  Every store
 * gives back the whole record it was given.  The file store keeps the
 * ciphertext in the file, one 4096-byte block a slot, so every read and
 * write is one aligned block, and the trailers in memory (32 bytes an
 * evicted page, 1/128 of the store; docs/store.md). */
#define M_STORE_DATA    4096u
#define M_STORE_TRAILER 32u
#define M_STORE_RECORD  (M_STORE_DATA + M_STORE_TRAILER)
#define M_STORE_ALIGN   4096u /* buffers passed to the store are aligned to this */

enum m_store_op { M_STORE_READ = 1, M_STORE_WRITE = 2 };

/* One I/O.  The caller fills op, slot and buf (M_STORE_RECORD bytes, aligned
 * to M_STORE_ALIGN) and user; the store sets result at completion: 0, or a
 * positive errno (EIO, ENOSPC, ...). */
struct m_store_io {
    int op;
    int result;
    uint64_t slot;
    void *buf;
    void *user;
};

struct m_store;
struct m_store_queue;

struct m_store_stats {
    uint64_t slots_used; /* allocated slots */
    uint64_t slots_high; /* highest slot index ever used + 1 (file length / record) */
    uint64_t reads, writes;
    uint64_t bytes_read, bytes_written;
    uint64_t errors;
    uint64_t meta_bytes; /* memory the store keeps for its records (file: the trailers) */
};

/* Backend operations; the file backend is one implementation. */
struct m_store_ops {
    const char *scheme; /* "file" */
    int (*open)(const char *uri_rest, struct m_store **out);
    void (*close)(struct m_store *s);
    int (*slot_alloc)(struct m_store *s, uint64_t *slot);
    void (*slot_free)(struct m_store *s, uint64_t slot);
    int (*queue_new)(struct m_store *s, unsigned depth, struct m_store_queue **out);
    void (*queue_free)(struct m_store_queue *q);
    int (*submit)(struct m_store_queue *q, struct m_store_io *const *ios, size_t n);
    int (*reap)(struct m_store_queue *q, struct m_store_io **done, size_t max, size_t min,
                size_t *ndone);
    void (*stats)(struct m_store *s, struct m_store_stats *out);
    const char *(*describe)(struct m_store *s); /* e.g. the file path */
};

/* Every backend's struct m_store begins with this. */
struct m_store {
    const struct m_store_ops *ops;
};
struct m_store_queue {
    struct m_store *store;
    unsigned depth; /* set by the backend's queue_new: most I/Os in flight (0 = no limit) */
};

/* m_store_open - parse the URI ("file:PATH", a bare path, or NULL for a new
 * file in $TMPDIR or /tmp) and open the backend.  The file backend creates
 * the file (mode 0600), and removes it on close if it created it.
 * File options after '?', joined by '&' (see docs/store.md):
 *   direct=0|1  O_DIRECT (default 1; falls back to buffered if refused)
 *   max=SIZE    cap on the file size: slot_alloc fails with ENOSPC beyond it
 *   keep=0|1    keep the file at close (default 0)
 *   punch=0|1   punch holes for freed slots (default 1)
 *   slack=SIZE  freed bytes that may keep their blocks before holes are
 *               punched, in batches (default 64M; 0 = at every free)
 *   prefill=SIZE zero-fill ahead of the high mark so first writes are
 *               overwrites (default 1M, O_DIRECT on disk only; 0 = off)
 * A PATH naming an existing directory gets a new unique file inside it.
 * Errors: EINVAL unknown scheme or malformed URI (logged with the URI);
 * errno values from open(2), io_uring set-up (ENOSYS, EPERM). */
int m_store_open(const char *uri, struct m_store **out);
/* m_store_open_opts - m_store_open with the options moat_init takes outside
 * the URI (struct moat_options, MOAT_STORE_REPLICAS, MOAT_STORE_TIMEOUT):
 * replicas > 0 needs a redis:// or redis+cluster:// store (EINVAL
 * otherwise, logged) and becomes its replicas=N; timeout_ms > 0 becomes
 * its retry_timeout=MS, and is ignored by the file store.  An option the URI names
 * itself wins. */
int m_store_open_opts(const char *uri, unsigned replicas, unsigned timeout_ms,
                      struct m_store **out);
void m_store_close(struct m_store *s);
/* m_store_sweep_exited - for a redis:// or redis+cluster:// uri, remove the
 * keys of this user's ended processes that never closed their store (see
 * m_store_redis_sweep; `moat run` calls it when its program has exited);
 * nothing for other stores.  Best effort: failures are logged. */
void m_store_sweep_exited(const char *uri);

/* m_store_slot_alloc - a free slot (lowest freed slots are reused first so
 * the file stays compact).  ENOSPC if the backend has a size limit. */
static inline int m_store_slot_alloc(struct m_store *s, uint64_t *slot)
{
    return s->ops->slot_alloc(s, slot);
}
/* m_store_slot_free - the slot's record is no longer needed; the file backend
 * punches a hole so the file stays sparse (lazily, see slack=).  The slot
 * must have no I/O in flight. */
static inline void m_store_slot_free(struct m_store *s, uint64_t slot)
{
    s->ops->slot_free(s, slot);
}

/* m_store_queue_new - a submission/completion queue for one thread, with up to
 * `depth` I/Os in flight. */
static inline int m_store_queue_new(struct m_store *s, unsigned depth, struct m_store_queue **out)
{
    return s->ops->queue_new(s, depth, out);
}
static inline void m_store_queue_free(struct m_store_queue *q)
{
    if (q)
        q->store->ops->queue_free(q);
}

/* m_store_submit - queue n I/Os and start them (one system call for the
 * batch).  EAGAIN if more than the queue depth would be in flight. */
static inline int m_store_submit(struct m_store_queue *q, struct m_store_io *const *ios, size_t n)
{
    return q->store->ops->submit(q, ios, n);
}

/* m_store_reap - collect completed I/Os into done[0..*ndone), waiting until
 * at least `min` have completed (0 = don't wait). */
static inline int m_store_reap(struct m_store_queue *q, struct m_store_io **done, size_t max,
                               size_t min, size_t *ndone)
{
    return q->store->ops->reap(q, done, max, min, ndone);
}

/* m_store_rw - convenience: submit n I/Os and wait for all of them; n may
 * exceed the queue depth (the batch is cut into chunks).  The queue must have
 * no other I/O in flight.  Returns 0 if the batch was carried out (each
 * io->result says how it went), or an errno if it could not be submitted; then
 * every I/O that was not carried out has result set to that errno. */
int m_store_rw(struct m_store_queue *q, struct m_store_io *const *ios, size_t n);

static inline void m_store_stats(struct m_store *s, struct m_store_stats *out)
{
    *out = (struct m_store_stats){0};
    s->ops->stats(s, out);
}
static inline const char *m_store_describe(struct m_store *s)
{
    return s->ops->describe(s);
}

/* Backends. */
extern const struct m_store_ops m_store_file_ops;

#endif
