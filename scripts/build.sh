#!/usr/bin/env bash
# build.sh [DIR] [CMAKE OPTIONS...] - configure and build moat into DIR
# (default build/).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build}
shift || true
cmake -S . -B "$dir" -G Ninja "$@" >/dev/null
cmake --build "$dir"
