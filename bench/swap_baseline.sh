#!/usr/bin/env bash
# swap_baseline.sh - the kernel's own swap as the baseline for moat's paging.
#
# Runs `pagein_plain --mode plain` (bench/pagein.c built without libmoat)
# inside a memory cgroup whose limit is moat's budget plus a small slack, with
# a swap file made for the occasion, so the kernel pages the same working set
# through the same disk that moat's file store uses.  Prints pagein's report
# and its RESULT line, the cgroup's peak usage and the swap traffic.
#
# Usage (root): bench/swap_baseline.sh [BUILD_DIR]      (default build-bench)
# Environment:  SIZE=256M BUDGET=64M SLACK=4M RUNS=3 PASSES=3 SEED=1
#               SWAP_SIZE=1G SWAP_DIR=/var/tmp SWAPPINESS=60 PAGEIN=path
#
# The slack (default 4 MiB) is for what the kernel charges to the cgroup
# besides the working set and moat's budget does not count: the program's
# page tables (~0.5 MiB for 256 MiB), its 256 KiB permutation array, stack,
# libc data and swap-cache pages in flight.
#
# cgroup v2 is used when its memory controller is available (it is enabled in
# the root's subtree_control if needed); otherwise a cgroup v1 memory
# hierarchy (memory.limit_in_bytes; memsw unlimited).  If neither exists, or
# not root, or the swap file cannot be enabled, the script says why and exits
# 77 (skipped).  The cgroup, the swapon and the swap file are always undone
# on exit (trap).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
BUILD=${1:-$here/../build-bench}
PAGEIN=${PAGEIN:-$BUILD/bench/pagein_plain}
SIZE=${SIZE:-256M}
BUDGET=${BUDGET:-64M}
SLACK=${SLACK:-4M}
RUNS=${RUNS:-3}
PASSES=${PASSES:-3}
SEED=${SEED:-1}
SWAP_SIZE=${SWAP_SIZE:-1G}
SWAP_DIR=${SWAP_DIR:-/var/tmp}
SWAPPINESS=${SWAPPINESS:-60}

skip() {
    echo "swap_baseline: SKIPPED: $*" >&2
    exit 77
}

to_bytes() { # 64M -> 67108864 (binary units)
    local v=${1%iB} mul=1
    v=${v%B}
    case $v in
    *[kK]) mul=1024 v=${v%?} ;;
    *[mM]) mul=$((1024 * 1024)) v=${v%?} ;;
    *[gG]) mul=$((1024 * 1024 * 1024)) v=${v%?} ;;
    esac
    [[ $v =~ ^[0-9]+$ ]] || {
        echo "swap_baseline: bad size '$1'" >&2
        exit 2
    }
    echo $((v * mul))
}

[ "$(id -u)" = 0 ] || skip "needs root (swapon and cgroups)"
[ -x "$PAGEIN" ] || {
    echo "swap_baseline: $PAGEIN not found; build it: cmake --build $BUILD --target pagein_plain" >&2
    exit 2
}
for tool in mkswap swapon swapoff; do
    command -v $tool >/dev/null || skip "$tool is missing (apt-get install util-linux)"
done

budget_bytes=$(to_bytes "$BUDGET")
limit_bytes=$((budget_bytes + $(to_bytes "$SLACK")))

