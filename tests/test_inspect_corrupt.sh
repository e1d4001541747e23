#!/usr/bin/env bash
# shellcheck disable=SC2034  # HS DO FS TOFF* are used by name in $((...)) values
# test_inspect_corrupt — moe-inspect on 60 corrupted copies of a real model, and
# on the checked-in GGUF corpus.
#
#   bash test_inspect_corrupt.sh GEN_CORPUS            (the model)
#   bash test_inspect_corrupt.sh GEN_CORPUS --corpus   (tests/corpus/gguf)
#
# Takes $MOE_CONFORMANCE_DIR/models/tiny-qwen2moe.gguf (exit 77 if missing),
# writes 60 deterministic corruptions of it to $MOE_TMP/inspect_corrupt —
# truncations (in the header and inside the data), out-of-range counts, lengths,
# value and tensor types, dims and offsets, duplicate keys and tensor names, bad
# general.alignment values and bit flips — and runs `moe-inspect FILE` on each,
# once mapped and once with --no-mmap (which reads a header prefix and grows it).
# Every run must exit 1 within 10 seconds (not crash, not hang) and print a
# non-empty error on stderr that names the file. Each corruption is invalid
# whatever the rest of the file holds (a field set out of range, a truncation
# before the last tensor's data ends), so "rejected" is the only right answer.
# Byte positions come from `GEN_CORPUS --fields MODEL`. Only header corruptions:
# the conformance models store no checksums, so changed tensor bytes are valid.
# Prints one line per run and "N passed, N failed"; passing variants are removed,
# failing ones are kept for a look.
#
# With --corpus: every file of $MOE_TEST_DIR/corpus/gguf/good must be printed
# (plain, --json, --full-arrays, --verify, --no-mmap; exit 0, and the JSON must
# parse when python3 is there), every file of bad/ rejected as above, mapped and
# with --no-mmap. This runs the printing code over the corpus's odd values.
set -u

gen=${1:?usage: test_inspect_corrupt.sh GEN_CORPUS [--corpus]}
mode=${2:-model}
inspect="$MOE_BIN_DIR/moe-inspect"

# In a sanitizer build a report must not pass for "exit 1": make it abort.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}abort_on_error=1"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:+$UBSAN_OPTIONS:}halt_on_error=1:abort_on_error=1"

passed=0
failed=0
pass() { passed=$((passed + 1)); echo "ok   $*"; }
fail() { failed=$((failed + 1)); echo "FAIL $*"; }

# check FILE WHAT [OPTION...]: moe-inspect must exit 1 in time with an error
# naming FILE. Leaves FILE.out and FILE.err beside FILE (in $out_dir if set).
check() {
    local file=$1 what=$2 rc
    shift 2
    local log
    log=${out_dir:-$(dirname "$file")}/$(basename "$file")
    timeout 10 "$inspect" "$@" "$file" >"$log.out" 2>"$log.err"
    rc=$?
    if grep -qE 'Sanitizer|runtime error:' "$log.err"; then
        fail "$what: sanitizer report (exit $rc): $(grep -m1 -E 'Sanitizer|runtime error:' "$log.err")"
    elif [ "$rc" = 124 ]; then
        fail "$what: timed out"
    elif [ "$rc" -ge 128 ]; then
        fail "$what: crashed (exit $rc): $(head -c 300 "$log.err")"
    elif [ "$rc" != 1 ]; then
        fail "$what: exit $rc, expected 1"
    elif [ ! -s "$log.err" ]; then
        fail "$what: no error message"
    elif ! grep -qF -- "$(basename "$file")" "$log.err"; then
        fail "$what: message does not name the file: $(head -c 300 "$log.err")"
    else
        pass "$what: $(head -n 1 "$log.err" | cut -c1-160)"
        return 0
    fi
    return 1
}

# accept FILE WHAT [OPTION...]: moe-inspect must print FILE and exit 0.
accept() {
    local file=$1 what=$2 rc
    shift 2
    local log
    log=$out_dir/$(basename "$file")
    timeout 10 "$inspect" "$@" "$file" >"$log.out" 2>"$log.err"
    rc=$?
    if grep -qE 'Sanitizer|runtime error:' "$log.err"; then
        fail "$what: sanitizer report (exit $rc): $(grep -m1 -E 'Sanitizer|runtime error:' "$log.err")"
    elif [ "$rc" != 0 ]; then
        fail "$what: exit $rc, expected 0: $(head -c 300 "$log.err")"
    elif [ ! -s "$log.out" ]; then
        fail "$what: printed nothing"
    elif [ "${1:-}" = --json ] && command -v python3 >/dev/null &&
        ! python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$log.out" 2>"$log.json-err"; then
        fail "$what: output is not valid JSON: $(tail -n 1 "$log.json-err")"
    else
        pass "$what"
        return 0
    fi
    return 1
}

