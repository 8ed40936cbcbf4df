/*
 * jpos.c - the JSON position index: JSON path -> line and column.
 *
 * jansson reports where a syntax error is, but keeps no position for the
 * values it builds, and an error about a field is only useful with one.  So
 * once jansson has accepted a text, this file walks the same bytes with a
 * small recursive scanner that trusts the syntax and records, for every
 * value, its path and the line and column of its first character (and of
 * its key, for object members).  Columns count characters, not bytes, as
 * jansson's own error columns do, so both kinds of position agree.
 *
 * Entries are sorted by path once built; a path that occurs twice is a
 * duplicated key (jansson keeps the later value, so lookups return the later
 * entry) and is listed in idx->dups, without the descendants of a
 * duplicated member, which would only repeat the news.
 */
#include "config/config_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct jscan {
    const char *base, *p, *end;
    int line, col; /* of the next character */
    struct m_jpos *idx;
    unsigned seq;
    bool oom;
};

/* Advance over one byte; a column is a character, so UTF-8 continuation
 * bytes do not move it. */
static void js_adv(struct jscan *s)
{
    unsigned char c = (unsigned char)*s->p++;
    if (c == '\n') {
        s->line++;
        s->col = 1;
    } else if ((c & 0xC0) != 0x80) {
        s->col++;
    }
}

