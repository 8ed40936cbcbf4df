/*
 * diag.c - diagnostics and notes: recording them, ordering them by place in
 * the file, merging the lists of several platforms, and printing them the
 * way compilers do ("FILE:LINE:COL: error: ..."), so editors can jump to
 * them.
 *
 * A failed allocation sets diags->oom instead of aborting: the caller turns
 * that into ENOMEM once, at the end.
 */
#include "config/config_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char *m_cfg_vstrf(const char *fmt, va_list ap)
{
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0)
        return NULL;
    return s;
}

char *m_cfg_strf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = m_cfg_vstrf(fmt, ap);
    va_end(ap);
    return s;
}

char *m_cfg_quote(const char *s, size_t len, size_t max)
{
    /* Worst case every byte becomes \u00XX (6 bytes). */
    size_t shown = len > max ? max : len;
    char *out = malloc(shown * 6 + 8);
    if (!out)
        return NULL;
    size_t n = 0;
    out[n++] = '"';
    for (size_t i = 0; i < shown; i++) {
        unsigned char c = (unsigned char)s[i];
        switch (c) {
        case '"':
            n += (size_t)sprintf(out + n, "\\\"");
            break;
        case '\\':
            n += (size_t)sprintf(out + n, "\\\\");
            break;
        case '\n':
            n += (size_t)sprintf(out + n, "\\n");
            break;
        case '\t':
            n += (size_t)sprintf(out + n, "\\t");
            break;
        case '\r':
            n += (size_t)sprintf(out + n, "\\r");
            break;
        default:
            if (c < 0x20 || c == 0x7F)
                n += (size_t)sprintf(out + n, "\\u%04x", c);
            else
                out[n++] = (char)c;
        }
    }
    if (shown < len) {
        /* Do not cut a UTF-8 sequence in half. */
        while (n > 1 && ((unsigned char)out[n - 1] & 0xC0) == 0x80)
            n--;
        if (n > 1 && ((unsigned char)out[n - 1] & 0xC0) == 0xC0)
            n--;
        memcpy(out + n, "...", 3);
        n += 3;
    }
    out[n++] = '"';
    out[n] = '\0';
    return out;
}

static char *dup_or_empty(const char *s, bool *oom)
{
    char *r = strdup(s ? s : "");
    if (!r)
        *oom = true;
    return r;
}

void m_cfg_diag_add(struct m_config_diags *d, enum m_config_severity sev, const char *path,
                    int line, int column, const char *found, const char *expected,
                    const char *platform, const char *fmt, ...)
{
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 16;
        struct m_config_diag *v = realloc(d->v, cap * sizeof *v);
        if (!v) {
            d->oom = true;
            return;
        }
        d->v = v;
        d->cap = cap;
    }
    va_list ap;
    va_start(ap, fmt);
    char *msg = m_cfg_vstrf(fmt, ap);
    va_end(ap);
    bool oom = !msg;
    struct m_config_diag x = {
        .severity = sev,
        .path = dup_or_empty(path, &oom),
        .line = line,
        .column = column,
        .found = dup_or_empty(found, &oom),
        .expected = dup_or_empty(expected, &oom),
        .message = msg,
        .platform = platform ? dup_or_empty(platform, &oom) : NULL,
    };
    if (oom) {
        free(x.path);
        free(x.found);
        free(x.expected);
        free(x.message);
        free(x.platform);
        d->oom = true;
        return;
    }
    d->v[d->n++] = x;
    if (sev == M_CONFIG_ERROR)
        d->nerrors++;
    else
        d->nwarnings++;
}

static void diag_free(struct m_config_diag *x)
{
    free(x->path);
    free(x->found);
    free(x->expected);
    free(x->message);
    free(x->platform);
}

void m_config_diags_free(struct m_config_diags *d)
{
    for (size_t i = 0; i < d->n; i++)
        diag_free(&d->v[i]);
    free(d->v);
    memset(d, 0, sizeof *d);
}

static bool same_diag(const struct m_config_diag *a, const struct m_config_diag *b)
{
    return a->severity == b->severity && !strcmp(a->path, b->path) &&
           !strcmp(a->message, b->message);
}

int m_config_diags_append(struct m_config_diags *dst, const struct m_config_diags *src)
{
    for (size_t i = 0; i < src->n; i++) {
        const struct m_config_diag *x = &src->v[i];
        bool seen = false;
        for (size_t j = 0; j < dst->n && !seen; j++)
            seen = same_diag(&dst->v[j], x);
        if (!seen)
            m_cfg_diag_add(dst, x->severity, x->path, x->line, x->column, x->found, x->expected,
                           x->platform, "%s", x->message);
    }
    return dst->oom ? ENOMEM : 0;
}

/* Insertion sort: stable, and the lists are short. */
void m_config_diags_sort(struct m_config_diags *d)
{
    for (size_t i = 1; i < d->n; i++) {
        struct m_config_diag x = d->v[i];
        size_t j = i;
        while (j > 0 && (d->v[j - 1].line > x.line ||
                         (d->v[j - 1].line == x.line && d->v[j - 1].column > x.column))) {
            d->v[j] = d->v[j - 1];
            j--;
        }
        d->v[j] = x;
    }
}

void m_config_diag_print(FILE *f, const char *name, const struct m_config_diag *d)
{
    const char *sev = d->severity == M_CONFIG_ERROR ? "error" : "warning";
    if (d->line > 0)
        fprintf(f, "%s:%d:%d: %s", name, d->line, d->column, sev);
    else
        fprintf(f, "%s: %s", name, sev);
    if (d->platform)
        fprintf(f, " (%s)", d->platform);
    fprintf(f, ": %s\n", d->message);
    if (*d->found)
        fprintf(f, "    found:    %s\n", d->found);
    if (*d->expected)
        fprintf(f, "    expected: %s\n", d->expected);
}

bool m_cfg_note_add(struct m_config_notes *notes, const char *field, const char *fmt, ...)
{
    if (notes->n == notes->cap) {
        size_t cap = notes->cap ? notes->cap * 2 : 8;
        struct m_config_note *v = realloc(notes->v, cap * sizeof *v);
        if (!v)
            return false;
        notes->v = v;
        notes->cap = cap;
    }
    va_list ap;
    va_start(ap, fmt);
    char *text = m_cfg_vstrf(fmt, ap);
    va_end(ap);
    char *f = strdup(field ? field : "");
    if (!text || !f) {
        free(text);
        free(f);
        return false;
    }
    notes->v[notes->n++] = (struct m_config_note){f, text};
    return true;
}

void m_cfg_notes_free(struct m_config_notes *notes)
{
    for (size_t i = 0; i < notes->n; i++) {
        free(notes->v[i].field);
        free(notes->v[i].text);
    }
    free(notes->v);
    memset(notes, 0, sizeof *notes);
}
