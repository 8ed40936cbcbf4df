#!/usr/bin/env bash
# test_store_exec.sh BUILD SRC - a redis store's keys do not outlive the
# images of a `moat run` that exec, fork or exit (src/store/cluster.c,
# "Instances left behind by exec and by exit without close").
#
# Against a real redis-server on loopback:
#  1. bash execs bash which execs prog_mmap, each image evicting pages under
#     a 2 MiB budget: each new image removes the keys of the one it replaced
#     (two log lines, each with evicted pages), and nothing is left after
#     the run: DBSIZE 0, no /dev/shm record naming this server.
#  2. python3 with evicted data forks children that exec and exit before it
#     (os.fork + os.execv, and subprocess): its data stays intact (its
#     output is right after the children ended), and nothing is left.
set -u
build=${1:?build dir}
src=${2:-$(dirname "$0")/..}
moat=$build/moat

case "${MOAT_TEST_CONFIG:-}" in
asan | tsan)
  echo "SKIP: test_store_exec.sh under MOAT_TEST_CONFIG=$MOAT_TEST_CONFIG: a sanitized" \
    "libmoat_preload.so cannot be preloaded into uninstrumented programs (bash, python3)"
  exit 77
  ;;
esac
if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
  echo "SKIP: redis-server/redis-cli not installed (scripts/deps.sh installs them)"
  exit 77
fi
if ! command -v python3 >/dev/null; then
  echo "SKIP: test_store_exec.sh needs python3"
  exit 77
fi
. "$src/tests/redis_server.sh"
redis_start
cli() { redis-cli -p "$port" "$@"; }
uri="redis://127.0.0.1:$port"
records() { grep -l "127.0.0.1:$port/" /dev/shm/moat-redis-"$(id -u)"-* 2>/dev/null; }

# 1. exec, exec.
MOAT_LOG=info "$moat" run -q --budget 2M --store "$uri" -- \
  bash -c 's=$(seq 1 300000); exec bash -c "t=\$(seq 1 300000); exec $0 16"' \
  "$build/tests/prog_mmap" >"$dir/exec.out" 2>"$dir/exec.err"
rc=$?
cat "$dir/exec.out"
[ $rc = 0 ] || fail "exec chain exited $rc: $(tail -5 "$dir/exec.err")"
[ "$(cat "$dir/exec.out")" = "mapped 16 of 16 MiB: ok" ] || fail "exec chain: wrong output"
removed=$(sed -n "s/.*removed \([0-9]*\) keys .* of the image this process exec'd from.*/\1/p" \
  "$dir/exec.err")
echo "keys removed at each exec: $(echo $removed)"
[ "$(echo "$removed" | wc -w)" = 2 ] || fail "expected 2 exec clean-ups, got: $removed"
for n in $removed; do
  [ "$n" -gt 1 ] || fail "an image replaced by exec had no evicted pages ($n keys)"
done
[ "$(cli dbsize)" = 0 ] || fail "exec chain left $(cli dbsize) keys"
[ -z "$(records)" ] || fail "exec chain left records: $(records)"
echo "ok   - exec chain: each image's keys removed, DBSIZE 0"

# 2. fork + exec children that exit before the parent.
cat >"$dir/fork.py" <<'EOF'
import os, subprocess, sys
data = [str(i) * 10 for i in range(300000)]
for _ in range(3):
    pid = os.fork()
    if pid == 0:
        os.execv("/bin/sh", ["sh", "-c", "exec true"])
    os.waitpid(pid, 0)
    subprocess.run(["sh", "-c", "exec true"], check=True)
ok = all(s == str(i) * 10 for i, s in enumerate(data))
print("intact" if ok else "CORRUPT", sum(len(s) for s in data))
EOF
expect=$(python3 -c 'print("intact", sum(len(str(i) * 10) for i in range(300000)))')
"$moat" run --budget 16M --store "$uri" -- python3 "$dir/fork.py" >"$dir/fork.out" \
  2>"$dir/fork.err"
rc=$?
cat "$dir/fork.out"
[ $rc = 0 ] || fail "fork run exited $rc: $(tail -5 "$dir/fork.err")"
[ "$(cat "$dir/fork.out")" = "$expect" ] || fail "fork run: expected '$expect'"
evicted=$(sed -n 's/.*pages evicted \([0-9]*\).*/\1/p' "$dir/fork.err")
[ "${evicted:-0}" -gt 0 ] || fail "the parent evicted nothing: $(cat "$dir/fork.err")"
[ "$(cli dbsize)" = 0 ] || fail "fork run left $(cli dbsize) keys"
[ -z "$(records)" ] || fail "fork run left records: $(records)"
echo "ok   - fork+exec children: parent's $evicted evicted pages intact, DBSIZE 0"
echo "2 passed, 0 failed"
