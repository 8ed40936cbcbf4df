#!/usr/bin/env bash
# test_store_gc.sh BUILD SRC - `moat store gc` against a real redis-server:
# the keys of a dead instance go, a live instance's keys and other keys stay.
set -u
build=$1
moat=$build/moat
if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
  echo "SKIP: redis-server/redis-cli not installed (scripts/deps.sh installs them)"
  exit 77
fi
src=${2:-$(dirname "$0")/..}
. "$src/tests/redis_server.sh"
redis_start
cli() { redis-cli -p "$port" "$@"; }
dead=00000000deadbeef
live=00000000000a11fe
cli set "moat:{$dead}:0" x >/dev/null
cli set "moat:{$dead}:7" y >/dev/null
cli set "moat:{$live}:0" z >/dev/null
cli set "moat:{$live}:alive" 123 ex 60 >/dev/null
cli set unrelated keep >/dev/null
out=$("$moat" store gc "redis://127.0.0.1:$port") || fail "gc exited $?"
echo "$out"
[ "$out" = "removed 2 keys of 1 dead instances" ] || fail "unexpected output: $out"
[ "$(cli exists "moat:{$dead}:0")" = 0 ] || fail "dead instance's key left"
[ "$(cli exists "moat:{$live}:0")" = 1 ] || fail "live instance's key removed"
[ "$(cli exists unrelated)" = 1 ] || fail "an unrelated key was removed"
out=$("$moat" store gc "redis://127.0.0.1:$port") || fail "second gc exited $?"
[ "$out" = "removed 0 keys of 0 dead instances" ] || fail "second gc: $out"
"$moat" store gc "redis://127.0.0.1:1" 2>/dev/null
[ $? = 4 ] || fail "no server: expected exit 4"
"$moat" store gc "not-a-uri" 2>/dev/null
[ $? = 2 ] || fail "bad URI: expected exit 2"
"$moat" store frobnicate 2>/dev/null
[ $? = 2 ] || fail "unknown subcommand: expected exit 2"
echo "1 passed, 0 failed"
