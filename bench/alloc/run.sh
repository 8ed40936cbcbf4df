#!/usr/bin/env bash
# run.sh - the allocator workloads of docs/alloc.md with glibc's malloc,
# mimalloc, jemalloc and moat (LD_PRELOAD) in the same run, interleaved so
# that other load on the machine falls on all of them alike (in rounds,
# each starting with the next allocator); prints the
# median of REPS runs of each and the ratios, and for speed also the median
# of the ratios within each round (robust to the machine's slow spells).
#
#   bench/alloc/run.sh BUILD_DIR            all three workloads
#   REPS=5 ECALL_SECONDS=30 bench/alloc/run.sh BUILD_DIR
#   ONLY="speed" bench/alloc/run.sh BUILD_DIR   (ecall, churn, speed)
#   EXTRA="moat_old=/tmp/old/libmoat_malloc.so" bench/alloc/run.sh BUILD_DIR
#       adds allocators (space-separated NAME=LIB; a NAME starting with
#       "moat" is run like moat: capped in workload 1, with ratios) to the
#       same interleaved runs - a before/after comparison under one load.
#
# Workload 1 (ecall) runs moat with MOAT_ALLOC_LIMIT=64M: the heap is
# capped, as an enclave's is; the others cannot be capped and are measured
# as they are.  Memory is the process's anonymous resident memory above its
# start (RssAnon), the same measure for every allocator.
set -euo pipefail

build=${1:?usage: run.sh BUILD_DIR}
reps=${REPS:-3}
ecall_secs=${ECALL_SECONDS:-20}
only=${ONLY:-ecall churn speed}
bin=$build/bench/alloc
moat_lib=$build/src/alloc/libmoat_malloc.so
libdir=/usr/lib/x86_64-linux-gnu
declare -A lib=([glibc]="" [mimalloc]=$libdir/libmimalloc.so.2 [jemalloc]=$libdir/libjemalloc.so.2
                [moat]=$moat_lib)
allocs="glibc mimalloc jemalloc moat"
for e in ${EXTRA:-}; do
  lib[${e%%=*}]=${e#*=}
  allocs="$allocs ${e%%=*}"
done
for a in $allocs; do
  if [[ -n ${lib[$a]} && ! -e ${lib[$a]} ]]; then
    echo "run.sh: ${lib[$a]} is missing (libmimalloc-dev, libjemalloc-dev, or build moat first)" >&2
    exit 1
  fi
done
for p in alloc_ecall alloc_churn alloc_speed; do
  [[ -x $bin/$p ]] || { echo "run.sh: $bin/$p is missing: build $build first" >&2; exit 1; }
done

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# run NAME ALLOC CMD... : appends the RESULT line's key=value pairs to
# $out/NAME.ALLOC, one line per run
run() {
  local name=$1 a=$2
  shift 2
  local extra=()
  [[ $a == moat* && $name == ecall ]] && extra=(MOAT_ALLOC_LIMIT=64M)
  env LD_PRELOAD="${lib[$a]}" "${extra[@]}" "$@" | sed -n 's/^RESULT //p' >>"$out/$name.$a"
}

# rotated R: the allocators, starting at the R-th (each round starts with
# another, so that none always runs right after the same one)
rotated() {
  local a=($allocs)
  local n=${#a[@]} i
  for ((i = 0; i < n; i++)); do echo "${a[(i + $1) % n]}"; done
}

# values KEY FILE: the KEY of every run in FILE, one a line
values() { sed -n "s/.*\b$1=\([-0-9.]*\).*/\1/p" "$2"; }

# summary [range]: the median of the numbers on stdin ("nan" for none);
# with "range", followed by " (min-max)"
summary() {
  sort -g | awk -v range="${1:-}" '{v[NR]=$1} END {
    if (NR==0) {print "nan"; exit}
    m = NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2
    if (range) printf "%.2f (%.2f-%.2f)\n", m, v[1], v[NR]; else print m}'
}

# median NAME ALLOC KEY
median() { values "$3" "$out/$1.$2" | summary; }

ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b+0 == 0) print "-"; else printf "%.2f", a/b}'; }

# round_ratio NAME A B KEY: the ratio A/B of KEY within each round (the
# runs of one round are seconds apart, so a slow spell of the machine falls
# on both), as "median (min-max)" over the rounds
round_ratio() {
  paste -d' ' <(values "$4" "$out/$1.$2") <(values "$4" "$out/$1.$3") |
    awk '$2 > 0 {print $1 / $2}' | summary range
}

echo "# moat allocator benchmarks: $reps runs each, medians"
uname -sr | sed 's/^/# kernel: /'
echo "# cpus: $(nproc), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), load average: $(cut -d' ' -f1-3 /proc/loadavg)"

