#!/bin/bash
# Bad surroundings found by trying (issue 16, "Hardening"): output that cannot
# be written is an error, not a silent exit 0. Runs on a moe-synth model, so
# it needs no conformance pack.
set -u
source "$MOE_TEST_DIR/sh_util.sh"
T=$(make_tmp hardening-cli)
B="$MOE_BIN_DIR"
"$B/moe-synth" -f "$T/m.gguf" > /dev/null 2>&1
check "synth model written" test -s "$T/m.gguf"

# stdout on a full device: every tool that prints results must notice
if [ -w /dev/full ]; then
    while IFS='|' read -r name cmd; do
        eval "$cmd" > /dev/full 2> "$T/err.txt"; rc=$?
        check "$name > /dev/full: exit 1 (got $rc)" test $rc -eq 1
        check "$name > /dev/full: says so" grep -q "writing to standard output failed" "$T/err.txt"
    done <<LIST
moe-inspect --json|"$B/moe-inspect" --json "$T/m.gguf"
moe-inspect|"$B/moe-inspect" "$T/m.gguf"
moe-manifest hash|"$B/moe-manifest" hash "$T/m.gguf"
moe-run -p|"$B/moe-run" -m "$T/m.gguf" -p hi -n 4 -s 1
LIST
fi
finish
