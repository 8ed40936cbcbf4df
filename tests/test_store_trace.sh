#!/usr/bin/env bash
# test_store_trace.sh BUILD SRC - the redis store's per-node statistics in
# `moat run`: a program under moat with a redis:// store on a real
# redis-server writes 64 MiB over an 8 MiB budget; the summary has the
# store's line and one per node, --stats-json has them (store_node), and
# `--trace FILE` writes FILE.nodes.csv (one
# row per node per sample: the node's address, the pages it holds, its
# writes batched into fewer round trips), and `moat plot` draws it.  With a
# file store no nodes' file is written.
set -u
build=$1
moat=$build/moat
prog=$build/tests/prog_mmap
case "${MOAT_TEST_CONFIG:-}" in
asan | tsan)
  echo "SKIP: under MOAT_TEST_CONFIG=$MOAT_TEST_CONFIG a sanitized libmoat_preload.so is not preloaded (see test_run.sh)"
  exit 77
  ;;
esac
if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
  echo "SKIP: redis-server/redis-cli not installed (scripts/deps.sh installs them)"
  exit 77
fi
[ -x "$prog" ] || { echo "FAIL: $prog is not built"; exit 1; }
src=${2:-$(dirname "$0")/..}
. "$src/tests/redis_server.sh"
redis_start

"$moat" run --budget 8M --store "redis://127.0.0.1:$port" --trace "$dir/t.csv" \
  --trace-interval 20 --stats-json "$dir/s.json" -- "$prog" 64 >"$dir/out" 2>&1 ||
  fail "moat run: $(cat "$dir/out")"
cat "$dir/out"
grep -q "^mapped 64 of 64 MiB: ok" "$dir/out" || fail "the program did not finish"
grep -q "^moat: redis store: 1 node, [0-9]* round trips" "$dir/out" || fail "no store line in the summary"
grep -q "^moat:   node 127.0.0.1:$port: [0-9]* pages" "$dir/out" || fail "no node line in the summary"
nodes=$dir/t.csv.nodes.csv
[ -f "$nodes" ] || fail "no $nodes"
head -1 "$nodes" | grep -q '^time_s,node,addr,primary,pages,bytes,reads,writes,' || fail "nodes header: $(head -1 "$nodes")"
rows=$(($(wc -l <"$nodes") - 1))
[ "$rows" -ge 2 ] || fail "only $rows rows in $nodes"
# time_s,node,addr,primary,pages,bytes,reads,writes,...,round_trips(11)
IFS=, read -r _ node addr primary pages bytes _ writes _ _ rtt _ < <(tail -1 "$nodes")
[ "$node" = 0 ] && [ "$addr" = "127.0.0.1:$port" ] && [ "$primary" = 1 ] || fail "last row: $(tail -1 "$nodes")"
[ "$writes" -ge 14000 ] || fail "last row: $writes writes, expected >= 14000 (56 MiB evicted)"
[ "$pages" -gt 0 ] && [ "$bytes" = $((pages * 4128)) ] || fail "last row: $pages pages, $bytes bytes"
[ "$rtt" -gt 0 ] && [ "$rtt" -lt "$writes" ] || fail "last row: $rtt round trips for $writes writes (not batched?)"
# --stats-json has the same node, with its final counters.
if command -v python3 >/dev/null; then
  python3 - "$dir/s.json" "127.0.0.1:$port" <<'PY' || fail "--stats-json store_node: $(cat "$dir/s.json")"
import json, sys
j = json.load(open(sys.argv[1]))
n = j["store_node"]
assert len(n) == 1 and n[0]["addr"] == sys.argv[2] and n[0]["primary"], n
assert n[0]["writes"] >= 14000 and n[0]["round_trips"] < n[0]["writes"], n
assert j["store_nodes"] == 1 and j["store_round_trips"] > 0, j
PY
  echo "ok - --stats-json lists the node"
fi
# The times never go back, and the node's writes never decrease.
awk -F, 'NR > 1 { if ($1 < t || $8 < w) bad = 1; t = $1; w = $8 } END { exit bad }' "$nodes" ||
  fail "rows out of order"
echo "ok - $rows node rows, last: $pages pages, $writes writes in $rtt round trips"
if command -v gnuplot >/dev/null; then
  "$moat" plot "$dir/t.csv" -o "$dir/t.svg" || fail "moat plot failed"
  grep -q "sealed pages each node holds" "$dir/t.svg" || fail "the plot has no nodes panel"
  echo "ok - moat plot drew the nodes panel"
fi
# A file store has no nodes: no nodes' file.
"$moat" run --budget 8M --trace "$dir/f.csv" -- "$prog" 16 >"$dir/fout" 2>&1 || fail "file store run: $(cat "$dir/fout")"
[ ! -e "$dir/f.csv.nodes.csv" ] || fail "a nodes' file for a file store"
grep -q "redis store" "$dir/fout" && fail "a store line for a file store"
echo "1 passed, 0 failed"
