#!/usr/bin/env bash
# test_alloc_preload.sh - libmoat_malloc.so as a drop-in malloc: real
# programs (ls, sort, python3 with threads, a forking shell pipeline) give
# the same output with it preloaded as without, and moat really served them
# (MOAT_ALLOC_STATS=1 prints its table).  A capped heap refuses memory past
# its cap instead of growing.
#   args: BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$(cd "${1:?build dir}" && pwd)
lib=$build/src/alloc/libmoat_malloc.so
if [[ ! -e $lib ]]; then
  echo "SKIP: $lib was not built" >&2
  exit 77
fi
tmp=$(mktemp -d)
py=$(command -v /usr/bin/python3 || command -v python3)
trap 'rm -rf "$tmp"' EXIT
fail=0

same() { # same NAME CMD...: output with and without the drop-in
  local name=$1
  shift
  "$@" >"$tmp/plain.$name" 2>&1
  LD_PRELOAD=$lib "$@" >"$tmp/moat.$name" 2>&1
  if cmp -s "$tmp/plain.$name" "$tmp/moat.$name"; then
    echo "ok: $name gives the same output ($(wc -c <"$tmp/plain.$name") bytes)"
  else
    echo "FAIL: $name differs with libmoat_malloc.so:" >&2
    diff "$tmp/plain.$name" "$tmp/moat.$name" | head -20 >&2 || true
    fail=1
  fi
}

# a few MiB of lines to sort: many small allocations, some large buffers
"$py" -c '
import random
random.seed(7)
for i in range(200000):
    print("".join(random.choice("abcdefghij") for _ in range(random.randint(1, 60))))
' >"$tmp/lines"

same ls ls -la /usr/bin /usr/lib
same sort sort "$tmp/lines"
same sort-parallel sort --parallel=2 -S 8M "$tmp/lines"
same python-threads "$py" -c '
import threading, hashlib, json
out = {}
def work(n):
    d = {}
    for i in range(30000):
        d[str(i * n)] = [i] * (i % 17) + [str(i)] * (i % 5)
    blob = json.dumps(d, sort_keys=True).encode()
    out[n] = hashlib.sha256(blob).hexdigest()
ts = [threading.Thread(target=work, args=(n,)) for n in range(1, 7)]
for t in ts: t.start()
for t in ts: t.join()
for k in sorted(out): print(k, out[k])
'
same shell-pipeline bash -c "cat '$tmp/lines' | tr a-e A-E | sort | uniq -c | sort -n | tail -5"
same python-fork "$py" -c '
import os
for i in range(20):
    pid = os.fork()
    if pid == 0:
        x = [bytearray(i * 1000) for i in range(200)]
        os._exit(len(x) % 7)
    _, st = os.waitpid(pid, 0)
    print(i, os.WEXITSTATUS(st))
'

# moat served them: its statistics table appears at exit
if LD_PRELOAD=$lib MOAT_ALLOC_STATS=1 "$py" -c 'print(len([str(i) for i in range(100000)]))' \
  2>"$tmp/stats" | grep -q 100000 && grep -q "moat alloc: heap" "$tmp/stats"; then
  echo "ok: MOAT_ALLOC_STATS=1 shows moat's table ($(grep -c . "$tmp/stats") lines)"
else
  echo "FAIL: no moat statistics at exit" >&2
  cat "$tmp/stats" >&2
  fail=1
fi

# a capped heap: python cannot take 64 MiB under a 16 MiB cap - MemoryError,
# not growth; and it still works for small things
out=$(LD_PRELOAD=$lib MOAT_ALLOC_LIMIT=16M "$py" -c '
try:
    b = bytearray(64 << 20)
    print("allocated")
except MemoryError:
    print("refused")
print(sum(range(1000)))
' 2>&1 || true)
if [[ $out == *refused*499500* ]]; then
  echo "ok: MOAT_ALLOC_LIMIT=16M refuses a 64 MiB buffer with MemoryError"
else
  echo "FAIL: capped heap: $out" >&2
  fail=1
fi

exit $fail
