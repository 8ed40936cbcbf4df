#!/bin/bash
# test_config_cli.sh - `moat config` end to end: the built binary ($1/moat) on
# the example and malformed files of tests/data/config ($2 is the source
# tree): help texts, exit codes (0 valid, 2 usage, 3 invalid), the place and
# wording of diagnostics, the explain table, Enclave.xml byte for byte, JSON,
# and the guide/occlum-tool differences.
set -u

BUILD=${1:?usage: test_config_cli.sh BUILD_DIR SOURCE_DIR}
SRC=${2:?usage: test_config_cli.sh BUILD_DIR SOURCE_DIR}
BUILD=$(cd "$BUILD" && pwd)
SRC=$(cd "$SRC" && pwd)
MOAT="$BUILD/moat"
DATA="$SRC/tests/data/config"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/moat-config-cli.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

if [ ! -x "$MOAT" ]; then
    echo "SKIP: $MOAT was not built (cmake --build BUILD --target moat_cli)"
    exit 77
fi

failures=0
checks=0
fail() {
    echo "FAIL: $*"
    failures=$((failures + 1))
}

# run EXPECTED_RC ARGS...: run moat, keep stdout/stderr in $TMP/out, $TMP/err.
run() {
    local want=$1
    shift
    checks=$((checks + 1))
    (cd "$DATA" && "$MOAT" "$@") >"$TMP/out" 2>"$TMP/err"
    local rc=$?
    if [ "$rc" -ne "$want" ]; then
        fail "moat $* exited $rc, expected $want"
        sed 's/^/    out: /' "$TMP/out" | head -20
        sed 's/^/    err: /' "$TMP/err" | head -20
    fi
}

# has FILE TEXT: the last output (out or err) contains TEXT literally.
has() {
    checks=$((checks + 1))
    if ! grep -qF -- "$2" "$TMP/$1"; then
        fail "std$1 of the last command lacks: $2"
        sed 's/^/    /' "$TMP/$1" | head -30
    fi
}

hasnt() {
    checks=$((checks + 1))
    if grep -qF -- "$2" "$TMP/$1"; then
        fail "std$1 of the last command should not contain: $2"
    fi
}

echo "== help and usage"
run 0 config --help
has out "usage: moat config COMMAND"
has out "enclave-xml"
run 0 config help explain
has out "usage: moat config explain"
for sub in check explain enclave-xml json; do
    run 0 config $sub --help
    has out "usage: moat config $sub"
    has out "--compat MODE"
    has out "exit status"
done
run 2 config
has err "usage: moat config COMMAND"
run 2 config frobnicate occlum-template.json
has err "unknown command 'frobnicate'"
run 2 config suggest stats.json
has err "cannot read 'stats.json'"
run 0 config suggest --help
has out "usage: moat config suggest"
has out "--headroom PCT"
run 0 config --help
has out "suggest"
run 2 config check
has err "no FILE given"
run 2 config check --bogus occlum-template.json
has err "unknown option '--bogus'"
run 2 config check occlum-template.json guide-example.json
has err "more than one FILE"
run 2 config check --sgx-mode sim occlum-template.json
has err "--sgx-mode must be HW or SIM"
run 2 config check --compat tool occlum-template.json
has err "--compat must be guide or occlum-tool"
run 2 config check --edmm --no-edmm occlum-template.json
has err "contradict"
run 2 config check --pretty occlum-template.json
has err "unknown option '--pretty'"
run 2 config check no-such-file.json
has err "cannot read 'no-such-file.json': No such file or directory"

echo "== valid files"
run 0 config check occlum-template.json
has out "occlum-template.json: valid."
run 0 config check guide-example.json
has out "guide-example.json: valid."
run 0 config check --compat occlum-tool --sgx-mode=SIM guide-example.json
(cd "$DATA" && "$MOAT" config check - <occlum-template.json) >"$TMP/out" 2>&1 ||
    fail "check from stdin failed"
has out "<stdin>: valid."

