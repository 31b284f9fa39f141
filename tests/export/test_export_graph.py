"""The plain-op step graph, and the layouts of export/graph_variants.py, against a float64
numpy reference of torch's GRU equations (no torch)."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from chargen.export.graph_variants import GraphOptions, build_graph, build_gru_op_graph, random_weights

from chargen.export.graph import GraphError, build_step_graph
from chargen.runtime import contract
from chargen.runtime.contract import Vocab


def numpy_step(weights: dict, model_config: dict, tokens: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reference step in float64 numpy, straight from torch's GRU equations
    (no folding): (logits [B, V], h_out [L, B, H])."""
    H, L = model_config["hidden_size"], model_config["layers"]
    w = {k: np.asarray(v, np.float64) for k, v in weights.items()}
    x = w["embedding.weight"][np.asarray(tokens, np.int64)]
    h = np.asarray(h, np.float64)
    sig = lambda a: 1.0 / (1.0 + np.exp(-a))  # noqa: E731
    outs = []
    for k in range(L):
        gi = x @ w[f"rnn.weight_ih_l{k}"].T + w[f"rnn.bias_ih_l{k}"]
        gh = h[k] @ w[f"rnn.weight_hh_l{k}"].T + w[f"rnn.bias_hh_l{k}"]
        r = sig(gi[:, :H] + gh[:, :H])
        z = sig(gi[:, H : 2 * H] + gh[:, H : 2 * H])
        n = np.tanh(gi[:, 2 * H :] + r * gh[:, 2 * H :])
        x = (1 - z) * n + z * h[k]
        outs.append(x)
    logits = x @ w["head.weight"].T + w["head.bias"]
    return logits, np.stack(outs)


def setup(L, V=11, E=5, H=7):
    vocab = Vocab(tuple("abcdefghijklmnopqrstuvwxyz"[:V]))
    cfg = dict(vocab_size=V, embedding_dim=E, hidden_size=H, layers=L, dropout=0.0)
    return random_weights(V, E, H, L, seed=L), cfg, vocab


def session(model):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def rollout_diff(model, w, cfg, steps=20, B=3, seed=1):
    """Max |difference| of logits and state between the graph and numpy over a short rollout."""
    rng = np.random.default_rng(seed)
    L, H, V = cfg["layers"], cfg["hidden_size"], cfg["vocab_size"]
    s = session(model)
    h = rng.normal(size=(L, B, H)).astype(np.float32)
    ref_h = h.astype(np.float64)
    worst = 0.0
    for _ in range(steps):
        tok = rng.integers(0, V, B).astype(np.int64)
        logits, h = s.run(None, {contract.INPUT_TOKEN: tok, contract.INPUT_H: h})
        ref_logits, ref_h = numpy_step(w, cfg, tok, ref_h)
        worst = max(worst, float(np.abs(logits - ref_logits).max()), float(np.abs(h - ref_h).max()))
    return worst


@pytest.mark.parametrize("L", [1, 2, 3])
def test_step_graph_matches_numpy_reference(L):
    w, cfg, vocab = setup(L)
    model = build_step_graph(w, cfg, vocab, corpus="unit", val_loss=1.5)
    onnx.checker.check_model(model, full_check=True)
    assert rollout_diff(model, w, cfg) < 1e-5


@pytest.mark.parametrize("L", [1, 2])
def test_gru_op_graph_matches_too(L):
    w, cfg, vocab = setup(L)
    assert rollout_diff(build_gru_op_graph(w, cfg, vocab), w, cfg) < 1e-5


@pytest.mark.parametrize("L", [1, 2])
@pytest.mark.parametrize("fold", [True, False])
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("gemm", [True, False])
def test_every_layout_variant_matches(L, fold, fused, gemm):
    w, cfg, vocab = setup(L)
    options = GraphOptions(fold_hh_bias=fold, fused_gates=fused, gemm_gates=gemm)
    model = build_graph(w, cfg, vocab, options=options)
    onnx.checker.check_model(model, full_check=True)
    assert rollout_diff(model, w, cfg) < 1e-5
    ops = [n.op_type for n in model.graph.node]
    assert ("Gemm" in ops) == gemm and "MatMul" in ops  # the head stays a MatMul (int8 excludes it by name)


