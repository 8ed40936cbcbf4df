/*
 * parse.c - reading an Occlum.json and finding everything wrong with it.
 *
 * jansson parses the text (comments are not JSON and are rejected, as
 * Occlum's serde_json rejects them); the position index (jpos.c) then gives
 * every value its line and column.  Validation never stops at the first
 * problem: each field is checked on its own and the problems are collected
 * in cfg->diags.
 *
 * The schema is the one Occlum's configuration tool deserialises
 * (OcclumConfiguration in tools/gen_internal_conf): what it requires, what
 * it accepts as missing or null (its Option<> fields), what types it wants.
 * On top of it come the rules of the EDMM configuration guide and the rules
 * the later stages of `occlum build` and start-up enforce (sgx_sign wants
 * page-aligned sizes and 16-bit product ids, the LibOS parses the process
 * sizes).  How severe a problem is follows one principle:
 *
 *   guide mode:  error when `occlum build` or the enclave's start would fail,
 *                or when the guide says the configuration is wrong;
 *   tool mode:   error exactly when gen_internal_conf fails; what only a
 *                later stage rejects is a warning, so that the tool's output
 *                can still be reproduced.
 *
 * Rules that depend on the platform (EDMM or not) are in derive.c.
 */
#include "config/config_int.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct pctx {
    struct m_config *cfg;
    const char *buf;
    size_t nbytes;
    json_t *root;
    struct m_jpos idx;
    bool tool;
};

enum kind { K_SIZE, K_COUNT, K_FLAG, K_OBJECT, K_ARRAY, K_STRING, K_ANY };
enum req { R_OPT, R_GUIDE, R_TOOL };

struct spec {
    const char *key;
    enum kind kind;
    enum req req;
    bool nullable;       /* an Option<> in the tool: null reads as absent */
    bool late;           /* checked after gen_internal_conf (LibOS, sgx_sign) */
    const char *example; /* a valid value, as JSON */
};

#define DIAGS(c) (&(c)->cfg->diags)

/* ---------------------------------------------------------------------------
 * Positions and descriptions
 * ------------------------------------------------------------------------- */

static struct m_config_pos pos_value(const struct pctx *c, const char *path)
{
    const struct m_jpos_entry *e = m_jpos_find(&c->idx, path);
    return e ? (struct m_config_pos){e->vline, e->vcol} : (struct m_config_pos){0, 0};
}

static struct m_config_pos pos_key(const struct pctx *c, const char *path)
{
    const struct m_jpos_entry *e = m_jpos_find(&c->idx, path);
    if (!e)
        return (struct m_config_pos){0, 0};
    if (e->kline)
        return (struct m_config_pos){e->kline, e->kcol};
    return (struct m_config_pos){e->vline, e->vcol};
}

/* A number as written in the file ("64.0" stays "64.0"). */
static char *raw_number(const struct pctx *c, const char *path, json_t *v)
{
    const struct m_jpos_entry *e = m_jpos_find(&c->idx, path);
    if (e && e->voff < c->nbytes) {
        size_t n = 0;
        while (e->voff + n < c->nbytes && n < 40 && !strchr(",]} \t\r\n", c->buf[e->voff + n]))
            n++;
        if (n)
            return strndup(c->buf + e->voff, n);
    }
    if (json_is_integer(v))
        return m_cfg_strf("%lld", (long long)json_integer_value(v));
    return m_cfg_strf("%.17g", json_real_value(v));
}

static char *describe(const struct pctx *c, const char *path, json_t *v)
{
    if (!v)
        return strdup("nothing: the field is absent");
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return strdup("an object");
    case JSON_ARRAY:
        return strdup("an array");
    case JSON_TRUE:
        return strdup("true");
    case JSON_FALSE:
        return strdup("false");
    case JSON_NULL:
        return strdup("null");
    case JSON_STRING: {
        char *q = m_cfg_quote(json_string_value(v), json_string_length(v), 40);
        char *r = q ? m_cfg_strf("the string %s", q) : NULL;
        free(q);
        return r;
    }
    default: {
        char *n = raw_number(c, path, v);
        char *r = n ? m_cfg_strf("the number %s", n) : NULL;
        free(n);
        return r;
    }
    }
}

static const char *where(const char *parent)
{
    return *parent ? parent : "the top level of the file";
}

/* What a later stage rejects is only a warning in tool mode. */
static enum m_config_severity late_sev(const struct pctx *c, bool late)
{
    return late && c->tool ? M_CONFIG_WARNING : M_CONFIG_ERROR;
}

static const char *later_stage_note(const struct pctx *c, bool late)
{
    return late && c->tool ? " (gen_internal_conf accepts it; a later stage of occlum build or "
                             "the enclave's start-up does not)"
                           : "";
}

/* ---------------------------------------------------------------------------
 * Getting a field of the right JSON type
 * ------------------------------------------------------------------------- */

static const char *kind_want(enum kind k)
{
    switch (k) {
    case K_SIZE:
        return "a size string with a unit";
    case K_COUNT:
        return "a whole number";
    case K_FLAG:
        return "true or false";
    case K_OBJECT:
        return "an object ({ ... })";
    case K_ARRAY:
        return "an array ([ ... ])";
    case K_STRING:
        return "a string";
    case K_ANY:
        return "a value";
    }
    return "a value";
}

static bool kind_ok(enum kind k, json_t *v)
{
    switch (k) {
    case K_SIZE:
    case K_STRING:
        return json_is_string(v);
    case K_COUNT:
        return json_is_number(v);
    case K_FLAG:
        return json_is_boolean(v);
    case K_OBJECT:
        return json_is_object(v);
    case K_ARRAY:
        return json_is_array(v);
    case K_ANY:
        return true;
    }
    return false;
}

/* A hint for a value of the wrong type that is plainly meant as the right
 * one: "64" for a count, 300 for a size, "true" for a flag. */
static char *type_hint(const struct spec *sp, json_t *v)
{
    if (sp->kind == K_COUNT && json_is_string(v)) {
        const char *s = json_string_value(v);
        char *end;
        errno = 0;
        unsigned long long n = strtoull(s, &end, 10);
        if (*s >= '0' && *s <= '9' && !*end && !errno)
            return m_cfg_strf(" Write %llu without quotes.", n);
    }
    if (sp->kind == K_SIZE && json_is_integer(v))
        return m_cfg_strf(" Occlum reads sizes as strings with a unit: if you meant %lld bytes, "
                          "write \"%lldB\".",
                          (long long)json_integer_value(v), (long long)json_integer_value(v));
    if (sp->kind == K_FLAG && json_is_string(v) &&
        (!strcmp(json_string_value(v), "true") || !strcmp(json_string_value(v), "false")))
        return m_cfg_strf(" Write %s without quotes.", json_string_value(v));
    return strdup("");
}

