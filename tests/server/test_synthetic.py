#!/usr/bin/env python3
"""`dsv4 serve --synthetic tiny` over real loopback HTTP: the model a load test of a checkpoint that is not on disk
serves (random weights, byte-level text). Checks the served name, token-id and text prompts, streaming against the
whole answer, greedy determinism, the usage counts, and that bad --synthetic arguments fail before serving.

    python3 tests/server/test_synthetic.py --dsv4 build/dsv4
"""
import argparse
import http.client
import json
import subprocess
import sys

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
    finally:
        code = serve_process.stop(proc)
    if code != 0:
        fail(f"dsv4 serve exited with {code} after SIGTERM")


if __name__ == "__main__":
    main()
