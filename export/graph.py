"""The ONNX step graph of a CharGRU, built from plain ops with onnx.helper.

One call of the graph is one character for B streams:

    inputs   token   int64   [B]        one symbol id per stream
             h       float32 [L, B, H]  hidden state in
    outputs  logits  float32 [B, V]
             h_out   float32 [L, B, H]  hidden state out

The GRU is torch's (gate order r, z, n; ONNX linear_before_reset=1):

    gi = x W_ih^T + b_ih            gh = h W_hh^T + b_hh
    r  = sigmoid(gi_r + gh_r)       z  = sigmoid(gi_z + gh_z)
    n  = tanh(gi_n + r * gh_n)      h' = (1 - z) * n + z * h = n + z * (h - n)

written with Gather / MatMul / Add / Sigmoid / Tanh / Mul / Sub / Split, not
the ONNX GRU op and not through torch.onnx:

* layer 0's Embedding and input projection fold into one [V, 3H] table
  (emb @ W_ih^T + b_ih, plus the r and z parts of b_hh, which only ever add to
  gi), gathered by token: no input MatMul at all;
* the recurrent product is one [H, 3H] MatMul for all three gates, plus
  b_hh's n part (the only bias that sits inside r * (...));
* the r and z gates share one Add and one Sigmoid over [B, 2H].

This is the graph that ships. Layouts written otherwise (measured, or
deliberately wrong for tests), the ONNX GRU op baseline and random weights
live with their users in export/graph_variants.py. This module imports
numpy and onnx only (no torch).
"""

from __future__ import annotations

import json
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from chargen.runtime.contract import (
    BATCH_AXIS,
    FORMAT_VERSION,
    INPUT_H,
    INPUT_TOKEN,
    META_CONFIG,
    META_CORPUS,
    META_FORMAT,
    META_PRECISION,
    META_VAL_LOSS,
    META_VOCAB,
    OUTPUT_H,
    OUTPUT_LOGITS,
    Vocab,
)

__all__ = [
    "OPSET",
    "PRECISIONS",
    "GraphError",
    "build_step_graph",
    "set_metadata",
    # the building blocks, for graphs written otherwise (export/graph_variants.py)
    "Builder",
    "config_ints",
    "check_weights",
    "check_inputs",
    "step_model",
]

OPSET = 17
PRECISIONS = ("fp32", "fp16", "int8")
PRODUCER = "chargen"
HEAD_MATMUL = "head_matmul"  # node name of the head's MatMul (int8 leaves it in float32)


class GraphError(ValueError):
    """Weights or config that do not make a CharGRU step graph; one-line message."""


def check_inputs(weights: dict, model_config: dict, vocab: Vocab, precision: str):
    """(V, E, H, L, the weights as float32 arrays) of a step graph's inputs, or GraphError."""
    if precision not in PRECISIONS:
        raise GraphError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    V, E, H, L = config_ints(model_config)
    if len(vocab) != V:
        raise GraphError(f"the vocabulary has {len(vocab)} symbols but the model config says vocab_size={V}")
    return V, E, H, L, check_weights(weights, V, E, H, L)


def config_ints(model_config: dict) -> tuple[int, int, int, int]:
    try:
        V = int(model_config["vocab_size"])
        E = int(model_config["embedding_dim"])
        H = int(model_config["hidden_size"])
        L = int(model_config["layers"])
    except (KeyError, TypeError, ValueError) as e:
        raise GraphError(f"model config lacks a usable {e}: {model_config!r}") from None
    if min(V, E, H, L) < 1:
        raise GraphError(f"model config sizes must be >= 1: {model_config!r}")
    return V, E, H, L


def check_weights(weights: dict, V: int, E: int, H: int, L: int) -> dict[str, np.ndarray]:
    want = {"embedding.weight": (V, E), "head.weight": (V, H), "head.bias": (V,)}
    for k in range(L):
        want[f"rnn.weight_ih_l{k}"] = (3 * H, E if k == 0 else H)
        want[f"rnn.weight_hh_l{k}"] = (3 * H, H)
        want[f"rnn.bias_ih_l{k}"] = (3 * H,)
        want[f"rnn.bias_hh_l{k}"] = (3 * H,)
    out = {}
    for name, shape in want.items():
        if name not in weights:
            raise GraphError(f"weights lack {name!r}")
        a = np.asarray(weights[name])
        if a.shape != shape:
            raise GraphError(f"weight {name!r} has shape {a.shape}, expected {shape} for the model config")
        out[name] = a.astype(np.float64)  # fold in float64, round once to the storage type
    return out


