/*
 * emit.c - rendering a layout: the Enclave.xml Occlum's tool would write,
 * the same values as JSON for scripts, and the readable table of
 * `moat config explain`.
 *
 * The XML reproduces serde-xml-rs 0.4 (the version gen_internal_conf
 * locks) serialising the tool's EnclaveConfiguration struct: one line, no
 * XML declaration, one element per field in declaration order, numbers in
 * decimal, MiscSelect and MiscMask as the strings the tool holds ("1",
 * "0xFFFFFFFF"), and UserRegionSize left out when the tool's Option is None
 * (platforms without EDMM).
 */
#include "config/config_int.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

struct elem {
    const char *name;
    char val[24];
    bool is_str; /* a string in the tool's struct, not a number */
};

static size_t put(struct elem *e, size_t n, const char *name, uint64_t v)
{
    e[n].name = name;
    e[n].is_str = false;
    snprintf(e[n].val, sizeof e[n].val, "%" PRIu64, v);
    return n + 1;
}

static size_t put_str(struct elem *e, size_t n, const char *name, const char *v)
{
    e[n].name = name;
    e[n].is_str = true;
    snprintf(e[n].val, sizeof e[n].val, "%s", v);
    return n + 1;
}

/* The fields of the tool's EnclaveConfiguration, in its order. */
static size_t enclave_elems(const struct m_config_layout *l, struct elem e[32])
{
    size_t n = 0;
    n = put(e, n, "ProdID", l->prod_id);
    n = put(e, n, "ISVSVN", l->isvsvn);
    n = put(e, n, "StackMaxSize", l->kernel_stack.max);
    n = put(e, n, "StackMinSize", l->kernel_stack.max);
    n = put(e, n, "HeapInitSize", l->kernel_heap.init);
    n = put(e, n, "HeapMaxSize", l->kernel_heap.max);
    n = put(e, n, "HeapMinSize", l->kernel_heap.init);
    n = put(e, n, "TCSNum", l->threads.init);
    n = put(e, n, "TCSMaxNum", l->threads.max);
    n = put(e, n, "TCSMinPool", l->tcs_min_pool);
    n = put(e, n, "TCSPolicy", 0);
    n = put(e, n, "DisableDebug", l->disable_debug);
    n = put_str(e, n, "MiscSelect", l->misc_select);
    n = put_str(e, n, "MiscMask", l->misc_mask);
    n = put(e, n, "ReservedMemMaxSize", l->reserved_mem_nbytes);
    n = put(e, n, "ReservedMemMinSize", l->reserved_mem_nbytes);
    n = put(e, n, "ReservedMemInitSize", l->reserved_mem_nbytes);
    n = put(e, n, "ReservedMemExecutable", 1);
    if (l->has_user_region)
        n = put(e, n, "UserRegionSize", l->user_region_nbytes);
    n = put(e, n, "EnableKSS", l->enable_kss);
    n = put(e, n, "ISVEXTPRODID_H", l->isvextprodid_h);
    n = put(e, n, "ISVEXTPRODID_L", l->isvextprodid_l);
    n = put(e, n, "ISVFAMILYID_H", l->isvfamilyid_h);
    n = put(e, n, "ISVFAMILYID_L", l->isvfamilyid_l);
    n = put(e, n, "PKRU", l->pkru);
    n = put(e, n, "AMX", l->amx);
    return n;
}

int m_config_enclave_xml(const struct m_config_layout *l, bool pretty, char **out)
{
    struct elem e[32];
    size_t n = enclave_elems(l, e);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return ENOMEM;
    fputs(pretty ? "<EnclaveConfiguration>\n" : "<EnclaveConfiguration>", f);
    for (size_t i = 0; i < n; i++)
        fprintf(f, pretty ? "    <%s>%s</%s>\n" : "<%s>%s</%s>", e[i].name, e[i].val, e[i].name);
    fputs("</EnclaveConfiguration>", f);
    if (fclose(f) || !buf) {
        free(buf);
        return ENOMEM;
    }
    *out = buf;
    return 0;
}

/* ---------------------------------------------------------------------------
 * JSON
 * ------------------------------------------------------------------------- */

/* JSON numbers above 2^63 - 1 do not survive jansson (or many readers):
 * those few are written as decimal strings. */
static json_t *ju64(uint64_t v)
{
    if (v > (uint64_t)INT64_MAX) {
        char s[24];
        snprintf(s, sizeof s, "%" PRIu64, v);
        return json_string(s);
    }
    return json_integer((json_int_t)v);
}

static json_t *jstr(const char *s)
{
    return s ? json_string(s) : json_null();
}

