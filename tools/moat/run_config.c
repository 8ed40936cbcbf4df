/*
 * run_config.c - `moat run --config Occlum.json`: the enclave layout of an
 * Occlum.json applied to a run, the run's peaks reported against it, and
 * the suggested resource_limits (see run_config.h).
 *
 * The config layer checks and derives the file for the platform of the run
 * (--edmm/--no-edmm/--sgx-mode, else feature.enable_edmm); the user space
 * and thread limits travel to libmoat_preload.so as environment variables.
 * At exit the peaks come from the statistics block: for the user space, the
 * memory the program touched (Init is committed at start, so the committed
 * peak is at least Init whatever the program did; both are reported), the
 * thread peak counted by src/preload/tcs.c, and the resident peak against
 * the budget, which stands for the EPC.
 *
 * Headroom is the share of Max the peak left unused, (Max - peak) / Max: a
 * suggestion with headroom H is the peak / (1 - H), rounded up to whole MB.
 */
#include "run_config.h"

#include "cli.h"
#include "common/size.h"
#include "run.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define MIB              (1ULL << 20)
#define PAGE             4096ULL
#define ENGINE_RANGE_MIN MIB                    /* engine.c refuses a smaller ELRANGE */
#define ENGINE_RANGE_MAX (0xFFFFFFFFULL * PAGE) /* ... and more than 2^32 - 1 pages */
/* On EDMM a user_space_size up to this keeps start-up fast (the guide's
 * example uses 1MB); more is committed at start whether used or not. */
#define SMALL_INIT (4 * MIB)

/* ---------------------------------------------------------------------------
 * Loading and applying
 * ------------------------------------------------------------------------- */

static void print_diags(FILE *f, const struct m_config *cfg, const struct m_config_diags *d,
                        bool errors_only)
{
    for (size_t i = 0; i < d->n; i++)
        if (!errors_only || d->v[i].severity == M_CONFIG_ERROR)
            m_config_diag_print(f, cfg->name, &d->v[i]);
}

int m_run_config_load(struct m_run_config *rc, FILE *f, bool quiet)
{
    int err = m_config_load(rc->path, rc->opts.compat, &rc->cfg);
    if (err) {
        fprintf(f, "moat run: --config '%s': %s\n", rc->path, strerror(err));
        return err == ENOMEM ? MOAT_EXIT_RUNTIME : MOAT_EXIT_CONFIG;
    }
    err = m_config_derive(rc->cfg, &rc->opts, &rc->layout);
    if (err == EINVAL) {
        print_diags(f, rc->cfg, &rc->cfg->diags, quiet);
        fprintf(f,
                "moat run: --config %s has %zu %s; the memory fields of resource_limits "
                "must be valid (moat config check %s lists every problem)\n",
                rc->path, rc->cfg->diags.nerrors, rc->cfg->diags.nerrors == 1 ? "error" : "errors",
                rc->path);
        return MOAT_EXIT_CONFIG;
    }
    if (err) {
        fprintf(f, "moat run: --config '%s': %s\n", rc->path, strerror(err));
        return MOAT_EXIT_RUNTIME;
    }
    rc->have_layout = true;
    struct m_config_diags d = {0};
    if (m_config_diags_append(&d, &rc->cfg->diags) ||
        m_config_diags_append(&d, &rc->layout.diags)) {
        m_config_diags_free(&d);
        fprintf(f, "moat run: out of memory\n");
        return MOAT_EXIT_RUNTIME;
    }
    m_config_diags_sort(&d);
    print_diags(f, rc->cfg, &d, quiet);
    size_t nerr = d.nerrors;
    m_config_diags_free(&d);
    if (nerr) {
        fprintf(f, "moat run: --config %s has %zu %s on %s; the program was not started\n",
                rc->path, nerr, nerr == 1 ? "error" : "errors",
                m_config_platform_title(&rc->layout));
        return MOAT_EXIT_CONFIG;
    }
    uint64_t r = (rc->layout.user_space.max + PAGE - 1) / PAGE * PAGE;
    if (r < rc->layout.user_space.max) /* wrapped */
        r = ENGINE_RANGE_MAX;
    rc->range = r < ENGINE_RANGE_MIN   ? ENGINE_RANGE_MIN
                : r > ENGINE_RANGE_MAX ? ENGINE_RANGE_MAX
                                       : r;
    return -1;
}

