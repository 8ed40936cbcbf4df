#!/usr/bin/env bash
# test_programs.sh - real, unmodified programs under `moat run` with a budget
# far below their working set: sqlite3 with an in-memory database, xz -9
# on a 192 MiB file with a budget below its dictionary, sort with a large -S buffer, and a
# multi-threaded C program that hands heap blocks between threads.
#
# Usage: test_programs.sh BUILD_DIR SOURCE_DIR
#
# Each program's output is compared with the same command run without moat,
# and its --stats-json must show that pages were really sealed and evicted
# and that the resident peak stayed within the budget.  (The Python case is
# in test_run.sh.)
set -u
BUILD=${1:?build dir}
MOAT=$BUILD/moat

case "${MOAT_TEST_CONFIG:-}" in
asan | tsan)
    echo "SKIP: test_programs.sh under MOAT_TEST_CONFIG=$MOAT_TEST_CONFIG: a sanitized" \
        "libmoat_preload.so cannot be preloaded into uninstrumented programs"
    exit 77
    ;;
esac
for t in sqlite3 xz sort cc python3 md5sum; do
    if ! command -v $t >/dev/null; then
        echo "SKIP: test_programs.sh needs $t (scripts/deps.sh installs it)"
        exit 77
    fi
done

T=$(mktemp -d /tmp/moat-test-programs.XXXXXX)
trap 'rm -rf "$T"' EXIT
fails=0
ok() { echo "ok   - $*"; }
bad() {
    echo "FAIL - $*"
    fails=$((fails + 1))
}
json_num() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }

# check NAME BUDGET -- CMD...: run CMD plainly and under moat with BUDGET,
# compare stdout, and check the statistics.
check() {
    local name=$1 budget=$2
    shift 3
    "$@" >"$T/$name.plain" 2>"$T/$name.plain.err"
    local prc=$?
    "$MOAT" run --budget "$budget" --quiet --stats-json "$T/$name.json" -- "$@" \
        >"$T/$name.moat" 2>"$T/$name.moat.err"
    local rc=$?
    if [ $prc -ne 0 ]; then
        bad "$name: fails without moat (exit $prc): $(head -c 300 "$T/$name.plain.err")"
        return
    fi
    if [ $rc -ne 0 ]; then
        bad "$name: exit $rc under moat: $(head -c 600 "$T/$name.moat.err")"
        return
    fi
    if ! cmp -s "$T/$name.plain" "$T/$name.moat"; then
        bad "$name: output differs under moat"
        return
    fi
    local ev peak bud committed
    ev=$(json_num "$T/$name.json" evictions_written)
    peak=$(json_num "$T/$name.json" peak_resident_pages)
    bud=$(json_num "$T/$name.json" budget_pages)
    committed=$(json_num "$T/$name.json" peak_committed_pages)
    if [ "$ev" -le 0 ] || [ "$peak" -gt "$bud" ] || [ "$committed" -le "$bud" ]; then
        bad "$name: evictions $ev, peak resident $peak of $bud pages, peak committed $committed"
        return
    fi
    ok "$name under --budget $budget: same output; $ev pages sealed and evicted," \
        "peak resident $peak <= $bud pages, peak committed $committed pages"
}

# --- sqlite3: an in-memory database of ~30 MiB, indexed and queried -----------
cat >"$T/db.sql" <<'SQL'
PRAGMA cache_size = -200000;
CREATE TABLE t(a INTEGER PRIMARY KEY, b TEXT, c INTEGER);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 40000)
INSERT INTO t SELECT i, printf('%08x-%s', (i * 2654435761) % 4294967296, hex(zeroblob(40 + i % 61))), i % 977 FROM n;
CREATE INDEX tb ON t(b);
CREATE INDEX tc ON t(c, a);
SELECT count(*), sum(length(b)), sum(c) FROM t;
SELECT c, count(*), min(b), max(a) FROM t GROUP BY c ORDER BY count(*) DESC, c LIMIT 5;
SELECT a, substr(b, 1, 12) FROM t WHERE b > '7fff' ORDER BY b LIMIT 5;
UPDATE t SET b = upper(b) WHERE a % 7 = 0;
SELECT count(*) FROM t WHERE b GLOB '*[A-F]*';
SQL
check sqlite3 8M -- sqlite3 :memory: ".read $T/db.sql"

# --- xz -9 on a 192 MiB file: 674 MiB of match finder, a 64 MiB dictionary ------
# The file repeats one random 4 KiB block, so xz runs in seconds on its own
# (a text file this size takes minutes at -9) while its match finder still
# sweeps its whole 512 MiB tree and 64 MiB window: some 630 MiB committed
# under a 48M budget, below the dictionary.
python3 - "$T/xz.in" <<'PY'
import random, sys
random.seed(3)
block = bytes(random.getrandbits(8) for _ in range(4096))
with open(sys.argv[1], 'wb') as f:
    for _ in range(192):
        f.write(block * 256)
PY
check xz 48M -- xz -9 -T1 -c "$T/xz.in"
rm -f "$T/xz.in" "$T/xz.plain" "$T/xz.moat"

