#!/usr/bin/env bash
# deps.sh - install moat's build, test and benchmark dependencies from
# Debian's packages.  Idempotent: does nothing when everything is there.
set -euo pipefail
pkgs=(cmake ninja-build gcc clang pkg-config libssl-dev openssl liburing-dev libhiredis-dev
      libjansson-dev libcmocka-dev redis-server redis-tools gnuplot-nox libmimalloc-dev
      libjemalloc-dev libclang-rt-14-dev python3 sqlite3 xz-utils coreutils util-linux
      e2fsprogs)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  exit 0
fi
echo "deps: installing ${missing[*]}" >&2
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