static void missing(struct pctx *c, const char *parent, const struct spec *sp, const char *path)
{
    struct m_config_pos p = pos_value(c, parent);
    char *expected = sp->kind == K_ANY ? m_cfg_strf("for example \"%s\": %s", sp->key, sp->example)
                                       : m_cfg_strf("%s, for example \"%s\": %s",
                                                    kind_want(sp->kind), sp->key, sp->example);
    if (sp->req == R_GUIDE)
        m_cfg_diag_add(DIAGS(c), M_CONFIG_ERROR, path, p.line, p.column,
                       "nothing: the field is absent", expected, NULL,
                       "%s is missing. The EDMM configuration guide marks it Required, and "
                       "occlum build fails without it. Add it to %s, for example \"%s\": %s.",
                       path, where(parent), sp->key, sp->example);
    else
        m_cfg_diag_add(DIAGS(c), M_CONFIG_ERROR, path, p.line, p.column,
                       "nothing: the field is absent", expected, NULL,
                       "%s is missing. Occlum's configuration tool (gen_internal_conf) requires "
                       "it, so occlum build fails without it. Add it to %s, for example "
                       "\"%s\": %s.",
                       path, where(parent), sp->key, sp->example);
    free(expected);
}

/* The value of sp->key in obj if present, not null (when nullable) and of
 * the right JSON type; NULL otherwise, with a diagnostic where one is due.
 * *pathp receives the field's path (malloc'd) in every case. */
static json_t *get(struct pctx *c, json_t *obj, const char *parent, const struct spec *sp,
                   char **pathp)
{
    char *path = m_jpos_member(parent, sp->key);
    *pathp = path;
    if (!path) {
        DIAGS(c)->oom = true;
        return NULL;
    }
    json_t *v = obj ? json_object_get(obj, sp->key) : NULL;
    if (!v) {
        if (sp->req != R_OPT && obj)
            missing(c, parent, sp, path);
        return NULL;
    }
    if (json_is_null(v) && sp->nullable)
        return NULL;
    if (!kind_ok(sp->kind, v)) {
        struct m_config_pos p = pos_value(c, path);
        char *found = describe(c, path, v);
        char *hint = type_hint(sp, v);
        char *expected = m_cfg_strf("%s, such as %s", kind_want(sp->kind), sp->example);
        m_cfg_diag_add(DIAGS(c), late_sev(c, sp->late), path, p.line, p.column, found, expected,
                       NULL, "%s must be %s, but it is %s.%s%s", path, kind_want(sp->kind),
                       found ? found : "something else", hint ? hint : "",
                       later_stage_note(c, sp->late));
        free(found);
        free(hint);
        free(expected);
        return NULL;
    }
    return v;
}

/* ---------------------------------------------------------------------------
 * Typed readers
 * ------------------------------------------------------------------------- */

static void copy_text(char *dst, size_t cap, const char *s, size_t len)
{
    const char *b = s, *e = s + len;
    while (b < e && (*b == ' ' || *b == '\t'))
        b++;
    while (e > b && (e[-1] == ' ' || e[-1] == '\t'))
        e--;
    size_t n = (size_t)(e - b);
    if (n >= cap) {
        n = cap - 4;
        memcpy(dst, b, n);
        memcpy(dst + n, "...", 4);
        return;
    }
    memcpy(dst, b, n);
    dst[n] = '\0';
}

/* Validate a size string; on failure, report it at path with severity sev. */
static bool check_size(struct pctx *c, const char *path, json_t *v, enum m_config_severity sev,
                       const char *example, const char *note, struct m_config_size *out)
{
    const char *s = json_string_value(v);
    size_t len = json_string_length(v);
    struct m_config_pos p = pos_value(c, path);
    out->pos = p;
    copy_text(out->text, sizeof out->text, s, len);
    uint64_t nbytes = 0;
    enum m_config_size_status st = m_config_size_parse(s, len, c->cfg->compat, &nbytes);
    if (st == M_CONFIG_SIZE_OK) {
        out->set = true;
        out->nbytes = nbytes;
        return true;
    }
    out->bad = true;
    char sugg[48];
    bool have = m_config_size_suggest(s, len, sugg, sizeof sugg);
    char *q = m_cfg_quote(s, len, 40);
    char *fix = NULL, *expected = NULL;
    if (st == M_CONFIG_SIZE_OVERFLOW) {
        fix = strdup("");
        expected = strdup("a size of at most 16777215TB (2^64 - 1 bytes, rounded down to whole "
                          "terabytes)");
    } else if (have && st == M_CONFIG_SIZE_NO_UNIT) {
        fix = m_cfg_strf(" If you meant bytes, write \"%s\".", sugg);
        expected =
            m_cfg_strf("a whole number followed by B, KB, MB, GB or TB, such as \"%s\"", sugg);
    } else if (have) {
        fix = m_cfg_strf(" Write \"%s\" instead.", sugg);
        expected = m_cfg_strf("\"%s\": a whole number followed by B, KB, MB, GB or TB", sugg);
    } else {
        fix = strdup("");
        expected =
            m_cfg_strf("a whole number followed by B, KB, MB, GB or TB, such as %s", example);
    }
    if (q && fix && expected)
        m_cfg_diag_add(DIAGS(c), sev, path, p.line, p.column, q, expected, NULL,
                       "%s %s is not a valid size: %s.%s%s", path, q, m_config_size_why(st), fix,
                       note);
    else
        DIAGS(c)->oom = true;
    free(q);
    free(fix);
    free(expected);
    return false;
}

/* The key is there, but get() refused its value. */
static bool rejected(json_t *obj, const struct spec *sp)
{
    json_t *raw = obj ? json_object_get(obj, sp->key) : NULL;
    return raw && !(json_is_null(raw) && sp->nullable);
}

static void read_size(struct pctx *c, json_t *obj, const char *parent, const struct spec *sp,
                      struct m_config_size *out)
{
    char *path;
    json_t *v = get(c, obj, parent, sp, &path);
    if (!v && rejected(obj, sp))
        out->bad = true;
    if (v)
        check_size(c, path, v, late_sev(c, sp->late), sp->example, later_stage_note(c, sp->late),
                   out);
    free(path);
}

