/*
 * seal.h - AES-256-GCM sealing of pages (the analogue of SGX's EWB/ELDU).
 *
 * A sealed record is M_STORE_RECORD bytes: the 4096-byte ciphertext followed
 * by a 32-byte trailer holding the nonce, the tag and the low 32 bits of the
 * version it was sealed with (the analogue of SGX's PCMD).  The trailer is
 * not trusted: the additional authenticated data is rebuilt from what moat
 * keeps in memory (region id, page index and the page's version counter, the
 * analogue of a VA slot), so a record moved to another page, or an older
 * record of the same page put back (a replay), fails authentication.
 *
 * The key is random per process, lives in one mlock'd page excluded from core
 * dumps (MADV_DONTDUMP) and is wiped by m_seal_shutdown.  Nonces are a random
 * 32-bit prefix and a 64-bit counter: fresh for every seal, never repeated
 * under one key.
 */
#ifndef M_SEAL_SEAL_H
#define M_SEAL_SEAL_H

#include <stddef.h>
#include <stdint.h>

#define M_SEAL_PAGE 4096u

/* What a sealed page is bound to. */
struct m_seal_id {
    uint64_t region_id;
    uint64_t page_index;
    uint64_t version;
};

/* m_seal_init - create the key.  ENOMEM/EPERM if it cannot be locked in
 * memory is only a warning (logged) unless strict is set; EIO if the random
 * generator fails. */
int m_seal_init(void);
/* m_seal_shutdown - wipe and unmap the key. */
void m_seal_shutdown(void);
/* m_seal_wipe - zero the key in place (for process exit without
 * moat_shutdown: other threads may still be running, so nothing is
 * unmapped). */
void m_seal_wipe(void);

/* m_seal_page - encrypt 4096 bytes of `plain` into `record` (M_STORE_RECORD
 * bytes).  0, or EIO if the cipher fails; ENODEV if not initialised. */
int m_seal_page(const void *plain, const struct m_seal_id *id, void *record);

/* m_seal_open - authenticate and decrypt `record` into `plain` (4096 bytes),
 * expecting identity `id`.  0 on success.  ESTALE: the record is an authentic
 * copy of this page with an older version (a replay); *found_version says
 * which (0 when it is not a replay).  EBADMSG: the record fails authentication (tampered, or
 * another page's).  `plain` is zeroed on any failure. */
int m_seal_open(const void *record, const struct m_seal_id *id, void *plain,
                uint64_t *found_version);

#endif
