/*
 * config.h - the config layer's contract: an Occlum.json in, every problem
 * in it, the effective enclave layout on a chosen platform, and the
 * Enclave.xml (or JSON) that describes that layout, out.
 *
 * The specification is Occlum's "EDMM Configuration Guide"; where Occlum's
 * own configuration tool (tools/gen_internal_conf in occlum/occlum) behaves
 * differently, the guide wins unless the caller asks for
 * M_CONFIG_COMPAT_OCCLUM_TOOL, which reproduces the tool exactly.
 * docs/config.md lists every difference.
 *
 * The flow is: m_config_load() or m_config_parse() reads and validates the
 * file (all problems are collected, never just the first), then
 * m_config_derive() computes the layout for one platform (EDMM hardware,
 * non-EDMM hardware, or SGX simulation), which m_config_enclave_xml(),
 * m_config_json() and m_config_explain() render.
 *
 * Every problem is a struct m_config_diag: the JSON path of the field
 * ("resource_limits.user_space_size"), its line and column in the file, what
 * was found, what is expected, and a sentence that says what to do.
 *
 * Functions return 0 or a positive errno value.  Nothing here keeps global
 * state; distinct objects may be used from distinct threads.
 */
#ifndef M_CONFIG_CONFIG_H
#define M_CONFIG_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* ---------------------------------------------------------------------------
 * Built-in values of Occlum's configuration tool (DefaultConfig::init()).
 * ------------------------------------------------------------------------- */

#define M_CONFIG_DEFAULT_KERNEL_HEAP_MAX (1024ULL << 20) /* "1024MB" */
#define M_CONFIG_DEFAULT_USER_SPACE_MAX  (16ULL << 30)   /* "16GB" */
#define M_CONFIG_DEFAULT_TCS_INIT        16u
#define M_CONFIG_DEFAULT_TCS_MAX         4096u
/* On EDMM the tool makes UserRegionSize 1GB larger than the user space
 * maximum (memory the SGX SDK needs to track the region), unless init and
 * max are equal. */
#define M_CONFIG_EXTRA_USER_REGION (1ULL << 30)
/* The SGX SDK's signing tool rejects stack, heap and reserved-memory sizes
 * that are not multiples of the enclave page size. */
#define M_CONFIG_PAGE_SIZE 4096u
/* SIGSTRUCT's ISVPRODID and ISVSVN are 16 bits; sgx_sign rejects more. */
#define M_CONFIG_ISV_MAX 0xFFFFu

/* ---------------------------------------------------------------------------
 * Options
 * ------------------------------------------------------------------------- */

enum m_config_compat {
    M_CONFIG_COMPAT_GUIDE = 0,       /* the EDMM configuration guide (default) */
    M_CONFIG_COMPAT_OCCLUM_TOOL = 1, /* exactly what gen_internal_conf does */
};

enum m_config_sgx_mode {
    M_CONFIG_SGX_HW = 0,
    M_CONFIG_SGX_SIM = 1, /* SGX_MODE=SIM */
};

enum m_config_edmm {
    M_CONFIG_EDMM_FROM_FILE = -1, /* neither --edmm nor --no-edmm: feature.enable_edmm decides */
    M_CONFIG_EDMM_OFF = 0,        /* --no-edmm */
    M_CONFIG_EDMM_ON = 1,         /* --edmm, i.e. ENABLE_EDMM=Y at `occlum build` */
};

struct m_config_opts {
    enum m_config_compat compat;
    enum m_config_edmm edmm;
    enum m_config_sgx_mode sgx_mode;
};

/* ---------------------------------------------------------------------------
 * Size strings ("64MB"): a decimal integer and a mandatory, case-sensitive
 * unit among B, KB, MB, GB, TB (binary multiples), blanks allowed around the
 * number and the unit.
 * ------------------------------------------------------------------------- */

enum m_config_size_status {
    M_CONFIG_SIZE_OK = 0,
    M_CONFIG_SIZE_EMPTY,        /* "" or only blanks */
    M_CONFIG_SIZE_NO_NUMBER,    /* "MB", "lotsMB", "0x10MB" */
    M_CONFIG_SIZE_NEGATIVE,     /* "-4MB" */
    M_CONFIG_SIZE_SIGN,         /* "+4MB": guide mode only, the tool accepts it */
    M_CONFIG_SIZE_FRACTION,     /* "1.5GB" */
    M_CONFIG_SIZE_NO_UNIT,      /* "4096" */
    M_CONFIG_SIZE_UNIT_CASE,    /* "4mb", "4Mb" */
    M_CONFIG_SIZE_UNIT_UNKNOWN, /* "4MiB", "4M", "4 bytes" */
    M_CONFIG_SIZE_OVERFLOW,     /* more than 2^64 - 1 bytes */
};

