"""gen serve's errors over raw HTTP, in OpenAI's shape: bad JSON and fields (400 naming the
field and its range), unknown characters, --max-chars, body size (413), a full queue (429),
the API key (401), CORS preflights; no traceback in the server's log."""

from __future__ import annotations

import json

import httpx
import pytest

from servekit import TIMEOUT, ServerProcess, complete


def post(server, body, headers=None, **kw):
    content = body if isinstance(body, (bytes, str)) or hasattr(body, "__next__") else json.dumps(body)
    return httpx.post(server.url + "/v1/completions", content=content, timeout=TIMEOUT,
                      headers={"content-type": "application/json", **(headers or {})}, **kw)


def error(r, status, param=None, *words):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["param"] == param, err
    for w in words:
        assert w in err["message"], (w, err["message"])
    return err


@pytest.mark.parametrize("field, value, words", [
    ("max_tokens", -1, ["integer >= 0"]),
    ("max_tokens", "ten", ["'max_tokens'"]),
    ("temperature", 2.5, ["[0, 2]"]),
    ("temperature", True, ["'temperature'"]),
    ("top_p", 0, ["(0, 1]"]),
    ("top_k", -3, ["integer >= 0"]),
    ("n", 0, ["[1, 128]"]),
    ("n", 129, ["[1, 128]"]),
    ("stop", ["a", "b", "c", "d", "e"], ["1 to 4"]),
    ("stop", "", ["'stop'"]),
    ("seed", 2**64, ["[-2**63, 2**64)"]),
    ("seed", 1.5, ["'seed'"]),
    ("logprobs", 6, ["[0, 5]"]),
    ("echo", "yes", ["true or false"]),
    ("stream", 1, ["true or false"]),
    ("unknown", "drop", ["\"error\" or \"skip\""]),
    ("model", 3, ["'model'"]),
    ("presence_penalty", 0.5, ["not supported"]),
    ("logit_bias", {"1": 5}, ["not supported"]),
    ("stream_options", {"include_usage": True}, ["only allowed with 'stream': true"]),
])
def test_bad_fields_name_the_field_and_the_range(server, field, value, words):
    error(post(server, {"prompt": "A", field: value}), 400, field, *words)


def test_bad_requests(server):
    err = error(post(server, b'{"prompt": "A",'), 400, None, "not valid JSON")
    assert err["type"] == "invalid_request_error"
    error(post(server, b"\xff\xfe"), 400, None, "not valid JSON")
    error(post(server, [1, 2]), 400, None, "JSON object")
    error(post(server, {"max_tokens": 3}), 400, "prompt", "required")
    error(post(server, {"prompt": ""}), 400, "prompt", "empty")
    error(post(server, {"prompt": [1, 2, 3]}), 400, "prompt", "token ids")
    error(post(server, {"prompt": []}), 400, "prompt")
    err = error(post(server, {"prompt": "caf\u00e9 \u00b5!"}), 400, "prompt", "'\u00e9'", "'\u00b5'", "\"unknown\": \"skip\"")
    assert err["code"] == "unknown_characters"
    error(post(server, {"prompt": ["A", "\u00e9"]}), 400, "prompt", "prompt[1]")
    error(post(server, {"prompt": "\u00e9\u00e9", "unknown": "skip"}), 400, "prompt", "empty after skipping")
    r = httpx.get(server.url + "/v1/nothing", timeout=TIMEOUT)
    assert r.status_code == 404 and "error" in r.json()
    r = httpx.get(server.url + "/v1/completions", timeout=TIMEOUT)
    assert r.status_code == 405 and "error" in r.json()


def test_max_chars_and_body_size(tmp_path_factory, model_path):
    s = ServerProcess(model_path, "--max-chars", "100", log=tmp_path_factory.mktemp("limits") / "server.log")
    try:
        error(post(s, {"prompt": "A" * 60, "max_tokens": 41}), 400, "max_tokens", "101", "100", "--max-chars")
        assert complete(s.url, {"prompt": "A" * 60, "max_tokens": 40})["choices"][0]["finish_reason"] == "length"
        big = json.dumps({"prompt": "A", "user": "x" * (2 << 20)})
        err = error(post(s, big), 413, None, "over the limit")
        assert err["code"] == "request_too_large"

        def chunks():  # no Content-Length: the limit holds while reading
            for _ in range(40):
                yield b" " * 65536
        error(post(s, chunks()), 413, None, "over the limit")
        assert httpx.get(s.url + "/health", timeout=TIMEOUT).status_code == 200
        assert "Traceback" not in s.log()
    finally:
        assert s.stop() == 0


def test_no_traceback_in_the_log_for_bad_input(server):
    post(server, b"{")
    post(server, {"prompt": "\u00e9"})
    assert "Traceback" not in server.log()


