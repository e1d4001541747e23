# Shared helpers for the shell tests: check NAME CMD... records a result;
# finish prints "N passed, N failed" and exits non-zero on any failure or when
# nothing was checked.
passed=0
failed=0

check() {
    local name=$1
    shift
    if "$@"; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        echo "FAILED: $name" >&2
    fi
}

require_conformance() {
    if [ ! -f "${MOE_CONFORMANCE_DIR:-}/README.md" ]; then
        echo "conformance pack not found: skipping"
        exit 77
    fi
}

make_tmp() {
    local d="${MOE_TMP:-/tmp}/$1"
    rm -rf "$d"
    mkdir -p "$d"
    echo "$d"
}

# pack_logits LEVEL MODEL OUT FEED [ARGS...]: moe-run's logits for the
# conformance rows (the pack's prompt as a batch, then the ids FEED one at a
# time) at ISA level LEVEL, into OUT; its stderr into $PACK_LOGITS_ERR
# (default: nowhere).
pack_logits() {
    local level=$1 model=$2 out=$3 feed=$4
    shift 4
    MOE_CPU_LEVEL=$level "$MOE_BIN_DIR/moe-run" -m "$model" \
        --prompt-tokens "$(cat "$MOE_CONFORMANCE_DIR/prompt.tokens")" --feed-tokens "$feed" \
        --logits-out "$out" "$@" > /dev/null 2> "${PACK_LOGITS_ERR:-/dev/null}"
}

check_no_temp_files() {
    check "no temp files left in $1" test -z "$(find "$1" -name '*.tmp*' -print -quit)"
}

finish() {
    echo "$passed passed, $failed failed"
    [ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
}
