#!/bin/bash
# Makes the seed corpora of the fuzz targets other than fuzz_gguf (whose corpus
# gen_corpus makes): tests/corpus/{imatrix,zstd,chat,vocab,model}. The files
# are checked in (a few KB each); rerun this only to change them:
#   tests/fuzz/make_seeds.sh BUILD_DIR
# Needs the built tools and python3 (for the vocabulary-only GGUF files).
set -eu
B=$(cd "$1" && pwd)/bin
C=$(cd "$(dirname "$0")/.." && pwd)/corpus
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
tiny=(--n-embd 32 --n-ff 32 --n-ff-exp 32 --n-layer 1 --n-expert 2 --n-expert-used 1
      --n-vocab 259 --n-head 2 --type q8_0)

# model: one tiny model per architecture family
mkdir -p "$C/model"
for arch in llama qwen2moe deepseek2; do
    extra=(--head-dim 16 --n-head-kv 1)
    [ $arch = qwen2moe ] && extra+=(--n-ff-shexp 32)
    [ $arch = deepseek2 ] && extra=(--n-dense-lead 0 --n-shared-exp 1 --qk-nope 16 --qk-rope 16
                                    --v-head 16 --kv-lora-rank 32)
    "$B/moe-synth" -f -a $arch "${tiny[@]}" "${extra[@]}" "$C/model/tiny-$arch.gguf" > /dev/null
done

# vocab: the tokenizer keys of a tiny model without its tensors, then text
mkdir -p "$C/vocab"
python3 - "$C/model/tiny-llama.gguf" "$C/vocab" <<'PY'
import struct, sys
src, out = sys.argv[1], sys.argv[2]
b = open(src, 'rb').read()
SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
def value_end(p, t):
    if t == 8:
        (n,) = struct.unpack_from('<Q', b, p)
        return p + 8 + n
    if t == 9:
        (et, n) = struct.unpack_from('<IQ', b, p)
        p += 12
        for _ in range(n):
            p = value_end(p, et)
        return p
    return p + SIZES[t]
n_kv = struct.unpack_from('<Q', b, 16)[0]
p, kvs = 24, []
for _ in range(n_kv):
    (kl,) = struct.unpack_from('<Q', b, p)
    key = b[p + 8:p + 8 + kl].decode()
    (t,) = struct.unpack_from('<I', b, p + 8 + kl)
    end = value_end(p + 12 + kl, t)
    if key.startswith('tokenizer.') or key == 'general.architecture':
        kvs.append(b[p:end])
    p = end
head = b'GGUF' + struct.pack('<IQQ', 3, 0, len(kvs)) + b''.join(kvs)
head += b'\0' * (-len(head) % 32)
for name, text in [('spm-hello', 'Hello world, this is a test.'),
                   ('spm-special', '<s>Hi</s> <unk>\u2581x \u00e9\u00e8 \U0001F600 12345'),
                   ('spm-empty', '')]:
    open(f'{out}/{name}.gguf', 'wb').write(head + text.encode())

# a byte-level BPE vocabulary (GPT-2 style): the 256 byte symbols, a few merges
def gstr(x):
    x = x.encode()
    return struct.pack('<Q', len(x)) + x
def kv(key, t, payload):
    return gstr(key) + struct.pack('<I', t) + payload
def str_array(items):
    return struct.pack('<IQ', 8, len(items)) + b''.join(gstr(i) for i in items)
def i32_array(items):
    return struct.pack('<IQ', 5, len(items)) + b''.join(struct.pack('<i', i) for i in items)
printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
byte_sym, extra = {}, 0
for c in range(256):
    if c in printable:
        byte_sym[c] = chr(c)
    else:
        byte_sym[c] = chr(256 + extra)
        extra += 1
sp = byte_sym[32]
merges = ['h e', 'l l', 'he ll', 'hell o', sp + ' w', sp + 'w o', 'r l', sp + 'wo rl', sp + 'worl d']
tokens = [byte_sym[c] for c in range(256)]
for m in merges:
    tokens.append(m.replace(' ', ''))
tokens += ['<|endoftext|>', '<|im_start|>']
types = [1] * (len(tokens) - 2) + [3, 3]
kvs = [kv('general.architecture', 8, gstr('qwen2moe')),
       kv('tokenizer.ggml.model', 8, gstr('gpt2')),
       kv('tokenizer.ggml.pre', 8, gstr('qwen2')),
       kv('tokenizer.ggml.tokens', 9, str_array(tokens)),
       kv('tokenizer.ggml.token_type', 9, i32_array(types)),
       kv('tokenizer.ggml.merges', 9, str_array(merges)),
       kv('tokenizer.ggml.eos_token_id', 4, struct.pack('<I', len(tokens) - 2))]
head = b'GGUF' + struct.pack('<IQQ', 3, 0, len(kvs)) + b''.join(kvs)
head += b'\0' * (-len(head) % 32)
for name, text in [('bpe-hello', 'hello world, hello  World! 123 <|im_start|>x'),
                   ('bpe-bytes', '\u00e9\U0001F600\tline\nnext \u2581')]:
    open(f'{out}/{name}.gguf', 'wb').write(head + text.encode())
PY

# imatrix: both forms, from a few tokens of text through the tiny model
mkdir -p "$C/imatrix"
printf 'Hello world. The quick brown fox.\n' > "$T/text.txt"
for out in tiny.dat tiny.gguf; do # from inside T: the recorded dataset name is stable
    (cd "$T" && "$B/moe-imatrix" -m "$C/model/tiny-llama.gguf" -f text.txt -c 8 \
        -o "$C/imatrix/$out" > /dev/null 2>&1)
done

# zstd: a seekable file of a small GGUF (two frames), a stock zstd stream, a cut one
mkdir -p "$C/zstd"
"$B/moe-repack" -q -f --zstd "$C/../corpus/gguf/good/basic.gguf" "$T/basic.gguf"
cp "$T/basic.gguf.zst" "$C/zstd/seekable.gguf.zst"
head -c 200 "$C/zstd/seekable.gguf.zst" > "$C/zstd/cut.gguf.zst"
zstd -q -c "$C/../corpus/gguf/good/basic.gguf" > "$C/zstd/stock.zst"

# chat: flags byte, template (or a format name), then role/content pairs
mkdir -p "$C/chat"
chat() { # chat NAME FLAGS TEMPLATE ROLE CONTENT...
    local name=$1 flags=$2
    shift 2
    { printf "\\$(printf %03o "$flags")"; printf '%s\0' "$@"; } > "$C/chat/$name"
}
chat chatml 1 chatml system "You are helpful." user "Hi" assistant "Hello!" user "Bye"
chat default 3 "" user "Hi"
chat llama2 0 llama2 system "Be brief." user "Hi" assistant "Yo"
chat mistral 1 mistral user "Hi"
chat jinja-chatml 1 "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}" user "Hi"
chat jinja-llama3 1 "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>' }}<|eot_id|>" user "Hi"
chat no-messages 1 chatml
