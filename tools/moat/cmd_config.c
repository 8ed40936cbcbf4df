/*
 * cmd_config.c - `moat config`: check, explain and derive Occlum.json
 * enclave configurations with the config layer (src/config/config.h).
 *
 *   moat config check FILE        every problem, exit 0 valid / 3 invalid
 *   moat config explain FILE      the effective Init and Max on a platform
 *   moat config enclave-xml FILE  the Enclave.xml Occlum's tool derives
 *   moat config json FILE         the same values and diagnostics as JSON
 *   moat config suggest STATS     resource_limits from a run's --stats-json
 *
 * Each takes --edmm/--no-edmm, --sgx-mode HW|SIM and --compat
 * guide|occlum-tool.  Output goes to stdout; for explain, enclave-xml and
 * json the diagnostics go to stderr (json carries them inside instead).
 * Exit codes are cli.h's: 2 for usage (including a FILE that cannot be
 * read), 3 for an invalid configuration, 4 for a failure to write output.
 */
#include "cli.h"

#include "config/config.h"
#include "run_config.h"

#include "common/size.h"

#include <jansson.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    OPT_PLATFORM = 1 << 0, /* --edmm, --no-edmm, --sgx-mode, --compat */
    OPT_PRETTY = 1 << 1,
    OPT_OUTPUT = 1 << 2,
    OPT_QUIET = 1 << 3,
};

struct cli {
    const char *cmd;
    const char *file;
    struct m_config_opts opts;
    bool pretty, quiet;
    const char *output;
};

/* ---------------------------------------------------------------------------
 * Help
 * ------------------------------------------------------------------------- */

static const char usage_main[] =
    "usage: moat config COMMAND [OPTIONS] FILE\n"
    "\n"
    "Check, explain and derive Occlum.json enclave configurations. The rules are\n"
    "those of Occlum's EDMM configuration guide; --compat occlum-tool reproduces\n"
    "Occlum's own configuration tool (gen_internal_conf) instead, where the two\n"
    "differ (docs/config.md lists every difference).\n"
    "\n"
    "commands:\n"
    "  check        report every problem in FILE, with its place and a fix\n"
    "  explain      show the effective Init and Max of the kernel stack, kernel\n"
    "               heap, user space and threads on one platform, and why\n"
    "  enclave-xml  print the Enclave.xml Occlum's configuration tool derives\n"
    "  json         print the effective values and all diagnostics as JSON\n"
    "  suggest      turn the --stats-json of a `moat run` into a suggested\n"
    "               resource_limits section\n"
    "\n"
    "FILE is an Occlum.json; '-' reads standard input.\n"
    "'moat config COMMAND --help' describes each command and its options.\n"
    "\n"
    "exit status: 0 valid, 2 usage error or unreadable FILE, 3 invalid\n"
    "configuration, 4 output could not be written.\n";

static const char help_platform[] =
    "  --edmm            derive for an SGX2 platform with EDMM, as\n"
    "                    `ENABLE_EDMM=Y occlum build` does\n"
    "  --no-edmm         derive for a platform without EDMM\n"
    "                    (without either: feature.enable_edmm in FILE decides,\n"
    "                    and EDMM is off when it is absent)\n"
    "  --sgx-mode MODE   HW (default) or SIM; SGX_MODE=SIM takes precedence over\n"
    "                    EDMM, as the guide says (Notes 3)\n"
    "  --compat MODE     guide (default): follow the EDMM configuration guide;\n"
    "                    occlum-tool: reproduce Occlum's configuration tool exactly\n"
    "  -h, --help        this text\n"
    "\n"
    "moat does not read SGX_MODE or ENABLE_EDMM from the environment: pass the\n"
    "options instead.\n";

