/*
 * test_config.c - the config layer, rule by rule: size strings, the JSON
 * position index, every validation error and warning (with its path, line
 * and column), the derivation on EDMM, non-EDMM and SIM platforms in guide
 * and occlum-tool mode, each "takes no effect" case, and the Enclave.xml,
 * JSON and explain outputs.  The inputs are Occlum's template and the
 * guide's example from tests/data/config, and variants of the template made
 * by replacing one line of it.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "config/config.h"
#include "config/config_int.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---------------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------------- */

static char data_dir[4096];
static char *template_text;

static const char *data_path(const char *name)
{
    static char buf[4200];
    snprintf(buf, sizeof buf, "%s/%s", data_dir, name);
    return buf;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    size_t got = fread(s, 1, (size_t)n, f);
    s[got] = '\0';
    fclose(f);
    return s;
}

/* The template with the one occurrence of `from` replaced by `to`. */
static char *variant(const char *from, const char *to)
{
    const char *at = strstr(template_text, from);
    assert_non_null(at);
    assert_null(strstr(at + 1, from)); /* exactly one occurrence */
    size_t pre = (size_t)(at - template_text);
    size_t n = strlen(template_text) - strlen(from) + strlen(to);
    char *s = malloc(n + 1);
    memcpy(s, template_text, pre);
    strcpy(s + pre, to);
    strcat(s, at + strlen(from));
    return s;
}

static struct m_config *parse(const char *text, enum m_config_compat compat)
{
    struct m_config *cfg = NULL;
    assert_int_equal(m_config_parse(text, strlen(text), "test.json", compat, &cfg), 0);
    assert_non_null(cfg);
    return cfg;
}

static struct m_config *parse_variant(const char *from, const char *to, enum m_config_compat c)
{
    char *s = variant(from, to);
    struct m_config *cfg = parse(s, c);
    free(s);
    return cfg;
}

static struct m_config *load(const char *name, enum m_config_compat compat)
{
    struct m_config *cfg = NULL;
    assert_int_equal(m_config_load(data_path(name), compat, &cfg), 0);
    return cfg;
}

static const struct m_config_diag *find(const struct m_config_diags *d, const char *path,
                                        enum m_config_severity sev)
{
    for (size_t i = 0; i < d->n; i++)
        if (!strcmp(d->v[i].path, path) && d->v[i].severity == sev)
            return &d->v[i];
    return NULL;
}

static const struct m_config_diag *expect_diag(const struct m_config_diags *d, const char *path,
                                               enum m_config_severity sev, int line, int col,
                                               const char *in_message)
{
    const struct m_config_diag *x = find(d, path, sev);
    if (!x) {
        for (size_t i = 0; i < d->n; i++)
            fprintf(stderr, "  have: %s %s: %s\n", d->v[i].severity ? "W" : "E", d->v[i].path,
                    d->v[i].message);
        fail_msg("no %s for %s", sev == M_CONFIG_ERROR ? "error" : "warning", path);
    }
    if (line)
        assert_int_equal(x->line, line);
    if (col)
        assert_int_equal(x->column, col);
    if (in_message && !strstr(x->message, in_message))
        fail_msg("message of %s lacks \"%s\": %s", path, in_message, x->message);
    return x;
}

static bool has_note(const struct m_config_notes *n, const char *field, const char *text)
{
    for (size_t i = 0; i < n->n; i++)
        if (!strcmp(n->v[i].field, field) && (!text || strstr(n->v[i].text, text)))
            return true;
    return false;
}

static struct m_config_opts opts(enum m_config_compat c, enum m_config_edmm e,
                                 enum m_config_sgx_mode m)
{
    return (struct m_config_opts){c, e, m};
}

static void derive(const struct m_config *cfg, enum m_config_edmm e, enum m_config_sgx_mode m,
                   struct m_config_layout *l)
{
    struct m_config_opts o = opts(cfg->compat, e, m);
    assert_int_equal(m_config_derive(cfg, &o, l), 0);
}

#define MB    (1ULL << 20)
#define GB    (1ULL << 30)
#define G     M_CONFIG_COMPAT_GUIDE
#define T     M_CONFIG_COMPAT_OCCLUM_TOOL
#define ON    M_CONFIG_EDMM_ON
#define OFF   M_CONFIG_EDMM_OFF
#define FILEF M_CONFIG_EDMM_FROM_FILE
#define HW    M_CONFIG_SGX_HW
#define SIM   M_CONFIG_SGX_SIM

/* ---------------------------------------------------------------------------
 * Size strings
 * ------------------------------------------------------------------------- */

static void test_size_valid(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        uint64_t v;
    } ok[] = {
        {"0B", 0},
        {"4096B", 4096},
        {"1KB", 1024},
        {"64MB", 64 * MB},
        {"1GB", GB},
        {"2TB", 2ULL << 40},
        {" 1 GB ", GB},
        {"\t32MB\n", 32 * MB},
        {"4 MB", 4 * MB},
        {"007MB", 7 * MB},
        {"16777215TB", 16777215ULL << 40},
        {"18446744073709551615B", UINT64_MAX},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        for (int c = 0; c < 2; c++) {
            uint64_t v = 1;
            assert_int_equal(
                m_config_size_parse(ok[i].s, strlen(ok[i].s), (enum m_config_compat)c, &v),
                M_CONFIG_SIZE_OK);
            assert_true(v == ok[i].v);
        }
    }
}

static void test_size_errors(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        enum m_config_size_status st;
    } bad[] = {
        {"", M_CONFIG_SIZE_EMPTY},
        {"   ", M_CONFIG_SIZE_EMPTY},
        {"MB", M_CONFIG_SIZE_NO_NUMBER},
        {"lotsMB", M_CONFIG_SIZE_NO_NUMBER},
        {"0x10MB", M_CONFIG_SIZE_NO_NUMBER},
        {"1e3MB", M_CONFIG_SIZE_NO_NUMBER},
        {"4 4MB", M_CONFIG_SIZE_NO_NUMBER},
        {"4 M B", M_CONFIG_SIZE_NO_NUMBER},
        {"-4MB", M_CONFIG_SIZE_NEGATIVE},
        {"-0B", M_CONFIG_SIZE_NEGATIVE},
        {"+4MB", M_CONFIG_SIZE_SIGN},
        {"1.5GB", M_CONFIG_SIZE_FRACTION},
        {"0.5 KB", M_CONFIG_SIZE_FRACTION},
        {"4096", M_CONFIG_SIZE_NO_UNIT},
        {"4mb", M_CONFIG_SIZE_UNIT_CASE},
        {"4Mb", M_CONFIG_SIZE_UNIT_CASE},
        {"4mB", M_CONFIG_SIZE_UNIT_CASE},
        {"1kb", M_CONFIG_SIZE_UNIT_CASE},
        {"1b", M_CONFIG_SIZE_UNIT_CASE},
        {"4MiB", M_CONFIG_SIZE_UNIT_UNKNOWN},
        {"4M", M_CONFIG_SIZE_UNIT_UNKNOWN},
        {"4K", M_CONFIG_SIZE_UNIT_UNKNOWN},
        {"4 bytes", M_CONFIG_SIZE_UNIT_UNKNOWN},
        {"4XB", M_CONFIG_SIZE_UNIT_UNKNOWN},
        {"16777216TB", M_CONFIG_SIZE_OVERFLOW},
        {"18446744073709551616B", M_CONFIG_SIZE_OVERFLOW},
        {"99999999999999999999MB", M_CONFIG_SIZE_OVERFLOW},
        {"17179869184GB", M_CONFIG_SIZE_OVERFLOW},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint64_t v = 0;
        enum m_config_size_status st =
            m_config_size_parse(bad[i].s, strlen(bad[i].s), M_CONFIG_COMPAT_GUIDE, &v);
        if (st != bad[i].st)
            fail_msg("\"%s\": status %d, expected %d", bad[i].s, st, bad[i].st);
        assert_non_null(m_config_size_why(st));
    }
}

