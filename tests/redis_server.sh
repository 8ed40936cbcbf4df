# redis_server.sh - real redis-server processes for the shell tests, sourced
# by tests/test_store_*.sh: `redis_start [ARGS...]` starts one on 127.0.0.1
# at a free port (in $port, 20000-22767 so a cluster bus port, +10000, stays
# below the ephemeral range; retried if taken), with no persistence, in its
# own directory under $dir, and waits until it answers PING.  Every server
# started is killed, and $dir removed, at exit.  fail MESSAGE ends the test.
redis_dir=$(mktemp -d)
dir=$redis_dir
redis_pids=()
redis_cleanup() {
  for p in "${redis_pids[@]}"; do kill -9 "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$redis_dir"
}
trap redis_cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }

redis_start() {
  local pid
  for _ in $(seq 20); do
    port=$((20000 + RANDOM % 2768))
    redis-cli -p "$port" ping >/dev/null 2>&1 && continue
    mkdir -p "$redis_dir/$port"
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
      --dir "$redis_dir/$port" "$@" >"$redis_dir/$port/log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do
      kill -0 $pid 2>/dev/null || break
      if redis-cli -p "$port" ping >/dev/null 2>&1; then
        redis_pids+=($pid)
        return 0
      fi
      sleep 0.05
    done
    kill -9 $pid 2>/dev/null
    wait $pid 2>/dev/null
  done
  fail "could not start redis-server (see $redis_dir/*/log)"
}
