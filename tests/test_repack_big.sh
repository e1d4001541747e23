#!/bin/bash
# moe-repack on a synthetic legacy split model of about 2 GB: peak RSS must stay
# under 256 MB (the conversion streams; it never holds a tensor set in memory),
# the result must verify, and Ctrl-C in the middle must leave nothing behind.
set -u
. "$MOE_TEST_DIR/sh_util.sh"
T=$(make_tmp repack-big)
trap 'rm -rf "$T"' EXIT
REPACK="$MOE_BIN_DIR/moe-repack"
RUN_LIMITED="$(dirname "$MOE_BIN_DIR")/tests/run_limited"

# 36 blocks x 8 experts x 3 x [1024 x 2048] q8_0 + attention: ~2.1 GB
"$MOE_BIN_DIR/moe-synth" --preset tiny --arch llama --layout split --type q8_0 \
    --n-embd 1024 --n-ff 2048 --n-expert 8 --n-layer 36 --seed 7 "$T/big-split.gguf"
check "synthesised the big split model" test -s "$T/big-split.gguf"
size=$(stat -c %s "$T/big-split.gguf")
check "model is larger than 2 GB ($size bytes)" test "$size" -gt 2000000000

"$RUN_LIMITED" --maxrss-out "$T/rss" -- "$REPACK" -q --verify "$T/big-split.gguf" "$T/big.gguf"
check "repack of the big model succeeds" test $? -eq 0
rss_kb=$(cat "$T/rss")
echo "peak RSS of moe-repack on a $((size / 1000000)) MB model: $((rss_kb / 1024)) MB"
check "peak RSS $rss_kb KiB < 256 MiB" test "$rss_kb" -lt 262144
"$MOE_BIN_DIR/moe-inspect" --verify "$T/big.gguf" > "$T/inspect.txt"
check "big output verifies" grep -q "tensors match their stored XXH3-64" "$T/inspect.txt"
rm -f "$T/big.gguf"

# Ctrl-C while writing: exit by SIGINT, no output, no temp file
"$REPACK" -q "$T/big-split.gguf" "$T/interrupted.gguf" &
pid=$!
# wait until its temp file (unnamed O_TMPFILE: seen through /proc) holds 1 MB
writing() {
    local fd
    for fd in /proc/"$pid"/fd/*; do
        case $(readlink "$fd" 2>/dev/null) in
            "$T"/\#*|"$T"/.moe.tmp.*) [ "$(stat -L -c %s "$fd" 2>/dev/null || echo 0)" -gt 1000000 ] &&
                return 0 ;;
        esac
    done
    return 1
}
for _ in $(seq 100); do
    writing && break
    sleep 0.05
done
kill -INT "$pid"
wait "$pid"
rc=$?
check "interrupted run ends by SIGINT (status $rc)" test "$rc" -eq 130
check "no output after Ctrl-C" test ! -e "$T/interrupted.gguf"
check_no_temp_files "$T"
finish
