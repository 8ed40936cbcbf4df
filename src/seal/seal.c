/*
 * seal.c - AES-256-GCM page sealing with OpenSSL's EVP interface.
 *
 * One EVP_CIPHER_CTX per thread (contexts are not thread-safe) is created
 * lazily with the key schedule already loaded; each seal only resets the IV.
 * With AES-NI a 4 KiB seal costs about 1.5 us, a small part of a fault.
 */
#include "seal/seal.h"

#include "common/log.h"
#include "store/store.h"

#include <errno.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>

/* The trailer after the ciphertext; everything in it is untrusted. */
struct seal_trailer {
    uint8_t nonce[12];
    uint8_t tag[16];
    uint32_t version_lo; /* low bits of the version sealed: only to tell a replay from tampering */
};
_Static_assert(sizeof(struct seal_trailer) == M_STORE_RECORD - M_SEAL_PAGE, "trailer fills");

struct seal_key {
    uint8_t key[32];
    uint32_t nonce_prefix;
};

static struct seal_key *seal_key;           /* one mlock'd page */
static EVP_CIPHER *seal_cipher;             /* fetched at the first init, kept */
static _Atomic uint64_t seal_nonce_counter; /* next nonce suffix */
static _Atomic uint64_t seal_generation;    /* bumps per init, invalidates thread contexts */

struct seal_tls {
    EVP_CIPHER_CTX *enc, *dec;
    uint64_t generation;
};
static pthread_key_t seal_tls_key;
static pthread_once_t seal_tls_once = PTHREAD_ONCE_INIT;

static void seal_tls_free(void *p)
{
    struct seal_tls *t = p;
    EVP_CIPHER_CTX_free(t->enc);
    EVP_CIPHER_CTX_free(t->dec);
    OPENSSL_cleanse(t, sizeof *t);
    free(t);
}

static void seal_tls_init(void)
{
    pthread_key_create(&seal_tls_key, seal_tls_free);
}

/* seal_random - fill p from getrandom(2), blocking until it is seeded. */
static bool seal_random(void *p, size_t n)
{
    uint8_t *b = p;
    while (n > 0) {
        ssize_t got = getrandom(b, n, 0);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            return false;
        b += got;
        n -= (size_t)got;
    }
    return true;
}

int m_seal_init(void)
{
    pthread_once(&seal_tls_once, seal_tls_init);
    if (seal_key)
        return 0;
    void *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return ENOMEM;
    if (madvise(p, 4096, MADV_DONTDUMP) != 0)
        m_warn("seal", "cannot exclude the key from core dumps (madvise: %s)", strerror(errno));
    if (madvise(p, 4096, MADV_WIPEONFORK) != 0)
        m_debug("seal", "MADV_WIPEONFORK unavailable: %s", strerror(errno));
    if (mlock(p, 4096) != 0)
        m_warn("seal", "cannot lock the key in memory (mlock: %s); it may be swapped",
               strerror(errno));
    struct seal_key *k = p;
    /* The key from the kernel's generator; and the cipher fetched now, once,
     * in the thread that starts moat.  OpenSSL's shared state (its library
     * context, providers, method caches) must come from moat's own memory:
     * started later, from a program that uses libcrypto itself (Python's
     * hashlib), it lives in managed pages, and an evictor that seals a batch
     * holding that state writes to pages it has write-protected and waits
     * on itself.  With the cipher fetched here, a thread's cipher contexts
     * never look anything up in those caches again. */
    if (!seal_cipher)
        seal_cipher = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
    if (!seal_cipher) {
        OPENSSL_cleanse(p, 4096);
        munmap(p, 4096);
        m_error("seal", "OpenSSL has no AES-256-GCM (EVP_CIPHER_fetch failed)");
        return EIO;
    }
    if (!seal_random(k, sizeof *k)) {
        OPENSSL_cleanse(p, 4096);
        munmap(p, 4096);
        m_error("seal", "the random generator failed; cannot create a sealing key");
        return EIO;
    }
    atomic_store(&seal_nonce_counter, 1);
    atomic_fetch_add(&seal_generation, 1);
    seal_key = k;
    return 0;
}

void m_seal_shutdown(void)
{
    struct seal_key *k = seal_key;
    if (!k)
        return;
    seal_key = NULL;
    atomic_fetch_add(&seal_generation, 1);
    OPENSSL_cleanse(k, 4096);
    munlock(k, 4096);
    munmap(k, 4096);
}

void m_seal_wipe(void)
{
    struct seal_key *k = seal_key;
    if (k)
        OPENSSL_cleanse(k->key, sizeof k->key);
}

