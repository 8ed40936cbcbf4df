/*
 * store_records.h - records for the store tests (test_store_*.c): aligned
 * buffers of M_STORE_RECORD bytes and deterministic content for (slot,
 * generation), so a reader can tell a record from its neighbour's or from
 * an older version of itself.  Include after cmocka.h and store/store.h.
 */
#ifndef MOAT_STORE_RECORDS_H
#define MOAT_STORE_RECORDS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static inline void *rec_new(void)
{
    void *p = NULL;
    assert_int_equal(posix_memalign(&p, M_STORE_ALIGN, M_STORE_RECORD), 0);
    return p;
}

static inline void rec_fill(void *buf, uint64_t slot, uint64_t gen)
{
    uint64_t x = (slot + 1) * 0x9e3779b97f4a7c15ull ^ (gen + 1) * 0xbf58476d1ce4e5b9ull;
    uint64_t *w = buf;
    for (size_t i = 0; i < M_STORE_RECORD / 8; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        w[i] = x;
    }
}

static inline bool rec_check(const void *buf, uint64_t slot, uint64_t gen)
{
    uint64_t want[M_STORE_RECORD / 8];
    rec_fill(want, slot, gen);
    return memcmp(buf, want, M_STORE_RECORD) == 0;
}

#endif
