"""gen export's library side: real tiny models, real onnxruntime, real parity checks."""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from chargen.export.graph_variants import GraphOptions, build_graph

from chargen.export import onnx_export
from chargen.export.onnx_export import (
    FP32_TOLERANCE,
    MAX_LOSS_INCREASE,
    ExportError,
    check_text,
    export_checkpoint,
)
from chargen.runtime import contract
from chargen.runtime.contract import Vocab
from chargen.train import checkpoint as ckpt


def meta_of(path) -> dict:
    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def test_fp32_export_passes_parity_at_batch_1_and_3(checkpoint_path, corpus_file, tmp_path):
    out = tmp_path / "model.onnx"
    r = export_checkpoint(out, checkpoint_path, "fp32", data=corpus_file, steps=1000, batch=3)
    p = r.parity
    assert p.passed and p.steps >= 1000 and p.batches == (1, 3)
    assert p.max_logit_diff <= FP32_TOLERANCE
    assert p.greedy_agree == p.greedy_steps == 500
    assert "validation split of tiny" in p.text
    assert abs(p.onnx_loss - p.torch_loss) < 1e-4
    assert out.is_file() and r.size_bytes == out.stat().st_size
    # one file: every weight inside, no side .data file, no temp files left
    assert sorted(f.name for f in tmp_path.iterdir()) == ["model.onnx"]
    model = onnx.load(str(out), load_external_data=False)
    assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    onnx.checker.check_model(model, full_check=True)
    assert "GRU" not in {n.op_type for n in model.graph.node}
    torch_model, _, _ = ckpt.load_model(checkpoint_path)
    assert r.parameters == torch_model.num_parameters() and r.vocab_size == torch_model.config.vocab_size


def test_metadata_is_present_and_decodes(checkpoint_path, corpus_file, tmp_path):
    out = tmp_path / "m.onnx"
    export_checkpoint(out, checkpoint_path, data=corpus_file)
    cp = ckpt.load(checkpoint_path)
    meta = meta_of(out)
    assert meta[contract.META_FORMAT] == str(contract.FORMAT_VERSION)
    assert Vocab.from_json(meta[contract.META_VOCAB]).chars == tuple(cp["vocab"])
    assert json.loads(meta[contract.META_CONFIG]) == cp["model_config"]
    assert meta[contract.META_CORPUS] == "tiny"
    assert float(meta[contract.META_VAL_LOSS]) == pytest.approx(cp["best_val_loss"])
    assert meta[contract.META_PRECISION] == "fp32"
    # and onnxruntime sees the same
    s = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert s.get_modelmeta().custom_metadata_map[contract.META_PRECISION] == "fp32"


def test_one_graph_serves_batch_1_and_256(checkpoint_path, corpus_file, tmp_path):
    out = tmp_path / "m.onnx"
    export_checkpoint(out, checkpoint_path, data=corpus_file)
    model, _, _ = ckpt.load_model(checkpoint_path)
    c = model.config
    s = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for B in (1, 256):
        tokens = rng.integers(0, c.vocab_size, size=(5, B))
        h = np.zeros((c.layers, B, c.hidden_size), np.float32)
        got = []
        for t in range(5):
            logits, h = s.run(None, {contract.INPUT_TOKEN: tokens[t], contract.INPUT_H: h})
            assert logits.shape == (B, c.vocab_size) and h.shape == (c.layers, B, c.hidden_size)
            got.append(logits)
        with torch.no_grad():
            ref, _ = model(torch.as_tensor(tokens))
        assert np.abs(np.stack(got) - ref.numpy()).max() <= FP32_TOLERANCE


def test_two_layers_with_dropout_config_export_in_eval_mode(deep_checkpoint_path, corpus_file, tmp_path):
    r = export_checkpoint(tmp_path / "deep.onnx", deep_checkpoint_path, data=corpus_file)
    assert r.parity.passed and r.config["layers"] == 2
    assert [i[2] for i in r.inputs] == [["batch"], [2, "batch", 24]]


def test_latest_run_by_default_and_pseudo_random_text_without_corpus(run_dir, tmp_path):
    r = export_checkpoint(tmp_path / "m.onnx", None, runs_dir=run_dir.parent)
    assert r.checkpoint == run_dir / ckpt.BEST
    assert r.parity.passed and "pseudo-random" in r.parity.text


