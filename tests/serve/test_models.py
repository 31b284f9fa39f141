"""gen serve with two models (`--model tiny.onnx --model q8=tiny-int8.onnx`) through the official
openai client: each model completes as its own Generator does; an unknown model is a 404
model_not_found; /v1/models lists both; /metrics and /health are per model; chat completions
answer where to go instead; a disconnect frees its model's slot; SIGTERM drains both."""

from __future__ import annotations

import signal
import time

import httpx
import pytest

openai = pytest.importorskip("openai")

from servekit import TIMEOUT, ServerProcess, complete, sse_events  # noqa: E402

MODELS = ("tiny", "q8")


def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=30)


def generator_text(path, engine: str, prompt: str, **options) -> str:
    """What chargen.runtime's Generator gives for that model, seed and options (batch 1)."""
    from chargen.runtime import GenerationOptions, Model

    model = Model.load(path, device="cpu", threads=1, engine=engine)
    return model.generator(GenerationOptions(**options)).generate(prompt)[0]


def test_each_model_completes_as_its_generator(two_models_server, models, server):
    s = two_models_server
    cards = {c["id"]: c for c in httpx.get(s.url + "/v1/models", timeout=TIMEOUT).json()["data"]}
    texts = {}
    for name, path in zip(MODELS, models):
        r = client(s).completions.create(model=name, prompt="ROMEO: ", max_tokens=300, seed=11, temperature=0.9,
                                         extra_body={"top_k": 20})
        assert r.model == name and r.choices[0].finish_reason == "length"
        texts[name] = r.choices[0].text
        want = generator_text(path, cards[name]["engine"], "ROMEO: ", seed=11, max_length=300, temperature=0.9,
                              top_k=20)
        assert texts[name] == want, f"{name}: the served text differs from its Generator's"
        # streaming, the same text
        chunks = list(client(s).completions.create(model=name, prompt="ROMEO: ", max_tokens=300, seed=11,
                                                   temperature=0.9, stream=True, extra_body={"top_k": 20}))
        assert {c.model for c in chunks} == {name}
        assert "".join(c.choices[0].text for c in chunks if c.choices) == want
    assert texts["tiny"] != texts["q8"]  # int8 drifts from fp32 within 300 characters: the routing shows
    # the fp32 model is the single-model server's, text for text
    alone = complete(server.url, {"model": "tiny", "prompt": "ROMEO: ", "max_tokens": 300, "seed": 11,
                                  "temperature": 0.9, "top_k": 20})
    assert alone["choices"][0]["text"] == texts["tiny"]


def test_a_request_without_a_model_gets_the_first(two_models_server):
    s = two_models_server
    body = {"prompt": "KING: ", "max_tokens": 50, "seed": 3}
    r = complete(s.url, body)
    assert r["model"] == "tiny"
    assert r["choices"][0]["text"] == complete(s.url, {**body, "model": "tiny"})["choices"][0]["text"]
    assert complete(s.url, {**body, "model": ""})["model"] == "tiny"


def test_an_unknown_model_is_404_model_not_found(two_models_server, server):
    s = two_models_server
    before = s.metric("chargen_requests_total", missing=0, model="", status="404")
    for stream in (False, True):
        with pytest.raises(openai.NotFoundError) as caught:
            client(s).completions.create(model="gpt-3.5-turbo-instruct", prompt="A", max_tokens=5, stream=stream)
        err = caught.value.response.json()["error"]
        assert err["code"] == "model_not_found" and err["param"] == "model"
        assert err["type"] == "invalid_request_error"
        assert "'gpt-3.5-turbo-instruct'" in err["message"] and "'tiny', 'q8'" in err["message"]
    assert s.metric("chargen_requests_total", model="", status="404") == before + 2
    r = httpx.get(s.url + "/v1/models/gpt-4", timeout=TIMEOUT)
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    # one model: the same (a client that names a model expects that one, or an error)
    with pytest.raises(openai.NotFoundError) as caught:
        client(server).completions.create(model="q8", prompt="A", max_tokens=5)
    assert caught.value.response.json()["error"]["code"] == "model_not_found"
    assert "'tiny'" in caught.value.response.json()["error"]["message"]


def test_models_lists_both(two_models_server):
    s = two_models_server
    assert [m.id for m in client(s).models.list().data] == list(MODELS)
    q8 = client(s).models.retrieve("q8")
    assert q8.id == "q8" and q8.object == "model"
    cards = {c["id"]: c for c in httpx.get(s.url + "/v1/models", timeout=TIMEOUT).json()["data"]}
    assert cards["tiny"]["precision"] == "fp32" and cards["q8"]["precision"] == "int8"
    assert all(c["max_batch"] == 64 and c["vocab_size"] == 65 for c in cards.values())
    assert httpx.get(s.url + "/v1/models/tiny", timeout=TIMEOUT).json() == cards["tiny"]


