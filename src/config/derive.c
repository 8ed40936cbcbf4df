/*
 * derive.c - the effective enclave layout of a configuration on one
 * platform: EDMM hardware, hardware without EDMM, or SGX simulation.
 *
 * The EDMM configuration guide says, field by field:
 *
 *   kernel stack  kernel_space_stack_size is StackMaxSize and StackMinSize
 *                 everywhere.
 *   kernel heap   EDMM: Init = kernel_space_heap_size; Max = the larger of
 *                 kernel_space_heap_max_size and the tool's default (1GB),
 *                 or the default alone when the field is absent.
 *                 No EDMM: kernel_space_heap_max_size when present (and
 *                 kernel_space_heap_size no longer takes effect), else
 *                 kernel_space_heap_size, as one static size.
 *   user space    the same with user_space_size, user_space_max_size and a
 *                 16GB default.
 *   threads       EDMM: Init = the smaller of init_num_of_threads and the
 *                 default 16 (16 when absent); Max = the larger of
 *                 max_num_of_threads and the default 4096.
 *                 No EDMM: max_num_of_threads for both; init_num_of_threads
 *                 has no effect.
 *   SGX_MODE=SIM  takes precedence over EDMM: simulation never uses it.
 *
 * Occlum's tool differs in four places (docs/config.md has the details):
 * with the max field absent it raises the default to the init size instead
 * of refusing an init above it; it uses init_num_of_threads as given, not
 * capped at 16, and without it takes min(16, max_num_of_threads); it
 * enables EDMM whenever feature.enable_edmm is true, even in simulation; and
 * without EDMM it still passes user_space_size to the LibOS as the initial
 * user space and refuses one larger than user_space_max_size.  Tool mode
 * reproduces all of that.  UserRegionSize (the user space maximum plus 1GB
 * for the SGX SDK on EDMM) and MiscSelect/MiscMask come from the tool, as
 * the guide says nothing about them.
 */
#include "config/config_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct dctx {
    const struct m_config *cfg;
    struct m_config_layout *l;
    bool tool;
    const char *plat; /* "EDMM", "non-EDMM", "SIM" */
    bool oom;
};

#define RL "resource_limits."

static const char *fmt(uint64_t n, char buf[static 32])
{
    return m_config_size_format(n, buf, 32);
}

static void set_from(struct dctx *d, char **dst, char *s)
{
    free(*dst);
    *dst = s;
    if (!s)
        d->oom = true;
}

static void note(struct dctx *d, struct m_config_notes *n, const char *field, const char *fmt_, ...)
    __attribute__((format(printf, 4, 5)));

static void note(struct dctx *d, struct m_config_notes *n, const char *field, const char *fmt_, ...)
{
    va_list ap;
    va_start(ap, fmt_);
    char *text = m_cfg_vstrf(fmt_, ap);
    va_end(ap);
    if (!text || !m_cfg_note_add(n, field, "%s", text))
        d->oom = true;
    free(text);
}

/* ---------------------------------------------------------------------------
 * Which platform
 * ------------------------------------------------------------------------- */

