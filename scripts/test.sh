#!/usr/bin/env bash
# test.sh - the whole test suite: install dependencies, then build and run
# every test three times: a normal build (gcc), ASan+UBSan (clang) and TSan
# (clang).  Exits non-zero if any test fails.
#   scripts/test.sh            all three
#   MOAT_TEST_CONFIGS="plain" scripts/test.sh   a subset (plain asan tsan)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
configs=${MOAT_TEST_CONFIGS:-plain asan tsan}
jobs=$(nproc)
status=0
for c in $configs; do
  case $c in
    plain) dir=build-test; opts=(-DCMAKE_BUILD_TYPE=RelWithDebInfo); cc=gcc ;;
    asan) dir=build-test-asan; opts=(-DMOAT_ASAN=ON -DMOAT_UBSAN=ON -DMOAT_BENCH=OFF); cc=clang ;;
    tsan) dir=build-test-tsan; opts=(-DMOAT_TSAN=ON -DMOAT_BENCH=OFF); cc=clang ;;
    *) echo "test.sh: unknown configuration '$c' (plain, asan, tsan)" >&2; exit 2 ;;
  esac
  echo "=== $c: building in $dir with $cc"
  CC=$cc cmake -S . -B "$dir" -G Ninja "${opts[@]}" >/dev/null
  cmake --build "$dir" -j "$jobs"
  echo "=== $c: running tests"
  export MOAT_TEST_CONFIG=$c
  if ! (cd "$dir" && ctest --output-on-failure -j "$jobs" --timeout 900); then
    status=1
  fi
done
exit $status
