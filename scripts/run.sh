#!/usr/bin/env bash
# run.sh - set up and run moat's main job: install dependencies, build, and
# drive the library through a working set 8x its budget (moat demo), which
# prints what happened.  Extra arguments go to `moat demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
scripts/build.sh build -DCMAKE_BUILD_TYPE=Release -DMOAT_BENCH=OFF >/dev/null
exec build/moat demo "$@"