@pytest.mark.parametrize("L", [1, 2, 3])
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_the_default_variant_is_the_shipped_graph(L, precision):
    """graph_variants.build_graph with GraphOptions() writes build_step_graph's graph, byte for byte."""
    w, cfg, vocab = setup(L)
    ship = build_step_graph(w, cfg, vocab, corpus="unit", val_loss=1.5, precision=precision)
    variant = build_graph(w, cfg, vocab, corpus="unit", val_loss=1.5, precision=precision, options=GraphOptions())
    assert ship.SerializeToString() == variant.SerializeToString()


@pytest.mark.parametrize("L", [1, 2])
def test_gemm_gates_leave_int8_graph_as_matmul(L):
    """quantize_dynamic quantizes MatMul only, so an int8 graph never takes the Gemm layout."""
    w, cfg, vocab = setup(L)
    model = build_graph(w, cfg, vocab, precision="int8", options=GraphOptions(gemm_gates=True))
    assert "Gemm" not in [n.op_type for n in model.graph.node]
    assert rollout_diff(model, w, cfg) < 1e-5


@pytest.mark.parametrize("fused", [True, False])
def test_wrong_formulas_differ(fused):
    w, cfg, vocab = setup(1)
    wrong = [GraphOptions(reset_after=False, fused_gates=fused), GraphOptions(swap_rz=True, fused_gates=fused)]
    for options in wrong:
        model = build_graph(w, cfg, vocab, options=options)
        onnx.checker.check_model(model, full_check=True)
        assert rollout_diff(model, w, cfg) > 1e-2


@pytest.mark.parametrize("mode", ["weights", "full"])
@pytest.mark.parametrize("gemm", [True, False])
def test_fp16_graph_is_close_and_keeps_float32_interface(mode, gemm):
    w, cfg, vocab = setup(2)
    model = build_graph(w, cfg, vocab, precision="fp16", options=GraphOptions(fp16=mode, gemm_gates=gemm))
    onnx.checker.check_model(model, full_check=True)
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
    for vi in list(model.graph.input[1:]) + list(model.graph.output):
        assert vi.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert rollout_diff(model, w, cfg, steps=5) < 1e-2


def test_interface_dynamic_batch_and_metadata():
    w, cfg, vocab = setup(2)
    model = build_step_graph(w, cfg, vocab, corpus="unit", val_loss=1.25)
    names = [i.name for i in model.graph.input], [o.name for o in model.graph.output]
    assert names == ([contract.INPUT_TOKEN, contract.INPUT_H], [contract.OUTPUT_LOGITS, contract.OUTPUT_H])
    dims = [d.dim_param or d.dim_value for d in model.graph.input[1].type.tensor_type.shape.dim]
    assert dims == [2, contract.BATCH_AXIS, 7]
    ops = {n.op_type for n in model.graph.node}
    assert "GRU" not in ops and "MatMul" in ops
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta[contract.META_FORMAT] == str(contract.FORMAT_VERSION)
    assert Vocab.from_json(meta[contract.META_VOCAB]) == vocab
    assert json.loads(meta[contract.META_CONFIG]) == cfg
    assert meta[contract.META_CORPUS] == "unit"
    assert float(meta[contract.META_VAL_LOSS]) == 1.25
    assert meta[contract.META_PRECISION] == "fp32"
    s = session(model)
    for B in (1, 256):
        logits, h = s.run(None, {"token": np.zeros(B, np.int64), "h": np.zeros((2, B, 7), np.float32)})
        assert logits.shape == (B, 11) and h.shape == (2, B, 7)


def test_bad_weights_and_precision_raise_graph_error():
    w, cfg, vocab = setup(1)
    with pytest.raises(GraphError):
        build_step_graph(w, cfg, vocab, precision="fp8")
    with pytest.raises(GraphError):
        build_step_graph({k: v for k, v in w.items() if k != "head.bias"}, cfg, vocab)
    with pytest.raises(GraphError):
        build_step_graph(w, dict(cfg, hidden_size=8), vocab)
    with pytest.raises(GraphError):
        build_step_graph(w, cfg, Vocab(("a", "b")))
