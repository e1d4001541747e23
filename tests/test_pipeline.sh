#!/bin/bash
# ci/convert, the CI conversion pipeline, on the conformance split model with
# two types: a valid manifest (read back with jansson, every file and tensor
# hash recomputed), byte-identical outputs and manifest on a second run,
# resumption (nothing redone, one deleted or corrupted output redone alone),
# merging the manifests of parallel jobs, zstd outputs, a failing smoke run,
# tool and option changes, usage errors.
set -u
. "$MOE_TEST_DIR/sh_util.sh"
require_conformance
T=$(make_tmp pipeline)
CONVERT="$(cd "$MOE_TEST_DIR/.." && pwd)/ci/convert"
MANIFEST="$MOE_BIN_DIR/moe-manifest"
MC="$(dirname "$MOE_BIN_DIR")/tests/manifest_check"
SRC="$MOE_CONFORMANCE_DIR/models/tiny-llama-split.gguf"
NAME=tiny-llama-split
TYPES=q4_0,iq4_nl

convert() { # convert OUTDIR [options]: the pipeline on $CONVERT_SRC or SRC, quiet
    local out=$1
    shift
    sh "$CONVERT" "${CONVERT_SRC:-$SRC}" "$out" --bin "$MOE_BIN_DIR" "$@" >"$out.log" 2>&1
}
status_is() { # status_is MANIFEST "ID=STATUS/RESULT ..."
    local got
    got=$("$MC" status "$1")
    [ "$got" = "$2" ] || { echo "  status: $got" >&2; echo "  wanted: $2" >&2; false; }
}
all_status() { # all_status STATUS: that status for every step of the two-type run
    local s="inspect=$1/ok" t
    for t in q4_0 iq4_nl; do s="$s quantize-$t=$1/ok verify-$t=$1/ok smoke-$t=$1/ok"; done
    echo "$s"
}
valid() { # valid OUTDIR TYPES [ZSTD]
    "$MC" valid "$1/manifest.json" "$1" "$MOE_BIN_DIR" "$CONVERT" "$SRC" "$2" "${3:-null}" >/dev/null
}
same_manifest() { # same_manifest A B: equal outside "run" (manifest_check same)
    "$MC" same "$1" "$2" >/dev/null
}
same_outputs() { # same_outputs DIR_A DIR_B FILE...
    local a=$1 b=$2 f
    shift 2
    for f in "$@"; do cmp -s "$a/$f" "$b/$f" || return 1; done
}
OUTS=("$NAME-q4_0.gguf" "$NAME-iq4_nl.gguf")

# ---- usage ------------------------------------------------------------------------
sh "$CONVERT" --help >"$T/help.txt"
check "--help exits 0" test $? -eq 0
check "--help shows usage and exit codes" grep -q "exit codes: 0 ok, 1 .*, 2 usage" "$T/help.txt"
sh "$CONVERT" >/dev/null 2>&1
check "no arguments: exit 2" test $? -eq 2
sh "$CONVERT" "$SRC" "$T/u" --bin "$MOE_BIN_DIR" >/dev/null 2>&1
check "no --types: exit 2" test $? -eq 2
sh "$CONVERT" "$SRC" "$T/u" --types q9_9 --bin "$MOE_BIN_DIR" >/dev/null 2>&1
check "unknown type: exit 2" test $? -eq 2
sh "$CONVERT" "$SRC" "$T/u" --types q4_0,q4_0 --bin "$MOE_BIN_DIR" >/dev/null 2>&1
check "repeated type: exit 2" test $? -eq 2
sh "$CONVERT" "$SRC" "$T/u" --types q4_0 --frobnicate --bin "$MOE_BIN_DIR" >/dev/null 2>&1
check "unknown option: exit 2" test $? -eq 2
sh "$CONVERT" "$SRC" "$T/u" --types q4_0 -t 2 -t 3 --bin "$MOE_BIN_DIR" >/dev/null 2>&1
check "option given twice: exit 2" test $? -eq 2
sh "$CONVERT" "$T/missing.gguf" "$T/u" --types q4_0 --bin "$MOE_BIN_DIR" >/dev/null 2>&1
check "missing source: exit 2" test $? -eq 2
sh "$CONVERT" "$SRC" "$T/u" --types q4_0 --bin "$T/nowhere" >/dev/null 2>&1
check "missing tools: exit 2" test $? -eq 2
check "usage errors leave OUTDIR alone" test ! -e "$T/u"
"$MANIFEST" --help >/dev/null
check "moe-manifest --help exits 0" test $? -eq 0
"$MANIFEST" record >/dev/null 2>&1
check "moe-manifest usage error exits 2" test $? -eq 2