# --- sort with a large -S buffer ------------------------------------------------
awk 'BEGIN { srand(7); for (i = 0; i < 400000; i++) printf "%08x%08x %d\n", int(rand() * 4294967296), int(rand() * 4294967296), i }' >"$T/sort.in"
check sort 16M -- sort -S 100M "$T/sort.in"

# --- a multi-threaded program of our own ----------------------------------------
cat >"$T/mt.c" <<'C'
/* 8 threads fill heap blocks of mixed sizes with a pattern derived from
 * their identity, hand half of them to the next thread through a mailbox
 * (freed there: cross-thread frees), keep the rest, and in the end every
 * block is checked and freed; prints a checksum that does not depend on
 * scheduling. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#define NT 8
#define PER 24000
struct blk { uint64_t id; size_t n; };
static struct blk *box[NT][PER];
static pthread_barrier_t bar;
static uint64_t sums[NT];
static uint64_t mix(uint64_t x) { x ^= x >> 33; x *= 0xff51afd7ed558ccdULL; x ^= x >> 33; return x; }
static void fill(struct blk *b) { uint8_t *p = (uint8_t *)(b + 1); for (size_t i = 0; i < b->n; i++) p[i] = (uint8_t)mix(b->id + i / 64); }
static uint64_t check(struct blk *b) {
    uint8_t *p = (uint8_t *)(b + 1);
    for (size_t i = 0; i < b->n; i++) if (p[i] != (uint8_t)mix(b->id + i / 64)) { fprintf(stderr, "corrupt block %llu\n", (unsigned long long)b->id); exit(3); }
    return mix(b->id) ^ b->n;
}
static void *worker(void *arg) {
    uintptr_t t = (uintptr_t)arg;
    struct blk **keep = calloc(PER, sizeof *keep);
    for (size_t i = 0; i < PER; i++) {
        uint64_t id = t * PER + i;
        size_t n = 16 + mix(id) % (i % 97 == 0 ? 60000 : 900);
        struct blk *b = malloc(sizeof *b + n);
        b->id = id; b->n = n; fill(b);
        if (i & 1) box[t][i] = b; else keep[i] = b;
    }
    pthread_barrier_wait(&bar);
    uint64_t s = 0;
    size_t from = (t + 1) % NT;
    for (size_t i = 1; i < PER; i += 2) { s += check(box[from][i]); free(box[from][i]); }
    for (size_t i = 0; i < PER; i += 2) { s += check(keep[i]); keep[i] = realloc(keep[i], sizeof(struct blk) + keep[i]->n); }
    for (size_t i = 0; i < PER; i += 2) { s += check(keep[i]); free(keep[i]); }
    free(keep);
    sums[t] = s;
    return NULL;
}
int main(void) {
    pthread_t th[NT];
    pthread_barrier_init(&bar, NULL, NT);
    for (uintptr_t t = 0; t < NT; t++) pthread_create(&th[t], NULL, worker, (void *)t);
    uint64_t total = 0;
    for (int t = 0; t < NT; t++) { pthread_join(th[t], NULL); total += sums[t]; }
    printf("%016llx\n", (unsigned long long)total);
    return 0;
}
C
if cc -O2 -pthread -o "$T/mt" "$T/mt.c" 2>"$T/cc.err"; then
    check threads 16M -- "$T/mt"
    # Batched page-in (8 threads fault together): the counters are in the
    # JSON and consistent (a batch serves two faults or more); with
    # MOAT_FAULT_BATCH=0 there is none and the output is the same.
    nb=$(json_num "$T/threads.json" pagein_batches 2>/dev/null || echo x)
    nf=$(json_num "$T/threads.json" pagein_batched_faults 2>/dev/null || echo x)
    if [ "$nb" = x ] || [ "$nf" = x ] || [ "$nf" -lt $((2 * nb)) ]; then
        bad "threads: pagein_batches=$nb pagein_batched_faults=$nf"
    else
        ok "threads: $nf faults page-in in $nb batches"
    fi
    MOAT_FAULT_BATCH=0 "$MOAT" run --budget 16M --quiet --stats-json "$T/nb.json" -- "$T/mt" \
        >"$T/nb.out" 2>"$T/nb.err"
    rc=$?
    nb=$(json_num "$T/nb.json" pagein_batches 2>/dev/null || echo x)
    if [ $rc -eq 0 ] && [ "$nb" = 0 ] && cmp -s "$T/threads.plain" "$T/nb.out"; then
        ok "threads with MOAT_FAULT_BATCH=0: same output, no batches"
    else
        bad "threads with MOAT_FAULT_BATCH=0: rc=$rc pagein_batches=$nb: $(head -c 300 "$T/nb.err")"
    fi
else
    bad "cannot compile the threaded program: $(cat "$T/cc.err")"
fi

if [ $fails -ne 0 ]; then
    echo "test_programs.sh: $fails checks failed"
    exit 1
fi
echo "test_programs.sh: all checks passed"
