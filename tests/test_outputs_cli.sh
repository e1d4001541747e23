#!/bin/bash
# Where the tools' outputs go (issue 16, hardening 1, 3 and 9), on a moe-synth
# model (no conformance pack needed):
#   - a device, a FIFO, "-" and a link to /proc/self/fd/1 are written in place,
#     never replaced by a renamed temp file; a symbolic link to a regular file
#     is written through (the target changes, the link stays);
#   - moe-quantize refuses an input whose tensor bytes fail their stored
#     checksums, naming the tensor;
#   - a cut-off .gguf.zst is called truncated, not "no seek table".
set -u
source "$MOE_TEST_DIR/sh_util.sh"
T=$(make_tmp outputs-cli)
B="$MOE_BIN_DIR"
"$B/moe-synth" -f "$T/m.gguf" > /dev/null 2>&1
check "synth model written" test -s "$T/m.gguf"
run_logits() { "$B/moe-run" -m "$T/m.gguf" --prompt-tokens 1,2,3 -n 0 -t 1 --logits-out "$@"; }

run_logits "$T/ref.bin" > "$T/ref.txt" 2>&1
check "logits in a regular file" test -s "$T/ref.bin"

# ---- item 1: outputs that are not regular files --------------------------------------
run_logits /dev/null > /dev/null 2> "$T/err.txt"; rc=$?
check "--logits-out /dev/null: exit 0 (got $rc)" test $rc -eq 0
check "/dev/null is still a character device" test -c /dev/null
check "no temp file left in the run's directory" test -z "$(ls -A /dev | grep -F .moe.tmp.)"

mkfifo "$T/fifo"
cat "$T/fifo" > "$T/from-fifo.bin" &
reader=$!
run_logits "$T/fifo" > /dev/null 2>&1; rc=$?
wait $reader
check "--logits-out FIFO: exit 0 (got $rc)" test $rc -eq 0
check "the FIFO is still a FIFO" test -p "$T/fifo"
check "its reader got the rows" cmp -s "$T/ref.bin" "$T/from-fifo.bin"

run_logits - > "$T/stdout.bin" 2> "$T/stdout.err"; rc=$?
check "--logits-out -: exit 0 (got $rc)" test $rc -eq 0
check "- puts the rows on stdout" cmp -s "$T/ref.bin" "$T/stdout.bin"
check "- moves the arg-max line to stderr" grep -qF "$(head -n 1 "$T/ref.txt")" "$T/stdout.err"

ln -s /proc/self/fd/1 "$T/fd1"
run_logits "$T/fd1" > "$T/fd1.bin" 2> /dev/null; rc=$?
check "--logits-out LINK-TO-/proc/self/fd/1: exit 0 (got $rc)" test $rc -eq 0
check "the link is still a link" test -L "$T/fd1"
check "the rows went to stdout" cmp -s "$T/ref.bin" "$T/fd1.bin"

echo old > "$T/target.bin"
ln -s target.bin "$T/link.bin"
run_logits "$T/link.bin" > /dev/null 2>&1
check "a symbolic link stays a link" test -L "$T/link.bin"
check "its target got the rows" cmp -s "$T/ref.bin" "$T/target.bin"
ln -s new-target.bin "$T/dangling.bin"
run_logits "$T/dangling.bin" > /dev/null 2>&1
check "a dangling link: its target is created" cmp -s "$T/ref.bin" "$T/new-target.bin"
check "and the link stays" test -L "$T/dangling.bin"

for tool in "moe-repack -f" "moe-quantize -f --type q8_0"; do
    # shellcheck disable=SC2086 # tool holds the command and its options
    "$B/"$tool "$T/m.gguf" /dev/null > /dev/null 2> "$T/err.txt"; rc=$?
    check "$tool onto /dev/null: exit 0 (got $rc)" test $rc -eq 0
    check "$tool: /dev/null is still a character device" test -c /dev/null
done
"$B/moe-repack" "$T/m.gguf" /dev/null > /dev/null 2> "$T/err.txt"; rc=$?
check "moe-repack onto /dev/null without -f: usage error (got $rc)" test $rc -eq 2
"$B/moe-repack" -f "$T/m.gguf" - 2> "$T/err.txt" | cat > /dev/null; rc=${PIPESTATUS[0]}
check "moe-repack into a pipe: usage error (got $rc)" test $rc -eq 2
check "it says a GGUF file cannot be streamed" grep -q "cannot be streamed" "$T/err.txt"
"$B/moe-repack" -f "$T/m.gguf" - > "$T/repack-stdout.gguf" 2> /dev/null; rc=$?
check "moe-repack to stdout redirected to a file: exit 0 (got $rc)" test $rc -eq 0
check "that file verifies" bash -c "'$B/moe-inspect' --verify '$T/repack-stdout.gguf' > /dev/null"
check_no_temp_files "$T"

# ---- item 3: moe-quantize checks the input's stored checksums ------------------------
cp "$T/m.gguf" "$T/bad.gguf"
size=$(stat -c %s "$T/bad.gguf")
# flip one byte near the end: inside the last tensor's data
byte=$(od -An -tu1 -j $((size - 5)) -N1 "$T/bad.gguf" | tr -d ' ')
printf "$(printf '\\%03o' $(((byte + 1) % 256)))" |
    dd of="$T/bad.gguf" bs=1 seek=$((size - 5)) conv=notrunc status=none
"$B/moe-quantize" --type q8_0 "$T/bad.gguf" "$T/bad-q.gguf" > /dev/null 2> "$T/err.txt"; rc=$?
check "moe-quantize on a corrupt input: exit 1 (got $rc)" test $rc -eq 1
last=$("$B/moe-inspect" "$T/m.gguf" | grep -oE '^ *[0-9]+ +[^ ]+' | tail -n 1 | awk '{print $2}')
check "it names the corrupt tensor ($last)" grep -q "tensor '$last' does not match its stored" "$T/err.txt"
check "and writes nothing" test ! -e "$T/bad-q.gguf"

# ---- item 9: a truncated .gguf.zst ------------------------------------------------------
"$B/moe-repack" -q --zstd "$T/m.gguf" "$T/z.gguf" > /dev/null 2>&1
check "compressed model written" test -s "$T/z.gguf.zst"
zsize=$(stat -c %s "$T/z.gguf.zst")
head -c $((zsize / 2)) "$T/z.gguf.zst" > "$T/cut.gguf.zst"
"$B/moe-run" -m "$T/cut.gguf.zst" -p hi -n 1 > /dev/null 2> "$T/err.txt"; rc=$?
check "moe-run on a truncated .gguf.zst: exit 1 (got $rc)" test $rc -eq 1
check "it says truncated" grep -q "cut.gguf.zst: truncated" "$T/err.txt"
check "not 'no seek table'" bash -c "! grep -q 'no seek table' '$T/err.txt'"
finish