/* seal_ctx - this thread's cipher contexts, keyed with the current key. */
static struct seal_tls *seal_ctx(void)
{
    struct seal_tls *t = pthread_getspecific(seal_tls_key);
    uint64_t gen = atomic_load(&seal_generation);
    if (t && t->generation == gen)
        return t;
    if (!t) {
        t = calloc(1, sizeof *t);
        if (!t)
            return NULL;
        t->enc = EVP_CIPHER_CTX_new();
        t->dec = EVP_CIPHER_CTX_new();
        if (!t->enc || !t->dec) {
            seal_tls_free(t);
            return NULL;
        }
        pthread_setspecific(seal_tls_key, t);
    }
    if (EVP_EncryptInit_ex2(t->enc, seal_cipher, seal_key->key, NULL, NULL) != 1 ||
        EVP_DecryptInit_ex2(t->dec, seal_cipher, seal_key->key, NULL, NULL) != 1)
        return NULL;
    t->generation = gen;
    return t;
}

int m_seal_page(const void *plain, const struct m_seal_id *id, void *record)
{
    if (!seal_key)
        return ENODEV;
    struct seal_tls *t = seal_ctx();
    if (!t)
        return EIO;
    struct seal_trailer *tr = (struct seal_trailer *)((uint8_t *)record + M_SEAL_PAGE);
    uint64_t ctr = atomic_fetch_add(&seal_nonce_counter, 1);
    memcpy(tr->nonce, &seal_key->nonce_prefix, 4);
    memcpy(tr->nonce + 4, &ctr, 8);
    tr->version_lo = (uint32_t)id->version;
    int outl = 0, finl = 0;
    if (EVP_EncryptInit_ex(t->enc, NULL, NULL, NULL, tr->nonce) != 1 ||
        EVP_EncryptUpdate(t->enc, NULL, &outl, (const unsigned char *)id, sizeof *id) != 1 ||
        EVP_EncryptUpdate(t->enc, record, &outl, plain, (int)M_SEAL_PAGE) != 1 ||
        EVP_EncryptFinal_ex(t->enc, (unsigned char *)record + outl, &finl) != 1 ||
        EVP_CIPHER_CTX_ctrl(t->enc, EVP_CTRL_GCM_GET_TAG, 16, tr->tag) != 1)
        return EIO;
    return 0;
}

/* seal_try_open - one authenticated decryption attempt under identity id. */
static int seal_try_open(struct seal_tls *t, const void *record, const struct seal_trailer *tr,
                         const struct m_seal_id *id, void *plain)
{
    int outl = 0, finl = 0;
    uint8_t tag[16];
    memcpy(tag, tr->tag, sizeof tag);
    if (EVP_DecryptInit_ex(t->dec, NULL, NULL, NULL, tr->nonce) != 1 ||
        EVP_DecryptUpdate(t->dec, NULL, &outl, (const unsigned char *)id, sizeof *id) != 1 ||
        EVP_DecryptUpdate(t->dec, plain, &outl, record, (int)M_SEAL_PAGE) != 1 ||
        EVP_CIPHER_CTX_ctrl(t->dec, EVP_CTRL_GCM_SET_TAG, 16, tag) != 1)
        return EIO;
    if (EVP_DecryptFinal_ex(t->dec, (unsigned char *)plain + outl, &finl) != 1)
        return EBADMSG;
    return 0;
}

int m_seal_open(const void *record, const struct m_seal_id *id, void *plain,
                uint64_t *found_version)
{
    if (!seal_key)
        return ENODEV;
    struct seal_tls *t = seal_ctx();
    if (!t)
        return EIO;
    const struct seal_trailer *tr =
        (const struct seal_trailer *)((const uint8_t *)record + M_SEAL_PAGE);
    if (found_version)
        *found_version = 0;
    int err = seal_try_open(t, record, tr, id, plain);
    if (err == 0)
        return 0;
    /* Tell a replay from tampering: an authentic older copy of this very
     * page verifies under its own (older) version, the latest below the
     * current one whose low bits the trailer names. */
    uint64_t old_version = (id->version & ~(uint64_t)UINT32_MAX) | tr->version_lo;
    bool older = old_version < id->version;
    if (!older && id->version > UINT32_MAX) {
        old_version -= (uint64_t)UINT32_MAX + 1;
        older = true;
    }
    if (err == EBADMSG && older) {
        struct m_seal_id old = *id;
        old.version = old_version;
        if (seal_try_open(t, record, tr, &old, plain) == 0) {
            err = ESTALE;
            if (found_version)
                *found_version = old_version;
        }
    }
    memset(plain, 0, M_SEAL_PAGE);
    return err;
}
