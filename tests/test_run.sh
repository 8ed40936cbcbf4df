#!/usr/bin/env bash
# test_run.sh - `moat run`, `moat stat` and `moat plot` on real programs.
#
# Usage: test_run.sh BUILD_DIR SOURCE_DIR
#
# Checks, each against the same program run without moat where it has an
# output: a Python script with a few hundred MiB of objects under a 32 MiB
# budget (same output, evictions > 0 in --stats-json); a C probe of the interposed mmap, munmap,
# mremap, madvise and mprotect semantics, threads, fork+exec and fork
# without exec; exit codes (usage 2, the program's own, 128+signal, 4 for a
# program that cannot run); Python's subprocess; --trace and moat plot;
# moat stat; and that no /dev/shm/moat-* block is left behind.
set -u
BUILD=${1:?build dir}
SRC=${2:?source dir}
MOAT=$BUILD/moat

case "${MOAT_TEST_CONFIG:-}" in
asan | tsan)
    echo "SKIP: test_run.sh under MOAT_TEST_CONFIG=$MOAT_TEST_CONFIG: a sanitized" \
        "libmoat_preload.so cannot be preloaded into uninstrumented programs (python3, sort)"
    exit 77
    ;;
esac
for t in python3 sort gnuplot cc; do
    if ! command -v $t >/dev/null; then
        echo "SKIP: test_run.sh needs $t"
        exit 77
    fi
done
if [ ! -x "$MOAT" ] || [ ! -f "$BUILD/libmoat_preload.so" ]; then
    echo "FAIL: $MOAT or $BUILD/libmoat_preload.so is missing"
    exit 1
fi

T=$(mktemp -d /tmp/moat-test-run.XXXXXX)
trap 'rm -rf "$T"' EXIT
fails=0
ok() { echo "ok   - $*"; }
bad() {
    echo "FAIL - $*"
    fails=$((fails + 1))
}
# json_num FILE FIELD: a number from a --stats-json file
json_num() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }

ls /dev/shm/ | grep '^moat-.*\.stats$' | sort >"$T/shm.before"

# --- 1. Python: a large list and dict under a small budget -------------------
cat >"$T/big.py" <<'PY'
import hashlib
n = 2_000_000
l = [i * 3 + 1 for i in range(n)]
d = {i: str(i ^ 0x5a5a) for i in range(0, n, 3)}
h = hashlib.sha256()
h.update(str(sum(l)).encode())
h.update(str(sum(len(v) for v in d.values())).encode())
for i in range(0, n, 9973):
    h.update(str(l[i]).encode() + d.get(i - i % 3, "").encode())
print(h.hexdigest())
PY
python3 "$T/big.py" >"$T/py.plain"
MOAT_THRASH_WINDOW=1 "$MOAT" run --budget 32M --stats-json "$T/py.json" --trace "$T/py.csv" \
    --trace-interval 50 -- python3 "$T/big.py" >"$T/py.moat" 2>"$T/py.err"
rc=$?
if [ $rc -eq 0 ] && cmp -s "$T/py.plain" "$T/py.moat"; then
    ok "python under --budget 32M prints the same checksum ($(cat "$T/py.moat" | cut -c1-16)...)"
else
    bad "python under moat: rc=$rc, output differs or failed"
    cat "$T/py.err"
fi
ev=$(json_num "$T/py.json" evictions_written 2>/dev/null || echo 0)
peak=$(json_num "$T/py.json" peak_resident_pages 2>/dev/null || echo 999999)
budget=$(json_num "$T/py.json" budget_pages 2>/dev/null || echo 0)
pc=$(json_num "$T/py.json" peak_committed_pages 2>/dev/null || echo 0)
if [ "$ev" -gt 0 ] && [ "$budget" -eq 8192 ] && [ "$peak" -le "$budget" ] && [ "$pc" -gt $((3 * budget)) ]; then
    ok "python: $ev pages sealed and evicted, peak resident $peak <= budget $budget pages, peak committed $pc"
else
    bad "python statistics: evictions_written=$ev peak_resident=$peak budget=$budget peak_committed=$pc"
