/*
 * seal.c - seal and unseal throughput per core, against the raw AES-GCM speed.
 *
 * Every page moat evicts is sealed (AES-256-GCM over 4096 bytes, with a
 * 24-byte identity as additional data) and every page it loads back is
 * opened and verified.  This measures m_seal_page and m_seal_open in a tight
 * loop over a set of distinct pages, on one thread (the per-core number) and
 * on every CPU at once, and compares them with two baselines taken in the
 * same run:
 *
 *   - raw EVP: the same cipher, key schedule and additional data driven
 *     directly through OpenSSL's EVP interface, one page per IV (the floor
 *     for what sealing can cost, since moat adds only the trailer around it);
 *   - `openssl speed -evp aes-256-gcm -bytes 4096 -seconds 2`: OpenSSL's own
 *     benchmark, parsed from its output (skipped with a message if the
 *     openssl command is missing: apt-get install openssl).
 *
 * MB is 10^6 bytes of plaintext, as openssl speed counts.  Each figure is the
 * median of --runs timed runs of --seconds each.
 */
#include "bench.h"

#include "seal/seal.h"
#include "store/store.h"

#include <errno.h>
#include <getopt.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum op { OP_SEAL, OP_OPEN, OP_SEAL_OPEN, OP_RAW_ENC, OP_RAW_DEC, OP_N };
static const char *const op_names[OP_N] = {
    "moat seal (m_seal_page)",     "moat open (m_seal_open)",     "moat seal+open, same page",
    "raw EVP AES-256-GCM encrypt", "raw EVP AES-256-GCM decrypt",
};

struct worker {
    pthread_t tid;
    enum op op;
    unsigned npages;
    double seconds;
    pthread_barrier_t *start;
    uint64_t pages_done;
    uint64_t ns;
    int err;
};

/* The raw baseline: what m_seal_page does minus moat's bookkeeping. */
struct raw_ctx {
    EVP_CIPHER_CTX *ctx;
    uint8_t iv[12];
    uint8_t tag[16];
    struct m_seal_id aad;
};

static uint8_t raw_key[32];

static int raw_init(struct raw_ctx *r, bool encrypt)
{
    r->ctx = EVP_CIPHER_CTX_new();
    if (!r->ctx)
        return ENOMEM;
    memset(r->iv, 0x5a, sizeof r->iv);
    memset(&r->aad, 0, sizeof r->aad);
    int ok = encrypt ? EVP_EncryptInit_ex(r->ctx, EVP_aes_256_gcm(), NULL, raw_key, NULL)
                     : EVP_DecryptInit_ex(r->ctx, EVP_aes_256_gcm(), NULL, raw_key, NULL);
    return ok == 1 ? 0 : EIO;
}

static int raw_encrypt(struct raw_ctx *r, const uint8_t *in, uint8_t *out)
{
    int outl = 0, finl = 0;
    r->iv[0]++;
    if (EVP_EncryptInit_ex(r->ctx, NULL, NULL, NULL, r->iv) != 1 ||
        EVP_EncryptUpdate(r->ctx, NULL, &outl, (const uint8_t *)&r->aad, sizeof r->aad) != 1 ||
        EVP_EncryptUpdate(r->ctx, out, &outl, in, (int)M_SEAL_PAGE) != 1 ||
        EVP_EncryptFinal_ex(r->ctx, out + outl, &finl) != 1 ||
        EVP_CIPHER_CTX_ctrl(r->ctx, EVP_CTRL_GCM_GET_TAG, 16, r->tag) != 1)
        return EIO;
    return 0;
}

/* Decrypts a ciphertext made by raw_encrypt with the same IV and tag, so the
 * tag check passes and the full verify path is timed. */
static int raw_decrypt(struct raw_ctx *r, const uint8_t *in, uint8_t *out, const uint8_t *iv,
                       const uint8_t *tag)
{
    int outl = 0, finl = 0;
    uint8_t t[16];
    memcpy(t, tag, sizeof t);
    if (EVP_DecryptInit_ex(r->ctx, NULL, NULL, NULL, iv) != 1 ||
        EVP_DecryptUpdate(r->ctx, NULL, &outl, (const uint8_t *)&r->aad, sizeof r->aad) != 1 ||
        EVP_DecryptUpdate(r->ctx, out, &outl, in, (int)M_SEAL_PAGE) != 1 ||
        EVP_CIPHER_CTX_ctrl(r->ctx, EVP_CTRL_GCM_SET_TAG, 16, t) != 1 ||
        EVP_DecryptFinal_ex(r->ctx, out + outl, &finl) != 1)
        return EBADMSG;
    return 0;
}