static void decide_platform(struct dctx *d, const struct m_config_opts *o)
{
    struct m_config_layout *l = d->l;
    bool file = d->cfg->enable_edmm.set && d->cfg->enable_edmm.value;
    bool sim = o->sgx_mode == M_CONFIG_SGX_SIM;
    char *why;
    if (!d->tool) {
        if (sim) {
            l->edmm = false;
            why = m_cfg_strf("SGX_MODE=SIM takes precedence over EDMM (guide, Notes 3): "
                             "simulation mode never uses EDMM%s.",
                             o->edmm == M_CONFIG_EDMM_ON ? ", so --edmm has no effect" : "");
            if (file)
                note(d, &l->no_effect, "feature.enable_edmm",
                     "feature.enable_edmm is true, but SGX_MODE=SIM takes precedence over EDMM "
                     "(guide, Notes 3).");
        } else if (o->edmm == M_CONFIG_EDMM_ON) {
            l->edmm = true;
            why = strdup("--edmm was given (ENABLE_EDMM=Y at occlum build).");
        } else if (o->edmm == M_CONFIG_EDMM_OFF) {
            l->edmm = false;
            why = strdup("--no-edmm was given (occlum build without ENABLE_EDMM).");
            if (file)
                note(d, &l->no_effect, "feature.enable_edmm",
                     "feature.enable_edmm is true, but --no-edmm asks for the layout of a "
                     "platform without EDMM. (Occlum's tool would still use EDMM: see "
                     "--compat occlum-tool.)");
        } else {
            l->edmm = file;
            why = strdup(file ? "feature.enable_edmm is true in the file."
                              : "Neither --edmm nor feature.enable_edmm asks for EDMM, and EDMM "
                                "is off by default.");
        }
    } else {
        /* The occlum script exports INSTANCE_IS_FOR_EDMM_PLATFORM=YES for
         * ENABLE_EDMM=Y outside simulation; the tool ORs the file's flag in. */
        bool env_yes = o->edmm == M_CONFIG_EDMM_ON && !sim;
        l->edmm = env_yes || file;
        if (file)
            why = m_cfg_strf("feature.enable_edmm is true, and Occlum's tool enables EDMM whenever "
                             "it is%s.",
                             sim                            ? ", even with SGX_MODE=SIM"
                             : o->edmm == M_CONFIG_EDMM_OFF ? ", even without ENABLE_EDMM"
                                                            : "");
        else if (env_yes)
            why = strdup("--edmm was given (INSTANCE_IS_FOR_EDMM_PLATFORM=YES).");
        else if (sim && o->edmm == M_CONFIG_EDMM_ON)
            why = strdup("SGX_MODE=SIM: occlum build does not pass ENABLE_EDMM on to the tool in "
                         "simulation mode.");
        else
            why = strdup("Neither --edmm nor feature.enable_edmm asks for EDMM.");
    }
    set_from(d, &l->platform_why, why);
    d->plat = l->edmm ? "EDMM" : sim ? "SIM" : "non-EDMM";
}

/* ---------------------------------------------------------------------------
 * Kernel stack, kernel heap, user space
 * ------------------------------------------------------------------------- */

static void kernel_stack(struct dctx *d)
{
    const struct m_config_size *s = &d->cfg->kernel_stack;
    struct m_config_range *r = &d->l->kernel_stack;
    r->init = r->max = s->nbytes;
    char *from = m_cfg_strf("kernel_space_stack_size \"%s\" (StackMaxSize and StackMinSize: the "
                            "kernel stack has no separate Init)",
                            s->text);
    set_from(d, &r->init_from, from ? strdup(from) : NULL);
    set_from(d, &r->max_from, from);
}

/* The kernel heap and the user space follow the same rules with their own
 * fields and default; this describes one of them. */
struct area {
    const char *name;     /* "kernel heap" */
    const char *init_key; /* "kernel_space_heap_size" */
    const char *max_key;  /* "kernel_space_heap_max_size" */
    const struct m_config_size *init, *max;
    uint64_t dflt;
    struct m_config_range *r;
};

/* The diagnostic path of a resource_limits field. */
static const char *rl_path(const char *key, char buf[static 64])
{
    snprintf(buf, 64, RL "%s", key);
    return buf;
}

/* A size as written, in quotes, for a diagnostic's "found". */
static const char *quoted(const struct m_config_size *s, char buf[static 64])
{
    snprintf(buf, 64, "\"%s\"", s->text);
    return buf;
}