/* Occlum's Rust parser also takes a '+' and Unicode blanks: tool mode only. */
static void test_size_tool_mode(void **state)
{
    (void)state;
    uint64_t v = 0;
    assert_int_equal(m_config_size_parse("+4MB", 4, T, &v), M_CONFIG_SIZE_OK);
    assert_true(v == 4 * MB);
    const char *nbsp = "\xC2\xA0"
                       "4\xE3\x80\x80MB\xE2\x80\x83";
    assert_int_equal(m_config_size_parse(nbsp, strlen(nbsp), T, &v), M_CONFIG_SIZE_OK);
    assert_true(v == 4 * MB);
    assert_int_not_equal(m_config_size_parse(nbsp, strlen(nbsp), G, &v), M_CONFIG_SIZE_OK);
    /* Everything the guide rejects for other reasons the tool rejects too. */
    assert_int_equal(m_config_size_parse("4mb", 3, T, &v), M_CONFIG_SIZE_UNIT_CASE);
    assert_int_equal(m_config_size_parse("-4MB", 4, T, &v), M_CONFIG_SIZE_NEGATIVE);
    assert_int_equal(m_config_size_parse("++4MB", 5, T, &v), M_CONFIG_SIZE_NO_NUMBER);
    assert_int_equal(m_config_size_parse("16777216TB", 10, T, &v), M_CONFIG_SIZE_OVERFLOW);
}

static void test_size_suggest_and_format(void **state)
{
    (void)state;
    static const struct {
        const char *in, *out; /* out NULL: no suggestion */
    } s[] = {
        {"4mb", "4MB"},    {"1.5GB", "1536MB"}, {"4096", "4KB"},   {"4MiB", "4MB"}, {"+4MB", "4MB"},
        {"0.5KB", "512B"}, {"32M", "32MB"},     {"2 gib", "2GB"},  {"0.3MB", NULL}, {"-4MB", NULL},
        {"lots", NULL},    {"4MB", NULL},       {"4 bogus", NULL},
    };
    char buf[48];
    for (size_t i = 0; i < sizeof s / sizeof s[0]; i++) {
        bool have = m_config_size_suggest(s[i].in, strlen(s[i].in), buf, sizeof buf);
        if (!s[i].out) {
            if (have)
                fail_msg("\"%s\": unexpected suggestion \"%s\"", s[i].in, buf);
        } else {
            assert_true(have);
            assert_string_equal(buf, s[i].out);
        }
    }
    assert_string_equal(m_config_size_format(0, buf, sizeof buf), "0B");
    assert_string_equal(m_config_size_format(4097, buf, sizeof buf), "4097B");
    assert_string_equal(m_config_size_format(600 * MB, buf, sizeof buf), "600MB");
    assert_string_equal(m_config_size_format(17 * GB, buf, sizeof buf), "17GB");
    assert_string_equal(m_config_size_format(1ULL << 40, buf, sizeof buf), "1TB");
    assert_string_equal(m_config_size_format(1536 * MB, buf, sizeof buf), "1536MB");
    assert_string_equal(m_config_size_format(UINT64_MAX, buf, sizeof buf), "18446744073709551615B");
}

/* ---------------------------------------------------------------------------
 * The position index
 * ------------------------------------------------------------------------- */

static void test_position_index(void **state)
{
    (void)state;
    const char *text = "{\n"
                       "  \"a\": {\"b\": [1, {\"c\": \"x\"}, [true, null]]},\n"
                       "  \"\\u00e9t\\u00e9\": \"\xC3\xA9\xC3\xA9\", \"d\": 2,\n"
                       "  \"odd key\": {\"e.f\": 3},\n"
                       "  \"a\": {\"b\": []}\n"
                       "}\n";
    struct m_jpos idx;
    assert_int_equal(m_jpos_build(text, strlen(text), &idx), 0);
    const struct m_jpos_entry *e = m_jpos_find(&idx, "");
    assert_non_null(e);
    assert_int_equal(e->vline, 1);
    assert_int_equal(e->vcol, 1);
    /* The duplicated "a": the later one counts. */
    e = m_jpos_find(&idx, "a");
    assert_non_null(e);
    assert_int_equal(e->kline, 5);
    assert_int_equal(e->kcol, 3);
    assert_int_equal(e->vline, 5);
    assert_int_equal(e->vcol, 8);
    e = m_jpos_find(&idx, "a.b[1].c");
    assert_non_null(e);
    assert_int_equal(e->vline, 2);
    assert_int_equal(e->vcol, 24);
    e = m_jpos_find(&idx, "a.b[2][1]");
    assert_non_null(e);
    assert_int_equal(e->vcol, 37);
    /* Escaped key decoded; columns count characters, not bytes. */
    e = m_jpos_find(&idx, "[\"\xC3\xA9t\xC3\xA9\"]");
    assert_non_null(e);
    assert_int_equal(e->vline, 3);
    assert_int_equal(e->vcol, 20);
    e = m_jpos_find(&idx, "d"); /* after two 2-byte characters */
    assert_non_null(e);
    assert_int_equal(e->kcol, 26);
    assert_int_equal(e->vcol, 31);
    e = m_jpos_find(&idx, "[\"odd key\"][\"e.f\"]");
    assert_non_null(e);
    assert_int_equal(e->vline, 4);
    assert_int_equal(e->vcol, 22);
    assert_null(m_jpos_find(&idx, "a.c"));
    /* One duplicate reported, not its children. */
    assert_int_equal(idx.ndups, 1);
    assert_string_equal(idx.dups[0].path, "a");
    assert_int_equal(idx.dups[0].first_line, 2);
    assert_int_equal(idx.dups[0].line, 5);
    m_jpos_free(&idx);
}

/* ---------------------------------------------------------------------------
 * Whole files
 * ------------------------------------------------------------------------- */

static void test_template_is_valid(void **state)
{
    (void)state;
    for (int c = 0; c < 2; c++) {
        struct m_config *cfg = load("occlum-template.json", (enum m_config_compat)c);
        assert_true(cfg->json_ok);
        assert_true(cfg->memory_ok);
        assert_int_equal(cfg->diags.n, 0);
        assert_true(cfg->kernel_heap.nbytes == 32 * MB);
        assert_true(cfg->kernel_stack.nbytes == MB);
        assert_true(cfg->user_space.nbytes == 300 * MB);
        assert_true(cfg->max_threads.value == 32);
        assert_false(cfg->init_threads.set);
        assert_false(cfg->kernel_heap_max.set);
        assert_true(cfg->debuggable.value);
        assert_false(cfg->enable_edmm.value);
        m_config_free(cfg);
    }
}

static void test_guide_example_is_valid(void **state)
{
    (void)state;
    struct m_config *cfg = load("guide-example.json", G);
    assert_int_equal(cfg->diags.n, 0);
    assert_true(cfg->kernel_heap_max.nbytes == 40 * MB);
    assert_true(cfg->user_space_max.nbytes == 600 * MB);
    assert_true(cfg->init_threads.value == 2);
    assert_true(cfg->max_threads.value == 64);
    m_config_free(cfg);
}

