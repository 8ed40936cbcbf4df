/*
 * size.c - Occlum's size strings: "64MB", " 1 GB ", "4096B".
 *
 * Occlum (both its configuration tool and its LibOS) reads a size by
 * trimming blanks, taking the first of the suffixes KB, MB, GB, TB, B that
 * ends the string as the unit (case-sensitive, binary multiples), and
 * parsing what precedes it, trimmed again, as an unsigned decimal integer.
 * So blanks may surround the number and the unit, the unit is mandatory,
 * "4mb" and "4MiB" are rejected, and so is "1.5GB".
 *
 * moat reads the same language but classifies each rejection, so that the
 * message can say what is wrong and suggest the right spelling.  Two
 * details of the Rust code are reproduced only in tool mode: str::parse
 * accepts a leading '+', and str::trim removes Unicode blanks (NBSP, ...),
 * not only ASCII ones.  An overflowing product is an error in both modes:
 * the tool's debug build panics on it and its release build would silently
 * wrap, which no one can want.
 */
#include "config/config_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

struct unit {
    const char *name;
    unsigned shift;
};

static const struct unit units[] = {
    {"B", 0}, {"KB", 10}, {"MB", 20}, {"GB", 30}, {"TB", 40},
};

static bool ascii_blank(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* The Unicode White_Space characters above ASCII, in UTF-8, as Rust's
 * char::is_whitespace knows them. */
static const char *const uni_blanks[] = {
    "\xC2\x85",     "\xC2\xA0",     "\xE1\x9A\x80", "\xE2\x80\x80", "\xE2\x80\x81",
    "\xE2\x80\x82", "\xE2\x80\x83", "\xE2\x80\x84", "\xE2\x80\x85", "\xE2\x80\x86",
    "\xE2\x80\x87", "\xE2\x80\x88", "\xE2\x80\x89", "\xE2\x80\x8A", "\xE2\x80\xA8",
    "\xE2\x80\xA9", "\xE2\x80\xAF", "\xE2\x81\x9F", "\xE3\x80\x80",
};

/* Length of the blank that starts at p (or ends at end, if at_end), 0 if
 * there is none. */
static size_t blank_len(const char *p, const char *end, bool at_end, bool unicode)
{
    if (p >= end)
        return 0;
    if (ascii_blank((unsigned char)(at_end ? end[-1] : p[0])))
        return 1;
    if (!unicode)
        return 0;
    for (size_t i = 0; i < sizeof uni_blanks / sizeof uni_blanks[0]; i++) {
        size_t n = strlen(uni_blanks[i]);
        if ((size_t)(end - p) < n)
            continue;
        const char *at = at_end ? end - n : p;
        if (!memcmp(at, uni_blanks[i], n))
            return n;
    }
    return 0;
}

static void trim(const char **b, const char **e, bool unicode)
{
    size_t n;
    while ((n = blank_len(*b, *e, false, unicode)))
        *b += n;
    while ((n = blank_len(*b, *e, true, unicode)))
        *e -= n;
}

static bool is_letter(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool ieq(const char *a, size_t alen, const char *b)
{
    if (alen != strlen(b))
        return false;
    for (size_t i = 0; i < alen; i++) {
        char x = a[i], y = b[i];
        if (x >= 'a' && x <= 'z')
            x = (char)(x - 'a' + 'A');
        if (y >= 'a' && y <= 'z')
            y = (char)(y - 'a' + 'A');
        if (x != y)
            return false;
    }
    return true;
}

/* Split s into a number part and a unit part (the trailing ASCII letters). */
static void split(const char *s, size_t len, bool unicode, const char **nb, const char **ne,
                  const char **ub, const char **ue)
{
    const char *b = s, *e = s + len;
    trim(&b, &e, unicode);
    const char *u = e;
    while (u > b && is_letter(u[-1]))
        u--;
    *ub = u;
    *ue = e;
    *nb = b;
    *ne = u;
    trim(nb, ne, unicode);
}

enum m_config_size_status m_config_size_parse(const char *s, size_t len,
                                              enum m_config_compat compat, uint64_t *nbytes)
{
    bool tool = compat == M_CONFIG_COMPAT_OCCLUM_TOOL;
    const char *nb, *ne, *ub, *ue;
    split(s, len, tool, &nb, &ne, &ub, &ue);
    if (nb == ne && ub == ue)
        return M_CONFIG_SIZE_EMPTY;
    if (nb == ne)
        return M_CONFIG_SIZE_NO_NUMBER;

    /* The number: [+]digits, with '-' and fractions classified. */
    const char *p = nb;
    bool plus = false;
    if (*p == '-' || *p == '+') {
        if (p + 1 == ne || !is_digit(p[1]))
            return M_CONFIG_SIZE_NO_NUMBER;
        if (*p == '-')
            return M_CONFIG_SIZE_NEGATIVE;
        plus = true;
        p++;
    }
    uint64_t v = 0;
    bool overflow = false;
    while (p < ne && is_digit(*p)) {
        uint64_t d = (uint64_t)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            overflow = true;
        else
            v = v * 10 + d;
        p++;
    }
    if (p < ne) {
        if (*p == '.' && p + 1 < ne) {
            const char *q = p + 1;
            while (q < ne && is_digit(*q))
                q++;
            if (q == ne)
                return M_CONFIG_SIZE_FRACTION;
        }
        return M_CONFIG_SIZE_NO_NUMBER;
    }
    if (plus && !tool)
        return M_CONFIG_SIZE_SIGN;

    /* The unit. */
    size_t ulen = (size_t)(ue - ub);
    if (!ulen)
        return M_CONFIG_SIZE_NO_UNIT;
    const struct unit *unit = NULL;
    bool case_only = false;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (ulen == strlen(units[i].name) && !memcmp(ub, units[i].name, ulen))
            unit = &units[i];
        else if (ieq(ub, ulen, units[i].name))
            case_only = true;
    }
    if (!unit)
        return case_only ? M_CONFIG_SIZE_UNIT_CASE : M_CONFIG_SIZE_UNIT_UNKNOWN;
    if (overflow || (unit->shift && v > (UINT64_MAX >> unit->shift)))
        return M_CONFIG_SIZE_OVERFLOW;
    *nbytes = v << unit->shift;
    return M_CONFIG_SIZE_OK;
}

const char *m_config_size_why(enum m_config_size_status st)
{
    switch (st) {
    case M_CONFIG_SIZE_OK:
        return "it is valid";
    case M_CONFIG_SIZE_EMPTY:
        return "it is empty";
    case M_CONFIG_SIZE_NO_NUMBER:
        return "it does not start with a whole decimal number";
    case M_CONFIG_SIZE_NEGATIVE:
        return "a size cannot be negative";
    case M_CONFIG_SIZE_SIGN:
        return "a size is written without a '+' sign";
    case M_CONFIG_SIZE_FRACTION:
        return "Occlum accepts whole numbers only, not fractions";
    case M_CONFIG_SIZE_NO_UNIT:
        return "the unit is missing, and Occlum requires one";
    case M_CONFIG_SIZE_UNIT_CASE:
        return "units are case-sensitive and must be written in upper case (B, KB, MB, GB, TB)";
    case M_CONFIG_SIZE_UNIT_UNKNOWN:
        return "the unit is not one of B, KB, MB, GB, TB (which are already binary: 1KB is "
               "1024 bytes)";
    case M_CONFIG_SIZE_OVERFLOW:
        return "it is more than 2^64 - 1 bytes, the largest size Occlum can represent";
    }
    return "it is not a size";
}

/* The Occlum unit meant by a unit spelled some other way, or NULL. */
static const struct unit *unit_meant(const char *u, size_t n)
{
    static const struct {
        const char *alias;
        unsigned idx;
    } aliases[] = {
        {"B", 0},   {"BYTE", 0}, {"BYTES", 0}, {"KB", 1},  {"K", 1},   {"KI", 1}, {"KIB", 1},
        {"MB", 2},  {"M", 2},    {"MI", 2},    {"MIB", 2}, {"GB", 3},  {"G", 3},  {"GI", 3},
        {"GIB", 3}, {"TB", 4},   {"T", 4},     {"TI", 4},  {"TIB", 4},
    };
    if (!n)
        return &units[0]; /* a bare number is a count of bytes */
    for (size_t i = 0; i < sizeof aliases / sizeof aliases[0]; i++)
        if (ieq(u, n, aliases[i].alias))
            return &units[aliases[i].idx];
    return NULL;
}

bool m_config_size_suggest(const char *s, size_t len, char *buf, size_t buflen)
{
    const char *nb, *ne, *ub, *ue;
    split(s, len, true, &nb, &ne, &ub, &ue);
    const struct unit *unit = unit_meant(ub, (size_t)(ue - ub));
    if (!unit || nb == ne)
        return false;
    const char *p = nb;
    if (*p == '+')
        p++;
    uint64_t whole = 0, frac = 0, frac_div = 1;
    const char *digits = p;
    while (p < ne && is_digit(*p)) {
        if (whole > (UINT64_MAX - 9) / 10)
            return false;
        whole = whole * 10 + (uint64_t)(*p++ - '0');
    }
    if (p == digits)
        return false;
    if (p < ne && *p == '.') {
        p++;
        while (p < ne && is_digit(*p)) {
            if (frac_div > UINT64_MAX / 100)
                return false;
            frac = frac * 10 + (uint64_t)(*p++ - '0');
            frac_div *= 10;
        }
    }
    if (p != ne)
        return false;
    /* Exact in bytes, or no suggestion: a rounded size is a guess. */
    unsigned __int128 scaled = (unsigned __int128)frac << unit->shift;
    if (scaled % frac_div)
        return false;
    unsigned __int128 total =
        ((unsigned __int128)whole << unit->shift) + scaled / (unsigned __int128)frac_div;
    if (total > UINT64_MAX)
        return false;
    m_config_size_format((uint64_t)total, buf, buflen);
    /* Suggesting what was written helps no one. */
    return !((size_t)(ue - nb) == strlen(buf) && !memcmp(nb, buf, strlen(buf)));
}

const char *m_config_size_format(uint64_t nbytes, char *buf, size_t buflen)
{
    for (size_t i = sizeof units / sizeof units[0]; i-- > 1;) {
        uint64_t factor = 1ULL << units[i].shift;
        if (nbytes && nbytes % factor == 0) {
            snprintf(buf, buflen, "%" PRIu64 "%s", nbytes / factor, units[i].name);
            return buf;
        }
    }
    snprintf(buf, buflen, "%" PRIu64 "B", nbytes);
    return buf;
}
