#!/usr/bin/env python3
"""`dsv4 serve --synthetic tiny` over real loopback HTTP: the model a load test of a checkpoint that is not on disk
serves (random weights, byte-level text). Checks the served name, token-id and text prompts, streaming against the
whole answer, greedy determinism, the usage counts, that bad --synthetic arguments fail before serving, and the load
generator the GPU runs use (bench/serve_load.py) against it: every request of a level answered across its worker
processes.

    python3 tests/server/test_synthetic.py --dsv4 build/dsv4
"""
import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile

import serve_process

ap = argparse.ArgumentParser()
ap.add_argument("--dsv4", default="build/dsv4")
ARGS = ap.parse_args()


def fail(msg):
    sys.exit(f"FAIL: {msg}")


def check_usage_errors():
    for args, want in ((["--synthetic", "bogus"], "--synthetic must be flash or tiny"),
                       (["--synthetic", "flash", "--layers", "0"], "the Flash slice has 1 to 43 layers"),
                       (["--synthetic", "tiny", "-m", "models/dsv4-tiny-kjv"], "exactly one of -m DIR and --synthetic"),
                       ([], "exactly one of -m DIR and --synthetic")):
        r = subprocess.run([ARGS.dsv4, "serve", "--device", "cpu", "--port", "0"] + args, capture_output=True,
                           text=True, timeout=60)
        if r.returncode != 1 or want not in r.stderr:
            fail(f"serve {' '.join(args)}: exit {r.returncode}, stderr {r.stderr!r} (want exit 1 and {want!r})")


def check_load_generator(port):
    """bench/serve_load.py at concurrency 1 and 3 over 2 worker processes (an uneven split), and a bad flag."""
    load = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench", "serve_load.py")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "load.json")
        r = subprocess.run([sys.executable, load, "--url", f"http://127.0.0.1:{port}", "--concurrency", "1,3",
                            "--processes", "2", "--min-prompt", "4", "--max-prompt", "12", "--max-tokens", "5",
                            "--requests-per-slot", "3", "--min-requests", "4", "--json", out],
                           capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            fail(f"serve_load.py: exit {r.returncode}\n{r.stdout}\n{r.stderr}")
        levels = json.load(open(out))["levels"]
    for level, want_requests, want_processes in zip(levels, (4, 9), (1, 2)):
        got = (level["concurrency"], level["requests"], level["errors"], level["client_processes"])
        if got[1:] != (want_requests, 0, want_processes) or not level["output_tokens_per_s"] > 0:
            fail(f"serve_load.py level {got}: want {want_requests} requests, no errors, {want_processes} process(es)")
        if not 0 <= level["client_cpu_fraction"] < 4 or level["engine"].get("generation_tokens") != 5 * want_requests:
            fail(f"serve_load.py level {level['concurrency']}: client CPU {level['client_cpu_fraction']}, "
                 f"engine counters {level['engine']}")
    r = subprocess.run([sys.executable, load, "--url", f"http://127.0.0.1:{port}", "--processes", "-1"],
                       capture_output=True, text=True, timeout=60)
    if r.returncode == 0 or "--processes must be >= 0" not in r.stderr:
        fail(f"serve_load.py --processes -1: exit {r.returncode}, {r.stderr!r}")
    print("serve_load.py over 2 worker processes: every request answered, counters consistent: ok")


def main():
    check_usage_errors()
    proc, port = serve_process.start(ARGS.dsv4, ["--synthetic", "tiny", "--device", "cpu", "--max-model-len", "1024"])

    def request(method, path, body=None):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        conn.request(method, path, body=json.dumps(body).encode() if body is not None else None,
                     headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        payload = r.read().decode()
        conn.close()
        return r.status, payload

    try:
        status, body = request("GET", "/v1/models")
        models = json.loads(body)["data"]
        if status != 200 or models[0]["id"] != "synthetic-tiny":
            fail(f"/v1/models: {status} {body}")
        ids = [5, 300, 17, 99, 250, 401]
        req = {"model": "synthetic-tiny", "prompt": ids, "max_tokens": 8, "temperature": 0, "ignore_eos": True}
        status, body = request("POST", "/v1/completions", req)
        whole = json.loads(body)
        if status != 200 or whole["usage"]["prompt_tokens"] != len(ids) or whole["usage"]["completion_tokens"] < 1:
            fail(f"completion with token ids: {status} {body}")
        status, again = request("POST", "/v1/completions", req)
        if json.loads(again)["choices"][0]["text"] != whole["choices"][0]["text"]:
            fail("greedy completions of the same prompt differ")
        status, body = request("POST", "/v1/completions", dict(req, stream=True))
        events = [e[len("data: "):] for e in body.split("\n\n") if e.startswith("data: ")]
        if status != 200 or events[-1] != "[DONE]":
            fail(f"streamed completion: {status} {body[-200:]}")
        streamed = "".join(json.loads(e)["choices"][0]["text"] for e in events[:-1])
        if streamed != whole["choices"][0]["text"]:
            fail(f"streamed text {streamed!r} != whole {whole['choices'][0]['text']!r}")
        chat = {"model": "synthetic-tiny", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}
        status, body = request("POST", "/v1/chat/completions", chat)
        if status != 200 or json.loads(body)["choices"][0]["message"]["role"] != "assistant":
            fail(f"chat with text (byte-level): {status} {body}")
        status, body = request("POST", "/v1/completions", dict(req, prompt=[5, 999999]))
        if status != 400 or "error" not in json.loads(body):
            fail(f"an id past the vocabulary: {status} {body}")
        print("synthetic serve: models, token-id and text prompts, streaming, errors: ok")
        check_load_generator(port)
    finally:
        code = serve_process.stop(proc)
    if code != 0:
        fail(f"dsv4 serve exited with {code} after SIGTERM")


if __name__ == "__main__":
    main()
