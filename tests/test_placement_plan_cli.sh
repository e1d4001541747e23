#!/bin/bash
# --hot-experts / --gpu-budget / --fit / --fit-margin through the tools, on
# CPU1 with a fake memory size (MOE_CPU1_MEMORY): statistics made by moe-run
# --expert-stats place the hottest experts, the printed arguments pasted back
# give the same placement (the -v report) and the same text, moe-bench and
# moe-perplexity take the options, and bad input fails with a clear message.
set -u
. "$MOE_TEST_DIR/sh_util.sh"
require_conformance
RUN="$MOE_BIN_DIR/moe-run"
M="$MOE_CONFORMANCE_DIR/models/tiny-qwen2moe.gguf"
T=$(make_tmp placement-plan-cli)
unset MOE_CPU1_MEMORY

"$RUN" -m "$M" -p "the hot experts of this model" -n 6 --temp 0 -t 1 \
    --expert-stats "$T/stats.json" > /dev/null 2>&1
check "moe-run --expert-stats exits 0" test $? -eq 0

# The printed arguments of a plan, pasted back: the same -v report, and the
# text of the single-device run (greedy, so equal logits give equal text).
"$RUN" -m "$M" -p "placed" -n 3 --temp 0 -t 1 -c 64 > "$T/single.out" 2> /dev/null
round_trip() { # LABEL ARGS...
    local label=$1
    shift
    "$RUN" -m "$M" -p "placed" -n 3 --temp 0 -t 1 -c 64 -v "$@" > "$T/plan.out" 2> "$T/plan.err"
    check "$label: exits 0" test $? -eq 0
    local args
    args=$(grep -a 'the placement as arguments: ' "$T/plan.err" | sed 's/.*the placement as arguments: //')
    check "$label: prints the placement as arguments" test -n "$args"
    eval "set -- $args"
    "$RUN" -m "$M" -p "placed" -n 3 --temp 0 -t 1 -c 64 -v "$@" > "$T/back.out" 2> "$T/back.err"
    check "$label: the arguments are accepted" test $? -eq 0
    grep -a '^placement: ' "$T/plan.err" > "$T/plan.place"
    grep -a '^placement: ' "$T/back.err" > "$T/back.place"
    check "$label: the same placement from '$args'" cmp -s "$T/plan.place" "$T/back.place"
    check "$label: some of it on CPU1" grep -q 'CPU1' "$T/plan.place"
    check "$label: the single-device text" cmp -s "$T/plan.out" "$T/single.out"
    check "$label: the same text passed back" cmp -s "$T/plan.out" "$T/back.out"
}
round_trip "--hot-experts --gpu-budget" --hot-experts "$T/stats.json" --gpu-budget 2M \
    -dev CPU1 -ngl 99
MOE_CPU1_MEMORY=6M round_trip "--fit" --fit --fit-margin 512K -dev CPU1
MOE_CPU1_MEMORY=6M round_trip "--fit --hot-experts" --fit --fit-margin 512K -dev CPU1 \
    --hot-experts "$T/stats.json"

# the hottest experts (by prompt + gen count) are the ones moved: with room
# for one expert, layer 0's is the most chosen of layer 0 or layer 1
if command -v python3 > /dev/null; then
    want=$(python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
best = max(((l["prompt"]["count"][e] + l["gen"]["count"][e], -l["layer"], -e)
            for l in d["layers"] for e in range(d["n_expert"])))
print("blk\\.%d\\.ffn_(gate|up|down)_exps=CPU1:experts=%d" % (-best[1], -best[2]))' "$T/stats.json")
    "$RUN" -m "$M" -p "x" -n 1 --temp 0 -t 1 --hot-experts "$T/stats.json" --gpu-budget 400K \
        -dev CPU1 > /dev/null 2> "$T/one.err"
    check "room for one expert: the hottest ($want)" grep -qF "'$want'" "$T/one.err"
fi

"$MOE_BIN_DIR/moe-bench" -m "$M" -p 4 -n 2 -r 1 -t 1 --bw-size 1M --hot-experts "$T/stats.json" \
    --gpu-budget 1M -dev CPU1 > /dev/null 2> "$T/bench.err"
check "moe-bench --hot-experts exits 0" test $? -eq 0
check "... and places experts" grep -q 'the placement as arguments' "$T/bench.err"
MOE_CPU1_MEMORY=64M "$MOE_BIN_DIR/moe-perplexity" -m "$M" -f "$MOE_CONFORMANCE_DIR/calib.txt" \
    -c 32 --chunks 1 --fit --fit-margin 1M -dev CPU1 > /dev/null 2> "$T/ppl.err"
check "moe-perplexity --fit exits 0" test $? -eq 0
check "... and fits" grep -q -- '--fit: the placement as arguments: -dev CPU1 -ngl 3$' "$T/ppl.err"

# bad input: exit status and the message
fails() { # LABEL STATUS MESSAGE ARGS...
    local label=$1 status=$2 msg=$3
    shift 3
    "$RUN" -m "$M" -p "x" -n 1 -t 1 "$@" > /dev/null 2> "$T/bad.err"
    local got=$?
    check "$label: exit $status (got $got)" test "$got" -eq "$status"
    check "$label: says '$msg'" grep -qF -- "$msg" "$T/bad.err"
}
fails "malformed --gpu-budget" 2 "option --gpu-budget" --hot-experts "$T/stats.json" \
    --gpu-budget 12Q -dev CPU1
fails "malformed --fit-margin" 2 "option --fit-margin" --fit --fit-margin 1.5G -dev CPU1
fails "--gpu-budget alone" 2 "option --gpu-budget: only with --hot-experts" --gpu-budget 1G
fails "--fit-margin alone" 2 "option --fit-margin: only with --fit" --fit-margin 1G
fails "--hot-experts alone" 2 "give --gpu-budget SIZE or --fit" --hot-experts "$T/stats.json"
fails "a missing statistics file" 1 "$T/none.json" --hot-experts "$T/none.json" --gpu-budget 1G
echo '{"model": "x"' > "$T/broken.json"
fails "a broken statistics file" 1 "$T/broken.json" --hot-experts "$T/broken.json" \
    --gpu-budget 1G -dev CPU1
python3 - "$T/stats.json" "$T/other.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
d["n_expert"] = 4
for l in d["layers"]:
    for p in ("prompt", "gen"):
        l[p]["count"] = l[p]["count"][:4]; l[p]["weight"] = l[p]["weight"][:4]
        l[p].pop("n_tokens", None)
json.dump(d, open(sys.argv[2], "w"))
PY
fails "statistics of another model" 2 "$T/other.json: counted on a model with 4 experts" \
    --hot-experts "$T/other.json" --gpu-budget 1G -dev CPU1
fails "--fit without a memory size" 1 "CPU1 does not report its free memory" --fit -dev CPU1
fails "--fit with -ngl" 2 "--fit chooses -ngl and -ot itself: drop -ngl" --fit -dev CPU1 -ngl 2
MOE_CPU1_MEMORY=1M "$RUN" -m "$M" -p "x" -n 1 -t 1 --fit -dev CPU1 > /dev/null 2> "$T/warn.err"
check "free memory under the margin: runs" test $? -eq 0
check "... and says so" grep -q 'not more than the margin' "$T/warn.err"

rm -rf "$T"
finish
