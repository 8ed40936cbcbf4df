/*
 * file.c - the file backend: sealed records in one sparse file, read and
 * written through io_uring.
 *
 * Layout.  Slot n is the 4096 bytes at offset n * 4096: a record's
 * ciphertext, one aligned file-system block (on the usual 4 KiB-block file
 * systems), so each record is one direct I/O that spans one block.  Its
 * 32-byte trailer (nonce and tag) stays in memory, in a table indexed by
 * slot.  The earlier layout put whole 4608-byte records in the file: every
 * read then spanned two blocks, every write was unaligned, and a device
 * with 4 KiB logical blocks could not take them direct (docs/store.md has
 * the numbers).  There is no header and no index: the caller remembers
 * which slot holds which page, and the key that makes the records readable
 * dies with the process, so a file left by an earlier process is worthless
 * and is truncated when it is opened again.
 *
 * Trailers.  A table of M_STORE_TRAILER bytes a slot, in chunks of
 * FILE_TR_CHUNK slots mapped as the high mark reaches them (untouched pages
 * of a chunk cost nothing), found through a directory of fixed size, so
 * neither ever moves and I/O completions read them without the lock.  A
 * write copies the record's trailer into the table when it is submitted, a
 * read copies it back into the caller's record when it completes: the
 * caller never has a read and a write of one slot in flight together, and
 * a failed write leaves a slot that is freed, never read.  Nothing in the
 * file can now pass for a trailer, so an older record put back in the file
 * fails authentication as tampering would (seal.h; a redis store, which
 * keeps whole records, still tells a replay).
 *
 * O_DIRECT.  The point of evicting a page is that it leaves RAM; a buffered
 * write would only move it into the page cache.  So the file is opened
 * O_DIRECT unless "?direct=0" is given.  Records are 4096 bytes at 4096-byte
 * offsets, aligned for devices with logical blocks up to 4 KiB; a probe
 * write at open finds file systems or devices that want more, and those,
 * and file systems that refuse O_DIRECT outright, fall back to buffered I/O
 * with one log line.
 *
 * Queues.  Each queue is one io_uring with the file registered as a fixed
 * file.  submit() prepares one SQE per I/O and issues them with one
 * io_uring_submit(); reap() waits with io_uring_wait_cqe_nr() and takes the
 * completions with io_uring_peek_batch_cqe().  A short transfer or -EAGAIN
 * resubmits the remainder of that I/O from reap(), so a caller only ever
 * sees whole records.  A read that reaches end of file before the record is
 * complete is EIO: that slot was never written.
 *
 * Slot allocation.  A bitmap (one bit per slot, set = allocated) with a
 * summary bitmap (one bit per bitmap word, set = word full) and a hint (no
 * free slot lies below it), under one small mutex.  When no slot below the
 * high mark is free, allocation is the increment of the high mark; otherwise
 * it takes the lowest free slot, found in the summary at 4096 slots a word.
 * Lowest-first reuse keeps the live records at the front of the file.  A
 * min-heap of freed slots would allocate in O(log n) too, but costs 64 bits
 * per freed slot instead of about one bit per slot, and cannot tell a double
 * free, which here is caught and logged.
 *
 * Holes.  Freed slots give their disk space back with FALLOC_FL_PUNCH_HOLE,
 * so the file stays sparse, but lazily: a write into blocks that are still
 * allocated is several times cheaper than one that allocates, and slots are
 * reused lowest first, soon.  Up to `slack` bytes (64 MiB by default) of
 * freed records keep their blocks; beyond that the highest are punched in
 * batches, a run of adjacent slots with one call, outside the lock (see
 * "Hole punching" below for the numbers and the neighbour rule).  A file
 * system without hole punching (EOPNOTSUPP) is logged once and freed records
 * then keep their space until their slots are reused.
 *
 * Errors.  An I/O's result is 0 or a positive errno (ENOSPC, EIO, ...); the
 * first failure of each kind is logged, the rest are counted in stats.  A
 * write that meets ENOSPC first punches every freed slot and is retried once.
 * After ENOSPC the store stays usable: writes into space freed later succeed.
 */
#include "store/store.h"

#include "common/log.h"
#include "common/size.h"

#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>

#ifndef TMPFS_MAGIC
#define TMPFS_MAGIC 0x01021994UL
#endif
#ifndef RAMFS_MAGIC
#define RAMFS_MAGIC 0x858458f6UL
#endif

/* Bytes of a record in the file, and the file's stride. */
#define FILE_REC ((uint64_t)M_STORE_DATA)
/* The trailer table: chunks of 2^15 slots (1 MiB), a directory of 2^21
 * chunks; 2^36 slots, 256 TiB of records, is the most a store can hold. */
#define FILE_TR_SHIFT   15u
#define FILE_TR_CHUNK   (1ull << FILE_TR_SHIFT)
#define FILE_TR_DIR     (1ull << 21)
#define FILE_SLOT_LIMIT (FILE_TR_DIR << FILE_TR_SHIFT)
_Static_assert(FILE_SLOT_LIMIT < (uint64_t)INT64_MAX / FILE_REC, "slots fit in off_t");
/* -EAGAIN/-EINTR completions retried per I/O before it is failed with EIO. */
#define FILE_MAX_RETRIES 1000u
/* CQEs taken from the ring per peek. */
#define FILE_REAP_BATCH 64u

/* file_spin's default and largest limit (MOAT_STORE_SPIN_US) */
#define FILE_SPIN_US_DEFAULT 150
#define FILE_SPIN_US_MAX     100000

struct file_store {
    struct m_store base;
    int fd;
    char *path;
    bool direct;            /* O_DIRECT in effect */
    uint64_t spin_ns;       /* file_spin's limit (MOAT_STORE_SPIN_US) */
    bool remove_at_close;   /* we created the file and keep=0 */
    bool truncate_at_close; /* an existing file we took over and keep=0 */
    uint64_t max_slots;     /* 0 = no cap (max=) */
    uint64_t blksize;       /* hole granularity: the file system's block size */
    _Atomic bool punch;     /* hole punching requested and not refused */
    _Atomic unsigned nqueues;
    _Atomic uint64_t logged_errnos; /* bit e set once errno e < 64 was logged */

    uint64_t slack_slots; /* dirty slots allowed before punching (slack=) */
    void *zeros;          /* zeros_nbytes of untouched anonymous memory */
    size_t zeros_nbytes;

