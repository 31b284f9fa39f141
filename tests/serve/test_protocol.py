"""The API's request and errors on their own (serve/protocol.py, no server): a completion body
checks itself field by field, every bad field a 400 naming it and its range in OpenAI's shape;
the errors of unknown models and of chat requests."""

from __future__ import annotations

import pytest

from chargen.serve.protocol import (ApiError, CompletionRequest, model_not_found, not_a_chat_model,
                                    parse_completion)

LIMITS = dict(max_chars=100, max_choices=10)


def parse(**body):
    return parse_completion(body, **LIMITS)


def test_defaults():
    r = parse(prompt="ROMEO: ")
    assert r == CompletionRequest(model=None, prompts=["ROMEO: "], prompt_is_list=False, max_tokens=16,
                                  temperature=1.0, top_p=1.0, top_k=0, n=1, stop=None, seed=None, echo=False,
                                  stream=False, include_usage=False, logprobs=None, unknown="error")
    assert CompletionRequest.parse({"prompt": "ROMEO: "}, **LIMITS) == r


def test_every_field():
    r = parse(model="q8", prompt=["A", "B"], max_tokens=20.0, temperature=0, top_p=0.5, top_k=-1, n=3,
              stop=["\n", "END", "\n"], seed=-1, echo=True, stream=True, stream_options={"include_usage": True},
              logprobs=2, unknown="skip", user="u", presence_penalty=0, frequency_penalty=0.0, best_of=3,
              logit_bias={}, suffix="")
    assert r.model == "q8" and r.prompts == ["A", "B"] and r.prompt_is_list
    assert r.max_tokens == 20 and isinstance(r.max_tokens, int)
    assert (r.temperature, r.top_p, r.top_k, r.n) == (0.0, 0.5, 0, 3)
    assert r.stop == ("\n", "END")  # duplicates dropped, order kept
    assert r.seed == 2**64 - 1  # negative seeds wrap into [0, 2**64)
    assert r.echo and r.stream and r.include_usage and r.logprobs == 2 and r.unknown == "skip"
    assert parse(prompt="A", stop="\n").stop == ("\n",)
    assert parse(prompt="A", logprobs=False).logprobs is None
    assert parse(prompt="A", model="").model is None  # "" as absent: the first model
    assert parse(prompt="A" * 60, max_tokens=40).max_tokens == 40  # 100 characters: at the limit