static int setenv_u64(const char *name, uint64_t v)
{
    char b[32];
    snprintf(b, sizeof b, "%" PRIu64, v);
    return setenv(name, b, 1) ? errno : 0;
}

int m_run_config_env(const struct m_run_config *rc)
{
    const struct m_config_layout *l = &rc->layout;
    int err = setenv_u64("MOAT_RANGE", rc->range);
    if (!err)
        err = setenv_u64("MOAT_USER_MAX", l->user_space.max);
    if (!err)
        err = setenv_u64("MOAT_USER_INIT", l->user_space.init);
    if (!err)
        err = setenv_u64("MOAT_THREADS_MAX", l->threads.max);
    return err;
}

void m_run_config_free(struct m_run_config *rc)
{
    if (rc->have_layout)
        m_config_layout_free(&rc->layout);
    if (rc->cfg)
        m_config_free(rc->cfg);
    rc->have_layout = false;
    rc->cfg = NULL;
}

/* ---------------------------------------------------------------------------
 * Peaks and suggestions
 * ------------------------------------------------------------------------- */

void m_run_peaks_from_block(const struct m_stats_block *b, struct m_run_peaks *p)
{
    const struct moat_stats *s = &b->stats;
    p->user_init = b->user_init_pages * PAGE;
    p->user_committed = s->peak_committed_pages * PAGE;
    p->user_bytes = p->user_committed;
    if (b->user_init_pages) {
        /* Init counts as committed from the start: the program's own peak is
         * what it touched, and at least what it committed beyond Init. */
        uint64_t beyond = s->peak_committed_pages > b->user_init_pages
                              ? s->peak_committed_pages - b->user_init_pages
                              : 0;
        uint64_t used = b->user_peak_used_pages > beyond ? b->user_peak_used_pages : beyond;
        p->user_bytes = used * PAGE;
    }
    p->threads = b->threads_peak;
    p->resident = s->peak_resident_pages * PAGE;
    p->epc = s->budget_pages * PAGE;
    p->evicted_pages = s->evictions_written + s->evictions_clean;
}

/* x / (1 - h), rounded up, without overflow for any 64-bit x. */
static uint64_t with_headroom(uint64_t x, unsigned h)
{
    unsigned __int128 v = ((unsigned __int128)x * 100 + (100 - h) - 1) / (100 - h);
    return v > UINT64_MAX ? UINT64_MAX : (uint64_t)v;
}

static uint64_t mb_up(uint64_t x)
{
    uint64_t mb = x / MIB + (x % MIB != 0);
    if (mb == 0)
        mb = 1;
    return mb > UINT64_MAX / MIB ? UINT64_MAX / MIB * MIB : mb * MIB;
}

void m_run_suggest(const struct m_run_peaks *p, bool edmm, unsigned headroom_pct,
                   struct m_run_suggestion *s)
{
    unsigned h = headroom_pct > M_RUN_HEADROOM_MAX ? M_RUN_HEADROOM_MAX : headroom_pct;
    memset(s, 0, sizeof *s);
    s->edmm = edmm;
    s->headroom_pct = h;
    uint64_t max = mb_up(with_headroom(p->user_bytes, h));
    if (edmm) {
        s->user_init = MIB;
        s->user_max = max;
    } else {
        s->user_init = max; /* all of it is committed at start-up anyway */
    }
    s->threads_known = p->threads > 0;
    if (s->threads_known) {
        uint64_t t = with_headroom(p->threads, h);
        if (t > M_CONFIG_DEFAULT_TCS_MAX) {
            t = M_CONFIG_DEFAULT_TCS_MAX;
            s->threads_clamped = true;
        }
        s->threads_max = t;
        if (edmm) {
            uint64_t i =
                p->threads < M_CONFIG_DEFAULT_TCS_INIT ? p->threads : M_CONFIG_DEFAULT_TCS_INIT;
            s->threads_init = i < t ? i : t;
        }
    }
}