static const char help_check[] =
    "usage: moat config check [OPTIONS] FILE\n"
    "\n"
    "Parse FILE as Occlum writes it (strict JSON: no comments, no trailing commas)\n"
    "and report every problem at once. Each report gives the field's JSON path,\n"
    "its line and column, what was found and what is expected:\n"
    "\n"
    "  Occlum.json:3:28: error: resource_limits.user_space_size \"300mb\" is not a ...\n"
    "      found:    \"300mb\"\n"
    "      expected: \"300MB\": a whole number followed by B, KB, MB, GB or TB\n"
    "\n"
    "Errors are what makes `occlum build` (or the enclave's start) fail, or what\n"
    "the guide calls wrong: a missing Required field, a size without a valid\n"
    "unit, an initial size above its maximum, ... Warnings are accepted but\n"
    "probably not meant, such as a misspelt field that Occlum silently ignores.\n"
    "\n"
    "Without --edmm or --no-edmm the file is checked for both kinds of platform\n"
    "(the guide's aim: one Occlum.json for both); a problem that exists on one\n"
    "platform only is marked (EDMM) or (non-EDMM).\n"
    "\n"
    "options:\n"
    "  -q, --quiet       print errors only, not warnings\n"
    "%s"
    "\n"
    "exit status: 0 valid (warnings allowed), 2 usage error or unreadable FILE,\n"
    "3 invalid.\n";

static const char help_explain[] =
    "usage: moat config explain [OPTIONS] FILE\n"
    "\n"
    "Print, for the chosen platform, the effective Init and Max of the kernel\n"
    "stack, kernel heap, user space and number of threads; which field or\n"
    "built-in default of Occlum's configuration tool produced each value; which\n"
    "configured fields have no effect there (the guide's \"no longer takes\n"
    "effect\" cases); and the guide's advice for that platform.\n"
    "\n"
    "Problems in FILE are printed on stderr. The table is printed whenever the\n"
    "memory fields can be read, even if other fields are wrong.\n"
    "\n"
    "options:\n"
    "%s"
    "\n"
    "exit status: 0 valid, 2 usage error or unreadable FILE, 3 invalid.\n";

static const char help_xml[] =
    "usage: moat config enclave-xml [OPTIONS] FILE\n"
    "\n"
    "Print the Enclave.xml that Occlum's configuration tool derives from FILE for\n"
    "the chosen platform: StackMaxSize/StackMinSize, HeapInitSize/HeapMaxSize/\n"
    "HeapMinSize, TCSNum/TCSMaxNum/TCSMinPool, ReservedMem{Max,Min,Init}Size,\n"
    "UserRegionSize (EDMM only), MiscSelect/MiscMask and the metadata elements,\n"
    "in the tool's order, with decimal numbers. The output is one line, as the\n"
    "tool writes it, unless --pretty is given.\n"
    "\n"
    "Nothing is printed when FILE has errors (they go to stderr, exit 3).\n"
    "\n"
    "options:\n"
    "  --pretty          one element a line, indented\n"
    "  -o, --output OUT  write to OUT instead of stdout, byte for byte as the tool\n"
    "                    writes it (no trailing newline)\n"
    "%s"
    "\n"
    "exit status: 0 written, 2 usage error or unreadable FILE, 3 invalid,\n"
    "4 OUT could not be written.\n";

static const char help_json[] =
    "usage: moat config json [OPTIONS] FILE\n"
    "\n"
    "Print, as one JSON object for scripts, what `explain` shows and what\n"
    "`enclave-xml` writes: \"platform\", \"layout\" (init, max and their\n"
    "provenance for kernel_stack, kernel_heap, user_space and threads, in bytes\n"
    "or threads), \"enclave_xml\" (element name to value), \"no_effect\",\n"
    "\"advice\", and every diagnostic (\"diagnostics\", with severity, path, line,\n"
    "column, found, expected, message). \"valid\" is false when there are errors;\n"
    "\"layout\" is null when the memory fields cannot be read. Numbers above\n"
    "2^63-1 are written as decimal strings.\n"
    "\n"
    "options:\n"
    "  -o, --output OUT  write to OUT instead of stdout\n"
    "%s"
    "\n"
    "exit status: 0 valid, 2 usage error or unreadable FILE, 3 invalid (the JSON\n"
    "is printed all the same), 4 OUT could not be written.\n";

