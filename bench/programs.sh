#!/usr/bin/env bash
# programs.sh - real programs with and without moat, and under the kernel's own
# swap with a memory-cgroup limit equal to moat's budget.
#
# For each program (python, sqlite3, xz, sort, threads) the same command is
# timed (wall clock, median of RUNS) in four modes:
#
#   plain   the program alone, everything in RAM;
#   big     `moat run --budget BIG` (BIG above the working set: nothing is
#           evicted; the cost of moat's allocator, interposers and first-touch
#           faults);
#   small   `moat run --budget SMALL` (SMALL 1/3 to 1/6 of the managed
#           working set, xz 1/2: every page moat writes out is sealed with
#           AES-256-GCM);
#   kernel  the program in a memory cgroup whose limit is SMALL, with a swap
#           file made for the run on the filesystem of moat's store.
#
# The four modes of one run are interleaved (plain, big, small, kernel, then
# the next run) so that a slow spell of the machine hits them alike.  stdout
# of every run goes through a FIFO into md5sum (outside the cgroup, so the
# output's page cache is not charged to the limited program) and must be the
# same in all modes.  A program the kernel OOM-kills (oom_kill in the
# cgroup's events) is recorded as such, not a failure of the script, and run
# again at once in a cgroup with a higher limit (budget x 5/4, then x 3/2,
# then x 2) until it completes: where every run at the budget was killed, the
# ratio is taken against that kernel with more memory than moat had, and
# shown as an upper bound ("<= R"): a kernel with more memory is no slower.
#
# Usage (root for the kernel mode): bench/programs.sh BUILD_DIR [RUNS]
#   RUNS default 3.  Environment: PROGRAMS="python sqlite3 xz sort threads",
#   BIG=4G, SWAP_SIZE=2G, TIMEOUT=300 (seconds allowed to one run),
#   SCALE=1 (multiplies every program's input size), BUDGET_<program>
#   (e.g. BUDGET_sort=48M: that program's small budget and cgroup limit),
#   TMPDIR (moat's store and the swap file; default /tmp).  moat's own
#   variables such as MOAT_FAULT_AHEAD pass through (and are shown).
# Output: a table on stdout and in BUILD_DIR/bench-results/programs.md, the
#   runs' details in BUILD_DIR/bench-results/programs.log.
#
# The cgroup: v2 when its memory controller is available there (memory.max,
# memory.swap.max=max, memory.events), else the v1 memory hierarchy
# (memory.limit_in_bytes, memsw unlimited) as a child of this script's own
# memory cgroup.  One fresh cgroup per run, so the peak usage and the OOM
# count are the run's.  The swap file must be the only swap area (checked
# before every kernel run); zswap's state is reported.  The cgroup, the swap
# file and the work directory are removed on exit, also on Ctrl-C (trap).
# Without root, or if swapon or the cgroup fail, the kernel mode is skipped
# with the reason and the other modes still run.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
BUILD=$(cd "${1:?usage: bench/programs.sh BUILD_DIR [RUNS]}" && pwd)
RUNS=${2:-${RUNS:-3}}
PROGRAMS=${PROGRAMS:-python sqlite3 xz sort threads}
BIG=${BIG:-4G}
SWAP_SIZE=${SWAP_SIZE:-2G}
TIMEOUT=${TIMEOUT:-300}
SCALE=${SCALE:-1}
MOAT=$BUILD/moat
out=$BUILD/bench-results
mkdir -p "$out"
log=$out/programs.log
: >"$log"

die() {
    echo "programs.sh: $*" >&2
    exit 2
}
[ -x "$MOAT" ] && [ -f "$BUILD/libmoat_preload.so" ] ||
    die "$MOAT or $BUILD/libmoat_preload.so missing; build: ninja -C $BUILD moat moat_preload"
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive number, not '$RUNS'"
for t in python3 md5sum awk timeout; do command -v $t >/dev/null || die "$t is missing"; done

to_bytes() { # 64M -> 67108864 (binary units)
    local v=${1%iB} mul=1
    v=${v%B}
    case $v in
    *[kK]) mul=1024 v=${v%?} ;;
    *[mM]) mul=$((1024 * 1024)) v=${v%?} ;;
    *[gG]) mul=$((1024 * 1024 * 1024)) v=${v%?} ;;
    esac
    [[ $v =~ ^[0-9]+$ ]] || die "bad size '$1'"
    echo $((v * mul))
}