/* The guide prints its example with comments and a trailing comma. */
static void test_guide_verbatim_is_not_json(void **state)
{
    (void)state;
    struct m_config *cfg = load("guide-example-verbatim.jsonc", G);
    assert_false(cfg->json_ok);
    const struct m_config_diag *d = expect_diag(&cfg->diags, "", M_CONFIG_ERROR, 3, 45, "Comments");
    assert_string_equal(d->found, "'/'");
    m_config_free(cfg);
}

static void test_syntax_errors(void **state)
{
    (void)state;
    struct m_config *cfg = load("truncated.json", G);
    assert_false(cfg->json_ok);
    assert_false(cfg->memory_ok);
    expect_diag(&cfg->diags, "", M_CONFIG_ERROR, 0, 0, "ends before");
    assert_string_equal(cfg->diags.v[0].found, "the end of the file");
    m_config_free(cfg);

    cfg = load("trailing-comma.json", G);
    expect_diag(&cfg->diags, "", M_CONFIG_ERROR, 7, 5, "trailing comma");
    m_config_free(cfg);

    cfg = load("top-level-array.json", G);
    expect_diag(&cfg->diags, "", M_CONFIG_ERROR, 1, 1, "array");
    m_config_free(cfg);

    cfg = parse("\"just a string\"", G);
    assert_int_equal(cfg->diags.nerrors, 1);
    m_config_free(cfg);

    cfg = parse("", G);
    assert_int_equal(cfg->diags.nerrors, 1);
    m_config_free(cfg);
}

static void test_missing_guide_required(void **state)
{
    (void)state;
    static const struct {
        const char *line, *path;
        int pline, pcol; /* where the enclosing object starts */
    } req[] = {
        {"        \"kernel_space_heap_size\": \"32MB\",\n",
         "resource_limits.kernel_space_heap_size", 2, 24},
        {"        \"kernel_space_stack_size\": \"1MB\",\n",
         "resource_limits.kernel_space_stack_size", 2, 24},
        {"        \"user_space_size\": \"300MB\",\n", "resource_limits.user_space_size", 2, 24},
        {",\n        \"max_num_of_threads\": 32", "resource_limits.max_num_of_threads", 2, 24},
        {"        \"default_stack_size\": \"4MB\",\n", "process.default_stack_size", 8, 16},
        {"        \"default_heap_size\": \"32MB\",\n", "process.default_heap_size", 8, 16},
        {",\n        \"default_mmap_size\": \"100MB\"", "process.default_mmap_size", 8, 16},
    };
    for (int c = 0; c < 2; c++) {
        for (size_t i = 0; i < sizeof req / sizeof req[0]; i++) {
            struct m_config *cfg = parse_variant(req[i].line, "", (enum m_config_compat)c);
            const struct m_config_diag *d =
                expect_diag(&cfg->diags, req[i].path, M_CONFIG_ERROR, req[i].pline, req[i].pcol,
                            "marks it Required");
            assert_string_equal(d->found, "nothing: the field is absent");
            assert_int_equal(cfg->diags.nerrors, 1);
            m_config_free(cfg);
        }
    }
    /* A whole section missing is one error, not one per field. */
    struct m_config *cfg = parse("{\"process\": {\"default_stack_size\": \"4MB\", "
                                 "\"default_heap_size\": \"4MB\", \"default_mmap_size\": \"4MB\"}}",
                                 G);
    expect_diag(&cfg->diags, "resource_limits", M_CONFIG_ERROR, 1, 1, "marks it Required");
    assert_null(find(&cfg->diags, "resource_limits.user_space_size", M_CONFIG_ERROR));
    assert_false(cfg->memory_ok);
    m_config_free(cfg);
}

static void test_missing_tool_required(void **state)
{
    (void)state;
    struct m_config *cfg = load("guide-memory-section.json", G);
    static const char *const sections[] = {"entry_points", "env", "metadata", "feature", "mount"};
    for (size_t i = 0; i < 5; i++)
        expect_diag(&cfg->diags, sections[i], M_CONFIG_ERROR, 1, 1, "gen_internal_conf");
    assert_int_equal(cfg->diags.nerrors, 5);
    assert_true(cfg->memory_ok); /* a layout can still be shown */
    m_config_free(cfg);

    cfg = load("missing-required.json", G);
    expect_diag(&cfg->diags, "metadata.enable_kss", M_CONFIG_ERROR, 21, 17, "requires it");
    m_config_free(cfg);

    cfg = parse_variant("            \"high\": \"0x0\",\n            \"low\": \"0x0\"\n        },\n"
                        "        \"ext_prod_id\"",
                        "            \"high\": \"0x0\"\n        },\n        \"ext_prod_id\"", G);
    expect_diag(&cfg->diags, "metadata.family_id.low", M_CONFIG_ERROR, 29, 22, "requires it");
    m_config_free(cfg);
}

static void test_wrong_types(void **state)
{
    (void)state;
    struct m_config *cfg = load("wrong-types.json", G);
    const struct m_config_diag *d;
    d = expect_diag(&cfg->diags, "resource_limits.user_space_size", M_CONFIG_ERROR, 5, 28,
                    "write \"300B\"");
    assert_string_equal(d->found, "the number 300");
    d = expect_diag(&cfg->diags, "resource_limits.max_num_of_threads", M_CONFIG_ERROR, 6, 31,
                    "Write 32 without quotes");
    assert_string_equal(d->found, "the string \"32\"");
    expect_diag(&cfg->diags, "resource_limits.kernel_space_stack_size", M_CONFIG_ERROR, 4, 36,
                "must be a size string");
    expect_diag(&cfg->diags, "metadata.debuggable", M_CONFIG_ERROR, 25, 23,
                "Write true without quotes");
    expect_diag(&cfg->diags, "feature.enable_edmm", M_CONFIG_ERROR, 40, 24, "true or false");
    expect_diag(&cfg->diags, "process", M_CONFIG_ERROR, 8, 16, "must be an object");
    assert_false(cfg->memory_ok);
    assert_true(cfg->user_space.bad);
    m_config_free(cfg);

    /* null: "not set" for the tool's Option<> fields, an error elsewhere. */
    cfg = parse_variant("\"max_num_of_threads\": 32",
                        "\"max_num_of_threads\": 32, "
                        "\"user_space_max_size\": null, \"init_num_of_threads\": null",
                        G);
    assert_int_equal(cfg->diags.n, 0);
    assert_false(cfg->user_space_max.set);
    m_config_free(cfg);
    cfg = parse_variant("\"max_num_of_threads\": 32", "\"max_num_of_threads\": null", G);
    expect_diag(&cfg->diags, "resource_limits.max_num_of_threads", M_CONFIG_ERROR, 6, 31, "null");
    m_config_free(cfg);
    cfg = parse_variant("\"enable_edmm\": false", "\"enable_edmm\": null", G);
    expect_diag(&cfg->diags, "feature.enable_edmm", M_CONFIG_ERROR, 0, 0, "null");
    m_config_free(cfg);
}