static const char help_suggest[] =
    "usage: moat config suggest [OPTIONS] STATS.json\n"
    "\n"
    "Turn the statistics of a run (moat run --stats-json FILE, best with --config)\n"
    "into a suggested resource_limits section, printed as JSON on stdout; what it\n"
    "is based on goes to stderr. The rules (docs/config.md):\n"
    "\n"
    "  - a maximum leaves PCT%% of itself unused at the run's peak: peak / (1 - PCT),\n"
    "    sizes rounded up to whole MB (at least 1MB);\n"
    "  - EDMM: user_space_size 1MB (start-up stays fast, the rest comes on demand),\n"
    "    user_space_max_size that maximum, init_num_of_threads the thread peak (at\n"
    "    most the tool's 16), max_num_of_threads from the thread peak (at most 4096);\n"
    "  - without EDMM: user_space_size that maximum (all of it is committed at\n"
    "    start-up) and max_num_of_threads; the init and max_size fields are left\n"
    "    out, they have no effect there;\n"
    "  - kernel_space_* are copied from the run's configuration (moat cannot see\n"
    "    the LibOS kernel's use); the thread fields are left out when the run did\n"
    "    not count threads.\n"
    "\n"
    "options:\n"
    "  --headroom PCT    share of each maximum left unused at the peak, 0 to %u\n"
    "                    (default %u)\n"
    "  --edmm            suggest for an SGX2 platform with EDMM\n"
    "  --no-edmm         suggest for a platform without EDMM\n"
    "                    (default: the platform of the run's --config, else EDMM)\n"
    "  -h, --help        this text\n"
    "\n"
    "exit status: 0 printed, 2 usage error or unreadable STATS.json, 3 STATS.json\n"
    "is not the --stats-json of a moat run.\n";

static void print_help(FILE *f, const char *cmd)
{
    if (!strcmp(cmd, "check"))
        fprintf(f, help_check, help_platform);
    else if (!strcmp(cmd, "explain"))
        fprintf(f, help_explain, help_platform);
    else if (!strcmp(cmd, "enclave-xml"))
        fprintf(f, help_xml, help_platform);
    else if (!strcmp(cmd, "json"))
        fprintf(f, help_json, help_platform);
    else if (!strcmp(cmd, "suggest"))
        fprintf(f, help_suggest, M_RUN_HEADROOM_MAX, M_RUN_HEADROOM_DEFAULT);
    else
        fputs(usage_main, f);
}

/* ---------------------------------------------------------------------------
 * Arguments
 * ------------------------------------------------------------------------- */

static int usage_error(const struct cli *c, const char *fmt, const char *arg)
{
    fprintf(stderr, "moat config %s: ", c->cmd);
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nRun 'moat config %s --help' for the options.\n", c->cmd);
    return MOAT_EXIT_USAGE;
}

/* The value of an option given as "--opt=value" or "--opt value". */
static const char *opt_value(int argc, char **argv, int *i, const char *name)
{
    size_t n = strlen(name);
    if (argv[*i][n] == '=')
        return argv[*i] + n + 1;
    if (*i + 1 < argc)
        return argv[++*i];
    return NULL;
}

static bool opt_is(const char *arg, const char *name)
{
    size_t n = strlen(name);
    return !strncmp(arg, name, n) && (arg[n] == '\0' || arg[n] == '=');
}