if [[ $only == *ecall* ]]; then
  for r in $(seq "$reps"); do
    for a in $(rotated "$r"); do run ecall "$a" "$bin/alloc_ecall" --seconds "$ecall_secs"; done
  done
  echo
  echo "== workload 1: the Open Enclave pattern (16 workers + 4 others, a thread per call,"
  echo "   ~41 MiB requested, ${ecall_secs} s; moat capped at 64 MiB)"
  printf "%-9s %10s %10s %10s %9s %9s %9s %8s\n" allocator req_MiB res_mean2 res_peak2 frag2_% \
    growth_% calls/s failures
  for a in $allocs; do
    printf "%-9s %10s %10s %10s %9s %9s %9s %8s\n" "$a" "$(median ecall "$a" req_mean2_mib)" \
      "$(median ecall "$a" res_mean2_mib)" "$(median ecall "$a" res_peak2_mib)" \
      "$(median ecall "$a" frag2_pct)" "$(median ecall "$a" growth_pct)" \
      "$(median ecall "$a" calls_per_s)" "$(median ecall "$a" failures)"
  done
  m=$(median ecall moat res_mean2_mib)
  echo "resident memory of each / moat's (second half, mean):" \
    "glibc $(ratio "$(median ecall glibc res_mean2_mib)" "$m")," \
    "mimalloc $(ratio "$(median ecall mimalloc res_mean2_mib)" "$m")," \
    "jemalloc $(ratio "$(median ecall jemalloc res_mean2_mib)" "$m")"
fi

if [[ $only == *churn* ]]; then
  for r in $(seq "$reps"); do
    for a in $(rotated "$r"); do run churn "$a" "$bin/alloc_churn"; done
  done
  echo
  echo "== workload 2: churn (16 MiB kept; A: 5M x 1 KiB; B: 5M random 16 B-64 KiB);"
  echo "   resident MiB at the start and 200 ms after each phase, and its change"
  printf "%-9s %8s %8s %8s %8s %8s %8s %8s\n" allocator start after_A dA_% after_B dB_% secs_A \
    secs_B
  for a in $allocs; do
    printf "%-9s %8s %8s %8s %8s %8s %8s %8s\n" "$a" "$(median churn "$a" start_mib)" \
      "$(median churn "$a" after_a_mib)" "$(median churn "$a" delta_a_pct)" \
      "$(median churn "$a" after_b_mib)" "$(median churn "$a" delta_b_pct)" \
      "$(median churn "$a" secs_a)" "$(median churn "$a" secs_b)"
  done
fi

if [[ $only == *speed* ]]; then
  pats="single larson prodcons falseshare"
  for r in $(seq "$reps"); do
    for p in $pats; do
      for a in $(rotated "$r"); do run "speed-$p" "$a" "$bin/alloc_speed" "$p"; done
    done
  done
  echo
  echo "== workload 3: speed (seconds, wall and CPU of all threads; ratio = moat / other,"
  echo "   below 1 means moat is faster)"
  printf "%-11s %-9s %8s %8s %11s %11s %11s %11s\n" pattern allocator wall cpu \
    wall/mimal cpu/mimal wall/glibc cpu/glibc
  for p in $pats; do
    for a in $allocs; do
      w=$(median "speed-$p" "$a" secs)
      c=$(median "speed-$p" "$a" cpu_secs)
      mw=$w
      mc=$c
      if [[ $a == moat* ]]; then
        printf "%-11s %-9s %8s %8s %11s %11s %11s %11s\n" "$p" "$a" "$w" "$c" \
          "$(ratio "$mw" "$(median "speed-$p" mimalloc secs)")" \
          "$(ratio "$mc" "$(median "speed-$p" mimalloc cpu_secs)")" \
          "$(ratio "$mw" "$(median "speed-$p" glibc secs)")" \
          "$(ratio "$mc" "$(median "speed-$p" glibc cpu_secs)")"
      else
        printf "%-11s %-9s %8s %8s\n" "$p" "$a" "$w" "$c"
      fi
    done
  done
  echo -n "single: fastest 1M-operation segment (ns per free+malloc, median of runs):"
  for a in $allocs; do echo -n " $a $(median speed-single "$a" best_ns_op)"; done
  echo
  for a in $allocs; do
    [[ $a == moat* ]] || continue
    echo "   $a / mimalloc: $(ratio "$(median speed-single "$a" best_ns_op)" \
      "$(median speed-single mimalloc best_ns_op)")"
  done
  echo -n "falseshare: samples with two threads writing one cache line (%, median):"
  for a in $allocs; do echo -n " $a $(median speed-falseshare "$a" shared_line_pct)"; done
  echo
  echo
  echo "   CPU time ratios within each round (median, min-max over the $reps rounds)"
  printf "%-11s %-9s %-20s %-20s\n" pattern allocator cpu/mimal cpu/glibc
  for p in $pats; do
    for a in $allocs; do
      [[ $a == moat* ]] || continue
      printf "%-11s %-9s %-20s %-20s\n" "$p" "$a" \
        "$(round_ratio "speed-$p" "$a" mimalloc cpu_secs)" \
        "$(round_ratio "speed-$p" "$a" glibc cpu_secs)"
    done
  done
fi
