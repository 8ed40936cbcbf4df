#!/usr/bin/env bash
# redis_pagein.sh - moat's page-in over Redis next to what Redis gives any
# client, in one run on this machine:
#   - redis-benchmark -t set,get -d 4096 against one server and against a
#     Redis Cluster (three primaries, one replica each, on loopback): with
#     50 clients (the server's throughput ceiling) and with 1 client (one
#     GET round trip: the latency floor);
#   - bench/redis_pagein (build/bench) against the local file store, the
#     single server, the cluster, and the cluster with replicas=1 (WAIT after
#     every batch of evictions): populate time (all evictions), page-in
#     p50/p99 per page visit and pages a second, sequential and random;
#     then the random pass by 4, 16 and 50 faulting threads (batched
#     page-in: the faults of one userfaultfd read in one submission), and
#     by 16 with batching off (MOAT_FAULT_BATCH=0) for comparison;
# and prints the ratios the issue sets targets for: moat's random page-in
# throughput / redis-benchmark's GET throughput (target >= 0.5), against 50
# clients (the server's ceiling) and against 1 client (one request in
# flight, as one faulting thread has), and moat's random p50 / one GET
# round trip (target <= 2).
#
# Usage: bench/redis_pagein.sh [BUILD_DIR]    (default <repo>/build-bench)
# Environment: SIZE=64M BUDGET=16M (redis_pagein), N=100000 (requests).
# Servers are started on loopback in a temporary directory and stopped at
# exit.  Exit 77 when redis-server, redis-cli or redis-benchmark is missing.
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build-bench}
SIZE=${SIZE:-64M}
BUDGET=${BUDGET:-16M}
N=${N:-100000}
bin=$build/bench/redis_pagein
for t in redis-server redis-cli redis-benchmark; do
    command -v $t >/dev/null || { echo "redis_pagein.sh: SKIP: $t is not installed (Debian: redis-server, redis-tools)"; exit 77; }
done
[ -x "$bin" ] || { echo "redis_pagein.sh: $bin is not built (ninja -C $build redis_pagein)"; exit 1; }

# Servers: tests/redis_server.sh (redis_start: a free port in $port, killed
# at exit with their directory $redis_dir).
. "$root/tests/redis_server.sh"
tmp=$redis_dir

redis_start
single=$port
cports=()
for _ in 1 2 3 4 5 6; do
    redis_start --cluster-enabled yes --cluster-config-file nodes.conf \
        --cluster-node-timeout 1000 --repl-diskless-sync-delay 0
    cports+=("$port")
done
redis-cli --cluster create $(printf '127.0.0.1:%s ' "${cports[@]}") --cluster-replicas 1 \
    --cluster-yes >"$tmp/create.log" 2>&1 || { cat "$tmp/create.log"; exit 1; }
for _ in $(seq 300); do
    ok=1
    for p in "${cports[@]}"; do
        redis-cli -p "$p" cluster info | grep -q cluster_state:ok || ok=0
        redis-cli -p "$p" info replication | grep -qE "role:master|master_link_status:up" || ok=0
    done
    [ $ok = 1 ] && break
    sleep 0.1
done

echo "== machine: $(nproc) cpus, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), Linux $(uname -r)"
echo "== redis: $(redis-server --version | awk '{ print $3 }'), single server :$single, cluster :${cports[*]}"

# rb NAME ARGS... -> "set_rps get_rps get_p50_ms"
rb() {
    local name=$1
    shift
    redis-benchmark "$@" -t set,get -d 4096 --csv 2>/dev/null >"$tmp/$name.csv"
    awk -F'","' '/^"SET/ { s = $2 } /^"GET/ { g = $2; p = $5 } END { gsub(/"/, "", p); printf "%s %s %s\n", s, g, p }' "$tmp/$name.csv"
}
read -r s50_set s50_get s50_p50 < <(rb single50 -p "$single" -n "$N" -c 50)
read -r s1_set s1_get s1_p50 < <(rb single1 -p "$single" -n $((N / 5)) -c 1)
read -r c50_set c50_get c50_p50 < <(rb cluster50 --cluster -p "${cports[0]}" -n "$N" -c 50)
read -r c1_set c1_get c1_p50 < <(rb cluster1 --cluster -p "${cports[0]}" -n $((N / 5)) -c 1)
echo "== redis-benchmark -d 4096, requests/s (GET p50):"
echo "   single  50 clients: SET $s50_set, GET $s50_get ($s50_p50 ms); 1 client: GET $s1_get ($s1_p50 ms)"
echo "   cluster 50 clients: SET $c50_set, GET $c50_get ($c50_p50 ms); 1 client: GET $c1_get ($c1_p50 ms)"