static void edmm_area(struct dctx *d, const struct area *a)
{
    char b1[32], b2[32], path[64], q[64], want[96];
    struct m_config_range *r = a->r;
    r->init = a->init->nbytes;
    set_from(d, &r->init_from, m_cfg_strf("%s \"%s\"", a->init_key, a->init->text));
    if (a->max->set) {
        if (a->max->nbytes >= a->dflt) {
            r->max = a->max->nbytes;
            set_from(d, &r->max_from,
                     m_cfg_strf("%s \"%s\", which is not below the tool's default %s", a->max_key,
                                a->max->text, fmt(a->dflt, b1)));
        } else {
            r->max = a->dflt;
            set_from(d, &r->max_from,
                     m_cfg_strf("the tool's default %s, which is larger than %s \"%s\"",
                                fmt(a->dflt, b1), a->max_key, a->max->text));
            note(d, &d->l->no_effect, rl_path(a->max_key, path),
                 "%s \"%s\" does not limit the %s on EDMM: the tool takes the larger of it and "
                 "its default %s (guide, Notes 1). Memory is committed on demand, so the larger "
                 "maximum wastes nothing.",
                 a->max_key, a->max->text, a->name, fmt(a->dflt, b2));
        }
        if (d->tool && r->init > r->max)
            m_cfg_diag_add(&d->l->diags, M_CONFIG_ERROR, rl_path(a->init_key, path),
                           a->init->pos.line, a->init->pos.column, quoted(a->init, q),
                           (snprintf(want, sizeof want, "at most %s", fmt(r->max, b2)), want),
                           d->plat,
                           RL "%s \"%s\" is larger than the %s's maximum on EDMM, %s. Occlum's "
                              "tool refuses this (it prints \"%s: \\\"%s\\\", %s: "
                              "Some(\\\"%s\\\"), wrong configuration\" and writes no Enclave.xml).",
                           a->init_key, a->init->text, a->name, fmt(r->max, b1), a->init_key,
                           a->init->text, a->max_key, a->max->text);
        return;
    }
    if (d->tool && a->init->nbytes > a->dflt) {
        r->max = a->init->nbytes;
        set_from(d, &r->max_from,
                 m_cfg_strf("%s \"%s\": with %s absent the tool raises its default %s to the "
                            "initial size",
                            a->init_key, a->init->text, a->max_key, fmt(a->dflt, b1)));
        return;
    }
    r->max = a->dflt;
    set_from(d, &r->max_from,
             m_cfg_strf("the tool's default %s (%s is not set)", fmt(a->dflt, b1), a->max_key));
    if (a->init->nbytes > a->dflt)
        m_cfg_diag_add(&d->l->diags, M_CONFIG_ERROR, rl_path(a->init_key, path), a->init->pos.line,
                       a->init->pos.column, quoted(a->init, q),
                       (snprintf(want, sizeof want, "at most %s, or %s of at least \"%s\"",
                                 fmt(a->dflt, b2), a->max_key, a->init->text),
                        want),
                       d->plat,
                       RL "%s \"%s\" is larger than the %s's maximum on EDMM, which is the "
                          "tool's default %s because %s is not set (guide). Add %s of at least "
                          "\"%s\". (Occlum's tool would instead raise the maximum to the initial "
                          "size: see --compat occlum-tool.)",
                       a->init_key, a->init->text, a->name, fmt(a->dflt, b1), a->max_key,
                       a->max_key, a->init->text);
}

static void static_area(struct dctx *d, const struct area *a, bool user)
{
    char path[64], q[64];
    struct m_config_range *r = a->r;
    if (!a->max->set) {
        r->init = r->max = a->init->nbytes;
        char *s = m_cfg_strf("%s \"%s\" (a static size: without EDMM all of it is committed at "
                             "start-up)",
                             a->init_key, a->init->text);
        set_from(d, &r->init_from, s ? strdup(s) : NULL);
        set_from(d, &r->max_from, s);
        return;
    }
    r->max = a->max->nbytes;
    set_from(d, &r->max_from,
             m_cfg_strf("%s \"%s\" (a static size: without EDMM all of it is committed at "
                        "start-up)",
                        a->max_key, a->max->text));
    if (d->tool && user) {
        /* The tool still tells the LibOS user_space_size as the initial user
         * space, and refuses one larger than the maximum. */
        r->init = a->init->nbytes;
        set_from(d, &r->init_from,
                 m_cfg_strf("%s \"%s\" (only as the LibOS's user_space_init_size: Enclave.xml "
                            "reserves the maximum)",
                            a->init_key, a->init->text));
        if (r->init > r->max)
            m_cfg_diag_add(&d->l->diags, M_CONFIG_ERROR, rl_path(a->init_key, path),
                           a->init->pos.line, a->init->pos.column, quoted(a->init, q),
                           "at most user_space_max_size", d->plat,
                           RL "%s \"%s\" is larger than %s \"%s\". Occlum's tool refuses this "
                              "even without EDMM, where %s is otherwise ignored (it prints "
                              "\"%s: \\\"%s\\\", %s: Some(\\\"%s\\\"), wrong configuration\").",
                           a->init_key, a->init->text, a->max_key, a->max->text, a->init_key,
                           a->init_key, a->init->text, a->max_key, a->max->text);
        return;
    }
    r->init = r->max;
    set_from(d, &r->init_from, r->max_from ? strdup(r->max_from) : NULL);
    note(d, &d->l->no_effect, rl_path(a->init_key, path),
         "%s \"%s\" no longer takes effect without EDMM: %s \"%s\" is the static %s size "
         "(guide).",
         a->init_key, a->init->text, a->max_key, a->max->text, a->name);
}