if [ "$mode" = --corpus ]; then
    corpus="$MOE_TEST_DIR/corpus/gguf"
    out_dir="$MOE_TMP/inspect_corpus"
    rm -rf "$out_dir"
    mkdir -p "$out_dir" || exit 1
    for f in "$corpus"/good/*.gguf; do
        n=good/$(basename "$f")
        accept "$f" "$n"
        accept "$f" "$n --json" --json
        accept "$f" "$n --full-arrays" --full-arrays
        accept "$f" "$n --verify" --verify
        accept "$f" "$n --no-mmap --json" --no-mmap --json
    done
    for f in "$corpus"/bad/*.gguf; do
        n=bad/$(basename "$f")
        check "$f" "$n"
        check "$f" "$n --no-mmap" --no-mmap
    done
    echo "$passed passed, $failed failed"
    [ "$failed" = 0 ] && [ "$passed" -gt 0 ]
    exit
fi

model="${MOE_CONFORMANCE_DIR:-}/models/tiny-qwen2moe.gguf"
if [ ! -f "$model" ]; then
    echo "skip: $model not found"
    exit 77
fi
tmp="$MOE_TMP/inspect_corrupt"
rm -rf "$tmp"
mkdir -p "$tmp" || exit 1

if ! "$gen" --fields "$model" >"$tmp/fields.txt"; then
    echo "FAIL cannot map the fields of $model"
    exit 1
fi
declare -A F # "KIND IDX" -> "OFFSET LENGTH VALUE"
while read -r kind idx off len val; do
    F["$kind $idx"]="$off $len $val"
done <"$tmp/fields.txt"

# field KIND IDX -> sets f_off f_len f_val (fails the script on a missing field:
# that is a bug in this test, not in the reader)
field() {
    local v=${F["$1 $2"]:-}
    if [ -z "$v" ]; then
        echo "FAIL test bug: no field '$1 $2' in $model"
        exit 1
    fi
    read -r f_off f_len f_val <<<"$v"
}
# HS DO FS TOFF* are read by name inside the arithmetic of the case values.
field header_size -1; HS=$f_off
field data_offset -1; DO=$f_off
field file_size -1; FS=$f_off

# put_le FILE OFFSET NBYTES VALUE: little-endian store (VALUE is bash arithmetic,
# 64-bit two's complement, so -1 writes all ones).
put_le() {
    local file=$1 off=$2 n=$3 v=$(($4)) i esc=""
    for ((i = 0; i < n; i++)); do
        esc+=$(printf '\\x%02x' $(((v >> (8 * i)) & 0xff)))
    done
    printf "$esc" | dd of="$file" bs=1 seek="$off" conv=notrunc status=none
}
get_byte() { od -An -tu1 -j "$2" -N1 "$1" | tr -d ' '; }

# Corruption primitives; each works on $target.
op_trunc() { head -c "$(($1))" "$model" >"$target"; }
op_set() { field "$1" "$2"; put_le "$target" "$f_off" "$f_len" "$3"; }
op_flip() {
    field "$1" "$2"
    local at=$((f_off + $3 / 8))
    put_le "$target" "$at" 1 "$(($(get_byte "$target" "$at") ^ (1 << ($3 % 8))))"
}
op_bytes() { printf '%s' "$2" | dd of="$target" bs=1 seek="$(($1))" conv=notrunc status=none; }
# copy the bytes of field KIND SRC over field KIND DST (same length)
op_copy() {
    field "$1" "$2"
    local src=$f_off len=$f_len
    field "$1" "$3"
    [ "$len" = "$f_len" ] || { echo "FAIL test bug: $1 $2/$3 differ in length"; exit 1; }
    dd if="$model" of="$target" bs=1 skip="$src" seek="$f_off" count="$len" conv=notrunc \
        status=none
}

# NAME OP ARGS... (one corruption per line; $HS $DO $FS usable in values)
cases() {
    cat <<'EOF'
trunc-0 trunc 0
trunc-3 trunc 3
trunc-10 trunc 10
trunc-23 trunc 23
trunc-24 trunc 24
trunc-100 trunc 100
trunc-in-vocab trunc 5000
trunc-in-scores trunc 8000
trunc-in-tensor-infos trunc 12345
trunc-header-minus-1 trunc HS-1
trunc-header-end trunc HS
trunc-data-start trunc DO
trunc-data-plus-4096 trunc DO+4096
trunc-half trunc FS/2
trunc-in-last-tensor trunc DO+TOFF36+1
magic-ggml bytes 0 GGML
magic-flip flip magic -1 29
version-1 set version -1 1
version-4 set version -1 4
version-big-endian set version -1 0x03000000
n_tensors-huge set n_tensors -1 1<<62
n_tensors-negative set n_tensors -1 -1
n_tensors-too-many set n_tensors -1 FS/32+1
n_kv-huge flip n_kv -1 40
n_kv-too-many set n_kv -1 FS
key0-len-huge set key_len 0 1<<62
key12-len-flip flip key_len 12 40
key24-len-past-end set key_len 24 FS
vtype2-13 set vtype 2 13
vtype5-negative set vtype 5 -1
vtype10-flip flip vtype 10 4
str0-len-huge set str_len 0 1<<62
str1-len-max set str_len 1 -1
arr17-nested set arr_elem 17 9
arr18-elem-13 set arr_elem 18 13
arr17-count-huge set arr_count 17 1<<62
arr17-str0-len-huge set arr_str_len 17 1<<62
arr19-count-overflow set arr_count 19 (1<<62)+1
dup-key copy key 0 5
alignment-3 alignment 3
alignment-0 alignment 0
ndims0-0 set n_dims 0 0
ndims18-5 set n_dims 18 5
ndims36-flip flip n_dims 36 31
ne0-t0-negative set ne0 0 -1
ne1-t17-flip flip ne1 17 63
ne0-t36-huge set ne0 36 1<<40
dims-overflow dims_overflow 0
ttype0-removed-4 set ttype 0 4
ttype18-1000 set ttype 18 1000
ttype36-flip flip ttype 36 31
toffset18-misaligned set toffset 18 TOFF18+1
toffset18-overlap set toffset 18 TOFF17
toffset0-huge set toffset 0 1<<62
toffset36-past-end set toffset 36 (FS-DO+31)/32*32
toffset36-flip flip toffset 36 61
tname0-len-flip flip tname_len 0 62
dup-tensor-name copy tname 2 3
tname5-nul tname_nul 5
toffset-wraps set toffset 36 -32
EOF
}

field toffset 17; TOFF17=$f_val
field toffset 18; TOFF18=$f_val
field toffset 36; TOFF36=$f_val

# Renames the first 17-byte u32 key to general.alignment and sets its value.
op_alignment() {
    local i
    for ((i = 0; ; i++)); do
        field key_len "$i"
        if [ "$f_val" = 17 ]; then
            field vtype "$i"
            [ "$f_val" = 4 ] && break
        fi
    done
    field key "$i"
    op_bytes "$f_off" general.alignment
    op_set value "$i" "$1"
}
op_dims_overflow() { op_set ne0 "$1" '1<<32'; op_set ne1 "$1" '1<<32'; }
op_tname_nul() { field tname "$1"; put_le "$target" "$f_off" 1 0; }

# The untouched model must be accepted, or nothing below means anything.
if timeout 10 "$inspect" "$model" >"$tmp/control.out" 2>"$tmp/control.err"; then
    pass "control: $model accepted"
else
    fail "control: $model rejected: $(head -c 300 "$tmp/control.err")"
fi

n_cases=0
while read -r name op a1 a2 a3; do
    n_cases=$((n_cases + 1))
    target="$tmp/$name.gguf"
    # values may use HS DO FS TOFF*: expand them as bash arithmetic
    a1=${a1:-}
    a2=${a2:-}
    a3=${a3:-}
    if [ "$op" = trunc ]; then
        op_trunc "$a1"
    else
        cp "$model" "$target" && chmod u+w "$target"
        case $op in
        set) op_set "$a1" "$a2" "$a3" ;;
        flip) op_flip "$a1" "$a2" "$a3" ;;
        bytes) op_bytes "$a1" "$a2" ;;
        copy) op_copy "$a1" "$a2" "$a3" ;;
        alignment) op_alignment "$a1" ;;
        dims_overflow) op_dims_overflow "$a1" ;;
        tname_nul) op_tname_nul "$a1" ;;
        *) echo "FAIL test bug: unknown op $op"; exit 1 ;;
        esac
    fi
    if cmp -s "$model" "$target"; then
        fail "$name: test bug: the corruption changed nothing"
        continue
    fi
    ok=1
    check "$target" "$name" || ok=0
    check "$target" "$name --no-mmap" --no-mmap || ok=0
    [ "$ok" = 1 ] && rm -f "$target" "$target.out" "$target.err"
done < <(cases)

if [ "$n_cases" != 60 ]; then
    fail "expected 60 corruptions, ran $n_cases"
fi
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
