"""Checkpoint -> ONNX step graph, checked against torch before anything is written.

    gen export OUTPUT.onnx [--checkpoint PATH_OR_RUN_DIR] [--precision fp32|fp16|int8] [--data PATH]

1. Load the checkpoint (default: the best checkpoint of the most recent run).
2. Build the step graph from plain ops (chargen.export.graph); for int8,
   quantize its MatMul weights (quantize_dynamic by default, or MatMulNBits).
3. Check it: onnx.checker (full_check), then onnxruntime against the torch
   model (CharGRU in eval mode, nn.GRU path), teacher-forced over >= 1,000
   steps at batch 1 and at batch 4 (streams at different offsets) on the
   validation split of the checkpoint's corpus (or a deterministic
   pseudo-random id sequence when the corpus cannot be found), plus a greedy
   500-step decode. fp32: max |logits difference| <= 1e-4 and an identical
   greedy text. fp16/int8: the loss on the same text may rise by at most
   0.02 nats over torch's.
4. Only then write the file, atomically (temp file beside it + os.replace).
   A failed check writes nothing and leaves any existing file untouched.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch

from chargen.export.evaluate import EvalError, greedy, nll_sum, open_model, rollout
from chargen.export.graph import HEAD_MATMUL, PRECISIONS, GraphError, build_step_graph
from chargen.runtime.contract import DEFAULT_INT8_KERNEL, INT8_KERNEL_OPS, META_CONFIG, META_INT8_KERNEL, Vocab
from chargen.train import checkpoint as ckpt
from chargen.train.atomic import atomic_write
from chargen.train.model import CharGRU

__all__ = [
    "ExportError",
    "ParityReport",
    "ExportResult",
    "FP32_TOLERANCE",
    "MAX_LOSS_INCREASE",
    "torch_weights",
    "model_to_onnx",
    "quantize_int8",
    "INT8_KERNELS",
    "check_text",
    "check_parity",
    "export_checkpoint",
    "write_atomic",
    "load_checkpoint",
]

FP32_TOLERANCE = 1e-4  # max |logits difference| of an fp32 export against torch
MAX_LOSS_INCREASE = 0.02  # nats/char an fp16 or int8 export may lose against torch
CHECK_STEPS = 1000
CHECK_BATCH = 4
GREEDY_STEPS = 500
MAX_PROTO_BYTES = 2**31 - 1


class ExportError(ValueError):
    """The export cannot be made or failed its check; the message is one line."""


def _one_line(s: object) -> str:
    return " ".join(str(s).split())


# ---------------------------------------------------------------- build


def torch_weights(model: CharGRU) -> dict[str, np.ndarray]:
    """CharGRU's state_dict as float32 numpy arrays (the input of build_step_graph)."""
    return {k: v.detach().float().cpu().numpy() for k, v in model.state_dict().items()}


INT8_KERNELS = tuple(INT8_KERNEL_OPS)  # ("dynamic", "nbits")
NBITS_BLOCK = 128  # weights per scale along the input axis (measured faster than 32 and as fast as 256)