# ---- a run, checked field by field ------------------------------------------------
convert "$T/a" --types "$TYPES" -t 2
check "pipeline succeeds" test $? -eq 0
check "manifest valid, every hash recomputed" valid "$T/a" "$TYPES"
check "every step done" status_is "$T/a/manifest.json" "$(all_status "done")"
"$MOE_BIN_DIR/moe-quantize" -q --type iq4_nl "$SRC" "$T/direct.gguf"
check "output equals moe-quantize's own" cmp -s "$T/a/$NAME-iq4_nl.gguf" "$T/direct.gguf"
# the split SRC goes straight to the quantizer: the bytes of the old two steps,
# and no stacked copy of SRC on disk
"$MOE_BIN_DIR/moe-repack" -q "$SRC" "$T/stacked.gguf" &&
    "$MOE_BIN_DIR/moe-quantize" -q --type iq4_nl "$T/stacked.gguf" "$T/two-step.gguf"
check "output equals repack then quantize" cmp -s "$T/a/$NAME-iq4_nl.gguf" "$T/two-step.gguf"
check "no stacked intermediate written" test -z "$(find "$T/a" -name '*stacked*' -print -quit)"

# ---- reproducible: another directory, another thread count ------------------------
convert "$T/b" --types "$TYPES" -t 1
check "second run succeeds" test $? -eq 0
check "outputs byte-identical" same_outputs "$T/a" "$T/b" "${OUTS[@]}"
check "manifests identical outside run" same_manifest "$T/a/manifest.json" "$T/b/manifest.json"

# ---- resumable ----------------------------------------------------------------------
convert "$T/a" --types "$TYPES" -t 2
check "rerun succeeds" test $? -eq 0
check "rerun skips every step" status_is "$T/a/manifest.json" "$(all_status skipped)"
check "rerun manifest identical outside run" same_manifest "$T/a/manifest.json" "$T/b/manifest.json"

rm "$T/a/$NAME-iq4_nl.gguf"
convert "$T/a" --types "$TYPES" -t 2
check "rerun after a deletion succeeds" test $? -eq 0
want=$(all_status skipped | sed 's/quantize-iq4_nl=skipped/quantize-iq4_nl=done/')
check "only the deleted output's step is redone" status_is "$T/a/manifest.json" "$want"
check "deleted output restored byte for byte" same_outputs "$T/a" "$T/b" "${OUTS[@]}"
check "manifest identical after the redo" same_manifest "$T/a/manifest.json" "$T/b/manifest.json"

printf 'XXXX' | dd of="$T/a/$NAME-q4_0.gguf" bs=1 seek=100000 conv=notrunc 2>/dev/null
check "corruption in place (same size)" test "$(wc -c <"$T/a/$NAME-q4_0.gguf")" -eq \
    "$(wc -c <"$T/b/$NAME-q4_0.gguf")"
convert "$T/a" --types "$TYPES" -t 2
check "rerun after corruption succeeds" test $? -eq 0
want=$(all_status skipped | sed 's/quantize-q4_0=skipped/quantize-q4_0=done/')
check "corrupted output detected and only its step redone" status_is "$T/a/manifest.json" "$want"
check "corruption repaired" same_outputs "$T/a" "$T/b" "${OUTS[@]}"
check "the log says why" grep -q "quantize-q4_0: running (output $NAME-q4_0.gguf does not match" \
    "$T/a.log"