static void memory(struct dctx *d)
{
    const struct m_config *c = d->cfg;
    struct m_config_layout *l = d->l;
    char b1[32], q[64];
    struct area heap = {"kernel heap",   "kernel_space_heap_size", "kernel_space_heap_max_size",
                        &c->kernel_heap, &c->kernel_heap_max,      M_CONFIG_DEFAULT_KERNEL_HEAP_MAX,
                        &l->kernel_heap};
    struct area user = {"user space",   "user_space_size",  "user_space_max_size",
                        &c->user_space, &c->user_space_max, M_CONFIG_DEFAULT_USER_SPACE_MAX,
                        &l->user_space};
    if (l->edmm) {
        edmm_area(d, &heap);
        edmm_area(d, &user);
        l->reserved_mem_nbytes = l->user_space.init;
        l->has_user_region = true;
        /* The SDK tracks the region in memory of its own, except when it
         * never grows. */
        if (l->user_space.max == l->user_space.init) {
            l->user_region_nbytes = l->user_space.max;
        } else if (l->user_space.max > UINT64_MAX - M_CONFIG_EXTRA_USER_REGION) {
            l->user_region_nbytes = UINT64_MAX;
            m_cfg_diag_add(&l->diags, M_CONFIG_ERROR, "resource_limits.user_space_max_size",
                           c->user_space_max.pos.line, c->user_space_max.pos.column,
                           quoted(&c->user_space_max, q), "a user space maximum below 16777215TB",
                           d->plat,
                           "The user space maximum (%s) plus the 1GB the tool adds for the SGX "
                           "SDK does not fit in 64 bits.",
                           fmt(l->user_space.max, b1));
        } else {
            l->user_region_nbytes = l->user_space.max + M_CONFIG_EXTRA_USER_REGION;
        }
    } else {
        static_area(d, &heap, false);
        static_area(d, &user, true);
        l->reserved_mem_nbytes = l->user_space.max;
        l->has_user_region = false;
    }
}

/* ---------------------------------------------------------------------------
 * Threads (TCS)
 * ------------------------------------------------------------------------- */