static void read_count(struct pctx *c, json_t *obj, const char *parent, const struct spec *sp,
                       uint64_t limit, const char *limit_why, struct m_config_count *out)
{
    char *path;
    json_t *v = get(c, obj, parent, sp, &path);
    if (!v) {
        out->bad = rejected(obj, sp);
        free(path);
        return;
    }
    struct m_config_pos p = pos_value(c, path);
    out->pos = p;
    char *found = describe(c, path, v);
    enum m_config_severity sev = late_sev(c, sp->late);
    if (json_is_real(v)) {
        m_cfg_diag_add(DIAGS(c), sev, path, p.line, p.column, found,
                       "a whole number without a decimal point or exponent", NULL,
                       "%s must be a whole number, but it is %s. Occlum's configuration tool "
                       "reads it as an unsigned integer and rejects fractions; write it without "
                       "a decimal point.",
                       path, found ? found : "a fraction");
        out->bad = true;
    } else if (json_integer_value(v) < 0) {
        m_cfg_diag_add(DIAGS(c), sev, path, p.line, p.column, found, "a number of at least 0", NULL,
                       "%s cannot be negative, but it is %s.", path, found ? found : "negative");
        out->bad = true;
    } else if ((uint64_t)json_integer_value(v) > limit) {
        char *expected = m_cfg_strf("a whole number from 0 to %" PRIu64, limit);
        m_cfg_diag_add(DIAGS(c), sev, path, p.line, p.column, found, expected, NULL,
                       "%s is %s, more than %" PRIu64 ", the largest value %s.", path,
                       found ? found : "too large", limit, limit_why);
        free(expected);
        out->bad = true;
    } else {
        out->set = true;
        out->value = (uint64_t)json_integer_value(v);
    }
    free(found);
    free(path);
}

static void read_flag(struct pctx *c, json_t *obj, const char *parent, const struct spec *sp,
                      struct m_config_flag *out)
{
    char *path;
    json_t *v = get(c, obj, parent, sp, &path);
    if (v) {
        out->set = true;
        out->value = json_is_true(v);
        out->pos = pos_value(c, path);
    } else {
        out->bad = rejected(obj, sp);
    }
    free(path);
}

/* ---------------------------------------------------------------------------
 * Unknown and duplicated fields
 * ------------------------------------------------------------------------- */

static const char *const keys_root[] = {"resource_limits", "process", "entry_points", "env",
                                        "metadata",        "feature", "mount",        NULL};
static const char *const keys_limits[] = {
    "kernel_space_stack_size", "kernel_space_heap_size", "kernel_space_heap_max_size",
    "user_space_size",         "user_space_max_size",    "init_num_of_threads",
    "max_num_of_threads",      "marshal_buffer_size",    NULL};
static const char *const keys_process[] = {"default_stack_size", "default_heap_size",
                                           "default_mmap_size", NULL};
static const char *const keys_metadata[] = {
    "product_id", "version_number", "debuggable",  "disable_log",
    "enable_kss", "family_id",      "ext_prod_id", NULL};
static const char *const keys_id[] = {"high", "low", NULL};
static const char *const keys_feature[] = {
    "amx", "pkru", "io_uring", "enable_edmm", "enable_posix_shm", NULL};
static const char *const keys_env[] = {"default", "untrusted", NULL};

static const struct {
    const char *section;
    const char *const *keys;
} sections[] = {
    {"resource_limits", keys_limits}, {"process", keys_process}, {"metadata", keys_metadata},
    {"feature", keys_feature},        {"env", keys_env},
};

static bool in_list(const char *const *list, const char *key)
{
    for (; *list; list++)
        if (!strcmp(*list, key))
            return true;
    return false;
}

static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 64 || lb > 64)
        return 99;
    size_t row[65];
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

static void unknown_keys(struct pctx *c, json_t *obj, const char *parent, const char *const *known)
{
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v)
    {
        if (in_list(known, key))
            continue;
        char *path = m_jpos_member(parent, key);
        if (!path) {
            DIAGS(c)->oom = true;
            return;
        }
        char *hint = NULL;
        const char *best = NULL;
        size_t bestd = 3;
        for (const char *const *k = known; *k; k++) {
            size_t d = edit_distance(key, *k);
            if (d < bestd) {
                bestd = d;
                best = *k;
            }
        }
        if (best) {
            hint = m_cfg_strf(" Did you mean %s?", best);
        } else {
            for (size_t i = 0; i < sizeof sections / sizeof sections[0] && !hint; i++)
                if (strcmp(sections[i].section, parent) && in_list(sections[i].keys, key))
                    hint = m_cfg_strf(" It belongs in %s.", sections[i].section);
        }
        struct m_config_pos p = pos_key(c, path);
        char *expected = NULL;
        size_t n = 0;
        for (const char *const *k = known; *k; k++)
            n += strlen(*k) + 2;
        expected = malloc(n + 32);
        if (expected) {
            strcpy(expected, "one of ");
            for (const char *const *k = known; *k; k++) {
                strcat(expected, *k);
                if (k[1])
                    strcat(expected, ", ");
            }
        }
        m_cfg_diag_add(DIAGS(c), M_CONFIG_WARNING, path, p.line, p.column, key,
                       expected ? expected : "", NULL,
                       "%s is not a field Occlum knows, so occlum build ignores it.%s", path,
                       hint ? hint : "");
        free(expected);
        free(hint);
        free(path);
    }
}

/* Objects the tool deserialises into structs: a repeated field there makes
 * serde fail ("duplicate field"); elsewhere the later value silently wins. */
static bool struct_field(const char *path)
{
    const char *dot = strrchr(path, '.');
    size_t plen = dot ? (size_t)(dot - path) : 0;
    const char *key = dot ? dot + 1 : path;
    if (!dot)
        return in_list(keys_root, key);
    static const struct {
        const char *p;
        const char *const *keys;
    } structs[] = {
        {"resource_limits", keys_limits}, {"process", keys_process},
        {"metadata", keys_metadata},      {"feature", keys_feature},
        {"metadata.family_id", keys_id},  {"metadata.ext_prod_id", keys_id},
    };
    for (size_t i = 0; i < sizeof structs / sizeof structs[0]; i++)
        if (strlen(structs[i].p) == plen && !strncmp(structs[i].p, path, plen))
            return in_list(structs[i].keys, key);
    return false;
}

static void duplicates(struct pctx *c)
{
    for (size_t i = 0; i < c->idx.ndups; i++) {
        const struct m_jpos_dup *d = &c->idx.dups[i];
        if (struct_field(d->path))
            m_cfg_diag_add(DIAGS(c), M_CONFIG_ERROR, d->path, d->line, d->col,
                           "the same field twice", "each field once", NULL,
                           "%s appears twice (line %d and line %d). Occlum's configuration tool "
                           "rejects a repeated field (serde: \"duplicate field\"), so occlum "
                           "build fails; keep one of them.",
                           d->path, d->first_line, d->line);
        else
            m_cfg_diag_add(DIAGS(c), M_CONFIG_WARNING, d->path, d->line, d->col,
                           "the same key twice", "each key once", NULL,
                           "%s appears twice (line %d and line %d); only the later value is "
                           "used. Remove one of them.",
                           d->path, d->first_line, d->line);
    }
}

/* ---------------------------------------------------------------------------
 * Sections
 * ------------------------------------------------------------------------- */

static const struct spec sp_stack = {
    "kernel_space_stack_size", K_SIZE, R_GUIDE, false, false, "\"1MB\""};
static const struct spec sp_heap = {
    "kernel_space_heap_size", K_SIZE, R_GUIDE, false, false, "\"32MB\""};