static void test_size_errors_in_file(void **state)
{
    (void)state;
    struct m_config *cfg = load("lowercase-units.json", G);
    const struct m_config_diag *d;
    d = expect_diag(&cfg->diags, "resource_limits.user_space_size", M_CONFIG_ERROR, 5, 28,
                    "\"300mb\"");
    assert_string_equal(d->found, "\"300mb\"");
    assert_non_null(strstr(d->message, "Write \"300MB\""));
    expect_diag(&cfg->diags, "resource_limits.kernel_space_heap_size", M_CONFIG_ERROR, 3, 35,
                "upper case");
    expect_diag(&cfg->diags, "resource_limits.kernel_space_stack_size", M_CONFIG_ERROR, 4, 36,
                "\"1KB\"");
    expect_diag(&cfg->diags, "process.default_stack_size", M_CONFIG_ERROR, 9, 31, "\"4MB\"");
    expect_diag(&cfg->diags, "process.default_heap_size", M_CONFIG_ERROR, 10, 30, "\"32MB\"");
    expect_diag(&cfg->diags, "process.default_mmap_size", M_CONFIG_ERROR, 11, 30,
                "If you meant bytes, write \"100MB\"");
    assert_int_equal(cfg->diags.nerrors, 6);
    m_config_free(cfg);

    cfg = load("negative.json", G);
    expect_diag(&cfg->diags, "resource_limits.user_space_size", M_CONFIG_ERROR, 5, 28,
                "cannot be negative");
    expect_diag(&cfg->diags, "resource_limits.max_num_of_threads", M_CONFIG_ERROR, 6, 31,
                "cannot be negative");
    m_config_free(cfg);

    cfg = load("fractional.json", G);
    expect_diag(&cfg->diags, "resource_limits.user_space_size", M_CONFIG_ERROR, 5, 28,
                "Write \"1536MB\"");
    d = expect_diag(&cfg->diags, "resource_limits.kernel_space_heap_size", M_CONFIG_ERROR, 3, 35,
                    "fractions");
    assert_null(strstr(d->message, "Write")); /* 0.3MB is no whole number of bytes */
    d = expect_diag(&cfg->diags, "resource_limits.max_num_of_threads", M_CONFIG_ERROR, 6, 31,
                    "whole number");
    assert_string_equal(d->found, "the number 32.5");
    d = expect_diag(&cfg->diags, "resource_limits.init_num_of_threads", M_CONFIG_ERROR, 7, 32,
                    "whole number");
    assert_string_equal(d->found, "the number 2.0"); /* quoted as written */
    m_config_free(cfg);

    cfg = load("overflow.json", G);
    d = expect_diag(&cfg->diags, "resource_limits.user_space_size", M_CONFIG_ERROR, 5, 28,
                    "\"99999999999999999999MB\"");
    assert_non_null(strstr(d->message, "2^64 - 1"));
    expect_diag(&cfg->diags, "resource_limits.user_space_max_size", M_CONFIG_ERROR, 7, 32,
                "\"16777216TB\"");
    expect_diag(&cfg->diags, "resource_limits.max_num_of_threads", M_CONFIG_ERROR, 6, 31,
                "4294967295");
    m_config_free(cfg);

    /* Blanks are fine; a '+' only for the tool. */
    cfg = load("blanks-and-sign.json", G);
    assert_int_equal(cfg->diags.nerrors, 1);
    expect_diag(&cfg->diags, "resource_limits.kernel_space_stack_size", M_CONFIG_ERROR, 4, 36,
                "'+'");
    assert_true(cfg->user_space.nbytes == 300 * MB);
    assert_string_equal(cfg->user_space.text, "300 MB");
    m_config_free(cfg);
    cfg = load("blanks-and-sign.json", T);
    assert_int_equal(cfg->diags.n, 0);
    assert_true(cfg->kernel_stack.nbytes == MB);
    m_config_free(cfg);
}

static void test_count_limits(void **state)
{
    (void)state;
    struct m_config *cfg =
        parse_variant("\"max_num_of_threads\": 32", "\"max_num_of_threads\": 4294967295", G);
    assert_int_equal(cfg->diags.nerrors, 0);
    assert_true(cfg->max_threads.value == 4294967295u);
    m_config_free(cfg);
    cfg = parse_variant("\"max_num_of_threads\": 32", "\"max_num_of_threads\": 1e2", G);
    expect_diag(&cfg->diags, "resource_limits.max_num_of_threads", M_CONFIG_ERROR, 6, 31, "1e2");
    m_config_free(cfg);
    /* ProdID and ISVSVN are 16 bits in SGX: sgx_sign, not the tool, refuses. */
    cfg = load("bad-metadata.json", G);
    expect_diag(&cfg->diags, "metadata.product_id", M_CONFIG_ERROR, 25, 23, "65535");
    m_config_free(cfg);
    cfg = load("bad-metadata.json", T);
    expect_diag(&cfg->diags, "metadata.product_id", M_CONFIG_WARNING, 25, 23, "65535");
    m_config_free(cfg);
    cfg = parse_variant("\"pkru\": 0", "\"pkru\": 3", G);
    expect_diag(&cfg->diags, "feature.pkru", M_CONFIG_WARNING, 0, 0, "documented values");
    assert_int_equal(cfg->diags.nerrors, 0);
    m_config_free(cfg);
}

static void test_unknown_and_duplicate_fields(void **state)
{
    (void)state;
    struct m_config *cfg = load("unknown-fields.json", G);
    assert_int_equal(cfg->diags.nerrors, 0);
    expect_diag(&cfg->diags, "resource_limits.user_space_max_sise", M_CONFIG_WARNING, 7, 9,
                "Did you mean user_space_max_size?");
    expect_diag(&cfg->diags, "resource_limits.default_heap_size", M_CONFIG_WARNING, 8, 9,
                "It belongs in process.");
    expect_diag(&cfg->diags, "feature.enable_edm", M_CONFIG_WARNING, 0, 0,
                "Did you mean enable_edmm?");
    expect_diag(&cfg->diags, "extra_section", M_CONFIG_WARNING, 0, 0, "ignores it");
    m_config_free(cfg);

    cfg = load("duplicate-key.json", G);
    const struct m_config_diag *d = expect_diag(&cfg->diags, "resource_limits.user_space_size",
                                                M_CONFIG_ERROR, 6, 9, "line 5 and line 6");
    (void)d;
    assert_true(cfg->user_space.nbytes == 400 * MB); /* the later value, as jansson keeps */
    m_config_free(cfg);

    /* Outside the tool's structs a repeated key is only a warning. */
    cfg = parse_variant("\"OCCLUM=yes\"\n        ],", "\"OCCLUM=yes\"\n        ], \"default\": [],",
                        G);
    expect_diag(&cfg->diags, "env.default", M_CONFIG_WARNING, 0, 0, "later value");
    assert_int_equal(cfg->diags.nerrors, 0);
    m_config_free(cfg);

    cfg = parse_variant("\"max_num_of_threads\": 32",
                        "\"max_num_of_threads\": 32, \"marshal_buffer_size\": \"1MB\"", G);
    expect_diag(&cfg->diags, "resource_limits.marshal_buffer_size", M_CONFIG_WARNING, 0, 0,
                "ms_buffer");
    m_config_free(cfg);
}

static void test_init_above_max(void **state)
{
    (void)state;
    struct m_config *cfg = load("init-above-max.json", G);
    expect_diag(&cfg->diags, "resource_limits.kernel_space_heap_size", M_CONFIG_ERROR, 3, 35,
                "cannot exceed the maximum");
    expect_diag(&cfg->diags, "resource_limits.user_space_size", M_CONFIG_ERROR, 5, 28,
                "Raise resource_limits.user_space_max_size to at least 2GB");
    expect_diag(&cfg->diags, "resource_limits.init_num_of_threads", M_CONFIG_ERROR, 9, 32,
                "(100) is larger than");
    assert_int_equal(cfg->diags.nerrors, 3);
    m_config_free(cfg);
    /* The tool accepts all three on some platform: warnings only here. */
    cfg = load("init-above-max.json", T);
    assert_int_equal(cfg->diags.nerrors, 0);
    assert_int_equal(cfg->diags.nwarnings, 3);
    m_config_free(cfg);
}