static json_t *range_json(const struct m_config_range *r)
{
    return json_pack("{s:o, s:o, s:o, s:o}", "init", ju64(r->init), "max", ju64(r->max),
                     "init_from", jstr(r->init_from), "max_from", jstr(r->max_from));
}

static json_t *notes_json(const struct m_config_notes *n)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < n->n; i++)
        json_array_append_new(
            a, json_pack("{s:s, s:s}", "field", n->v[i].field, "text", n->v[i].text));
    return a;
}

static json_t *diags_json(const struct m_config_diags *d)
{
    json_t *a = json_array();
    for (size_t i = 0; a && d && i < d->n; i++) {
        const struct m_config_diag *x = &d->v[i];
        json_array_append_new(a, json_pack("{s:s, s:s, s:i, s:i, s:s, s:s, s:s, s:o}", "severity",
                                           x->severity == M_CONFIG_ERROR ? "error" : "warning",
                                           "path", x->path, "line", x->line, "column", x->column,
                                           "found", x->found, "expected", x->expected, "message",
                                           x->message, "platform", jstr(x->platform)));
    }
    return a;
}

int m_config_json(const struct m_config *cfg, const struct m_config_layout *l,
                  const struct m_config_diags *diags, char **out)
{
    size_t nerr = diags ? diags->nerrors : cfg->diags.nerrors;
    size_t nwarn = diags ? diags->nwarnings : cfg->diags.nwarnings;
    json_t *root =
        json_pack("{s:s, s:s, s:b, s:I, s:I}", "file", cfg->name, "compat",
                  cfg->compat == M_CONFIG_COMPAT_OCCLUM_TOOL ? "occlum-tool" : "guide", "valid",
                  nerr == 0, "errors", (json_int_t)nerr, "warnings", (json_int_t)nwarn);
    if (!root)
        return ENOMEM;
    if (l) {
        json_object_set_new(root, "platform",
                            json_pack("{s:s, s:s, s:s, s:b, s:o}", "name",
                                      m_config_platform_name(l), "title",
                                      m_config_platform_title(l), "sgx_mode",
                                      l->sgx_mode == M_CONFIG_SGX_SIM ? "SIM" : "HW", "edmm",
                                      l->edmm, "why", jstr(l->platform_why)));
        json_t *layout = json_object();
        json_object_set_new(layout, "kernel_stack", range_json(&l->kernel_stack));
        json_object_set_new(layout, "kernel_heap", range_json(&l->kernel_heap));
        json_object_set_new(layout, "user_space", range_json(&l->user_space));
        json_object_set_new(layout, "threads", range_json(&l->threads));
        json_object_set_new(layout, "startup_bytes", ju64(l->startup_nbytes));
        json_object_set_new(layout, "reserved_mem_bytes", ju64(l->reserved_mem_nbytes));
        json_object_set_new(layout, "user_region_bytes",
                            l->has_user_region ? ju64(l->user_region_nbytes) : json_null());
        json_object_set_new(root, "layout", layout);
        struct elem e[32];
        size_t n = enclave_elems(l, e);
        json_t *xml = json_object();
        for (size_t i = 0; xml && i < n; i++) {
            uint64_t v = strtoull(e[i].val, NULL, 10);
            json_object_set_new(xml, e[i].name, e[i].is_str ? json_string(e[i].val) : ju64(v));
        }
        json_object_set_new(root, "enclave_xml", xml);
        json_object_set_new(root, "no_effect", notes_json(&l->no_effect));
        json_object_set_new(root, "advice", notes_json(&l->advice));
    } else {
        json_object_set_new(root, "platform", json_null());
        json_object_set_new(root, "layout", json_null());
        json_object_set_new(root, "enclave_xml", json_null());
        json_object_set_new(root, "no_effect", json_array());
        json_object_set_new(root, "advice", json_array());
    }
    json_object_set_new(root, "diagnostics", diags_json(diags ? diags : &cfg->diags));
    char *s = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(root);
    if (!s)
        return ENOMEM;
    char *withnl = m_cfg_strf("%s\n", s);
    free(s);
    if (!withnl)
        return ENOMEM;
    *out = withnl;
    return 0;
}

/* ---------------------------------------------------------------------------
 * The explain table
 * ------------------------------------------------------------------------- */

/* Print text wrapped at width, the first line after `first`, the others
 * indented by `indent` spaces. */