/* Returns -1 when parsing succeeded, else the exit code. */
static int parse_args(int argc, char **argv, struct cli *c, unsigned allowed)
{
    c->opts =
        (struct m_config_opts){M_CONFIG_COMPAT_GUIDE, M_CONFIG_EDMM_FROM_FILE, M_CONFIG_SGX_HW};
    bool edmm_given = false, only_files = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (only_files || a[0] != '-' || !strcmp(a, "-")) {
            if (c->file)
                return usage_error(c, "more than one FILE given ('%s'); give exactly one.", a);
            c->file = a;
        } else if (!strcmp(a, "--")) {
            only_files = true;
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            print_help(stdout, c->cmd);
            return MOAT_EXIT_OK;
        } else if ((allowed & OPT_PLATFORM) && (!strcmp(a, "--edmm") || !strcmp(a, "--no-edmm"))) {
            enum m_config_edmm e = a[2] == 'e' ? M_CONFIG_EDMM_ON : M_CONFIG_EDMM_OFF;
            if (edmm_given && e != c->opts.edmm)
                return usage_error(c, "%s",
                                   "--edmm and --no-edmm contradict each other; give one.");
            c->opts.edmm = e;
            edmm_given = true;
        } else if ((allowed & OPT_PLATFORM) && opt_is(a, "--sgx-mode")) {
            const char *v = opt_value(argc, argv, &i, "--sgx-mode");
            if (!v)
                return usage_error(c, "%s", "--sgx-mode needs a value: HW or SIM.");
            if (!strcmp(v, "HW"))
                c->opts.sgx_mode = M_CONFIG_SGX_HW;
            else if (!strcmp(v, "SIM"))
                c->opts.sgx_mode = M_CONFIG_SGX_SIM;
            else
                return usage_error(c, "--sgx-mode must be HW or SIM (as SGX_MODE), not '%s'.", v);
        } else if ((allowed & OPT_PLATFORM) && opt_is(a, "--compat")) {
            const char *v = opt_value(argc, argv, &i, "--compat");
            if (!v)
                return usage_error(c, "%s", "--compat needs a value: guide or occlum-tool.");
            if (!strcmp(v, "guide"))
                c->opts.compat = M_CONFIG_COMPAT_GUIDE;
            else if (!strcmp(v, "occlum-tool"))
                c->opts.compat = M_CONFIG_COMPAT_OCCLUM_TOOL;
            else
                return usage_error(c, "--compat must be guide or occlum-tool, not '%s'.", v);
        } else if ((allowed & OPT_PRETTY) && !strcmp(a, "--pretty")) {
            c->pretty = true;
        } else if ((allowed & OPT_QUIET) && (!strcmp(a, "-q") || !strcmp(a, "--quiet"))) {
            c->quiet = true;
        } else if ((allowed & OPT_OUTPUT) && (!strcmp(a, "-o") || opt_is(a, "--output"))) {
            const char *v = opt_value(argc, argv, &i, a[1] == 'o' ? "-o" : "--output");
            if (!v || !*v)
                return usage_error(c, "%s", "-o/--output needs a file name.");
            c->output = v;
        } else {
            return usage_error(c, "unknown option '%s'.", a);
        }
    }
    if (!c->file)
        return usage_error(c, "%s", "no FILE given: name the Occlum.json to read ('-' for stdin).");
    return -1;
}

/* ---------------------------------------------------------------------------
 * Commands
 * ------------------------------------------------------------------------- */

static int load(const struct cli *c, struct m_config **cfg)
{
    int rc = m_config_load(c->file, c->opts.compat, cfg);
    if (rc == 0)
        return -1;
    if (rc == ENOMEM) {
        fprintf(stderr, "moat config %s: out of memory while reading '%s'.\n", c->cmd, c->file);
        return MOAT_EXIT_RUNTIME;
    }
    fprintf(stderr, "moat config %s: cannot read '%s': %s.%s\n", c->cmd, c->file, strerror(rc),
            rc == EFBIG ? " An Occlum.json is far smaller than 64 MiB; is this the right file?"
                        : "");
    return MOAT_EXIT_USAGE;
}

static void print_diags(FILE *f, const struct m_config *cfg, const struct m_config_diags *d,
                        bool errors_only)
{
    for (size_t i = 0; i < d->n; i++)
        if (!errors_only || d->v[i].severity == M_CONFIG_ERROR)
            m_config_diag_print(f, cfg->name, &d->v[i]);
}

static const char *plural(size_t n, const char *one, const char *many)
{
    return n == 1 ? one : many;
}

static int cmd_check(const struct cli *c, struct m_config *cfg)
{
    struct m_config_diags d;
    if (m_config_check(cfg, &c->opts, &d)) {
        fprintf(stderr, "moat config check: out of memory.\n");
        return MOAT_EXIT_RUNTIME;
    }
    print_diags(stdout, cfg, &d, c->quiet);
    if (d.nerrors)
        printf("%s: %zu %s, %zu %s: occlum build would fail with this configuration.\n", cfg->name,
               d.nerrors, plural(d.nerrors, "error", "errors"), d.nwarnings,
               plural(d.nwarnings, "warning", "warnings"));
    else if (d.nwarnings && !c->quiet)
        printf("%s: valid, with %zu %s.\n", cfg->name, d.nwarnings,
               plural(d.nwarnings, "warning", "warnings"));
    else
        printf("%s: valid.\n", cfg->name);
    int rc = d.nerrors ? MOAT_EXIT_CONFIG : MOAT_EXIT_OK;
    m_config_diags_free(&d);
    return rc;
}