# --- state undone on exit ----------------------------------------------------
W=""        # work directory: inputs, moat's store files (TMPDIR), the FIFO
SWAPFILE="" # our swap file, once swapon succeeded or was tried
CG=""       # the current run's cgroup
tpid=""     # the running program's timeout process
mpid=""     # its md5sum
rm_cgroup() {
    [ -n "$CG" ] && [ -d "$CG" ] || return 0
    local pid
    for pid in $(cat "$CG/cgroup.procs" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
    for _ in $(seq 25); do
        rmdir "$CG" 2>/dev/null && break
        sleep 0.2
    done
    [ -d "$CG" ] && echo "programs.sh: could not remove cgroup $CG" >&2
    CG=""
}
cleanup() {
    set +e
    if [ -n "$tpid" ] && kill -0 "$tpid" 2>/dev/null; then
        # timeout forwards the signal to the program (it runs in its own
        # process group, so a Ctrl-C on the terminal does not reach it).
        kill -TERM "$tpid" 2>/dev/null
        sleep 0.5
        kill -KILL "$tpid" 2>/dev/null
    fi
    rm_cgroup
    [ -n "$mpid" ] && kill "$mpid" 2>/dev/null
    if [ -n "$SWAPFILE" ]; then
        swapoff "$SWAPFILE" 2>/dev/null
        rm -f "$SWAPFILE"
    fi
    [ -n "$W" ] && rm -rf "$W"
}
trap cleanup EXIT
trap 'echo "programs.sh: interrupted" >&2; exit 130' INT TERM HUP

STORE_DIR=${TMPDIR:-/tmp}
W=$(mktemp -d "$STORE_DIR/moat-programs.XXXXXX") || die "cannot make a directory in $STORE_DIR"
# moat's default store is an unlinked file in $TMPDIR: keep it (and the swap
# file) in our directory, on the same filesystem.
export TMPDIR=$W
unset MOAT_BUDGET MOAT_LOW MOAT_HIGH MOAT_STORE MOAT_RANGE

# --- the programs and their inputs ---------------------------------------------
# Sizes: a plain run takes 0.3-1.5 s on an idle 2-vCPU VM and a small-budget
# run of moat 5-50 s (larger inputs make moat's runs minutes long: sqlite3 at
# 250000 rows and 32M took 67 s, xz -9 on 4 MiB at 16M more than 300 s).
# The budget is 1/3 to 1/6 of the managed peak (the table's "managed peak"),
# except xz: 32M, half its managed peak and below its 64 MiB dictionary.
# CMD: the argv, words separated by '|'; BUDGET: the small budget.
declare -A CMD BUDGET
gen_python() {
    cat >"$W/big.py" <<'PY'
import hashlib, sys
n = int(sys.argv[1])
l = [i * 3 + 1 for i in range(n)]
d = {i: str(i ^ 0x5a5a) for i in range(0, n, 3)}
h = hashlib.sha256()
h.update(str(sum(l)).encode())
h.update(str(sum(len(v) for v in d.values())).encode())
for i in range(0, n, 9973):
    h.update(str(l[i]).encode() + d.get(i - i % 3, "").encode())
print(h.hexdigest())
PY
    # The interpreter itself, not a wrapper: on a machine with pyenv,
    # `python3` is a bash shim that runs ~20 more programs (each of them
    # under moat too, each paying moat's start-up of ~3 ms) before Python.
    local py
    py=$(python3 -c 'import sys; print(sys.executable)') || return 1
    CMD[python]="$py|$W/big.py|$((3000000 * SCALE))"
    BUDGET[python]=48M
}
gen_sqlite3() {
    cat >"$W/db.sql" <<SQL
PRAGMA cache_size = -2000000;
CREATE TABLE t(a INTEGER PRIMARY KEY, b TEXT, c INTEGER);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $((250000 * SCALE)))
INSERT INTO t SELECT i, printf('%08x-%s', (i * 2654435761) % 4294967296, hex(zeroblob(40 + i % 61))), i % 977 FROM n;
CREATE INDEX tb ON t(b);
CREATE INDEX tc ON t(c, a);
SELECT count(*), sum(length(b)), sum(c) FROM t;
SELECT c, count(*), min(b), max(a) FROM t GROUP BY c ORDER BY count(*) DESC, c LIMIT 5;
SELECT a, substr(b, 1, 12) FROM t WHERE b > '7fff' ORDER BY b LIMIT 5;
UPDATE t SET b = upper(b) WHERE a % 7 = 0;
SELECT count(*) FROM t WHERE b GLOB '*[A-F]*';
SQL
    CMD[sqlite3]="sqlite3|:memory:|.read $W/db.sql"
    BUDGET[sqlite3]=64M
}
gen_xz() {
    python3 - "$W/xz.in" $((1024 * SCALE)) <<'PY'
import random, sys
random.seed(11)
words = [''.join(random.choice('abcdefghijklmnopqrstuvwxyz') for _ in range(random.randint(2, 9)))
         for _ in range(20000)]
with open(sys.argv[1], 'w') as f:
    size, limit = 0, int(sys.argv[2]) << 10
    while size < limit:
        line = ' '.join(random.choice(words) for _ in range(12)) + ' %d\n' % random.getrandbits(40)
        f.write(line)
        size += len(line)
PY
    # -9: a 64 MiB dictionary, above the budget.
    CMD[xz]="xz|-9|-T1|-c|$W/xz.in"
    BUDGET[xz]=32M
}
gen_sort() {
    awk -v n=$((1500000 * SCALE)) 'BEGIN { srand(7); for (i = 0; i < n; i++)
        printf "%08x%08x %d\n", int(rand() * 4294967296), int(rand() * 4294967296), i }' >"$W/sort.in"
    CMD[sort]="sort|-S|400M|$W/sort.in"
    BUDGET[sort]=44M
}
gen_threads() {
    # 8 threads fill heap blocks of mixed sizes, hand half of them to the next
    # thread (cross-thread frees), realloc and check the rest; the checksum
    # does not depend on scheduling (the program of tests/test_programs.sh,
    # with the number of blocks per thread as an argument).
    cat >"$W/mt.c" <<'C'
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#define NT 8
struct blk { uint64_t id; size_t n; };
static size_t per;
static struct blk **box[NT];
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
    struct blk **keep = calloc(per, sizeof *keep);
    for (size_t i = 0; i < per; i++) {
        uint64_t id = t * per + i;
        size_t n = 16 + mix(id) % (i % 97 == 0 ? 60000 : 900);
        struct blk *b = malloc(sizeof *b + n);
        b->id = id; b->n = n; fill(b);
        if (i & 1) box[t][i] = b; else keep[i] = b;
    }
    pthread_barrier_wait(&bar);
    uint64_t s = 0;
    size_t from = (t + 1) % NT;
    for (size_t i = 1; i < per; i += 2) { s += check(box[from][i]); free(box[from][i]); }
    for (size_t i = 0; i < per; i += 2) { s += check(keep[i]); keep[i] = realloc(keep[i], sizeof(struct blk) + keep[i]->n); }
    for (size_t i = 0; i < per; i += 2) { s += check(keep[i]); free(keep[i]); }
    free(keep);
    sums[t] = s;
    return NULL;
}
int main(int argc, char **argv) {
    pthread_t th[NT];
    per = argc > 1 ? strtoul(argv[1], NULL, 10) : 24000;
    for (int t = 0; t < NT; t++) box[t] = calloc(per, sizeof *box[t]);
    pthread_barrier_init(&bar, NULL, NT);
    for (uintptr_t t = 0; t < NT; t++) pthread_create(&th[t], NULL, worker, (void *)t);
    uint64_t total = 0;
    for (int t = 0; t < NT; t++) { pthread_join(th[t], NULL); total += sums[t]; }
    printf("%016llx\n", (unsigned long long)total);
    return 0;
}
C
    cc -O2 -pthread -o "$W/mt" "$W/mt.c" 2>"$W/cc.err" || return 1
    CMD[threads]="$W/mt|$((32000 * SCALE))"
    BUDGET[threads]=32M
}