    pthread_mutex_t lock;  /* guards the fields down to `zeroed`, and writes of next, used */
    uint64_t *map;         /* bit per slot: allocated, or reserved for a punch */
    uint64_t *sum;         /* bit per map word: word is full */
    uint64_t *dirty;       /* bit per slot: free but its blocks not yet punched */
    size_t nwords;         /* map and dirty words (capacity / 64); sum has nwords / 64 */
    uint64_t hint;         /* no free slot below this */
    uint64_t nreserved;    /* slots set in map only while a punch runs */
    uint64_t ndirty;       /* bits set in dirty */
    uint64_t dirty_top;    /* no dirty slot at or above this */
    bool punching;         /* a thread is in file_punch_dirty() */
    uint64_t prefill;      /* bytes zero-filled ahead of the high mark; 0 = off */
    uint64_t zeroed;       /* bytes below this were zero-filled (prefill) */
    _Atomic uint64_t next; /* high mark: slots >= next were never allocated */
    _Atomic uint64_t used; /* allocated slots */

    _Atomic(uint8_t *) *trdir; /* FILE_TR_DIR chunk pointers (see "Trailers") */
    _Atomic uint64_t trchunks; /* chunks mapped */

    _Atomic uint64_t reads, writes, bytes_read, bytes_written, errors, punches;
    _Atomic uint64_t punch_gen; /* bumps after each batch of holes punched */
};

/* One I/O in flight: the caller's io and how far it has got. */
struct file_req {
    struct m_store_io *io;
    uint32_t done;      /* bytes transferred so far */
    uint32_t retries;   /* EAGAIN/EINTR completions seen */
    bool punched;       /* ENOSPC seen once: space was sought and the write retried */
    uint64_t punch_gen; /* fs->punch_gen when the I/O was last started */
};

struct file_queue {
    struct m_store_queue base;
    struct io_uring ring;
    bool fixed;            /* fd registered: SQEs use index 0 */
    struct file_req *reqs; /* base.depth of them */
    unsigned *free_reqs;   /* stack of free indexes into reqs */
    unsigned nfree;
};

static inline struct file_store *file_of(struct m_store *s)
{
    return (struct file_store *)s;
}
static inline struct file_queue *queue_of(struct m_store_queue *q)
{
    return (struct file_queue *)q;
}

/* Log the first failure of each errno; later ones only count. */
static void file_log_error_once(struct file_store *fs, const char *what, uint64_t slot, int err)
{
    uint64_t bit = err > 0 && err < 64 ? 1ull << err : 1ull;
    if (atomic_fetch_or_explicit(&fs->logged_errnos, bit, memory_order_relaxed) & bit)
        return;
    m_warn("store", "%s of slot %llu in %s failed: %s (further %s errors are counted, not logged)",
           what, (unsigned long long)slot, fs->path, strerror(err), strerror(err));
}

/* ---------------------------------------------------------------------------
 * Options
 * ------------------------------------------------------------------------- */

struct file_opts {
    bool direct, keep, punch;
    uint64_t max_nbytes;   /* 0 = none */
    uint64_t slack_nbytes; /* freed bytes that may keep their blocks */
    uint64_t prefill;      /* bytes zero-filled ahead */
};

#define FILE_SLACK_DEFAULT   (64ull << 20)
#define FILE_PREFILL_DEFAULT (1ull << 20)
#define FILE_PREFILL_MAX     (64ull << 20)

/* ---------------------------------------------------------------------------
 * Trailers
 * ------------------------------------------------------------------------- */

/* The trailer of slot n; NULL if no slot of its chunk was ever allocated
 * (a slot below the high mark always has one). */
static inline uint8_t *file_tr(const struct file_store *fs, uint64_t n)
{
    uint8_t *chunk = atomic_load_explicit(&fs->trdir[n >> FILE_TR_SHIFT], memory_order_acquire);
    return chunk ? chunk + (n & (FILE_TR_CHUNK - 1)) * M_STORE_TRAILER : NULL;
}

