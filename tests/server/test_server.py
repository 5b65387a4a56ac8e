#!/usr/bin/env python3
"""End-to-end tests of `dsv4 serve` over real loopback HTTP (Python's standard library and curl).

Starts the server on a free port with the given model (default: models/dsv4-tiny-kjv, CPU) and checks chat and
completions (streaming and not), stop strings, seeded sampling, logprobs against `dsv4 score`, errors in
OpenAI's shape with the server still healthy, 32 concurrent greedy clients against the same requests sent alone,
and a client that disconnects mid-stream (its sequence freed, as /metrics shows).

    python3 tests/server/test_server.py --dsv4 build/dsv4 --model models/dsv4-tiny-kjv [--serve-args "--spec-tokens 2"]
"""
import argparse
import concurrent.futures
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import time
import unittest

import serve_process

ARGS = None
SERVER = None  # (process, port)


def request(method, path, body=None, headers=None, timeout=120):
    conn = http.client.HTTPConnection("127.0.0.1", SERVER[1], timeout=timeout)
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    conn.request(method, path, body=data, headers=h)
    r = conn.getresponse()
    payload = r.read().decode()
    conn.close()
    return r.status, r.getheader("Content-Type", ""), payload


def post(path, body, **kw):
    status, ctype, payload = request("POST", path, body, **kw)
    return status, ctype, payload


def post_json(path, body):
    status, _, payload = post(path, body)
    return status, json.loads(payload)


def sse(payload):
    """The JSON payloads of an SSE body; asserts it ends with [DONE]."""
    events = [line[len("data: "):] for line in payload.split("\n\n") if line.startswith("data: ")]
    assert events and events[-1] == "[DONE]", payload[-200:]
    return [json.loads(e) for e in events[:-1]]


def metrics():
    status, _, text = request("GET", "/metrics")
    assert status == 200
    return text