void m_run_suggest_print(FILE *f, const struct m_run_suggestion *s, const char *const kernel[3],
                         int indent)
{
    static const char *const knames[3] = {"kernel_space_stack_size", "kernel_space_heap_size",
                                          "kernel_space_heap_max_size"};
    char b[48];
    /* indent < 0: all on one line */
    const char *next = indent < 0 ? ", " : ",\n";
    int ind = indent < 0 ? 0 : indent;
    const char *sep = "";
    for (int i = 0; i < 3; i++) {
        if (kernel && kernel[i]) {
            fprintf(f, "%s%*s\"%s\": \"%s\"", sep, ind, "", knames[i], kernel[i]);
            sep = next;
        }
    }
    fprintf(f, "%s%*s\"user_space_size\": \"%s\"", sep, ind, "",
            m_config_size_format(s->user_init, b, sizeof b));
    if (s->user_max)
        fprintf(f, "%s%*s\"user_space_max_size\": \"%s\"", next, ind, "",
                m_config_size_format(s->user_max, b, sizeof b));
    if (s->threads_known) {
        if (s->threads_init)
            fprintf(f, "%s%*s\"init_num_of_threads\": %" PRIu64, next, ind, "", s->threads_init);
        fprintf(f, "%s%*s\"max_num_of_threads\": %" PRIu64, next, ind, "", s->threads_max);
    }
}

/* ---------------------------------------------------------------------------
 * The report
 * ------------------------------------------------------------------------- */

static unsigned headroom(uint64_t peak, uint64_t max)
{
    if (!max || peak >= max)
        return 0;
    return (unsigned)((unsigned __int128)(max - peak) * 100 / max);
}

static const char *cfgfmt(uint64_t n, char *b, size_t bl)
{
    return m_config_size_format(n, b, bl);
}

static void kernel_fields(const struct m_config *cfg, const char *out[3])
{
    out[0] = cfg->kernel_stack.set ? cfg->kernel_stack.text : NULL;
    out[1] = cfg->kernel_heap.set ? cfg->kernel_heap.text : NULL;
    out[2] = cfg->kernel_heap_max.set ? cfg->kernel_heap_max.text : NULL;
}

/* "FIELD VALUE leaves H% headroom" against the configured field, and the
 * effective Max when the tool's default replaced it (EDMM). */
static void report_max(FILE *f, const char *field, bool set, uint64_t conf, uint64_t eff,
                       uint64_t peak, bool sizes, const char *what_fails)
{
    char c[48], e[48];
    if (sizes) {
        cfgfmt(conf, c, sizeof c);
        cfgfmt(eff, e, sizeof e);
    } else {
        snprintf(c, sizeof c, "%" PRIu64, conf);
        snprintf(e, sizeof e, "%" PRIu64, eff);
    }
    if ((unsigned __int128)peak * 100 >= (unsigned __int128)eff * 95 && set && conf == eff)
        fprintf(f, "%s %s is (nearly) exhausted, %s beyond it", field, c, what_fails);
    else if ((unsigned __int128)peak * 100 >= (unsigned __int128)eff * 95)
        fprintf(f, "the maximum %s is (nearly) exhausted, %s beyond it", e, what_fails);
    else if (!set)
        fprintf(f, "the maximum %s (%s is not set: the tool's default) leaves %u%% headroom", e,
                field, headroom(peak, eff));
    else if (conf != eff)
        fprintf(f,
                "%s %s leaves %u%% headroom (the effective maximum is %s: the tool takes the "
                "larger of it and its default)",
                field, c, headroom(peak, conf), e);
    else
        fprintf(f, "%s %s leaves %u%% headroom", field, c, headroom(peak, eff));
}