check "still valid after all the redos" valid "$T/a" "$TYPES"

# ---- parallel jobs: one type each, merged (one reads SRC from another directory) -----
mkdir -p "$T/elsewhere" && cp "$SRC" "$T/elsewhere/"
CONVERT_SRC="$T/elsewhere/$NAME.gguf" convert "$T/c" --types q4_0 -t 2 &&
    convert "$T/d" --types iq4_nl -t 2
check "per-type jobs succeed" test $? -eq 0
"$MANIFEST" merge "$T/merged.json" "$T/c/manifest.json" "$T/d/manifest.json"
check "merge succeeds" test $? -eq 0
check "merged manifest == the two-type run's" same_manifest "$T/merged.json" "$T/b/manifest.json"
"$MANIFEST" merge "$T/dup.json" "$T/c/manifest.json" "$T/c/manifest.json" "$T/a/manifest.json"
check "merging overlapping jobs keeps one copy of each step" same_manifest "$T/dup.json" "$T/b/manifest.json"

# ---- a stacked source goes straight to the quantizer; an imatrix is an input --------
IMAT="$MOE_CONFORMANCE_DIR/imatrix/tiny-llama.imatrix.dat"
STACKED="$MOE_CONFORMANCE_DIR/models/tiny-llama.gguf"
CONVERT_SRC="$STACKED" convert "$T/s" --types q4_0 --imatrix "$IMAT" -t 2
check "stacked source with imatrix succeeds" test $? -eq 0
check "stacked source: the same steps" status_is "$T/s/manifest.json" \
    "inspect=done/ok quantize-q4_0=done/ok verify-q4_0=done/ok smoke-q4_0=done/ok"
"$MOE_BIN_DIR/moe-quantize" -q --type q4_0 --imatrix "$IMAT" "$STACKED" "$T/imat.gguf"
check "output equals moe-quantize --imatrix's own" cmp -s "$T/s/tiny-llama-q4_0.gguf" "$T/imat.gguf"
check "imatrix hashed as an input of the quantize step" test \
    "$("$MANIFEST" hash "$IMAT" | cut -c1-16)" = "$("$MC" get "$T/s/manifest.json" manifest.steps.quantize-q4_0.inputs.1.xxh3)"

# ---- zstd outputs: verified through decompression, smoke run from the .zst ----------
convert "$T/z" --types q4_0 --zstd=5 -t 2
check "zstd pipeline succeeds" test $? -eq 0
check "zstd output published" test -f "$T/z/$NAME-q4_0.gguf.zst"
check "zstd manifest valid (tensors of the plain file)" valid "$T/z" q4_0 5
"$MANIFEST" unzstd "$T/z/$NAME-q4_0.gguf.zst" "$T/z.plain"
check "zstd output restores to the plain output" cmp -s "$T/a/$NAME-q4_0.gguf" "$T/z.plain"
"$MANIFEST" merge "$T/bad.json" "$T/c/manifest.json" "$T/z/manifest.json" 2>/dev/null
check "merging jobs with other options is refused" test $? -eq 2

