#!/usr/bin/env bash
# test_run_config.sh - `moat run --config Occlum.json` and `moat config suggest`.
#
# Usage: test_run_config.sh BUILD_DIR SOURCE_DIR
#
# In every build: the options of `moat run` (help, usage errors), every
# malformed configuration of tests/data/config refused with exit 3 before
# anything runs and naming the field, and `moat config suggest` on
# statistics files written here (rules of docs/config.md, output checked
# number for number and accepted by `moat config check` once merged).
# Then runs of tests/prog_threads and tests/prog_mmap (built by CMake, so
# instrumented like the preload library in sanitizer builds, which is what
# lets this part run there too) under the guide's example and
# Occlum's template: the thread cap (EAGAIN beyond max_num_of_threads, slots
# given back when threads end), the user space cap, the user space Init
# committed at start (stats JSON: committed pages from the start, the budget
# still held, the heap's first allocations inside Init), --epc as the budget,
# the report lines, the "config" member of --stats-json, and suggest on it.
set -u
BUILD=${1:?build dir}
SRC=${2:?source dir}
BUILD=$(cd "$BUILD" && pwd)
SRC=$(cd "$SRC" && pwd)
MOAT=$BUILD/moat
DATA=$SRC/tests/data/config

if [ ! -x "$MOAT" ]; then
    echo "FAIL: $MOAT is missing"
    exit 1
fi
if ! command -v python3 >/dev/null; then
    echo "SKIP: test_run_config.sh needs python3"
    exit 77
fi

