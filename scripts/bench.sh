#!/usr/bin/env bash
# bench.sh - build moat in Release and run the core benchmarks of bench/,
# then print one summary table with the ratios against their baselines.
#
# Usage: scripts/bench.sh [NAME...]     NAME: seal lru tlb firsttouch pagein swap
#                                       redis programs (default: all of them)
# Environment: BUILD_DIR (default <repo>/build-bench), SIZE=256M BUDGET=64M
#   RUNS=3 (page-in runs, and runs of each real program), TIMEOUT=300
#   (seconds allowed to each program; bench/programs.sh as a whole gets
#   PROGRAMS_TIMEOUT=1800).
#
# Every program's full output is kept in $BUILD_DIR/bench-results/NAME.txt
# and the summary in $BUILD_DIR/bench-results/summary.md.  Benchmarks are not
# tests: nothing here fails on a slow number; a program that crashes, reports
# wrong data or cannot be built is shown as such in the summary.  The kernel
# swap baseline needs root (it makes a swap file and a memory cgroup, and
# undoes both); without root it is reported as skipped.  See docs/bench.md.
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$root/build-bench}
SIZE=${SIZE:-256M}
BUDGET=${BUDGET:-64M}
RUNS=${RUNS:-3}
TIMEOUT=${TIMEOUT:-300}
export SIZE BUDGET RUNS
out=$BUILD_DIR/bench-results
want=("$@")
[ ${#want[@]} -gt 0 ] || want=(seal lru tlb firsttouch pagein swap redis programs)
wanted() {
    local w
    for w in "${want[@]}"; do [ "$w" = "$1" ] && return 0; done
    return 1
}

# --- dependencies (Debian packages, installed only when missing) ------------
# scripts/deps.sh is the project's one list; the check below covers what the
# benchmarks need (the openssl CLI, util-linux for swap) if it is absent.
if [ -x "$root/scripts/deps.sh" ]; then
    "$root/scripts/deps.sh" || echo "bench.sh: warning: scripts/deps.sh failed" >&2
else
    need=()
    for p in cmake ninja-build gcc pkg-config libssl-dev liburing-dev libjansson-dev \
        libcmocka-dev libhiredis-dev openssl util-linux; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
    done
    if [ ${#need[@]} -gt 0 ]; then
        echo "bench.sh: installing ${need[*]}"
        { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"; } \
            >/dev/null || echo "bench.sh: warning: could not install ${need[*]}" >&2
    fi
fi

# --- build ------------------------------------------------------------------
mkdir -p "$out"
rm -f "$out"/*.txt "$out/summary.md" "$out/programs.md" "$out/programs.log" # the summary must only show this run
echo "== building in $BUILD_DIR (Release)"
cmake -S "$root" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release >"$out/build.log" 2>&1 ||
    { cat "$out/build.log"; echo "bench.sh: cmake failed" >&2; exit 1; }
# -k 0: one program that fails to link must not stop the others.
ninja -C "$BUILD_DIR" -k 0 seal lru_sim tlb_cost firsttouch pagein pagein_plain redis_pagein moat moat_preload >>"$out/build.log" 2>&1 ||
    echo "bench.sh: some benchmark programs did not build (see $out/build.log)"
bin=$BUILD_DIR/bench

# --- machine ----------------------------------------------------------------
machine="$(nproc) cpus, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), Linux $(uname -r)"
mem="$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
echo "== machine: $machine, $mem RAM"
echo "== $(date -u '+%Y-%m-%d %H:%M:%S UTC'), git $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo none)"

# run NAME PROGRAM ARGS... : run with a timeout, show and keep the output.
declare -A status
run() {
    local name=$1
    shift
    if [ ! -x "$1" ] && [[ $1 == "$bin"/* ]]; then
        echo "== $name: not built (see $out/build.log)"
        status[$name]="not built"
        return
    fi
    echo "== $name: $*"
    local t0=$SECONDS
    timeout --kill-after=10 "$TIMEOUT" "$@" 2>&1 | tee "$out/$name.txt"
    local rc=${PIPESTATUS[0]}
    case $rc in
    0) status[$name]="ok" ;;
    77) status[$name]="skipped" ;;
    124 | 137) status[$name]="timed out after ${TIMEOUT}s" ;;
    *) status[$name]="failed (exit $rc)" ;;
    esac
    echo "== $name: ${status[$name]}, $((SECONDS - t0)) s"
}

# result NAME KEY: a value from the program's RESULT line ("" if none).  For
# pagein, whose RESULT line is lost if it dies before the end, the median of
# the runs it did complete ("run N: populate X s, seq Y s, random Z s").
result() {
    [ -f "$out/$1.txt" ] || return 0
    local v
    v=$(grep '^RESULT' "$out/$1.txt" | tail -1 | tr ' ' '\n' | awk -F= -v k="$2" '$1 == k { print $2 }')
    if [ -z "$v" ] && [[ $1 == pagein_* && $2 == *_s ]]; then
        v=$(awk -v ph="${2%_s}" '/^run [0-9]+: populate/ {
                for (i = 1; i <= NF; i++) if ($i == ph) { gsub(/,/, "", $(i + 1)); x[n++] = $(i + 1) }
            }
            END {
                if (n == 0) exit
                for (i = 1; i < n; i++)  # insertion sort: mawk has no asort
                    for (j = i; j > 0 && x[j - 1] + 0 > x[j] + 0; j--) { t = x[j]; x[j] = x[j - 1]; x[j - 1] = t }
                printf "%s", (n % 2) ? x[(n - 1) / 2] : (x[n / 2 - 1] + x[n / 2]) / 2
            }' "$out/$1.txt")
    fi
    echo "$v"
}
# runs_done NAME: how many page-in runs completed.
runs_done() { grep -c '^run [0-9]*: populate' "$out/$1.txt" 2>/dev/null || echo 0; }

wanted seal && run seal "$bin/seal"
wanted lru && run lru_sim "$bin/lru_sim"
wanted tlb && run tlb_cost "$bin/tlb_cost"
# moat's default store is a file in $TMPDIR: keep it in a folder of our own,
# removed at the end, so a benchmark killed by the timeout leaves nothing.
export TMPDIR=$out/tmp
rm -rf "$TMPDIR" && mkdir -p "$TMPDIR"
wanted firsttouch && run firsttouch "$bin/firsttouch"
if wanted pagein; then
    run pagein_nolimit "$bin/pagein_plain" --mode plain --size "$SIZE" --runs "$RUNS"
fi
if wanted swap; then
    if [ "$(id -u)" = 0 ]; then
        run pagein_kernel_swap bash "$root/bench/swap_baseline.sh" "$BUILD_DIR"
    else
        echo "== pagein_kernel_swap: skipped (needs root)"
        status[pagein_kernel_swap]="skipped (needs root)"
    fi
fi
if wanted pagein; then
    run pagein_moat "$bin/pagein" --mode moat --size "$SIZE" --budget "$BUDGET" --runs "$RUNS"
fi
# Real programs (python, sqlite3, xz, sort, threads): plain, under moat run
# with a budget above and below their working set, and under the kernel's
# swap in a memory cgroup limited to the same budget (kernel part: root).
# Its store files and swap file go to $TMPDIR too.
if wanted programs; then
    TIMEOUT=${PROGRAMS_TIMEOUT:-1800} run programs bash "$root/bench/programs.sh" "$BUILD_DIR" "$RUNS"
fi

rm -rf "$TMPDIR"
# Page-in over one redis server and a Redis Cluster, next to redis-benchmark
# (bench/redis_pagein.sh starts and stops its own servers).
wanted redis && run redis_pagein bash "$root/bench/redis_pagein.sh" "$BUILD_DIR"

# --- summary ----------------------------------------------------------------
ratio() { # ratio A B -> A/B with 2 decimals, or "-" when either is missing
    awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || a < 0 || b <= 0) print "-"; else printf "%.2f", a / b }'
}
num() { [ -n "$1" ] && awk -v v="$1" 'BEGIN { if (v < 0) print "-"; else printf "%.'"${2:-2}"'f", v }' || echo "-"; }
st() { echo "${status[$1]:-not run}"; }

{
    echo
    echo "## moat core benchmarks: summary"
    echo
    echo "machine: $machine, $mem RAM; working set $SIZE, budget $BUDGET; medians (see each section above)"
    echo
    echo "| benchmark | baseline | baseline value | moat | ratio moat/baseline | target | status |"
    echo "|---|---|---:|---:|---:|---|---|"
    p=$(result firsttouch plain_ns)
    m=$(result firsttouch moat_ns)
    mb=$(result firsttouch moat_budget_ns)
    echo "| first touch, ns/page, unlimited budget | plain mmap | $(num "$p" 0) | $(num "$m" 0) | $(ratio "$m" "$p") | <= 3x | $(st firsttouch) |"
    echo "| first touch, ns/page, budget 2x area | plain mmap | $(num "$p" 0) | $(num "$mb" 0) | $(ratio "$mb" "$p") | <= 3x | $(st firsttouch) |"
    for ph in seq random populate; do
        k=$(result pagein_kernel_swap ${ph}_s)
        m=$(result pagein_moat ${ph}_s)
        n=$(result pagein_nolimit ${ph}_s)
        case $ph in
        seq) label="page-in, 3 sequential passes, s" target="<= 2x" ;;
        random) label="page-in, 1 random pass, s" target="-" ;;
        populate) label="populate (first write of every page), s" target="-" ;;
        esac
        mstat="moat: $(st pagein_moat), $(runs_done pagein_moat) of $RUNS runs; swap: $(st pagein_kernel_swap)"
        echo "| $label | kernel swap, memcg $BUDGET | $(num "$k" 3) | $(num "$m" 3) | $(ratio "$m" "$k") | $target | $mstat |"
        # All in RAM is a reference point, not a baseline for paging: no ratio.
        echo "| $label | no limit (all in RAM) | $(num "$n" 3) | $(num "$m" 3) | - | - | $(st pagein_nolimit) |"
    done
    o=$(result seal openssl_us)
    for op in seal open; do
        m=$(result seal ${op}_us)
        dir=dec; [ $op = seal ] && dir=enc
        raw=$(result seal "raw_${dir}_us")
        echo "| $op, us per 4 KiB page, 1 thread | openssl speed aes-256-gcm | $(num "$o" 3) | $(num "$m" 3) | $(ratio "$m" "$o") | - | $(st seal) |"
        echo "| $op, us per 4 KiB page, 1 thread | raw EVP in-process | $(num "$raw" 3) | $(num "$m" 3) | $(ratio "$m" "$raw") | - | $(st seal) |"
    done
    for pol in moat moat+rearm CLOCK-W SFIFO CLOCK FIFO OPT; do
        v=$(result lru_sim "$pol")
        echo "| eviction policy $pol: misses, mean over traces x budgets | exact LRU | 1.000 | $(num "$v" 3) | $(num "$v" 3) | - | $(st lru_sim) |"
    done
    # What one page-table change costs while another thread of the process
    # runs on another CPU (a TLB shootdown): a fact of the machine, no target.
    for op in wp unwp zap zapv; do
        a=$(result tlb_cost ${op}_ns)
        w=$(result tlb_cost ${op}_sibling_ns)
        case $op in
        wp) label="write-protect one page (UFFDIO_WRITEPROTECT), ns" ;;
        unwp) label="lift a page's write-protection, ns" ;;
        zap) label="MADV_DONTNEED of one page, ns" ;;
        zapv) label="MADV_DONTNEED of 32 pages in one process_madvise, ns per page" ;;
        esac
        echo "| $label | no other thread running | $(num "$a" 0) | $(num "$w" 0) (sibling thread running) | $(ratio "$w" "$a") | - | $(st tlb_cost) |"
    done
    if [ -f "$out/redis_pagein.txt" ]; then
        echo
        echo "page-in over Redis ($(st redis_pagein)); targets: random pages/s >= 0.5x redis-benchmark GET rps, random p50 <= 2x one GET round trip:"
        echo
        grep -E '^\| (store|---|file|redis|cluster|cluster-replicas1|redis-4threads|cluster-4threads) ?\|' "$out/redis_pagein.txt"
    fi
    if [ -f "$out/programs.md" ]; then
        echo
        echo "real programs ($(st programs)), medians of $RUNS runs; targets: moat small budget <= 1.5x kernel swap, moat big budget < 1.1x plain:"
        echo
        sed -n '/^| program/,$p' "$out/programs.md"
    fi
    echo
    echo "(times: lower is better; a ratio above 1 means moat is slower. Wrong data, if any, is reported in the program's section.)"
} | tee "$out/summary.md"
for f in "$out"/pagein_*.txt "$out/firsttouch.txt"; do
    [ -f "$f" ] && grep -q "mismatched pages [1-9]\|did not hold" "$f" &&
        echo "bench.sh: WARNING: $(basename "$f" .txt) reported wrong data (lost writes or wrong reads)"
done
echo "full outputs: $out/"
exit 0
