/*
 * log.h - moat's one logging facility.
 *
 * Lines look like
 *   [2026-01-02 03:04:05.678]:[WARN]-[reclaim] - message
 * and go to stderr or to the file set by m_log_open.  Logging is safe from
 * any thread; it takes no lock that the fault path could be holding.
 */
#ifndef M_COMMON_LOG_H
#define M_COMMON_LOG_H

#include <moat.h>

/* m_log_open - set the level and the destination (NULL path = stderr).
 * Returns 0 or an errno from opening the file. */
int m_log_open(int level, const char *path);
void m_log_close(void);
int m_log_level(void);

/* m_log - write one line if `level` is at or above the current level. */
void m_log(int level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define m_debug(mod, ...) m_log(MOAT_LOG_DEBUG, mod, __VA_ARGS__)
#define m_info(mod, ...)  m_log(MOAT_LOG_INFO, mod, __VA_ARGS__)
#define m_warn(mod, ...)  m_log(MOAT_LOG_WARN, mod, __VA_ARGS__)
#define m_error(mod, ...) m_log(MOAT_LOG_ERROR, mod, __VA_ARGS__)
#define m_fatal(mod, ...) m_log(MOAT_LOG_FATAL, mod, __VA_ARGS__)

/* m_log_parse_level - "debug", "info", "warn", "error", "fatal" or a digit;
 * -1 if unknown. */
int m_log_parse_level(const char *s);

#endif
