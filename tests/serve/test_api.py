"""gen serve's OpenAI Completions API with the official openai client and raw HTTP: plain and
streaming completions, stop strings, logprobs, echo, n, list prompts, models, health, metrics."""

from __future__ import annotations

import httpx
import pytest

openai = pytest.importorskip("openai")

from servekit import TIMEOUT, complete, stream  # noqa: E402


def client(server, key="none"):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=30)


def test_openai_client_completion(server):
    r = client(server).completions.create(model="tiny", prompt="ROMEO: ", max_tokens=40, seed=7, temperature=0.8,
                                          extra_body={"top_k": 20})
    assert r.object == "text_completion" and r.id.startswith("cmpl-") and r.model == "tiny"
    (choice,) = r.choices
    assert choice.index == 0 and choice.finish_reason == "length" and len(choice.text) == 40
    assert r.usage.prompt_tokens == 7 and r.usage.completion_tokens == 40 and r.usage.total_tokens == 47
    again = client(server).completions.create(model="tiny", prompt="ROMEO: ", max_tokens=40, seed=7,
                                              temperature=0.8, extra_body={"top_k": 20})
    assert again.choices[0].text == choice.text  # seeded: the same text


def test_openai_client_stream(server):
    alone = complete(server.url, {"prompt": "JULIET: ", "max_tokens": 300, "seed": 3})["choices"][0]["text"]
    chunks = list(client(server).completions.create(model="tiny", prompt="JULIET: ", max_tokens=300, seed=3,
                                                    stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == alone
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 300 and chunks[-1].usage.prompt_tokens == 8
    # coalesced: far fewer chunks than characters
    assert len(chunks) < 300


def test_a_seeded_request_is_gen_sample_with_that_seed(server, model_path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "chargen.cli", "sample", "--model", str(model_path), "--start", "ROMEO: ",
                          "--length", "80", "--seed", "5", "--temperature", "0.8", "--top-k", "20", "--device", "cpu"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    r = complete(server.url, {"prompt": "ROMEO: ", "max_tokens": 80, "seed": 5, "temperature": 0.8, "top_k": 20})
    text = "ROMEO: " + r["choices"][0]["text"]
    assert out.stdout in (text, text + "\n")  # gen sample ends its output with a newline


def test_models_health_metrics_page(server):
    models = client(server).models.list()
    (m,) = models.data
    assert m.id == "tiny" and m.object == "model"
    card = httpx.get(server.url + "/v1/models", timeout=TIMEOUT).json()["data"][0]
    assert card["vocab_size"] == 65 and card["layers"] == 1 and card["hidden_size"] == 64
    assert card["precision"] == "fp32" and card["engine"] == "onnxruntime" and card["max_batch"] == 64
    assert httpx.get(server.url + "/v1/models/tiny", timeout=TIMEOUT).json()["id"] == "tiny"
    r = httpx.get(server.url + "/v1/models/gpt-4", timeout=TIMEOUT)
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"

    health = httpx.get(server.url + "/health", timeout=TIMEOUT)
    assert health.status_code == 200 and health.json()["status"] == "ok"

    complete(server.url, {"prompt": "A", "max_tokens": 5})
    text = httpx.get(server.url + "/metrics", timeout=TIMEOUT).text
    for name in ("chargen_requests_total{model=\"tiny\",status=\"200\"}", "chargen_generated_characters_total",
                 "chargen_active_slots", "chargen_queue_depth", "chargen_step_seconds_bucket",
                 "chargen_time_to_first_character_seconds_bucket"):
        assert name in text, name
    assert server.metric("chargen_generated_characters_total") >= 5

    page = httpx.get(server.url + "/", timeout=TIMEOUT)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<html" in page.text.lower()


def _text_with_stop(server, prompt, seed):
    """A seeded text and a 3-character stop string that first occurs in its middle, where
    its first character occurred before (so a stream must hold it back and then let it go)."""
    text = complete(server.url, {"prompt": prompt, "max_tokens": 400, "seed": seed})["choices"][0]["text"]
    for i in range(60, 380):
        stop = text[i:i + 3]
        if text.find(stop) == i and stop[0] in text[:i] and "\n" not in stop:
            return text, stop, i
    pytest.skip("no usable stop string in this text")


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_stop_strings_are_cut_and_never_leak_in_streams(server, seed):
    text, stop, at = _text_with_stop(server, "KING: ", seed)
    body = {"prompt": "KING: ", "max_tokens": 400, "seed": seed, "stop": [stop, "@@@@"]}
    whole = complete(server.url, body)
    assert whole["choices"][0]["text"] == text[:at] and whole["choices"][0]["finish_reason"] == "stop"
    assert whole["usage"]["completion_tokens"] == at + 3  # the stop string was generated
    s = stream(server.url, body)
    assert s["texts"][0] == text[:at] and s["finish"][0] == "stop"
    for e in s["events"][:-1]:
        assert stop not in e["choices"][0]["text"]
    # a stop string that never comes: everything arrives, held-back characters included
    s = stream(server.url, {"prompt": "KING: ", "max_tokens": 400, "seed": seed, "stop": [stop[0] + "@"]})
    assert s["texts"][0] == text and s["finish"][0] == "length"


def test_logprobs(server):
    r = complete(server.url, {"prompt": "ROMEO: ", "max_tokens": 30, "seed": 5, "logprobs": 3})
    c = r["choices"][0]
    lp = c["logprobs"]
    assert lp["tokens"] == list(c["text"]) and len(lp["token_logprobs"]) == 30
    assert lp["text_offset"] == list(range(30))
    for tok, value, top in zip(lp["tokens"], lp["token_logprobs"], lp["top_logprobs"]):
        assert value <= 0 and tok in top and top[tok] == pytest.approx(value)
        assert 3 <= len(top) <= 4 and all(v <= 0 for v in top.values())
    # streaming: the same logprobs, chunk by chunk
    s = stream(server.url, {"prompt": "ROMEO: ", "max_tokens": 30, "seed": 5, "logprobs": 3})
    tokens = [t for e in s["events"][:-1] for t in e["choices"][0]["logprobs"]["tokens"]]
    assert "".join(tokens) == c["text"] == s["texts"][0]
    # logprobs 0: the sampled character's only
    top = complete(server.url, {"prompt": "ROMEO: ", "max_tokens": 5, "logprobs": 0})["choices"][0]["logprobs"]
    assert all(len(t) == 1 for t in top["top_logprobs"])
    # echo: offsets count the prompt
    r = complete(server.url, {"prompt": "ROMEO: ", "max_tokens": 5, "logprobs": 1, "echo": True})
    assert r["choices"][0]["logprobs"]["text_offset"] == [7, 8, 9, 10, 11]


def test_echo(server):
    alone = complete(server.url, {"prompt": "Hi", "max_tokens": 20, "seed": 9})["choices"][0]["text"]
    r = complete(server.url, {"prompt": "Hi", "max_tokens": 20, "seed": 9, "echo": True})
    assert r["choices"][0]["text"] == "Hi" + alone
    assert stream(server.url, {"prompt": "Hi", "max_tokens": 20, "seed": 9, "echo": True})["texts"][0] == "Hi" + alone
    assert complete(server.url, {"prompt": "Hi", "max_tokens": 0, "echo": True})["choices"][0]["text"] == "Hi"


def test_n_and_list_prompts_seed_each_choice(server):
    """Choice i of a seeded request gets seed + i; choices are ordered prompt by prompt."""
    alone = {(p, s): complete(server.url, {"prompt": p, "max_tokens": 50, "seed": s})["choices"][0]["text"]
             for p in ("A", "B") for s in range(100, 104)}
    r = complete(server.url, {"prompt": "A", "max_tokens": 50, "seed": 100, "n": 3})
    assert [c["index"] for c in r["choices"]] == [0, 1, 2]
    assert [c["text"] for c in r["choices"]] == [alone["A", 100], alone["A", 101], alone["A", 102]]
    assert r["usage"]["completion_tokens"] == 150
    r = complete(server.url, {"prompt": ["A", "B"], "max_tokens": 50, "seed": 100, "n": 2})
    assert [c["text"] for c in r["choices"]] == [alone["A", 100], alone["A", 101], alone["B", 102], alone["B", 103]]
    s = stream(server.url, {"prompt": ["A", "B"], "max_tokens": 50, "seed": 100, "n": 2})
    assert [s["texts"][i] for i in range(4)] == [c["text"] for c in r["choices"]]
    assert s["finish"] == {0: "length", 1: "length", 2: "length", 3: "length"}


def test_unknown_skip_and_unseeded(server):
    r = complete(server.url, {"prompt": "ROMEO~: ", "max_tokens": 10, "unknown": "skip"})
    assert r["usage"]["prompt_tokens"] == 7 and len(r["choices"][0]["text"]) == 10
    a = complete(server.url, {"prompt": "A", "max_tokens": 60})["choices"][0]["text"]
    b = complete(server.url, {"prompt": "A", "max_tokens": 60})["choices"][0]["text"]
    assert a != b  # no seed: a fresh one each time