declare -A NOTE # why a program is not measured
progs=()
for p in $PROGRAMS; do
    case $p in
    python) need=python3 ;; sqlite3) need=sqlite3 ;; xz) need=xz ;; sort) need="sort" ;; threads) need=cc ;;
    *) die "unknown program '$p' (python sqlite3 xz sort threads)" ;;
    esac
    if ! command -v $need >/dev/null; then
        NOTE[$p]="$need not installed (scripts/deps.sh)"
    elif ! "gen_$p"; then
        NOTE[$p]="could not prepare its input"
    fi
    b=BUDGET_$p
    [ -z "${!b:-}" ] || BUDGET[$p]=${!b}
    progs+=("$p")
done

# --- the kernel mode: swap file and cgroup ----------------------------------------
KNOTE="" # why the kernel mode is skipped, if it is
cgver="" cgparent=""
zswap=$(cat /sys/module/zswap/parameters/enabled 2>/dev/null || echo "not built")
setup_kernel() {
    [ "$(id -u)" = 0 ] || { KNOTE="needs root (swapon and cgroups)"; return; }
    local t
    for t in mkswap swapon swapoff; do
        command -v $t >/dev/null || { KNOTE="$t is missing (util-linux)"; return; }
    done
    local others
    others=$(awk 'NR > 1 { print $1 }' /proc/swaps | tr '\n' ' ')
    [ -z "$others" ] || { KNOTE="other swap areas are active ($others); swapoff them first"; return; }
    local v2 v1 own
    v2=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/mounts)
    v1=$(awk '$3 == "cgroup" && $4 ~ /(^|,)memory(,|$)/ { print $2; exit }' /proc/mounts)
    if [ -n "$v2" ] && grep -qw memory "$v2/cgroup.controllers" 2>/dev/null; then
        grep -qw memory "$v2/cgroup.subtree_control" || echo "+memory" >"$v2/cgroup.subtree_control" ||
            { KNOTE="cannot enable the memory controller in $v2/cgroup.subtree_control"; return; }
        # v2 forbids processes in a cgroup whose children use controllers:
        # a child of the root, like bench/swap_baseline.sh.
        cgver=v2 cgparent=$v2
    elif [ -n "$v1" ]; then
        own=$(awk -F: '$2 ~ /(^|,)memory(,|$)/ { print $3; exit }' /proc/self/cgroup)
        cgver=v1 cgparent=$v1$own
        [ -w "$cgparent" ] || cgparent=$v1
    else
        KNOTE="no cgroup v2 memory controller and no cgroup v1 memory hierarchy"
        return
    fi
    SWAPFILE=$W/swapfile
    local bytes
    bytes=$(to_bytes "$SWAP_SIZE")
    : >"$SWAPFILE" && chmod 600 "$SWAPFILE"
    if ! { fallocate -l "$bytes" "$SWAPFILE" 2>/dev/null && mkswap -q "$SWAPFILE" >/dev/null &&
        swapon "$SWAPFILE" 2>/dev/null; }; then
        # Some filesystems refuse fallocated swap files (holes): write it.
        dd if=/dev/zero of="$SWAPFILE" bs=1M count=$((bytes >> 20)) status=none &&
            mkswap -q "$SWAPFILE" >/dev/null && swapon "$SWAPFILE" 2>/dev/null ||
            { KNOTE="swapon refused $SWAPFILE ($(df --output=fstype "$W" | tail -1))"; return; }
    fi
}
setup_kernel
fs="$(df --output=source,fstype "$W" | tail -1 | tr -s ' ')"