/* Map the chunk that holds slot n's trailer, if not yet.  Under fs->lock. */
static int file_tr_grow(struct file_store *fs, uint64_t n)
{
    _Atomic(uint8_t *) *e = &fs->trdir[n >> FILE_TR_SHIFT];
    if (atomic_load_explicit(e, memory_order_relaxed))
        return 0;
    void *c = mmap(NULL, FILE_TR_CHUNK * M_STORE_TRAILER, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (c == MAP_FAILED) {
        m_error("store", "%s: cannot map memory for the trailers of slot %llu on: %s", fs->path,
                (unsigned long long)n, strerror(errno));
        return ENOMEM;
    }
    atomic_store_explicit(e, (uint8_t *)c, memory_order_release);
    atomic_fetch_add_explicit(&fs->trchunks, 1, memory_order_relaxed);
    return 0;
}

static int file_parse_bool(const char *uri, const char *key, const char *val, bool *out)
{
    if (strcmp(val, "1") == 0 || strcmp(val, "yes") == 0 || strcmp(val, "true") == 0) {
        *out = true;
        return 0;
    }
    if (strcmp(val, "0") == 0 || strcmp(val, "no") == 0 || strcmp(val, "false") == 0) {
        *out = false;
        return 0;
    }
    m_error("store", "store URI \"%s\": option %s=\"%s\" must be 0 or 1", uri, key, val);
    return EINVAL;
}

/* Parse "k=v&k=v" (modified in place). */
static int file_parse_opts(const char *uri, char *opts, struct file_opts *o)
{
    char *save = NULL;
    for (char *kv = strtok_r(opts, "&", &save); kv; kv = strtok_r(NULL, "&", &save)) {
        char *val = strchr(kv, '=');
        if (!val) {
            m_error("store", "store URI \"%s\": option \"%s\" needs a value (key=value)", uri, kv);
            return EINVAL;
        }
        *val++ = '\0';
        int rc;
        if (strcmp(kv, "direct") == 0) {
            rc = file_parse_bool(uri, kv, val, &o->direct);
        } else if (strcmp(kv, "keep") == 0) {
            rc = file_parse_bool(uri, kv, val, &o->keep);
        } else if (strcmp(kv, "punch") == 0) {
            rc = file_parse_bool(uri, kv, val, &o->punch);
        } else if (strcmp(kv, "prefill") == 0) {
            size_t nbytes = 0;
            rc = m_size_parse(val, &nbytes);
            if (rc || nbytes % 4096 || nbytes > FILE_PREFILL_MAX) {
                m_error("store",
                        "store URI \"%s\": prefill=\"%s\" must be a multiple of 4K up to 64M "
                        "(0 = off)",
                        uri, val);
                rc = EINVAL;
            }
            o->prefill = nbytes;
        } else if (strcmp(kv, "slack") == 0) {
            size_t nbytes = 0;
            rc = m_size_parse(val, &nbytes);
            if (rc)
                m_error("store", "store URI \"%s\": slack=\"%s\" is not a size (e.g. 0, 16M)", uri,
                        val);
            o->slack_nbytes = nbytes;
        } else if (strcmp(kv, "max") == 0) {
            size_t nbytes = 0;
            rc = m_size_parse(val, &nbytes);
            if (rc) {
                m_error("store", "store URI \"%s\": max=\"%s\" is not a size (e.g. 4096, 64M, 2G)",
                        uri, val);
            } else if (nbytes < FILE_REC) {
                m_error("store", "store URI \"%s\": max=%s is smaller than one record (%u bytes)",
                        uri, val, M_STORE_RECORD);
                rc = EINVAL;
            }
            o->max_nbytes = nbytes;
        } else {
            m_error("store",
                    "store URI \"%s\": unknown option \"%s\" (known: direct, max, keep, punch, "
                    "slack, prefill)",
                    uri, kv);
            rc = EINVAL;
        }
        if (rc)
            return EINVAL;
    }
    return 0;
}

/* ---------------------------------------------------------------------------
 * Opening the file
 * ------------------------------------------------------------------------- */

/* A new unique file "moat-<pid>-XXXXXX" in dir. */
static int file_create_unique(const char *dir, char **path, int *fd)
{
    size_t len = strlen(dir) + 64;
    char *p = malloc(len);
    if (!p)
        return ENOMEM;
    const char *sep = dir[0] && dir[strlen(dir) - 1] == '/' ? "" : "/";
    snprintf(p, len, "%s%smoat-%d-XXXXXX", dir, sep, (int)getpid());
    int f = mkostemp(p, O_CLOEXEC);
    if (f < 0) {
        int err = errno;
        m_error("store", "cannot create a store file in %s: %s", dir, strerror(err));
        free(p);
        return err;
    }
    *path = p;
    *fd = f;
    return 0;
}

/* Open PATH: a directory gets a unique file inside it; a new file is ours
 * to remove; an existing regular file is taken over and truncated. */
static int file_open_path(struct file_store *fs, const char *path, bool keep)
{
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        int rc = file_create_unique(path, &fs->path, &fs->fd);
        fs->remove_at_close = !keep;
        return rc;
    }
    fs->path = strdup(path);
    if (!fs->path)
        return ENOMEM;
    fs->fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fs->fd >= 0) {
        fs->remove_at_close = !keep;
        return 0;
    }
    if (errno == EEXIST)
        fs->fd = open(path, O_RDWR | O_CLOEXEC);
    if (fs->fd < 0) {
        int err = errno;
        m_error("store", "cannot open store file %s: %s", path, strerror(err));
        return err;
    }
    if (fstat(fs->fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        m_error("store", "store file %s exists and is not a regular file", path);
        return EINVAL;
    }
    if (st.st_size > 0) {
        if (ftruncate(fs->fd, 0) != 0) {
            int err = errno;
            m_error("store", "cannot truncate existing store file %s: %s", path, strerror(err));
            return err;
        }
        m_info("store",
               "store file %s existed with %lld bytes from an earlier process (whose key is "
               "gone): truncated",
               path, (long long)st.st_size);
    }
    fs->truncate_at_close = !keep;
    return 0;
}

static void file_set_buffered(struct file_store *fs)
{
    int fl = fcntl(fs->fd, F_GETFL);
    if (fl >= 0)
        (void)fcntl(fs->fd, F_SETFL, fl & ~O_DIRECT);
    fs->direct = false;
}

/* Switch to O_DIRECT and prove that record-aligned I/O works with it. */
static void file_setup_direct(struct file_store *fs)
{
    int fl = fcntl(fs->fd, F_GETFL);
    if (fl < 0 || fcntl(fs->fd, F_SETFL, fl | O_DIRECT) != 0) {
        m_warn("store",
               "%s: the file system refuses O_DIRECT (%s); using buffered I/O, so evicted pages "
               "may stay in the page cache",
               fs->path, strerror(errno));
        return;
    }
    fs->direct = true;
    /* A file system that states its direct-I/O alignment (statx, Linux 6.1)
     * spares the probe write, whose allocation and truncation are a third of
     * a millisecond at every start of every process. */
    struct statx sx;
    if (statx(fs->fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &sx) == 0 &&
        (sx.stx_mask & STATX_DIOALIGN) && sx.stx_dio_offset_align != 0) {
        if (sx.stx_dio_offset_align <= FILE_REC && sx.stx_dio_mem_align <= M_STORE_ALIGN)
            return;
        file_set_buffered(fs);
        m_warn("store",
               "%s: O_DIRECT needs %u-byte alignment here, and records lie on 4096-byte "
               "boundaries; using buffered I/O, so evicted pages may stay in the page cache",
               fs->path, sx.stx_dio_offset_align);
        return;
    }
    void *buf = NULL;
    if (posix_memalign(&buf, M_STORE_ALIGN, M_STORE_DATA) != 0)
        return; /* keep O_DIRECT; real I/O will tell */
    memset(buf, 0, M_STORE_DATA);
    /* A record's I/O: one block at a 4096-byte offset. */
    ssize_t w = pwrite(fs->fd, buf, M_STORE_DATA, (off_t)FILE_REC);
    int err = w < 0 ? errno : 0;
    free(buf);
    if (w < 0 && err == EINVAL) {
        file_set_buffered(fs);
        m_warn("store",
               "%s: O_DIRECT I/O at 4096-byte alignment is refused (%s); using buffered I/O, so "
               "evicted pages may stay in the page cache",
               fs->path, strerror(err));
    } else if (w < 0) {
        m_debug("store", "%s: O_DIRECT probe write failed: %s", fs->path, strerror(err));
    }
    if (ftruncate(fs->fd, 0) != 0)
        m_warn("store", "%s: cannot truncate after the O_DIRECT probe: %s", fs->path,
               strerror(errno));
}

static void file_destroy(struct file_store *fs)
{
    if (fs->fd >= 0) {
        if (fs->remove_at_close)
            (void)unlink(fs->path);
        else if (fs->truncate_at_close && ftruncate(fs->fd, 0) != 0)
            m_warn("store", "cannot truncate store file %s at close: %s", fs->path,
                   strerror(errno));
        close(fs->fd);
    }
    pthread_mutex_destroy(&fs->lock);
    if (fs->trdir) {
        /* chunks are mapped in slot order, from the first */
        uint64_t nchunks = atomic_load(&fs->trchunks);
        for (uint64_t i = 0; i < nchunks; i++)
            munmap(atomic_load(&fs->trdir[i]), FILE_TR_CHUNK * M_STORE_TRAILER);
        munmap(fs->trdir, FILE_TR_DIR * sizeof *fs->trdir);
    }
    free(fs->map);
    free(fs->sum);
    free(fs->dirty);
    if (fs->zeros)
        munmap(fs->zeros, fs->zeros_nbytes);
    free(fs->path);
    free(fs);
}