def metric(text, name):
    m = re.search(r"^" + re.escape(name) + r" (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


class ServerTest(unittest.TestCase):
    def test_models_and_health(self):
        status, _, body = request("GET", "/health")
        self.assertEqual(status, 200)
        status, _, body = request("GET", "/v1/models")
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(body)["data"][0]["id"], ARGS.name)

    def test_completion_whole_and_streamed_agree(self):
        body = {"model": ARGS.name, "prompt": "And God said", "max_tokens": 12, "temperature": 0}
        status, whole = post_json("/v1/completions", body)
        self.assertEqual(status, 200, whole)
        choice = whole["choices"][0]
        self.assertEqual(choice["finish_reason"], "length")
        self.assertEqual(whole["usage"]["completion_tokens"], 12)
        status, ctype, payload = post("/v1/completions", dict(body, stream=True, stream_options={"include_usage": True}))
        self.assertEqual(status, 200)
        self.assertTrue(ctype.startswith("text/event-stream"))
        events = sse(payload)
        text = "".join(e["choices"][0]["text"] for e in events if e["choices"])
        self.assertEqual(text, choice["text"])
        self.assertEqual(events[-1]["usage"], whole["usage"])
        self.assertEqual([e["choices"][0]["finish_reason"] for e in events if e["choices"]][-1], "length")

    def test_chat_whole_and_streamed_agree(self):
        body = {"messages": [{"role": "system", "content": "Scripture."}, {"role": "user", "content": "Who made the light?"}],
                "max_tokens": 10, "temperature": 0}
        status, whole = post_json("/v1/chat/completions", body)
        self.assertEqual(status, 200, whole)
        message = whole["choices"][0]["message"]
        self.assertEqual(message["role"], "assistant")
        status, _, payload = post("/v1/chat/completions", dict(body, stream=True))
        events = sse(payload)
        self.assertEqual(events[0]["choices"][0]["delta"]["role"], "assistant")
        text = "".join(e["choices"][0]["delta"].get("content", "") for e in events)
        self.assertEqual(text, message["content"])

    def test_stop_strings(self):
        body = {"prompt": "And God said", "max_tokens": 40, "temperature": 0}
        _, full = post_json("/v1/completions", body)
        text = full["choices"][0]["text"]
        # A stop string from the middle of the greedy text, across token boundaries: cut there, not emitted.
        stop = text[5:9]
        self.assertGreater(len(stop.strip()), 0)
        cut = text[: text.find(stop)]
        for stream in (False, True):
            status, ctype, payload = post("/v1/completions", dict(body, stop=[stop], stream=stream))
            self.assertEqual(status, 200, payload)
            if stream:
                events = sse(payload)
                got = "".join(e["choices"][0]["text"] for e in events)
                reason = events[-1]["choices"][0]["finish_reason"]
            else:
                got, reason = json.loads(payload)["choices"][0]["text"], json.loads(payload)["choices"][0]["finish_reason"]
            self.assertEqual(got, cut)
            self.assertEqual(reason, "stop")

    def test_seeded_sampling_is_reproducible(self):
        body = {"prompt": "In the beginning", "max_tokens": 16, "temperature": 1.0, "top_p": 0.95, "seed": 1234}
        a = post_json("/v1/completions", body)[1]["choices"][0]["text"]
        b = post_json("/v1/completions", body)[1]["choices"][0]["text"]
        self.assertEqual(a, b)
        texts = {post_json("/v1/completions", dict(body, seed=s))[1]["choices"][0]["text"] for s in range(1, 5)}
        self.assertGreater(len(texts), 1, "different seeds should give different samples")

    def test_logprobs_match_dsv4_score(self):
        _, tok = post_json("/tokenize", {"prompt": "And God said"})
        prompt = tok["tokens"]
        status, r = post_json("/v1/completions", {"prompt": prompt, "max_tokens": 6, "temperature": 0, "logprobs": 2,
                                                  "return_tokens_as_token_ids": True})
        self.assertEqual(status, 200, r)
        lp = r["choices"][0]["logprobs"]
        gen_ids = [int(t[len("token_id:"):]) for t in lp["tokens"]]
        self.assertEqual(len(gen_ids), 6)
        for top, chosen, token in zip(lp["top_logprobs"], lp["token_logprobs"], lp["tokens"]):
            self.assertEqual(len(top), 2)
            self.assertAlmostEqual(top[token], chosen, places=5)  # greedy: the chosen token is the most likely
            self.assertAlmostEqual(max(top.values()), chosen, places=5)

        def score(seq):
            out = subprocess.run([ARGS.dsv4, "score", "-m", ARGS.model, "--ids", ",".join(map(str, seq)), "--json"],
                                 check=True, capture_output=True, text=True).stdout
            return json.loads(out)

        full, head = score(prompt + gen_ids), score(prompt)
        self.assertEqual(full["argmax"][len(prompt) - 1:-1], gen_ids)  # the greedy tokens are score's argmax
        # Sum of the generated tokens' NLL from score's means over the whole sequence and over the prompt alone.
        nll = full["mean_nll"] * (len(prompt) + len(gen_ids) - 1) - head["mean_nll"] * (len(prompt) - 1)
        self.assertAlmostEqual(nll, -sum(lp["token_logprobs"]), delta=1e-3 * len(gen_ids))

    def test_bad_requests_then_still_healthy(self):
        cases = [
            (b"{not json", 400), (b"[]", 400), (json.dumps({"messages": "hi"}).encode(), 400),
            (json.dumps({"messages": [{"role": "user", "content": "q"}], "n": 2}).encode(), 400),
            (json.dumps({"model": "nope", "messages": [{"role": "user", "content": "q"}]}).encode(), 404),
            (json.dumps({"messages": [{"role": "user", "content": "q"}], "max_tokens": 1 << 40}).encode(), 400),
            (json.dumps({"messages": [{"role": "user", "content": "q"}], "temperature": "hot"}).encode(), 400),
            (b"[" * 100000, 400),
        ]
        for body, want in cases:
            status, _, payload = post("/v1/chat/completions", body)
            self.assertEqual(status, want, payload)
            err = json.loads(payload)["error"]
            self.assertEqual(set(err), {"message", "type", "param", "code"})
        self.assertEqual(request("GET", "/health")[0], 200)
        status, ok = post_json("/v1/completions", {"prompt": "And", "max_tokens": 2})
        self.assertEqual(status, 200)

    def test_curl(self):
        curl = shutil.which("curl")
        if not curl:
            self.skipTest("curl is not installed")
        out = subprocess.run([curl, "-sS", "-N", f"http://127.0.0.1:{SERVER[1]}/v1/chat/completions",
                              "-H", "Content-Type: application/json",
                              "-d", json.dumps({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4,
                                                "stream": True})],
                             check=True, capture_output=True, text=True).stdout
        self.assertTrue(out.rstrip().endswith("data: [DONE]"), out)
        out = subprocess.run([curl, "-sS", f"http://127.0.0.1:{SERVER[1]}/v1/models"], check=True, capture_output=True,
                             text=True).stdout
        self.assertEqual(json.loads(out)["object"], "list")

    def test_concurrent_greedy_matches_alone(self):
        prompts = [f"And the LORD said unto {name}" for name in
                   ["Moses", "Aaron", "Noah", "Abram", "Cain", "Joshua", "Samuel", "David"]] * 4
        bodies = [{"prompt": p + " " * (i // 8), "max_tokens": 16, "temperature": 0, "stream": i % 2 == 1}
                  for i, p in enumerate(prompts)]

        def run(body):
            status, _, payload = post("/v1/completions", body)
            assert status == 200, payload
            if body["stream"]:
                return "".join(e["choices"][0]["text"] for e in sse(payload))
            return json.loads(payload)["choices"][0]["text"]

        alone = [run(b) for b in bodies]
        with concurrent.futures.ThreadPoolExecutor(32) as ex:
            together = list(ex.map(run, bodies))
        self.assertEqual(together, alone)

    def test_disconnect_frees_the_sequence(self):
        before = metrics()
        aborted = metric(before, 'dsv4_request_success_total{finish_reason="abort"}')
        conn = http.client.HTTPConnection("127.0.0.1", SERVER[1], timeout=60)
        conn.request("POST", "/v1/completions", body=json.dumps({"prompt": "And", "max_tokens": 4000,
                                                                  "ignore_eos": True, "stream": True}),
                     headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        r.read1(64)  # the stream has started
        deadline = time.time() + 10  # the scheduler's figures are those of the last step
        while metric(metrics(), "dsv4_num_requests_running") < 1 and time.time() < deadline:
            time.sleep(0.02)
        self.assertGreaterEqual(metric(metrics(), "dsv4_num_requests_running"), 1)
        r.close()  # hang up mid-stream
        conn.close()
        deadline = time.time() + 30
        while time.time() < deadline:
            text = metrics()
            if (metric(text, 'dsv4_request_success_total{finish_reason="abort"}') == aborted + 1
                    and metric(text, "dsv4_num_requests_running") == 0):
                break
            time.sleep(0.1)
        text = metrics()
        self.assertEqual(metric(text, 'dsv4_request_success_total{finish_reason="abort"}'), aborted + 1, text)
        self.assertEqual(metric(text, "dsv4_num_requests_running"), 0, text)
        self.assertEqual(metric(text, "dsv4_kv_pages_used"), 0, text)


def main():
    global ARGS, SERVER
    ap = argparse.ArgumentParser()
    ap.add_argument("--dsv4", default="build/dsv4")
    ap.add_argument("--model", default="models/dsv4-tiny-kjv")
    ap.add_argument("--name", default="dsv4-tiny-kjv")
    ap.add_argument("--serve-args", default="", help="further dsv4 serve flags, e.g. '--spec-tokens 2'")
    ARGS, rest = ap.parse_known_args()
    proc, port = serve_process.start(ARGS.dsv4, ["-m", ARGS.model, "--served-model-name", ARGS.name,
                                                 "--max-model-len", "4096"] + ARGS.serve_args.split())
    SERVER = (proc, port)
    try:
        result = unittest.main(argv=[sys.argv[0]] + rest, exit=False, verbosity=2).result
    finally:
        code = serve_process.stop(proc)
    if code != 0:
        sys.exit(f"dsv4 serve exited with {code} after SIGTERM")
    sys.exit(0 if result.wasSuccessful() else 1)


if __name__ == "__main__":
    main()