# new_cgroup BYTES: a fresh cgroup limited to BYTES, swap unlimited.
new_cgroup() {
    CG=$cgparent/moat-programs.$$.$1.$2
    mkdir "$CG" || return 1
    if [ $cgver = v2 ]; then
        echo "$3" >"$CG/memory.max" || return 1
        [ -e "$CG/memory.swap.max" ] && echo max >"$CG/memory.swap.max"
    else
        echo "$3" >"$CG/memory.limit_in_bytes" || return 1
        [ -w "$CG/memory.memsw.limit_in_bytes" ] && echo -1 >"$CG/memory.memsw.limit_in_bytes"
    fi
    return 0
}
cg_oom_kills() {
    if [ $cgver = v2 ]; then
        awk '$1 == "oom_kill" { print $2 }' "$CG/memory.events"
    else
        awk '$1 == "oom_kill" { print $2 }' "$CG/memory.oom_control"
    fi
}
cg_peak() {
    if [ $cgver = v2 ]; then cat "$CG/memory.peak" 2>/dev/null || echo 0; else cat "$CG/memory.max_usage_in_bytes"; fi
}
vmstat() { awk -v k="$1" '$1 == k { print $2 }' /proc/vmstat; }

# --- one run --------------------------------------------------------------------
# R[prog.mode] = the times (s) of the runs that completed; SUM = output md5s;
# FAIL = notes on runs that did not; plus per-run numbers for the details.
declare -A R SUMS FAIL MSTAT KSTAT RSS KRAISED
mkfifo "$W/fifo"
run_one() { # PROG MODE RUN [LIMIT_BYTES: kernel mode with a raised limit]
    local p=$1 mode=$2 i=$3 pre=() budget
    budget=$(to_bytes "${BUDGET[$p]}")
    local key=$p.$mode
    if [ -n "${4:-}" ]; then
        budget=$4 key=$p.kraised
    fi
    local js=$W/$p.$mode.$i.json err=$W/$p.$mode.$i.err
    local -a cmd
    IFS='|' read -ra cmd <<<"${CMD[$p]}"
    case $mode in
    plain) command -v /usr/bin/time >/dev/null && pre=(/usr/bin/time -f %M -o "$W/rss") ;;
    big) pre=("$MOAT" run --budget "$BIG" --stats-json "$js" --) ;;
    small) pre=("$MOAT" run --budget "${BUDGET[$p]}" --stats-json "$js" --) ;;
    kernel)
        [ -z "$KNOTE" ] || return 0
        if [ -n "$(awk 'NR > 1 && $1 != f { print $1 }' f="$SWAPFILE" /proc/swaps)" ]; then
            FAIL[$p.$mode]+="other swap appeared; "
            return 0
        fi
        new_cgroup "$p" "$i" "$budget" || {
            FAIL[$key]+="cannot make cgroup; "
            rm_cgroup
            return 0
        }
        pre=(bash -c 'echo $$ >"$1/cgroup.procs" && exec "${@:2}"' _ "$CG")
        ;;
    esac
    local in0 out0 t0 t1 rc
    in0=$(vmstat pswpin) out0=$(vmstat pswpout)
    md5sum <"$W/fifo" >"$W/sum" &
    mpid=$!
    t0=$EPOCHREALTIME
    timeout --kill-after=10 "$TIMEOUT" "${pre[@]}" "${cmd[@]}" >"$W/fifo" 2>"$err" &
    tpid=$!
    # (2>/dev/null: no "Killed" job notice; the run's fate is in the table)
    wait $tpid 2>/dev/null
    rc=$?
    t1=$EPOCHREALTIME
    tpid=""
    wait $mpid
    mpid=""
    local dt sum
    dt=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
    sum=$(cut -c1-32 "$W/sum")
    local extra=""
    if [ $mode = kernel ]; then
        local oom peak
        oom=$(cg_oom_kills) peak=$(cg_peak)
        extra="pswpin $(($(vmstat pswpin) - in0)) pswpout $(($(vmstat pswpout) - out0)) cgroup peak $((peak >> 20)) MiB oom_kill ${oom:-?}"
        rm_cgroup
        if [ "${oom:-0}" -gt 0 ]; then
            FAIL[$key]+="OOM-killed; "
            echo "$p $mode run $i: OOM-killed by the kernel at $((budget >> 20)) MiB after $dt s (rc $rc); $extra" | tee -a "$log"
            # again with more memory: x 5/4, x 3/2, x 2 the budget
            local base step
            base=$(to_bytes "${BUDGET[$p]}")
            for step in 5 6 8; do
                [ $((base * step / 4)) -gt "$budget" ] || continue
                run_one "$p" kernel "$i" $((base * step / 4))
                return 0
            done
            return 0
        fi
        [ $rc -ne 0 ] || [ "$key" != "$p.kernel" ] || KSTAT[$p]+="$(($(vmstat pswpin) - in0)) $(($(vmstat pswpout) - out0)) $((peak >> 20))"$'\n'
        [ $rc -ne 0 ] || [ "$key" = "$p.kernel" ] || KRAISED[$p]+="$((budget >> 20)) "
    fi
    if [ $mode = big ] || [ $mode = small ]; then
        [ -f "$js" ] && extra=$(python3 - "$js" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print("page-ins %d sealed+written %d clean %d faults %d fault_s %.2f reclaim_s %.2f peak_resident %d peak_committed %d sealed_MiB %.0f integrity_failures %d wp_calls %d zap_calls %d"
      % (d["faults_pagein"], d["evictions_written"], d["evictions_clean"],
         d["faults_commit"] + d["faults_pagein"] + d["faults_wp"], d["fault_ns"] / 1e9,
         d.get("reclaim_ns", 0) / 1e9, d["peak_resident_pages"], d["peak_committed_pages"],
         d["store_bytes_written"] / 2**20, d["integrity_failures"],
         d.get("wp_calls", 0), d.get("zap_calls", 0)))
PY
)
        [ $mode = small ] && MSTAT[$p]+="$extra"$'\n'
        [ $mode = big ] && RSS[$p.big]=$(sed -n 's/.*peak_committed \([0-9]*\).*/\1/p' <<<"$extra")
    fi
    if [ $mode = plain ] && [ -s "$W/rss" ]; then
        RSS[$p]=$(tail -1 "$W/rss")
        rm -f "$W/rss"
    fi
    echo "$p $mode run $i${4:+ (limit $((budget >> 20)) MiB)}: $dt s, rc $rc, md5 $sum${extra:+; $extra}" >>"$log"
    if [ $rc -ne 0 ]; then
        case $rc in 124 | 137) FAIL[$key]+="timed out (${TIMEOUT}s); " ;; *) FAIL[$key]+="exit $rc; " ;; esac
        echo "  stderr: $(tail -c 400 "$err" | tr '\n' ' ')" >>"$log"
        return 0
    fi
    R[$key]+="$dt "
    SUMS[$p]+="$mode:$sum "
    printf '  %-8s %-6s run %d: %7.2f s%s\n' "$p" "$mode" "$i" "$dt" "${4:+ (limit $((budget >> 20)) MiB)}"
}