def test_check_text_uses_the_validation_split(checkpoint_path, corpus_file):
    cp = ckpt.load(checkpoint_path)
    vocab = Vocab(tuple(cp["vocab"]))
    ids, what = check_text(cp, vocab, corpus_file, steps=1000)
    text = corpus_file.read_text()
    val = text[int(len(text) * 0.9) :]
    assert vocab.decode(ids[:100]) == val[:100] and len(ids) >= 1001 and "validation split" in what
    # pseudo-random fallback is deterministic
    a, _ = check_text(cp, vocab, None, 1000)
    b, _ = check_text(cp, vocab, None, 1000)
    assert (a == b).all() and len(a) == 1001


@pytest.mark.parametrize("precision, kernel", [("fp16", None), ("int8", None), ("int8", "nbits")])
def test_fp16_and_int8_exports_run_and_report(precision, kernel, checkpoint_path, corpus_file, tmp_path):
    fp32 = export_checkpoint(tmp_path / "fp32.onnx", checkpoint_path, data=corpus_file)
    r = export_checkpoint(tmp_path / f"{precision}.onnx", checkpoint_path, precision, data=corpus_file,
                          **({"int8_kernel": kernel} if kernel else {}))
    if precision == "int8":
        kernel = kernel or "dynamic"  # the default
    p = r.parity
    assert p.passed and np.isfinite(p.max_logit_diff) and p.max_logit_diff > 0
    # the tiny model (H=32) is barely trained: int8 there costs ~0.000 nats with reduce_range
    # weights and the float32 head; the 0.02 budget is the export's own limit.
    assert p.loss_increase <= MAX_LOSS_INCREASE
    assert r.size_bytes < fp32.size_bytes
    meta = meta_of(r.path)
    assert meta[contract.META_PRECISION] == precision
    assert meta.get(contract.META_INT8_KERNEL) == kernel and r.int8_kernel == kernel
    graph = onnx.load(str(r.path)).graph
    ops = {n.op_type for n in graph.node}
    if kernel == "nbits":
        assert "MatMulNBits" in ops and not ops & {"MatMulInteger", "DynamicQuantizeLinear"}
        nbits = [n for n in graph.node if n.op_type == "MatMulNBits"]
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in nbits[0].attribute}
        assert (attrs["bits"], attrs["accuracy_level"]) == (8, 4)
    elif kernel == "dynamic":
        assert "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops or "MatMulIntegerToFloat" in ops
        assert "MatMulNBits" not in ops
    else:
        assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in graph.initializer)
    if precision == "int8":  # the head stays a float32 MatMul: its error would go straight into the logits
        assert any(n.op_type == "MatMul" and n.name == "head_matmul" for n in graph.node)


def test_nbits_int8_is_closer_to_torch_than_dynamic(checkpoint_path, corpus_file, tmp_path):
    """What nbits is for: per-block scales beat per-channel ones over a 7-bit range."""
    r = {k: export_checkpoint(tmp_path / f"{k}.onnx", checkpoint_path, "int8", data=corpus_file, int8_kernel=k)
         for k in ("nbits", "dynamic")}
    assert r["nbits"].parity.max_logit_diff < r["dynamic"].parity.max_logit_diff


def test_unknown_int8_kernel_is_refused(checkpoint_path, tmp_path):
    with pytest.raises(ExportError, match="unknown int8 kernel 'int4'"):
        export_checkpoint(tmp_path / "m.onnx", checkpoint_path, "int8", int8_kernel="int4")
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize(
    "wrong", [GraphOptions(reset_after=False), GraphOptions(swap_rz=True)], ids=["linear_before_reset=0", "z-r-swapped"]
)
def test_wrong_graph_is_caught_and_nothing_is_written(wrong, checkpoint_path, corpus_file, tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_export, "build_step_graph", lambda *a, **k: build_graph(*a, **k, options=wrong))
    out = tmp_path / "model.onnx"
    out.write_bytes(b"the user's good model")
    with pytest.raises(ExportError) as e:
        export_checkpoint(out, checkpoint_path, data=corpus_file)
    msg = str(e.value)
    assert "does not match torch" in msg and "differ" in msg and "\n" not in msg
    assert out.read_bytes() == b"the user's good model"
    assert sorted(f.name for f in tmp_path.iterdir()) == ["model.onnx"]
    # and into an empty folder: no file appears
    with pytest.raises(ExportError):
        export_checkpoint(tmp_path / "new.onnx", checkpoint_path, data=corpus_file)
    assert not (tmp_path / "new.onnx").exists()