static const struct spec sp_heap_max = {
    "kernel_space_heap_max_size", K_SIZE, R_OPT, true, false, "\"40MB\""};
static const struct spec sp_user = {"user_space_size", K_SIZE, R_GUIDE, false, false, "\"300MB\""};
static const struct spec sp_user_max = {
    "user_space_max_size", K_SIZE, R_OPT, true, false, "\"600MB\""};
static const struct spec sp_init_thr = {"init_num_of_threads", K_COUNT, R_OPT, true, false, "2"};
static const struct spec sp_max_thr = {"max_num_of_threads", K_COUNT, R_GUIDE, false, false, "32"};
static const struct spec sp_marshal = {"marshal_buffer_size", K_SIZE, R_OPT, true, true, "\"1MB\""};

#define U32_WHY "Occlum's configuration tool accepts (it stores the number in 32 bits)"

static void section_limits(struct pctx *c, json_t *rl)
{
    const char *P = "resource_limits";
    struct m_config *cfg = c->cfg;
    read_size(c, rl, P, &sp_stack, &cfg->kernel_stack);
    read_size(c, rl, P, &sp_heap, &cfg->kernel_heap);
    read_size(c, rl, P, &sp_heap_max, &cfg->kernel_heap_max);
    read_size(c, rl, P, &sp_user, &cfg->user_space);
    read_size(c, rl, P, &sp_user_max, &cfg->user_space_max);
    read_count(c, rl, P, &sp_init_thr, UINT32_MAX, U32_WHY, &cfg->init_threads);
    read_count(c, rl, P, &sp_max_thr, UINT32_MAX, U32_WHY, &cfg->max_threads);
    if (!rl)
        return;
    unknown_keys(c, rl, P, keys_limits);

    json_t *mb = json_object_get(rl, "marshal_buffer_size");
    if (mb && !json_is_null(mb)) {
        struct m_config_size ignored = {0};
        char *path = m_jpos_member(P, "marshal_buffer_size");
        struct m_config_pos p = pos_key(c, path ? path : P);
        m_cfg_diag_add(DIAGS(c), M_CONFIG_WARNING, path, p.line, p.column, "", "", NULL,
                       "%s is read only by Occlum builds with the ms_buffer feature; the default "
                       "build of the configuration tool ignores it.",
                       path ? path : "marshal_buffer_size");
        if (json_is_string(mb) && path)
            check_size(c, path, mb, M_CONFIG_WARNING, sp_marshal.example, "", &ignored);
        free(path);
    }
}

static void section_process(struct pctx *c, json_t *pr)
{
    static const struct spec sp[] = {
        {"default_stack_size", K_SIZE, R_GUIDE, false, true, "\"4MB\""},
        {"default_heap_size", K_SIZE, R_GUIDE, false, true, "\"32MB\""},
        {"default_mmap_size", K_SIZE, R_GUIDE, false, true, "\"100MB\""},
    };
    struct m_config_size *out[] = {&c->cfg->default_stack, &c->cfg->default_heap,
                                   &c->cfg->default_mmap};
    for (size_t i = 0; i < 3; i++)
        read_size(c, pr, "process", &sp[i], out[i]);
    if (pr)
        unknown_keys(c, pr, "process", keys_process);
}

/* Occlum reads an id as a hexadecimal u64 after stripping every leading
 * "0x" (trim_start_matches), with Rust's from_str_radix: an optional '+'
 * and at least one hex digit. */
static bool parse_hex_id(const char *s, uint64_t *out)
{
    while (!strncmp(s, "0x", 2))
        s += 2;
    if (*s == '+')
        s++;
    if (!*s)
        return false;
    uint64_t v = 0;
    for (; *s; s++) {
        int d;
        if (*s >= '0' && *s <= '9')
            d = *s - '0';
        else if (*s >= 'a' && *s <= 'f')
            d = *s - 'a' + 10;
        else if (*s >= 'A' && *s <= 'F')
            d = *s - 'A' + 10;
        else
            return false;
        if (v >> 60)
            return false;
        v = v * 16 + (uint64_t)d;
    }
    *out = v;
    return true;
}

static void read_id(struct pctx *c, json_t *md, const char *name, bool kss,
                    struct m_config_count *high, struct m_config_count *low)
{
    const struct spec sp_obj = {name,  K_OBJECT, R_TOOL,
                                false, false,    "{\"high\": \"0x0\", \"low\": \"0x0\"}"};
    char *path;
    json_t *o = get(c, md, "metadata", &sp_obj, &path);
    if (!path)
        return;
    if (o) {
        static const struct spec sp_hi = {"high", K_STRING, R_TOOL, false, false, "\"0x0\""};
        static const struct spec sp_lo = {"low", K_STRING, R_TOOL, false, false, "\"0x0\""};
        const struct spec *sps[] = {&sp_hi, &sp_lo};
        struct m_config_count *outs[] = {high, low};
        for (size_t i = 0; i < 2; i++) {
            char *ipath;
            json_t *v = get(c, o, path, sps[i], &ipath);
            if (v && ipath) {
                struct m_config_pos p = pos_value(c, ipath);
                outs[i]->pos = p;
                if (parse_hex_id(json_string_value(v), &outs[i]->value)) {
                    outs[i]->set = true;
                } else {
                    outs[i]->bad = true;
                    char *q = m_cfg_quote(json_string_value(v), json_string_length(v), 40);
                    if (kss)
                        m_cfg_diag_add(DIAGS(c), M_CONFIG_ERROR, ipath, p.line, p.column, q,
                                       "a 64-bit hexadecimal number such as \"0x1234567812345678\"",
                                       NULL,
                                       "%s %s is not a 64-bit hexadecimal number. With enable_kss "
                                       "true the configuration tool parses it and stops (panics) "
                                       "when it cannot.",
                                       ipath, q ? q : "");
                    else
                        m_cfg_diag_add(DIAGS(c), M_CONFIG_WARNING, ipath, p.line, p.column, q,
                                       "a 64-bit hexadecimal number such as \"0x1234567812345678\"",
                                       NULL,
                                       "%s %s is not a 64-bit hexadecimal number. It is ignored "
                                       "while enable_kss is false, but occlum build will fail "
                                       "once KSS is enabled.",
                                       ipath, q ? q : "");
                    free(q);
                }
            }
            free(ipath);
        }
        unknown_keys(c, o, path, keys_id);
    }
    free(path);
}