static void threads(struct dctx *d)
{
    const struct m_config *c = d->cfg;
    struct m_config_layout *l = d->l;
    struct m_config_range *r = &l->threads;
    uint64_t maxv = c->max_threads.value;
    if (!l->edmm) {
        r->init = r->max = maxv;
        char *s = m_cfg_strf("max_num_of_threads %" PRIu64 " (a static number without EDMM)", maxv);
        set_from(d, &r->init_from, s ? strdup(s) : NULL);
        set_from(d, &r->max_from, s);
        if (c->init_threads.set)
            note(d, &l->no_effect, RL "init_num_of_threads",
                 "init_num_of_threads %" PRIu64 " does not take effect without EDMM: "
                 "max_num_of_threads is the static number of threads (guide).",
                 c->init_threads.value);
    } else {
        if (c->init_threads.set &&
            (d->tool || c->init_threads.value <= M_CONFIG_DEFAULT_TCS_INIT)) {
            r->init = c->init_threads.value;
            set_from(d, &r->init_from,
                     m_cfg_strf("init_num_of_threads %" PRIu64 "%s", c->init_threads.value,
                                d->tool && c->init_threads.value > M_CONFIG_DEFAULT_TCS_INIT
                                    ? " (the tool uses it as given, above its default 16)"
                                    : ""));
        } else if (c->init_threads.set) {
            r->init = M_CONFIG_DEFAULT_TCS_INIT;
            set_from(d, &r->init_from,
                     m_cfg_strf("the tool's default 16, which is smaller than init_num_of_threads "
                                "%" PRIu64 " (the guide takes the smaller)",
                                c->init_threads.value));
        } else if (d->tool) {
            r->init = maxv < M_CONFIG_DEFAULT_TCS_INIT ? maxv : M_CONFIG_DEFAULT_TCS_INIT;
            set_from(d, &r->init_from,
                     m_cfg_strf("the smaller of the tool's default 16 and max_num_of_threads "
                                "%" PRIu64 " (init_num_of_threads is not set)",
                                maxv));
        } else {
            r->init = M_CONFIG_DEFAULT_TCS_INIT;
            set_from(d, &r->init_from,
                     strdup("the tool's default 16 (init_num_of_threads is not set)"));
        }
        if (maxv >= M_CONFIG_DEFAULT_TCS_MAX) {
            r->max = maxv;
            set_from(d, &r->max_from,
                     m_cfg_strf("max_num_of_threads %" PRIu64
                                ", which is not below the tool's default 4096",
                                maxv));
        } else {
            r->max = M_CONFIG_DEFAULT_TCS_MAX;
            set_from(d, &r->max_from,
                     m_cfg_strf("the tool's default 4096, which is larger than max_num_of_threads "
                                "%" PRIu64,
                                maxv));
            note(d, &l->no_effect, RL "max_num_of_threads",
                 "max_num_of_threads %" PRIu64 " does not limit threads on EDMM: the tool takes "
                 "the larger of it and its default 4096 (guide, Notes 1).",
                 maxv);
        }
        if (d->tool && r->init > r->max) {
            char found[64];
            snprintf(found, sizeof found, "%" PRIu64, c->init_threads.value);
            m_cfg_diag_add(&l->diags, M_CONFIG_ERROR, RL "init_num_of_threads",
                           c->init_threads.pos.line, c->init_threads.pos.column, found,
                           "at most the maximum number of threads", d->plat,
                           RL "init_num_of_threads %" PRIu64 " is larger than the maximum number "
                              "of threads on EDMM, %" PRIu64 ". Occlum's tool refuses this (it "
                              "prints \"init_num_of_threads: Some(%" PRIu64 "), "
                              "max_num_of_threads: %" PRIu64 ", wrong configuration\").",
                           c->init_threads.value, r->max, c->init_threads.value, maxv);
        }
    }
    l->tcs_min_pool = (uint32_t)r->init;
    if (r->init == 0) {
        bool init_field = l->edmm && c->init_threads.set;
        const struct m_config_count *f = init_field ? &c->init_threads : &c->max_threads;
        const char *key = init_field ? RL "init_num_of_threads" : RL "max_num_of_threads";
        m_cfg_diag_add(&l->diags, d->tool ? M_CONFIG_WARNING : M_CONFIG_ERROR, key, f->pos.line,
                       f->pos.column, "0", "at least 1", d->plat,
                       "The enclave would start with no thread at all (TCSNum 0, from %s): "
                       "sgx_sign rejects an enclave without a TCS, so occlum build would fail. "
                       "Set %s to at least 1.",
                       key, key);
    }
}

/* ---------------------------------------------------------------------------
 * Metadata, checks against the result, notes and advice
 * ------------------------------------------------------------------------- */

static void metadata(struct dctx *d)
{
    const struct m_config *c = d->cfg;
    struct m_config_layout *l = d->l;
    l->misc_select = l->edmm ? "1" : "0";
    l->misc_mask = l->edmm ? "0xFFFFFFFF" : "0";
    l->prod_id = (uint32_t)c->product_id.value;
    l->isvsvn = (uint32_t)c->version_number.value;
    l->disable_debug = c->debuggable.set && !c->debuggable.value;
    bool kss = c->enable_kss.set && c->enable_kss.value;
    l->enable_kss = kss;
    if (kss) {
        l->isvextprodid_h = c->ext_prod_id_high.value;
        l->isvextprodid_l = c->ext_prod_id_low.value;
        l->isvfamilyid_h = c->family_id_high.value;
        l->isvfamilyid_l = c->family_id_low.value;
    } else if (c->ext_prod_id_high.value || c->ext_prod_id_low.value || c->family_id_high.value ||
               c->family_id_low.value) {
        note(d, &l->no_effect, "metadata.family_id",
             "metadata.family_id and metadata.ext_prod_id have no effect while enable_kss is "
             "false: the tool writes 0 for ISVFAMILYID and ISVEXTPRODID.");
    }
    l->pkru = (uint32_t)c->pkru.value;
    l->amx = (uint32_t)c->amx.value;
    if (c->default_mmap.set)
        note(d, &l->no_effect, "process.default_mmap_size",
             "process.default_mmap_size \"%s\" has no effect: the guide marks it Required but "
             "inoperative (occlum build needs it; Occlum does not use it).",
             c->default_mmap.text);
}

