/*
 * zap.c - MADV_DONTNEED on many ranges with one TLB flush (zap.h).
 */
#include "common/zap.h"

#include "common/log.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef UIO_MAXIOV
#define UIO_MAXIOV 1024
#endif

enum { ZAP_UNKNOWN = 0, ZAP_VECTORED = 1, ZAP_RANGES = 2 };
static _Atomic int zap_mode;

/* A pidfd of this process, opened at first use and again in a child after
 * fork (the inherited one names the parent, whose memory the kernel will
 * not let us advise).  The PIDFD_SELF_THREAD_GROUP sentinel would spare the
 * descriptor, but Linux 6.18's process_madvise answers it with EBADF. */
static pthread_mutex_t zap_lock = PTHREAD_MUTEX_INITIALIZER;
static int zap_fd = -1;
static pid_t zap_pid;

static int zap_pidfd(void)
{
#ifdef SYS_pidfd_open
    pid_t me = getpid();
    pthread_mutex_lock(&zap_lock);
    if (zap_fd < 0 || zap_pid != me) {
        zap_fd = (int)syscall(SYS_pidfd_open, me, 0u);
        zap_pid = me;
    }
    int fd = zap_fd;
    pthread_mutex_unlock(&zap_lock);
    return fd;
#else
    errno = ENOSYS;
    return -1;
#endif
}

/* The program closed or replaced our descriptor (a daemon closing every
 * fd): open a new one next time. */
static void zap_pidfd_drop(int fd)
{
    pthread_mutex_lock(&zap_lock);
    if (zap_fd == fd)
        zap_fd = -1;
    pthread_mutex_unlock(&zap_lock);
}

static size_t zap_each(const struct iovec *iov, size_t n)
{
    for (size_t i = 0; i < n; i++)
        madvise(iov[i].iov_base, iov[i].iov_len, MADV_DONTNEED);
    return n;
}

/* One process_madvise call on at most UIO_MAXIOV ranges: true if it did
 * them all. */
static bool zap_vectored(const struct iovec *iov, size_t n)
{
#ifdef SYS_process_madvise
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += iov[i].iov_len;
    int fd = zap_pidfd();
    long r = fd < 0 ? -1 : syscall(SYS_process_madvise, fd, iov, n, MADV_DONTNEED, 0u);
    if (r >= 0 && (size_t)r == total) {
        atomic_store_explicit(&zap_mode, ZAP_VECTORED, memory_order_relaxed);
        return true;
    }
    int err = errno;
    if (r < 0 && atomic_load_explicit(&zap_mode, memory_order_relaxed) == ZAP_UNKNOWN) {
        /* ENOSYS (before 5.10), EINVAL (MADV_DONTNEED refused before 6.13),
         * EPERM (seccomp): one madvise per range from now on */
        m_debug("zap", "process_madvise(MADV_DONTNEED) on this process: %s; one madvise per range",
                strerror(err));
        atomic_store_explicit(&zap_mode, ZAP_RANGES, memory_order_relaxed);
    } else if (r < 0 && fd >= 0) {
        zap_pidfd_drop(fd);
    }
    return false;
#else
    (void)iov;
    (void)n;
    atomic_store_explicit(&zap_mode, ZAP_RANGES, memory_order_relaxed);
    return false;
#endif
}

size_t m_zap_ranges(const struct iovec *iov, size_t n)
{
    size_t calls = 0;
    while (n) {
        size_t k = n < UIO_MAXIOV ? n : UIO_MAXIOV;
        /* a partial result leaves no way to tell which ranges were done:
         * MADV_DONTNEED is idempotent, so all of them are redone */
        if (k < 2 || atomic_load_explicit(&zap_mode, memory_order_relaxed) == ZAP_RANGES) {
            calls += zap_each(iov, k);
        } else {
            calls++;
            if (!zap_vectored(iov, k))
                calls += zap_each(iov, k);
        }
        iov += k;
        n -= k;
    }
    return calls;
}

bool m_zap_vectored(void)
{
    return atomic_load_explicit(&zap_mode, memory_order_relaxed) == ZAP_VECTORED;
}

void m_zap_force_ranges(bool on)
{
    atomic_store_explicit(&zap_mode, on ? ZAP_RANGES : ZAP_UNKNOWN, memory_order_relaxed);
}