machine="$(nproc) cpus, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), Linux $(uname -r), $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM"
kdesc="cgroup $cgver limit = moat's budget, swap unlimited, ${SWAP_SIZE} swap file on $fs (the only swap area), vm.swappiness $(cat /proc/sys/vm/swappiness), zswap enabled: $zswap, THP $(sed 's/.*\[\(.*\)\].*/\1/' /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null)"
[ -n "$KNOTE" ] && kdesc="skipped: $KNOTE"
echo "# programs.sh: $machine"
echo "# $(date -u '+%Y-%m-%d %H:%M:%S UTC'), git $(git -C "$here/.." rev-parse --short HEAD 2>/dev/null || echo none), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# moat store and swap file in $W ($fs); big budget $BIG; $RUNS runs, modes interleaved${MOAT_FAULT_AHEAD:+; MOAT_FAULT_AHEAD=$MOAT_FAULT_AHEAD}"
echo "# kernel: $kdesc"
{
    echo "machine: $machine"
    echo "kernel: $kdesc"
} >>"$log"
[ "$zswap" = Y ] && echo "programs.sh: warning: zswap is enabled: the kernel swaps compressed pages to RAM first" >&2

for p in "${progs[@]}"; do
    [ -z "${NOTE[$p]:-}" ] || { echo "  $p: skipped: ${NOTE[$p]}"; continue; }
    echo "== $p: ${CMD[$p]//|/ } (budget ${BUDGET[$p]})" | tee -a "$log"
    for i in $(seq "$RUNS"); do
        for mode in plain big small kernel; do run_one "$p" $mode "$i"; done
    done