# ---- a failing step: non-finite logits, then the real tool again --------------------
mkdir -p "$T/fake"
for t in moe-inspect moe-repack moe-quantize moe-manifest; do ln -sf "$MOE_BIN_DIR/$t" "$T/fake/$t"; done
cat >"$T/fake/moe-run" <<'EOF'
#!/bin/sh
# writes 4 rows of 512 NaN logits where --logits-out says
while [ $# -gt 0 ]; do [ "$1" = --logits-out ] && out=$2; shift; done
head -c 8192 /dev/zero | tr '\000' '\377' >"$out"
EOF
chmod +x "$T/fake/moe-run"
sh "$CONVERT" "$SRC" "$T/f" --types q4_0 --bin "$T/fake" -t 2 >"$T/f.log" 2>&1
check "NaN logits: exit 1" test $? -eq 1
check "smoke step failed, the rest ok" status_is "$T/f/manifest.json" \
    "inspect=done/ok quantize-q4_0=done/ok verify-q4_0=done/ok smoke-q4_0=failed/failed"
check "error names the non-finite logits" grep -q "not finite" \
    <("$MC" get "$T/f/manifest.json" manifest.steps.smoke-q4_0.error)
convert "$T/f" --types q4_0 -t 2
check "real moe-run: success" test $? -eq 0
check "changed tool: only its step reruns" status_is "$T/f/manifest.json" \
    "inspect=skipped/ok quantize-q4_0=skipped/ok verify-q4_0=skipped/ok smoke-q4_0=done/ok"

# ---- killed mid-way: the manifest written after every step lets the rerun resume ----
mkdir -p "$T/kill"
for t in moe-inspect moe-repack moe-run moe-manifest; do ln -sf "$MOE_BIN_DIR/$t" "$T/kill/$t"; done
cat >"$T/kill/moe-quantize" <<EOF
#!/bin/sh
# SIGKILLs ci/convert (the parent) as quantize-iq4_nl starts (not its
# --dry-run check of the types), once: while $T/kill/armed exists
case " \$* " in
    *" --dry-run "*) ;;
    *" --type iq4_nl "*) [ -f "$T/kill/armed" ] && rm -f "$T/kill/armed" && kill -KILL \$PPID && exit 1 ;;
esac
exec "$MOE_BIN_DIR/moe-quantize" "\$@"
EOF
chmod +x "$T/kill/moe-quantize"
touch "$T/kill/armed"
sh "$CONVERT" "$SRC" "$T/k" --types "$TYPES" --bin "$T/kill" -t 2 >"$T/k.log" 2>&1
check "killed in quantize-iq4_nl" test ! -e "$T/kill/armed"
check "the killed run left a manifest of its finished steps" status_is "$T/k/manifest.json" \
    "inspect=done/ok quantize-q4_0=done/ok verify-q4_0=done/ok smoke-q4_0=done/ok"
check "whose result says incomplete" \
    test "$("$MC" get "$T/k/manifest.json" manifest.result)" = incomplete
sh "$CONVERT" "$SRC" "$T/k" --types "$TYPES" --bin "$T/kill" -t 2 >"$T/k.log" 2>&1
check "rerun after the kill succeeds" test $? -eq 0
check "it resumes: only the iq4_nl steps run" status_is "$T/k/manifest.json" \
    "$(all_status skipped | sed 's/\([a-z]*-iq4_nl\)=skipped/\1=done/g')"
check "the resumed outputs equal an uninterrupted run's" same_outputs "$T/k" "$T/b" "${OUTS[@]}"
check "the upload glob OUTDIR/*.gguf* matches the outputs only" \
    test "$(cd "$T/k" && echo *.gguf*)" = "$NAME-iq4_nl.gguf $NAME-q4_0.gguf"
check "the resume record is gone once a run finished" test ! -e "$T/k/work/resume.json"

# ---- changed options redo what they change ------------------------------------------
convert "$T/c" --types q4_0 --interleave -t 2
check "--interleave rerun succeeds" test $? -eq 0
check "new arguments: quantize and what depends on it rerun" status_is "$T/c/manifest.json" \
    "inspect=skipped/ok quantize-q4_0=done/ok verify-q4_0=done/ok smoke-q4_0=done/ok"
check "interleaved tensors written" grep -q q4_0_r8 <("$MOE_BIN_DIR/moe-inspect" "$T/c/$NAME-q4_0.gguf")

# shards, plain and zstd-compressed: verified and smoke-run straight from the shard set
convert "$T/sh" --types q4_0 --shards 1M
check "sharded conversion succeeds (verify and smoke run the shard set)" test $? -eq 0
convert "$T/shz" --types q4_0 --shards 1M --zstd
check "compressed shards: the smoke run loads .gguf.zst shards directly" test $? -eq 0

finish