T=$(mktemp -d /tmp/moat-test-run-config.XXXXXX)
trap 'rm -rf "$T"' EXIT
fails=0
ok() { echo "ok   - $*"; }
bad() {
    echo "FAIL - $*"
    fails=$((fails + 1))
}
# expect RC DESCRIPTION -- ARGS...: run moat, stdout in $T/out, stderr in $T/err.
expect() {
    local want=$1 what=$2
    shift 3
    "$MOAT" "$@" >"$T/out" 2>"$T/err"
    local rc=$?
    if [ "$rc" -eq "$want" ]; then
        return 0
    fi
    bad "$what: exit $rc, expected $want"
    sed 's/^/    out: /' "$T/out" | head -10
    sed 's/^/    err: /' "$T/err" | head -10
    return 1
}
# has FILE TEXT: $T/FILE contains TEXT literally.
has() { grep -qF -- "$2" "$T/$1"; }
# jget FILE EXPR: a Python expression on the JSON document j of FILE.
jget() { python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"; }

# --- 1. options -------------------------------------------------------------------
expect 0 "moat run --help" -- run --help
for o in "--config FILE" "--edmm, --no-edmm" "--sgx-mode MODE" "--compat MODE" "--epc SIZE"; do
    if has out "$o"; then ok "moat run --help lists $o"; else bad "moat run --help lacks $o"; fi
done
expect 2 "--epc with --budget" -- run --epc 64MB --budget 64M -- true &&
    has err "give one" && ok "--epc and --budget together: usage error (2)"
expect 2 "--edmm without --config" -- run --edmm -- true &&
    has err "need --config" && ok "--edmm without --config: usage error (2)"
expect 2 "--edmm --no-edmm" -- run --config "$DATA/guide-example.json" --edmm --no-edmm -- true &&
    has err "contradict" && ok "--edmm with --no-edmm: usage error (2)"
expect 2 "--sgx-mode sim" -- run --config "$DATA/guide-example.json" --sgx-mode sim -- true &&
    has err "HW or SIM" && ok "--sgx-mode sim (lowercase): usage error (2)"
expect 2 "--epc 4K" -- run --epc 4KB -- true && ok "--epc below 64K: usage error (2)"
expect 3 "missing config" -- run --config "$T/nonexistent.json" -- true &&
    has err "nonexistent.json" && ok "--config of a file that does not exist: exit 3"

# --- 2. malformed configurations: exit 3, the field named, nothing run -------------
# file: a field (or text) the diagnostics must name
while read -r file field; do
    rm -f "$T/ran"
    if expect 3 "$file" -- run --config "$DATA/$file" -- touch "$T/ran"; then
        if ! has err "$field"; then
            bad "$file: the diagnostics do not name $field"
            sed 's/^/    err: /' "$T/err" | head -5
        elif [ -e "$T/ran" ]; then
            bad "$file: the program ran although the configuration is invalid"
        else
            ok "$file: exit 3 naming $field, program not run"
        fi
    fi
done <<'EOF'
truncated.json not valid JSON
trailing-comma.json not valid JSON
top-level-array.json JSON array
wrong-types.json resource_limits.user_space_size must be a size string
negative.json resource_limits.user_space_size "-300MB"
fractional.json resource_limits.user_space_size "1.5GB"
lowercase-units.json resource_limits.user_space_size "300mb"
overflow.json resource_limits.user_space_size "99999999999999999999MB"
init-above-max.json resource_limits.init_num_of_threads (100) is larger than resource_limits.max_num_of_threads (64)
user-init-above-max.json resource_limits.user_space_size (2GB) is larger than resource_limits.user_space_max_size
missing-required.json resource_limits.max_num_of_threads is missing
zero-threads.json resource_limits.max_num_of_threads
EOF
# The platform decides: the guide's example is valid everywhere; init above
# max is refused on EDMM too.
expect 3 "init-above-max --edmm" -- run --config "$DATA/init-above-max.json" --edmm -- true &&
    has err "on SGX2 hardware with EDMM" && ok "init-above-max.json --edmm: exit 3 on EDMM"

# --- 3. moat config suggest on statistics written here ------------------------------
# A run of the guide's example on EDMM that peaked at 412 MiB and 5 threads.
cat >"$T/edmm.json" <<'EOF'
{
  "pid": 1, "state": "exited", "exit_status": 0, "page_size": 4096,
  "budget_pages": 16384, "peak_committed_pages": 105472, "peak_resident_pages": 16384,
  "threads_live": 1, "threads_peak": 5,
  "config": {
    "file": "Occlum.json", "platform": "EDMM", "edmm": true, "sgx_mode": "HW", "compat": "guide",
    "user_space": {"init": 1048576, "max": 17179869184, "peak": 432013312, "headroom_pct": 97, "range": 17179869184},
    "threads": {"init": 2, "max": 4096, "peak": 5, "headroom_pct": 99},
    "epc": {"size": 67108864, "peak_resident": 67108864, "evicted_pages": 1234},
    "configured": {"kernel_space_stack_size": "1MB", "kernel_space_heap_size": "4MB", "kernel_space_heap_max_size": "40MB"}
  }
}
EOF
# suggest_is ARGS -- PYTHON-DICT: the printed resource_limits equals the dict.
suggest_is() {
    local args=() want
    while [ "$1" != "--" ]; do
        args+=("$1")
        shift
    done
    want=$2
    if ! expect 0 "moat config suggest ${args[*]}" -- config suggest "${args[@]}"; then
        return
    fi
    if python3 - "$T/out" "$want" <<'PY'; then
import json, sys
got = json.load(open(sys.argv[1]))
want = eval(sys.argv[2])
if list(got) != ["resource_limits"] or got["resource_limits"] != want:
    print("    got:  %s\n    want: %s" % (got, want))
    sys.exit(1)
PY
        ok "moat config suggest ${args[*]##*/}: $(tr -d ' \n' <"$T/out" | cut -c1-150)"
    else
        bad "moat config suggest ${args[*]}: wrong suggestion"
    fi
}
K='"kernel_space_stack_size": "1MB", "kernel_space_heap_size": "4MB", "kernel_space_heap_max_size": "40MB"'
# 412 MiB / (1 - 25%) = 549.3 MiB -> 550MB; 5 threads / 0.75 = 6.7 -> 7; init = the peak
suggest_is "$T/edmm.json" -- "{$K, 'user_space_size': '1MB', 'user_space_max_size': '550MB', 'init_num_of_threads': 5, 'max_num_of_threads': 7}"
suggest_is --headroom 0 "$T/edmm.json" -- "{$K, 'user_space_size': '1MB', 'user_space_max_size': '412MB', 'init_num_of_threads': 5, 'max_num_of_threads': 5}"
suggest_is --headroom=50 "$T/edmm.json" -- "{$K, 'user_space_size': '1MB', 'user_space_max_size': '824MB', 'init_num_of_threads': 5, 'max_num_of_threads': 10}"
# without EDMM: the static size is the maximum, no init and no max_size fields
suggest_is --no-edmm "$T/edmm.json" -- "{$K, 'user_space_size': '550MB', 'max_num_of_threads': 7}"
has err "412.0 MiB" && has err "thread peak 5" && ok "suggest says what it is based on (stderr)"
# the suggestion merged into Occlum's template is a valid configuration
"$MOAT" config suggest "$T/edmm.json" >"$T/sugg.json" 2>/dev/null
python3 - "$DATA/occlum-template.json" "$T/sugg.json" "$T/merged.json" <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))
t["resource_limits"] = json.load(open(sys.argv[2]))["resource_limits"]
json.dump(t, open(sys.argv[3], "w"), indent=4)
PY
for p in --edmm --no-edmm; do
    expect 0 "merged suggestion $p" -- config check $p "$T/merged.json" &&
        ok "the suggestion merged into occlum-template.json passes moat config check $p"