static void report_user(FILE *f, const struct m_config *cfg, const struct m_config_layout *l,
                        const struct m_run_peaks *p)
{
    char pk[32], in[48], ci[32], cp[32];
    m_size_format(p->user_bytes, pk, sizeof pk);
    cfgfmt(l->user_space.init, in, sizeof in);
    if (p->user_init) {
        m_size_format(p->user_init, ci, sizeof ci);
        m_size_format(p->user_committed, cp, sizeof cp);
        fprintf(f, "moat: user space: %s committed at start, peak committed %s\n", ci, cp);
    }
    fprintf(f, "moat: user space peaked at %s: ", pk);
    if (l->edmm)
        report_max(f, "user_space_max_size", cfg->user_space_max.set, cfg->user_space_max.nbytes,
                   l->user_space.max, p->user_bytes, true, "allocations fail with ENOMEM");
    else
        report_max(f, "user_space_size", true, l->user_space.max, l->user_space.max, p->user_bytes,
                   true, "allocations fail with ENOMEM");
    if (!l->edmm)
        fprintf(f, "; without EDMM all of it is committed at start-up\n");
    else if (l->user_space.init > p->user_bytes && l->user_space.init > SMALL_INIT)
        fprintf(f,
                "; user_space_size %s is more than the program used, committed at start-up "
                "for nothing (1MB starts faster)\n",
                in);
    else if (l->user_space.init <= SMALL_INIT)
        fprintf(f, "; user_space_size %s keeps start-up fast\n", in);
    else
        fprintf(f,
                "; user_space_size %s is committed at start-up (1MB starts faster, the rest "
                "comes on demand)\n",
                in);
}

static void report_threads(FILE *f, const struct m_config *cfg, const struct m_config_layout *l,
                           const struct m_run_peaks *p)
{
    if (!p->threads) {
        fprintf(f,
                "moat: threads: the peak was not published (the statistics block of this "
                "libmoat_preload.so has no thread count); at most %" PRIu64 " were allowed\n",
                l->threads.max);
        return;
    }
    fprintf(f, "moat: threads peaked at %" PRIu64 ": ", p->threads);
    report_max(f, "max_num_of_threads", cfg->max_threads.set, cfg->max_threads.value,
               l->threads.max, p->threads, false, "pthread_create fails with EAGAIN");
    if (!l->edmm)
        fprintf(f, " (without EDMM all are created at start-up)\n");
    else if (l->threads.init >= p->threads)
        fprintf(f, "; init_num_of_threads %" PRIu64 " covers the peak\n", l->threads.init);
    else
        fprintf(f, "; %" PRIu64 " beyond the %" PRIu64 " initial threads were added on demand\n",
                p->threads - l->threads.init, l->threads.init);
}

static void report_epc(FILE *f, const struct m_run_peaks *p)
{
    char pk[32], ep[32];
    m_size_format(p->resident, pk, sizeof pk);
    if (!p->epc) {
        fprintf(f, "moat: resident memory peaked at %s (no EPC limit)\n", pk);
        return;
    }
    m_size_format(p->epc, ep, sizeof ep);
    fprintf(f, "moat: resident memory peaked at %s of the %s EPC (%u%%): ", pk, ep,
            (unsigned)((unsigned __int128)p->resident * 100 / p->epc));
    if (p->evicted_pages)
        fprintf(f, "%" PRIu64 " pages were sealed and evicted, as EPC paging would\n",
                p->evicted_pages);
    else
        fprintf(f, "nothing was evicted\n");
}

void m_run_config_report(FILE *f, const struct m_run_config *rc, const struct m_stats_block *b)
{
    const struct m_config_layout *l = &rc->layout;
    struct m_run_peaks p;
    m_run_peaks_from_block(b, &p);
    char ui[48], um[48];
    fprintf(f,
            "moat: %s on %s: user space init %s, max %s; threads init %" PRIu64 ", max %" PRIu64
            "\n",
            rc->path, m_config_platform_title(l), cfgfmt(l->user_space.init, ui, sizeof ui),
            cfgfmt(l->user_space.max, um, sizeof um), l->threads.init, l->threads.max);
    report_user(f, rc->cfg, l, &p);
    report_threads(f, rc->cfg, l, &p);
    report_epc(f, &p);
    struct m_run_suggestion s;
    m_run_suggest(&p, l->edmm, M_RUN_HEADROOM_DEFAULT, &s);
    fprintf(f, "moat: suggested (%u%% headroom): ", s.headroom_pct);
    m_run_suggest_print(f, &s, NULL, -1);
    bool full =
        (unsigned __int128)p.user_bytes * 100 >= (unsigned __int128)l->user_space.max * 95 ||
        (p.threads && p.threads >= l->threads.max);
    fprintf(f, "%s\n", full ? " (a limit was reached: the program may need more than it got)" : "");
}

