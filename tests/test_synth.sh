#!/usr/bin/env bash
# moe-synth end to end: every arch in both expert layouts and several types is
# written, read back (checksums, schema, weight statistics) by `test_arch check`
# ($1), output is deterministic and independent of the thread count, --vocab
# copies the tokenizer keys, and bad arguments fail with a message.
set -u
CHECKER=${1:?usage: test_synth.sh PATH/TO/test_arch}
SYNTH="$MOE_BIN_DIR/moe-synth"
DIR="$MOE_TMP/synth.$$"
mkdir -p "$DIR"
trap 'rm -rf "$DIR"' EXIT
fails=0
fail() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }

synth() { "$SYNTH" "$@" >"$DIR/out.txt" 2>"$DIR/err.txt" || { fail "moe-synth $*: $(cat "$DIR/err.txt")"; return 1; }; }
check() { "$CHECKER" check "$@" >"$DIR/check.txt" 2>&1 || { fail "check $*"; cat "$DIR/check.txt" >&2; }; }

# 1. every arch, both layouts, float / legacy / k / non-linear / interleaved types
for arch in llama qwen2moe qwen3moe olmoe deepseek2; do
    for type in f16 q4_0 q4_K iq4_nl q8_0_r8; do
        for layout in stacked split; do
            f="$DIR/$arch-$type-$layout.gguf"
            synth -a "$arch" --type "$type" --layout "$layout" -t 2 "$f" && check "$f"
            rm -f "$f"
        done
    done
done
# the remaining generated types once each (llama, stacked)
for type in f32 bf16 q4_1 q5_0 q5_1 q8_0 q2_K q3_K q5_K q6_K iq4_xs q4_0_r8 iq4_nl_r4 \
            q5_0_r4 q2_k_r4 q3_k_r4 q4_k_r4 q5_k_r4 q6_k_r4 iq4_xs_r8; do
    f="$DIR/llama-$type.gguf"
    synth --type "$type" --n-layer 1 "$f" && check "$f"
    rm -f "$f"
done
# structural variants: dense llama, tied output, V2-Lite attention, MLA layouts,
# softmax deepseek2, a scaled real preset
n=0
for opts in "--n-expert 0 --n-expert-used 0" "--tie-output -a qwen3moe" \
            "-a deepseek2 --q-lora-rank 0 --n-shared-exp 2" "-a deepseek2 --mla ik" \
            "-a deepseek2 --mla ik-2d --layout split" "-a deepseek2 --mla 3d --type q8_0" \
            "-a deepseek2 --gating softmax --n-dense-lead 0" \
            "--preset deepseek-v2-lite --scale 0.0005 --n-layer 3 --n-vocab 300 --type q4_K" \
            "--preset qwen3-30b-a3b --scale 0.0005 --n-layer 2 --n-expert 16 --n-vocab 300"; do
    n=$((n + 1))
    f="$DIR/variant$n.gguf"
    # shellcheck disable=SC2086
    synth $opts "$f" && check "$f"
    rm -f "$f"
done

