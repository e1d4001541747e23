#!/bin/bash
# moe-quantize on legacy split-expert files (blk.N.ffn_up.E.weight): one step
# must give the bytes of moe-repack then moe-quantize, for Mixtral-style
# llama, qwen2moe (a shared expert) and deepseek2 (shared experts after a
# dense block), plain types, a k-quant mix and with an importance matrix; a
# corrupt expert is refused by its checksum, inconsistent experts (missing,
# another type) by name, and no failure leaves an output. Synthesised models
# only: no conformance pack needed.
set -u
. "$MOE_TEST_DIR/sh_util.sh"
T=$(make_tmp quantize-legacy)
SYNTH="$MOE_BIN_DIR/moe-synth"
REPACK="$MOE_BIN_DIR/moe-repack"
QUANT="$MOE_BIN_DIR/moe-quantize"
INSPECT="$MOE_BIN_DIR/moe-inspect"
IMATRIX="$MOE_BIN_DIR/moe-imatrix"

# two_step SPLIT OUT TYPE [options]: the old way, through a stacked file
two_step() {
    local split=$1 out=$2 type=$3
    shift 3
    "$REPACK" -q -f "$split" "$out.stacked.gguf" &&
        "$QUANT" -q -f -t 2 "$@" "$out.stacked.gguf" "$out" "$type" 2>/dev/null
}

for arch in llama qwen2moe deepseek2; do
    S="$T/$arch-split.gguf"
    "$SYNTH" -f --arch "$arch" --layout split --seed 7 -t 2 "$S" 2>/dev/null
    "$INSPECT" "$S" >"$T/$arch-split.txt"
    check "$arch: the synthesised input has per-expert tensors and no stacked ones" \
        test -n "$(grep -E ' blk\.[0-9]+\.ffn_up\.3\.weight ' "$T/$arch-split.txt")" -a \
        -z "$(grep '_exps\.' "$T/$arch-split.txt")"
    for type in q4_0 q4_K_M; do
        one="$T/$arch-$type-one.gguf" two="$T/$arch-$type-two.gguf"
        "$QUANT" -f -t 2 "$S" "$one" "$type" 2>"$T/$arch-$type.log" >/dev/null
        check "$arch $type: one step succeeds" test $? -eq 0
        two_step "$S" "$two" "$type"
        check "$arch $type: repack then quantize succeeds" test $? -eq 0
        check "$arch $type: one step == repack then quantize, byte for byte" cmp "$one" "$two"
        check "$arch $type: one info line says the input is stacked on the fly" test \
            "$(grep -c "is a legacy split-expert file: stacking .* on the fly" "$T/$arch-$type.log")" -eq 1
    done
    "$INSPECT" --verify "$T/$arch-q4_0-one.gguf" >"$T/$arch-one.txt"
    check "$arch: the output is stacked, quantized and verifies" test \
        -n "$(grep -E ' blk\.[0-9]+\.ffn_up_exps\.weight +q4_0 ' "$T/$arch-one.txt")" -a \
        -z "$(grep -E 'ffn_(gate|up|down)\.[0-9]+\.' "$T/$arch-one.txt")" -a \
        -n "$(grep 'tensors match' "$T/$arch-one.txt")"
done
check "shared experts are part of the qwen2moe and deepseek2 outputs" test \
    -n "$(grep shexp "$T/qwen2moe-one.txt")" -a -n "$(grep shexp "$T/deepseek2-one.txt")"

# an importance matrix names the stacked tensors; it applies to the stacked-on-
# the-fly tensors per expert exactly as to the stacked file's
S="$T/qwen2moe-split.gguf"
"$REPACK" -q -f "$S" "$T/qwen2moe-stacked.gguf"
for i in $(seq 1 100); do printf 'the quick brown fox %d jumps over the lazy dog. ' "$i"; done >"$T/text.txt"
"$IMATRIX" -m "$T/qwen2moe-stacked.gguf" -f "$T/text.txt" -c 64 --chunks 4 -t 2 -o "$T/im.dat" \
    >/dev/null 2>&1
check "imatrix of the stacked model" test -s "$T/im.dat"
for type in q4_0 iq4_xs q4_K_M; do
    "$QUANT" -f -t 2 --json --imatrix "$T/im.dat" "$S" "$T/im-$type-one.gguf" "$type" \
        >"$T/im-$type.json" 2>/dev/null
    check "imatrix $type: one step succeeds" test $? -eq 0
    check "imatrix $type: used for the stacked experts" \
        grep -q '"name": "blk.0.ffn_up_exps.weight".*"imatrix": true' "$T/im-$type.json"
    two_step "$S" "$T/im-$type-two.gguf" "$type" --imatrix "$T/im.dat"
    check "imatrix $type: one step == repack then quantize" cmp "$T/im-$type-one.gguf" \
        "$T/im-$type-two.gguf"