static void *aligned_buf(size_t nbytes)
{
    void *p = NULL;
    if (posix_memalign(&p, M_STORE_ALIGN, nbytes) != 0)
        return NULL;
    memset(p, 0, nbytes);
    return p;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    unsigned n = w->npages;
    uint8_t *plain = aligned_buf((size_t)n * M_SEAL_PAGE);
    uint8_t *rec = aligned_buf((size_t)n * M_STORE_RECORD);
    uint8_t *out = aligned_buf(M_SEAL_PAGE);
    uint8_t(*ivs)[12] = calloc(n, 12);
    uint8_t(*tags)[16] = calloc(n, 16);
    struct raw_ctx enc = {0}, dec = {0};
    if (!plain || !rec || !out || !ivs || !tags) {
        w->err = ENOMEM;
        pthread_barrier_wait(w->start);
        goto out;
    }
    for (size_t i = 0; i < (size_t)n * M_SEAL_PAGE; i += 8) {
        uint64_t v = i * 0x9e3779b97f4a7c15ULL;
        memcpy(plain + i, &v, 8);
    }
    /* Set-up outside the timed loop: records to open, contexts keyed. */
    int err = 0;
    if ((err = raw_init(&enc, true)) != 0 || (err = raw_init(&dec, false)) != 0)
        goto ready;
    for (unsigned i = 0; i < n; i++) {
        struct m_seal_id id = {.region_id = 1, .page_index = i, .version = 1};
        if ((err = m_seal_page(plain + (size_t)i * M_SEAL_PAGE, &id,
                               rec + (size_t)i * M_STORE_RECORD)) != 0)
            goto ready;
        if ((err = raw_encrypt(&enc, plain + (size_t)i * M_SEAL_PAGE,
                               rec + (size_t)i * M_STORE_RECORD)) != 0)
            goto ready;
        memcpy(ivs[i], enc.iv, 12);
        memcpy(tags[i], enc.tag, 16);
        if (w->op == OP_OPEN) /* reseal: the raw pass above overwrote the ciphertext */
            if ((err = m_seal_page(plain + (size_t)i * M_SEAL_PAGE, &id,
                                   rec + (size_t)i * M_STORE_RECORD)) != 0)
                goto ready;
    }
ready:
    w->err = err;
    pthread_barrier_wait(w->start);
    if (err)
        goto out;

    uint64_t deadline_ns = (uint64_t)(w->seconds * 1e9);
    uint64_t t0 = bench_now_ns(), t = t0, done = 0;
    while (t - t0 < deadline_ns) {
        /* A batch between clock reads keeps the clock out of the figure. */
        for (unsigned b = 0; b < 64; b++, done++) {
            unsigned i = (unsigned)(done % n);
            uint8_t *pg = plain + (size_t)i * M_SEAL_PAGE;
            uint8_t *rc = rec + (size_t)i * M_STORE_RECORD;
            struct m_seal_id id = {.region_id = 1, .page_index = i, .version = 1};
            switch (w->op) {
            case OP_SEAL:
                err = m_seal_page(pg, &id, rc);
                break;
            case OP_OPEN:
                err = m_seal_open(rc, &id, out, NULL);
                break;
            case OP_SEAL_OPEN:
                err = m_seal_page(pg, &id, rc);
                if (!err)
                    err = m_seal_open(rc, &id, out, NULL);
                break;
            case OP_RAW_ENC:
                err = raw_encrypt(&enc, pg, rc);
                break;
            case OP_RAW_DEC:
            default:
                err = raw_decrypt(&dec, rc, out, ivs[i], tags[i]);
                break;
            }
            if (err) {
                w->err = err;
                goto out;
            }
        }
        t = bench_now_ns();
    }
    w->pages_done = done;
    w->ns = t - t0;
out:
    EVP_CIPHER_CTX_free(enc.ctx);
    EVP_CIPHER_CTX_free(dec.ctx);
    free(plain);
    free(rec);
    free(out);
    free(ivs);
    free(tags);
    return NULL;
}

