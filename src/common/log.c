/*
 * log.c - timestamped log lines, written with one write(2) each so lines
 * from concurrent threads never interleave.
 */
#include "common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static _Atomic int log_level = MOAT_LOG_WARN;
static _Atomic int log_fd = STDERR_FILENO;

static _Atomic long log_tz_offset; /* seconds east of UTC */
static pthread_once_t log_tz_once = PTHREAD_ONCE_INIT;

static void log_tz_init(void)
{
    time_t now = time(NULL);
    struct tm tm;
    if (localtime_r(&now, &tm))
        atomic_store(&log_tz_offset, tm.tm_gmtoff);
}

static const char *const level_names[] = {"DEBUG", "INFO", "WARN", "ERROR", "FATAL"};

int m_log_open(int level, const char *path)
{
    pthread_once(&log_tz_once, log_tz_init);
    if (level >= MOAT_LOG_DEBUG && level <= MOAT_LOG_FATAL)
        atomic_store(&log_level, level);
    if (path && *path) {
        int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd < 0)
            return errno;
        int old = atomic_exchange(&log_fd, fd);
        if (old != STDERR_FILENO)
            close(old);
    }
    return 0;
}

void m_log_close(void)
{
    int old = atomic_exchange(&log_fd, STDERR_FILENO);
    if (old != STDERR_FILENO)
        close(old);
}

int m_log_level(void)
{
    return atomic_load(&log_level);
}

int m_log_parse_level(const char *s)
{
    if (!s || !*s)
        return -1;
    if (s[0] >= '0' && s[0] <= '4' && s[1] == '\0')
        return s[0] - '0';
    for (int i = 0; i <= MOAT_LOG_FATAL; i++)
        if (strcasecmp(s, level_names[i]) == 0)
            return i;
    if (strcasecmp(s, "warning") == 0)
        return MOAT_LOG_WARN;
    return -1;
}

void m_log(int level, const char *module, const char *fmt, ...)
{
    if (level < atomic_load(&log_level))
        return;
    if (level < MOAT_LOG_DEBUG || level > MOAT_LOG_FATAL)
        level = MOAT_LOG_ERROR;
    int saved_errno = errno;
    char line[1024];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    /* localtime_r may load the time zone (malloc, fopen) and is not safe in
     * the signal handler that logs fatal faults: use the offset found once,
     * outside any handler, and gmtime_r. */
    pthread_once(&log_tz_once, log_tz_init);
    time_t local = ts.tv_sec + atomic_load(&log_tz_offset);
    gmtime_r(&local, &tm);
    int n = snprintf(line, sizeof line, "[%04d-%02d-%02d %02d:%02d:%02d.%03ld]:[%s]-[%s] - ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000, level_names[level], module);
    if (n < 0)
        n = 0;
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof line - 2)
        len = sizeof line - 2;
    line[len++] = '\n';
    ssize_t w = write(atomic_load(&log_fd), line, len);
    (void)w;
    errno = saved_errno;
}
