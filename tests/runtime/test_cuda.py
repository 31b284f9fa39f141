"""The runtime on a real GPU (onnxruntime-gpu's CUDA provider, IOBinding on the device, CUDA
graphs), checked against the CPU path on the same model file. On a machine without a usable
GPU there is nothing to run them on: test_model.py checks the fallback and the errors there."""

from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


from chargen.runtime import DeviceError, GenerationOptions, Generator, Model  # noqa: E402

from modelkit import model_file  # noqa: E402
TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
        "First Citizen:\nYou are all resolved rather to die than to famish?\n") * 3


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    # logits of a few units
    return model_file(tmp_path_factory.mktemp("cuda") / "m.onnx", embedding=32, hidden=256, layers=2, seed=5,
                      head_scale=40.0, rnn_scale=3.0, corpus="test", val_loss=1.5)


def _cuda_model_or_skip(path, **kwargs):
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime has no CUDA provider here (onnxruntime-gpu not installed)")
    try:
        return Model.load(path, device="cuda", **kwargs)
    except DeviceError as e:
        pytest.skip(f"no usable GPU: {e}")


def test_cuda_is_chosen_with_cuda_graphs(model_path):
    m = _cuda_model_or_skip(model_path)
    assert m.device == "cuda" and m.cuda_graph
    assert Model.load(model_path).device == "cuda"  # 'auto' takes a usable GPU


@pytest.mark.parametrize("cuda_graph", [True, False], ids=["graph", "no-graph"])
def test_cuda_logits_follow_cpu_over_a_long_rollout(model_path, cuda_graph):
    gpu = Generator(_cuda_model_or_skip(model_path, cuda_graph=cuda_graph), GenerationOptions(seed=1))
    cpu = Generator(Model.load(model_path, device="cpu"), GenerationOptions(seed=1))
    gpu.feed(TEXT[0])
    cpu.feed(TEXT[0])
    worst, scale = 0.0, 0.0
    for ch in TEXT[1:]:  # teacher-forced: the same input every step, so errors cannot compound into other text
        worst = max(worst, float(np.abs(gpu.logits - cpu.logits).max()))
        scale = max(scale, float(np.abs(cpu.logits).max()))
        gpu.feed(ch)
        cpu.feed(ch)
    # TF32 matrix products on the GPU cost about 1e-3 of the scale; stale or misrouted logits cost all of it
    assert scale > 1.0 and worst < 5e-3 * scale, (worst, scale)


def test_cuda_generation_is_deterministic_and_restores_bit_exactly(model_path):
    model = _cuda_model_or_skip(model_path)
    runs = []
    for _ in range(2):
        g = Generator(model, GenerationOptions(seed=123, top_k=20, max_length=300))
        runs.append(g.generate("ROMEO: ")[0])
    assert runs[0] == runs[1] and len(runs[0]) == 300
    g = Generator(model, GenerationOptions(seed=9))
    g.feed("JULIET: ")
    for _ in range(50):
        g.step()
    saved = g.state()
    first = [g.step()[0] for _ in range(200)]
    g.restore(saved)
    assert [g.step()[0] for _ in range(200)] == first
    assert len(set(first)) > 5  # real text, not one repeated symbol


def test_cuda_batch_streams_match_single_streams(model_path):
    model = _cuda_model_or_skip(model_path)
    starts = ["ROMEO: ", "All:\n", "First Citizen:\nYou"]
    batch = Generator(model, GenerationOptions(temperature=0, max_length=120), batch_size=3)
    together = batch.generate(starts)
    for start, text in zip(starts, together):
        single = Generator(model, GenerationOptions(temperature=0, max_length=120))
        assert single.generate(start)[0] == text


def test_cuda_feeds_of_different_lengths_match_separate_feeds(model_path):
    """Streams that wait while longer start strings are fed keep their state (copied off and
    back onto the GPU), and a stream fed nothing keeps its logits."""
    model = _cuda_model_or_skip(model_path)
    starts = ["abc", "a much longer start string", "z"]
    g = Generator(model, GenerationOptions(seed=1), batch_size=3)
    g.feed(starts)
    for b, start in enumerate(starts):
        single = Generator(model, GenerationOptions(seed=1))
        single.feed(start)
        np.testing.assert_allclose(g.logits[b], single.logits[0], atol=0.05)
        np.testing.assert_allclose(g.state().h[:, b], single.state().h[:, 0], atol=5e-3)
    before = g.state()
    g.feed(["", " again", ""])
    after = g.state()
    assert np.array_equal(after.logits[[0, 2]], before.logits[[0, 2]])
    assert np.array_equal(after.h[:, [0, 2]], before.h[:, [0, 2]])
    assert not np.allclose(after.h[:, 1], before.h[:, 1])


def test_cuda_model_serves_threads_like_one_thread(model_path):
    model = _cuda_model_or_skip(model_path)

    def text(seed):
        return Generator(model, GenerationOptions(seed=seed, max_length=200)).generate("A")[0]

    expected = {seed: text(seed) for seed in range(6)}
    assert all(len(t) == 200 for t in expected.values()) and len(set(expected.values())) == 6
    got = {}
    threads = [threading.Thread(target=lambda s=s: got.__setitem__(s, text(s))) for s in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == expected


def test_gen_sample_on_cuda(model_path):
    _cuda_model_or_skip(model_path)
    r = subprocess.run([sys.executable, "-m", "chargen", "sample", "--model", str(model_path), "--device", "cuda",
                        "--start", "ROMEO: ", "--length", "100", "--seed", "3"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ROMEO: ") and len(r.stdout) >= 107


@pytest.mark.parametrize("cuda_graph", [True, False], ids=["graph", "no-graph"])
def test_cuda_batch_runs_the_generators_graph_path(model_path, cuda_graph):
    """Batch on CUDA runs on the same step core as Generator (device buffers, a CUDA graph per
    row count): slots that join and leave give each slot the greedy text a batch-1 Generator
    gives on the GPU."""
    from chargen.runtime import Batch

    model = _cuda_model_or_skip(model_path, cuda_graph=cuda_graph)
    batch = Batch(model, max_batch=8)
    assert batch._core.on_cuda and batch._core.engine == "onnxruntime"
    prompts = ["First", "All:\nSpeak", "You are", "Be", "Before we proceed"]
    greedy = GenerationOptions(temperature=0.0, max_length=60)
    slots = {batch.admit(p, greedy): p for p in prompts[:3]}
    texts = {s: "" for s in slots}
    steps = 0
    while batch.active:
        for e in batch.step():
            texts[e.slot] += e.text
        steps += 1
        if steps == 7:  # more slots join mid-way, so row counts change under the captured graphs
            for p in prompts[3:]:
                s = batch.admit(p, greedy)
                slots[s], texts[s] = p, ""
    for s, p in slots.items():
        alone = Generator(model, greedy).generate(p, 60)[0]
        assert texts[s] == alone, p