/* One timed run on `nthreads` threads at once: aggregate pages per second. */
static int run_once(enum op op, unsigned nthreads, unsigned npages, double seconds, double *pps)
{
    struct worker *w = calloc(nthreads, sizeof *w);
    pthread_barrier_t start;
    if (!w)
        return ENOMEM;
    pthread_barrier_init(&start, NULL, nthreads);
    for (unsigned i = 0; i < nthreads; i++) {
        w[i] = (struct worker){.op = op, .npages = npages, .seconds = seconds, .start = &start};
        if (pthread_create(&w[i].tid, NULL, worker_main, &w[i]) != 0) {
            fprintf(stderr, "seal: cannot create thread\n");
            exit(1);
        }
    }
    int err = 0;
    double sum = 0;
    for (unsigned i = 0; i < nthreads; i++) {
        pthread_join(w[i].tid, NULL);
        if (w[i].err)
            err = w[i].err;
        else
            sum += (double)w[i].pages_done / ((double)w[i].ns / 1e9);
    }
    pthread_barrier_destroy(&start);
    free(w);
    *pps = sum;
    return err;
}

/* openssl speed's figure in bytes per second, or 0 if unavailable. */
static double openssl_speed_once(double seconds)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "openssl speed -evp aes-256-gcm -bytes 4096 -seconds %d 2>/dev/null",
             seconds < 1 ? 1 : (int)seconds);
    FILE *p = popen(cmd, "r");
    if (!p)
        return 0;
    char line[512];
    double kbps = 0;
    while (fgets(line, sizeof line, p)) {
        /* "AES-256-GCM    1823741.93k" (OpenSSL 3; lower case in 1.1). */
        if (strncasecmp(line, "aes-256-gcm", 11) != 0)
            continue;
        char *s = line + 11;
        while (*s == ' ' || *s == '\t')
            s++;
        char *end;
        double v = strtod(s, &end);
        if (end != s && *end == 'k')
            kbps = v;
    }
    int status = pclose(p);
    if (status != 0 || kbps <= 0)
        return 0;
    return kbps * 1000.0;
}

/* The median of `runs` invocations (it is as noisy as our own loops). */
static double openssl_speed(double seconds, unsigned runs, double *lo, double *hi)
{
    double v[101];
    for (unsigned r = 0; r < runs; r++) {
        v[r] = openssl_speed_once(seconds);
        if (v[r] <= 0)
            return 0;
    }
    double med = bench_median(v, runs);
    *lo = v[0];
    *hi = v[runs - 1];
    return med;
}