def test_interrupted_write_leaves_the_old_file(checkpoint_path, corpus_file, tmp_path, monkeypatch):
    out = tmp_path / "model.onnx"
    out.write_bytes(b"old")

    def boom(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        export_checkpoint(out, checkpoint_path, data=corpus_file)
    assert out.read_bytes() == b"old"
    assert sorted(f.name for f in tmp_path.iterdir()) == ["model.onnx"]


@pytest.mark.parametrize(
    "case, expect",
    [
        ("missing", "no checkpoint"),
        ("truncated", "corrupt or truncated"),
        ("not-checkpoint", "not a chargen checkpoint"),
        ("no-folder", "does not exist"),
        ("precision", "unknown precision"),
        ("empty-runs", "no checkpoint found"),
    ],
)
def test_export_errors_are_one_line(case, expect, checkpoint_path, tmp_path):
    out, cp, kw = tmp_path / "m.onnx", checkpoint_path, {}
    if case == "missing":
        cp = tmp_path / "nope.pt"
    elif case == "truncated":
        cp = tmp_path / "half.pt"
        data = checkpoint_path.read_bytes()
        cp.write_bytes(data[: len(data) // 2])
    elif case == "not-checkpoint":
        cp = tmp_path / "other.pt"
        torch.save({"weights": torch.zeros(3)}, cp)
    elif case == "no-folder":
        out = tmp_path / "missing" / "m.onnx"
    elif case == "precision":
        kw["precision"] = "int4"
    elif case == "empty-runs":
        cp, kw["runs_dir"] = None, tmp_path / "runs"
    with pytest.raises(ExportError) as e:
        export_checkpoint(out, cp, **kw)
    assert expect in str(e.value) and "\n" not in str(e.value)
    assert not out.exists()


@pytest.mark.parametrize("which", ["checkpoint_path", "deep_checkpoint_path"])
def test_chargens_int8_step_follows_torch_over_a_long_rollout(which, request, corpus_file, tmp_path):
    """chargen's own int8 step (chargen.runtime.engine) on a trained checkpoint's int8 export,
    teacher-forced over 1,000 characters of the validation split beside torch: the same
    per-step logit error and loss as the int8 graph onnxruntime runs (layer 2 of the deep model
    goes through the int8 W_ih too; its H=24 through the kernels' row padding)."""
    from chargen.export.onnx_export import _torch_logits, check_text, load_checkpoint
    from chargen.runtime import GenerationOptions, Generator, Model

    exported = export_checkpoint(tmp_path / "int8.onnx", request.getfixturevalue(which), "int8", data=corpus_file)
    _, torch_model, vocab, cp = load_checkpoint(request.getfixturevalue(which))
    ids, _ = check_text(cp, vocab, corpus_file, 1000)
    want, _ = _torch_logits(torch_model, ids[:-1, None])  # (T, 1, V)
    losses, errors = {}, {}
    for engine in ("chargen", "onnxruntime"):
        model = Model.load(exported.path, device="cpu", engine=engine)
        g = Generator(model, GenerationOptions(seed=0))
        assert g.engine == engine
        g.feed(vocab.decode(ids[:1].tolist()))
        logits = [g.logits.copy()]
        for i in ids[1:-1]:
            g.advance([int(i)])
            logits.append(g.logits.copy())
        got = np.concatenate(logits)  # (T, V)
        errors[engine] = float(np.abs(got - want[:, 0]).max())
        z = got - got.max(axis=1, keepdims=True)
        losses[engine] = float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(z)), ids[1:]]))
    zt = want[:, 0] - want[:, 0].max(axis=1, keepdims=True)
    torch_loss = float(np.mean(np.log(np.exp(zt).sum(axis=1)) - zt[np.arange(len(zt)), ids[1:]]))
    assert abs(losses["chargen"] - torch_loss) <= MAX_LOSS_INCREASE
    assert abs(losses["chargen"] - losses["onnxruntime"]) < 1e-4
    assert errors["chargen"] <= errors["onnxruntime"] + 1e-4, errors