echo "== malformed files: exit 3, path, line, column, found, expected"
run 3 config check truncated.json
has out "truncated.json:26:1: error: The file is not valid JSON"
has out "truncated file"
run 3 config check guide-example-verbatim.jsonc
has out "guide-example-verbatim.jsonc:3:45: error:"
has out "Comments (// ... or /* ... */) are not JSON"
run 3 config check trailing-comma.json
has out "trailing comma"
run 3 config check top-level-array.json
has out "top-level-array.json:1:1: error: The file holds a JSON array"
run 3 config check wrong-types.json
has out "wrong-types.json:5:28: error: resource_limits.user_space_size must be a size string with a unit, but it is the number 300."
has out "wrong-types.json:6:31: error: resource_limits.max_num_of_threads must be a whole number, but it is the string \"32\". Write 32 without quotes."
has out "wrong-types.json:8:16: error: process must be an object"
has out "wrong-types.json:25:23: error: metadata.debuggable must be true or false"
has out "6 errors, 0 warnings"
run 3 config check negative.json
has out "negative.json:5:28: error: resource_limits.user_space_size \"-300MB\" is not a valid size: a size cannot be negative."
has out "negative.json:6:31: error: resource_limits.max_num_of_threads cannot be negative, but it is the number -1."
run 3 config check fractional.json
has out "fractional.json:5:28: error: resource_limits.user_space_size \"1.5GB\" is not a valid size: Occlum accepts whole numbers only, not fractions. Write \"1536MB\" instead."
has out "fractional.json:6:31: error: resource_limits.max_num_of_threads must be a whole number, but it is the number 32.5."
has out "fractional.json:7:32: error: resource_limits.init_num_of_threads must be a whole number, but it is the number 2.0."
run 3 config check lowercase-units.json
has out "lowercase-units.json:5:28: error: resource_limits.user_space_size \"300mb\" is not a valid size: units are case-sensitive"
has out "    found:    \"300mb\""
has out "    expected: \"300MB\": a whole number followed by B, KB, MB, GB or TB"
has out "lowercase-units.json:9:31: error: process.default_stack_size \"4MiB\" is not a valid size"
has out "If you meant bytes, write \"100MB\"."
run 3 config check overflow.json
has out "overflow.json:5:28: error: resource_limits.user_space_size \"99999999999999999999MB\" is not a valid size: it is more than 2^64 - 1 bytes"
has out "overflow.json:7:32: error: resource_limits.user_space_max_size \"16777216TB\" is not a valid size"
has out "overflow.json:6:31: error: resource_limits.max_num_of_threads is the number 4294967296, more than 4294967295"
run 3 config check init-above-max.json
has out "init-above-max.json:3:35: error: resource_limits.kernel_space_heap_size (64MB) is larger than resource_limits.kernel_space_heap_max_size (40MB)"
has out "init-above-max.json:5:28: error: resource_limits.user_space_size (2GB) is larger than resource_limits.user_space_max_size (1GB)"
has out "init-above-max.json:9:32: error: resource_limits.init_num_of_threads (100) is larger than resource_limits.max_num_of_threads (64)"
run 3 config check missing-required.json
has out "missing-required.json:2:24: error: resource_limits.kernel_space_heap_size is missing. The EDMM configuration guide marks it Required"
has out "missing-required.json:6:16: error: process.default_mmap_size is missing."
has out "metadata.enable_kss is missing. Occlum's configuration tool (gen_internal_conf) requires it"
run 3 config check duplicate-key.json
has out "duplicate-key.json:6:9: error: resource_limits.user_space_size appears twice (line 5 and line 6)"
run 3 config check unaligned.json
has out "\"1001KB\" is not a multiple of 4KB"
run 0 config check --compat occlum-tool unaligned.json
has out "unaligned.json:3:35: warning:"
run 3 config check bad-mounts.json
has out "bad-mounts.json:95:31: error (non-EDMM): mount[6].options.cache_size \"64MB\" is larger than the kernel heap's maximum here (32MB)"
run 3 config check bad-metadata.json
has out "metadata.ext_prod_id.high \"0xZZ\" is not a 64-bit hexadecimal number"
run 3 config check guide-memory-section.json
has out "entry_points is missing"
run 0 config check unknown-fields.json
has out "unknown-fields.json:7:9: warning: resource_limits.user_space_max_sise is not a field Occlum knows, so occlum build ignores it. Did you mean user_space_max_size?"
has out "valid, with 4 warnings."
run 0 config check -q unknown-fields.json
hasnt out "warning:"
has out "unknown-fields.json: valid."

echo "== platforms: check covers both EDMM and non-EDMM unless told"
run 3 config check edmm-legacy-above-default.json
has out "edmm-legacy-above-default.json:3:35: error (EDMM): resource_limits.kernel_space_heap_size \"2GB\" is larger than the kernel heap's maximum on EDMM"
run 0 config check --no-edmm edmm-legacy-above-default.json
run 0 config check --compat occlum-tool edmm-legacy-above-default.json
run 3 config check zero-threads.json
has out "error (non-EDMM):"
run 0 config check --edmm zero-threads.json
run 3 config check --compat occlum-tool user-init-above-max.json
has out "error (non-EDMM): resource_limits.user_space_size \"2GB\" is larger than user_space_max_size \"1GB\". Occlum's tool refuses this even without EDMM"

echo "== explain"
run 0 config explain --edmm guide-example.json
has out "guide-example.json on SGX2 hardware with EDMM"
has out "  kernel heap    4MB          1GB"
has out "  user space     1MB          16GB"
has out "  threads        2            4096"
has out "Max:  the tool's default 1GB, which is larger than"
has out "UserRegionSize 17GB"
has out "(guide, Notes 1)"
run 0 config explain --no-edmm guide-example.json
has out "  kernel heap    40MB         40MB"
has out "  user space     600MB        600MB"
has out "  threads        64           64"
has out "kernel_space_heap_size \"4MB\" no longer takes effect without EDMM"
has out "user_space_size \"1MB\" no longer takes effect without EDMM"
has out "init_num_of_threads 2 does not take effect without EDMM"
has out "(guide, Notes 2)"
run 0 config explain --edmm --sgx-mode SIM feature-edmm.json
has out "feature-edmm.json on SGX simulation (no EDMM)"
has out "SGX_MODE=SIM takes precedence over EDMM (guide, Notes 3)"
run 0 config explain --compat occlum-tool --sgx-mode SIM feature-edmm.json
has out "on SGX simulation, with EDMM (as Occlum's tool does)"
run 3 config explain lowercase-units.json
has err "the memory fields of resource_limits must be valid"
run 3 config explain guide-memory-section.json
has out "  kernel heap    40MB         40MB"
has err "entry_points is missing"