@pytest.mark.parametrize("body, param, words", [
    ({"prompt": "A", "model": 3}, "model", ["'model' must be a string"]),
    ({}, "prompt", ["required"]),
    ({"prompt": None}, "prompt", ["required"]),
    ({"prompt": ""}, "prompt", ["'prompt' is empty"]),
    ({"prompt": ["A", ""]}, "prompt", ["'prompt[1]' is empty"]),
    ({"prompt": []}, "prompt", ["non-empty list"]),
    ({"prompt": [1, 2]}, "prompt", ["token ids"]),
    ({"prompt": [[1], [2]]}, "prompt", ["token ids"]),
    ({"prompt": {"a": 1}}, "prompt", ["a string or a non-empty list"]),
    ({"prompt": "A", "max_tokens": -1}, "max_tokens", ["integer >= 0"]),
    ({"prompt": "A", "max_tokens": 1.5}, "max_tokens", ["integer >= 0"]),
    ({"prompt": "A", "max_tokens": True}, "max_tokens", ["integer >= 0"]),
    ({"prompt": "A" * 60, "max_tokens": 41}, "max_tokens", ["(60 characters)", "101", "limit of 100", "--max-chars"]),
    ({"prompt": "A", "temperature": 2.01}, "temperature", ["[0, 2]"]),
    ({"prompt": "A", "temperature": float("nan")}, "temperature", ["[0, 2]"]),
    ({"prompt": "A", "temperature": "1"}, "temperature", ["[0, 2]"]),
    ({"prompt": "A", "top_p": 0}, "top_p", ["(0, 1]"]),
    ({"prompt": "A", "top_p": 1.1}, "top_p", ["(0, 1]"]),
    ({"prompt": "A", "top_k": -2}, "top_k", ["integer >= 0", "0 = no top-k cut"]),
    ({"prompt": "A", "n": 0}, "n", ["[1, 128]"]),
    ({"prompt": "A", "n": 11}, "n", ["11 choices", "over the 10", "--max-batch + --max-queue"]),
    ({"prompt": ["A", "B", "C"], "n": 4}, "n", ["12 choices"]),
    ({"prompt": "A", "stop": ""}, "stop", ["non-empty string"]),
    ({"prompt": "A", "stop": ["a", ""]}, "stop", ["non-empty string"]),
    ({"prompt": "A", "stop": []}, "stop", ["1 to 4"]),
    ({"prompt": "A", "stop": list("abcde")}, "stop", ["1 to 4"]),
    ({"prompt": "A", "stop": 5}, "stop", ["'stop'"]),
    ({"prompt": "A", "seed": 2**64}, "seed", ["[-2**63, 2**64)"]),
    ({"prompt": "A", "seed": -(2**63) - 1}, "seed", ["[-2**63, 2**64)"]),
    ({"prompt": "A", "seed": "7"}, "seed", ["'seed'"]),
    ({"prompt": "A", "echo": 1}, "echo", ["true or false"]),
    ({"prompt": "A", "stream": "yes"}, "stream", ["true or false"]),
    ({"prompt": "A", "stream_options": {"include_usage": True}}, "stream_options",
     ["only allowed with 'stream': true"]),
    ({"prompt": "A", "stream": True, "stream_options": []}, "stream_options", ["must be an object"]),
    ({"prompt": "A", "stream": True, "stream_options": {"include_usage": 1}}, "include_usage", ["true or false"]),
    ({"prompt": "A", "logprobs": 6}, "logprobs", ["[0, 5]"]),
    ({"prompt": "A", "logprobs": True}, "logprobs", ["[0, 5]"]),
    ({"prompt": "A", "unknown": "drop"}, "unknown", ["\"error\" or \"skip\""]),
    ({"prompt": "A", "user": 5}, "user", ["'user' must be a string"]),
    ({"prompt": "A", "presence_penalty": 0.1}, "presence_penalty", ["not supported"]),
    ({"prompt": "A", "frequency_penalty": -1}, "frequency_penalty", ["not supported"]),
    ({"prompt": "A", "best_of": 2}, "best_of", ["not supported", "'n' (1)"]),
    ({"prompt": "A", "logit_bias": {"1": 2}}, "logit_bias", ["not supported"]),
    ({"prompt": "A", "suffix": "x"}, "suffix", ["not supported"]),
])
def test_a_bad_field_is_a_400_naming_it(body, param, words):
    with pytest.raises(ApiError) as caught:
        parse_completion(body, **LIMITS)
    e = caught.value
    assert e.status == 400 and e.param == param and e.code == "invalid_value"
    for w in words:
        assert w in e.message, (w, e.message)
    assert e.body() == {"error": {"message": e.message, "type": "invalid_request_error", "param": param,
                                  "code": "invalid_value"}}


@pytest.mark.parametrize("body", [[1, 2], "prompt", None, 3])
def test_a_body_that_is_not_an_object(body):
    with pytest.raises(ApiError) as caught:
        parse_completion(body, **LIMITS)
    assert caught.value.status == 400 and caught.value.code == "invalid_json" and "JSON object" in caught.value.message


def test_the_first_bad_field_is_named():
    with pytest.raises(ApiError) as caught:
        parse(prompt="A", max_tokens=-1, temperature=9)
    assert caught.value.param == "max_tokens"


def test_model_not_found_names_the_served_models():
    e = model_not_found("gpt-4", ["tiny", "q8"])
    assert e.status == 404 and e.code == "model_not_found" and e.param == "model"
    assert "'gpt-4'" in e.message and "'tiny', 'q8'" in e.message and "/v1/models" in e.message
    assert e.body()["error"]["type"] == "invalid_request_error"


def test_chat_completions_error_points_at_completions():
    for name, words in (("q8", ["The model 'q8' completes text", "not a chat model"]),
                        ("gpt-4o", ["'tiny', 'q8'", "complete text"]), (None, ["'tiny', 'q8'"])):
        e = not_a_chat_model(name, ["tiny", "q8"])
        assert e.status == 404 and e.code == "model_not_supported" and e.param == "model"
        for w in [*words, "/v1/chat/completions", "POST /v1/completions"]:
            assert w in e.message, (w, e.message)
