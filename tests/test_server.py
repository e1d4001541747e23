#!/usr/bin/env python3
"""moe-server as clients use it, over loopback only, on a model moe-synth makes.

    test_server.py CASE [ARCH [TYPE]]
    CASE: greedy | concurrent | bad-input | auth-signal | load
    ARCH, TYPE: moe-synth's --arch (default llama) and --type (default f16)

greedy: temperature-0 completions and chat completions, streamed and not,
equal `moe-run --temp 0` on the same prompt (text, and token ids through
moe-run's conformance interface). concurrent: 8 requests at once on -np 4
equal their single-request results, and /metrics shows batched decode steps.
bad-input: each bad request gets its status and OpenAI error body and the
server keeps serving; a client leaving mid-stream frees its slot.
auth-signal: --api-key, and SIGTERM finishing a streamed response before a
clean exit. load: 200 requests, 16 at a time; prints latency and tokens/s.
Every wait is bounded; the server's exit status is checked (0, which under
the sanitizer build also means no leak).
"""
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

BIN = os.environ["MOE_BIN_DIR"]
TMP = os.path.join(os.environ.get("MOE_TMP", "/tmp"), "server-" + sys.argv[1])
TIMEOUT = 60  # seconds for any single request (sanitizer builds are slow)
passed = failed = 0


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
        print(f"FAILED: {name} {detail}", file=sys.stderr)


