#!/bin/bash
# moe-repack as a user runs it: conversions, refusals, a full disk, Ctrl-C,
# malformed inputs, zstd round trips, and peak memory on a model far larger
# than the memory it may use.
set -u
. "$MOE_TEST_DIR/sh_util.sh"
require_conformance
T=$(make_tmp repack-cli)
REPACK="$MOE_BIN_DIR/moe-repack"
INSPECT="$MOE_BIN_DIR/moe-inspect"
RUN_LIMITED="$(dirname "$MOE_BIN_DIR")/tests/run_limited"
SPLIT="$MOE_CONFORMANCE_DIR/models/tiny-llama-split.gguf"
STACKED="$MOE_CONFORMANCE_DIR/models/tiny-llama.gguf"

# split -> stacked, verified, and the result inspects cleanly
"$REPACK" -q --verify "$SPLIT" "$T/a.gguf"
check "repack of the split model succeeds" test $? -eq 0
"$INSPECT" --verify "$T/a.gguf" > "$T/a.txt"
check "output verifies" grep -q "23/23 tensors match" "$T/a.txt"
check "stacked tensor present" grep -q "blk.1.ffn_up_exps.weight *f32 *\[256, 256, 8\]" "$T/a.txt"

# --dry-run writes nothing and names what it would stack; --json reports
"$REPACK" --dry-run "$SPLIT" "$T/dry.gguf" > "$T/dry.txt"
check "dry run writes nothing" test ! -e "$T/dry.gguf"
check "dry run lists stacks" grep -q "^stack *blk.0.ffn_gate_exps.weight" "$T/dry.txt"
"$REPACK" --json "$SPLIT" "$T/j.gguf" > "$T/j.json"
check "json report counts stacks" grep -q '"stacked": 6' "$T/j.json"
check "json report has checksums" grep -q '"xxh3": "' "$T/j.json"

# refusals: usage errors exit 2, failures exit 1, nothing written
"$REPACK" "$SPLIT" 2> "$T/err.txt"; rc=$?
check "one file: usage error (2)" test $rc -eq 2
"$REPACK" --split-gate-up --merge-gate-up "$SPLIT" "$T/x.gguf" 2> "$T/err.txt"; rc=$?
check "exclusive options: usage error" test $rc -eq 2
"$REPACK" "$T/a.gguf" "$T/a.gguf" 2> "$T/err.txt"; rc=$?
check "refuses to write over its input" test $rc -eq 2
check "message says why" grep -q "refusing to write over it" "$T/err.txt"
"$REPACK" "$SPLIT" "$T/a.gguf" 2> "$T/err.txt"; rc=$?
check "refuses an existing output" grep -q -- "--force" "$T/err.txt"
"$REPACK" -q --force "$SPLIT" "$T/a.gguf"
check "--force replaces" test $? -eq 0
"$REPACK" "$T/missing.gguf" "$T/m.gguf" 2> "$T/err.txt"; rc=$?
check "missing input: exit 1 naming it" test $rc -eq 1 -a -n "$(grep missing.gguf "$T/err.txt")"

# every malformed file of the fuzz corpus fails cleanly
n_bad=0; n_ok=0
for f in "$MOE_TEST_DIR"/corpus/gguf/bad/*.gguf; do
    [ -e "$f" ] || continue
    n_bad=$((n_bad + 1))
    timeout 10 "$REPACK" "$f" "$T/bad-out.gguf" > /dev/null 2> "$T/err.txt"; rc=$?
    if [ $rc -eq 1 ] && [ -s "$T/err.txt" ] && [ ! -e "$T/bad-out.gguf" ]; then
        n_ok=$((n_ok + 1))
    else
        echo "  $f: exit $rc" >&2
    fi
done
check "all $n_bad malformed inputs rejected cleanly" test "$n_ok" -eq "$n_bad" -a "$n_bad" -gt 0

# a full disk (RLIMIT_FSIZE: writes fail with EFBIG as they would with ENOSPC)
cp "$SPLIT" "$T/in.gguf"
sum_before=$(cksum < "$T/in.gguf")
"$RUN_LIMITED" --fsize 4000000 -- "$REPACK" "$T/in.gguf" "$T/full.gguf" 2> "$T/err.txt"; rc=$?
check "full disk: exit 1" test $rc -eq 1
check "full disk: message" grep -q "write failed" "$T/err.txt"
check "full disk: no output" test ! -e "$T/full.gguf"
check "full disk: input unchanged" test "$(cksum < "$T/in.gguf")" = "$sum_before"

# shards by size: llama.cpp's names and keys, and the set reads back whole
"$REPACK" -q --split-max-size 4M "$SPLIT" "$T/sh.gguf"
n=$(ls "$T"/sh-0000?-of-0000?.gguf | wc -l)
check "split by size: $n shards for 15 MB at 4 MiB" test "$n" -ge 4 -a -s "$T/sh-00001-of-0000$n.gguf"
big=0
for f in "$T"/sh-0000?-of-0000?.gguf; do
    b=$("$INSPECT" --json "$f" | grep '"name"' | grep -o '"bytes": [0-9]*' | awk '{s += $2} END {print s}')
    [ "$b" -le 4194304 ] || big=1
done
check "every shard holds at most 4 MiB of tensor data" test $big -eq 0
"$INSPECT" "$T/sh-00002-of-0000$n.gguf" > "$T/sh2.txt"
check "shard keys" grep -q "split.no *u16 *= 1" "$T/sh2.txt"
"$REPACK" -q "$T/sh-00001-of-0000$n.gguf" "$T/unsharded.gguf"
check "a shard set repacks back to the single file" cmp -s "$T/unsharded.gguf" "$T/a.gguf"

# zstd: stock zstd restores the plain file; we read it back too
"$REPACK" -q --zstd "$SPLIT" "$T/z.gguf"
check "zstd output written" test -s "$T/z.gguf.zst" -a ! -e "$T/z.gguf"
if command -v zstd > /dev/null; then
    zstd -q -d "$T/z.gguf.zst" -o "$T/z-stock.gguf"
    check "zstd -d equals the plain output" cmp -s "$T/z-stock.gguf" "$T/a.gguf"
fi
"$REPACK" -q "$T/z.gguf.zst" "$T/z-back.gguf"
check "moe-repack decompresses .gguf.zst" cmp -s "$T/z-back.gguf" "$T/a.gguf"

check_no_temp_files "$T"
finish