static void section_metadata(struct pctx *c, json_t *md)
{
    struct m_config *cfg = c->cfg;
    static const struct spec sp_prod = {"product_id", K_COUNT, R_TOOL, false, false, "0"};
    static const struct spec sp_svn = {"version_number", K_COUNT, R_TOOL, false, false, "0"};
    static const struct spec sp_dbg = {"debuggable", K_FLAG, R_TOOL, false, false, "true"};
    static const struct spec sp_log = {"disable_log", K_FLAG, R_OPT, true, false, "false"};
    static const struct spec sp_kss = {"enable_kss", K_FLAG, R_TOOL, false, false, "false"};
    read_count(c, md, "metadata", &sp_prod, UINT32_MAX, U32_WHY, &cfg->product_id);
    read_count(c, md, "metadata", &sp_svn, UINT32_MAX, U32_WHY, &cfg->version_number);
    read_flag(c, md, "metadata", &sp_dbg, &cfg->debuggable);
    read_flag(c, md, "metadata", &sp_log, &cfg->disable_log);
    read_flag(c, md, "metadata", &sp_kss, &cfg->enable_kss);
    bool kss = cfg->enable_kss.set && cfg->enable_kss.value;
    read_id(c, md, "family_id", kss, &cfg->family_id_high, &cfg->family_id_low);
    read_id(c, md, "ext_prod_id", kss, &cfg->ext_prod_id_high, &cfg->ext_prod_id_low);
    if (!md)
        return;
    unknown_keys(c, md, "metadata", keys_metadata);

    /* SIGSTRUCT's ISVPRODID and ISVSVN are 16 bits wide. */
    struct {
        struct m_config_count *v;
        const char *path, *elem;
    } isv[] = {{&cfg->product_id, "metadata.product_id", "ProdID"},
               {&cfg->version_number, "metadata.version_number", "ISVSVN"}};
    for (size_t i = 0; i < 2; i++) {
        if (!isv[i].v->set || isv[i].v->value <= M_CONFIG_ISV_MAX)
            continue;
        char found[32];
        snprintf(found, sizeof found, "%" PRIu64, isv[i].v->value);
        m_cfg_diag_add(DIAGS(c), late_sev(c, true), isv[i].path, isv[i].v->pos.line,
                       isv[i].v->pos.column, found, "a whole number from 0 to 65535", NULL,
                       "%s is %s, but it becomes the enclave's %s, a 16-bit field of the SGX "
                       "signature: the SGX SDK's signing tool (sgx_sign) rejects values above "
                       "65535, so occlum build would fail.%s",
                       isv[i].path, found, isv[i].elem, later_stage_note(c, true));
    }
}

static void section_feature(struct pctx *c, json_t *ft)
{
    struct m_config *cfg = c->cfg;
    /* #[serde(default)] without Option<>: absent is fine, null is not. */
    static const struct spec sp_amx = {"amx", K_COUNT, R_OPT, false, false, "0"};
    static const struct spec sp_pkru = {"pkru", K_COUNT, R_OPT, false, false, "0"};
    static const struct spec sp_uring = {"io_uring", K_COUNT, R_OPT, false, false, "0"};
    static const struct spec sp_edmm = {"enable_edmm", K_FLAG, R_OPT, false, false, "false"};
    static const struct spec sp_shm = {"enable_posix_shm", K_FLAG, R_OPT, false, false, "false"};
    read_count(c, ft, "feature", &sp_amx, UINT32_MAX, U32_WHY, &cfg->amx);
    read_count(c, ft, "feature", &sp_pkru, UINT32_MAX, U32_WHY, &cfg->pkru);
    read_count(c, ft, "feature", &sp_uring, UINT32_MAX, U32_WHY, &cfg->io_uring);
    read_flag(c, ft, "feature", &sp_edmm, &cfg->enable_edmm);
    read_flag(c, ft, "feature", &sp_shm, &cfg->enable_posix_shm);
    if (!ft)
        return;
    unknown_keys(c, ft, "feature", keys_feature);
    struct {
        struct m_config_count *v;
        const char *path;
        uint64_t max;
        const char *meaning;
    } ranges[] = {
        {&cfg->amx, "feature.amx", 2, "0 (AMX off), 1 (AMX required) or 2 (AMX if available)"},
        {&cfg->pkru, "feature.pkru", 2, "0 (PKU off), 1 (PKU required) or 2 (PKU if available)"},
        {&cfg->io_uring, "feature.io_uring", 16,
         "0 (no io_uring) or the number of io_uring instances, at most 16"},
    };
    for (size_t i = 0; i < sizeof ranges / sizeof ranges[0]; i++) {
        if (!ranges[i].v->set || ranges[i].v->value <= ranges[i].max)
            continue;
        char found[32];
        snprintf(found, sizeof found, "%" PRIu64, ranges[i].v->value);
        m_cfg_diag_add(DIAGS(c), M_CONFIG_WARNING, ranges[i].path, ranges[i].v->pos.line,
                       ranges[i].v->pos.column, found, ranges[i].meaning, NULL,
                       "%s is %s, which Occlum does not document; the documented values are %s.",
                       ranges[i].path, found, ranges[i].meaning);
    }
}

static void section_env(struct pctx *c, json_t *env)
{
    /* The tool copies env through untouched; the LibOS parses it. */
    struct m_config_pos p = pos_value(c, "env");
    enum m_config_severity sev = late_sev(c, true);
    if (!json_is_object(env)) {
        char *found = describe(c, "env", env);
        m_cfg_diag_add(DIAGS(c), sev, "env", p.line, p.column, found,
                       "an object such as {\"default\": [\"OCCLUM=yes\"], \"untrusted\": []}", NULL,
                       "env must be an object with the lists \"default\" and \"untrusted\", but "
                       "it is %s; the LibOS rejects it when the enclave starts.%s",
                       found ? found : "something else", later_stage_note(c, true));
        free(found);
        return;
    }
    for (const char *const *k = keys_env; *k; k++) {
        json_t *list = json_object_get(env, *k);
        if (!list)
            continue; /* LibOS versions differ on whether both lists are required */
        char *path = m_jpos_member("env", *k);
        if (!path) {
            DIAGS(c)->oom = true;
            return;
        }
        bool ok = json_is_array(list);
        size_t i;
        json_t *s;
        json_array_foreach(list, i, s) ok = ok && json_is_string(s);
        if (!ok) {
            struct m_config_pos q = pos_value(c, path);
            char *found = describe(c, path, list);
            m_cfg_diag_add(DIAGS(c), sev, path, q.line, q.column, found,
                           "an array of strings such as [\"OCCLUM=yes\"]", NULL,
                           "%s must be an array of strings (environment variables); the LibOS "
                           "rejects anything else when the enclave starts.%s",
                           path, later_stage_note(c, true));
            free(found);
        }
        free(path);
    }
    unknown_keys(c, env, "env", keys_env);
}

