/*
 * size.h - human size strings used by the environment and the command line:
 * "4096" (bytes), "64K", "64M", "64MiB", "1G", "1.5G", "2T" (binary units,
 * optional "iB" or "B", case-insensitive unit letter).
 */
#ifndef M_COMMON_SIZE_H
#define M_COMMON_SIZE_H

#include <stddef.h>

/* m_size_parse - 0 on success; EINVAL for a malformed string, ERANGE if the
 * value does not fit in size_t. */
int m_size_parse(const char *s, size_t *out);

/* m_size_format - "64.0 MiB" style into buf (always NUL-terminated). */
const char *m_size_format(size_t nbytes, char *buf, size_t buflen);

#endif
