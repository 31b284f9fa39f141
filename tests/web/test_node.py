"""The page's JavaScript under Node, on real model files: the reader against chargen.runtime's
(Python) one, the reference step against onnxruntime, and chargen.wasm's generation against
`gen sample --engine chargen` (the same C step, the same sampler and RNG streams)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from webkit import gen_sample, node, printed

from chargen.runtime.onnx_file import OnnxFileError, read_initializers, read_metadata


@pytest.mark.parametrize("which", ["int8-2l", "fp32", "fp16", "nbits"])
def test_the_reader_reads_what_the_python_reader_reads(web_models, which):
    path = web_models[which]
    answer = node("read", path)
    assert answer["metadata"] == read_metadata(path)
    want = read_initializers(path)
    assert sorted(answer["tensors"]) == sorted(want)
    for name, array in want.items():
        got = answer["tensors"][name]
        dtype = "bool" if array.dtype == np.bool_ else str(array.dtype)
        assert (got["dtype"], got["dims"]) == (dtype, list(array.shape)), name
        assert got["sha256"] == hashlib.sha256(np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()).hexdigest(), name


@pytest.mark.parametrize("damage", ["truncated", "garbage", "text"])
def test_a_damaged_file_fails_with_a_reason_in_both_readers(web_models, tmp_path, damage):
    data = web_models["int8"].read_bytes()
    bad = {"truncated": data[: len(data) // 2], "garbage": bytes(range(256)) * 40, "text": b"<html>not a model</html>\n"}
    path = tmp_path / "bad.onnx"
    path.write_bytes(bad[damage])
    with pytest.raises(OnnxFileError):
        read_initializers(path)
    answer = node("read", path, ok=False)
    assert answer["error"] == "OnnxFileError"
    assert "protobuf" in answer["message"] or "graph" in answer["message"]


@pytest.mark.parametrize("which", ["int8-2l", "fp32", "fp16"])
def test_the_reference_step_is_onnxruntimes_step(web_models, which):
    from chargen.runtime import Model

    path = web_models[which]
    model = Model.load(path, engine="onnxruntime", device="cpu")
    tokens = [3, 17, 40, 0, 64, 9]
    answer = node("reference", path, tokens)
    h = np.zeros((model.num_layers, 1, model.hidden_size), np.float32)
    for t, got in zip(tokens, answer["logits"]):
        logits, h = model.session.run(None, {"token": np.array([t], np.int64), "h": h})
        assert np.max(np.abs(np.array(got) - logits[0])) < 1e-4
    assert np.max(np.abs(np.array(answer["h"]) - h.reshape(-1))) < 1e-4


def test_the_check_at_load_refuses_an_engine_that_disagrees(web_models):
    assert node("check", web_models["int8"], 0)["worst"] < 1e-5
    answer = node("check", web_models["int8"], 1e-3, ok=False)  # the reference's head bias moved
    assert answer["error"] == "EngineError" and "disagrees with the reference step" in answer["message"]


@pytest.mark.parametrize("which", ["int8", "int8-2l"])
def test_greedy_text_is_gen_sample_s(web_models, which):
    path, start = web_models[which], "ROMEO: "
    answer = node("generate", path, start, '{"temperature": 0, "max_length": 300}')
    assert answer["engine"] == "chargen-wasm-int8"
    assert printed(start, answer["text"]) == gen_sample(path, start, 300, "--temperature", "0")


@pytest.mark.parametrize("which,seed,options", [
    ("int8", 7, {}),
    ("int8-2l", 2**64 - 1, {"temperature": 0.8, "top_k": 12}),
    ("int8", 123456789012345678, {"top_p": 0.9}),
])
def test_seeded_text_is_gen_sample_s(web_models, which, seed, options):
    import json

    path, start = web_models[which], "\n"
    answer = node("generate", path, start, json.dumps({**options, "seed": str(seed), "max_length": 400}))
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in options.items()]
    assert printed(start, answer["text"]) == gen_sample(path, start, 400, f"--seed={seed}", *flags)


def test_a_stop_string_ends_the_text_as_gen_sample_s(web_models):
    path, start = web_models["int8"], "A"
    full = node("generate", path, start, '{"seed": 3, "max_length": 200}')["text"]
    stop = full[40:42]  # a string the text reaches
    answer = node("generate", path, start, '{"seed": 3, "max_length": 200, "stop": %s}' % __import__("json").dumps(stop))
    assert answer["text"] == full[: full.index(stop) + len(stop)]
    assert printed(start, answer["text"]) == gen_sample(path, start, 200, "--seed=3", f"--stop={stop}")


@pytest.mark.parametrize("which,words", [("fp32", "fp32 models run on onnxruntime-web, which this page does not have"),
                                         ("nbits", "this one has nbits")])
def test_a_model_the_engine_cannot_run_is_refused_in_one_line(web_models, which, words):
    answer = node("generate", web_models[which], "A", "{}", ok=False)
    assert words in answer["message"] and "\n" not in answer["message"]


@pytest.mark.parametrize("options,words", [
    ({"temperature": -1}, "temperature must be"), ({"top_p": 0}, "top_p must be"),
    ({"top_k": 1.5}, "top_k must be"), ({"seed": "-1"}, "a seed is an integer"), ({"max_length": -1}, "max_length"),
    ({"stop": ""}, "stop must be"), ({"temprature": 1}, "unknown option temprature"),
])
def test_options_are_checked_as_generation_options_are(web_models, options, words):
    import json

    answer = node("generate", web_models["int8"], "A", json.dumps(options), ok=False)
    assert words in answer["message"]


@pytest.mark.parametrize("which", ["fp32", "fp16"])
def test_fp32_and_fp16_run_on_onnxruntime_web_with_gen_sample_s_greedy_and_seeded_text(web_models, ort_web, which):
    import os

    path, start = web_models[which], "ROMEO: "
    env = {**os.environ, "ORT_WEB_DIR": str(ort_web)}
    answer = node("generate", path, start, '{"temperature": 0, "max_length": 300}', env=env)
    assert answer["engine"] == f"onnxruntime-web-{which}" and answer["checked"] < 1e-4
    assert printed(start, answer["text"]) == gen_sample(path, start, 300, "--temperature", "0", engine="onnxruntime")
    # the same sampler and RNG stream as the native runtime's: seeded text agrees where the float logits do
    answer = node("generate", path, start, '{"seed": 11, "top_k": 5, "max_length": 300}', env=env)
    assert printed(start, answer["text"]) == gen_sample(path, start, 300, "--seed=11", "--top-k=5", engine="onnxruntime")