# 2. determinism: same seed -> same bytes, whatever the thread count; new seed -> new bytes
synth --type q4_K -a qwen2moe --seed 7 -t 1 "$DIR/a.gguf"
synth --type q4_K -a qwen2moe --seed 7 -t 2 "$DIR/b.gguf"
synth --type q4_K -a qwen2moe --seed 7 -t 3 "$DIR/c.gguf"
synth --type q4_K -a qwen2moe --seed 7 -t 2 "$DIR/d.gguf"
synth --type q4_K -a qwen2moe --seed 8 -t 2 "$DIR/e.gguf"
cmp -s "$DIR/a.gguf" "$DIR/b.gguf" || fail "-t 1 and -t 2 differ"
cmp -s "$DIR/a.gguf" "$DIR/c.gguf" || fail "-t 1 and -t 3 differ"
cmp -s "$DIR/b.gguf" "$DIR/d.gguf" || fail "two runs differ"
cmp -s "$DIR/a.gguf" "$DIR/e.gguf" && fail "seeds 7 and 8 give the same file"
# a tensor larger than one 2 MiB chunk, so chunks really run on several threads
synth --type f32 --n-vocab 4096 --n-layer 1 -t 1 "$DIR/big1.gguf"
synth --type f32 --n-vocab 4096 --n-layer 1 -t 4 "$DIR/big4.gguf"
cmp -s "$DIR/big1.gguf" "$DIR/big4.gguf" || fail "multi-chunk tensors depend on threads"
rm -f "$DIR"/*.gguf

# 3. --vocab copies every tokenizer key and takes n_vocab from it
VOCAB="$MOE_CONFORMANCE_DIR/vocab/ggml-vocab-llama-spm.gguf"
if [ -f "$VOCAB" ]; then
    f="$DIR/vocab.gguf"
    synth --vocab "$VOCAB" --n-embd 128 --n-ff 128 --type q4_0 --tie-output "$f" && {
        "$CHECKER" samekeys tokenizer. "$VOCAB" "$f" >"$DIR/check.txt" 2>&1 ||
            { fail "tokenizer keys not copied"; cat "$DIR/check.txt" >&2; }
        grep -q "V=32000" "$DIR/out.txt" || fail "n_vocab not taken from --vocab"
        check "$f"
    }
    rm -f "$f"
fi

# 4. bad arguments: non-zero exit, "moe-synth: ..." on stderr, no output file
expect_fail() {
    local code=$1 needle=$2
    shift 2
    "$SYNTH" "$@" >/dev/null 2>"$DIR/err.txt"
    local rc=$?
    [ "$rc" -eq "$code" ] || fail "moe-synth $* exited $rc, expected $code"
    grep -q "^moe-synth: .*$needle" "$DIR/err.txt" ||
        fail "moe-synth $*: stderr lacks '$needle': $(cat "$DIR/err.txt")"
    [ ! -e "$DIR/bad.gguf" ] || { fail "moe-synth $* left a file"; rm -f "$DIR/bad.gguf"; }
}
expect_fail 2 "n_head (5) must divide n_embd" --n-head 5 "$DIR/bad.gguf"
expect_fail 2 "n_expert_used (9) must be at most n_expert (8)" --n-expert-used 9 "$DIR/bad.gguf"
expect_fail 2 "multiple of its block size 256" --type q4_K --n-embd 320 "$DIR/bad.gguf"
expect_fail 2 "n_head_kv (3) must divide n_head" --n-head-kv 3 "$DIR/bad.gguf"
expect_fail 2 "not a type moe-synth can generate" --type q8_1 "$DIR/bad.gguf"
expect_fail 2 "not a type moe-synth can generate" --type iq2_xxs "$DIR/bad.gguf"
expect_fail 2 "unknown --arch" -a mixtral "$DIR/bad.gguf"
expect_fail 2 "unknown --preset" --preset gpt5 "$DIR/bad.gguf"
expect_fail 2 "is a llama model" --preset mixtral-8x7b -a olmoe "$DIR/bad.gguf"
expect_fail 2 "--layout" --layout diagonal "$DIR/bad.gguf"
expect_fail 2 "needs output.weight" -a qwen2moe --tie-output "$DIR/bad.gguf"
expect_fail 2 "only deepseek2" --gating sigmoid "$DIR/bad.gguf"
expect_fail 2 "kv_lora_rank" -a deepseek2 --kv-lora-rank 0 "$DIR/bad.gguf"
expect_fail 2 "built-in vocabulary" --n-vocab 100 "$DIR/bad.gguf"
expect_fail 2 "scale" --scale 2 "$DIR/bad.gguf"
expect_fail 2 "" --no-such-option "$DIR/bad.gguf"
expect_fail 2 "" -t 2
expect_fail 1 "" --vocab "$DIR/missing.gguf" "$DIR/bad.gguf"
: >"$DIR/exists.gguf"
"$SYNTH" "$DIR/exists.gguf" >/dev/null 2>&1 && fail "overwrote an existing file without --force"
[ ! -s "$DIR/exists.gguf" ] || fail "existing file changed without --force"
synth -f "$DIR/exists.gguf" && [ -s "$DIR/exists.gguf" ] || fail "--force did not overwrite"
"$SYNTH" --help | grep -q -- "--preset" || fail "--help"
# --dry-run reports the real model's size and writes nothing
"$SYNTH" --dry-run --preset mixtral-8x7b --type q4_0 "$DIR/dry.gguf" >"$DIR/out.txt" 2>&1 ||
    fail "--dry-run: $(cat "$DIR/out.txt")"
grep -q "D=4096 L=32 H=32/8 E=8 K=2 Fe=14336 V=32000" "$DIR/out.txt" || fail "mixtral shapes"
[ ! -e "$DIR/dry.gguf" ] || fail "--dry-run wrote a file"

# 5. routing like a real model's: random tokens reach many experts. Weights
# that all averaged off zero (Q4_0, IQ4_NL with d > 0) sent every token of a
# benchmark to the same few experts, so tg read the same bytes each token: 4-5
# of 16 experts in most layers here over 64 generated tokens, 9-14 now.
if [ -x "$MOE_BIN_DIR/moe-bench" ] && [ -x "$MOE_BIN_DIR/moe-stats" ]; then
    for type in q4_0 iq4_nl q4_K q4_0_r8; do
        f="$DIR/route-$type.gguf"
        synth --n-embd 256 --n-layer 4 --n-head 4 --n-head-kv 2 --n-expert 16 --n-expert-used 2 \
              --n-ff 256 --n-vocab 1000 --type "$type" "$f" || continue
        "$MOE_BIN_DIR/moe-bench" -m "$f" -p '' -n 32 -r 1 -t 2 --bw-size 16M \
            --expert-stats "$DIR/route.json" >"$DIR/bench.txt" 2>&1 ||
            { fail "moe-bench $type: $(tail -3 "$DIR/bench.txt")"; continue; }
        # the roofline column: a read bandwidth measured (> 0) at start, and the tg row's
        # share of the bandwidth measured around its runs, that bandwidth (> 0) beside it
        awk '/^read bandwidth:/ { if ($3 + 0 > 0) ok = 1 } END { exit !ok }' "$DIR/bench.txt" &&
            grep -Eq '\| tg32 \| [0-9.]+ ± [0-9.]+ \| [0-9.]+ \([0-9]+% of [0-9.]+\) \|' "$DIR/bench.txt" &&
            sed -n 's/.*| tg32 |.*% of \([0-9.]*\)) |.*/\1/p' "$DIR/bench.txt" |
                awk '{ if ($1 + 0 > 0) ok = 1 } END { exit !ok }' ||
            fail "moe-bench $type: no read bandwidth or no share of it in the tg row"
        "$MOE_BIN_DIR/moe-stats" report "$DIR/route.json" >"$DIR/report.txt" 2>&1 ||
            { fail "moe-stats report $type"; continue; }
        # layer rows: layer phase tokens entropy top10% unused
        worst=$(awk '$2 == "gen" && $1 ~ /^[0-9]+$/ { if ($6 > m) m = $6 } END { print m + 0 }' "$DIR/report.txt")
        layers=$(awk '$2 == "gen" && $1 ~ /^[0-9]+$/' "$DIR/report.txt" | wc -l)
        [ "$layers" -eq 4 ] && [ "$worst" -le 9 ] ||
            fail "$type: generation reaches too few experts (a layer leaves $worst of 16 unused; $layers layers)"
        rm -f "$f"
    done
fi

if [ "$fails" -ne 0 ]; then
    echo "$fails failure(s)"
    exit 1
fi
echo "moe-synth: all checks passed"