int main(int argc, char **argv)
{
    unsigned runs = 5, npages = 256, threads = 0;
    double seconds = 0.5, openssl_seconds = 2;
    bool use_openssl = true;
    static const struct option opts[] = {
        {"runs", required_argument, 0, 'r'},  {"seconds", required_argument, 0, 's'},
        {"pages", required_argument, 0, 'p'}, {"threads", required_argument, 0, 't'},
        {"no-openssl", no_argument, 0, 'n'},  {"openssl-seconds", required_argument, 0, 'o'},
        {"help", no_argument, 0, 'h'},        {0, 0, 0, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'r':
            runs = (unsigned)strtoul(optarg, NULL, 0);
            break;
        case 's':
            seconds = strtod(optarg, NULL);
            break;
        case 'p':
            npages = (unsigned)strtoul(optarg, NULL, 0);
            break;
        case 't':
            threads = (unsigned)strtoul(optarg, NULL, 0);
            break;
        case 'n':
            use_openssl = false;
            break;
        case 'o':
            openssl_seconds = strtod(optarg, NULL);
            break;
        case 'h':
        default:
            fprintf(c == 'h' ? stdout : stderr,
                    "usage: seal [--runs N (5)] [--seconds S per run (0.5)] [--pages N "
                    "distinct pages (256)]\n            [--threads N for the all-CPU rows "
                    "(nproc)] [--no-openssl] [--openssl-seconds S (2)]\n");
            return c == 'h' ? 0 : 2;
        }
    }
    if (runs < 1 || runs > 101 || npages < 1 || seconds <= 0) {
        fprintf(stderr, "seal: bad arguments\n");
        return 2;
    }
    if (threads == 0)
        threads = (unsigned)sysconf(_SC_NPROCESSORS_ONLN);
    if (RAND_bytes(raw_key, sizeof raw_key) != 1) {
        fprintf(stderr, "seal: RAND_bytes failed\n");
        return 1;
    }
    int err = m_seal_init();
    if (err) {
        fprintf(stderr, "seal: m_seal_init: %s\n", strerror(err));
        return 1;
    }

    bench_print_machine(stdout);
    printf("# seal: %u distinct pages of 4096 bytes, median of %u runs x %.2f s; MB = 10^6 "
           "bytes of plaintext\n\n",
           npages, runs, seconds);
    printf("| operation | threads | MB/s (median) | us per 4 KiB page | MB/s range |\n"
           "|---|---:|---:|---:|---:|\n");

    double pps1[OP_N] = {0}; /* one-thread medians, for the ratios */
    unsigned nthreads_list[2] = {1, threads};
    for (unsigned ti = 0; ti < (threads > 1 ? 2u : 1u); ti++) {
        unsigned nt = nthreads_list[ti];
        /* Runs are interleaved across operations, so a slow spell of this
         * (virtual) machine hits every operation alike instead of one. */
        double v[OP_N][101];
        for (unsigned r = 0; r < runs; r++) {
            for (int op = 0; op < OP_N; op++) {
                err = run_once((enum op)op, nt, npages, seconds, &v[op][r]);
                if (err) {
                    fprintf(stderr, "seal: %s failed: %s\n", op_names[op], strerror(err));
                    return 1;
                }
            }
        }
        for (int op = 0; op < OP_N; op++) {
            double pps = bench_median(v[op], runs);
            if (nt == 1)
                pps1[op] = pps;
            /* seal+open moves each page twice: count both directions. */
            double bytes = pps * M_SEAL_PAGE * (op == OP_SEAL_OPEN ? 2 : 1);
            printf("| %s | %u | %.0f | %.3f | %.0f-%.0f |\n", op_names[op], nt, bytes / 1e6,
                   1e6 / pps * (nt == 1 ? 1 : (double)nt),
                   v[op][0] * M_SEAL_PAGE * (op == OP_SEAL_OPEN ? 2 : 1) / 1e6,
                   v[op][runs - 1] * M_SEAL_PAGE * (op == OP_SEAL_OPEN ? 2 : 1) / 1e6);
            fflush(stdout);
        }
    }
    if (threads > 1)
        printf("\n(us per page on %u threads is per thread: wall time x threads / pages)\n",
               threads);

    double lo = 0, hi = 0;
    unsigned oruns = runs < 3 ? runs : 3;
    double ossl = use_openssl ? openssl_speed(openssl_seconds, oruns, &lo, &hi) : 0;
    printf("\n");
    if (ossl > 0) {
        double ossl_us = 4096.0 / ossl * 1e6;
        printf("| openssl speed -evp aes-256-gcm -bytes 4096 -seconds %.0f (median of %u) | 1 | "
               "%.0f | %.3f | %.0f-%.0f |\n\n",
               openssl_seconds, oruns, ossl / 1e6, ossl_us, lo / 1e6, hi / 1e6);
        printf("ratio moat seal / openssl speed (throughput): %.2f\n",
               pps1[OP_SEAL] * 4096.0 / ossl);
        printf("ratio moat open / openssl speed (throughput): %.2f\n",
               pps1[OP_OPEN] * 4096.0 / ossl);
        printf("ratio moat seal+open per page / 2 x openssl per page (time): %.2f\n",
               (1e6 / pps1[OP_SEAL_OPEN]) / (2 * ossl_us));
    } else if (use_openssl) {
        printf("openssl speed: not available (no openssl command? apt-get install openssl); "
               "ratios against it skipped\n");
    }
    printf("ratio moat seal / raw EVP encrypt (throughput): %.2f\n",
           pps1[OP_SEAL] / pps1[OP_RAW_ENC]);
    printf("ratio moat open / raw EVP decrypt (throughput): %.2f\n",
           pps1[OP_OPEN] / pps1[OP_RAW_DEC]);
    printf("RESULT seal_us=%.3f open_us=%.3f sealopen_us=%.3f raw_enc_us=%.3f raw_dec_us=%.3f "
           "openssl_us=%.3f seal_mbps=%.0f open_mbps=%.0f openssl_mbps=%.0f\n",
           1e6 / pps1[OP_SEAL], 1e6 / pps1[OP_OPEN], 1e6 / pps1[OP_SEAL_OPEN],
           1e6 / pps1[OP_RAW_ENC], 1e6 / pps1[OP_RAW_DEC], ossl > 0 ? 4096.0 / ossl * 1e6 : -1.0,
           pps1[OP_SEAL] * 4096 / 1e6, pps1[OP_OPEN] * 4096 / 1e6, ossl / 1e6);
    m_seal_shutdown();
    return 0;
}
