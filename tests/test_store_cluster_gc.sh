#!/usr/bin/env bash
# test_store_cluster_gc.sh BUILD SRC - `moat store gc redis+cluster://...`
# against a real Redis Cluster of three primaries on loopback: the keys of a
# dead instance go from every primary, a live instance's keys and other keys
# stay.
set -u
build=$1
moat=$build/moat
for t in redis-server redis-cli; do
  command -v $t >/dev/null || { echo "SKIP: $t not installed (scripts/deps.sh installs it)"; exit 77; }
done
src=${2:-$(dirname "$0")/..}
. "$src/tests/redis_server.sh"
ports=()
for _ in 1 2 3; do
  redis_start --cluster-enabled yes --cluster-config-file nodes.conf
  ports+=("$port")
done
redis-cli --cluster create $(printf '127.0.0.1:%s ' "${ports[@]}") --cluster-replicas 0 \
  --cluster-yes >"$dir/create.log" 2>&1 || fail "cluster create: $(cat "$dir/create.log")"
for _ in $(seq 100); do
  ok=1
  for p in "${ports[@]}"; do redis-cli -p "$p" cluster info | grep -q cluster_state:ok || ok=0; done
  [ $ok = 1 ] && break
  sleep 0.1
done
[ $ok = 1 ] || fail "the cluster did not come up"
cli() { redis-cli -c -p "${ports[0]}" "$@"; }
dead=00000000deadbeef
live=00000000000a11fe
# 64 records of the dead instance, in 32 hash tags: spread over the primaries
for n in $(seq 0 63); do cli set "moat:{$dead:$((n / 2))}:$n" x >/dev/null; done
cli set "moat:{$live:0}:0" z >/dev/null
cli set "moat:{$live}:alive" 123 ex 60 >/dev/null
cli set unrelated keep >/dev/null
holders=0
for p in "${ports[@]}"; do
  [ "$(redis-cli -p "$p" --scan --pattern "moat:{$dead*" | wc -l)" -gt 0 ] && holders=$((holders + 1))
done
[ $holders -ge 2 ] || fail "the dead instance's keys are not spread ($holders nodes)"
uri="redis+cluster://127.0.0.1:${ports[1]}"
out=$("$moat" store gc "$uri") || fail "gc exited $?"
echo "$out"
[ "$out" = "removed 64 keys of 1 dead instances" ] || fail "unexpected output: $out"
for p in "${ports[@]}"; do
  [ "$(redis-cli -p "$p" --scan --pattern "moat:{$dead*" | wc -l)" = 0 ] || fail "dead keys left on $p"
done
[ "$(cli exists "moat:{$live:0}:0")" = 1 ] || fail "live instance's key removed"
[ "$(cli exists unrelated)" = 1 ] || fail "an unrelated key was removed"
out=$("$moat" store gc "$uri") || fail "second gc exited $?"
[ "$out" = "removed 0 keys of 0 dead instances" ] || fail "second gc: $out"
"$moat" store gc "redis+cluster://127.0.0.1:1" 2>/dev/null
[ $? = 4 ] || fail "no server: expected exit 4"
"$moat" store gc "redis+cluster://127.0.0.1" 2>/dev/null
[ $? = 2 ] || fail "bad URI: expected exit 2"
echo "1 passed, 0 failed"