fi
# the file store's trailers: 32 bytes a slot of the file, at least one per
# page evicted now, reported in the JSON and the summary
meta=$(json_num "$T/py.json" store_meta_bytes 2>/dev/null || echo 0)
evnow=$(json_num "$T/py.json" evicted_pages 2>/dev/null || echo 0)
if [ "$meta" -gt 0 ] && [ $((meta % 32)) -eq 0 ] && [ "$meta" -ge $((evnow * 32)) ] &&
    grep -q "of record trailers kept in memory" "$T/py.err"; then
    ok "python: $meta bytes of store trailers in memory ($evnow pages evicted at exit), in the summary"
else
    bad "store_meta_bytes=$meta with $evnow pages evicted, or no trailer line in the summary"
fi
# the page-table changes (TLB shootdowns) are counted: a write-protection
# before each written page is sealed (fewer calls than pages: runs), a zap
# per reclaim batch
wpc=$(json_num "$T/py.json" wp_calls 2>/dev/null || echo 0)
zpc=$(json_num "$T/py.json" zap_calls 2>/dev/null || echo 0)
if [ "$wpc" -gt 0 ] && [ "$zpc" -gt 0 ] && [ "$zpc" -lt "$ev" ] &&
    grep -q "^moat: page tables: $wpc write-protect calls, $zpc zap calls" "$T/py.err"; then
    ok "python: $wpc write-protect calls and $zpc zap calls for $ev pages written, in the summary"
else
    bad "wp_calls=$wpc zap_calls=$zpc for $ev pages written, or no page-tables line in the summary"
fi
if grep -q "far too small" "$T/py.err"; then
    bad "python under 32M pages usefully, yet got the thrash warning: $(grep warning "$T/py.err")"
else
    ok "python under 32M: no thrash warning (1 s window)"
fi
if grep -q "peak resident" "$T/py.err" && grep -q "pages evicted" "$T/py.err"; then
    ok "summary printed on stderr"
else
    bad "no summary on stderr"
    cat "$T/py.err"
fi

# --- 2. --trace and moat plot -------------------------------------------------
if head -1 "$T/py.csv" | grep -q '^time_s,budget_pages,resident_pages' &&
    [ "$(wc -l <"$T/py.csv")" -ge 3 ]; then
    ok "--trace wrote a header and $(($(wc -l <"$T/py.csv") - 1)) rows"
else
    bad "--trace CSV is missing its header or rows"
fi
if "$MOAT" plot "$T/py.csv" -o "$T/py.svg" && [ -s "$T/py.svg" ] && grep -q '<svg' "$T/py.svg"; then
    ok "moat plot wrote an SVG of $(wc -c <"$T/py.svg") bytes"
else
    bad "moat plot did not write an SVG"
fi
"$MOAT" plot "$T/big.py" -o "$T/x.svg" 2>"$T/plot.err"
rc=$?
if [ $rc -eq 3 ] && grep -q "not a moat run --trace file" "$T/plot.err"; then
    ok "moat plot refuses a file that is not a trace (exit 3)"
else
    bad "moat plot on a non-trace: rc=$rc $(cat "$T/plot.err")"
fi