runp() { # runp LABEL URI [ARGS...] -> the RESULT line
    local label=$1 uri=$2
    shift 2
    "$bin" --label "$label" ${uri:+--store "$uri"} --size "$SIZE" --budget "$BUDGET" "$@" |
        tee "$tmp/$label.txt" >&2
    grep '^RESULT' "$tmp/$label.txt"
}
get() { echo "$1" | tr ' ' '\n' | awk -F= -v k="$2" '$1 == k { print $2 }'; }
export TMPDIR=$tmp
rf=$(runp file "")
rs=$(runp redis "redis://127.0.0.1:$single")
rc=$(runp cluster "redis+cluster://127.0.0.1:${cports[0]},127.0.0.1:${cports[1]}")
rr=$(runp cluster-replicas1 "redis+cluster://127.0.0.1:${cports[0]},127.0.0.1:${cports[1]}?replicas=1")
# The random pass by 4, 16 and 50 threads (2 fault handlers, the default): up
# to that many page-ins in flight, loaded in batches (one store submission
# for the faults of one userfaultfd read); and 16 threads with batching off
# (MOAT_FAULT_BATCH=0): the baseline of one page-in per handler at a time.
rs4=$(runp redis-4threads "redis://127.0.0.1:$single" --threads 4)
rc4=$(runp cluster-4threads "redis+cluster://127.0.0.1:${cports[0]},127.0.0.1:${cports[1]}" --threads 4)
rs16=$(runp redis-16threads "redis://127.0.0.1:$single" --threads 16)
rc16=$(runp cluster-16threads "redis+cluster://127.0.0.1:${cports[0]},127.0.0.1:${cports[1]}" --threads 16)
rs16u=$(MOAT_FAULT_BATCH=0 runp redis-16threads-unbatched "redis://127.0.0.1:$single" --threads 16)
rc16u=$(MOAT_FAULT_BATCH=0 runp cluster-16threads-unbatched "redis+cluster://127.0.0.1:${cports[0]},127.0.0.1:${cports[1]}" --threads 16)
rf16=$(runp file-16threads "" --threads 16)
# 50 faulting threads: as many requests in flight as redis-benchmark's 50
# clients, the like-for-like comparison with its throughput.
rs50=$(runp redis-50threads "redis://127.0.0.1:$single" --threads 50)
rc50=$(runp cluster-50threads "redis+cluster://127.0.0.1:${cports[0]},127.0.0.1:${cports[1]}" --threads 50)

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b <= 0) print "-"; else printf "%.2f", a / b }'; }
echo
echo "## page-in over Redis: $SIZE working set, $BUDGET budget, $(date -u '+%Y-%m-%d %H:%M UTC')"
echo
echo "| store | populate s |  seq p50 us | seq p99 us | seq pages/s | random p50 us | random p99 us | random pages/s | faults a batch | random pages/s / GET rps (50 clients) | random pages/s / GET rps (1 client) | random p50 / GET p50 (1 client) |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for row in "file|$rf|||" "redis|$rs|$s50_get|$s1_get|$s1_p50" "cluster|$rc|$c50_get|$c1_get|$c1_p50" \
    "cluster-replicas1|$rr|$c50_get|$c1_get|$c1_p50" "redis-4threads|$rs4|$s50_get|$s1_get|$s1_p50" \
    "cluster-4threads|$rc4|$c50_get|$c1_get|$c1_p50" "file-16threads|$rf16|||" \
    "redis-16threads|$rs16|$s50_get|$s1_get|$s1_p50" "redis-16threads-unbatched|$rs16u|$s50_get|$s1_get|$s1_p50" \
    "cluster-16threads|$rc16|$c50_get|$c1_get|$c1_p50" "cluster-16threads-unbatched|$rc16u|$c50_get|$c1_get|$c1_p50" \
    "redis-50threads|$rs50|$s50_get|$s1_get|$s1_p50" "cluster-50threads|$rc50|$c50_get|$c1_get|$c1_p50"; do
    IFS='|' read -r name r get50 get1 p50ms <<<"$row"
    rp=$(get "$r" random_pages_s)
    rl=$(get "$r" random_p50_us)
    gl=$(awk -v m="$p50ms" 'BEGIN { if (m != "") printf "%.1f", m * 1000 }')
    echo "| $name | $(get "$r" populate_s) | $(get "$r" seq_p50_us) | $(get "$r" seq_p99_us) | $(get "$r" seq_pages_s) | $rl | $(get "$r" random_p99_us) | $rp | $(get "$r" batch) | $(ratio "$rp" "$get50") | $(ratio "$rp" "$get1") | $(ratio "$rl" "$gl") |"
done
echo
echo "redis-benchmark GET: single $s50_get rps (50 clients), p50 $s1_p50 ms (1 client); cluster $c50_get rps, p50 $c1_p50 ms"
for r in "$rf" "$rs" "$rc" "$rr" "$rs4" "$rc4" "$rf16" "$rs16" "$rs16u" "$rc16" "$rc16u" "$rs50" "$rc50"; do
    [ "$(get "$r" wrong)" = 0 ] || echo "redis_pagein.sh: WARNING: wrong data or no result: $r"
done
exit 0
