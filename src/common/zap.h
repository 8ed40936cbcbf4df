/*
 * zap.h - drop the frames of many page ranges of this process at once.
 *
 * Eviction ends by discarding the pages it wrote out (MADV_DONTNEED), and a
 * reclaim batch's victims are rarely adjacent.  Each madvise call flushes
 * the TLB of every CPU that runs a thread of the process: an interprocessor
 * interrupt per range, ~9 us a page here with a second CPU busy.
 * process_madvise(2) on the process itself takes all ranges in one call and,
 * on recent kernels flushes once for all of them: 64 scattered
 * pages took 585 us as 64 madvise calls and 40 us as one process_madvise
 * here (Linux 6.18, another thread of the process busy on the other CPU).
 */
#ifndef M_COMMON_ZAP_H
#define M_COMMON_ZAP_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/uio.h>

/* m_zap_ranges - MADV_DONTNEED on each of iov[0..n): one process_madvise
 * call per UIO_MAXIOV ranges where the kernel takes MADV_DONTNEED from a
 * process for itself (6.13 on), else one
 * madvise per range.  The ranges must be page-aligned.  Holds one pidfd of
 * the process (close-on-exec), opened at first use.  Like madvise, it
 * cannot fail on valid ranges; whatever the vectored call leaves undone is
 * redone range by range.  Returns the number of system calls it made (each
 * a TLB flush). */
size_t m_zap_ranges(const struct iovec *iov, size_t n);

/* m_zap_vectored - whether m_zap_ranges uses process_madvise (false until
 * the first call with two ranges or more has found out, or when forced off). */
bool m_zap_vectored(void);

/* m_zap_force_ranges - tests: use one madvise per range from now on
 * (true), or probe the vectored call again (false). */
void m_zap_force_ranges(bool on);

#endif