static void js_ws(struct jscan *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        js_adv(s);
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static unsigned js_hex4(struct jscan *s)
{
    unsigned v = 0;
    for (int i = 0; i < 4 && s->p < s->end; i++) {
        int h = hexval(*s->p);
        v = v * 16u + (unsigned)(h < 0 ? 0 : h);
        js_adv(s);
    }
    return v;
}

static void put_utf8(char *out, size_t *n, unsigned cp)
{
    if (cp < 0x80) {
        out[(*n)++] = (char)cp;
    } else if (cp < 0x800) {
        out[(*n)++] = (char)(0xC0 | (cp >> 6));
        out[(*n)++] = (char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        out[(*n)++] = (char)(0xE0 | (cp >> 12));
        out[(*n)++] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[(*n)++] = (char)(0x80 | (cp & 0x3F));
    } else {
        out[(*n)++] = (char)(0xF0 | (cp >> 18));
        out[(*n)++] = (char)(0x80 | ((cp >> 12) & 0x3F));
        out[(*n)++] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[(*n)++] = (char)(0x80 | (cp & 0x3F));
    }
}

/* Decode the string at s->p (on its opening quote); returns a malloc'd
 * copy when want is set.  A decoded string is never longer than its
 * escaped form, so the raw length bounds the buffer. */
static char *js_string(struct jscan *s, bool want)
{
    const char *start = s->p;
    js_adv(s); /* opening quote */
    const char *q = s->p;
    while (q < s->end && *q != '"')
        q += (*q == '\\' && q + 1 < s->end) ? 2 : 1;
    char *out = want ? malloc((size_t)(q - start) + 1) : NULL;
    if (want && !out)
        s->oom = true;
    size_t n = 0;
    while (s->p < s->end && *s->p != '"') {
        char c = *s->p;
        if (c != '\\') {
            if (out)
                out[n++] = c;
            js_adv(s);
            continue;
        }
        js_adv(s);
        if (s->p >= s->end)
            break;
        char e = *s->p;
        js_adv(s);
        unsigned cp;
        switch (e) {
        case 'b':
            cp = '\b';
            break;
        case 'f':
            cp = '\f';
            break;
        case 'n':
            cp = '\n';
            break;
        case 'r':
            cp = '\r';
            break;
        case 't':
            cp = '\t';
            break;
        case 'u':
            cp = js_hex4(s);
            if (cp >= 0xD800 && cp < 0xDC00 && s->end - s->p >= 6 && s->p[0] == '\\' &&
                s->p[1] == 'u') {
                js_adv(s);
                js_adv(s);
                unsigned lo = js_hex4(s);
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            break;
        default:
            cp = (unsigned char)e;
            break; /* \" \\ \/ */
        }
        if (out)
            put_utf8(out, &n, cp);
    }
    if (s->p < s->end)
        js_adv(s); /* closing quote */
    if (out)
        out[n] = '\0';
    return out;
}

static void js_record(struct jscan *s, char *path, int kline, int kcol, int vline, int vcol)
{
    size_t voff = (size_t)(s->p - s->base);
    struct m_jpos *idx = s->idx;
    if (!path) {
        s->oom = true;
        return;
    }
    if (idx->n == idx->cap) {
        size_t cap = idx->cap ? idx->cap * 2 : 64;
        struct m_jpos_entry *v = realloc(idx->v, cap * sizeof *v);
        if (!v) {
            free(path);
            s->oom = true;
            return;
        }
        idx->v = v;
        idx->cap = cap;
    }
    idx->v[idx->n++] = (struct m_jpos_entry){path, kline, kcol, vline, vcol, voff, s->seq++};
}

static void js_value(struct jscan *s, const char *path);

static void js_object(struct jscan *s, const char *path)
{
    js_adv(s); /* { */
    js_ws(s);
    if (s->p < s->end && *s->p == '}') {
        js_adv(s);
        return;
    }
    while (s->p < s->end && !s->oom) {
        js_ws(s);
        int kline = s->line, kcol = s->col;
        char *key = js_string(s, true);
        if (!key)
            return;
        js_ws(s);
        if (s->p < s->end && *s->p == ':')
            js_adv(s);
        js_ws(s);
        char *child = m_jpos_member(path, key);
        free(key);
        if (!child) {
            s->oom = true;
            return;
        }
        js_record(s, child, kline, kcol, s->line, s->col);
        js_value(s, child); /* child stays owned by the index */
        js_ws(s);
        if (s->p < s->end && *s->p == ',') {
            js_adv(s);
            continue;
        }
        if (s->p < s->end)
            js_adv(s); /* } */
        return;
    }
}

static void js_array(struct jscan *s, const char *path)
{
    js_adv(s); /* [ */
    js_ws(s);
    if (s->p < s->end && *s->p == ']') {
        js_adv(s);
        return;
    }
    for (size_t i = 0; s->p < s->end && !s->oom; i++) {
        js_ws(s);
        char *child = m_jpos_element(path, i);
        if (!child) {
            s->oom = true;
            return;
        }
        js_record(s, child, 0, 0, s->line, s->col);
        js_value(s, child);
        js_ws(s);
        if (s->p < s->end && *s->p == ',') {
            js_adv(s);
            continue;
        }
        if (s->p < s->end)
            js_adv(s); /* ] */
        return;
    }
}

static void js_value(struct jscan *s, const char *path)
{
    if (s->p >= s->end)
        return;
    switch (*s->p) {
    case '{':
        js_object(s, path);
        break;
    case '[':
        js_array(s, path);
        break;
    case '"':
        js_string(s, false);
        break;
    default: /* number, true, false, null */
        while (s->p < s->end && !strchr(",]} \t\r\n", *s->p))
            js_adv(s);
        break;
    }
}

static int entry_cmp(const void *a, const void *b)
{
    const struct m_jpos_entry *x = a, *y = b;
    int c = strcmp(x->path, y->path);
    if (c)
        return c;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* A duplicate inside a duplicated member repeats the same news. */
static bool under_dup(const struct m_jpos *idx, const char *path)
{
    for (size_t i = 0; i < idx->ndups; i++) {
        size_t n = strlen(idx->dups[i].path);
        if (!strncmp(path, idx->dups[i].path, n) && (path[n] == '.' || path[n] == '['))
            return true;
    }
    return false;
}

int m_jpos_build(const char *buf, size_t nbytes, struct m_jpos *idx)
{
    memset(idx, 0, sizeof *idx);
    struct jscan s = {.base = buf, .p = buf, .end = buf + nbytes, .line = 1, .col = 1, .idx = idx};
    js_ws(&s);
    js_record(&s, strdup(""), 0, 0, s.line, s.col);
    if (!s.oom)
        js_value(&s, "");
    if (s.oom) {
        m_jpos_free(idx);
        return ENOMEM;
    }
    qsort(idx->v, idx->n, sizeof idx->v[0], entry_cmp);
    for (size_t i = 0; i + 1 < idx->n; i++) {
        if (strcmp(idx->v[i].path, idx->v[i + 1].path) || under_dup(idx, idx->v[i].path))
            continue;
        size_t j = i + 1;
        while (j + 1 < idx->n && !strcmp(idx->v[j + 1].path, idx->v[i].path))
            j++;
        struct m_jpos_dup *d = realloc(idx->dups, (idx->ndups + 1) * sizeof *d);
        char *p = strdup(idx->v[i].path);
        if (!d || !p) {
            if (d)
                idx->dups = d;
            free(p);
            m_jpos_free(idx);
            return ENOMEM;
        }
        idx->dups = d;
        d[idx->ndups++] = (struct m_jpos_dup){p, idx->v[i].kline, idx->v[i].kcol, idx->v[j].kline,
                                              idx->v[j].kcol};
        i = j;
    }
    return 0;
}

const struct m_jpos_entry *m_jpos_find(const struct m_jpos *idx, const char *path)
{
    size_t lo = 0, hi = idx->n;
    while (lo < hi) { /* first entry >= path */
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(idx->v[mid].path, path) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == idx->n || strcmp(idx->v[lo].path, path))
        return NULL;
    while (lo + 1 < idx->n && !strcmp(idx->v[lo + 1].path, path))
        lo++; /* the last duplicate is the value jansson kept */
    return &idx->v[lo];
}

void m_jpos_free(struct m_jpos *idx)
{
    for (size_t i = 0; i < idx->n; i++)
        free(idx->v[i].path);
    for (size_t i = 0; i < idx->ndups; i++)
        free(idx->dups[i].path);
    free(idx->v);
    free(idx->dups);
    memset(idx, 0, sizeof *idx);
}

static bool plain_key(const char *k)
{
    if (!*k)
        return false;
    for (const char *p = k; *p; p++) {
        char c = *p;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return false;
    }
    return true;
}

char *m_jpos_member(const char *parent, const char *key)
{
    if (plain_key(key))
        return *parent ? m_cfg_strf("%s.%s", parent, key) : strdup(key);
    char *q = m_cfg_quote(key, strlen(key), 64);
    if (!q)
        return NULL;
    char *r = m_cfg_strf("%s[%s]", parent, q);
    free(q);
    return r;
}

char *m_jpos_element(const char *parent, size_t i)
{
    return m_cfg_strf("%s[%zu]", parent, i);
}