done
# more than 16 threads: init is held at the tool's 16; a huge peak at 4096
python3 - "$T/edmm.json" "$T/many.json" 40 <<'PY'
import json, sys
j = json.load(open(sys.argv[1])); j["config"]["threads"]["peak"] = int(sys.argv[3])
json.dump(j, open(sys.argv[2], "w"))
PY
suggest_is "$T/many.json" -- "{$K, 'user_space_size': '1MB', 'user_space_max_size': '550MB', 'init_num_of_threads': 16, 'max_num_of_threads': 54}"
python3 - "$T/edmm.json" "$T/huge.json" 4000 <<'PY'
import json, sys
j = json.load(open(sys.argv[1])); j["config"]["threads"]["peak"] = int(sys.argv[3])
json.dump(j, open(sys.argv[2], "w"))
PY
suggest_is "$T/huge.json" -- "{$K, 'user_space_size': '1MB', 'user_space_max_size': '550MB', 'init_num_of_threads': 16, 'max_num_of_threads': 4096}"
has err "4096" && ok "a thread suggestion above 4096 is held at the tool's maximum"
# a run without --config and without thread counts: EDMM assumed, no thread fields;
# a run that used nothing still gets 1MB
cat >"$T/plain.json" <<'EOF'
{"pid": 2, "page_size": 4096, "peak_committed_pages": 2560, "threads_peak": 0}
EOF
suggest_is "$T/plain.json" -- "{'user_space_size': '1MB', 'user_space_max_size': '14MB'}"
has err "assumed" && ok "suggest without a recorded platform says EDMM was assumed"
echo '{"peak_committed_pages": 0}' >"$T/zero.json"
suggest_is --no-edmm "$T/zero.json" -- "{'user_space_size': '1MB'}"
# errors
expect 3 "suggest on an Occlum.json" -- config suggest "$DATA/occlum-template.json" &&
    has err "not the statistics of a run" && ok "suggest on a file that is not run statistics: exit 3"
expect 3 "suggest on truncated JSON" -- config suggest "$DATA/truncated.json" &&
    ok "suggest on truncated JSON: exit 3"
expect 2 "suggest on a missing file" -- config suggest "$T/nonexistent.json" &&
    ok "suggest on a missing file: exit 2"
for h in 91 -1 abc 2.5; do
    expect 2 "--headroom $h" -- config suggest --headroom "$h" "$T/edmm.json" &&
        ok "suggest --headroom $h: usage error (2)"