static void cache_sizes(struct dctx *d)
{
    char b1[32], q[64], want[64];
    for (size_t i = 0; i < d->cfg->ncache_sizes; i++) {
        const struct m_config_cache_size *cs = &d->cfg->cache_sizes[i];
        if (cs->size.nbytes <= d->l->kernel_heap.max)
            continue;
        m_cfg_diag_add(&d->l->diags, M_CONFIG_ERROR, cs->path, cs->size.pos.line,
                       cs->size.pos.column, quoted(&cs->size, q),
                       (snprintf(want, sizeof want, "at most %s, the kernel heap maximum",
                                 fmt(d->l->kernel_heap.max, b1)),
                        want),
                       d->plat,
                       "%s \"%s\" is larger than the kernel heap's maximum here (%s); the "
                       "configuration tool requires the cache to fit in the kernel heap. Raise "
                       "kernel_space_heap_max_size or lower the cache size.",
                       cs->path, cs->size.text, fmt(d->l->kernel_heap.max, b1));
    }
}

static void advice(struct dctx *d)
{
    const struct m_config *c = d->cfg;
    struct m_config_layout *l = d->l;
    char b1[32], b2[32], b3[32], b4[32];
    if (l->edmm) {
        if (!c->kernel_heap_max.set)
            note(d, &l->advice, RL "kernel_space_heap_max_size",
                 "Add kernel_space_heap_max_size, a little larger than kernel_space_heap_size "
                 "(\"%s\"), as the guide recommends for EDMM; kernel_space_heap_size can then be "
                 "lowered, since the initial heap is committed at start-up whether it is used or "
                 "not.",
                 c->kernel_heap.text);
        if (!c->user_space_max.set) {
            uint64_t twice = c->user_space.nbytes <= UINT64_MAX / 2 ? c->user_space.nbytes * 2
                                                                    : c->user_space.nbytes;
            note(d, &l->advice, RL "user_space_max_size",
                 "Add user_space_max_size (the guide suggests about twice the old "
                 "user_space_size, here \"%s\") to protect the application from running out of "
                 "memory; user_space_size can then be lowered for a faster start-up.",
                 fmt(twice, b1));
        }
        if (!c->init_threads.set)
            note(d, &l->advice, RL "init_num_of_threads",
                 "Add init_num_of_threads with a small value (the guide's example uses 2): "
                 "fewer initial threads start faster, and max_num_of_threads can stay as it is.");
        else if (c->init_threads.value > M_CONFIG_DEFAULT_TCS_INIT)
            note(d, &l->advice, RL "init_num_of_threads",
                 "init_num_of_threads %" PRIu64 " is above the tool's default 16. The guide "
                 "takes the smaller of the two, Occlum's tool takes %" PRIu64 " as given; "
                 "write 16 or less to get the same enclave from both.",
                 c->init_threads.value, c->init_threads.value);
        note(d, &l->advice, "",
             "An enclave built for EDMM still starts on a platform without EDMM, but with "
             "memory settings meant for EDMM it may fail there with out-of-memory errors or "
             "panics (guide, Notes 4): build without ENABLE_EDMM for such platforms.");
        return;
    }
    if (c->kernel_heap_max.set && c->kernel_heap_max.nbytes > c->kernel_heap.nbytes)
        note(d, &l->advice, RL "kernel_space_heap_max_size",
             "Without EDMM, kernel_space_heap_max_size (\"%s\") is the static kernel heap: all "
             "of it is committed when the enclave loads, not the \"%s\" of "
             "kernel_space_heap_size. Keep it modest if this file must also serve platforms "
             "without EDMM (guide, Notes 2).",
             c->kernel_heap_max.text, c->kernel_heap.text);
    if (c->user_space_max.set && c->user_space_max.nbytes > c->user_space.nbytes)
        note(d, &l->advice, RL "user_space_max_size",
             "Without EDMM, user_space_max_size (\"%s\") is the static user space: all of it is "
             "committed when the enclave loads, not the \"%s\" of user_space_size. Keep it "
             "modest if this file must also serve platforms without EDMM (guide, Notes 2).",
             c->user_space_max.text, c->user_space.text);
    if (l->startup_nbytes > (1ULL << 30))
        note(d, &l->advice, "",
             "About %s is committed before the program runs (kernel heap %s, user space %s, "
             "%" PRIu64 " threads with a %s kernel stack each). SGX adds and measures every "
             "page when the enclave loads, so start-up time grows with it, and loading fails if "
             "the platform cannot back it (guide, Notes 2).",
             fmt(l->startup_nbytes, b1), fmt(l->kernel_heap.init, b2),
             fmt(l->reserved_mem_nbytes, b3), l->threads.init, fmt(l->kernel_stack.max, b4));
}