static void section_entry_points(struct pctx *c, json_t *ep)
{
    enum m_config_severity sev = late_sev(c, true);
    if (!json_is_array(ep)) {
        struct m_config_pos p = pos_value(c, "entry_points");
        char *found = describe(c, "entry_points", ep);
        m_cfg_diag_add(DIAGS(c), sev, "entry_points", p.line, p.column, found,
                       "an array of absolute paths such as [\"/bin\"]", NULL,
                       "entry_points must be an array of absolute paths, but it is %s; the LibOS "
                       "rejects it when the enclave starts.%s",
                       found ? found : "something else", later_stage_note(c, true));
        free(found);
        return;
    }
    size_t i;
    json_t *s;
    json_array_foreach(ep, i, s)
    {
        if (json_is_string(s) && json_string_value(s)[0] == '/')
            continue;
        char *path = m_jpos_element("entry_points", i);
        struct m_config_pos p = pos_value(c, path ? path : "entry_points");
        char *found = describe(c, path ? path : "entry_points", s);
        m_cfg_diag_add(DIAGS(c), sev, path, p.line, p.column, found,
                       "an absolute path such as \"/bin\"", NULL,
                       "%s must be an absolute path (starting with '/'), but it is %s; the LibOS "
                       "rejects it when the enclave starts.%s",
                       path ? path : "entry_points", found ? found : "something else",
                       later_stage_note(c, true));
        free(found);
        free(path);
    }
}

/* ---------------------------------------------------------------------------
 * mount: the shape the tool deserialises, its size checks, and the root
 * UnionFS it must find (gen_app_config)
 * ------------------------------------------------------------------------- */

#define MIN_CACHE_SIZE (48u * 4096u) /* 192KB */
#define MIN_DISK_SIZE  (5ULL << 30)  /* 5GB */

static bool add_cache_size(struct pctx *c, const char *path, const struct m_config_size *sz)
{
    struct m_config *cfg = c->cfg;
    struct m_config_cache_size *v = realloc(cfg->cache_sizes, (cfg->ncache_sizes + 1) * sizeof *v);
    if (!v)
        return false;
    cfg->cache_sizes = v;
    struct m_config_cache_size *e = &v[cfg->ncache_sizes++];
    memset(e, 0, sizeof *e);
    snprintf(e->path, sizeof e->path, "%s", path);
    e->size = *sz;
    return true;
}

static void check_mount(struct pctx *c, json_t *m, const char *path, bool top)
{
    if (!json_is_object(m)) {
        struct m_config_pos p = pos_value(c, path);
        char *found = describe(c, path, m);
        m_cfg_diag_add(DIAGS(c), M_CONFIG_ERROR, path, p.line, p.column, found,
                       "an object with \"target\" and \"type\"", NULL,
                       "%s must be an object with at least \"target\" and \"type\", but it is %s.",
                       path, found ? found : "something else");
        free(found);
        return;
    }
    static const struct spec sp_type = {"type", K_STRING, R_TOOL, false, false, "\"sefs\""};
    static const struct spec sp_target = {"target", K_STRING, R_TOOL, false, false, "\"/\""};
    static const struct spec sp_source = {"source", K_STRING, R_OPT, true, false, "\"./image\""};
    static const struct spec sp_options = {"options", K_OBJECT, R_OPT, false, false, "{}"};
    const struct spec *sps[] = {&sp_type, &sp_target, &sp_source};
    json_t *type = NULL;
    for (size_t i = 0; i < 3; i++) {
        char *p;
        json_t *v = get(c, m, path, sps[i], &p);
        if (i == 0)
            type = v;
        free(p);
    }
    char *opath;
    json_t *opts = get(c, m, path, &sp_options, &opath);
    if (!opath)
        return;
    static const struct spec sp_mac = {"MAC", K_STRING, R_OPT, true, false, "\"\""};
    static const struct spec sp_layers = {"layers", K_ARRAY, R_OPT, true, false, "[]"};
    static const struct spec sp_temp = {"temporary", K_FLAG, R_OPT, false, false, "false"};
    static const struct spec sp_cache = {"cache_size", K_STRING, R_OPT, true, false, "\"1MB\""};
    static const struct spec sp_disk = {"disk_size", K_STRING, R_OPT, true, false, "\"10GB\""};
    json_t *disk = NULL;
    if (opts) {
        char *p;
        get(c, opts, opath, &sp_mac, &p);
        free(p);
        get(c, opts, opath, &sp_temp, &p);
        free(p);
        json_t *layers = get(c, opts, opath, &sp_layers, &p);
        if (layers && p) {
            size_t i;
            json_t *l;
            json_array_foreach(layers, i, l)
            {
                char *lp = m_jpos_element(p, i);
                if (lp)
                    check_mount(c, l, lp, false);
                free(lp);
            }
        }
        free(p);
        /* The tool checks sizes of the top-level mounts only. */
        json_t *cache = get(c, opts, opath, &sp_cache, &p);
        if (top && cache && p) {
            struct m_config_size sz = {0};
            if (check_size(c, p, cache, M_CONFIG_ERROR, "\"1MB\"", "", &sz)) {
                if (sz.nbytes < MIN_CACHE_SIZE || sz.nbytes % 4096) {
                    char q[64];
                    snprintf(q, sizeof q, "\"%s\"", sz.text);
                    m_cfg_diag_add(DIAGS(c), M_CONFIG_ERROR, p, sz.pos.line, sz.pos.column, q,
                                   "a multiple of 4KB of at least 192KB", NULL,
                                   "%s \"%s\" must be at least 192KB and a multiple of 4KB, the "
                                   "cache page size; the configuration tool rejects it.",
                                   p, sz.text);
                } else if (!add_cache_size(c, p, &sz)) {
                    DIAGS(c)->oom = true;
                }
            }
        }
        free(p);
        disk = get(c, opts, opath, &sp_disk, &p);
        if (top && disk && p) {
            struct m_config_size sz = {0};
            char q[64];
            if (check_size(c, p, disk, M_CONFIG_ERROR, "\"10GB\"", "", &sz) &&
                sz.nbytes < MIN_DISK_SIZE)
                m_cfg_diag_add(DIAGS(c), M_CONFIG_ERROR, p, sz.pos.line, sz.pos.column,
                               (snprintf(q, sizeof q, "\"%s\"", sz.text), q), "at least 5GB", NULL,
                               "%s \"%s\" is too small: the configuration tool requires at least "
                               "5GB.",
                               p, sz.text);
        }
        free(p);
    }
    if (top && type && !strcmp(json_string_value(type), "ext2") && !disk) {
        struct m_config_pos p = pos_value(c, path);
        m_cfg_diag_add(DIAGS(c), M_CONFIG_ERROR, path, p.line, p.column,
                       "an ext2 mount without options.disk_size",
                       "\"options\": {\"disk_size\": \"10GB\"}", NULL,
                       "%s is an ext2 mount without options.disk_size; the configuration tool "
                       "requires one (at least 5GB).",
                       path);
    }
    free(opath);
}

static bool str_is(json_t *o, const char *key, const char *want)
{
    json_t *v = json_object_get(o, key);
    return json_is_string(v) && !strcmp(json_string_value(v), want);
}