def quantize_int8(
    model: onnx.ModelProto, *, kernel: str = DEFAULT_INT8_KERNEL, head: bool = False, weight_type: str = "s8"
) -> onnx.ModelProto:
    """Quantize the MatMul weights of a precision="int8" step graph: the recurrent W_hh
    (and deeper layers' W_ih); the head too if `head`. The layer-0 gather table stays
    float32. Metadata is kept, and chargen.int8_kernel says which kernel:

    "dynamic" (default): onnxruntime's quantize_dynamic (MatMulInteger after a
        DynamicQuantizeLinear, one scale per output channel): runs at full speed on
        every CPU and onnxruntime version. weight_type "s8": int8 weights with
        reduce_range (7-bit): without it, x86 CPUs lacking VNNI saturate the u8 x s8
        products (AVX2 vpmaddubsw) and the loss rises (measured +0.025 nats on the test
        model, against +0.0000 with reduce_range). "u8": uint8 weights, full range.
    "nbits": onnxruntime's MatMulNBits, 8-bit symmetric weights with one scale per
        block of 128 inputs (smaller for models under 128 units), accuracy_level 4 (the
        activations are quantized to int8 per block and the products summed in int32).
        2-3x closer to float32 in the logits than "dynamic" (per-block scales, no 7-bit
        range); neither moved the validation loss measurably on the models tried.
        Speed depends on the CPU: measured ~20% faster than "dynamic" at batch 1 on an
        AVX-512 VNNI EPYC, but slower at batch 64 there, and 1.25-1.6x (batch 1) and
        1.8-2.4x (batch 64) slower on an AVX2-only EPYC. Needs onnxruntime >= 1.22 on x86-64 or
        >= 1.23 on ARM64 (dot-product instructions); where its int8 kernel is missing
        onnxruntime dequantizes the weights at every step, ~100x slower
        (chargen.runtime warns when it can tell).
    """
    if kernel not in INT8_KERNELS:
        raise ExportError(f"unknown int8 kernel {kernel!r}; use one of {', '.join(INT8_KERNELS)}")
    if weight_type not in ("s8", "u8"):
        raise ExportError(f"unknown int8 weight type {weight_type!r}")
    meta = [(p.key, p.value) for p in model.metadata_props if p.key != META_INT8_KERNEL]
    exclude = [] if head else [n.name for n in model.graph.node if n.op_type == "MatMul" and n.name == HEAD_MATMUL]
    if kernel == "nbits":
        q = _matmul_nbits(model, exclude)
    else:
        q = _quantize_dynamic(model, exclude, weight_type)
    del q.metadata_props[:]
    for key, value in [*meta, (META_INT8_KERNEL, kernel)]:
        p = q.metadata_props.add()
        p.key, p.value = key, value
    return q


def _matmul_nbits(model: onnx.ModelProto, exclude: list[str]) -> onnx.ModelProto:
    import logging

    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    copy = onnx.ModelProto.FromString(model.SerializeToString())  # the quantizer edits its input
    # every quantized MatMul reads h (K = hidden size); a block longer than K is padded with zeros,
    # so small models take the largest power of two (>= 16, MatMulNBits' minimum) that fits
    hidden = max(int(json.loads(_meta(model, META_CONFIG) or "{}").get("hidden_size", NBITS_BLOCK)), 16)
    block = min(NBITS_BLOCK, 1 << (hidden.bit_length() - 1))
    quiet = logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer")  # a line per node
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        q = MatMulNBitsQuantizer(copy, bits=8, block_size=block, is_symmetric=True, accuracy_level=4,
                                 nodes_to_exclude=exclude)
        q.process()
    finally:
        quiet.setLevel(level)
    return q.model.model


def _meta(model: onnx.ModelProto, key: str) -> str | None:
    return next((p.value for p in model.metadata_props if p.key == key), None)


def _quantize_dynamic(model: onnx.ModelProto, exclude: list[str], weight_type: str) -> onnx.ModelProto:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="chargen-int8-") as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save_model(model, src)
        with _quiet_root_logger():
            quantize_dynamic(
                src,
                dst,
                op_types_to_quantize=["MatMul"],
                nodes_to_exclude=exclude,
                per_channel=True,
                reduce_range=weight_type == "s8",
                weight_type=QuantType.QInt8 if weight_type == "s8" else QuantType.QUInt8,
            )
        return onnx.load_model(dst)


@contextlib.contextmanager
def _quiet_root_logger():
    """quantize_dynamic logs a 'consider pre-processing' warning through the root logger."""
    import logging

    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        root.setLevel(level)


def model_to_onnx(
    model: CharGRU,
    vocab: Vocab,
    *,
    corpus: str = "",
    val_loss: float | None = None,
    precision: str = "fp32",
    int8_kernel: str = DEFAULT_INT8_KERNEL,
) -> onnx.ModelProto:
    """The step graph of a torch CharGRU at a precision (fp32, fp16 or int8; int8_kernel: see
    quantize_int8). Raises ExportError."""
    if precision not in PRECISIONS:
        raise ExportError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    try:
        proto = build_step_graph(
            torch_weights(model), _model_config(model), vocab, corpus=corpus, val_loss=val_loss, precision=precision
        )
    except GraphError as e:
        raise ExportError(str(e)) from None
    if precision == "int8":
        proto = quantize_int8(proto, kernel=int8_kernel)
    return proto


def _model_config(model: CharGRU) -> dict:
    from dataclasses import asdict

    return asdict(model.config)