/* m_config_size_parse - parse s[0..len) into *nbytes.  In tool mode the
 * string is read as gen_internal_conf reads it (a leading '+' and Unicode
 * blanks are accepted as well). */
enum m_config_size_status m_config_size_parse(const char *s, size_t len,
                                              enum m_config_compat compat, uint64_t *nbytes);

/* m_config_size_why - what is wrong, as a clause ("the unit is missing"). */
const char *m_config_size_why(enum m_config_size_status st);

/* m_config_size_suggest - a corrected spelling of a rejected size string
 * ("4mb" -> "4MB", "1.5GB" -> "1536MB", "4096" -> "4KB", "4MiB" -> "4MB");
 * false when there is no obvious one. */
bool m_config_size_suggest(const char *s, size_t len, char *buf, size_t buflen);

/* m_config_size_format - nbytes in the largest Occlum unit that is exact
 * ("600MB", "17GB", "4097B"). */
const char *m_config_size_format(uint64_t nbytes, char *buf, size_t buflen);

/* ---------------------------------------------------------------------------
 * Diagnostics
 * ------------------------------------------------------------------------- */

enum m_config_severity {
    M_CONFIG_ERROR = 0,   /* occlum build (or the enclave's start) would fail */
    M_CONFIG_WARNING = 1, /* accepted, but probably not what was meant */
};

struct m_config_diag {
    enum m_config_severity severity;
    char *path;     /* JSON path, "" for the file as a whole */
    int line;       /* 1-based; 0 when the problem has no place in the file */
    int column;     /* 1-based, in characters */
    char *found;    /* what the file holds there ("\"4mb\"", "nothing") */
    char *expected; /* what would be accepted */
    char *message;  /* full sentences: what is wrong and what to do */
    char *platform; /* NULL when it holds everywhere, else "EDMM", "non-EDMM", "SIM" */
};

struct m_config_diags {
    struct m_config_diag *v;
    size_t n, cap;
    size_t nerrors, nwarnings;
    bool oom; /* a diagnostic could not be recorded */
};

/* m_config_diag_print - "FILE:LINE:COL: error: message" and the found and
 * expected lines under it. */
void m_config_diag_print(FILE *f, const char *name, const struct m_config_diag *d);

/* m_config_diags_sort - order by position in the file (stable). */
void m_config_diags_sort(struct m_config_diags *d);

/* m_config_diags_append - copy every diagnostic of src not already in dst
 * (same severity, path and message).  Returns 0 or ENOMEM. */
int m_config_diags_append(struct m_config_diags *dst, const struct m_config_diags *src);

void m_config_diags_free(struct m_config_diags *d);

/* ---------------------------------------------------------------------------
 * A parsed configuration
 * ------------------------------------------------------------------------- */

struct m_config_pos {
    int line, column; /* 0 when the field is absent */
};

/* set: the key is present with a valid value.  bad: the key is present but
 * its value was rejected (a diagnostic says why).  Neither: absent or null. */
struct m_config_size {
    bool set, bad;
    uint64_t nbytes;
    char text[48]; /* the string as written, shortened if long */
    struct m_config_pos pos;
};

struct m_config_count {
    bool set, bad;
    uint64_t value;
    struct m_config_pos pos;
};

struct m_config_flag {
    bool set, bad;
    bool value;
    struct m_config_pos pos;
};

struct m_config_cache_size {
    char path[64]; /* "mount[3].options.cache_size" */
    struct m_config_size size;
};

struct m_config {
    char *name; /* the file name, for messages */
    enum m_config_compat compat;
    bool json_ok;   /* the file is a JSON object */
    bool memory_ok; /* every memory field needed for a layout is valid */

    /* resource_limits */
    struct m_config_size kernel_stack;    /* kernel_space_stack_size */
    struct m_config_size kernel_heap;     /* kernel_space_heap_size */
    struct m_config_size kernel_heap_max; /* kernel_space_heap_max_size */
    struct m_config_size user_space;      /* user_space_size */
    struct m_config_size user_space_max;  /* user_space_max_size */
    struct m_config_count init_threads;   /* init_num_of_threads */
    struct m_config_count max_threads;    /* max_num_of_threads */
    /* process */
    struct m_config_size default_stack, default_heap, default_mmap;
    /* metadata */
    struct m_config_count product_id, version_number;
    struct m_config_flag debuggable, disable_log, enable_kss;
    struct m_config_count ext_prod_id_high, ext_prod_id_low, family_id_high, family_id_low;
    /* feature */
    struct m_config_count amx, pkru, io_uring;
    struct m_config_flag enable_edmm, enable_posix_shm;
    /* mount[i].options.cache_size, checked against the kernel heap maximum */
    struct m_config_cache_size *cache_sizes;
    size_t ncache_sizes;