done

# --- summary ----------------------------------------------------------------------
median() { # [DECIMALS]: the median of the numbers on stdin
    tr ' ' '\n' | awk -v d="${1:-2}" 'NF { x[n++] = $1 } END {
    if (n == 0) exit
    for (i = 1; i < n; i++) for (j = i; j > 0 && x[j - 1] + 0 > x[j] + 0; j--) { t = x[j]; x[j] = x[j - 1]; x[j - 1] = t }
    printf "%.*f", d, (n % 2) ? x[(n - 1) / 2] : (x[n / 2 - 1] + x[n / 2]) / 2 }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b <= 0) print "-"; else printf "%.2f", a / b }'; }
# kv_median LINES KEY [DECIMALS]: median of the "KEY value" pairs of the runs
kv_median() { grep -o "$2 [0-9.]*" <<<"$1" | awk '{ print $2 }' | tr '\n' ' ' | median "${3:-0}"; }
cell() { # the median of the runs that completed; "(N of RUNS OOM-killed)"
    local v f
    v=$(median <<<"${R[$1]:-}")
    f=${FAIL[$1]:-}
    if [ -n "$f" ]; then
        f=$(tr ';' '\n' <<<"${f%; }" | sed 's/^ *//' | sort | uniq -c |
            awk -v n="$RUNS" '{ c = $1; $1 = ""; printf "%s%d of %d%s", sep, c, n, $0; sep = ", " }')
        echo "${v:+$v }($f)"
    else
        echo "${v:--}"
    fi
}
{
    echo "| program | peak RSS plain | managed peak | budget | plain s | moat big s | moat small s | kernel swap s | small / kernel (<= 1.5) | big / plain (< 1.1) | outputs |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    for p in "${progs[@]}"; do
        if [ -n "${NOTE[$p]:-}" ]; then
            echo "| $p | | | | | | | | | | skipped: ${NOTE[$p]} |"
            continue
        fi
        pl=$(median <<<"${R[$p.plain]:-}") bg=$(median <<<"${R[$p.big]:-}")
        sm=$(median <<<"${R[$p.small]:-}") kn=$(median <<<"${R[$p.kernel]:-}")
        sums=$(tr ' ' '\n' <<<"${SUMS[$p]:-}" | cut -d: -f2 | sort -u | grep -c .)
        case $sums in 0) same="none" ;; 1) same="identical" ;; *) same="DIFFER: ${SUMS[$p]}" ;; esac
        rss=${RSS[$p]:+$((RSS[$p] >> 10)) MiB}
        mp=${RSS[$p.big]:+$((RSS[$p.big] >> 8)) MiB}
        kcell=$(cell "$p.kernel")
        kr=$(ratio "$sm" "$kn")
        if [ -n "${KRAISED[$p]:-}" ]; then
            # the runs the kernel completed only with a raised limit
            kraised_s=$(median <<<"${R[$p.kraised]:-}")
            kcell+="; with more memory ($(tr ' ' '\n' <<<"${KRAISED[$p]}" | sort -nu | grep . | tr '\n' '/' | sed 's|/$||') MiB): $kraised_s"
            # a kernel with more memory is no slower: an upper bound
            [ -n "$kn" ] || kr="<= $(ratio "$sm" "$kraised_s") (kernel with more memory)"
        fi
        [ -n "$KNOTE" ] && kcell="skipped"
        echo "| $p | ${rss:--} | ${mp:--} | ${BUDGET[$p]} | $(cell "$p.plain") | $(cell "$p.big") | $(cell "$p.small") | $kcell | $kr | $(ratio "$bg" "$pl") | $same |"
    done
    echo
    echo "moat small (medians of the runs): page-ins, pages sealed and written, clean drops, faults, seconds in faults, write-protect and zap calls (TLB shootdowns); kernel: pages swapped in/out (/proc/vmstat), cgroup peak"
    echo
    echo "| program | moat page-ins | moat sealed+written | moat clean drops | moat faults | moat s in faults | moat sealed MiB | moat wp calls | moat zap calls | kernel pswpin | kernel pswpout | kernel cgroup peak MiB |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for p in "${progs[@]}"; do
        [ -z "${NOTE[$p]:-}" ] || continue
        m=${MSTAT[$p]:-}
        k=${KSTAT[$p]:-}
        kin=$(awk '{ print $1 }' <<<"$k" | tr '\n' ' ' | median 0)
        kout=$(awk '{ print $2 }' <<<"$k" | tr '\n' ' ' | median 0)
        kpk=$(awk '{ print $3 }' <<<"$k" | tr '\n' ' ' | median 0)
        echo "| $p | $(kv_median "$m" page-ins) | $(kv_median "$m" sealed+written) | $(kv_median "$m" clean) | $(kv_median "$m" faults) | $(kv_median "$m" fault_s 2) | $(kv_median "$m" sealed_MiB) | $(kv_median "$m" wp_calls) | $(kv_median "$m" zap_calls) | ${kin:--} | ${kout:--} | ${kpk:--} |"
    done
} >"$W/table.md"
{
    echo "## Real programs: plain, moat run (big and small budget), kernel swap"
    echo
    echo "machine: $machine; $(date -u '+%Y-%m-%d %H:%M UTC'); load average before the summary $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "command: ${MOAT_FAULT_AHEAD:+MOAT_FAULT_AHEAD=$MOAT_FAULT_AHEAD }bench/programs.sh $BUILD $RUNS; medians of $RUNS runs (wall time, s); big budget $BIG"
    echo "kernel: $kdesc"
    echo
    cat "$W/table.md"
} >"$out/programs.md"
echo
cat "$out/programs.md"
echo
echo "details: $log; table: $out/programs.md"
exit 0