# ---------------------------------------------------------------- check


@dataclass
class ParityReport:
    precision: str
    text: str  # what the check was teacher-forced on
    steps: int  # teacher-forced steps per stream
    batches: tuple[int, ...]  # batch sizes checked
    max_logit_diff: float = 0.0
    max_state_diff: float = 0.0
    greedy_steps: int = GREEDY_STEPS
    greedy_agree: int = 0  # greedy steps identical to torch's before the first difference
    torch_loss: float = float("nan")  # nats/char on the check's text
    onnx_loss: float = float("nan")
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def loss_increase(self) -> float:
        return self.onnx_loss - self.torch_loss


def check_text(
    checkpoint: dict, vocab: Vocab, data: str | os.PathLike | None = None, steps: int = CHECK_STEPS
) -> tuple[np.ndarray, str]:
    """(ids, description) to teacher-force the parity check on.

    The validation split (train_config.val_fraction) of: `data` if given; else the
    checkpoint's corpus when it can be found without the network (a
    "corpus_source" path in the checkpoint, or the packaged tiny-shakespeare);
    else a deterministic pseudo-random id sequence. At least steps + 1 ids.
    """
    from chargen.train.data import TINYSHAKESPEARE_NAME, CorpusError, load_corpus, split

    val_fraction = float((checkpoint.get("train_config") or {}).get("val_fraction", 0.1) or 0.1)
    corpus_name = str(checkpoint.get("corpus") or "")
    corpus = None
    if data is not None:
        try:
            corpus = load_corpus(data)
        except CorpusError as e:
            raise ExportError(str(e)) from None
    else:
        source = checkpoint.get("corpus_source")
        try:
            if isinstance(source, str) and source and Path(source).exists():
                corpus = load_corpus(source)
            elif corpus_name == TINYSHAKESPEARE_NAME:
                corpus = load_corpus(None)
        except CorpusError:
            corpus = None
    if corpus is not None:
        try:
            _, val = split(corpus.text, val_fraction)
        except CorpusError:
            val = corpus.text
        ids = np.asarray(vocab.encode(val, unknown="skip"), np.int64)
        skipped = len(val) - len(ids)
        if len(ids) >= 2:
            note = f", {skipped} unknown chars skipped" if skipped else ""
            return _repeat(ids, steps + 1), f"validation split of {corpus.name} ({len(val):,} chars{note})"
    rng = np.random.default_rng(20240229)
    ids = rng.integers(0, len(vocab), size=steps + 1, dtype=np.int64)
    if corpus is not None:
        why = f"{corpus.name}'s validation split has under 2 characters the model knows"
    else:
        why = f"corpus {corpus_name!r} not found; pass --data" if corpus_name else "no corpus"
    return ids, f"pseudo-random symbol sequence ({why})"


def _repeat(ids: np.ndarray, n: int) -> np.ndarray:
    return ids if len(ids) >= n else np.resize(ids, n)


def _streams(ids: np.ndarray, steps: int, batch: int) -> np.ndarray:
    """(steps + 1, batch) ids: stream b starts at offset b * len / batch, wrapping around."""
    n = len(ids)
    offsets = (np.arange(batch) * n) // batch
    return ids[(offsets[None, :] + np.arange(steps + 1)[:, None]) % n]