    struct m_config_diags diags; /* problems that hold on every platform */
};

/* m_config_parse - read and validate nbytes of JSON.  *out is set even when
 * the text is not valid JSON (cfg->json_ok tells); only ENOMEM fails. */
int m_config_parse(const char *buf, size_t nbytes, const char *name, enum m_config_compat compat,
                   struct m_config **out);

/* m_config_load - m_config_parse on a file ("-" is standard input).
 * Returns 0, the errno of opening or reading it, or EFBIG above 64 MiB. */
int m_config_load(const char *path, enum m_config_compat compat, struct m_config **out);

void m_config_free(struct m_config *cfg);

/* ---------------------------------------------------------------------------
 * The effective layout on one platform
 * ------------------------------------------------------------------------- */

struct m_config_note {
    char *field; /* "resource_limits.user_space_size", or "" */
    char *text;
};

struct m_config_notes {
    struct m_config_note *v;
    size_t n, cap;
};

struct m_config_range {
    uint64_t init, max; /* bytes, or a number of threads */
    char *init_from;    /* which field or default produced init, in words */
    char *max_from;
};

struct m_config_layout {
    enum m_config_compat compat;
    enum m_config_sgx_mode sgx_mode;
    bool edmm;          /* the layout uses EDMM */
    char *platform_why; /* why EDMM is on or off, one sentence */

    struct m_config_range kernel_stack; /* StackMaxSize = StackMinSize */
    struct m_config_range kernel_heap;  /* HeapInitSize = HeapMinSize, HeapMaxSize */
    struct m_config_range user_space;   /* what the LibOS is told (user_space_init/max_size) */
    struct m_config_range threads;      /* TCSNum = TCSMinPool, TCSMaxNum */

    uint64_t startup_nbytes;      /* committed before the program runs: the heap Init, the
                                   * reserved user memory, a kernel stack per Init thread */
    uint64_t reserved_mem_nbytes; /* ReservedMem{Max,Min,Init}Size */
    bool has_user_region;         /* UserRegionSize is written (EDMM only) */
    uint64_t user_region_nbytes;
    uint32_t tcs_min_pool;
    const char *misc_select, *misc_mask;

    uint32_t prod_id, isvsvn, disable_debug, enable_kss, pkru, amx;
    uint64_t isvextprodid_h, isvextprodid_l, isvfamilyid_h, isvfamilyid_l;

    struct m_config_notes no_effect; /* configured fields this platform ignores */
    struct m_config_notes advice;    /* what the guide recommends here */
    struct m_config_diags diags;     /* problems that exist on this platform only */
};

/* m_config_platform_name - "EDMM", "non-EDMM" or "SIM" (for diagnostics);
 * m_config_platform_title - the same in words. */
const char *m_config_platform_name(const struct m_config_layout *l);
const char *m_config_platform_title(const struct m_config_layout *l);

/* m_config_derive - the layout of cfg on the platform opts describe.
 * Returns EINVAL when a memory field is missing or invalid (cfg->diags says
 * which), ENOMEM, or 0; on 0 the layout may still carry errors in l->diags
 * (an init larger than the max on this platform, ...). */
int m_config_derive(const struct m_config *cfg, const struct m_config_opts *opts,
                    struct m_config_layout *l);

void m_config_layout_free(struct m_config_layout *l);

/* m_config_check - cfg->diags plus the platform diagnostics of every
 * platform opts selects (both EDMM and non-EDMM hardware when opts->edmm is
 * M_CONFIG_EDMM_FROM_FILE and the mode is HW), de-duplicated and sorted by
 * position.  Returns 0 or ENOMEM. */
int m_config_check(const struct m_config *cfg, const struct m_config_opts *opts,
                   struct m_config_diags *out);

/* ---------------------------------------------------------------------------
 * Output
 * ------------------------------------------------------------------------- */

/* m_config_enclave_xml - the Enclave.xml gen_internal_conf would write: one
 * line, no XML declaration, decimal numbers, elements in the tool's order;
 * with pretty, one element a line indented by four spaces.  *out is
 * malloc'd and has no trailing newline. */
int m_config_enclave_xml(const struct m_config_layout *l, bool pretty, char **out);

/* m_config_json - the effective values, provenance, notes and diags as an
 * indented JSON document (l may be NULL when no layout could be derived).
 * *out is malloc'd and ends with a newline. */
int m_config_json(const struct m_config *cfg, const struct m_config_layout *l,
                  const struct m_config_diags *diags, char **out);

/* m_config_explain - the readable table of `moat config explain`. */
int m_config_explain(FILE *f, const struct m_config *cfg, const struct m_config_layout *l);

#endif
