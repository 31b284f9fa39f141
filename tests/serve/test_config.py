"""The server's settings on their own (serve/config.py, no server): ServeConfig refuses values
out of range with the option's name, and `--model` values give the served names (the file's
stem, or NAME=PATH), two models of one name being an error."""

from __future__ import annotations

import math

import pytest

from chargen.serve.config import ConfigError, ServeConfig, check_port, model_names


def test_defaults_and_a_valid_config():
    c = ServeConfig()
    assert (c.max_batch, c.max_queue, c.max_chars, c.api_key, c.cors_origins, c.grace) == \
        (64, 256, 4096, None, (), 10.0)
    c = ServeConfig(max_batch=1, max_queue=0, max_chars=2, grace=0, cors_origins=["*"], api_key="k")
    assert c.cors_origins == ("*",)


@pytest.mark.parametrize("field, value, says", [
    ("max_batch", 0, "--max-batch must be >= 1, not 0"),
    ("max_batch", 1.5, "--max-batch must be an integer >= 1"),
    ("max_batch", True, "--max-batch must be an integer >= 1"),
    ("max_queue", -1, "--max-queue must be >= 0, not -1"),
    ("max_chars", 1, "--max-chars must be >= 2, not 1"),
    ("max_body", 0, "max_body must be >= 1"),
    ("grace", -1, "--grace must be >= 0, not -1"),
    ("grace", math.nan, "--grace must be >= 0, not nan"),
    ("grace", "10", "--grace must be >= 0"),
    ("flush_interval", -0.1, "flush_interval must be >= 0"),
    ("keepalive", 0, "keepalive must be >= 0.001"),
    ("api_key", "", "--api-key must not be empty"),
    ("api_key", "  ", "--api-key must not be empty"),
    ("cors_origins", "http://a.test", "--cors-origin must be origins"),
    ("cors_origins", ("",), "--cors-origin must be origins"),
    ("model_id", "", "the model name ''"),
])
def test_a_value_out_of_range_names_the_option(field, value, says):
    with pytest.raises(ConfigError) as caught:
        ServeConfig(**{field: value})
    assert says in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_port():
    assert check_port(0) == 0 and check_port(65535) == 65535
    for bad in (-1, 65536, 70000):
        with pytest.raises(ConfigError, match=r"--port must be in \[0, 65535\]"):
            check_port(bad)


def test_names_are_stems_or_given(tmp_path):
    assert model_names(["runs/a.onnx"]) == [("a", "runs/a.onnx")]
    assert model_names(["runs/a.onnx", "q8=runs/a-int8.onnx"]) == [("a", "runs/a.onnx"), ("q8", "runs/a-int8.onnx")]
    assert model_names(["x.onnx"], model_id="shakespeare") == [("shakespeare", "x.onnx")]
    assert model_names(["x.onnx", "y.onnx"], model_id="s") == [("x", "x.onnx"), ("y", "y.onnx")]
    assert model_names(["gpt-4o-mini:v1=m.onnx"]) == [("gpt-4o-mini:v1", "m.onnx")]
    assert model_names(["two words=m.onnx"]) == [("two words", "m.onnx")]  # printable, spaces inside
    # a '=' inside a path is a path: before a '/', or an existing file
    assert model_names(["runs/a=b/m.onnx"]) == [("m", "runs/a=b/m.onnx")]
    (tmp_path / "a=b.onnx").write_bytes(b"")
    existing = str(tmp_path / "a=b.onnx")
    assert model_names([existing]) == [("a=b", existing)]


@pytest.mark.parametrize("specs, says", [
    ([], "give at least one --model"),
    (["a/m.onnx", "b/m.onnx"], "two models are named 'm' (a/m.onnx and b/m.onnx)"),
    (["m.onnx", "m=other.onnx"], "two models are named 'm'"),
    (["q=a.onnx", "q=b.onnx"], "--model NAME=PATH"),
    (["=a.onnx"], "the model name ''"),
    (["q8="], "no path after 'q8='"),
    ([" q8=a.onnx"], "the model name ' q8'"),
])
def test_bad_names(specs, says):
    with pytest.raises(ConfigError) as caught:
        model_names(specs)
    assert says in str(caught.value)
