#!/bin/bash
# Shift equivalence (test_kv shift) on an F32-weight model of the conformance
# shapes of one architecture, made by moe-synth: with F32 weights nothing
# rounds activations to F16, so the K-shift itself is what is measured.
# $1: test_kv, $2: name, then moe-synth's arguments.
set -u
. "$MOE_TEST_DIR/sh_util.sh"
require_conformance
TEST_KV=$1 NAME=$2
shift 2
T=$(make_tmp "kv-synth-$NAME")
"$MOE_BIN_DIR/moe-synth" --preset tiny --type f32 "$@" -f "$T/$NAME.gguf" > /dev/null 2>&1
check "$NAME synthesised" test -s "$T/$NAME.gguf"
"$TEST_KV" shift "$T/$NAME.gguf"
check "$NAME: shifted continuation within 1e-3 of a fresh one" test $? -eq 0
rm -f "$T/$NAME.gguf"
finish