class Builder:
    def __init__(self, wdtype: np.dtype, cast_weights: bool):
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.wdtype = wdtype  # storage type of weights
        self.cast_weights = cast_weights  # Cast stored weights to float32 in the graph
        self._n = 0
        self._consts: set[str] = set()
        self.const_values: dict[str, np.ndarray] = {}

    def name(self, base: str) -> str:
        self._n += 1
        return f"{base}_{self._n}"

    def node(self, op: str, inputs: list[str], base: str, n_out: int = 1, **attrs) -> list[str] | str:
        for name in inputs:
            if name in self.const_values:
                self.const(name, self.const_values[name])
        outs = [self.name(base) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=self.name(op), **attrs))
        return outs if n_out > 1 else outs[0]

    def const(self, name: str, array: np.ndarray) -> str:
        """An int64 (shape, index) constant: always stored as is, once per name."""
        if name not in self._consts:
            self._consts.add(name)
            self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def weight(self, name: str, array: np.ndarray) -> str:
        """A float weight in the storage type; Cast to float32 if asked."""
        stored = np.ascontiguousarray(array.astype(self.wdtype))
        self.inits.append(numpy_helper.from_array(stored, name))
        if self.cast_weights:
            return self.node("Cast", [name], name + "_f32", to=TensorProto.FLOAT)
        return name

    def linear(self, inp: str, weight: np.ndarray, bias: np.ndarray | None, name: str) -> str:
        """inp @ weight^T (+ bias): MatMul then Add (onnxruntime fuses the pair into a Gemm)."""
        y = self.node("MatMul", [inp, self.weight(f"{name}_w_t", weight.T)], f"{name}_mm")
        if bias is not None and np.any(bias):
            y = self.node("Add", [y, self.weight(f"{name}_b", bias)], name)
        return y

    def head(self, x: str, weight: np.ndarray, bias: np.ndarray, out: str) -> None:
        """out = x @ head.weight^T + head.bias; the MatMul named HEAD_MATMUL (int8 leaves it float32)."""
        logits = self.node("MatMul", [x, self.weight("head_w_t", weight.T)], "head_mm")
        self.nodes[-1].name = HEAD_MATMUL
        self.nodes.append(helper.make_node("Add", [logits, self.weight("head_b", bias)], [out], name="head_add"))


def step_model(b, name: str, L: int, H: int, V: int) -> onnx.ModelProto:
    """The contract's inputs and outputs around the nodes and initializers in b."""
    graph = helper.make_graph(
        b.nodes,
        name,
        inputs=[
            helper.make_tensor_value_info(INPUT_TOKEN, TensorProto.INT64, [BATCH_AXIS]),
            helper.make_tensor_value_info(INPUT_H, TensorProto.FLOAT, [L, BATCH_AXIS, H]),
        ],
        outputs=[
            helper.make_tensor_value_info(OUTPUT_LOGITS, TensorProto.FLOAT, [BATCH_AXIS, V]),
            helper.make_tensor_value_info(OUTPUT_H, TensorProto.FLOAT, [L, BATCH_AXIS, H]),
        ],
        initializer=b.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name=PRODUCER)
    model.ir_version = 8  # opset 17 needs IR >= 8; 8 keeps older onnxruntimes able to load it
    return model