static void test_alignment(void **state)
{
    (void)state;
    struct m_config *cfg = load("unaligned.json", G);
    expect_diag(&cfg->diags, "resource_limits.kernel_space_heap_size", M_CONFIG_ERROR, 3, 35,
                "\"1004KB\"");
    expect_diag(&cfg->diags, "resource_limits.user_space_size", M_CONFIG_ERROR, 5, 28, "sgx_sign");
    m_config_free(cfg);
    cfg = load("unaligned.json", T);
    assert_int_equal(cfg->diags.nerrors, 0);
    expect_diag(&cfg->diags, "resource_limits.user_space_size", M_CONFIG_WARNING, 5, 28,
                "gen_internal_conf accepts it");
    m_config_free(cfg);
}

static void test_metadata_and_mounts(void **state)
{
    (void)state;
    struct m_config *cfg = load("bad-metadata.json", G);
    expect_diag(&cfg->diags, "metadata.ext_prod_id.high", M_CONFIG_ERROR, 34, 21, "panics");
    expect_diag(&cfg->diags, "metadata.family_id.low", M_CONFIG_ERROR, 31, 20, "64-bit");
    m_config_free(cfg);
    /* With KSS off the ids are ignored: a warning. */
    cfg = parse_variant("\"low\": \"0x0\"\n        },\n        \"ext_prod_id\"",
                        "\"low\": \"zz\"\n        },\n        \"ext_prod_id\"", G);
    expect_diag(&cfg->diags, "metadata.family_id.low", M_CONFIG_WARNING, 31, 20,
                "enable_kss is false");
    m_config_free(cfg);
    /* The tool strips every leading "0x" before parsing. */
    cfg = parse_variant("\"enable_kss\": false", "\"enable_kss\": true", G);
    assert_int_equal(cfg->diags.n, 0);
    m_config_free(cfg);

    cfg = load("bad-mounts.json", G);
    expect_diag(&cfg->diags, "mount", M_CONFIG_ERROR, 45, 14, "root UnionFS");
    expect_diag(&cfg->diags, "mount[4]", M_CONFIG_ERROR, 80, 9, "ext2");
    expect_diag(&cfg->diags, "mount[5].options.cache_size", M_CONFIG_ERROR, 88, 31, "192KB");
    assert_int_equal(cfg->ncache_sizes, 1); /* the 64MB one, checked per platform */
    m_config_free(cfg);

    cfg = parse_variant("\"type\": \"devfs\"", "\"type\": 7", G);
    expect_diag(&cfg->diags, "mount[3].type", M_CONFIG_ERROR, 0, 0, "must be a string");
    m_config_free(cfg);

    cfg = parse_variant("\"/bin\"", "\"bin\"", G);
    expect_diag(&cfg->diags, "entry_points[0]", M_CONFIG_ERROR, 14, 9, "absolute path");
    m_config_free(cfg);
    cfg = parse_variant("\"/bin\"", "\"bin\"", T);
    expect_diag(&cfg->diags, "entry_points[0]", M_CONFIG_WARNING, 14, 9, "absolute path");
    m_config_free(cfg);
}

static void test_load_errors(void **state)
{
    (void)state;
    struct m_config *cfg = NULL;
    assert_int_equal(m_config_load(data_path("no-such-file.json"), G, &cfg), ENOENT);
    assert_null(cfg);
    assert_int_equal(m_config_load(data_dir, G, &cfg), EISDIR);
    assert_null(cfg);
}

/* ---------------------------------------------------------------------------
 * Derivation
 * ------------------------------------------------------------------------- */

static void test_derive_guide_example_edmm(void **state)
{
    (void)state;
    struct m_config *cfg = load("guide-example.json", G);
    struct m_config_layout l;
    derive(cfg, ON, HW, &l);
    assert_true(l.edmm);
    assert_string_equal(m_config_platform_name(&l), "EDMM");
    assert_true(l.kernel_stack.init == MB && l.kernel_stack.max == MB);
    assert_true(l.kernel_heap.init == 4 * MB);
    assert_true(l.kernel_heap.max == GB); /* max(40MB, 1GB) */
    assert_true(l.user_space.init == MB);
    assert_true(l.user_space.max == 16 * GB); /* max(600MB, 16GB) */
    assert_true(l.threads.init == 2);
    assert_true(l.threads.max == 4096); /* max(64, 4096) */
    assert_int_equal(l.tcs_min_pool, 2);
    assert_true(l.reserved_mem_nbytes == MB);
    assert_true(l.has_user_region);
    assert_true(l.user_region_nbytes == 17 * GB);
    assert_string_equal(l.misc_select, "1");
    assert_string_equal(l.misc_mask, "0xFFFFFFFF");
    assert_true(l.startup_nbytes == 4 * MB + MB + 2 * MB);
    /* Notes 1: configured maxima below the defaults do not limit. */
    assert_true(has_note(&l.no_effect, "resource_limits.kernel_space_heap_max_size", "Notes 1"));
    assert_true(has_note(&l.no_effect, "resource_limits.user_space_max_size", "Notes 1"));
    assert_true(has_note(&l.no_effect, "resource_limits.max_num_of_threads", "Notes 1"));
    assert_true(has_note(&l.no_effect, "process.default_mmap_size", "inoperative"));
    assert_true(has_note(&l.advice, "", "Notes 4"));
    assert_non_null(strstr(l.kernel_heap.max_from, "default 1GB"));
    assert_int_equal(l.diags.n, 0);
    m_config_layout_free(&l);
    m_config_free(cfg);
}

static void test_derive_guide_example_non_edmm(void **state)
{
    (void)state;
    struct m_config *cfg = load("guide-example.json", G);
    struct m_config_layout l;
    derive(cfg, OFF, HW, &l);
    assert_false(l.edmm);
    assert_string_equal(m_config_platform_name(&l), "non-EDMM");
    assert_true(l.kernel_heap.init == 40 * MB && l.kernel_heap.max == 40 * MB);
    assert_true(l.user_space.init == 600 * MB && l.user_space.max == 600 * MB);
    assert_true(l.threads.init == 64 && l.threads.max == 64);
    assert_true(l.reserved_mem_nbytes == 600 * MB);
    assert_false(l.has_user_region);
    assert_string_equal(l.misc_select, "0");
    assert_string_equal(l.misc_mask, "0");
    /* The guide's "no longer takes effect" cases. */
    assert_true(
        has_note(&l.no_effect, "resource_limits.kernel_space_heap_size", "no longer takes effect"));
    assert_true(
        has_note(&l.no_effect, "resource_limits.user_space_size", "no longer takes effect"));
    assert_true(
        has_note(&l.no_effect, "resource_limits.init_num_of_threads", "does not take effect"));
    assert_true(has_note(&l.no_effect, "process.default_mmap_size", NULL));
    /* Notes 2: the static maxima are committed in full. */
    assert_true(has_note(&l.advice, "resource_limits.user_space_max_size", "Notes 2"));
    assert_true(has_note(&l.advice, "resource_limits.kernel_space_heap_max_size", "Notes 2"));
    m_config_layout_free(&l);
    m_config_free(cfg);
}

