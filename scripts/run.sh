#!/usr/bin/env bash
# run.sh - set up and run moat's main job: install dependencies, build, and
# run an unmodified Python program (examples/index.py: 2 million records,
# about 500 MiB of memory at its peak) under `moat run` with a 64 MiB budget.
# moat prints its summary; the statistics, the trace and a plot of memory
# over time are written to build/main-job/.  Extra arguments go to
# `moat run` (for example --budget 32M or --store redis://127.0.0.1:6379).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
scripts/build.sh build -DCMAKE_BUILD_TYPE=Release -DMOAT_BENCH=OFF >/dev/null
out=build/main-job
mkdir -p "$out"
echo "moat: running examples/index.py under a 64 MiB budget (the same program alone takes ~3 s)" >&2
build/moat run --budget 64M --stats-json "$out/stats.json" --trace "$out/trace.csv" "$@" \
    -- python3 examples/index.py
build/moat plot "$out/trace.csv" -o "$out/memory.svg" --title "examples/index.py under moat run --budget 64M"
echo "moat: wrote $out/stats.json, $out/trace.csv and the plot $out/memory.svg" >&2