/* ---------------------------------------------------------------------------
 * --stats-json
 * ------------------------------------------------------------------------- */

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

static void json_config(FILE *f, const struct m_run_config *rc, const struct m_stats_block *b)
{
    const struct m_config_layout *l = &rc->layout;
    struct m_run_peaks p;
    m_run_peaks_from_block(b, &p);
    fprintf(f, "  \"config\": {\n    \"file\": ");
    json_str(f, rc->path);
    fprintf(f,
            ",\n    \"platform\": \"%s\",\n    \"edmm\": %s,\n    \"sgx_mode\": \"%s\",\n"
            "    \"compat\": \"%s\",\n",
            m_config_platform_name(l), l->edmm ? "true" : "false",
            l->sgx_mode == M_CONFIG_SGX_SIM ? "SIM" : "HW",
            l->compat == M_CONFIG_COMPAT_OCCLUM_TOOL ? "occlum-tool" : "guide");
    fprintf(f,
            "    \"user_space\": {\"init\": %" PRIu64 ", \"max\": %" PRIu64 ", \"peak\": %" PRIu64
            ", \"headroom_pct\": %u, \"range\": %" PRIu64 ", \"committed_at_start\": %" PRIu64
            ", \"peak_committed\": %" PRIu64 "},\n",
            l->user_space.init, l->user_space.max, p.user_bytes,
            headroom(p.user_bytes, l->user_space.max), rc->range, p.user_init, p.user_committed);
    fprintf(f, "    \"threads\": {\"init\": %" PRIu64 ", \"max\": %" PRIu64 ", \"peak\": ",
            l->threads.init, l->threads.max);
    if (p.threads)
        fprintf(f, "%" PRIu64 ", \"headroom_pct\": %u},\n", p.threads,
                headroom(p.threads, l->threads.max));
    else
        fprintf(f, "null},\n");
    fprintf(f,
            "    \"epc\": {\"size\": %" PRIu64 ", \"peak_resident\": %" PRIu64
            ", \"evicted_pages\": %" PRIu64 "},\n",
            p.epc, p.resident, p.evicted_pages);
    const char *k[3];
    kernel_fields(rc->cfg, k);
    static const char *const knames[3] = {"kernel_space_stack_size", "kernel_space_heap_size",
                                          "kernel_space_heap_max_size"};
    fprintf(f, "    \"configured\": {");
    const char *sep = "";
    for (int i = 0; i < 3; i++) {
        if (k[i]) {
            fprintf(f, "%s\"%s\": ", sep, knames[i]);
            json_str(f, k[i]);
            sep = ", ";
        }
    }
    fprintf(f, "},\n");
    struct m_run_suggestion s;
    m_run_suggest(&p, l->edmm, M_RUN_HEADROOM_DEFAULT, &s);
    fprintf(f, "    \"suggested\": {\n      \"headroom_pct\": %u,\n      \"resource_limits\": {\n",
            s.headroom_pct);
    m_run_suggest_print(f, &s, k, 8);
    fprintf(f, "\n      }\n    }\n  }\n");
}

int m_run_config_write_json(const char *path, const struct m_run_config *rc,
                            const struct m_stats_block *b, int status)
{
    char *text = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&text, &len);
    if (!m)
        return errno;
    m_run_json(m, b, status);
    if (fclose(m) != 0) {
        free(text);
        return ENOMEM;
    }
    FILE *f = fopen(path, "w");
    if (!f) {
        int e = errno;
        free(text);
        return e;
    }
    /* m_run_json ends with "\n}\n": the config member goes before the brace. */
    static const char tail[] = "\n}\n";
    if (rc && len >= sizeof tail - 1 && !strcmp(text + len - (sizeof tail - 1), tail)) {
        fwrite(text, 1, len - (sizeof tail - 1), f);
        fprintf(f, ",\n");
        json_config(f, rc, b);
        fprintf(f, "}\n");
    } else {
        fwrite(text, 1, len, f);
    }
    free(text);
    int err = ferror(f) ? EIO : 0;
    if (fclose(f) && !err)
        err = errno;
    return err;
}