static void wrap(FILE *f, const char *first, size_t indent, const char *text, size_t width)
{
    fputs(first, f);
    size_t col = strlen(first);
    bool fresh = true; /* nothing yet on this line after its prefix */
    for (const char *p = text;;) {
        while (*p == ' ')
            p++;
        if (!*p)
            break;
        size_t w = strcspn(p, " ");
        if (!fresh && col + 1 + w > width) {
            fprintf(f, "\n%*s", (int)indent, "");
            col = indent;
            fresh = true;
        }
        if (!fresh) {
            fputc(' ', f);
            col++;
        }
        fwrite(p, 1, w, f);
        col += w;
        p += w;
        fresh = false;
    }
    fputc('\n', f);
}

static void row(FILE *f, const char *name, const struct m_config_range *r, bool sizes)
{
    char a[32], b[32];
    if (sizes) {
        m_config_size_format(r->init, a, sizeof a);
        m_config_size_format(r->max, b, sizeof b);
    } else {
        snprintf(a, sizeof a, "%" PRIu64, r->init);
        snprintf(b, sizeof b, "%" PRIu64, r->max);
    }
    fprintf(f, "  %-14s %-12s %s\n", name, a, b);
    if (r->init_from && r->max_from && !strcmp(r->init_from, r->max_from)) {
        wrap(f, "      from: ", 12, r->init_from, 78);
    } else {
        wrap(f, "      Init: ", 12, r->init_from ? r->init_from : "", 78);
        wrap(f, "      Max:  ", 12, r->max_from ? r->max_from : "", 78);
    }
}

int m_config_explain(FILE *f, const struct m_config *cfg, const struct m_config_layout *l)
{
    char b1[32], b2[32], b3[32], b4[32];
    fprintf(f, "%s on %s\n", cfg->name, m_config_platform_title(l));
    wrap(f, "  Platform: ", 12, l->platform_why ? l->platform_why : "", 78);
    wrap(f, "  Rules:    ", 12,
         l->compat == M_CONFIG_COMPAT_OCCLUM_TOOL
             ? "exactly those of Occlum's configuration tool (--compat occlum-tool)."
             : "the EDMM configuration guide; --compat occlum-tool follows Occlum's "
               "configuration tool instead.",
         78);
    fprintf(f, "\n  %-14s %-12s %s\n", "", "Init", "Max");
    row(f, "kernel stack", &l->kernel_stack, true);
    row(f, "kernel heap", &l->kernel_heap, true);
    row(f, "user space", &l->user_space, true);
    row(f, "threads", &l->threads, false);
    fputc('\n', f);
    char *line =
        m_cfg_strf("%s (kernel heap %s + user space %s + %" PRIu64 " threads x %s kernel stack)%s",
                   m_config_size_format(l->startup_nbytes, b1, sizeof b1),
                   m_config_size_format(l->kernel_heap.init, b2, sizeof b2),
                   m_config_size_format(l->reserved_mem_nbytes, b3, sizeof b3), l->threads.init,
                   m_config_size_format(l->kernel_stack.max, b4, sizeof b4),
                   l->edmm ? "; the rest, up to the Max values, is committed on demand." : ".");
    if (line)
        wrap(f, "  Committed at start-up: ", 4, line, 78);
    free(line);
    line = l->has_user_region
               ? m_cfg_strf("ReservedMem*Size %s, UserRegionSize %s (%s), MiscSelect %s, "
                            "MiscMask %s.",
                            m_config_size_format(l->reserved_mem_nbytes, b1, sizeof b1),
                            m_config_size_format(l->user_region_nbytes, b2, sizeof b2),
                            l->user_region_nbytes == l->user_space.max
                                ? "the user space maximum, which equals its Init"
                                : "the user space maximum plus 1GB the tool adds for the SGX SDK",
                            l->misc_select, l->misc_mask)
               : m_cfg_strf("ReservedMem*Size %s, no UserRegionSize, MiscSelect %s, MiscMask %s.",
                            m_config_size_format(l->reserved_mem_nbytes, b1, sizeof b1),
                            l->misc_select, l->misc_mask);
    if (line)
        wrap(f, "  Enclave.xml: ", 4, line, 78);
    free(line);

    fprintf(f, "\nFields with no effect on this platform:\n");
    if (!l->no_effect.n)
        fprintf(f, "  (none)\n");
    for (size_t i = 0; i < l->no_effect.n; i++)
        wrap(f, "  - ", 4, l->no_effect.v[i].text, 78);
    fprintf(f, "\nAdvice:\n");
    if (!l->advice.n)
        fprintf(f, "  (none)\n");
    for (size_t i = 0; i < l->advice.n; i++)
        wrap(f, "  - ", 4, l->advice.v[i].text, 78);
    fprintf(f,
            "\nSizes are in Occlum's units, which are binary: 1KB = 1024 bytes, 1MB = 1024KB.\n");
    return ferror(f) ? EIO : 0;
}