/* cfg's diagnostics plus those of the layout (if any), in file order. */
static int platform_diags(const struct m_config *cfg, const struct m_config_layout *l,
                          struct m_config_diags *d)
{
    memset(d, 0, sizeof *d);
    int rc = m_config_diags_append(d, &cfg->diags);
    if (!rc && l)
        rc = m_config_diags_append(d, &l->diags);
    if (rc) {
        m_config_diags_free(d);
        return rc;
    }
    m_config_diags_sort(d);
    return 0;
}

static int write_out(const struct cli *c, const char *text, size_t len)
{
    FILE *f = fopen(c->output, "w");
    if (!f) {
        fprintf(stderr, "moat config %s: cannot create '%s': %s.\n", c->cmd, c->output,
                strerror(errno));
        return MOAT_EXIT_RUNTIME;
    }
    size_t n = fwrite(text, 1, len, f);
    int err = ferror(f) ? errno : 0;
    if (fclose(f) && !err)
        err = errno;
    if (n != len || err) {
        fprintf(stderr, "moat config %s: cannot write '%s': %s.\n", c->cmd, c->output,
                strerror(err ? err : EIO));
        return MOAT_EXIT_RUNTIME;
    }
    return MOAT_EXIT_OK;
}

static int cannot_derive(const struct cli *c, const struct m_config *cfg)
{
    print_diags(stderr, cfg, &cfg->diags, false);
    fprintf(stderr,
            "moat config %s: %s has %zu %s; the memory fields of resource_limits must be valid "
            "before a layout can be derived. Fix the errors above (moat config check %s lists "
            "them all).\n",
            c->cmd, cfg->name, cfg->diags.nerrors, plural(cfg->diags.nerrors, "error", "errors"),
            c->file);
    return MOAT_EXIT_CONFIG;
}

static int cmd_explain(const struct cli *c, struct m_config *cfg)
{
    struct m_config_layout l;
    int rc = m_config_derive(cfg, &c->opts, &l);
    if (rc == EINVAL)
        return cannot_derive(c, cfg);
    if (rc) {
        fprintf(stderr, "moat config explain: out of memory.\n");
        return MOAT_EXIT_RUNTIME;
    }
    struct m_config_diags d;
    if (platform_diags(cfg, &l, &d)) {
        m_config_layout_free(&l);
        fprintf(stderr, "moat config explain: out of memory.\n");
        return MOAT_EXIT_RUNTIME;
    }
    m_config_explain(stdout, cfg, &l);
    fflush(stdout);
    print_diags(stderr, cfg, &d, false);
    if (d.nerrors)
        fprintf(stderr, "moat config explain: %s has %zu %s on this platform (above).\n", cfg->name,
                d.nerrors, plural(d.nerrors, "error", "errors"));
    rc = d.nerrors ? MOAT_EXIT_CONFIG : MOAT_EXIT_OK;
    m_config_diags_free(&d);
    m_config_layout_free(&l);
    return rc;
}

static int cmd_enclave_xml(const struct cli *c, struct m_config *cfg)
{
    struct m_config_layout l;
    int rc = m_config_derive(cfg, &c->opts, &l);
    if (rc == EINVAL)
        return cannot_derive(c, cfg);
    if (rc) {
        fprintf(stderr, "moat config enclave-xml: out of memory.\n");
        return MOAT_EXIT_RUNTIME;
    }
    struct m_config_diags d;
    char *xml = NULL;
    if (platform_diags(cfg, &l, &d) || m_config_enclave_xml(&l, c->pretty, &xml)) {
        m_config_layout_free(&l);
        fprintf(stderr, "moat config enclave-xml: out of memory.\n");
        return MOAT_EXIT_RUNTIME;
    }
    print_diags(stderr, cfg, &d, false);
    if (d.nerrors) {
        fprintf(stderr,
                "moat config enclave-xml: %s has %zu %s on this platform (above); no "
                "Enclave.xml written.\n",
                cfg->name, d.nerrors, plural(d.nerrors, "error", "errors"));
        rc = MOAT_EXIT_CONFIG;
    } else if (c->output) {
        rc = write_out(c, xml, strlen(xml));
    } else {
        printf("%s\n", xml);
        rc = fflush(stdout) ? MOAT_EXIT_RUNTIME : MOAT_EXIT_OK;
    }
    free(xml);
    m_config_diags_free(&d);
    m_config_layout_free(&l);
    return rc;
}