/* Only the legacy fields: the tool's defaults fill in the EDMM maxima. */
static void test_derive_template(void **state)
{
    (void)state;
    struct m_config *cfg = load("occlum-template.json", G);
    struct m_config_layout l;
    derive(cfg, ON, HW, &l);
    assert_true(l.kernel_heap.init == 32 * MB && l.kernel_heap.max == GB);
    assert_true(l.user_space.init == 300 * MB && l.user_space.max == 16 * GB);
    assert_true(l.threads.init == 16 && l.threads.max == 4096);
    assert_non_null(strstr(l.threads.init_from, "default 16"));
    assert_true(has_note(&l.advice, "resource_limits.kernel_space_heap_max_size", NULL));
    assert_true(has_note(&l.advice, "resource_limits.user_space_max_size", "\"600MB\""));
    assert_true(has_note(&l.advice, "resource_limits.init_num_of_threads", NULL));
    m_config_layout_free(&l);
    derive(cfg, OFF, HW, &l);
    assert_true(l.kernel_heap.init == 32 * MB && l.kernel_heap.max == 32 * MB);
    assert_true(l.user_space.init == 300 * MB && l.user_space.max == 300 * MB);
    assert_true(l.threads.init == 32 && l.threads.max == 32);
    assert_false(has_note(&l.no_effect, "resource_limits.kernel_space_heap_size", NULL));
    /* Not set, so nothing to ignore. */
    assert_false(has_note(&l.no_effect, "resource_limits.init_num_of_threads", NULL));
    m_config_layout_free(&l);
    /* Without --edmm/--no-edmm the file's feature.enable_edmm decides. */
    derive(cfg, FILEF, HW, &l);
    assert_false(l.edmm);
    m_config_layout_free(&l);
    m_config_free(cfg);
    cfg = load("feature-edmm.json", G);
    derive(cfg, FILEF, HW, &l);
    assert_true(l.edmm);
    m_config_layout_free(&l);
    m_config_free(cfg);
}

/* Notes 3: SGX_MODE=SIM takes precedence over EDMM; the tool disagrees
 * when feature.enable_edmm is true. */
static void test_derive_sim(void **state)
{
    (void)state;
    struct m_config *cfg = load("feature-edmm.json", G);
    struct m_config_layout l;
    derive(cfg, ON, SIM, &l);
    assert_false(l.edmm);
    assert_string_equal(m_config_platform_name(&l), "SIM");
    assert_true(l.kernel_heap.max == 32 * MB);
    assert_false(l.has_user_region);
    assert_true(has_note(&l.no_effect, "feature.enable_edmm", "Notes 3"));
    assert_non_null(strstr(l.platform_why, "--edmm has no effect"));
    m_config_layout_free(&l);
    derive(cfg, FILEF, SIM, &l);
    assert_false(l.edmm);
    m_config_layout_free(&l);
    /* --no-edmm wins over the file in guide mode... */
    derive(cfg, OFF, HW, &l);
    assert_false(l.edmm);
    assert_true(has_note(&l.no_effect, "feature.enable_edmm", "--no-edmm"));
    m_config_layout_free(&l);
    m_config_free(cfg);

    /* ...but not for Occlum's tool, which ORs the file's flag in. */
    cfg = load("feature-edmm.json", T);
    derive(cfg, OFF, SIM, &l);
    assert_true(l.edmm);
    assert_non_null(strstr(l.platform_why, "even with SGX_MODE=SIM"));
    m_config_layout_free(&l);
    derive(cfg, OFF, HW, &l);
    assert_true(l.edmm);
    m_config_layout_free(&l);
    m_config_free(cfg);
    cfg = load("occlum-template.json", T);
    derive(cfg, ON, SIM, &l);
    assert_false(l.edmm);
    m_config_layout_free(&l);
    derive(cfg, ON, HW, &l);
    assert_true(l.edmm);
    m_config_layout_free(&l);
    m_config_free(cfg);
}

static void test_derive_threads(void **state)
{
    (void)state;
    struct m_config_layout l;
    /* init 32: the guide takes min(32, 16); the tool takes 32. */
    struct m_config *cfg = load("many-init-threads.json", G);
    derive(cfg, ON, HW, &l);
    assert_true(l.threads.init == 16);
    assert_true(has_note(&l.advice, "resource_limits.init_num_of_threads", "above the tool's"));
    m_config_layout_free(&l);
    m_config_free(cfg);
    cfg = load("many-init-threads.json", T);
    derive(cfg, ON, HW, &l);
    assert_true(l.threads.init == 32);
    assert_int_equal(l.tcs_min_pool, 32);
    m_config_layout_free(&l);
    m_config_free(cfg);
    /* No init, max 8: the guide's default 16; the tool's min(16, 8). */
    cfg = load("few-threads.json", G);
    derive(cfg, ON, HW, &l);
    assert_true(l.threads.init == 16 && l.threads.max == 4096);
    m_config_layout_free(&l);
    m_config_free(cfg);
    cfg = load("few-threads.json", T);
    derive(cfg, ON, HW, &l);
    assert_true(l.threads.init == 8 && l.threads.max == 4096);
    m_config_layout_free(&l);
    m_config_free(cfg);
    /* A max above 4096 is kept on EDMM. */
    cfg = parse_variant("\"max_num_of_threads\": 32", "\"max_num_of_threads\": 5000", G);
    derive(cfg, ON, HW, &l);
    assert_true(l.threads.max == 5000);
    assert_false(has_note(&l.no_effect, "resource_limits.max_num_of_threads", NULL));
    m_config_layout_free(&l);
    m_config_free(cfg);
    /* The tool refuses an init above max(max, 4096) on EDMM. */
    cfg = parse_variant("\"max_num_of_threads\": 32",
                        "\"max_num_of_threads\": 32, \"init_num_of_threads\": 5000", T);
    derive(cfg, ON, HW, &l);
    expect_diag(&l.diags, "resource_limits.init_num_of_threads", M_CONFIG_ERROR, 6, 58,
                "wrong configuration");
    assert_string_equal(l.diags.v[0].platform, "EDMM");
    m_config_layout_free(&l);
    derive(cfg, OFF, HW, &l);
    assert_int_equal(l.diags.nerrors, 0);
    m_config_layout_free(&l);
    m_config_free(cfg);
    /* No thread at all: sgx_sign refuses TCSNum 0. */
    cfg = load("zero-threads.json", G);
    derive(cfg, OFF, HW, &l);
    expect_diag(&l.diags, "resource_limits.max_num_of_threads", M_CONFIG_ERROR, 6, 31, "TCS");
    m_config_layout_free(&l);
    derive(cfg, ON, HW, &l); /* EDMM starts with the default 16 */
    assert_int_equal(l.diags.n, 0);
    m_config_layout_free(&l);
    m_config_free(cfg);
    cfg = load("zero-threads.json", T);
    derive(cfg, ON, HW, &l); /* the tool's min(16, 0) */
    expect_diag(&l.diags, "resource_limits.max_num_of_threads", M_CONFIG_WARNING, 6, 31, "TCS");
    m_config_layout_free(&l);
    m_config_free(cfg);
}

