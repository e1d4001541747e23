#!/bin/bash
# --threads in a build without OpenMP: every parallel loop is serial there, so
# asking for more than one thread must warn rather than be ignored silently;
# a build with OpenMP must say nothing. $1 is the build's MOE_OPENMP (ON/OFF).
set -u
source "$MOE_TEST_DIR/sh_util.sh"
openmp=$1
synth="$MOE_BIN_DIR/moe-synth"
tmp=$(make_tmp threads_cli)

"$synth" --dry-run -t 4 "$tmp/x.gguf" >"$tmp/out" 2>"$tmp/err"
check "dry run with -t 4 succeeds" [ $? -eq 0 ]
case "$openmp" in
ON | on | 1 | TRUE | true)
    check "no thread warning with OpenMP" bash -c "! grep -q 'without OpenMP' '$tmp/err'" ;;
*)
    check "thread warning without OpenMP" grep -q -- '--threads 4 ignored: built without OpenMP' "$tmp/err" ;;
esac
"$synth" --dry-run -t 1 "$tmp/x.gguf" >"$tmp/out" 2>"$tmp/err"
check "-t 1 never warns" bash -c "! grep -q 'without OpenMP' '$tmp/err'"
finish