# --- 4. the interposed calls, threads and fork, from C ---------------------------
cat >"$T/probe.c" <<'C'
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
#define MiB (1024UL * 1024)
#define CHECK(c) do { if (!(c)) { fprintf(stderr, "probe: %s:%d: %s\n", __FILE__, __LINE__, #c); exit(1); } } while (0)
static void fill(uint64_t *p, size_t n, uint64_t seed) { for (size_t i = 0; i < n / 8; i++) p[i] = i * 0x9E3779B97F4A7C15ULL ^ seed; }
static int same(const uint64_t *p, size_t n, uint64_t seed) { for (size_t i = 0; i < n / 8; i++) if (p[i] != (i * 0x9E3779B97F4A7C15ULL ^ seed)) return 0; return 1; }
static int zero(const char *p, size_t n) { for (size_t i = 0; i < n; i++) if (p[i]) return 0; return 1; }
static void *worker(void *arg) {
    uint64_t seed = (uint64_t)(uintptr_t)arg;
    uint64_t *p = mmap(NULL, 24 * MiB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(p != MAP_FAILED);
    for (int r = 0; r < 2; r++) { fill(p, 24 * MiB, seed + (uint64_t)r); CHECK(same(p, 24 * MiB, seed + (uint64_t)r)); }
    CHECK(munmap(p, 24 * MiB) == 0);
    return NULL;
}
int main(int argc, char **argv) {
    int under_moat = argc > 1 && !strcmp(argv[1], "under-moat");
    size_t n = 64 * MiB;
    char *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(p != MAP_FAILED);
    fill((uint64_t *)p, n, 1);
    CHECK(same((uint64_t *)p, n, 1));
    /* madvise(DONTNEED) zeroes exactly its range */
    CHECK(madvise(p + 8 * MiB, 4 * MiB, MADV_DONTNEED) == 0);
    CHECK(zero(p + 8 * MiB, 4 * MiB));
    CHECK(same((uint64_t *)p, 8 * MiB, 1));
    /* mprotect read-only, read, back to read-write */
    CHECK(mprotect(p, n, PROT_READ) == 0);
    CHECK(same((uint64_t *)p, 8 * MiB, 1));
    CHECK(zero(p + 8 * MiB, 4 * MiB));
    CHECK(mprotect(p, n, PROT_READ | PROT_WRITE) == 0);
    p[0] = 42;
    CHECK(p[0] == 42);
    fill((uint64_t *)p, n, 2);
    /* mremap: grow (keeps contents, new part reads zero), then shrink.  A
     * neighbour right after it, if one can be placed there, forces a move. */
    char *nb = mmap(p + n, MiB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (under_moat)
        CHECK(nb == p + n);
    if (nb == p + n)
        memset(nb, 3, MiB);
    char *q = mremap(p, n, 2 * n, MREMAP_MAYMOVE);
    CHECK(q != MAP_FAILED);
    if (nb == p + n) {
        CHECK(q != p);
        CHECK(nb[MiB - 1] == 3);
        CHECK(munmap(nb, MiB) == 0);
    }
    CHECK(same((uint64_t *)q, n, 2));
    CHECK(zero(q + n, n));
    char *r = mremap(q, 2 * n, n / 2, 0);
    CHECK(r == q);
    CHECK(same((uint64_t *)r, n / 2, 2));
    /* MAP_FIXED anonymous memory over part of it: zeros there, the rest stays */
    char *f2 = mmap(r + 4 * MiB, 2 * MiB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    CHECK(f2 == r + 4 * MiB);
    CHECK(zero(f2, 2 * MiB));
    CHECK(same((uint64_t *)r, 4 * MiB, 2));
    memset(f2, 0x5a, 2 * MiB);
    /* partial munmap in the middle, the two ends stay */
    CHECK(munmap(r + 8 * MiB, 8 * MiB) == 0);
    CHECK(same((uint64_t *)r, 4 * MiB, 2));
    for (size_t i = 16 * MiB / 8; i < 32 * MiB / 8; i++)
        CHECK(((uint64_t *)r)[i] == (i * 0x9E3779B97F4A7C15ULL ^ 2));
    CHECK(munmap(r, n / 2) == 0);
    /* non-managed kinds still work: PROT_NONE reservation + MAP_FIXED commit, a file */
    char *res = mmap(NULL, 16 * MiB, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    CHECK(res != MAP_FAILED);
    char *fx = mmap(res, 4 * MiB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    CHECK(fx == res);
    memset(fx, 7, 4 * MiB);
    CHECK(munmap(res, 16 * MiB) == 0);
    /* threads */
    pthread_t t[4];
    for (uintptr_t i = 0; i < 4; i++) CHECK(pthread_create(&t[i], NULL, worker, (void *)(i + 100)) == 0);
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
    /* fork + exec */
    char *m = mmap(NULL, 8 * MiB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    memset(m, 1, 8 * MiB);
    pid_t c = fork();
    if (c == 0) { execlp("true", "true", (char *)NULL); _exit(99); }
    int st;
    CHECK(waitpid(c, &st, 0) == c && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    if (!under_moat) { printf("probe ok\n"); return 0; }
    /* fork without exec: the child sees its parent's resident pages and
     * has a working heap; m (8 MiB under an 8 MiB budget) cannot be all
     * resident, and a page the parent evicted stops the child: never zeros */
    char *h = malloc(64);
    strcpy(h, "heap");
    CHECK(m[8 * MiB - 1] == 1); /* resident again if it was not */
    c = fork();
    if (c == 0) {
        char *x = malloc(1 << 20);
        memset(x, 3, 1 << 20);
        _exit(strcmp(h, "heap") == 0 && x[(1 << 20) - 1] == 3 && m[8 * MiB - 1] == 1 ? 10 : 11);
    }
    CHECK(waitpid(c, &st, 0) == c);
    if (strcmp(argv[2], "fork-load") == 0)
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 10);
    else /* the heap's own pages may have been evicted: correct or stopped */
        CHECK((WIFEXITED(st) && WEXITSTATUS(st) == 10) || (WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV));
    free(h);
    c = fork();
    if (c == 0) {
        for (size_t i = 0; i < 8 * MiB; i += 4096)
            if (m[i] != 1) _exit(11);
        _exit(10);
    }
    CHECK(waitpid(c, &st, 0) == c);
    if (strcmp(argv[2], "fork-load") == 0)
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 10); /* evicted pages were read back */
    else
        CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV); /* stopped, never zeros */
    printf("probe ok\n");
    return 0;
}
C
if cc -O1 -pthread -o "$T/probe" "$T/probe.c" 2>"$T/cc.err"; then
    "$T/probe" >/dev/null || bad "the probe fails even without moat"
    # fork without exec, twice: MOAT_FORK_LOAD=1G reads every evicted page
    # back before fork() so the child sees them all; MOAT_FORK_LOAD=0 leaves
    # them evicted and the child that touches one is stopped with a message
    MOAT_FORK_LOAD=1G "$MOAT" run --budget 8M --stats-json "$T/probe.json" -- "$T/probe" under-moat fork-load >"$T/probe.out" 2>"$T/probe.err"
    rc=$?
    ev=$(json_num "$T/probe.json" evictions_written 2>/dev/null || echo 0)
    fl=$(json_num "$T/probe.json" fork_loaded_pages 2>/dev/null || echo 0)
    if [ $rc -eq 0 ] && grep -q "probe ok" "$T/probe.out" && [ "$ev" -gt 0 ] && [ "$fl" -gt 0 ]; then
        ok "mmap/munmap/mremap/madvise/mprotect, 4 threads, fork+exec, fork with $fl evicted pages read back, under --budget 8M ($ev pages evicted)"
    else
        bad "C probe under moat: rc=$rc evictions=$ev fork_loaded=$fl"
        cat "$T/probe.err"
    fi
    MOAT_FORK_LOAD=0 "$MOAT" run --budget 8M -- "$T/probe" under-moat no-fork-load >"$T/probe.out" 2>"$T/probe.err"
    rc=$?
    if [ $rc -eq 0 ] && grep -q "probe ok" "$T/probe.out" &&
        grep -q "child made by fork() without exec, and it touched" "$T/probe.err"; then
        ok "fork without exec: the child has its parent's resident pages and heap; an evicted page stops it with a message"
    else
        bad "fork without exec and MOAT_FORK_LOAD=0: rc=$rc, no message or wrong status"
        cat "$T/probe.err"
    fi
else
    bad "cannot compile the probe: $(cat "$T/cc.err")"
fi

# --- 5. exit codes ------------------------------------------------------------------
"$MOAT" run --budget 12Q -- true 2>"$T/e.err"
rc=$?
if [ $rc -eq 2 ] && grep -q -- "--budget" "$T/e.err"; then ok "bad size: exit 2 naming --budget"; else bad "bad size: rc=$rc $(cat "$T/e.err")"; fi
"$MOAT" run --store-replicas many -- true 2>"$T/e.err"
rc=$?
if [ $rc -eq 2 ] && grep -q -- "--store-replicas" "$T/e.err"; then ok "bad --store-replicas: exit 2 naming it"; else bad "--store-replicas many: rc=$rc"; fi
"$MOAT" run --low 95 --high 90 -- true 2>"$T/e.err"
rc=$?
if [ $rc -eq 2 ] && grep -q -- "--low" "$T/e.err"; then ok "--low above --high: exit 2"; else bad "--low/--high: rc=$rc"; fi
"$MOAT" run --quiet -- sh -c 'exit 7'
rc=$?
if [ $rc -eq 7 ]; then ok "the program's exit status 7 passes through"; else bad "exit 7 gave $rc"; fi
"$MOAT" run --quiet -- sh -c 'kill -TERM $$'
rc=$?
if [ $rc -eq $((128 + 15)) ]; then ok "killed by SIGTERM: exit 143"; else bad "SIGTERM gave $rc"; fi
"$MOAT" run --quiet -- python3 -c 'import os, signal; x = [bytes(4096) for i in range(5000)]; os.kill(os.getpid(), signal.SIGKILL)'
rc=$?
if [ $rc -eq $((128 + 9)) ]; then ok "killed by SIGKILL: exit 137"; else bad "SIGKILL gave $rc"; fi
"$MOAT" run --quiet -- "$T/does-not-exist" 2>"$T/e.err"
rc=$?
if [ $rc -eq 4 ] && grep -q "cannot run" "$T/e.err"; then ok "a program that cannot run: exit 4"; else bad "missing program: rc=$rc"; fi
MOAT_RANGE=1K "$MOAT" run --quiet -- true 2>"$T/e.err"
rc=$?
if [ $rc -eq 4 ] && grep -q "MOAT_RANGE\|range size" "$T/e.err" && grep -q "could not start" "$T/e.err"; then
    ok "moat cannot start in the program (bad MOAT_RANGE): exit 4 with the reason"
else
    bad "bad MOAT_RANGE: rc=$rc $(cat "$T/e.err")"
fi
MOAT_STORE_SPIN_US=-5 "$MOAT" run --quiet -- true 2>"$T/e.err"
rc=$?
if [ $rc -eq 4 ] && grep -q "MOAT_STORE_SPIN_US='-5'" "$T/e.err"; then
    ok "bad MOAT_STORE_SPIN_US: exit 4 naming it"
else
    bad "bad MOAT_STORE_SPIN_US: rc=$rc $(cat "$T/e.err")"
fi
MOAT_FAULT_PIN=sometimes "$MOAT" run --quiet -- true 2>"$T/e.err"
rc=$?
if [ $rc -eq 4 ] && grep -q "MOAT_FAULT_PIN='sometimes'" "$T/e.err"; then
    ok "bad MOAT_FAULT_PIN: exit 4 naming it"
else
    bad "bad MOAT_FAULT_PIN: rc=$rc $(cat "$T/e.err")"
fi
# Handler threads pinned one per CPU (MOAT_FAULT_PIN): the program lists the
# CPUs each of its moat-fault threads may run on.
fault_cpus() {
    "$MOAT" run --quiet --budget 64M -- sh -c \
        'for d in /proc/$$/task/*; do [ "$(cat $d/comm)" = moat-fault ] &&
             sed -n "s/^Cpus_allowed_list:[[:space:]]*//p" $d/status; done' | sort | tr '\n' ' '
}
ncpu=$(nproc)
pinned=$(MOAT_FAULT_PIN=1 MOAT_FAULT_THREADS=2 fault_cpus)
free=$(MOAT_FAULT_PIN=0 MOAT_FAULT_THREADS=2 fault_cpus)
auto=$([ "$ncpu" -le 16 ] && MOAT_FAULT_THREADS=$ncpu fault_cpus)
all=$(sh -c 'sed -n "s/^Cpus_allowed_list:[[:space:]]*//p" /proc/$$/status')
first2=$(python3 -c 'import os; print(" ".join(str(c) for c in sorted(os.sched_getaffinity(0))[:2]), end=" ")')
if [ "$ncpu" -ge 2 ] && [ "$pinned" = "$first2" ] &&
    [ "$free" = "$all $all " ] &&
    { [ "$ncpu" -gt 16 ] || { [ "$(echo $auto | wc -w)" -eq "$ncpu" ] &&
        ! echo "$auto" | grep -q -- "[-,]"; }; }; then
    ok "fault handlers: one per CPU when pinned ($pinned), anywhere with MOAT_FAULT_PIN=0"
elif [ "$ncpu" -lt 2 ]; then
    ok "fault handlers: one CPU, nothing to pin (skipped)"
else
    bad "fault handlers' CPUs: pinned '$pinned', unpinned '$free' (allowed $all), auto '$auto'"
fi
"$MOAT" run --help | grep -q -- "--trace-interval" && ok "moat run --help" || bad "moat run --help"

# A budget far too small for the program: not a silent crawl but a warning
# that names the budget and what the program committed (run_thrash.c).  A
# short window, and the program is stopped once the warning is out.
cat >"$T/thrash.py" <<'PY'
x = [bytes(100) for i in range(40000)]
while True:
    s = sum(len(b) for b in x)
PY
# the interpreter itself, not a wrapper script (pyenv's shims are bash
# scripts that fork and exec for seconds under this budget)
py=$(python3 -c 'import sys; print(sys.executable)')
MOAT_THRASH_WINDOW=2 timeout 90 "$MOAT" run --budget 64K --quiet -- "$py" "$T/thrash.py" 2>"$T/thrash.err" &
tp=$!
for _ in $(seq 170); do
    grep -q "budget is far too small" "$T/thrash.err" && break
    sleep 0.5
done
kill -TERM $tp 2>/dev/null
wait $tp 2>/dev/null
if grep -q "warning: '$py' spent .* budget of 64.0 KiB .* far too small .* committed up to" "$T/thrash.err"; then
    ok "a budget far too small for the program gets a warning while it runs"
else
    bad "no thrash warning under --budget 64K: $(head -c 400 "$T/thrash.err")"
fi
# (a run that pages hard but usefully gets none: section 1)

# --- 6. fork + exec from Python (subprocess), and a shell ---------------------------
out=$("$MOAT" run --budget 16M --quiet -- python3 -c '
import subprocess
x = [str(i) * 10 for i in range(200000)]
r = subprocess.run(["sh", "-c", "echo $((6 * 7))"], capture_output=True, text=True, check=True)
print(r.stdout.strip(), subprocess.check_output(["python3", "-c", "print(sum(range(10**6)))"], text=True).strip(), len(x))
')
if [ "$out" = "42 499999500000 200000" ]; then ok "python subprocess (fork+exec, nested moat) works"; else bad "python subprocess printed '$out'"; fi

# --- 7. moat stat -------------------------------------------------------------------------
"$MOAT" run --quiet -- python3 -c 'import time; x = [bytes(1000) for i in range(20000)]; time.sleep(1.5)' &
runpid=$!
sleep 0.7
child=$(pgrep -P $runpid | head -1)
if [ -n "$child" ] && "$MOAT" stat --once "$child" >"$T/stat.out" 2>&1 && grep -q "resident" "$T/stat.out"; then
    ok "moat stat --once $child shows the live numbers"
else
    bad "moat stat --once: $(cat "$T/stat.out" 2>/dev/null)"
fi
wait $runpid
"$MOAT" stat --once 999999999 2>"$T/e.err"
rc=$?
if [ $rc -eq 4 ] && grep -q "no moat statistics" "$T/e.err"; then ok "moat stat of a process without moat: exit 4"; else bad "moat stat bad pid: rc=$rc"; fi

# Lazy tracking: a program far below its budget runs without a fault
# through moat, its statistics sampled; MOAT_LAZY=0 tracks from the start;
# a program above its budget starts tracking and evicts, with the same
# output in all three.
"$MOAT" run --budget 4G --stats-json "$T/lz.json" -- python3 "$T/big.py" >"$T/lz.out" 2>"$T/lz.err"
rc=$?
tr=$(json_num "$T/lz.json" tracking 2>/dev/null || echo x)
ut=$(json_num "$T/lz.json" untracked_pages 2>/dev/null || echo 0)
fc=$(json_num "$T/lz.json" faults_commit 2>/dev/null || echo x)
pr=$(json_num "$T/lz.json" peak_resident_pages 2>/dev/null || echo 0)
if [ $rc -eq 0 ] && cmp -s "$T/py.plain" "$T/lz.out" && [ "$tr" = 0 ] && [ "$fc" = 0 ] &&
    [ "$pr" -gt 8192 ] && grep -q "pages were not tracked" "$T/lz.err"; then
    ok "--budget 4G: not tracked, no faults, sampled peak resident $pr pages (now $ut), same output"
else
    bad "--budget 4G lazy: rc=$rc tracking=$tr faults_commit=$fc peak_resident=$pr"
    cat "$T/lz.err"
fi
MOAT_LAZY=0 "$MOAT" run --budget 4G --stats-json "$T/lz0.json" -- python3 "$T/big.py" >"$T/lz0.out" 2>"$T/lz0.err"
rc=$?
tr=$(json_num "$T/lz0.json" tracking 2>/dev/null || echo x)
fc=$(json_num "$T/lz0.json" faults_commit 2>/dev/null || echo 0)
if [ $rc -eq 0 ] && cmp -s "$T/py.plain" "$T/lz0.out" && [ "$tr" = 1 ] && [ "$fc" -gt 0 ] &&
    ! grep -q "not tracked" "$T/lz0.err"; then
    ok "MOAT_LAZY=0 --budget 4G: tracked from the start ($fc first-touch faults), same output"
else
    bad "MOAT_LAZY=0: rc=$rc tracking=$tr faults_commit=$fc"
    cat "$T/lz0.err"
fi

# The program heap keeps free pages (up to 1/8 of the budget) while moat does
# not track the program, and purges them as usual once it does: 48 MiB of
# 1 KiB blocks freed, then a pause for the purger.
cat >"$T/freed.c" <<'C'
#include <stdlib.h>
#include <unistd.h>
int main(void) {
    enum { N = 48 * 1024 };
    static char *p[N];
    for (int i = 0; i < N; i++) { p[i] = malloc(1000); p[i][0] = (char)i; }
    for (int i = 0; i < N; i++) free(p[i]);
    usleep(400000);
    return 0;
}
C
if cc -O1 -o "$T/freed" "$T/freed.c" 2>"$T/cc.err"; then
    "$MOAT" run --quiet --budget 1G --stats-json "$T/fr1.json" -- "$T/freed" 2>"$T/fr1.err"
    rc1=$?
    "$MOAT" run --quiet --budget 16M --stats-json "$T/fr2.json" -- "$T/freed" 2>"$T/fr2.err"
    rc2=$?
    c1=$(json_num "$T/fr1.json" alloc_committed_bytes 2>/dev/null || echo 0)
    c2=$(json_num "$T/fr2.json" alloc_committed_bytes 2>/dev/null || echo 999999999)
    t1=$(json_num "$T/fr1.json" tracking 2>/dev/null || echo x)
    t2=$(json_num "$T/fr2.json" tracking 2>/dev/null || echo x)
    if [ $rc1 -eq 0 ] && [ $rc2 -eq 0 ] && [ "$t1" = 0 ] && [ "$t2" = 1 ] &&
        [ "$c1" -gt $((32 << 20)) ] && [ "$c2" -lt $((8 << 20)) ]; then
        ok "freed heap pages: kept untracked under 1G ($c1 bytes committed), purged when tracked under 16M ($c2)"
    else
        bad "freed heap pages: rc=$rc1/$rc2 tracking=$t1/$t2 committed=$c1/$c2"
        cat "$T/fr1.err" "$T/fr2.err"
    fi
else
    bad "cannot compile the freed-pages program: $(head -c 300 "$T/cc.err")"
fi
tr=$(json_num "$T/py.json" tracking 2>/dev/null || echo x)
if [ "$tr" = 1 ] && ! grep -q "not tracked" "$T/py.err"; then
    ok "--budget 32M (above the budget): tracking started"
else
    bad "--budget 32M: tracking=$tr"
fi

# --- 8. nothing left behind -------------------------------------------------------------
ls /dev/shm/ | grep '^moat-.*\.stats$' | sort >"$T/shm.after"
# only blocks that appeared count: moat run also removes stale blocks of dead
# processes, so one present before may be gone now
# (and only of dead processes: tests running in parallel have blocks of
# their own while they run)
left=""
for b in $(comm -13 "$T/shm.before" "$T/shm.after"); do
    pid=${b#moat-}
    pid=${pid%.stats}
    kill -0 "$pid" 2>/dev/null || left="$left$b "
done
if [ -z "$left" ]; then
    ok "no /dev/shm/moat-*.stats left behind"
else
    bad "left behind in /dev/shm: $left"
fi

if [ $fails -ne 0 ]; then
    echo "test_run.sh: $fails checks failed"
    exit 1
fi
echo "test_run.sh: all checks passed"