static void root_unionfs(struct pctx *c, json_t *mount)
{
    struct m_config_pos p = pos_value(c, "mount");
    size_t i;
    json_t *m, *root = NULL;
    json_array_foreach(mount, i, m)
    {
        if (!root && json_is_object(m) && str_is(m, "target", "/") && str_is(m, "type", "unionfs"))
            root = m;
    }
    if (!root) {
        m_cfg_diag_add(DIAGS(c), M_CONFIG_ERROR, "mount", p.line, p.column,
                       "no entry with \"target\": \"/\" and \"type\": \"unionfs\"",
                       "the root UnionFS of Occlum's template", NULL,
                       "mount has no root UnionFS (an entry with \"target\": \"/\" and "
                       "\"type\": \"unionfs\"); the configuration tool stops with \"Mount "
                       "configuration invalid\". Keep the root mount of Occlum's template.");
        return;
    }
    json_t *opts = json_object_get(root, "options");
    json_t *layers = json_is_object(opts) ? json_object_get(opts, "layers") : NULL;
    if (!json_is_array(layers)) {
        m_cfg_diag_add(DIAGS(c), M_CONFIG_ERROR, "mount", p.line, p.column,
                       "a root UnionFS without options.layers",
                       "options.layers with the image SEFS", NULL,
                       "The root UnionFS in mount has no options.layers; the configuration tool "
                       "stops with \"Mount configuration invalid\".");
        return;
    }
    json_t *l;
    json_array_foreach(layers, i, l)
    {
        json_t *lo = json_object_get(l, "options");
        json_t *mac = json_is_object(lo) ? json_object_get(lo, "MAC") : NULL;
        if (str_is(l, "target", "/") && str_is(l, "type", "sefs") && mac && !json_is_null(mac))
            return;
    }
    m_cfg_diag_add(DIAGS(c), M_CONFIG_ERROR, "mount", p.line, p.column,
                   "no image SEFS layer (target \"/\", type \"sefs\", options.MAC)",
                   "a layer {\"target\": \"/\", \"type\": \"sefs\", \"options\": {\"MAC\": \"\"}}",
                   NULL,
                   "The root UnionFS in mount has no image layer (\"target\": \"/\", \"type\": "
                   "\"sefs\" and an options.MAC); the configuration tool stops with \"Mount "
                   "configuration invalid\".");
}

static void section_mount(struct pctx *c, json_t *mount)
{
    size_t i;
    json_t *m;
    json_array_foreach(mount, i, m)
    {
        char *path = m_jpos_element("mount", i);
        if (!path) {
            DIAGS(c)->oom = true;
            return;
        }
        check_mount(c, m, path, true);
        free(path);
    }
    root_unionfs(c, mount);
}

/* ---------------------------------------------------------------------------
 * Rules across fields that hold on every platform
 * ------------------------------------------------------------------------- */

static void init_above_max(struct pctx *c, const char *ipath, const char *mpath, const char *itext,
                           const char *mtext, struct m_config_pos ip, bool sizes)
{
    /* In tool mode derive.c reports the platforms where the tool refuses. */
    enum m_config_severity sev = c->tool ? M_CONFIG_WARNING : M_CONFIG_ERROR;
    char found[128], expected[160];
    snprintf(found, sizeof found, "%s%s%s larger than %s%s%s", sizes ? "\"" : "", itext,
             sizes ? "\"" : "", sizes ? "\"" : "", mtext, sizes ? "\"" : "");
    snprintf(expected, sizeof expected, "%s at most %s", ipath, mpath);
    m_cfg_diag_add(DIAGS(c), sev, ipath, ip.line, ip.column, found, expected, NULL,
                   "%s (%s) is larger than %s (%s): the initial amount cannot exceed the "
                   "maximum. Raise %s to at least %s, or lower %s.%s",
                   ipath, itext, mpath, mtext, mpath, itext, ipath,
                   c->tool ? " Occlum's tool accepts this on some platforms; see the platform "
                             "diagnostics."
                           : "");
}

static void align_check(struct pctx *c, const char *path, const struct m_config_size *s)
{
    if (!s->set || s->nbytes % M_CONFIG_PAGE_SIZE == 0)
        return;
    char up[48];
    uint64_t r = s->nbytes + (M_CONFIG_PAGE_SIZE - s->nbytes % M_CONFIG_PAGE_SIZE);
    m_config_size_format(r < s->nbytes ? s->nbytes - s->nbytes % M_CONFIG_PAGE_SIZE : r, up,
                         sizeof up);
    char found[80];
    snprintf(found, sizeof found, "\"%s\"", s->text);
    m_cfg_diag_add(DIAGS(c), late_sev(c, true), path, s->pos.line, s->pos.column, found,
                   "a multiple of 4KB", NULL,
                   "%s \"%s\" is not a multiple of 4KB, the enclave page size. The SGX SDK's "
                   "signing tool (sgx_sign) rejects stack, heap and reserved-memory sizes that "
                   "are not page-aligned, so occlum build would fail when it signs the enclave. "
                   "Use a multiple of 4KB, for example \"%s\".%s",
                   path, s->text, up, later_stage_note(c, true));
}

static void cross_checks(struct pctx *c)
{
    struct m_config *cfg = c->cfg;
    if (cfg->kernel_heap.set && cfg->kernel_heap_max.set &&
        cfg->kernel_heap.nbytes > cfg->kernel_heap_max.nbytes)
        init_above_max(c, "resource_limits.kernel_space_heap_size",
                       "resource_limits.kernel_space_heap_max_size", cfg->kernel_heap.text,
                       cfg->kernel_heap_max.text, cfg->kernel_heap.pos, true);
    if (cfg->user_space.set && cfg->user_space_max.set &&
        cfg->user_space.nbytes > cfg->user_space_max.nbytes)
        init_above_max(c, "resource_limits.user_space_size", "resource_limits.user_space_max_size",
                       cfg->user_space.text, cfg->user_space_max.text, cfg->user_space.pos, true);
    if (cfg->init_threads.set && cfg->max_threads.set &&
        cfg->init_threads.value > cfg->max_threads.value) {
        char a[24], b[24];
        snprintf(a, sizeof a, "%" PRIu64, cfg->init_threads.value);
        snprintf(b, sizeof b, "%" PRIu64, cfg->max_threads.value);
        init_above_max(c, "resource_limits.init_num_of_threads",
                       "resource_limits.max_num_of_threads", a, b, cfg->init_threads.pos, false);
    }
    align_check(c, "resource_limits.kernel_space_stack_size", &cfg->kernel_stack);
    align_check(c, "resource_limits.kernel_space_heap_size", &cfg->kernel_heap);
    align_check(c, "resource_limits.kernel_space_heap_max_size", &cfg->kernel_heap_max);
    align_check(c, "resource_limits.user_space_size", &cfg->user_space);
    align_check(c, "resource_limits.user_space_max_size", &cfg->user_space_max);

    cfg->memory_ok = cfg->kernel_stack.set && cfg->kernel_heap.set && cfg->user_space.set &&
                     cfg->max_threads.set && !cfg->kernel_heap_max.bad &&
                     !cfg->user_space_max.bad && !cfg->init_threads.bad;
}