def test_api_key(key_server):
    s = key_server
    body = {"prompt": "A", "max_tokens": 5}
    err = error(post(s, body), 401, None, "API key")
    assert err["code"] == "invalid_api_key"
    error(post(s, body, headers={"authorization": "Bearer wrong"}), 401)
    error(post(s, body, headers={"authorization": "sekrit"}), 401)
    assert httpx.get(s.url + "/v1/models", timeout=TIMEOUT).status_code == 401
    assert httpx.get(s.url + "/metrics", timeout=TIMEOUT).status_code == 401
    assert post(s, body, headers={"authorization": "Bearer sekrit"}).status_code == 200
    assert httpx.get(s.url + "/health", timeout=TIMEOUT).status_code == 200  # open for load balancers
    openai = pytest.importorskip("openai")
    ok = openai.OpenAI(base_url=s.url + "/v1", api_key="sekrit", max_retries=0, timeout=30)
    assert len(ok.completions.create(model="tiny", prompt="A", max_tokens=5).choices[0].text) == 5
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=s.url + "/v1", api_key="nope", max_retries=0, timeout=30).completions.create(
            model="tiny", prompt="A", max_tokens=5)


def test_cors_preflight_allows_the_openai_js_client(key_server):
    s = key_server
    asked = ("authorization, content-type, x-stainless-os, x-stainless-lang, x-stainless-package-version, "
             "x-stainless-retry-count, x-stainless-timeout, openai-organization")
    r = httpx.options(s.url + "/v1/completions", timeout=TIMEOUT, headers={
        "origin": "http://app.test", "access-control-request-method": "POST",
        "access-control-request-headers": asked})
    assert r.status_code == 200, r.text
    assert r.headers["access-control-allow-origin"] == "http://app.test"
    allowed = {h.strip() for h in r.headers["access-control-allow-headers"].lower().split(",")}
    assert {h.strip() for h in asked.split(",")} <= allowed
    assert "POST" in r.headers["access-control-allow-methods"]
    # the request itself (and its 401) carries the CORS header, so a page can read the error
    r = post(s, {"prompt": "A", "max_tokens": 3}, headers={"origin": "http://app.test"})
    assert r.status_code == 401 and r.headers["access-control-allow-origin"] == "http://app.test"
    r = post(s, {"prompt": "A", "max_tokens": 3}, headers={"origin": "http://app.test",
                                                            "authorization": "Bearer sekrit"})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://app.test"
    # another origin gets no grant
    r = httpx.options(s.url + "/v1/completions", timeout=TIMEOUT, headers={
        "origin": "http://evil.test", "access-control-request-method": "POST"})
    assert r.status_code == 400 and "access-control-allow-origin" not in r.headers
    r = httpx.options(s.url + "/v1/completions", timeout=TIMEOUT, headers={
        "origin": "http://app.test", "access-control-request-method": "POST",
        "access-control-request-headers": "x-custom-thing"})
    assert r.status_code == 400


def test_queue_full_is_429_with_retry_after(tmp_path_factory, model_path):
    """One slot, one queue place: a running and a queued request fill the server."""
    s = ServerProcess(model_path, "--max-batch", "1", "--max-queue", "1", "--max-chars", "10000000",
                      log=tmp_path_factory.mktemp("queue") / "server.log")
    long = {"prompt": "A", "max_tokens": 9_000_000, "stream": True}
    streams = []
    try:
        for expect in (("chargen_active_slots", 1), ("chargen_queue_depth", 1)):
            c = httpx.Client(timeout=TIMEOUT)
            r = c.send(c.build_request("POST", s.url + "/v1/completions", json=long), stream=True)
            assert r.status_code == 200
            streams.append((c, r))
            assert s.wait_metric(*expect) == expect[1]
        # the queued stream hears keep-alive comments while it waits
        lines = streams[1][1].iter_lines()
        assert next(lines) == ": keep-alive"
        err = error(post(s, {"prompt": "A", "max_tokens": 5}), 429, None, "busy")
        assert err["code"] == "queue_full"
        r = post(s, {"prompt": "A", "max_tokens": 5})
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        error(post(s, {"prompt": "A", "max_tokens": 5, "n": 3}), 400, "n", "--max-batch + --max-queue")
        assert s.metric("chargen_requests_total", model="tiny", status="429") == 2
        # the queued client goes away: its place frees; the running one goes: its slot frees
        c, r = streams.pop()
        r.close()
        c.close()
        assert s.wait_metric("chargen_queue_depth", 0) == 0
        assert s.wait_metric("chargen_active_slots", 1) == 1
        c, r = streams.pop()
        r.close()
        c.close()
        assert s.wait_metric("chargen_active_slots", 0) == 0
        assert complete(s.url, {"prompt": "A", "max_tokens": 5})["choices"][0]["finish_reason"] == "length"
    finally:
        for c, r in streams:
            r.close()
            c.close()
        assert s.stop() == 0