static int cmd_json(const struct cli *c, struct m_config *cfg)
{
    struct m_config_layout l;
    int rc = m_config_derive(cfg, &c->opts, &l);
    bool have = rc == 0;
    if (rc && rc != EINVAL) {
        fprintf(stderr, "moat config json: out of memory.\n");
        return MOAT_EXIT_RUNTIME;
    }
    struct m_config_diags d;
    char *text = NULL;
    if (platform_diags(cfg, have ? &l : NULL, &d) ||
        m_config_json(cfg, have ? &l : NULL, &d, &text)) {
        if (have)
            m_config_layout_free(&l);
        fprintf(stderr, "moat config json: out of memory.\n");
        return MOAT_EXIT_RUNTIME;
    }
    if (c->output) {
        rc = write_out(c, text, strlen(text));
    } else {
        fputs(text, stdout);
        rc = fflush(stdout) ? MOAT_EXIT_RUNTIME : MOAT_EXIT_OK;
    }
    if (rc == MOAT_EXIT_OK && d.nerrors)
        rc = MOAT_EXIT_CONFIG;
    free(text);
    m_config_diags_free(&d);
    if (have)
        m_config_layout_free(&l);
    return rc;
}

/* ---------------------------------------------------------------------------
 * suggest
 * ------------------------------------------------------------------------- */

/* An integer member of obj at a dotted path ("config.user_space.peak"). */
static bool json_u64(json_t *obj, const char *path, uint64_t *out)
{
    char buf[128];
    snprintf(buf, sizeof buf, "%s", path);
    json_t *v = obj;
    for (char *save = NULL, *k = strtok_r(buf, ".", &save); k && v; k = strtok_r(NULL, ".", &save))
        v = json_is_object(v) ? json_object_get(v, k) : NULL;
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return false;
    *out = (uint64_t)json_integer_value(v);
    return true;
}