echo "== enclave-xml"
EXPECTED_EDMM='<EnclaveConfiguration><ProdID>0</ProdID><ISVSVN>0</ISVSVN><StackMaxSize>1048576</StackMaxSize><StackMinSize>1048576</StackMinSize><HeapInitSize>4194304</HeapInitSize><HeapMaxSize>1073741824</HeapMaxSize><HeapMinSize>4194304</HeapMinSize><TCSNum>2</TCSNum><TCSMaxNum>4096</TCSMaxNum><TCSMinPool>2</TCSMinPool><TCSPolicy>0</TCSPolicy><DisableDebug>0</DisableDebug><MiscSelect>1</MiscSelect><MiscMask>0xFFFFFFFF</MiscMask><ReservedMemMaxSize>1048576</ReservedMemMaxSize><ReservedMemMinSize>1048576</ReservedMemMinSize><ReservedMemInitSize>1048576</ReservedMemInitSize><ReservedMemExecutable>1</ReservedMemExecutable><UserRegionSize>18253611008</UserRegionSize><EnableKSS>0</EnableKSS><ISVEXTPRODID_H>0</ISVEXTPRODID_H><ISVEXTPRODID_L>0</ISVEXTPRODID_L><ISVFAMILYID_H>0</ISVFAMILYID_H><ISVFAMILYID_L>0</ISVFAMILYID_L><PKRU>0</PKRU><AMX>0</AMX></EnclaveConfiguration>'
run 0 config enclave-xml --edmm guide-example.json
checks=$((checks + 1))
[ "$(cat "$TMP/out")" = "$EXPECTED_EDMM" ] || fail "enclave-xml --edmm guide-example.json differs: $(cat "$TMP/out")"
run 0 config enclave-xml --edmm -o "$TMP/Enclave.xml" guide-example.json
checks=$((checks + 1))
printf '%s' "$EXPECTED_EDMM" | cmp -s - "$TMP/Enclave.xml" ||
    fail "-o output is not the tool's bytes (no trailing newline)"
run 0 config enclave-xml --pretty occlum-template.json
checks=$((checks + 1))
[ "$(wc -l <"$TMP/out")" -eq 27 ] || fail "--pretty: expected 27 lines, got $(wc -l <"$TMP/out")"
has out "    <HeapMaxSize>33554432</HeapMaxSize>"
has out "    <TCSNum>32</TCSNum>"
has out "    <ReservedMemInitSize>314572800</ReservedMemInitSize>"
hasnt out "UserRegionSize"
# The guide and the tool disagree on the initial threads: 16 vs 32.
run 0 config enclave-xml --edmm many-init-threads.json
has out "<TCSNum>16</TCSNum>"
run 0 config enclave-xml --edmm --compat occlum-tool many-init-threads.json
has out "<TCSNum>32</TCSNum><TCSMaxNum>4096</TCSMaxNum><TCSMinPool>32</TCSMinPool>"
run 0 config enclave-xml --edmm --compat occlum-tool few-threads.json
has out "<TCSNum>8</TCSNum>"
run 0 config enclave-xml --compat occlum-tool --edmm edmm-legacy-above-default.json
has out "<HeapMaxSize>2147483648</HeapMaxSize>"
run 3 config enclave-xml --edmm edmm-legacy-above-default.json
has err "no Enclave.xml written"
checks=$((checks + 1))
[ -s "$TMP/out" ] && fail "enclave-xml printed XML for an invalid file"
run 3 config enclave-xml wrong-types.json
has err "must be valid before a layout can be derived"
run 4 config enclave-xml -o "$TMP/no/such/dir/Enclave.xml" occlum-template.json
has err "cannot create"

echo "== json"
run 0 config json --edmm guide-example.json
has out '"valid": true'
has out '"UserRegionSize": 18253611008'
has out '"MiscMask": "0xFFFFFFFF"'
has out '"edmm": true'
if command -v python3 >/dev/null; then
    checks=$((checks + 1))
    python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["layout"]["threads"]["max"]==4096' \
        <"$TMP/out" 2>/dev/null || fail "json output does not parse or lacks layout.threads.max"
fi
run 3 config json lowercase-units.json
has out '"valid": false'
has out '"layout": null'
has out '"path": "resource_limits.user_space_size"'
has out '"line": 5'
run 0 config json -o "$TMP/out.json" occlum-template.json
checks=$((checks + 1))
grep -qF '"kernel_heap"' "$TMP/out.json" || fail "json -o did not write the layout"

echo "$checks checks, $failures failures"
[ "$failures" -eq 0 ]