def samples(server) -> dict:
    """Every sample of /metrics: {(name, model, status): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(server.url + "/metrics", timeout=TIMEOUT).text
    return {(x.name, x.labels.get("model"), x.labels.get("status")): x.value
            for family in text_string_to_metric_families(text) for x in family.samples}


def test_metrics_are_labelled_by_model(two_models_server):
    s = two_models_server
    before = samples(s)
    complete(s.url, {"model": "tiny", "prompt": "ABC", "max_tokens": 7})
    complete(s.url, {"model": "q8", "prompt": "ABCDE", "max_tokens": 11})
    complete(s.url, {"model": "q8", "prompt": "A", "max_tokens": 2})
    after = samples(s)

    def grew(name, model, status=None):
        return after[name, model, status] - before.get((name, model, status), 0)

    assert grew("chargen_generated_characters_total", "tiny") == 7
    assert grew("chargen_generated_characters_total", "q8") == 13
    assert grew("chargen_prompt_characters_total", "tiny") == 3
    assert grew("chargen_prompt_characters_total", "q8") == 6
    assert grew("chargen_requests_total", "tiny", "200") == 1
    assert grew("chargen_requests_total", "q8", "200") == 2
    for m in MODELS:  # each model's own steps and first characters were counted
        assert grew("chargen_step_seconds_count", m) >= 1
        assert grew("chargen_time_to_first_character_seconds_count", m) == (1 if m == "tiny" else 2)
        assert after["chargen_slots", m, None] == 64
        assert after["chargen_active_slots", m, None] == 0 and after["chargen_queue_depth", m, None] == 0
    assert {m for (name, m, _) in after if name == "chargen_slots"} == set(MODELS)


def test_health_covers_every_model(two_models_server):
    h = httpx.get(two_models_server.url + "/health", timeout=TIMEOUT)
    assert h.status_code == 200
    body = h.json()
    assert body["status"] == "ok" and body["slots"] == 128 and set(body["models"]) == set(MODELS)
    for m in MODELS:
        assert body["models"][m] == {"status": "ok", "slots_active": 0, "slots": 64, "queue": 0}


@pytest.mark.parametrize("which", ["two", "one"])
def test_chat_completions_say_these_models_complete_text(which, two_models_server, server):
    s = two_models_server if which == "two" else server
    with pytest.raises(openai.NotFoundError) as caught:
        client(s).chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hello"}])
    err = caught.value.response.json()["error"]
    assert err["code"] == "model_not_supported" and err["param"] == "model"
    assert "'tiny' completes text" in err["message"] and "POST /v1/completions" in err["message"]
    r = httpx.post(s.url + "/v1/chat/completions", content=b"{not json", timeout=TIMEOUT)
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_supported"
    assert httpx.get(s.url + "/v1/chat/completions", timeout=TIMEOUT).status_code == 405
    assert "Traceback" not in s.log()


def test_a_client_that_goes_away_frees_its_models_slot(two_models_server):
    s = two_models_server
    with httpx.Client(timeout=TIMEOUT) as c:
        with c.stream("POST", s.url + "/v1/completions",
                      json={"model": "q8", "prompt": "A", "max_tokens": 900_000, "stream": True}) as r:
            lines = r.iter_lines()  # kept open: leaving a loop over it would close the response
            while not next(lines).startswith("data: "):
                pass
            assert s.metric("chargen_active_slots", model="q8") == 1
            assert s.metric("chargen_active_slots", model="tiny") == 0
    assert s.wait_metric("chargen_active_slots", 0, timeout=5, model="q8") == 0
    assert s.metric("chargen_requests_total", model="q8", status="499") >= 1
    assert complete(s.url, {"model": "q8", "prompt": "A", "max_tokens": 5})["choices"][0]["finish_reason"] == "length"


def test_sigterm_drains_every_model(tmp_path_factory, models):
    s = ServerProcess(models[0], "--model", f"q8={models[1]}", "--grace", "5", "--max-chars", "10000000",
                      log=tmp_path_factory.mktemp("drain-two") / "server.log")
    try:
        c = httpx.Client(timeout=TIMEOUT)
        streams = {m: c.send(c.build_request("POST", s.url + "/v1/completions",
                                             json={"model": m, "prompt": "B", "max_tokens": 9_000_000,
                                                   "stream": True}), stream=True) for m in MODELS}
        for m in MODELS:
            assert s.wait_metric("chargen_active_slots", 1, model=m) == 1
        s.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        while httpx.get(s.url + "/health", timeout=TIMEOUT).status_code != 503 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert httpx.get(s.url + "/health", timeout=TIMEOUT).json()["status"] == "draining"
        for m in MODELS:
            r = httpx.post(s.url + "/v1/completions", json={"model": m, "prompt": "A", "max_tokens": 5},
                           timeout=TIMEOUT)
            assert r.status_code == 503 and r.json()["error"]["code"] == "unavailable"
        for m, r in streams.items():  # both endless streams are ended after --grace, with an error
            cut = sse_events(r.iter_lines())
            assert cut[-1] != "[DONE]" and cut[-1]["error"]["code"] == "unavailable", m
        c.close()
        assert s.proc.wait(15) == 0
        assert "Traceback" not in s.log()
    finally:
        s.stop()