done
expect 0 "suggest --help" -- config suggest --help && has out "--headroom PCT" &&
    ok "moat config suggest --help"

# --- 4. runs under the preload -------------------------------------------------------
PT=$BUILD/tests/prog_threads
PM=$BUILD/tests/prog_mmap
if [ ! -x "$PT" ] || [ ! -x "$PM" ] || [ ! -x "$BUILD/tests/prog_malloc" ] ||
    [ ! -f "$BUILD/libmoat_preload.so" ]; then
    bad "$PT, $PM, prog_malloc or libmoat_preload.so is missing"
    exit 1
fi
ls /dev/shm/ | grep '^moat-.*\.stats$' | sort >"$T/shm.before"

# The thread cap: run-small.json allows 4 threads (main included) without EDMM.
"$MOAT" run --config "$DATA/run-small.json" --stats-json "$T/small.json" -- "$PT" 6 >"$T/out" 2>"$T/err"
rc=$?
if [ $rc -eq 0 ] && has out "round 1: started 3 of 6: EAGAIN" && has out "round 2: started 3 of 6: EAGAIN"; then
    ok "max_num_of_threads 4: the 4th thread gets EAGAIN, and again after the first 3 ended"
else
    bad "thread cap: rc=$rc $(cat "$T/out")"
    sed 's/^/    err: /' "$T/err" | head -20
fi
for line in "on SGX hardware without EDMM: user space init 64MB, max 64MB; threads init 4, max 4" \
    "moat: user space peaked at" "moat: resident memory peaked at" "moat: suggested (25% headroom)"; do
    if has err "$line"; then ok "report: $line"; else bad "report lacks: $line"; fi
done
tp=$(jget "$T/small.json" 'j["threads_peak"]' 2>/dev/null)
if [ "$tp" = "4" ] && [ "$(jget "$T/small.json" 'j["config"]["threads"]["peak"]')" = "4" ] &&
    has err "threads peaked at 4: max_num_of_threads 4 is (nearly) exhausted"; then
    ok "thread peak 4 of 4 published, in the JSON and the report"
else
    bad "thread peak: threads_peak=$tp"
    grep threads "$T/err"
fi
if [ "$(jget "$T/small.json" '(j["config"]["platform"], j["config"]["user_space"]["max"], j["config"]["threads"]["max"], j["config"]["edmm"])')" = "('non-EDMM', 67108864, 4, False)" ]; then
    ok "--stats-json has the config member (platform, user space max, thread max)"
else
    bad "--stats-json config member: $(jget "$T/small.json" 'j.get("config")' 2>&1 | head -3)"
fi
if expect 0 "suggest on a real run" -- config suggest "$T/small.json" &&
    [ "$(jget "$T/out" 'sorted(j["resource_limits"])')" != "" ] && has out '"user_space_size"' &&
    has out '"kernel_space_heap_size": "32MB"'; then
    ok "moat config suggest on the run's statistics: $(tr -d ' \n' <"$T/out" | cut -c1-120)"
fi

# Programs above the cap in the template (32 threads without EDMM), and the
# guide's example on EDMM, where the tool's 4096 is the maximum.
"$MOAT" run --quiet --config "$DATA/occlum-template.json" -- "$PT" 40 >"$T/out" 2>"$T/err"
if has out "round 1: started 31 of 40: EAGAIN"; then
    ok "occlum-template.json (max_num_of_threads 32): 31 threads besides main, then EAGAIN"
else
    bad "occlum-template.json thread cap: $(cat "$T/out" "$T/err")"
fi
"$MOAT" run --config "$DATA/guide-example.json" --edmm -- "$PT" 100 >"$T/out" 2>"$T/err"
if has out "round 1: started 100 of 100: ok" &&
    has err "on SGX2 hardware with EDMM: user space init 1MB, max 16GB; threads init 2, max 4096" &&
    has err "user_space_max_size 600MB leaves" && has err "user_space_size 1MB keeps start-up fast"; then
    ok "guide-example.json --edmm: 100 threads allowed (max 4096), report against 600MB and 16GB"
