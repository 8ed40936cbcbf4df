/*
 * size.c - parsing and printing of sizes.  Fractions ("1.5G") are computed
 * exactly in integers: the fraction digits are scaled by the unit and
 * rounded down to a byte.
 */
#include "common/size.h"

#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>

int m_size_parse(const char *s, size_t *out)
{
    if (!s || !out)
        return EINVAL;
    while (isspace((unsigned char)*s))
        s++;
    if (!isdigit((unsigned char)*s))
        return EINVAL;
    uint64_t whole = 0;
    while (isdigit((unsigned char)*s)) {
        uint64_t d = (uint64_t)(*s++ - '0');
        if (whole > (UINT64_MAX - d) / 10)
            return ERANGE;
        whole = whole * 10 + d;
    }
    uint64_t frac = 0, frac_div = 1;
    if (*s == '.') {
        s++;
        if (!isdigit((unsigned char)*s))
            return EINVAL;
        while (isdigit((unsigned char)*s)) {
            if (frac_div < 1000000ULL) {
                frac = frac * 10 + (uint64_t)(*s - '0');
                frac_div *= 10;
            }
            s++;
        }
    }
    unsigned shift = 0;
    switch (toupper((unsigned char)*s)) {
    case 'K':
        shift = 10;
        break;
    case 'M':
        shift = 20;
        break;
    case 'G':
        shift = 30;
        break;
    case 'T':
        shift = 40;
        break;
    case 'B':
        s++;
        break;
    default:
        break;
    }
    if (shift) {
        s++;
        if (s[0] == 'i' && (s[1] == 'B' || s[1] == 'b'))
            s += 2;
        else if (*s == 'B' || *s == 'b')
            s++;
    } else if (frac_div > 1) {
        return EINVAL; /* fractional bytes make no sense */
    }
    while (isspace((unsigned char)*s))
        s++;
    if (*s)
        return EINVAL;
    if (shift && whole > (UINT64_MAX >> shift))
        return ERANGE;
    uint64_t v = whole << shift;
    if (frac) {
        uint64_t f = (frac << shift) / frac_div; /* frac < 1e6, shift <= 40: fits */
        if (v > UINT64_MAX - f)
            return ERANGE;
        v += f;
    }
    if (v > SIZE_MAX)
        return ERANGE;
    *out = (size_t)v;
    return 0;
}

const char *m_size_format(size_t nbytes, char *buf, size_t buflen)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)nbytes;
    unsigned u = 0;
    while (v >= 1024.0 && u < 4) {
        v /= 1024.0;
        u++;
    }
    if (u == 0)
        snprintf(buf, buflen, "%zu B", nbytes);
    else
        snprintf(buf, buflen, "%.1f %s", v, units[u]);
    return buf;
}
