#!/bin/bash
# moe-run --expert-stats and moe-stats merge / report / --plot on a conformance
# model: the file's counts per layer sum to tokens x K, a second run replaces
# the file (same bytes: deterministic), merge doubles every count, the report
# prints every layer, the SVG is well-formed, bad input fails cleanly.
set -u
. "$MOE_TEST_DIR/sh_util.sh"
require_conformance
RUN="$MOE_BIN_DIR/moe-run"
STATS="$MOE_BIN_DIR/moe-stats"
M="$MOE_CONFORMANCE_DIR/models/tiny-qwen2moe.gguf"
T=$(make_tmp expert-stats-cli)

"$RUN" -m "$M" -p "the expert statistics" -n 4 --temp 0 --expert-stats "$T/a.json" \
    > /dev/null 2> "$T/run.err"
check "moe-run --expert-stats exits 0" test $? -eq 0
check "the file is written" test -s "$T/a.json"
"$RUN" -m "$M" -p "the expert statistics" -n 4 --temp 0 --expert-stats "$T/a.json" \
    > /dev/null 2>> "$T/run.err"
cp "$T/a.json" "$T/a2.json"
"$RUN" -m "$M" -p "the expert statistics" -n 4 --temp 0 --expert-stats "$T/a.json" \
    > /dev/null 2>> "$T/run.err"
check "a second run replaces the file with the same statistics" cmp -s "$T/a.json" "$T/a2.json"

# every layer's prompt / gen counts sum to n_tokens x K (python3 is part of ci/setup's base)
sums_ok() {
    python3 - "$1" "$2" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); f = int(sys.argv[2])
k = d["n_expert_used"]
ok = len(d["layers"]) > 0
for l in d["layers"]:
    for p in ("prompt", "gen"):
        ok &= sum(l[p]["count"]) == l[p]["n_tokens"] * k
        ok &= l[p]["n_tokens"] > 0 and len(l[p]["count"]) == d["n_expert"]
sys.exit(0 if ok else 1)
PY
}
if command -v python3 > /dev/null; then
    check "counts sum to tokens x K" sums_ok "$T/a.json" 1
fi

# moe-bench: pp tokens as prompt, tg tokens as gen (warm-up + 1 repetition)
"$MOE_BIN_DIR/moe-bench" -m "$M" -p 8 -n 3 -r 1 -t 2 --bw-size 1M --expert-stats "$T/bench.json" > /dev/null 2>&1
check "moe-bench --expert-stats exits 0" test $? -eq 0
if command -v python3 > /dev/null; then
    check "moe-bench counts pp as prompt and tg as gen" python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
sys.exit(0 if all(l["prompt"]["n_tokens"] == 16 and l["gen"]["n_tokens"] == 6 for l in d["layers"]) else 1)' "$T/bench.json"
fi
"$MOE_BIN_DIR/moe-perplexity" -m "$M" -f "$MOE_CONFORMANCE_DIR/calib.txt" -c 32 --chunks 1 \
    --expert-stats "$T/ppl.json" > /dev/null 2>&1
check "moe-perplexity --expert-stats exits 0" test $? -eq 0
check "... and counts 32 prompt tokens" grep -q '"n_tokens": 32' "$T/ppl.json"

"$STATS" merge "$T/a.json" "$T/a2.json" -o "$T/m.json" > /dev/null
check "merge exits 0" test $? -eq 0
if command -v python3 > /dev/null; then
    check "merge doubles every count" python3 -c '
import json, sys
a = json.load(open(sys.argv[1])); m = json.load(open(sys.argv[2]))
sys.exit(0 if all(2 * x == y for la, lm in zip(a["layers"], m["layers"]) for p in ("prompt", "gen")
                  for x, y in zip(la[p]["count"], lm[p]["count"])) else 1)' "$T/a.json" "$T/m.json"
fi

"$STATS" report "$T/m.json" --plot "$T/m.svg" > "$T/report"
check "report exits 0" test $? -eq 0
check "report has a row per layer and phase" test "$(grep -cE '^ +[0-9]+ (prompt|gen) ' "$T/report")" -eq 4
check "report has a summary" grep -q '^summary prompt' "$T/report"
check "the SVG starts as SVG" grep -q '<svg xmlns="http://www.w3.org/2000/svg"' "$T/m.svg"
check "the SVG labels its axes" grep -q '>expert</text>' "$T/m.svg"
if command -v xmllint > /dev/null; then
    check "the SVG is well-formed XML" xmllint --noout "$T/m.svg"
fi

# bad input: clear errors, non-zero exit, no output left behind
echo '{"model": "x", "n_expert": 4, "n_expert_used": 2, "layers": []}' > "$T/other.json"
"$STATS" merge "$T/a.json" "$T/other.json" -o "$T/bad.json" 2> "$T/err"
check "merging another model fails" test $? -ne 0
check "... saying why" grep -q 'other.json: cannot merge' "$T/err"
check "... and writes nothing" test ! -e "$T/bad.json"
echo '{"model": 3}' > "$T/broken.json"
"$STATS" report "$T/broken.json" 2> "$T/err"
check "a broken file fails" test $? -ne 0
check "... naming file and key" grep -q 'broken.json: model: expected a string' "$T/err"
"$STATS" report "$T/m.json" --plot "$T/m.png" 2> "$T/err"
check "--plot other than .svg is refused" test $? -eq 2
"$STATS" frobnicate 2> /dev/null
check "an unknown command is a usage error" test $? -eq 2
"$RUN" -m "$M" -p hi -n 1 --expert-stats "$T/no/such/dir/x.json" > /dev/null 2> "$T/err"
check "an unwritable stats path fails" test $? -ne 0
check "... naming it" grep -q 'no/such/dir/x.json' "$T/err"
check_no_temp_files "$T"
rm -rf "$T"
finish