def build_step_graph(
    weights: dict[str, np.ndarray],
    model_config: dict,
    vocab: Vocab,
    *,
    corpus: str = "",
    val_loss: float | None = None,
    precision: str = "fp32",
) -> onnx.ModelProto:
    """The one-step ONNX graph of a CharGRU from its state_dict as numpy arrays.

    weights: CharGRU.state_dict() as float arrays (embedding.weight,
    rnn.weight_ih_l{k}, rnn.weight_hh_l{k}, rnn.bias_ih_l{k}, rnn.bias_hh_l{k},
    head.weight, head.bias); model_config: ModelConfig as a dict.

    precision "fp32" and "fp16" (fp16 weights, each Cast to float32: onnxruntime folds the
    Cast at session start, so half the file and float32 arithmetic) are built here; "int8"
    builds the float32 graph labelled int8, which chargen.export.onnx_export.quantize_int8
    then quantizes (onnxruntime's quantize_dynamic on the MatMul weights). Raises GraphError
    on weights that do not fit the config.

    The layout is the one that measured fastest (benchmarks/bench_export.py, where the
    others are written: export/graph_variants.py): b_hh's r and z parts folded into the
    gi side, one [V, 3H] gather table for layer 0, one [H, 3H] recurrent MatMul per layer.
    """
    V, E, H, L, w = check_inputs(weights, model_config, vocab, precision)

    fp16 = precision == "fp16"
    b = Builder(np.float16 if fp16 else np.float32, cast_weights=fp16)
    split_2h_h, split_h_h, axis0 = "split_2h_h", "split_h_h", "axis0"  # int64 constants, made on first use
    b.const_values = {
        split_2h_h: np.array([2 * H, H], np.int64),
        split_h_h: np.array([H, H], np.int64),
        axis0: np.array([0], np.int64),
    }

    x = None
    h_outs = []
    for k in range(L):
        w_ih, w_hh = w[f"rnn.weight_ih_l{k}"], w[f"rnn.weight_hh_l{k}"]
        b_ih, b_hh = w[f"rnn.bias_ih_l{k}"].copy(), w[f"rnn.bias_hh_l{k}"].copy()
        b_ih[: 2 * H] += b_hh[: 2 * H]  # b_hh's r, z parts only ever add to gi's
        b_hh[: 2 * H] = 0.0
        n_ = slice(2 * H, 3 * H)

        # gi = x W_ih^T + b_ih: layer 0's Embedding and input projection fold into a gather table
        if k == 0:
            table = w["embedding.weight"] @ w_ih.T + b_ih  # [V, 3H]
            gi = b.node("Gather", [b.weight("gi_table_l0", table), INPUT_TOKEN], "gi_l0", axis=0)
        else:
            gi = b.linear(x, w_ih, b_ih, f"gi_l{k}")
        gi_rz, gi_n = b.node("Split", [gi, split_2h_h], f"gi_split_l{k}", n_out=2, axis=1)

        # h_k: [B, H]
        if L == 1:
            h = b.node("Squeeze", [INPUT_H, axis0], "h_l0")
        else:
            h = b.node("Gather", [INPUT_H, b.const(f"layer_{k}", np.array(k, np.int64))], f"h_l{k}", axis=0)

        # torch: n = tanh(gi_n + r * (h W_hn^T + b_hn)); one [H, 3H] MatMul for the three gates
        gh = b.linear(h, w_hh, None, f"gh_l{k}")
        gh_rz, gh_n = b.node("Split", [gh, split_2h_h], f"gh_split_l{k}", n_out=2, axis=1)
        gh_n = b.node("Add", [gh_n, b.weight(f"gh_n_l{k}_b", b_hh[n_])], f"gh_n_l{k}")
        rz = b.node("Sigmoid", [b.node("Add", [gi_rz, gh_rz], f"rz_pre_l{k}")], f"rz_l{k}")
        r, z = b.node("Split", [rz, split_h_h], f"rz_split_l{k}", n_out=2, axis=1)
        rgh = b.node("Mul", [r, gh_n], f"r_gh_n_l{k}")
        n = b.node("Tanh", [b.node("Add", [gi_n, rgh], f"n_pre_l{k}")], f"n_l{k}")
        # h' = (1 - z) * n + z * h = n + z * (h - n)
        h_new = b.node("Add", [n, b.node("Mul", [z, b.node("Sub", [h, n], f"h_n_l{k}")], f"zh_l{k}")], f"h_new_l{k}")
        if L == 1:
            b.nodes.append(helper.make_node("Unsqueeze", [h_new, b.const(axis0, b.const_values[axis0])], [OUTPUT_H],
                                            name="h_out_unsqueeze"))
        else:
            h_outs.append(b.node("Unsqueeze", [h_new, axis0], f"h_out_l{k}"))
        x = h_new

    b.head(x, w["head.weight"], w["head.bias"], OUTPUT_LOGITS)
    if L > 1:
        b.nodes.append(helper.make_node("Concat", h_outs, [OUTPUT_H], name="h_out_concat", axis=0))

    model = step_model(b, "chargen_step", L, H, V)
    set_metadata(model, model_config, vocab, corpus=corpus, val_loss=val_loss, precision=precision)
    return model


def set_metadata(
    model: onnx.ModelProto,
    model_config: dict,
    vocab: Vocab,
    *,
    corpus: str = "",
    val_loss: float | None = None,
    precision: str = "fp32",
) -> None:
    """Write (or overwrite) chargen's metadata_props on model."""
    values = {
        META_FORMAT: str(FORMAT_VERSION),
        META_VOCAB: vocab.to_json(),
        META_CONFIG: json.dumps(dict(model_config), sort_keys=True),
        META_CORPUS: corpus or "",
        META_VAL_LOSS: "" if val_loss is None or not np.isfinite(val_loss) else repr(float(val_loss)),
        META_PRECISION: precision,
    }
    keep = [p for p in model.metadata_props if p.key not in values]
    del model.metadata_props[:]
    for p in keep:
        model.metadata_props.append(p)
    for key, value in values.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
