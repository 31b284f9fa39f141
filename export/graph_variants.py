"""Step graphs that chargen does not ship, and weights for graphs without training: what the
benchmarks (benchmarks/) and the tests share, so neither imports the other.

    GraphOptions, build_graph(weights, config, vocab, precision=..., options=...)
        the step written otherwise: unfolded b_hh, two recurrent MatMuls, Gemm gates, float16
        arithmetic (measured by bench_export.py), and two deliberately wrong formulas
        (linear_before_reset=0, r and z swapped) that the export's parity check must catch
    build_gru_op_graph   the same step with the ONNX GRU op: the baseline bench_export.py measures
    random_weights       a CharGRU state_dict's names and shapes, filled like torch's default init

The graph that ships is chargen.export.graph.build_step_graph (GraphOptions() here writes the
same graph); these reuse its building blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper

from chargen.export.graph import (
    Builder,
    GraphError,
    check_inputs,
    check_weights,
    config_ints,
    set_metadata,
    step_model,
)
from chargen.runtime.contract import INPUT_H, INPUT_TOKEN, OUTPUT_H, OUTPUT_LOGITS, Vocab

__all__ = ["GraphOptions", "build_graph", "build_gru_op_graph", "random_weights"]


@dataclass(frozen=True)
class GraphOptions:
    """How the step is written. The defaults are chargen.export.graph.build_step_graph's
    layout (what measured fastest in bench_export.py); the others exist to be measured
    and tested.

    fold_hh_bias: fold b_hh's r and z parts into the gi side (layer 0: into the
                  gather table), leaving one [B, H] Add for b_hh's n part.
    fused_gates:  one [H, 3H] recurrent MatMul (and one [V, 3H] table), split after;
                  False: [H, 2H] for r|z and [H, H] for n, no Split of gh or gi.
    fp16:         how a precision="fp16" graph stores its weights:
                  "weights": fp16 initializers, each Cast to float32 (onnxruntime
                             folds the Cast at session start: half the file,
                             float32 arithmetic);
                  "full":    float16 arithmetic throughout, Cast at the inputs
                             and outputs so the interface stays float32.
    reset_after:  True is torch's GRU (linear_before_reset=1). False writes the
                  *other* GRU formula, n = tanh(gi_n + (r * h) W_hn^T + b_hn):
                  wrong for torch weights; only for testing that the parity
                  check catches it.
    swap_rz:      True swaps the r and z gates: wrong; only for testing.
    gemm_gates:   write the recurrent product as a Gemm that also adds what sits beside
                  it, saving the nodes that would add it (each costs ~1 us of dispatch at
                  batch 1). With fused_gates, layer 0 is one [H, 3H] Gemm whose addend is
                  gathered from a [V, 3H] table holding gi_rz and b_hn: [r|z pre-activation,
                  gh_n] in one node (15 nodes a step instead of 17 after onnxruntime's
                  fusions). Without (and for layers > 0): r|z = Sigmoid(Gemm(h, W_hr|hz,
                  C=gi_rz)), one FusedGemm after fusion, and gh_n = Gemm(h, W_hn, C=b_hn)
                  (14 nodes, two parallel sections). float32/fp16 only: int8's
                  quantize_dynamic quantizes MatMul, not Gemm, so int8 ignores it.
    """

    fold_hh_bias: bool = True
    fused_gates: bool = True
    gemm_gates: bool = False
    fp16: str = "weights"
    reset_after: bool = True
    swap_rz: bool = False


def build_graph(
    weights: dict[str, np.ndarray],
    model_config: dict,
    vocab: Vocab,
    *,
    corpus: str = "",
    val_loss: float | None = None,
    precision: str = "fp32",
    options: GraphOptions = GraphOptions(),
) -> onnx.ModelProto:
    """The step graph written as `options` say (GraphOptions() gives build_step_graph's graph)."""
    V, E, H, L, w = check_inputs(weights, model_config, vocab, precision)

    fp16 = precision == "fp16"
    full16 = fp16 and options.fp16 == "full"
    if fp16 and options.fp16 not in ("weights", "full"):
        raise GraphError(f"unknown fp16 mode {options.fp16!r}")
    b = Builder(np.float16 if fp16 else np.float32, cast_weights=fp16 and not full16)

    h_all = INPUT_H
    if full16:
        h_all = b.node("Cast", [INPUT_H], "h16", to=TensorProto.FLOAT16)
    split_2h_h, split_h_h, axis0 = "split_2h_h", "split_h_h", "axis0"  # int64 constants, made on first use
    b.const_values = {
        split_2h_h: np.array([2 * H, H], np.int64),
        split_h_h: np.array([H, H], np.int64),
        axis0: np.array([0], np.int64),
    }

    h_out = OUTPUT_H if not full16 else "h_out16"
    x = None
    h_outs = []
    for k in range(L):
        w_ih, w_hh = w[f"rnn.weight_ih_l{k}"], w[f"rnn.weight_hh_l{k}"]
        b_ih, b_hh = w[f"rnn.bias_ih_l{k}"].copy(), w[f"rnn.bias_hh_l{k}"].copy()
        if options.swap_rz:  # deliberately wrong: z where r belongs and r where z belongs
            perm = np.r_[H : 2 * H, 0:H, 2 * H : 3 * H]
            w_ih, w_hh, b_ih, b_hh = w_ih[perm], w_hh[perm], b_ih[perm], b_hh[perm]
        gemm_gates = options.gemm_gates and options.reset_after and precision != "int8"
        if options.fold_hh_bias or gemm_gates:  # b_hh's r, z parts only ever add to gi's
            b_ih[: 2 * H] += b_hh[: 2 * H]
            b_hh[: 2 * H] = 0.0
        rz_, n_ = slice(0, 2 * H), slice(2 * H, 3 * H)

        linear = b.linear

        def gemm(inp, weight, addend, name):
            """inp @ weight^T + addend (a bias, or a [B, N] tensor) as one Gemm node."""
            return b.node("Gemm", [inp, b.weight(f"{name}_w_t", weight.T), addend], name)

        # gi = x W_ih^T + b_ih, as (gi_rz [B, 2H], gi_n [B, H])
        if k == 0:  # Embedding and input projection fold into gather tables
            table = w["embedding.weight"] @ w_ih.T + b_ih  # [V, 3H]
            if gemm_gates and options.fused_gates:  # addend [gi_rz | b_hn], and gi_n, per symbol
                addend_table = np.concatenate([table[:, rz_], np.broadcast_to(b_hh[n_], (V, H))], axis=1)
                addend = b.node("Gather", [b.weight("gh_addend_table_l0", addend_table), INPUT_TOKEN], "gh_addend_l0", axis=0)
                gi_n = b.node("Gather", [b.weight("gi_n_table_l0", table[:, n_]), INPUT_TOKEN], "gi_n_l0", axis=0)
            elif options.fused_gates and not gemm_gates:
                gi = b.node("Gather", [b.weight("gi_table_l0", table), INPUT_TOKEN], "gi_l0", axis=0)
                gi_rz, gi_n = b.node("Split", [gi, split_2h_h], "gi_split_l0", n_out=2, axis=1)
            else:
                gi_rz = b.node("Gather", [b.weight("gi_rz_table_l0", table[:, rz_]), INPUT_TOKEN], "gi_rz_l0", axis=0)
                gi_n = b.node("Gather", [b.weight("gi_n_table_l0", table[:, n_]), INPUT_TOKEN], "gi_n_l0", axis=0)
        elif gemm_gates:
            gi_rz = gemm(x, w_ih[rz_], b.weight(f"gi_rz_l{k}_b", b_ih[rz_]), f"gi_rz_l{k}")
            gi_n = gemm(x, w_ih[n_], b.weight(f"gi_n_l{k}_b", b_ih[n_]), f"gi_n_l{k}")
        elif options.fused_gates:
            gi = linear(x, w_ih, b_ih, f"gi_l{k}")
            gi_rz, gi_n = b.node("Split", [gi, split_2h_h], f"gi_split_l{k}", n_out=2, axis=1)
        else:
            gi_rz = linear(x, w_ih[rz_], b_ih[rz_], f"gi_rz_l{k}")
            gi_n = linear(x, w_ih[n_], b_ih[n_], f"gi_n_l{k}")

        # h_k: [B, H]
        if L == 1:
            h = b.node("Squeeze", [h_all, axis0], "h_l0")
        else:
            h = b.node("Gather", [h_all, b.const(f"layer_{k}", np.array(k, np.int64))], f"h_l{k}", axis=0)

        if gemm_gates and options.fused_gates and k == 0:  # one Gemm: [gi_rz + gh_rz | gh_n + b_hn]
            pre = gemm(h, w_hh, addend, "gh_pre_l0")  # pre: [B, 3H]
            rz_pre, gh_n = b.node("Split", [pre, split_2h_h], "gh_split_l0", n_out=2, axis=1)
            r, z = b.node("Split", [b.node("Sigmoid", [rz_pre], "rz_l0"), split_h_h], "rz_split_l0", n_out=2, axis=1)
            rgh = b.node("Mul", [r, gh_n], "r_gh_n_l0")
        elif gemm_gates:  # r|z = sigmoid(h W_hr|hz^T + gi_rz), gh_n = h W_hn^T + b_hn: two Gemms
            rz = b.node("Sigmoid", [gemm(h, w_hh[rz_], gi_rz, f"rz_pre_l{k}")], f"rz_l{k}")  # [B, 2H]
            gh_n = gemm(h, w_hh[n_], b.weight(f"gh_n_l{k}_b", b_hh[n_]), f"gh_n_l{k}")  # [B, H]
            r, z = b.node("Split", [rz, split_h_h], f"rz_split_l{k}", n_out=2, axis=1)
            rgh = b.node("Mul", [r, gh_n], f"r_gh_n_l{k}")
        elif options.reset_after:  # torch: n = tanh(gi_n + r * (h W_hn^T + b_hn))
            if options.fused_gates:  # one [H, 3H] MatMul for the three gates
                gh = linear(h, w_hh, None, f"gh_l{k}")
                gh_rz, gh_n = b.node("Split", [gh, split_2h_h], f"gh_split_l{k}", n_out=2, axis=1)
                if np.any(b_hh[rz_]):
                    gh_rz = b.node("Add", [gh_rz, b.weight(f"gh_rz_l{k}_b", b_hh[rz_])], f"gh_rz_l{k}")
                gh_n = b.node("Add", [gh_n, b.weight(f"gh_n_l{k}_b", b_hh[n_])], f"gh_n_l{k}")
            else:  # [H, 2H] for r|z, [H, H] (+ bias: a Gemm) for n
                gh_rz = linear(h, w_hh[rz_], b_hh[rz_], f"gh_rz_l{k}")
                gh_n = linear(h, w_hh[n_], b_hh[n_], f"gh_n_l{k}")
            rz = b.node("Sigmoid", [b.node("Add", [gi_rz, gh_rz], f"rz_pre_l{k}")], f"rz_l{k}")
            r, z = b.node("Split", [rz, split_h_h], f"rz_split_l{k}", n_out=2, axis=1)
            rgh = b.node("Mul", [r, gh_n], f"r_gh_n_l{k}")
        else:  # linear_before_reset=0, n = tanh(gi_n + (r * h) W_hn^T + b_hn): wrong for torch weights
            gh_rz = linear(h, w_hh[rz_], b_hh[rz_], f"gh_rz_l{k}")
            rz = b.node("Sigmoid", [b.node("Add", [gi_rz, gh_rz], f"rz_pre_l{k}")], f"rz_l{k}")
            r, z = b.node("Split", [rz, split_h_h], f"rz_split_l{k}", n_out=2, axis=1)
            rgh = linear(b.node("Mul", [r, h], f"r_h_l{k}"), w_hh[n_], b_hh[n_], f"rh_l{k}")
        n = b.node("Tanh", [b.node("Add", [gi_n, rgh], f"n_pre_l{k}")], f"n_l{k}")
        # h' = (1 - z) * n + z * h = n + z * (h - n)
        h_new = b.node("Add", [n, b.node("Mul", [z, b.node("Sub", [h, n], f"h_n_l{k}")], f"zh_l{k}")], f"h_new_l{k}")
        if L == 1:
            b.nodes.append(helper.make_node("Unsqueeze", [h_new, b.const(axis0, b.const_values[axis0])], [h_out], name="h_out_unsqueeze"))
        else:
            h_outs.append(b.node("Unsqueeze", [h_new, axis0], f"h_out_l{k}"))
        x = h_new

    logits_out = OUTPUT_LOGITS if not full16 else "logits16"
    b.head(x, w["head.weight"], w["head.bias"], logits_out)
    if L > 1:
        b.nodes.append(helper.make_node("Concat", h_outs, [h_out], name="h_out_concat", axis=0))
    if full16:
        b.nodes.append(helper.make_node("Cast", [logits_out], [OUTPUT_LOGITS], name="logits_cast", to=TensorProto.FLOAT))
        b.nodes.append(helper.make_node("Cast", [h_out], [OUTPUT_H], name="h_out_cast", to=TensorProto.FLOAT))

    model = step_model(b, "chargen_step", L, H, V)
    set_metadata(model, model_config, vocab, corpus=corpus, val_loss=val_loss, precision=precision)
    return model


def random_weights(V: int, E: int, H: int, L: int, seed: int = 0, *, head_scale: float = 1.0,
                   rnn_scale: float = 1.0) -> dict[str, np.ndarray]:
    """Weights with a CharGRU state_dict's names and shapes, filled like torch's default init.

    For tests and benchmarks that need a model file without training one; the scales
    sharpen the head and the recurrence so that the distributions are not flat.
    """
    rng = np.random.default_rng(seed)
    s = 1 / np.sqrt(H)
    u = lambda *shape: rng.uniform(-s, s, shape)  # noqa: E731
    w = {"embedding.weight": rng.standard_normal((V, E)), "head.weight": head_scale * u(V, H), "head.bias": u(V)}
    for k in range(L):
        w[f"rnn.weight_ih_l{k}"] = rnn_scale * u(3 * H, E if k == 0 else H)
        w[f"rnn.weight_hh_l{k}"] = rnn_scale * u(3 * H, H)
        w[f"rnn.bias_ih_l{k}"] = u(3 * H)
        w[f"rnn.bias_hh_l{k}"] = u(3 * H)
    return {k: v.astype(np.float32) for k, v in w.items()}


def build_gru_op_graph(weights: dict[str, np.ndarray], model_config: dict, vocab: Vocab) -> onnx.ModelProto:
    """The same step written with the ONNX GRU op (linear_before_reset=1): the
    baseline the benchmark measures the plain-op graph against. Same interface
    and metadata as chargen.export.graph.build_step_graph; float32 only."""
    V, E, H, L = config_ints(model_config)
    w = check_weights(weights, V, E, H, L)
    b = Builder(np.float32, cast_weights=False)
    # ONNX GRU gate order is z, r, h; torch's is r, z, n.
    perm = np.r_[H : 2 * H, 0:H, 2 * H : 3 * H]
    x = b.node("Gather", [b.weight("embedding", w["embedding.weight"]), INPUT_TOKEN], "x", axis=0)  # [B, E]
    axis0 = b.const("axis0", np.array([0], np.int64))
    x = b.node("Unsqueeze", [x, axis0], "x_seq")  # [1, B, E]
    h_outs = []
    for k in range(L):
        idx = b.const(f"layer_{k}", np.array([k], np.int64))
        h0 = b.node("Gather", [INPUT_H, idx], f"h0_l{k}", axis=0)  # [1, B, H]
        W = b.weight(f"W_l{k}", w[f"rnn.weight_ih_l{k}"][perm][None])
        R = b.weight(f"R_l{k}", w[f"rnn.weight_hh_l{k}"][perm][None])
        Bias = b.weight(f"B_l{k}", np.concatenate([w[f"rnn.bias_ih_l{k}"][perm], w[f"rnn.bias_hh_l{k}"][perm]])[None])
        y, y_h = b.node(
            "GRU", [x, W, R, Bias, "", h0], f"gru_l{k}", n_out=2, hidden_size=H, linear_before_reset=1
        )
        h_outs.append(y_h)  # [1, B, H]
        x = b.node("Squeeze", [y, b.const(f"axis1_l{k}", np.array([1], np.int64))], f"y_l{k}")  # [1, B, H]
    top = b.node("Squeeze", [x, axis0], "top")  # [B, H]
    logits = b.node("MatMul", [top, b.weight("head_w_t", w["head.weight"].T)], "head_mm")
    b.nodes.append(helper.make_node("Add", [logits, b.weight("head_b", w["head.bias"])], [OUTPUT_LOGITS]))
    if L == 1:
        b.nodes.append(helper.make_node("Identity", [h_outs[0]], [OUTPUT_H]))
    else:
        b.nodes.append(helper.make_node("Concat", h_outs, [OUTPUT_H], axis=0))
    model = step_model(b, "chargen_step_gru_op", L, H, V)
    set_metadata(model, model_config, vocab, precision="fp32")
    return model