static int file_open(const char *rest, struct m_store **out)
{
    const char *uri = rest ? rest : "(temporary file)";
    struct file_opts o = {.direct = true,
                          .punch = true,
                          .slack_nbytes = FILE_SLACK_DEFAULT,
                          .prefill = FILE_PREFILL_DEFAULT};
    char *path = NULL;
    if (rest) {
        path = strdup(rest);
        if (!path)
            return ENOMEM;
        char *q = strchr(path, '?');
        if (q) {
            *q++ = '\0';
            int rc = file_parse_opts(uri, q, &o);
            if (rc) {
                free(path);
                return rc;
            }
        }
        if (!path[0]) {
            m_error("store",
                    "store URI \"file:%s\": the path is empty (give file:PATH, a directory, or "
                    "no URI for a temporary file)",
                    rest);
            free(path);
            return EINVAL;
        }
    }

    unsigned long spin_us = FILE_SPIN_US_DEFAULT;
    const char *spin = getenv("MOAT_STORE_SPIN_US");
    if (spin && *spin) {
        char *end;
        spin_us = strtoul(spin, &end, 10);
        if (*end || spin[0] == '-' || spin_us > FILE_SPIN_US_MAX) {
            m_error("store",
                    "MOAT_STORE_SPIN_US='%s' must be a whole number of microseconds from 0 to %d",
                    spin, FILE_SPIN_US_MAX);
            free(path);
            return EINVAL;
        }
    }
    struct file_store *fs = calloc(1, sizeof *fs);
    if (!fs) {
        free(path);
        return ENOMEM;
    }
    fs->base.ops = &m_store_file_ops;
    fs->fd = -1;
    pthread_mutex_init(&fs->lock, NULL);
    atomic_init(&fs->punch, o.punch);
    fs->max_slots = o.max_nbytes / FILE_REC;
    fs->slack_slots = o.slack_nbytes / FILE_REC;
    fs->spin_ns = spin_us * 1000u;

    int rc;
    void *trdir = mmap(NULL, FILE_TR_DIR * sizeof *fs->trdir, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (trdir == MAP_FAILED) {
        rc = errno;
        m_error("store", "cannot map the store's trailer directory: %s", strerror(rc));
        free(path);
        goto fail;
    }
    fs->trdir = trdir;
    if (path) {
        rc = file_open_path(fs, path, o.keep);
    } else {
        const char *dir = getenv("TMPDIR");
        rc = file_create_unique(dir && *dir ? dir : "/tmp", &fs->path, &fs->fd);
        /* An anonymous store: unlinked at once, so nothing is left behind
         * even if the process is killed; the descriptor keeps it alive. */
        fs->remove_at_close = rc == 0 && unlink(fs->path) != 0;
    }
    free(path);
    if (rc)
        goto fail;

    /* The file system decides what a hole can free. */
    struct stat st;
    fs->blksize = 4096;
    if (fstat(fs->fd, &st) == 0 && st.st_blksize >= 512 && st.st_blksize <= (1 << 20) &&
        (st.st_blksize & (st.st_blksize - 1)) == 0)
        fs->blksize = (uint64_t)st.st_blksize;
    struct statfs sfs;
    bool ramfs = fstatfs(fs->fd, &sfs) == 0 && ((unsigned long)sfs.f_type == TMPFS_MAGIC ||
                                                (unsigned long)sfs.f_type == RAMFS_MAGIC);
    if (ramfs)
        m_warn("store",
               "store file %s is on a RAM file system: evicted pages still use RAM; put the "
               "store on a disk (file:/var/tmp/...)",
               fs->path);

    if (o.direct)
        file_setup_direct(fs);
    /* Prefill pays only where direct writes that allocate are slow; on a RAM
     * file system it would only take RAM. */
    if (fs->direct && !ramfs && o.prefill) {
        void *z = mmap(NULL, o.prefill, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (z != MAP_FAILED) {
            fs->zeros = z;
            fs->zeros_nbytes = o.prefill;
            fs->prefill = o.prefill;
        }
    }

    /* Fail at open, not at the first eviction, if io_uring is unavailable. */
    struct io_uring probe;
    int ret = io_uring_queue_init(2, &probe, 0);
    if (ret < 0) {
        rc = -ret;
        m_error("store",
                "the file store needs io_uring, which is not available here (%s); check "
                "/proc/sys/kernel/io_uring_disabled and any seccomp filter",
                strerror(rc));
        goto fail;
    }
    io_uring_queue_exit(&probe);

    m_info("store", "store file %s: %s I/O, %llu-byte blocks%s%s", fs->path,
           fs->direct ? "O_DIRECT" : "buffered", (unsigned long long)fs->blksize,
           fs->max_slots ? ", size cap" : "", o.keep ? ", kept at close" : "");
    *out = &fs->base;
    return 0;
fail:
    file_destroy(fs);
    return rc;
}

static void file_close(struct m_store *s)
{
    struct file_store *fs = file_of(s);
    m_debug("store", "closing %s: %llu slots high, %llu punches", fs->path,
            (unsigned long long)atomic_load(&fs->next),
            (unsigned long long)atomic_load(&fs->punches));
    unsigned nq = atomic_load(&fs->nqueues);
    if (nq)
        m_error("store", "store %s closed with %u queue(s) still open: their memory is lost",
                fs->path, nq);
    file_destroy(fs);
}

/* ---------------------------------------------------------------------------
 * Slot allocation
 * ------------------------------------------------------------------------- */

static inline bool file_slot_is_used(const struct file_store *fs, uint64_t slot)
{
    return slot / 64 < fs->nwords && (fs->map[slot / 64] >> (slot % 64) & 1);
}

/* Mark a slot allocated (or reserved for a punch) or free, keeping the
 * summary exact: file_find_free() trusts it.  Under fs->lock. */
static inline void file_map_set(struct file_store *fs, uint64_t n)
{
    fs->map[n / 64] |= 1ull << (n % 64);
    if (fs->map[n / 64] == ~0ull)
        fs->sum[n / 4096] |= 1ull << (n / 64 % 64);
}

static inline void file_map_clear(struct file_store *fs, uint64_t n)
{
    fs->map[n / 64] &= ~(1ull << (n % 64));
    fs->sum[n / 4096] &= ~(1ull << (n / 64 % 64));
}

/* Make room for slot `slot` in the bitmaps.  Under fs->lock. */
static int file_map_grow(struct file_store *fs, uint64_t slot)
{
    if (slot / 64 < fs->nwords)
        return 0;
    size_t nwords = fs->nwords ? fs->nwords : 64;
    while (nwords <= slot / 64)
        nwords *= 2;
    size_t nsum_old = (fs->nwords + 63) / 64, nsum = (nwords + 63) / 64;
    uint64_t *map = realloc(fs->map, nwords * sizeof *map);
    if (!map)
        return ENOMEM;
    fs->map = map;
    uint64_t *dirty = realloc(fs->dirty, nwords * sizeof *dirty);
    if (!dirty)
        return ENOMEM;
    fs->dirty = dirty;
    uint64_t *sum = realloc(fs->sum, nsum * sizeof *sum);
    if (!sum)
        return ENOMEM;
    fs->sum = sum;
    memset(map + fs->nwords, 0, (nwords - fs->nwords) * sizeof *map);
    memset(dirty + fs->nwords, 0, (nwords - fs->nwords) * sizeof *dirty);
    memset(sum + nsum_old, 0, (nsum - nsum_old) * sizeof *sum);
    fs->nwords = nwords;
    return 0;
}

/* The lowest free slot at or above fs->hint.  Under fs->lock; only called
 * when a free slot below fs->next exists, so the scan ends before nwords. */
static uint64_t file_find_free(struct file_store *fs)
{
    uint64_t w = fs->hint / 64;
    uint64_t bits = ~fs->map[w] & (~0ull << (fs->hint % 64));
    if (bits)
        return w * 64 + (uint64_t)__builtin_ctzll(bits);
    /* The summary finds the next word with a free bit, 4096 slots a step. */
    uint64_t sw = (w + 1) / 64;
    uint64_t sbits = ~fs->sum[sw] & (~0ull << ((w + 1) % 64));
    while (!sbits)
        sbits = ~fs->sum[++sw];
    w = sw * 64 + (uint64_t)__builtin_ctzll(sbits);
    return w * 64 + (uint64_t)__builtin_ctzll(~fs->map[w]);
}

/*
 * Prefill.  On ext4 (and XFS) a direct write that is not aligned to the
 * file-system block and allocates blocks is serialized against all other
 * direct I/O on the file, because the file system must zero the rest of each
 * new block; most records are such writes.  Measured here (virtio disk,
 * ext4): ~85 us a record for a first write, ~11 us for an overwrite of
 * allocated blocks, whatever the queue depth; fallocate() does not help, its
 * unwritten extents take the same path.  So the high mark is preceded by
 * zeros written in aligned 1 MiB pieces (cheap, from untouched anonymous
 * memory that is all the zero page), and first writes become overwrites:
 * 9-25 us a record including the zeroing.  It runs under fs->lock, before the
 * slots it covers can be handed out, so it never meets a record write; it
 * starts at the first byte of the new slot, so it never touches an older
 * record.  A failure only turns prefill off (ENOSPC: skips that piece).
 */
static void file_prefill(struct file_store *fs, uint64_t n)
{
    uint64_t start = n * FILE_REC;
    uint64_t end = (start + fs->prefill + fs->prefill - 1) / fs->prefill * fs->prefill;
    if (fs->max_slots && end > fs->max_slots * FILE_REC)
        end = fs->max_slots * FILE_REC;
    for (uint64_t off = start; off < end;) {
        size_t len = (size_t)(end - off < fs->prefill ? end - off : fs->prefill);
        ssize_t w = pwrite(fs->fd, fs->zeros, len, (off_t)off);
        if (w <= 0) {
            int err = w < 0 ? errno : EIO;
            if (err == EINTR)
                continue;
            if (err != ENOSPC) {
                m_warn("store", "%s: zero-filling ahead failed (%s); first writes will be slower",
                       fs->path, strerror(err));
                fs->prefill = 0; /* fs->zeros is unmapped at close */
            }
            break;
        }
        off += (uint64_t)w;
    }
    fs->zeroed = end;
}

static int file_slot_alloc(struct m_store *s, uint64_t *slot)
{
    struct file_store *fs = file_of(s);
    int rc = 0;
    pthread_mutex_lock(&fs->lock);
    uint64_t next = atomic_load_explicit(&fs->next, memory_order_relaxed);
    uint64_t used = atomic_load_explicit(&fs->used, memory_order_relaxed);
    uint64_t n;
    if (used + fs->nreserved < next) {
        n = file_find_free(fs);
    } else {
        if ((fs->max_slots && next >= fs->max_slots) || next >= FILE_SLOT_LIMIT) {
            rc = ENOSPC;
            goto out;
        }
        rc = file_map_grow(fs, next);
        if (!rc)
            rc = file_tr_grow(fs, next);
        if (rc)
            goto out;
        n = next;
        if (fs->prefill && (n + 1) * FILE_REC > fs->zeroed)
            file_prefill(fs, n);
        atomic_store_explicit(&fs->next, next + 1, memory_order_relaxed);
    }
    file_map_set(fs, n);
    if (fs->dirty[n / 64] & 1ull << (n % 64)) {
        /* Its blocks are still there: the write will be a cheap overwrite. */
        fs->dirty[n / 64] &= ~(1ull << (n % 64));
        fs->ndirty--;
    }
    fs->hint = n + 1;
    atomic_store_explicit(&fs->used, used + 1, memory_order_relaxed);
    *slot = n;
out:
    pthread_mutex_unlock(&fs->lock);
    return rc;
}

/* ---------------------------------------------------------------------------
 * Hole punching
 *
 * Freed slots are "dirty" (free, blocks still allocated) until punched.
 * Writing into a dirty slot overwrites allocated blocks, which on ext4 with
 * O_DIRECT costs ~11 us a record against ~85 us for a record in fresh blocks
 * (an unaligned direct write that allocates is serialized), and a punch
 * costs 20-100 us.  Since slots are reused lowest first, a slot freed now is
 * often allocated again soon.  So up to `slack` bytes of freed records keep
 * their blocks; past that the highest dirty slots (the last to be reused)
 * are punched in batches down to half the slack, runs of adjacent slots with
 * one fallocate each.  slack=0 punches at every free.  A write that fails
 * with ENOSPC punches every dirty slot and is retried once.
 *
 * The punch itself runs without fs->lock: the slots it covers are reserved
 * (marked allocated) so that nobody writes into them meanwhile.  A block
 * shared with a neighbouring record is punched only if that neighbour is
 * free, and the neighbour is then reserved too.
 * ------------------------------------------------------------------------- */

#define FILE_PUNCH_BATCH  64u /* dirty slots taken per lock round */
#define FILE_PUNCH_ROUNDS 16u /* rounds per call, so frees by others cannot starve it */

/* Are all slots overlapping [lo, hi) free?  Under fs->lock. */
static bool file_range_free(const struct file_store *fs, uint64_t lo, uint64_t hi)
{
    for (uint64_t n = lo / FILE_REC; n * FILE_REC < hi; n++)
        if (file_slot_is_used(fs, n))
            return false;
    return true;
}

struct file_punch_run {
    uint64_t first, last; /* slots reserved */
    uint64_t lo, hi;      /* bytes punched */
};

/* Take up to FILE_PUNCH_BATCH of the highest dirty slots, as runs of
 * adjacent slots, and reserve what each run's punch covers.  Under fs->lock. */
static size_t file_punch_collect(struct file_store *fs, struct file_punch_run *runs)
{
    uint64_t b = fs->blksize;
    uint64_t next = atomic_load_explicit(&fs->next, memory_order_relaxed);
    size_t nruns = 0, taken = 0;
    uint64_t w = (fs->dirty_top + 63) / 64;
    while (w-- > 0 && taken < FILE_PUNCH_BATCH) {
        while (fs->dirty[w] && taken < FILE_PUNCH_BATCH) {
            uint64_t n = w * 64 + 63 - (uint64_t)__builtin_clzll(fs->dirty[w]);
            fs->dirty[w] &= ~(1ull << (n % 64));
            fs->ndirty--;
            taken++;
            /* Slots come in descending order: extend the current run down. */
            if (nruns && runs[nruns - 1].first == n + 1) {
                runs[nruns - 1].first = n;
                continue;
            }
            runs[nruns++] = (struct file_punch_run){.first = n, .last = n};
        }
        if (taken == FILE_PUNCH_BATCH)
            fs->dirty_top = w * 64 + 64; /* bits above were taken; below may remain */
    }
    if (fs->ndirty == 0)
        fs->dirty_top = 0;
    for (size_t i = 0; i < nruns; i++) {
        struct file_punch_run *r = &runs[i];
        uint64_t start = r->first * FILE_REC, end = (r->last + 1) * FILE_REC;
        uint64_t lo = start / b * b, hi = (end + b - 1) / b * b;
        if (lo < start && !file_range_free(fs, lo, start))
            lo += b;
        /* Slots at or past the high mark may be allocated and written at
         * any moment, reserved or not: their block stays. */
        if (hi > end && ((hi - 1) / FILE_REC >= next || !file_range_free(fs, end, hi)))
            hi -= b;
        r->lo = lo;
        r->hi = hi;
        /* Reserve the run and the free neighbours whose shared block goes. */
        if (hi > lo) {
            r->first = lo / FILE_REC < r->first ? lo / FILE_REC : r->first;
            uint64_t last = (hi - 1) / FILE_REC;
            r->last = last > r->last ? last : r->last;
        }
        for (uint64_t n = r->first; n <= r->last; n++)
            file_map_set(fs, n);
        fs->nreserved += r->last + 1 - r->first;
    }
    return nruns;
}

/* Punch dirty slots until at most `target` remain or `rounds` batches are
 * done.  Called and returns with fs->lock held; drops it around the system
 * calls.  One thread punches at a time. */
static void file_punch_dirty(struct file_store *fs, uint64_t target, uint64_t rounds)
{
    if (fs->punching)
        return;
    fs->punching = true;
    struct file_punch_run runs[FILE_PUNCH_BATCH];
    for (uint64_t round = 0; round < rounds && fs->ndirty > target; round++) {
        size_t nruns = file_punch_collect(fs, runs);
        pthread_mutex_unlock(&fs->lock);
        int err = 0;
        for (size_t i = 0; i < nruns && !err; i++) {
            if (runs[i].hi <= runs[i].lo)
                continue;
            if (fallocate(fs->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)runs[i].lo,
                          (off_t)(runs[i].hi - runs[i].lo)) != 0)
                err = errno;
        }
        atomic_fetch_add_explicit(&fs->punches, nruns, memory_order_relaxed);
        atomic_fetch_add_explicit(&fs->punch_gen, 1, memory_order_release);
        pthread_mutex_lock(&fs->lock);
        for (size_t i = 0; i < nruns; i++) {
            for (uint64_t n = runs[i].first; n <= runs[i].last; n++)
                file_map_clear(fs, n);
            fs->nreserved -= runs[i].last + 1 - runs[i].first;
            if (runs[i].first < fs->hint)
                fs->hint = runs[i].first;
        }
        if (err == EOPNOTSUPP || err == ENOSYS) {
            m_warn("store",
                   "%s: the file system cannot punch holes (%s); freed records keep their disk "
                   "space until their slots are reused",
                   fs->path, strerror(err));
            atomic_store(&fs->punch, false);
            memset(fs->dirty, 0, fs->nwords * sizeof *fs->dirty);
            fs->ndirty = 0;
            fs->dirty_top = 0;
        } else if (err) {
            file_log_error_once(fs, "hole punch", runs[0].first, err);
        }
    }
    fs->punching = false;
}

static void file_slot_free(struct m_store *s, uint64_t slot)
{
    struct file_store *fs = file_of(s);
    pthread_mutex_lock(&fs->lock);
    if (slot >= atomic_load_explicit(&fs->next, memory_order_relaxed) ||
        !file_slot_is_used(fs, slot)) {
        pthread_mutex_unlock(&fs->lock);
        m_error("store", "%s: slot %llu freed but not allocated (double free?)", fs->path,
                (unsigned long long)slot);
        return;
    }
    file_map_clear(fs, slot);
    /* nothing of the record is left to read: its blocks go now or later,
     * its trailer now */
    memset(file_tr(fs, slot), 0, M_STORE_TRAILER);
    if (slot < fs->hint)
        fs->hint = slot;
    atomic_store_explicit(&fs->used, atomic_load_explicit(&fs->used, memory_order_relaxed) - 1,
                          memory_order_relaxed);
    if (atomic_load_explicit(&fs->punch, memory_order_relaxed)) {
        fs->dirty[slot / 64] |= 1ull << (slot % 64);
        fs->ndirty++;
        if (slot + 1 > fs->dirty_top)
            fs->dirty_top = slot + 1;
        if (fs->ndirty > fs->slack_slots)
            file_punch_dirty(fs, fs->slack_slots / 2, FILE_PUNCH_ROUNDS);
    }
    pthread_mutex_unlock(&fs->lock);
}

/* The file system is full: give back all the space freed slots still hold.
 * False if there was none to give. */
static bool file_punch_all(struct file_store *fs)
{
    pthread_mutex_lock(&fs->lock);
    bool had = fs->ndirty > 0;
    if (had)
        file_punch_dirty(fs, 0, UINT64_MAX);
    pthread_mutex_unlock(&fs->lock);
    return had;
}

/* ---------------------------------------------------------------------------
 * Queues
 * ------------------------------------------------------------------------- */

static int file_queue_new(struct m_store *s, unsigned depth, struct m_store_queue **out)
{
    struct file_store *fs = file_of(s);
    *out = NULL;
    if (depth == 0 || depth > 32768)
        return EINVAL;
    struct file_queue *q = calloc(1, sizeof *q);
    if (!q)
        return ENOMEM;
    q->reqs = calloc(depth, sizeof *q->reqs);
    q->free_reqs = calloc(depth, sizeof *q->free_reqs);
    if (!q->reqs || !q->free_reqs) {
        free(q->reqs);
        free(q->free_reqs);
        free(q);
        return ENOMEM;
    }
    /* Completions are reaped by the submitting thread; cooperative task
     * running (5.19+) saves an interrupt per completion.  Older kernels
     * refuse the flag: try again without it. */
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    p.flags = IORING_SETUP_COOP_TASKRUN;
    int ret = io_uring_queue_init_params(depth, &q->ring, &p);
    if (ret == -EINVAL) {
        memset(&p, 0, sizeof p);
        ret = io_uring_queue_init_params(depth, &q->ring, &p);
    }
    if (ret < 0) {
        m_error("store", "cannot set up an io_uring of depth %u for %s: %s", depth, fs->path,
                strerror(-ret));
        free(q->reqs);
        free(q->free_reqs);
        free(q);
        return -ret;
    }
    q->fixed = io_uring_register_files(&q->ring, &fs->fd, 1) == 0;
    q->base.store = s;
    q->base.depth = depth;
    for (unsigned i = 0; i < depth; i++)
        q->free_reqs[i] = depth - 1 - i;
    q->nfree = depth;
    atomic_fetch_add(&fs->nqueues, 1);
    *out = &q->base;
    return 0;
}

static void file_queue_free(struct m_store_queue *bq)
{
    struct file_queue *q = queue_of(bq);
    struct file_store *fs = file_of(bq->store);
    if (q->nfree != bq->depth)
        m_error("store", "queue on %s freed with %u I/Os in flight", fs->path,
                bq->depth - q->nfree);
    /* Unregistering waits for the ring to drop its file reference; the
     * ring's own teardown is deferred, and until it ran the file would keep
     * its mount busy and its blocks allocated after close. */
    if (q->fixed)
        (void)io_uring_unregister_files(&q->ring);
    io_uring_queue_exit(&q->ring);
    free(q->reqs);
    free(q->free_reqs);
    free(q);
    atomic_fetch_sub(&fs->nqueues, 1);
}

/* Prepare the SQE for the rest of r's transfer. */
static void file_prep(struct file_queue *q, struct file_req *r)
{
    struct file_store *fs = file_of(q->base.store);
    struct io_uring_sqe *sqe = io_uring_get_sqe(&q->ring);
    if (!sqe) {
        /* Unreachable: the SQ ring has at least depth entries and at most
         * depth I/Os are in flight; flush and take the freed entry. */
        io_uring_submit(&q->ring);
        sqe = io_uring_get_sqe(&q->ring);
    }
    struct m_store_io *io = r->io;
    char *buf = (char *)io->buf + r->done;
    unsigned len = M_STORE_DATA - r->done;
    uint64_t off = io->slot * FILE_REC + r->done;
    int fd = q->fixed ? 0 : fs->fd;
    if (io->op == M_STORE_READ)
        io_uring_prep_read(sqe, fd, buf, len, off);
    else
        io_uring_prep_write(sqe, fd, buf, len, off);
    if (q->fixed)
        sqe->flags |= IOSQE_FIXED_FILE;
    io_uring_sqe_set_data(sqe, r);
    r->punch_gen = atomic_load_explicit(&fs->punch_gen, memory_order_acquire);
}

/* Push prepared SQEs to the kernel.  SQEs it refuses stay in the SQ ring and
 * reap() pushes them again: transient refusals pass, and a lasting failure
 * surfaces there, where the I/Os in flight can be accounted. */
static int file_flush(struct file_queue *q)
{
    int ret = io_uring_submit(&q->ring);
    if (ret >= 0 || ret == -EAGAIN || ret == -EBUSY || ret == -EINTR)
        return 0;
    return -ret;
}

static int file_submit(struct m_store_queue *bq, struct m_store_io *const *ios, size_t n)
{
    struct file_queue *q = queue_of(bq);
    struct file_store *fs = file_of(bq->store);
    if (n == 0)
        return 0;
    if (n > q->nfree)
        return EAGAIN;
    for (size_t i = 0; i < n; i++) {
        const struct m_store_io *io = ios[i];
        const char *why = NULL;
        if (!io)
            why = "is NULL";
        else if (io->op != M_STORE_READ && io->op != M_STORE_WRITE)
            why = "has an unknown op";
        else if (!io->buf || (uintptr_t)io->buf % M_STORE_ALIGN)
            why = "has a buffer not aligned to M_STORE_ALIGN";
        else if (io->slot >= FILE_SLOT_LIMIT)
            why = "has a slot out of range";
        else if (io->op == M_STORE_WRITE &&
                 io->slot >= atomic_load_explicit(&fs->next, memory_order_acquire))
            why = "writes a slot that was never allocated";
        if (why) {
            m_error("store", "submit to %s: I/O %zu of %zu %s; nothing submitted", fs->path, i, n,
                    why);
            return EINVAL;
        }
    }
    for (size_t i = 0; i < n; i++) {
        struct file_req *r = &q->reqs[q->free_reqs[--q->nfree]];
        r->io = ios[i];
        r->done = 0;
        r->retries = 0;
        r->punched = false;
        r->io->result = 0;
        if (r->io->op == M_STORE_WRITE)
            memcpy(file_tr(fs, r->io->slot), (const char *)r->io->buf + M_STORE_DATA,
                   M_STORE_TRAILER);
        file_prep(q, r);
    }
    (void)file_flush(q);
    return 0;
}

/* Account a completion.  Returns true if r's I/O is finished, false if the
 * remainder was resubmitted. */
static bool file_complete(struct file_queue *q, struct file_req *r, int res)
{
    struct file_store *fs = file_of(q->base.store);
    struct m_store_io *io = r->io;
    int err = 0;
    if (res == -EAGAIN || res == -EINTR) {
        if (++r->retries < FILE_MAX_RETRIES) {
            file_prep(q, r);
            return false;
        }
        err = EIO;
    } else if (res == -ENOSPC && io->op == M_STORE_WRITE && !r->punched) {
        /* Space held by freed slots may be enough: release it and retry.
         * Retry too if holes were punched since this write started (by
         * another I/O's ENOSPC in the same batch, or a free). */
        r->punched = true;
        uint64_t gen = r->punch_gen;
        if (file_punch_all(fs) ||
            atomic_load_explicit(&fs->punch_gen, memory_order_acquire) != gen) {
            file_prep(q, r);
            return false;
        }
        err = ENOSPC;
    } else if (res < 0) {
        err = -res;
    } else if (res == 0) {
        /* End of file before the record was complete: the slot was never
         * written (or written only in part). */
        err = EIO;
    } else {
        r->done += (uint32_t)res;
        if (r->done < M_STORE_DATA) {
            file_prep(q, r);
            return false;
        }
    }
    io->result = err;
    if (err) {
        atomic_fetch_add_explicit(&fs->errors, 1, memory_order_relaxed);
        file_log_error_once(fs, io->op == M_STORE_READ ? "read" : "write", io->slot, err);
    } else if (io->op == M_STORE_READ) {
        /* a slot never allocated reads as a hole would */
        const uint8_t *tr = file_tr(fs, io->slot);
        if (tr)
            memcpy((char *)io->buf + M_STORE_DATA, tr, M_STORE_TRAILER);
        else
            memset((char *)io->buf + M_STORE_DATA, 0, M_STORE_TRAILER);
        atomic_fetch_add_explicit(&fs->reads, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&fs->bytes_read, M_STORE_RECORD, memory_order_relaxed);
    } else {
        atomic_fetch_add_explicit(&fs->writes, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&fs->bytes_written, M_STORE_RECORD, memory_order_relaxed);
    }
    q->free_reqs[q->nfree++] = (unsigned)(r - q->reqs);
    return true;
}

/* file_spin - wait for `need` completions by watching the completion ring
 * for up to spin_ns (150 us) before sleeping in the kernel.  A 4 KiB read from
 * a local disk completes in 50-100 us; a thread that sleeps for it pays a
 * wake-up on top (on a VM whose idle CPUs halt, the interrupt, a VM entry
 * and the scheduler: 20-40 us measured), and the faulting thread waits for
 * the whole of it.  The loop yields rather than pauses: when program threads
 * are runnable on this CPU they run (8 threads on 2 CPUs lost 8% to a
 * spin that paused, nothing measurable to one that yields).  Returns
 * whether they came. */
static bool file_spin(struct file_queue *q, unsigned need)
{
    uint64_t limit = file_of(q->base.store)->spin_ns;
    if (!limit)
        return false;
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (unsigned i = 1;; i++) {
        if (io_uring_cq_ready(&q->ring) >= need)
            return true;
        sched_yield(); /* runnable threads go first: on a busy CPU the wait is theirs */
        if (i % 64 == 0) {
            clock_gettime(CLOCK_MONOTONIC, &t);
            uint64_t ns =
                (uint64_t)(t.tv_sec - t0.tv_sec) * 1000000000u + (uint64_t)(t.tv_nsec - t0.tv_nsec);
            if (ns > limit)
                return false;
        }
    }
}

static int file_reap(struct m_store_queue *bq, struct m_store_io **done, size_t max, size_t min,
                     size_t *ndone)
{
    struct file_queue *q = queue_of(bq);
    size_t got = 0;
    *ndone = 0;
    size_t inflight = bq->depth - q->nfree;
    if (min > max)
        min = max;
    if (min > inflight)
        min = inflight; /* waiting for more than can complete would hang */

    while (got < max) {
        struct io_uring_cqe *cqes[FILE_REAP_BATCH];
        size_t want = max - got < FILE_REAP_BATCH ? max - got : FILE_REAP_BATCH;
        unsigned k = io_uring_peek_batch_cqe(&q->ring, cqes, (unsigned)want);
        bool resubmit = false;
        for (unsigned i = 0; i < k; i++) {
            struct file_req *r = io_uring_cqe_get_data(cqes[i]);
            if (file_complete(q, r, cqes[i]->res))
                done[got++] = r->io;
            else
                resubmit = true;
        }
        if (k)
            io_uring_cq_advance(&q->ring, k);
        if (resubmit || io_uring_sq_ready(&q->ring)) {
            int rc = file_flush(q);
            if (rc) {
                *ndone = got;
                return rc;
            }
        }
        if (k)
            continue;
        if (got >= min)
            break;
        /* At most inflight CQEs can come: need <= inflight. */
        unsigned need = (unsigned)(min - got);
        if (!io_uring_sq_ready(&q->ring) && file_spin(q, need))
            continue;
        int ret;
        if (io_uring_sq_ready(&q->ring)) {
            ret = io_uring_submit_and_wait(&q->ring, need);
        } else {
            struct io_uring_cqe *cqe;
            ret = io_uring_wait_cqe_nr(&q->ring, &cqe, need);
        }
        if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY && ret != -ETIME) {
            *ndone = got;
            return -ret;
        }
    }
    *ndone = got;
    return 0;
}