done

# --merge-lora: adapters name stacked tensors, so the merge reads the legacy
# base stacked too (the pack's adapter and split model, when the pack is there)
LORA="${MOE_CONFORMANCE_DIR:-}/models/tiny-llama-lora.gguf"
LSPLIT="${MOE_CONFORMANCE_DIR:-}/models/tiny-llama-split.gguf"
if [ -f "$LORA" ] && [ -f "$LSPLIT" ]; then
    "$QUANT" -f -q -t 2 --merge-lora "$LORA:0.5" "$LSPLIT" "$T/lora-one.gguf" q4_0
    check "--merge-lora on a legacy base succeeds" test $? -eq 0
    two_step "$LSPLIT" "$T/lora-two.gguf" q4_0 --merge-lora "$LORA:0.5"
    check "--merge-lora: one step == repack then quantize" cmp "$T/lora-one.gguf" "$T/lora-two.gguf"
else
    echo "conformance pack not found: --merge-lora on a legacy base not checked"
fi

# --dry-run plans the stacked model and writes nothing
"$QUANT" --dry-run "$S" "$T/dry.gguf" q4_0 >"$T/dry.txt" 2>/dev/null
check "dry run lists the stacked tensors, writes nothing" test \
    -n "$(grep 'blk.0.ffn_down_exps.weight' "$T/dry.txt")" -a ! -e "$T/dry.gguf"

# failures: exit 1, the file and the tensor named, nothing at OUT, no temp files
mkdir -p "$T/bad"
refused() { # refused NAME IN PATTERN...: moe-quantize IN fails naming each PATTERN
    local name=$1 in=$2 out="$T/bad/$1.out.gguf" p
    shift 2
    "$QUANT" -t 2 "$in" "$out" q4_0 >/dev/null 2>"$T/bad/$name.err"
    check "$name: exit 1" test $? -eq 1
    for p in "$@"; do
        check "$name: the message names '$p'" grep -qF -- "$p" "$T/bad/$name.err"
    done
    check "$name: no output" test ! -e "$out"
}
L="$T/llama-split.gguf"

# a corrupt expert: its bytes no longer match the stored moe.xxh3
cp "$L" "$T/bad/corrupt.gguf"
off=$(awk '$2 == "blk.1.ffn_up.5.weight" { print $NF }' "$T/llama-split.txt")
check "offset of blk.1.ffn_up.5.weight found" test -n "$off"
printf 'XXXX' | dd of="$T/bad/corrupt.gguf" bs=1 seek=$((off + 1000)) conv=notrunc 2>/dev/null
refused corrupt "$T/bad/corrupt.gguf" corrupt.gguf "blk.1.ffn_up.5.weight" checksum

# a missing expert: expert 5 of blk.1.ffn_down renamed out of the family
perl -0777 -pe 's/blk\.1\.ffn_down\.5\.weight/blk.1.ffn_dowX.5.weight/' "$L" >"$T/bad/missing.gguf"
check "rename applied" test -n "$("$INSPECT" "$T/bad/missing.gguf" | grep 'blk.1.ffn_dowX.5.weight')"
refused missing "$T/bad/missing.gguf" missing.gguf "blk.1.ffn_down.5.weight"

# another type: blk.0.ffn_up.2.weight relabelled bf16 (same size, the bytes
# and their checksum unchanged); its type id follows the name, n_dims and ne
cp "$L" "$T/bad/type.gguf"
name=blk.0.ffn_up.2.weight
pos=$(grep -obUaF -m1 "$name" "$T/bad/type.gguf" | head -n 1 | cut -d: -f1)
tpos=$((pos + ${#name} + 4 + 2 * 8))
check "the type there is f16 (1)" test "$(od -An -tu4 -j "$tpos" -N4 "$T/bad/type.gguf" | tr -d ' ')" = 1
printf '\036' | dd of="$T/bad/type.gguf" bs=1 seek="$tpos" conv=notrunc 2>/dev/null
check "relabelled as bf16" test -n "$("$INSPECT" "$T/bad/type.gguf" | grep -E "$name +bf16")"
refused type "$T/bad/type.gguf" type.gguf "$name" "differs in type"

# moe-repack refuses the same files: the one step is no more lenient
for f in corrupt missing type; do
    "$REPACK" -q "$T/bad/$f.gguf" "$T/bad/$f.repacked.gguf" 2>/dev/null
    check "moe-repack refuses $f too" test $? -eq 1
done
check_no_temp_files "$T/bad"

finish