@torch.no_grad()
def _torch_logits(model: CharGRU, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Teacher-forced logits (T, B, V) and final state (L, B, H) of the torch model, nn.GRU path."""
    model.eval()
    logits, h = model(torch.as_tensor(x, dtype=torch.long))
    return logits.float().numpy(), h.float().numpy()


def check_parity(
    source: onnx.ModelProto | bytes,
    model: CharGRU,
    ids: np.ndarray,
    *,
    precision: str = "fp32",
    text: str = "",
    steps: int = CHECK_STEPS,
    batch: int = CHECK_BATCH,
    greedy_steps: int = GREEDY_STEPS,
    tolerance: float = FP32_TOLERANCE,
    max_loss_increase: float = MAX_LOSS_INCREASE,
) -> ParityReport:
    """Run the graph under onnxruntime against torch. Failures are listed, not raised."""
    t0 = time.perf_counter()
    data = source if isinstance(source, bytes) else source.SerializeToString()
    report = ParityReport(precision, text, steps, (1, batch) if batch > 1 else (1,), greedy_steps=greedy_steps)
    try:
        m = open_model(data)
    except EvalError as e:
        report.failures.append(str(e))
        return report
    nll_t = nll_o = 0.0
    count = 0
    for B in report.batches:
        seq = _streams(ids, steps, B)
        x, y = seq[:-1], seq[1:]
        ref, h_ref = _torch_logits(model, x)
        try:
            got, h = rollout(m, x)
        except Exception as e:  # an onnxruntime failure at run time
            report.failures.append(f"onnxruntime failed at batch {B}: {_one_line(e)[:200]}")
            return report
        diff = np.abs(got.astype(np.float64) - ref)
        if not np.all(np.isfinite(got)):
            report.failures.append(f"batch {B}: the graph's logits hold NaN or inf")
            report.max_logit_diff = float("inf")
        else:
            report.max_logit_diff = max(report.max_logit_diff, float(diff.max()))
        if precision == "fp32" and not diff.max() <= tolerance:
            t, b, _ = np.unravel_index(int(np.nanargmax(diff)), diff.shape)
            report.failures.append(
                f"batch {B}: logits differ from torch's by up to {diff.max():.3g} (> {tolerance:g}), "
                f"first above the tolerance at step {int(np.argmax((diff > tolerance).any(axis=(1, 2))))}, "
                f"worst at step {t} stream {b}"
            )
        report.max_state_diff = max(report.max_state_diff, float(np.abs(h - h_ref).max()))
        nll_t += nll_sum(ref.reshape(-1, ref.shape[-1]), y.reshape(-1))
        nll_o += nll_sum(got.reshape(-1, got.shape[-1]), y.reshape(-1))
        count += y.size
    report.torch_loss, report.onnx_loss = nll_t / count, nll_o / count
    if precision != "fp32" and not report.loss_increase <= max_loss_increase:
        report.failures.append(
            f"{precision} loss {report.onnx_loss:.4f} nats/char is {report.loss_increase:+.4f} over torch's "
            f"{report.torch_loss:.4f} on the check text (at most +{max_loss_increase:g} allowed)"
        )

    # greedy: decode with the graph; torch, teacher-forced on that text, must pick the same symbol each step
    if greedy_steps > 0:
        start = int(ids[0])
        out = greedy(m, start, greedy_steps)
        seq = np.asarray([start] + out, np.int64)
        ref = _torch_logits(model, seq[:-1, None])[0][:, 0]
        choice = ref.argmax(axis=1)
        same = choice == seq[1:]
        report.greedy_agree = greedy_steps if same.all() else int(np.argmin(same))
        if precision == "fp32" and not same.all():
            k = report.greedy_agree
            top2 = np.sort(ref[k])[-2:]
            report.failures.append(
                f"greedy text differs from torch's at step {k} of {greedy_steps} "
                f"(graph chose id {seq[k + 1]}, torch id {choice[k]}; torch's top-2 margin {top2[1] - top2[0]:.3g})"
            )
    report.seconds = time.perf_counter() - t0
    return report


# ---------------------------------------------------------------- write


def check_output_path(output: str | os.PathLike) -> Path:
    """The output path, if its folder exists and is writable; ExportError otherwise."""
    out = Path(output)
    folder = out.parent if str(out.parent) else Path(".")
    if out.is_dir():
        raise ExportError(f"{out} is a folder; give a file name such as {out / 'model.onnx'}")
    if not folder.is_dir():
        raise ExportError(f"the output folder {folder} does not exist; create it first")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ExportError(f"the output folder {folder} is not writable")
    return out


def write_atomic(data: bytes, output: str | os.PathLike) -> None:
    """Write to a temporary file beside `output`, fsync, then os.replace over it."""
    out = Path(output)
    try:
        with atomic_write(out) as f:
            f.write(data)
    except OSError as e:
        raise ExportError(f"cannot write {out}: {e.strerror or e}") from None


# ---------------------------------------------------------------- export


@dataclass
class ExportResult:
    path: Path
    checkpoint: Path
    precision: str
    size_bytes: int
    int8_kernel: str | None
    inputs: list[tuple[str, str, list]]  # (name, type, shape)
    outputs: list[tuple[str, str, list]]
    parameters: int
    vocab_size: int
    config: dict
    corpus: str
    val_loss: float | None
    parity: ParityReport
    seconds: float = 0.0


def _signature(values) -> list[tuple[str, str, list]]:
    out = []
    for v in values:
        t = v.type.tensor_type
        shape = [d.dim_param or d.dim_value for d in t.shape.dim]
        out.append((v.name, str(onnx.helper.tensor_dtype_to_np_dtype(t.elem_type)), shape))
    return out


def export_checkpoint(
    output: str | os.PathLike,
    checkpoint: str | os.PathLike | None = None,
    precision: str = "fp32",
    *,
    data: str | os.PathLike | None = None,
    runs_dir: str | os.PathLike = "runs",
    steps: int = CHECK_STEPS,
    batch: int = CHECK_BATCH,
    int8_kernel: str = DEFAULT_INT8_KERNEL,
    status=None,
) -> ExportResult:
    """Export a checkpoint to `output` after checking it; ExportError (one line) on any failure.

    checkpoint: a .pt file, a run folder, or None for the latest run under runs_dir.
    data: the corpus to check on (default: the checkpoint's, if it can be found).
    status: optional callable(str) told what is happening.
    int8_kernel: "dynamic" (default) or "nbits", for precision int8 (see quantize_int8).
    """
    t0 = time.perf_counter()
    say = status or (lambda _msg: None)
    if precision not in PRECISIONS:
        raise ExportError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if int8_kernel not in INT8_KERNELS:
        raise ExportError(f"unknown int8 kernel {int8_kernel!r}; use one of {', '.join(INT8_KERNELS)}")
    if steps < 1 or batch < 1:
        raise ExportError("the check needs at least 1 step and batch 1")
    out = check_output_path(output)
    say("loading the checkpoint")
    path, model, vocab, cp = load_checkpoint(checkpoint, runs_dir)
    val_loss = cp.get("best_val_loss")
    if val_loss is None or not isinstance(val_loss, (int, float)) or not math.isfinite(val_loss):
        val_loss = cp.get("val_loss")
    val_loss = float(val_loss) if isinstance(val_loss, (int, float)) and math.isfinite(val_loss) else None
    corpus = str(cp.get("corpus") or "")

    say(f"building the {precision} step graph")
    proto = model_to_onnx(model, vocab, corpus=corpus, val_loss=val_loss, precision=precision,
                          int8_kernel=int8_kernel)
    data_bytes = proto.SerializeToString()
    if len(data_bytes) > MAX_PROTO_BYTES:
        raise ExportError(f"the model is {len(data_bytes) / 2**30:.1f} GiB; one-file ONNX models stop at 2 GiB")

    say("onnx.checker (full check)")
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise ExportError(f"the exported graph fails onnx.checker: {_one_line(e)[:300]}") from None

    ids, text = check_text(cp, vocab, data, steps)
    say(f"checking against torch: {steps} steps at batch 1 and {batch} on {text}")
    report = check_parity(data_bytes, model, ids, precision=precision, text=text, steps=steps, batch=batch)
    if not report.passed:
        raise ExportError(f"the {precision} export does not match torch, nothing written: " + "; ".join(report.failures))

    say(f"writing {out}")
    write_atomic(data_bytes, out)
    return ExportResult(
        path=out,
        checkpoint=path,
        precision=precision,
        size_bytes=len(data_bytes),
        int8_kernel=int8_kernel if precision == "int8" else None,
        inputs=_signature(proto.graph.input),
        outputs=_signature(proto.graph.output),
        parameters=model.num_parameters(),
        vocab_size=len(vocab),
        config=_model_config(model),
        corpus=corpus,
        val_loss=val_loss,
        parity=report,
        seconds=time.perf_counter() - t0,
    )


# ---------------------------------------------------------------- load a checkpoint


def load_checkpoint(checkpoint: str | os.PathLike | None, runs_dir: str | os.PathLike = "runs"):
    """(path, CharGRU in eval mode, Vocab, checkpoint dict); ExportError (one line) if unusable."""
    try:
        path = ckpt.find(Path(checkpoint) if checkpoint is not None else None, runs_dir=Path(runs_dir))
        model, vocab, cp = ckpt.load_model(path)
    except ckpt.CheckpointError as e:
        raise ExportError(str(e)) from None
    return path, model, vocab, cp