static void test_derive_maxima(void **state)
{
    (void)state;
    struct m_config_layout l;
    /* A configured max above the default is the max on EDMM. */
    struct m_config *cfg =
        parse_variant("\"max_num_of_threads\": 32",
                      "\"max_num_of_threads\": 32, \"kernel_space_heap_max_size\": \"2GB\", "
                      "\"user_space_max_size\": \"32GB\"",
                      G);
    derive(cfg, ON, HW, &l);
    assert_true(l.kernel_heap.max == 2 * GB);
    assert_true(l.user_space.max == 32 * GB);
    assert_true(l.user_region_nbytes == 33 * GB);
    assert_false(has_note(&l.no_effect, "resource_limits.user_space_max_size", NULL));
    m_config_layout_free(&l);
    m_config_free(cfg);

    /* Legacy init above the default max: an error by the guide... */
    cfg = load("edmm-legacy-above-default.json", G);
    derive(cfg, ON, HW, &l);
    expect_diag(&l.diags, "resource_limits.kernel_space_heap_size", M_CONFIG_ERROR, 3, 35,
                "tool's default 1GB");
    expect_diag(&l.diags, "resource_limits.user_space_size", M_CONFIG_ERROR, 5, 28,
                "user_space_max_size of at least \"20GB\"");
    m_config_layout_free(&l);
    derive(cfg, OFF, HW, &l);
    assert_int_equal(l.diags.n, 0);
    m_config_layout_free(&l);
    m_config_free(cfg);
    /* ...while the tool raises the max to the init. */
    cfg = load("edmm-legacy-above-default.json", T);
    derive(cfg, ON, HW, &l);
    assert_int_equal(l.diags.n, 0);
    assert_true(l.kernel_heap.max == 2 * GB);
    assert_true(l.user_space.max == 20 * GB);
    m_config_layout_free(&l);
    m_config_free(cfg);

    /* Init equal to the max: the user region is not enlarged. */
    cfg = parse_variant("\"user_space_size\": \"300MB\"", "\"user_space_size\": \"16GB\"", G);
    derive(cfg, ON, HW, &l);
    assert_true(l.user_space.max == 16 * GB);
    assert_true(l.user_region_nbytes == 16 * GB);
    m_config_layout_free(&l);
    m_config_free(cfg);

    /* The tool refuses user_space_size > user_space_max_size even without
     * EDMM, and a kernel heap init above max(max, 1GB) on EDMM. */
    cfg = load("user-init-above-max.json", T);
    derive(cfg, OFF, HW, &l);
    expect_diag(&l.diags, "resource_limits.user_space_size", M_CONFIG_ERROR, 5, 28,
                "even without EDMM");
    assert_true(l.user_space.init == 2 * GB && l.user_space.max == GB);
    assert_true(l.reserved_mem_nbytes == GB);
    assert_true(l.startup_nbytes == 32 * MB + GB + 32 * MB); /* the reserved 1GB, not 2GB */
    m_config_layout_free(&l);
    derive(cfg, ON, HW, &l);
    assert_int_equal(l.diags.n, 0); /* max(1GB, 16GB) >= 2GB */
    m_config_layout_free(&l);
    m_config_free(cfg);
    cfg = parse_variant("\"kernel_space_heap_size\": \"32MB\"",
                        "\"kernel_space_heap_size\": \"3GB\", \"kernel_space_heap_max_size\": "
                        "\"2GB\"",
                        T);
    derive(cfg, ON, HW, &l);
    expect_diag(&l.diags, "resource_limits.kernel_space_heap_size", M_CONFIG_ERROR, 3, 35,
                "Some(\\\"2GB\\\")");
    m_config_layout_free(&l);
    derive(cfg, OFF, HW, &l);
    assert_int_equal(l.diags.n, 0);
    assert_true(l.kernel_heap.init == 2 * GB);
    m_config_layout_free(&l);
    m_config_free(cfg);

    /* A mount cache must fit in the kernel heap of the platform. */
    cfg = load("bad-mounts.json", G);
    derive(cfg, OFF, HW, &l);
    expect_diag(&l.diags, "mount[6].options.cache_size", M_CONFIG_ERROR, 95, 31, "32MB");
    m_config_layout_free(&l);
    derive(cfg, ON, HW, &l);
    assert_null(find(&l.diags, "mount[6].options.cache_size", M_CONFIG_ERROR));
    m_config_layout_free(&l);
    m_config_free(cfg);
}

static void test_derive_metadata(void **state)
{
    (void)state;
    struct m_config_layout l;
    struct m_config *cfg = parse_variant("\"debuggable\": true", "\"debuggable\": false", G);
    derive(cfg, OFF, HW, &l);
    assert_int_equal(l.disable_debug, 1);
    m_config_layout_free(&l);
    m_config_free(cfg);
    /* With KSS off, ids are written as 0 and noted. */
    char *s = variant("\"low\": \"0x0\"\n        },\n        \"ext_prod_id\"",
                      "\"low\": \"0x0x12\"\n        },\n        \"ext_prod_id\"");
    cfg = parse(s, G);
    derive(cfg, OFF, HW, &l);
    assert_true(l.isvfamilyid_l == 0);
    assert_true(has_note(&l.no_effect, "metadata.family_id", "enable_kss is false"));
    m_config_layout_free(&l);
    m_config_free(cfg);
    char *s2 = strdup(s);
    char *at = strstr(s2, "\"enable_kss\": false");
    memcpy(at, "\"enable_kss\": true ", strlen("\"enable_kss\": true "));
    cfg = parse(s2, G);
    assert_int_equal(cfg->diags.n, 0);
    derive(cfg, OFF, HW, &l);
    assert_int_equal(l.enable_kss, 1);
    assert_true(l.isvfamilyid_l == 0x12); /* every leading "0x" stripped */
    m_config_layout_free(&l);
    m_config_free(cfg);
    free(s);
    free(s2);
}

static void test_derive_refuses_invalid_memory(void **state)
{
    (void)state;
    struct m_config *cfg = load("lowercase-units.json", G);
    struct m_config_opts o = opts(G, ON, HW);
    struct m_config_layout l;
    assert_int_equal(m_config_derive(cfg, &o, &l), EINVAL);
    m_config_free(cfg);
}

static void test_check_both_platforms(void **state)
{
    (void)state;
    struct m_config *cfg = load("edmm-legacy-above-default.json", G);
    struct m_config_opts o = opts(G, FILEF, HW);
    struct m_config_diags d;
    assert_int_equal(m_config_check(cfg, &o, &d), 0);
    assert_int_equal(d.nerrors, 2);
    assert_string_equal(d.v[0].platform, "EDMM");
    m_config_diags_free(&d);
    o.edmm = OFF;
    assert_int_equal(m_config_check(cfg, &o, &d), 0);
    assert_int_equal(d.nerrors, 0);
    m_config_diags_free(&d);
    m_config_free(cfg);
    /* Sorted by place, no duplicates across platforms. */
    cfg = load("init-above-max.json", T);
    o = opts(T, FILEF, HW);
    assert_int_equal(m_config_check(cfg, &o, &d), 0);
    assert_int_equal(d.nerrors, 1);
    for (size_t i = 1; i < d.n; i++)
        assert_true(d.v[i - 1].line <= d.v[i].line);
    m_config_diags_free(&d);
    m_config_free(cfg);
}

/* ---------------------------------------------------------------------------
 * Outputs
 * ------------------------------------------------------------------------- */