static int cmd_suggest(int argc, char **argv)
{
    struct cli c = {.cmd = "suggest"};
    unsigned headroom = M_RUN_HEADROOM_DEFAULT;
    int edmm = -1;
    bool only_files = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (only_files || a[0] != '-' || !strcmp(a, "-")) {
            if (c.file)
                return usage_error(&c, "more than one STATS.json given ('%s'); give exactly one.",
                                   a);
            c.file = a;
        } else if (!strcmp(a, "--")) {
            only_files = true;
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            print_help(stdout, "suggest");
            return MOAT_EXIT_OK;
        } else if (!strcmp(a, "--edmm") || !strcmp(a, "--no-edmm")) {
            int e = a[2] == 'e';
            if (edmm >= 0 && e != edmm)
                return usage_error(&c, "%s",
                                   "--edmm and --no-edmm contradict each other; give one.");
            edmm = e;
        } else if (opt_is(a, "--headroom")) {
            const char *v = opt_value(argc, argv, &i, "--headroom");
            char *end = NULL;
            unsigned long h = v ? strtoul(v, &end, 10) : 0;
            if (!v || !*v || *end || v[0] == '-' || h > M_RUN_HEADROOM_MAX)
                return usage_error(
                    &c, "--headroom needs a whole percentage from 0 to 90, not '%s'.", v ? v : "");
            headroom = (unsigned)h;
        } else {
            return usage_error(&c, "unknown option '%s'.", a);
        }
    }
    if (!c.file)
        return usage_error(&c, "%s",
                           "no STATS.json given: name the file of moat run --stats-json.");
    FILE *in = strcmp(c.file, "-") ? fopen(c.file, "r") : stdin;
    if (!in) {
        fprintf(stderr, "moat config suggest: cannot read '%s': %s.\n", c.file, strerror(errno));
        return MOAT_EXIT_USAGE;
    }
    json_error_t jerr;
    json_t *root = json_loadf(in, 0, &jerr);
    if (in != stdin)
        fclose(in);
    uint64_t committed = 0, page = 4096;
    if (!root || !json_is_object(root) || !json_u64(root, "peak_committed_pages", &committed)) {
        fprintf(stderr,
                "moat config suggest: %s is not the statistics of a run (moat run --stats-json "
                "FILE writes them)%s%s.\n",
                c.file, root ? "" : ": ", root ? "" : jerr.text);
        json_decref(root);
        return MOAT_EXIT_CONFIG;
    }
    json_u64(root, "page_size", &page);
    struct m_run_peaks p = {.user_bytes = committed * page};
    json_u64(root, "config.user_space.peak", &p.user_bytes);
    if (!json_u64(root, "config.threads.peak", &p.threads))
        json_u64(root, "threads_peak", &p.threads);
    json_t *cfg = json_object_get(root, "config");
    json_t *jedmm = json_object_get(cfg, "edmm");
    bool assumed = false;
    if (edmm < 0) {
        if (json_is_boolean(jedmm)) {
            edmm = json_is_true(jedmm);
        } else {
            edmm = 1;
            assumed = true;
        }
    }
    const char *kernel[3] = {NULL, NULL, NULL};
    static const char *const knames[3] = {"kernel_space_stack_size", "kernel_space_heap_size",
                                          "kernel_space_heap_max_size"};
    json_t *conf = json_object_get(cfg, "configured");
    for (int i = 0; i < 3; i++)
        kernel[i] = json_string_value(json_object_get(conf, knames[i]));
    struct m_run_suggestion s;
    m_run_suggest(&p, edmm, headroom, &s);
    char pk[32];
    fprintf(stderr, "moat config suggest: user space peak %s, ",
            m_size_format((size_t)p.user_bytes, pk, sizeof pk));
    if (p.threads)
        fprintf(stderr, "thread peak %" PRIu64 ", ", p.threads);
    else
        fprintf(stderr, "no thread peak (the run did not count threads: no thread fields), ");
    fprintf(stderr, "%u%% headroom, %s%s.\n", s.headroom_pct, edmm ? "EDMM" : "without EDMM",
            assumed ? " (assumed: the run had no --config; --no-edmm for the other)" : "");
    if (s.threads_clamped)
        fprintf(stderr, "moat config suggest: max_num_of_threads held at the tool's maximum "
                        "of 4096.\n");
    printf("{\n    \"resource_limits\": {\n");
    m_run_suggest_print(stdout, &s, kernel, 8);
    printf("\n    }\n}\n");
    json_decref(root);
    return fflush(stdout) ? MOAT_EXIT_RUNTIME : MOAT_EXIT_OK;
}

int moat_cmd_config(int argc, char **argv)
{
    static const struct {
        const char *name;
        int (*fn)(const struct cli *, struct m_config *);
        unsigned allowed;
    } cmds[] = {
        {"check", cmd_check, OPT_PLATFORM | OPT_QUIET},
        {"explain", cmd_explain, OPT_PLATFORM},
        {"enclave-xml", cmd_enclave_xml, OPT_PLATFORM | OPT_PRETTY | OPT_OUTPUT},
        {"json", cmd_json, OPT_PLATFORM | OPT_OUTPUT},
    };
    if (argc < 2) {
        fputs(usage_main, stderr);
        return MOAT_EXIT_USAGE;
    }
    const char *sub = argv[1];
    if (!strcmp(sub, "--help") || !strcmp(sub, "-h") || !strcmp(sub, "help")) {
        if (argc > 2 && !strcmp(sub, "help")) {
            print_help(stdout, argv[2]);
            return MOAT_EXIT_OK;
        }
        fputs(usage_main, stdout);
        return MOAT_EXIT_OK;
    }
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        if (strcmp(sub, cmds[i].name))
            continue;
        struct cli c = {.cmd = sub};
        int rc = parse_args(argc - 1, argv + 1, &c, cmds[i].allowed);
        if (rc >= 0)
            return rc;
        struct m_config *cfg;
        rc = load(&c, &cfg);
        if (rc >= 0)
            return rc;
        rc = cmds[i].fn(&c, cfg);
        m_config_free(cfg);
        return rc;
    }
    if (!strcmp(sub, "suggest"))
        return cmd_suggest(argc - 1, argv + 1);
    fprintf(stderr, "moat config: unknown command '%s'.\n\n", sub);
    fputs(usage_main, stderr);
    return MOAT_EXIT_USAGE;
}