else
    bad "guide-example.json --edmm: $(cat "$T/out")"
    sed 's/^/    err: /' "$T/err"
fi
"$MOAT" run --config "$DATA/guide-example.json" --no-edmm -- "$PT" 100 >"$T/out" 2>"$T/err"
if has out "round 1: started 63 of 100: EAGAIN" && has err "user space init 600MB, max 600MB; threads init 64, max 64"; then
    ok "guide-example.json --no-edmm: 64 threads (main included), user space 600MB static"
else
    bad "guide-example.json --no-edmm: $(cat "$T/out")"
    sed 's/^/    err: /' "$T/err"
fi
"$MOAT" run --config "$DATA/guide-example.json" --edmm --sgx-mode SIM -- "$PT" 70 >"$T/out" 2>"$T/err"
if has out "round 1: started 63 of 70: EAGAIN" && has err "simulation"; then
    ok "guide-example.json --edmm --sgx-mode SIM: SIM wins over EDMM, 64 threads"
else
    bad "--sgx-mode SIM: $(cat "$T/out")"
    sed 's/^/    err: /' "$T/err"
fi

# The user space cap and --epc: 100 MiB asked under a 64MB user space.
"$MOAT" run --config "$DATA/run-small.json" --epc 128MB --stats-json "$T/mm.json" -- "$PM" 100 >"$T/out" 2>"$T/err"
rc=$?
got=$(sed -n 's/^mapped \([0-9]*\) of 100 MiB: \(.*\)$/\1 \2/p' "$T/out")
if [ $rc -eq 0 ] && [ "${got#* }" = "ENOMEM" ] && [ "${got% *}" -le 64 ] && [ "${got% *}" -ge 16 ]; then
    ok "user_space_size 64MB: mmap fails with ENOMEM after ${got% *} MiB"
else
    bad "user space cap: rc=$rc '$got'"
    sed 's/^/    err: /' "$T/err" | head
fi
if [ "$(jget "$T/mm.json" 'j["budget_pages"]')" = "32768" ] && has err "of the 128.0 MiB EPC"; then
    ok "--epc 128MB is the budget (32768 pages) and the EPC of the report"
else
    bad "--epc 128MB: budget_pages=$(jget "$T/mm.json" 'j["budget_pages"]')"
fi
if [ "$(jget "$T/mm.json" 'j["config"]["user_space"]["peak"] >= 16 << 20')" = "True" ]; then
    ok "the user space peak of the mmap run is $(($(jget "$T/mm.json" 'j["config"]["user_space"]["peak"]') >> 20)) MiB"
else
    bad "user space peak: $(jget "$T/mm.json" 'j["config"]["user_space"]')"
fi

# User space Init committed at start (MOAT_USER_INIT).  Without EDMM Init =
# Max: run-small.json's 64MB are all committed from the start and stay so
# (committed never moves: nothing committed on demand, nothing given back),
# while touching 20 MiB under an 8MB EPC keeps resident memory within it.
"$MOAT" run --config "$DATA/run-small.json" --epc 8MB --stats-json "$T/init.json" -- "$PM" 20 >"$T/out" 2>"$T/err"
rc=$?
init=$(jget "$T/init.json" '(j["config"]["user_space"]["committed_at_start"], j["committed_pages"], j["peak_committed_pages"])' 2>/dev/null)
if [ $rc -eq 0 ] && has out "mapped 20 of 20 MiB: ok" && [ "$init" = "(67108864, 16384, 16384)" ] &&
    has err "moat: user space: 64.0 MiB committed at start, peak committed 64.0 MiB"; then
    ok "no EDMM: user_space_size 64MB committed at start (16384 pages, at exit and peak), in the report"
else
    bad "no EDMM Init: rc=$rc (committed_at_start, committed, peak committed) = $init"
    sed 's/^/    err: /' "$T/err" | head -20