@pytest.mark.parametrize("which", ["checkpoint_path", "deep_checkpoint_path"])
def test_what_the_two_int8_engines_share_on_trained_models(which, request, corpus_file, tmp_path):
    """What the README promises of chargen's int8 step beside onnxruntime's int8 graph, on
    trained checkpoints: greedy text is the same over 1,000 characters; sampled text is each
    engine's own (their gates round differently, so the two drift apart), and reproducible:
    the same seed gives the same text, on one thread or several."""
    from chargen.runtime import GenerationOptions, Generator, Model

    exported = export_checkpoint(tmp_path / "int8.onnx", request.getfixturevalue(which), "int8", data=corpus_file)
    models = {e: Model.load(exported.path, device="cpu", engine=e) for e in ("chargen", "onnxruntime")}
    greedy = GenerationOptions(temperature=0, max_length=1000)
    texts = {e: Generator(m, greedy).generate("ROMEO: ")[0] for e, m in models.items()}
    assert texts["chargen"] == texts["onnxruntime"] and len(texts["chargen"]) == 1000
    sampled = GenerationOptions(seed=7, max_length=1000)
    for e, m in models.items():
        assert Generator(m, sampled).generate("ROMEO: ") == Generator(m, sampled).generate("ROMEO: "), e
    one_thread = Model.load(exported.path, device="cpu", engine="chargen", threads=1)
    assert (Generator(one_thread, sampled).generate("ROMEO: ")
            == Generator(models["chargen"], sampled).generate("ROMEO: "))


@pytest.mark.parametrize("which", ["checkpoint_path", "deep_checkpoint_path"])
def test_chargens_batched_int8_product_follows_torch_over_a_long_rollout(which, request, corpus_file, tmp_path):
    """The batched (packed) int8 product on trained checkpoints: 37 streams teacher-forced over
    1,000 characters each (stream r from character r of the validation split) give, row for row,
    the bits of the same text run alone on the unpacked step (the matrix-vector kernels: the
    products are exact in both and each stream is quantized on its own), and the loss beside torch
    the single stream has; on x86 the batch runs on the packed kernel (AVX2, AVX-512 VNNI or AMX)."""
    from chargen.export.onnx_export import _torch_logits, check_text, load_checkpoint
    from chargen.runtime import GenerationOptions, Generator, Model, _int8, engine

    B, T, rows = 37, 1000, (0, 17, 36)
    exported = export_checkpoint(tmp_path / "int8.onnx", request.getfixturevalue(which), "int8", data=corpus_file)
    _, torch_model, vocab, cp = load_checkpoint(request.getfixturevalue(which))
    ids, _ = check_text(cp, vocab, corpus_file, T + B)
    streams = np.stack([ids[r : r + T] for r in range(B)])  # (B, T)
    model = Model.load(exported.path, device="cpu", engine="chargen")
    unpacked = Model.load(exported.path, device="cpu", engine="chargen")
    unpacked.int8_step = engine.build(unpacked, None, packed=False)
    if _int8.packed_kernel() is not None:
        assert " packed" in model.int8_step.kernel_for(B) and " packed" not in unpacked.int8_step.kernel_for(1)

    def rollout(batch: np.ndarray, model=model) -> np.ndarray:  # (b, T) ids -> (T - 1, b, V) logits
        g = Generator(model, GenerationOptions(seed=0), batch_size=len(batch))
        g.feed([vocab.decode(row[:1].tolist()) for row in batch])
        out = [g.logits.copy()]
        for t in range(1, T - 1):
            g.advance([int(i) for i in batch[:, t]])
            out.append(g.logits.copy())
        return np.stack(out)

    batched = rollout(streams)
    for r in rows:
        alone = rollout(streams[r : r + 1], unpacked)
        assert np.array_equal(batched[:, r], alone[:, 0]), f"stream {r} differs from its run alone"
    want, _ = _torch_logits(torch_model, streams[0, :-1, None])
    z = batched[:, 0] - batched[:, 0].max(axis=1, keepdims=True)
    zt = want[:, 0] - want[:, 0].max(axis=1, keepdims=True)
    target = np.arange(T - 1), streams[0, 1:]
    loss = float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[target]))
    torch_loss = float(np.mean(np.log(np.exp(zt).sum(axis=1)) - zt[target]))
    assert abs(loss - torch_loss) <= MAX_LOSS_INCREASE, (loss, torch_loss)