/* ---------------------------------------------------------------------------
 * Entry points
 * ------------------------------------------------------------------------- */

static void parse_root(struct pctx *c)
{
    json_t *root = c->root;
    static const struct spec sp_rl = {"resource_limits",
                                      K_OBJECT,
                                      R_GUIDE,
                                      false,
                                      false,
                                      "{\"kernel_space_heap_size\": \"32MB\", ...}"};
    static const struct spec sp_pr = {
        "process", K_OBJECT, R_GUIDE, false, false, "{\"default_stack_size\": \"4MB\", ...}"};
    static const struct spec sp_ep = {"entry_points", K_ANY, R_TOOL, false, false, "[\"/bin\"]"};
    static const struct spec sp_env = {
        "env", K_ANY, R_TOOL, false, false, "{\"default\": [\"OCCLUM=yes\"], \"untrusted\": []}"};
    static const struct spec sp_md = {
        "metadata", K_OBJECT, R_TOOL,
        false,      false,    "{\"product_id\": 0, \"version_number\": 0, ...}"};
    static const struct spec sp_ft = {"feature", K_OBJECT, R_TOOL,
                                      false,     false,    "{\"enable_edmm\": false}"};
    static const struct spec sp_mn = {
        "mount", K_ARRAY, R_TOOL, false, false, "[ ...the root UnionFS of Occlum's template... ]"};
    char *p;
    json_t *rl = get(c, root, "", &sp_rl, &p);
    free(p);
    json_t *pr = get(c, root, "", &sp_pr, &p);
    free(p);
    json_t *ep = get(c, root, "", &sp_ep, &p);
    free(p);
    json_t *env = get(c, root, "", &sp_env, &p);
    free(p);
    json_t *md = get(c, root, "", &sp_md, &p);
    free(p);
    json_t *ft = get(c, root, "", &sp_ft, &p);
    free(p);
    json_t *mn = get(c, root, "", &sp_mn, &p);
    free(p);

    /* A missing section is reported once, not once per field in it. */
    if (rl)
        section_limits(c, rl);
    if (pr)
        section_process(c, pr);
    if (ep)
        section_entry_points(c, ep);
    if (env)
        section_env(c, env);
    if (md)
        section_metadata(c, md);
    if (ft)
        section_feature(c, ft);
    if (mn)
        section_mount(c, mn);
    unknown_keys(c, root, "", keys_root);
    duplicates(c);
    cross_checks(c);
}

int m_config_parse(const char *buf, size_t nbytes, const char *name, enum m_config_compat compat,
                   struct m_config **out)
{
    *out = NULL;
    struct m_config *cfg = calloc(1, sizeof *cfg);
    if (!cfg)
        return ENOMEM;
    cfg->compat = compat;
    cfg->name = strdup(name ? name : "Occlum.json");
    if (!cfg->name) {
        free(cfg);
        return ENOMEM;
    }
    struct pctx c = {
        .cfg = cfg, .buf = buf, .nbytes = nbytes, .tool = compat == M_CONFIG_COMPAT_OCCLUM_TOOL};
    json_error_t err;
    /* No JSON_DECODE_ANY: the top level must be an object or an array. */
    c.root = json_loadb(buf, nbytes, 0, &err);
    if (!c.root) {
        /* jansson's texts end in "near 'TOKEN'" or "near end of file". */
        const char *near = strstr(err.text, "near ");
        bool eof = strstr(err.text, "end of file") != NULL;
        const char *hint = "";
        if (eof)
            hint = " The text ends before every object and array is closed (a truncated file, or "
                   "a missing '}' or ']').";
        else if (near && !strncmp(near, "near '/", 7))
            hint = " Comments (// ... or /* ... */) are not JSON: remove them.";
        else if (strstr(err.text, "too big integer"))
            hint = " The number does not fit in 64 bits; no Occlum field takes one that large "
                   "(counts stop at 4294967295).";
        else if (near && (!strcmp(near, "near '}'") || !strcmp(near, "near ']'")))
            hint = " A comma before a closing '}' or ']' (a trailing comma) is not JSON: remove "
                   "it.";
        m_cfg_diag_add(&cfg->diags, M_CONFIG_ERROR, "", err.line > 0 ? err.line : 1,
                       err.column > 0 ? err.column : 1,
                       eof    ? "the end of the file"
                       : near ? near + 5
                              : err.text,
                       "a complete JSON object, without comments or trailing commas", NULL,
                       "The file is not valid JSON: %s.%s Occlum reads Occlum.json with a "
                       "strict JSON parser, so occlum build would fail; fix the syntax first.",
                       err.text, hint);
        *out = cfg;
        return cfg->diags.oom ? ENOMEM : 0;
    }
    if (!json_is_object(c.root)) {
        m_cfg_diag_add(&cfg->diags, M_CONFIG_ERROR, "", 1, 1, "an array at the top level",
                       "an object ({ ... }) at the top level", NULL,
                       "The file holds a JSON array; an Occlum.json is one object with "
                       "resource_limits, process, metadata and the other sections.");
        json_decref(c.root);
        *out = cfg;
        return cfg->diags.oom ? ENOMEM : 0;
    }
    cfg->json_ok = true;
    if (m_jpos_build(buf, nbytes, &c.idx)) {
        json_decref(c.root);
        m_config_free(cfg);
        return ENOMEM;
    }
    parse_root(&c);
    m_config_diags_sort(&cfg->diags);
    m_jpos_free(&c.idx);
    json_decref(c.root);
    if (cfg->diags.oom) {
        m_config_free(cfg);
        return ENOMEM;
    }
    *out = cfg;
    return 0;
}

#define M_CONFIG_MAX_FILE (64u << 20)

int m_config_load(const char *path, enum m_config_compat compat, struct m_config **out)
{
    *out = NULL;
    bool in = !strcmp(path, "-");
    int fd = in ? STDIN_FILENO : open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno;
    struct stat st;
    if (!in && fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
        close(fd);
        return EISDIR;
    }
    size_t cap = 64 << 10, n = 0;
    char *buf = malloc(cap);
    int rc = buf ? 0 : ENOMEM;
    while (!rc) {
        if (n == cap) {
            if (cap >= M_CONFIG_MAX_FILE) {
                rc = EFBIG;
                break;
            }
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                rc = ENOMEM;
                break;
            }
            buf = nb;
            cap *= 2;
        }
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            rc = errno;
        } else if (r == 0) {
            break;
        } else {
            n += (size_t)r;
        }
    }
    if (!in)
        close(fd);
    if (!rc)
        rc = m_config_parse(buf, n, in ? "<stdin>" : path, compat, out);
    free(buf);
    return rc;
}

void m_config_free(struct m_config *cfg)
{
    if (!cfg)
        return;
    m_config_diags_free(&cfg->diags);
    free(cfg->cache_sizes);
    free(cfg->name);
    free(cfg);
}