def make_model(arch="llama", wtype="f16"):
    os.makedirs(TMP, exist_ok=True)
    path = os.path.join(TMP, "model.gguf")
    subprocess.run([f"{BIN}/moe-synth", "--preset", "tiny", "--arch", arch, "--type", wtype,
                    "-f", path],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return path


class Server:
    """moe-server on a free port; its log goes to a file."""

    def __init__(self, model, *args):
        self.log_path = os.path.join(TMP, "server.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen([f"{BIN}/moe-server", "-m", model, "--port", "0", "-t", "2",
                                      *args], stdout=self.log, stderr=subprocess.STDOUT)
        self.port = None
        deadline = time.time() + TIMEOUT
        while time.time() < deadline and self.port is None and self.proc.poll() is None:
            with open(self.log_path) as f:
                for line in f:
                    if "serving " in line and "http://" in line:
                        self.port = int(line.split("http://")[1].split(":")[1].split()[0])
            time.sleep(0.05)
        if self.port is None:
            self.proc.kill()
            sys.exit(f"moe-server did not start:\n{open(self.log_path).read()}")

    def conn(self):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT)

    def request(self, method, path, body=None, headers=None):
        """(status, parsed JSON or text) of one request on a new connection."""
        c = self.conn()
        data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        c.request(method, path, body=data, headers=headers or {})
        r = c.getresponse()
        raw = r.read()
        c.close()
        ctype = r.getheader("Content-Type", "")
        return r.status, json.loads(raw) if "json" in ctype else raw.decode()

    def stream(self, path, body):
        """The events of a streamed request, [DONE] excluded, and whether it came."""
        c = self.conn()
        c.request("POST", path, body=json.dumps(body).encode())
        r = c.getresponse()
        events, done = [], False
        for line in r.read().decode().split("\n"):
            if line == "data: [DONE]":
                done = True
            elif line.startswith("data: "):
                events.append(json.loads(line[6:]))
        c.close()
        return r.status, events, done

    def metrics(self):
        _, text = self.request("GET", "/metrics")
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                k, v = line.split()
                out[k.replace("moe_server_", "")] = float(v)
        return out

    def stop(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = "hung"
        self.log.close()
        check(f"server exits 0 after {signal.Signals(sig).name}", rc == 0, f"(got {rc})\n{open(self.log_path).read()[-3000:]}")


def finish():
    print(f"{passed} passed, {failed} failed")
    sys.exit(0 if failed == 0 and passed > 0 else 1)


PROMPTS = ["The quick brown fox", "Once upon a time", "In a hole in the ground there lived",
           "1 2 3 4 5 6 7 8 9", "Hello", "A long time ago in a galaxy far, far away",
           "def main():", "To be or not to be, that is the question"]


def complete(srv, prompt, n, stream=False, chat=False, **extra):
    """(text, finish_reason, tokens or None, usage) of a temperature-0 request."""
    body = {"max_tokens": n, "temperature": 0, "return_tokens": True, **extra}
    if chat:
        path, body["messages"] = "/v1/chat/completions", [{"role": "user", "content": prompt}]
    else:
        path, body["prompt"] = "/v1/completions", prompt
    if not stream:
        status, j = srv.request("POST", path, body)
        assert status == 200, j
        ch = j["choices"][0]
        text = ch["message"]["content"] if chat else ch["text"]
        return text, ch["finish_reason"], ch.get("tokens"), j["usage"]
    body["stream"] = True
    status, events, done = srv.stream(path, body)
    assert status == 200 and done and events, (status, done)
    text = "".join((e["choices"][0]["delta"].get("content", "") if chat
                    else e["choices"][0]["text"]) for e in events)
    last = events[-1]
    return text, last["choices"][0]["finish_reason"], last["choices"][0].get("tokens"), last["usage"]


def moe_run(model, *args):
    r = subprocess.run([f"{BIN}/moe-run", "-m", model, "-t", "2", *args], capture_output=True,
                       timeout=TIMEOUT * 4)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout


def chatml(prompt):
    return f"<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"


def case_greedy(model):
    srv = Server(model, "-np", "2", "-c", "512", "--chat-template", "chatml")
    n = 24
    for prompt in PROMPTS[:3]:
        for chat in (False, True):
            what = f"{'chat' if chat else 'completion'} '{prompt}'"
            text, finish, toks, usage = complete(srv, prompt, n, chat=chat)
            cli = ["--chat-template", "chatml", "-p", prompt] if chat else ["-p", prompt]
            out = moe_run(model, *cli, "-n", str(n), "--temp", "0")
            # moe-run echoes the prompt's pieces: /tokenize + /detokenize give them
            formatted = chatml(prompt) if chat else prompt
            _, tk = srv.request("POST", "/tokenize", {"content": formatted, "add_special": True})
            _, echo = srv.request("POST", "/detokenize", {"tokens": tk["tokens"]})
            check(f"{what}: prompt tokens as moe-run's", usage["prompt_tokens"] == len(tk["tokens"]))
            check(f"{what}: text equals moe-run --temp 0",
                  out.decode("utf-8", "replace") == echo["content"] + text + "\n",
                  f"\n  server: {text!r}\n  moe-run: {out!r}")
            check(f"{what}: usage counts", usage["completion_tokens"] == len(toks) and
                  usage["total_tokens"] == usage["prompt_tokens"] + len(toks))
            # the ids through the conformance interface: each fed id's arg-max is the next
            ids = moe_run(model, "--prompt-tokens", " ".join(map(str, tk["tokens"])),
                          "--feed-tokens", " ".join(map(str, toks[:-1])),
                          "--logits-out", os.path.join(TMP, "x.logits")).split()
            want = ids[len(tk["tokens"]) - 1:]
            check(f"{what}: token ids equal moe-run's greedy arg-max",
                  list(map(int, want)) == toks, f"{want} vs {toks}")
            s_text, s_finish, s_toks, s_usage = complete(srv, prompt, n, chat=chat, stream=True)
            check(f"{what}: streamed equals unstreamed",
                  (s_text, s_finish, s_toks, s_usage["completion_tokens"]) ==
                  (text, finish, toks, usage["completion_tokens"]), f"{s_text!r} vs {text!r}")
    # stop strings: the text ends before the first one, streamed or not
    full = complete(srv, PROMPTS[3], n)[0]
    # two printable characters from the second half (JSON strings hold no NUL)
    stop = next((full[i:i + 2] for i in range(len(full) // 2, len(full) - 1)
                 if full[i:i + 2].isprintable() and full[i:i + 2].isascii()), "")
    check("stop string: found one to test with", stop != "", repr(full))
    if stop:
        for stream in (False, True):
            text, finish, _, _ = complete(srv, PROMPTS[3], n, stream=stream, stop=["\u2603", stop])
            check(f"stop string (stream {stream}): text cut before it",
                  text == full[:full.index(stop)] and finish == "stop", f"{text!r} / {full!r}")
    # the same prompt again reuses the slot's cache and still gives the same text
    before = srv.metrics()["prompt_tokens_reused_total"]
    again = complete(srv, PROMPTS[0], n)
    first = complete(srv, PROMPTS[0], n)
    check("repeated prompt: same result", again[:3] == first[:3])
    check("repeated prompt: prefix reused from the slot's cache",
          srv.metrics()["prompt_tokens_reused_total"] > before)
    srv.stop()


def case_concurrent(model):
    srv = Server(model, "-np", "4", "-c", "1024")
    n = 20
    single = [complete(srv, p, n) for p in PROMPTS]
    results = [None] * len(PROMPTS)

    def run(i):
        try:
            results[i] = complete(srv, PROMPTS[i], n, stream=i % 2 == 1)
        except Exception as e:  # reported below as a mismatch
            results[i] = repr(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(PROMPTS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    for i, p in enumerate(PROMPTS):
        ok = isinstance(results[i], tuple) and results[i][:3] == single[i][:3]
        check(f"concurrent '{p}' equals its single-request result", ok,
              f"\n  {results[i]!r}\n  {single[i]!r}")
    m = srv.metrics()
    check("/metrics: batched decode steps", m["decode_steps_batched_total"] > 0, str(m))
    check("/metrics: up to 4 sequences in one step", 2 <= m["decode_sequences_max"] <= 4, str(m))
    check("/metrics: all requests counted", m["requests_total"] == 2 * len(PROMPTS), str(m))
    check("/metrics: nothing left running", m["requests_processing"] == 0 and
          m["requests_deferred"] == 0)
    srv.stop(signal.SIGINT)


def expect_error(srv, name, status, method, path, body, headers=None, fragment=""):
    got, j = srv.request(method, path, body, headers)
    err = j.get("error") if isinstance(j, dict) else None
    check(f"{name}: status {status}", got == status, f"(got {got}: {j})")
    check(f"{name}: OpenAI error body", isinstance(err, dict) and
          isinstance(err.get("message"), str) and fragment in err["message"] and
          isinstance(err.get("type"), str) and err.get("code") == status, str(j))
    ok = complete(srv, "Hello", 2)
    check(f"{name}: serving after it", ok[3]["completion_tokens"] >= 1)


def wait_metric(srv, key, want, seconds=10):
    deadline = time.time() + seconds
    while time.time() < deadline:
        m = srv.metrics()
        if m[key] == want:
            return m
        time.sleep(0.05)
    return srv.metrics()


def disconnect_mid_stream(srv):
    """A client that reads one event and closes: its slot is freed."""
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=TIMEOUT)
    before = srv.metrics()["tokens_predicted_total"]
    body = json.dumps({"prompt": "Once", "stream": True, "temperature": 0,
                       "ignore_eos": True}).encode()
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    got = b""
    while b"data: " not in got:
        got += s.recv(4096)
    s.close()
    m = wait_metric(srv, "requests_processing", 0)
    check("disconnect mid-stream: slot freed", m["requests_processing"] == 0, str(m))
    check("disconnect mid-stream: counted as cancelled", m["requests_cancelled_total"] >= 1)
    # left alone it would fill its slot's 2048 positions
    check("disconnect mid-stream: stopped early", m["tokens_predicted_total"] - before < 2000,
          str(m))
    ok = complete(srv, "Hello", 2)
    check("disconnect mid-stream: serving after it", ok[3]["completion_tokens"] >= 1)


def case_bad_input(model):
    srv = Server(model, "-np", "2", "-c", "4096")
    C, CH = "/v1/completions", "/v1/chat/completions"
    expect_error(srv, "malformed JSON", 400, "POST", C, b'{"prompt": "x",', fragment="invalid JSON")
    expect_error(srv, "not an object", 400, "POST", C, b'[1, 2]')
    expect_error(srv, "max_tokens a string", 400, "POST", C, {"prompt": "x", "max_tokens": "9"},
                 fragment="max_tokens")
    expect_error(srv, "temperature a string", 400, "POST", C, {"prompt": "x", "temperature": "hot"},
                 fragment="temperature")
    expect_error(srv, "stream a string", 400, "POST", C, {"prompt": "x", "stream": "yes"})
    expect_error(srv, "prompt an object", 400, "POST", C, {"prompt": {}})
    expect_error(srv, "stop a number", 400, "POST", C, {"prompt": "x", "stop": 5})
    expect_error(srv, "token id out of range", 400, "POST", C, {"prompt": [1, 99999]})
    expect_error(srv, "messages a string", 400, "POST", CH, {"messages": "hi"})
    expect_error(srv, "empty messages", 400, "POST", CH, {"messages": []}, fragment="messages")
    expect_error(srv, "message without content", 400, "POST", CH, {"messages": [{"role": "user"}]})
    expect_error(srv, "unknown model", 404, "POST", CH,
                 {"model": "gpt-17", "messages": [{"role": "user", "content": "hi"}]},
                 fragment="gpt-17")
    expect_error(srv, "max_tokens beyond the context", 400, "POST", C,
                 {"prompt": "x", "max_tokens": 100000}, fragment="context")
    expect_error(srv, "prompt beyond the context", 400, "POST", C, {"prompt": "word " * 3000},
                 fragment="context")
    expect_error(srv, "n > 1", 400, "POST", C, {"prompt": "x", "n": 2})
    expect_error(srv, "10 MB body", 413, "POST", C,
                 b'{"prompt": "' + b"a" * (10 << 20) + b'"}', fragment="--max-body")
    expect_error(srv, "unknown endpoint", 404, "GET", "/v2/nothing", None)
    expect_error(srv, "wrong method", 405, "GET", C, None)
    # a tokenize with a wrong type, a detokenize with a bad id
    expect_error(srv, "tokenize without content", 400, "POST", "/tokenize", {"text": "x"})
    expect_error(srv, "detokenize a bad id", 400, "POST", "/detokenize", {"tokens": [-1]})
    disconnect_mid_stream(srv)
    # a client gone before a non-streamed answer: its task is cancelled too
    before = srv.metrics()["requests_cancelled_total"]
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=TIMEOUT)
    body = json.dumps({"prompt": "Once", "temperature": 0, "ignore_eos": True}).encode()
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: " +
              str(len(body)).encode() + b"\r\n\r\n" + body)
    time.sleep(0.2)
    s.close()
    m = wait_metric(srv, "requests_processing", 0)
    check("disconnect before the answer: cancelled, slot freed",
          m["requests_cancelled_total"] > before and m["requests_processing"] == 0, str(m))
    srv.stop()


def case_auth_signal(model):
    srv = Server(model, "-np", "2", "-c", "512", "--api-key", "s3cret")
    body = {"prompt": "Hello", "max_tokens": 2}
    expect = [("no key", {}, 401), ("wrong key", {"Authorization": "Bearer s3cre"}, 401),
              ("longer key", {"Authorization": "Bearer s3cret!"}, 401),
              ("right key", {"Authorization": "Bearer s3cret"}, 200)]
    for name, headers, status in expect:
        got, j = srv.request("POST", "/v1/completions", body, headers)
        check(f"--api-key, {name}: {status}", got == status, str(j))
        if status == 401:
            check(f"--api-key, {name}: error body", j["error"]["type"] == "authentication_error")
    check("/health needs no key", srv.request("GET", "/health")[0] == 200)
    check("/metrics needs the key", srv.request("GET", "/metrics")[0] == 401)
    # SIGTERM while a response streams: it still ends with [DONE], then exit 0
    hdr = {"Authorization": "Bearer s3cret"}
    c = srv.conn()
    c.request("POST", "/v1/completions", body=json.dumps(
        {"prompt": "Once", "stream": True, "max_tokens": 60, "temperature": 0}).encode(), headers=hdr)
    r = c.getresponse()
    first = r.readline()
    srv.proc.send_signal(signal.SIGTERM)
    rest = r.read().decode()
    c.close()
    check("SIGTERM: the streamed response in flight completes",
          first.startswith(b"data: ") and rest.rstrip().endswith("data: [DONE]") and
          '"finish_reason":"length"' in rest)
    try:
        rc = srv.proc.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        srv.proc.kill()
        rc = "hung"
    srv.log.close()
    check("SIGTERM: exit 0", rc == 0, f"(got {rc})\n{open(srv.log_path).read()[-3000:]}")
    try:
        socket.create_connection(("127.0.0.1", srv.port), timeout=2).close()
        refused = False
    except OSError:
        refused = True
    check("SIGTERM: no longer listening", refused)


def case_load(model):
    srv = Server(model, "-np", "4", "-c", "1024")
    n_req, n_par, n_tok = 200, 16, 8
    lat, errors, toks = [], [], [0]
    lock = threading.Lock()
    next_i = [0]

    def worker():
        c = srv.conn()
        while True:
            with lock:
                i = next_i[0]
                next_i[0] += 1
            if i >= n_req:
                break
            t0 = time.time()
            try:
                if i % 4 == 3:
                    text, finish, tk, usage = complete(srv, PROMPTS[i % 8], n_tok, stream=True)
                else:  # keep-alive connection, chat or not
                    chat = i % 4 == 1
                    body = {"max_tokens": n_tok, "temperature": 0.8, "seed": i}
                    if chat:
                        body["messages"] = [{"role": "user", "content": PROMPTS[i % 8]}]
                    else:
                        body["prompt"] = PROMPTS[i % 8]
                    c.request("POST", "/v1/chat/completions" if chat else "/v1/completions",
                              body=json.dumps(body).encode())
                    r = c.getresponse()
                    j = json.loads(r.read())
                    assert r.status == 200, j
                    usage = j["usage"]
                with lock:
                    lat.append(time.time() - t0)
                    toks[0] += usage["completion_tokens"]
            except Exception as e:
                with lock:
                    errors.append(repr(e))
                c.close()
                c = srv.conn()
        c.close()

    t0 = time.time()
    threads = [threading.Thread(target=worker) for _ in range(n_par)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT * 4)
    wall = time.time() - t0
    check("load: every request answered", len(lat) == n_req and not errors,
          f"{len(lat)} answered, errors {errors[:3]}")
    m = srv.metrics()
    check("load: the server counted them all", m["requests_total"] == n_req, str(m))
    check("load: nothing left running", m["requests_processing"] == 0 and m["requests_deferred"] == 0)
    lat.sort()
    if lat:
        p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000
        print(f"load: {n_req} requests, {n_par} concurrent, -np 4, max_tokens {n_tok}: "
              f"p50 {p(0.5):.1f} ms, p99 {p(0.99):.1f} ms, {toks[0] / wall:.1f} generated tokens/s, "
              f"{n_req / wall:.1f} requests/s over {wall:.2f} s; "
              f"{m['decode_steps_total']:.0f} decode steps, "
              f"{m['decode_steps_batched_total']:.0f} batched")
    srv.stop()


def case_cli(model):
    def run(*args):
        return subprocess.run([f"{BIN}/moe-server", *args], capture_output=True, timeout=TIMEOUT)
    r = run("--help")
    check("--help: exit 0, usage on stdout", r.returncode == 0 and b"usage: moe-server" in r.stdout
          and b"--api-key" in r.stdout and b"-ctk, --cache-type-k" in r.stdout)
    r = run("-m", model, "--port", "70000")
    check("port out of range: usage error 2", r.returncode == 2 and b"--port" in r.stderr)
    r = run("-m", model, "--bogus")
    check("unknown option: usage error 2", r.returncode == 2 and r.stderr)
    r = run("--port", "0")
    check("no model: usage error 2", r.returncode == 2 and b"-m" in r.stderr)
    r = run("-m", os.path.join(TMP, "missing.gguf"), "--port", "0")
    check("missing model file: exit 1 naming it", r.returncode == 1 and b"missing.gguf" in r.stderr)
    r = run("-m", model, "--port", "0", "-c", "4", "-np", "4")
    check("slots with no room: usage error 2", r.returncode == 2 and b"-np" in r.stderr)
    r = run("-m", model, "--host", "no.such.host.invalid", "--port", "0")
    check("bad --host: exit non-zero naming it", r.returncode != 0 and b"--host" in r.stderr)
    srv = Server(model, "-np", "1")
    r = run("-m", model, "--port", str(srv.port))
    check("port in use: exit 1", r.returncode == 1 and b"cannot listen" in r.stderr)
    srv.stop()


CASES = {"cli": case_cli, "greedy": case_greedy, "concurrent": case_concurrent, "bad-input": case_bad_input,
         "auth-signal": case_auth_signal, "load": case_load}

if __name__ == "__main__":
    CASES[sys.argv[1]](make_model(*sys.argv[2:4]))
    finish()
