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

check_no_temp_files() {
    check "no temp files left in $1" test -z "$(find "$1" -name '*.tmp*' -print -quit)"
}

finish() {
    echo "$passed passed, $failed failed"
    [ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
}
