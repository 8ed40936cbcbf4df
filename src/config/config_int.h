/*
 * config_int.h - what the config layer's source files share and nobody else
 * sees: the JSON position index, diagnostic and note builders, small string
 * helpers.  The contract is config.h.
 */
#ifndef M_CONFIG_INT_H
#define M_CONFIG_INT_H

#include "config/config.h"

#include <stdarg.h>

/* ---------------------------------------------------------------------------
 * Position index (jpos.c)
 *
 * jansson keeps no positions per value, so after jansson has accepted the
 * text a second, much simpler scanner walks it once and records, for every
 * value, its JSON path and where it starts.  The scanner trusts the syntax
 * (jansson checked it) and only has to get nesting and strings right.
 * ------------------------------------------------------------------------- */

struct m_jpos_entry {
    char *path;      /* "", "resource_limits", "mount[0].options.layers[1].type" */
    int kline, kcol; /* the member's key; 0 for the root and array elements */
    int vline, vcol; /* the value's first character */
    size_t voff;     /* ... and its byte offset, to quote a number as written */
    unsigned seq;    /* order of appearance, to keep the last of duplicates */
};

struct m_jpos_dup {
    char *path;
    int first_line, first_col; /* the earlier key, which jansson dropped */
    int line, col;             /* the later key, whose value counts */
};

struct m_jpos {
    struct m_jpos_entry *v;
    size_t n, cap;
    struct m_jpos_dup *dups;
    size_t ndups;
};

/* m_jpos_build - index nbytes of JSON that jansson accepted.  0 or ENOMEM. */
int m_jpos_build(const char *buf, size_t nbytes, struct m_jpos *idx);
const struct m_jpos_entry *m_jpos_find(const struct m_jpos *idx, const char *path);
void m_jpos_free(struct m_jpos *idx);

/* m_jpos_member - the path of key inside the object at parent:
 * "a.b", or a["odd key"] when the key is not a plain identifier. */
char *m_jpos_member(const char *parent, const char *key);
/* m_jpos_element - "parent[i]". */
char *m_jpos_element(const char *parent, size_t i);

/* ---------------------------------------------------------------------------
 * Diagnostics and notes (diag.c)
 * ------------------------------------------------------------------------- */

void m_cfg_diag_add(struct m_config_diags *d, enum m_config_severity sev, const char *path,
                    int line, int column, const char *found, const char *expected,
                    const char *platform, const char *fmt, ...)
    __attribute__((format(printf, 9, 10)));

/* m_cfg_note_add - append to notes; returns false on ENOMEM. */
bool m_cfg_note_add(struct m_config_notes *notes, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void m_cfg_notes_free(struct m_config_notes *notes);

/* m_cfg_strf - a malloc'd formatted string, NULL on ENOMEM. */
char *m_cfg_strf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
char *m_cfg_vstrf(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));

/* m_cfg_quote - s as a JSON string literal, shortened to about max
 * characters with "..." when longer; malloc'd. */
char *m_cfg_quote(const char *s, size_t len, size_t max);

#endif