/* ---------------------------------------------------------------------------
 * Description and statistics
 * ------------------------------------------------------------------------- */

static void file_stats(struct m_store *s, struct m_store_stats *out)
{
    struct file_store *fs = file_of(s);
    out->slots_used = atomic_load_explicit(&fs->used, memory_order_relaxed);
    out->slots_high = atomic_load_explicit(&fs->next, memory_order_relaxed);
    out->reads = atomic_load_explicit(&fs->reads, memory_order_relaxed);
    out->writes = atomic_load_explicit(&fs->writes, memory_order_relaxed);
    out->bytes_read = atomic_load_explicit(&fs->bytes_read, memory_order_relaxed);
    out->bytes_written = atomic_load_explicit(&fs->bytes_written, memory_order_relaxed);
    out->errors = atomic_load_explicit(&fs->errors, memory_order_relaxed);
    out->meta_bytes = out->slots_high * M_STORE_TRAILER;
}

static const char *file_describe(struct m_store *s)
{
    return file_of(s)->path;
}

const struct m_store_ops m_store_file_ops = {
    .scheme = "file",
    .open = file_open,
    .close = file_close,
    .slot_alloc = file_slot_alloc,
    .slot_free = file_slot_free,
    .queue_new = file_queue_new,
    .queue_free = file_queue_free,
    .submit = file_submit,
    .reap = file_reap,
    .stats = file_stats,
    .describe = file_describe,
};