CG=""
SWAPFILE=""
cleanup() {
    set +e
    if [ -n "$CG" ] && [ -d "$CG" ]; then
        # Only the benchmark can be in there; make sure it is gone.
        for pid in $(cat "$CG/cgroup.procs" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            rmdir "$CG" 2>/dev/null && break
            sleep 0.2
        done
        [ -d "$CG" ] && echo "swap_baseline: could not remove cgroup $CG" >&2
    fi
    if [ -n "$SWAPFILE" ]; then
        swapoff "$SWAPFILE" 2>/dev/null
        rm -f "$SWAPFILE"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the cgroup ------------------------------------------------------------
v2=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/mounts)
v1=$(awk '$3 == "cgroup" && $4 ~ /(^|,)memory(,|$)/ { print $2; exit }' /proc/mounts)
cgver=""
if [ -n "$v2" ] && grep -qw memory "$v2/cgroup.controllers" 2>/dev/null; then
    if ! grep -qw memory "$v2/cgroup.subtree_control"; then
        echo "+memory" >"$v2/cgroup.subtree_control" ||
            skip "cannot enable the memory controller in $v2/cgroup.subtree_control"
    fi
    cgver=v2
    CG=$v2/moat-swap-bench.$$
elif [ -n "$v1" ]; then
    cgver=v1
    CG=$v1/moat-swap-bench.$$
else
    skip "no cgroup v2 memory controller and no cgroup v1 memory hierarchy is mounted"
fi
mkdir "$CG" || skip "cannot create $CG"
if [ $cgver = v2 ]; then
    echo "$limit_bytes" >"$CG/memory.max"
    if [ -e "$CG/memory.swap.max" ]; then
        echo max >"$CG/memory.swap.max"
    else
        echo "swap_baseline: note: no memory.swap.max (swap accounting off): swap is unlimited" >&2
    fi
    swappiness="global vm.swappiness=$(cat /proc/sys/vm/swappiness)"
    [ "$(cat /proc/sys/vm/swappiness)" != 0 ] ||
        echo "swap_baseline: warning: vm.swappiness is 0; the kernel may OOM instead of swapping" >&2
else
    echo "$limit_bytes" >"$CG/memory.limit_in_bytes"
    [ -w "$CG/memory.memsw.limit_in_bytes" ] && echo -1 >"$CG/memory.memsw.limit_in_bytes"
    echo "$SWAPPINESS" >"$CG/memory.swappiness"
    swappiness="memory.swappiness=$(cat "$CG/memory.swappiness")"
fi

# --- the swap file -----------------------------------------------------------
mkdir -p "$SWAP_DIR"
SWAPFILE=$(mktemp "$SWAP_DIR/moat-swap-bench.XXXXXX")
chmod 600 "$SWAPFILE"
swap_bytes=$(to_bytes "$SWAP_SIZE")
make_swap() { # $1 = fallocate | dd
    : >"$SWAPFILE"
    if [ "$1" = fallocate ]; then
        fallocate -l "$swap_bytes" "$SWAPFILE" 2>/dev/null || return 1
    else
        dd if=/dev/zero of="$SWAPFILE" bs=1M count=$((swap_bytes >> 20)) status=none || return 1
    fi
    mkswap -q "$SWAPFILE" >/dev/null && swapon -p 32767 "$SWAPFILE" 2>/dev/null
}
# Some filesystems refuse fallocated swap files ("holes"): fall back to dd.
make_swap fallocate || make_swap dd ||
    skip "swapon refused $SWAPFILE (filesystem $(df --output=fstype "$SWAP_DIR" | tail -1) cannot hold swap?); try SWAP_DIR="
other_swaps=$(awk 'NR > 1 && $1 != f { print $1 }' f="$SWAPFILE" /proc/swaps | tr '\n' ' ')

vmstat() { awk -v k="$1" '$1 == k { print $2 }' /proc/vmstat; }
in0=$(vmstat pswpin)
out0=$(vmstat pswpout)

echo "# kernel swap baseline: cgroup $cgver $CG"
echo "#   limit $((limit_bytes >> 20)) MiB = budget $BUDGET + slack $SLACK; swap unlimited; $swappiness"
echo "#   swap file $SWAPFILE ($SWAP_SIZE on $(df --output=fstype "$SWAP_DIR" | tail -1), priority 32767)${other_swaps:+; other swap areas: $other_swaps}"
set +e
bash -c 'echo $$ >"$1/cgroup.procs" && exec "${@:2}"' _ "$CG" \
    "$PAGEIN" --mode plain --size "$SIZE" --runs "$RUNS" --passes "$PASSES" --seed "$SEED"
status=$?
set -e

if [ $cgver = v2 ]; then
    peak=$(cat "$CG/memory.peak" 2>/dev/null || echo 0)
    events=$(tr '\n' ' ' <"$CG/memory.events" 2>/dev/null)
else
    peak=$(cat "$CG/memory.max_usage_in_bytes")
    events="failcnt $(cat "$CG/memory.failcnt") $(grep oom_kill "$CG/memory.oom_control" | tr '\n' ' ')"
fi
echo "# cgroup peak usage $((peak >> 20)) MiB of $((limit_bytes >> 20)) MiB; events: $events"
echo "# swap traffic: $(($(vmstat pswpin) - in0)) pages in, $(($(vmstat pswpout) - out0)) pages out"
if [ $status -ne 0 ]; then
    echo "swap_baseline: pagein exited with status $status$([ $status = 137 ] && echo ' (killed: OOM?)')" >&2
    exit $status
fi