fi
if [ "$(jget "$T/init.json" 'j["peak_resident_pages"] <= j["budget_pages"] == 2048 and j["evictions_written"] > 0')" = "True" ]; then
    ok "Init committed at start stays under the 8MB EPC: peak resident $(jget "$T/init.json" 'j["peak_resident_pages"]') pages, $(jget "$T/init.json" 'j["evictions_written"]') evicted"
else
    bad "budget with Init: $(jget "$T/init.json" '(j["budget_pages"], j["peak_resident_pages"], j["evictions_written"])')"
fi
# The user space peak is what the program touched, not the Init it was given.
if [ "$(jget "$T/init.json" '20 << 20 <= j["config"]["user_space"]["peak"] < 40 << 20')" = "True" ] &&
    has err "user_space_size 64MB leaves"; then
    ok "the user space peak is the 20 MiB touched ($(($(jget "$T/init.json" 'j["config"]["user_space"]["peak"]') >> 10)) KiB), not the 64 MiB committed"
else
    bad "user space peak with Init: $(jget "$T/init.json" 'j["config"]["user_space"]')"
fi
# EDMM, user_space_size 1MB: 1 MiB committed at start, and it is the heap's
# first memory: 600 KiB of malloc, freed and malloc'd again, commit little
# beyond it (at most the heap's header and descriptors, 64 pages here).
# Sanitizer builds link the program with the sanitizer's own malloc.
PMA=$BUILD/tests/prog_malloc
"$MOAT" run --config "$DATA/guide-example.json" --edmm --stats-json "$T/init.json" -- "$PMA" 600 600 >"$T/out" 2>"$T/err"
rc=$?
if [ "${MOAT_TEST_CONFIG:-plain}" = plain ]; then
    fits='256 <= j["committed_pages"] <= j["peak_committed_pages"] <= 256 + 64'
else
    fits='256 <= j["committed_pages"] <= j["peak_committed_pages"]'
fi
init=$(jget "$T/init.json" "(j['config']['user_space']['committed_at_start'], $fits)" 2>/dev/null)
if [ $rc -eq 0 ] && has out "malloc 1200 KiB: ok" && [ "$init" = "(1048576, True)" ] &&
    has err "moat: user space: 1.0 MiB committed at start"; then
    ok "EDMM: user_space_size 1MB committed at start (peak committed $(jget "$T/init.json" 'j["peak_committed_pages"]') pages)$([ "${MOAT_TEST_CONFIG:-plain}" = plain ] && echo ", the heap's first 600 KiB came from it")"
else
    bad "EDMM Init 1MB: rc=$rc $(cat "$T/out") $init $(jget "$T/init.json" '(j["committed_pages"], j["peak_committed_pages"])')"
    sed 's/^/    err: /' "$T/err" | head -20
fi
# A bad MOAT_USER_INIT stops the program with exit 4, as any bad variable.
MOAT_USER_INIT=12x "$MOAT" run -- "$PM" 1 >"$T/out" 2>"$T/err"
rc=$?
if [ $rc -eq 4 ] && has err "MOAT_USER_INIT=12x"; then
    ok "MOAT_USER_INIT=12x: moat does not start (exit 4), the variable named"
else
    bad "MOAT_USER_INIT=12x: rc=$rc $(head -3 "$T/err")"
fi

# No statistics block left behind.
# Only new blocks of dead processes count: tests running in parallel have
# blocks of their own while they run.
ls /dev/shm/ | grep '^moat-.*\.stats$' | sort >"$T/shm.after"
left=""
for b in $(comm -13 "$T/shm.before" "$T/shm.after"); do
    pid=${b#moat-}
    pid=${pid%.stats}
    kill -0 "$pid" 2>/dev/null || left="$left$b "
done
if [ -z "$left" ]; then
    ok "no /dev/shm/moat-*.stats left behind"
else
    bad "blocks left behind: $left"
fi

if [ $fails -eq 0 ]; then
    echo "test_run_config: all passed"
    exit 0
fi
echo "test_run_config: $fails failed"
exit 1