static uint64_t sat_add(uint64_t a, uint64_t b)
{
    return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

static uint64_t sat_mul(uint64_t a, uint64_t b)
{
    return b && a > UINT64_MAX / b ? UINT64_MAX : a * b;
}

int m_config_derive(const struct m_config *cfg, const struct m_config_opts *opts,
                    struct m_config_layout *l)
{
    memset(l, 0, sizeof *l);
    if (!cfg->memory_ok)
        return EINVAL;
    l->compat = cfg->compat;
    l->sgx_mode = opts->sgx_mode;
    struct dctx d = {.cfg = cfg, .l = l, .tool = cfg->compat == M_CONFIG_COMPAT_OCCLUM_TOOL};
    decide_platform(&d, opts);
    kernel_stack(&d);
    memory(&d);
    threads(&d);
    metadata(&d);
    cache_sizes(&d);
    l->startup_nbytes = sat_add(sat_add(l->kernel_heap.init, l->reserved_mem_nbytes),
                                sat_mul(l->threads.init, l->kernel_stack.max));
    advice(&d);
    if (d.oom || l->diags.oom) {
        m_config_layout_free(l);
        return ENOMEM;
    }
    return 0;
}

void m_config_layout_free(struct m_config_layout *l)
{
    struct m_config_range *rs[] = {&l->kernel_stack, &l->kernel_heap, &l->user_space, &l->threads};
    for (size_t i = 0; i < 4; i++) {
        free(rs[i]->init_from);
        free(rs[i]->max_from);
    }
    free(l->platform_why);
    m_cfg_notes_free(&l->no_effect);
    m_cfg_notes_free(&l->advice);
    m_config_diags_free(&l->diags);
    memset(l, 0, sizeof *l);
}

const char *m_config_platform_name(const struct m_config_layout *l)
{
    return l->edmm ? "EDMM" : l->sgx_mode == M_CONFIG_SGX_SIM ? "SIM" : "non-EDMM";
}

const char *m_config_platform_title(const struct m_config_layout *l)
{
    if (l->edmm)
        return l->sgx_mode == M_CONFIG_SGX_SIM ? "SGX simulation, with EDMM (as Occlum's tool does)"
                                               : "SGX2 hardware with EDMM";
    return l->sgx_mode == M_CONFIG_SGX_SIM ? "SGX simulation (no EDMM)"
                                           : "SGX hardware without EDMM";
}

int m_config_check(const struct m_config *cfg, const struct m_config_opts *opts,
                   struct m_config_diags *out)
{
    memset(out, 0, sizeof *out);
    int rc = m_config_diags_append(out, &cfg->diags);
    if (!rc && cfg->memory_ok) {
        struct m_config_opts variants[2] = {*opts, *opts};
        size_t n = 1;
        if (opts->edmm == M_CONFIG_EDMM_FROM_FILE && opts->sgx_mode == M_CONFIG_SGX_HW) {
            /* One file serves both kinds of platform (the guide's design). */
            variants[0].edmm = M_CONFIG_EDMM_ON;
            variants[1].edmm = M_CONFIG_EDMM_OFF;
            n = 2;
        }
        for (size_t i = 0; i < n && !rc; i++) {
            struct m_config_layout l;
            rc = m_config_derive(cfg, &variants[i], &l);
            if (!rc) {
                rc = m_config_diags_append(out, &l.diags);
                m_config_layout_free(&l);
            }
        }
    }
    if (rc) {
        m_config_diags_free(out);
        return rc;
    }
    m_config_diags_sort(out);
    return 0;
}