static void test_enclave_xml(void **state)
{
    (void)state;
    struct m_config *cfg = load("guide-example.json", G);
    struct m_config_layout l;
    char *xml;
    derive(cfg, ON, HW, &l);
    assert_int_equal(m_config_enclave_xml(&l, false, &xml), 0);
    assert_string_equal(
        xml, "<EnclaveConfiguration><ProdID>0</ProdID><ISVSVN>0</ISVSVN>"
             "<StackMaxSize>1048576</StackMaxSize><StackMinSize>1048576</StackMinSize>"
             "<HeapInitSize>4194304</HeapInitSize><HeapMaxSize>1073741824</HeapMaxSize>"
             "<HeapMinSize>4194304</HeapMinSize><TCSNum>2</TCSNum><TCSMaxNum>4096</TCSMaxNum>"
             "<TCSMinPool>2</TCSMinPool><TCSPolicy>0</TCSPolicy><DisableDebug>0</DisableDebug>"
             "<MiscSelect>1</MiscSelect><MiscMask>0xFFFFFFFF</MiscMask>"
             "<ReservedMemMaxSize>1048576</ReservedMemMaxSize>"
             "<ReservedMemMinSize>1048576</ReservedMemMinSize>"
             "<ReservedMemInitSize>1048576</ReservedMemInitSize>"
             "<ReservedMemExecutable>1</ReservedMemExecutable>"
             "<UserRegionSize>18253611008</UserRegionSize><EnableKSS>0</EnableKSS>"
             "<ISVEXTPRODID_H>0</ISVEXTPRODID_H><ISVEXTPRODID_L>0</ISVEXTPRODID_L>"
             "<ISVFAMILYID_H>0</ISVFAMILYID_H><ISVFAMILYID_L>0</ISVFAMILYID_L>"
             "<PKRU>0</PKRU><AMX>0</AMX></EnclaveConfiguration>");
    free(xml);
    m_config_layout_free(&l);
    derive(cfg, OFF, HW, &l);
    assert_int_equal(m_config_enclave_xml(&l, true, &xml), 0);
    assert_null(strstr(xml, "UserRegionSize"));
    assert_non_null(strstr(xml, "\n    <HeapMaxSize>41943040</HeapMaxSize>\n"));
    assert_non_null(strstr(xml, "\n    <ReservedMemInitSize>629145600</ReservedMemInitSize>\n"));
    assert_non_null(strstr(xml, "\n    <TCSNum>64</TCSNum>\n"));
    assert_non_null(strstr(xml, "<MiscMask>0</MiscMask>"));
    size_t lines = 0;
    for (const char *p = xml; *p; p++)
        lines += *p == '\n';
    assert_int_equal(lines, 26); /* 25 elements and the root's opening tag */
    free(xml);
    m_config_layout_free(&l);
    m_config_free(cfg);
}

static void test_json_output(void **state)
{
    (void)state;
    struct m_config *cfg = load("guide-example.json", G);
    struct m_config_layout l;
    derive(cfg, ON, HW, &l);
    char *text;
    assert_int_equal(m_config_json(cfg, &l, NULL, &text), 0);
    json_error_t err;
    json_t *j = json_loads(text, 0, &err);
    assert_non_null(j);
    assert_true(json_is_true(json_object_get(j, "valid")));
    assert_string_equal(json_string_value(json_object_get(j, "compat")), "guide");
    json_t *p = json_object_get(j, "platform");
    assert_true(json_is_true(json_object_get(p, "edmm")));
    json_t *heap = json_object_get(json_object_get(j, "layout"), "kernel_heap");
    assert_int_equal(json_integer_value(json_object_get(heap, "init")), 4 * MB);
    assert_int_equal(json_integer_value(json_object_get(heap, "max")), GB);
    json_t *xml = json_object_get(j, "enclave_xml");
    assert_int_equal(json_integer_value(json_object_get(xml, "UserRegionSize")), 17 * GB);
    assert_string_equal(json_string_value(json_object_get(xml, "MiscMask")), "0xFFFFFFFF");
    assert_true(json_array_size(json_object_get(j, "no_effect")) >= 3);
    json_decref(j);
    free(text);
    m_config_layout_free(&l);
    m_config_free(cfg);

    /* Without a layout: the diagnostics, and nulls. */
    cfg = load("lowercase-units.json", G);
    assert_int_equal(m_config_json(cfg, NULL, NULL, &text), 0);
    j = json_loads(text, 0, &err);
    assert_non_null(j);
    assert_true(json_is_false(json_object_get(j, "valid")));
    assert_true(json_is_null(json_object_get(j, "layout")));
    json_t *d = json_object_get(j, "diagnostics");
    assert_int_equal(json_array_size(d), 6);
    json_t *d0 = json_array_get(d, 0);
    assert_string_equal(json_string_value(json_object_get(d0, "severity")), "error");
    assert_int_equal(json_integer_value(json_object_get(d0, "line")), 3);
    json_decref(j);
    free(text);
    m_config_free(cfg);
}

static void test_explain_output(void **state)
{
    (void)state;
    struct m_config *cfg = load("guide-example.json", G);
    struct m_config_layout l;
    derive(cfg, OFF, HW, &l);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_int_equal(m_config_explain(f, cfg, &l), 0);
    fclose(f);
    assert_non_null(strstr(buf, "on SGX hardware without EDMM"));
    assert_non_null(strstr(buf, "  kernel heap    40MB         40MB\n"));
    assert_non_null(strstr(buf, "  threads        64           64\n"));
    assert_non_null(strstr(buf, "Fields with no effect on this platform:"));
    assert_non_null(strstr(buf, "kernel_space_heap_size \"4MB\" no longer takes effect"));
    assert_non_null(strstr(buf, "Advice:"));
    /* Wrapped at 78 columns; the title line holds the file's path, whose
     * length depends on where the checkout is. */
    char *body = strchr(buf, '\n');
    assert_non_null(body);
    for (char *line = body + 1; line && *line;) {
        char *nl = strchr(line, '\n');
        size_t n = nl ? (size_t)(nl - line) : strlen(line);
        assert_true(n <= 80);
        line = nl ? nl + 1 : NULL;
    }
    free(buf);
    m_config_layout_free(&l);
    m_config_free(cfg);
}

int main(void)
{
    snprintf(data_dir, sizeof data_dir, "%s", __FILE__);
    char *slash = strrchr(data_dir, '/');
    if (slash)
        strcpy(slash, "/data/config");
    else
        strcpy(data_dir, "data/config");
    template_text = slurp(data_path("occlum-template.json"));
    if (!template_text) {
        fprintf(stderr, "test_config: cannot read %s: the test data is missing\n",
                data_path("occlum-template.json"));
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_size_valid),
        cmocka_unit_test(test_size_errors),
        cmocka_unit_test(test_size_tool_mode),
        cmocka_unit_test(test_size_suggest_and_format),
        cmocka_unit_test(test_position_index),
        cmocka_unit_test(test_template_is_valid),
        cmocka_unit_test(test_guide_example_is_valid),
        cmocka_unit_test(test_guide_verbatim_is_not_json),
        cmocka_unit_test(test_syntax_errors),
        cmocka_unit_test(test_missing_guide_required),
        cmocka_unit_test(test_missing_tool_required),
        cmocka_unit_test(test_wrong_types),
        cmocka_unit_test(test_size_errors_in_file),
        cmocka_unit_test(test_count_limits),
        cmocka_unit_test(test_unknown_and_duplicate_fields),
        cmocka_unit_test(test_init_above_max),
        cmocka_unit_test(test_alignment),
        cmocka_unit_test(test_metadata_and_mounts),
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_derive_guide_example_edmm),
        cmocka_unit_test(test_derive_guide_example_non_edmm),
        cmocka_unit_test(test_derive_template),
        cmocka_unit_test(test_derive_sim),
        cmocka_unit_test(test_derive_threads),
        cmocka_unit_test(test_derive_maxima),
        cmocka_unit_test(test_derive_metadata),
        cmocka_unit_test(test_derive_refuses_invalid_memory),
        cmocka_unit_test(test_check_both_platforms),
        cmocka_unit_test(test_enclave_xml),
        cmocka_unit_test(test_json_output),
        cmocka_unit_test(test_explain_output),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    free(template_text);
    return rc;
}
