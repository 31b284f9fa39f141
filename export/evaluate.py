"""Loss of a model on a text: a chargen .onnx file (onnxruntime, never torch) or a torch checkpoint.

    gen eval --model model.onnx [--data PATH] [--split val|all] [--val-fraction 0.1]
    gen eval --checkpoint PATH_OR_RUN_DIR ...

The loss is what training reports as val_loss: one stateful pass, the hidden
state carried from character to character from a zero state, the mean
cross-entropy (nats per character) of predicting text[1:] from text[:-1].
Bits per character = nats / ln 2 (chargen.runtime.contract.bits_per_char).

A model file opens as chargen.runtime.Model (the runtime's checks of the file, its
format version and its step interface; onnxruntime's engine, since the loss is the
graph's); rollout() and greedy() run it step by step, for gen eval and for the
export's parity check. This module imports numpy, chargen.runtime and
chargen.train.data (standard library only); torch only inside evaluate_checkpoint,
so `gen eval --model` works without torch.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from chargen.runtime import contract
from chargen.runtime.contract import UnknownCharactersError, Vocab, bits_per_char

__all__ = [
    "EvalError",
    "EvalResult",
    "SPLITS",
    "UNKNOWN",
    "open_model",
    "rollout",
    "greedy",
    "stateful_loss",
    "load_eval_text",
    "encode_text",
    "nll_sum",
    "evaluate_onnx",
    "evaluate_checkpoint",
    "bits_per_char",
]

SPLITS = ("val", "all")
UNKNOWN = ("error", "skip")
CHUNK = 1024  # steps between progress updates / loss accumulations


class EvalError(ValueError):
    """A model or text that cannot be evaluated; the message is one line."""


def default_threads(precision: str) -> int:
    """onnxruntime intra-op threads that measured fastest at batch 1 on a 2-core CPU
    (benchmarks/bench_export.py): 2 for fp32/fp16 (the float32 matvec splits well), 1 for
    int8 (its quantize + integer matmul does not)."""
    return 2 if precision != "int8" and (os.cpu_count() or 1) > 1 else 1


def open_model(source: str | os.PathLike | bytes, *, threads: int | None = None):
    """A chargen model as chargen.runtime.Model on the CPU, run by onnxruntime, its threads not
    spinning (idle threads sleep instead of burning a core that other processes may need).
    source: a path, or the bytes of a model (written to a temporary file to load).
    threads: None picks default_threads(the model's precision). Raises EvalError (one line)."""
    from chargen.runtime.model import Model, ModelError
    from chargen.runtime.onnx_file import OnnxFileError, read_metadata

    if isinstance(source, bytes):
        with tempfile.TemporaryDirectory(prefix="chargen-eval-") as tmp:
            path = Path(tmp) / "model.onnx"
            path.write_bytes(source)
            return open_model(path, threads=threads)
    if threads is None:
        try:
            precision = read_metadata(source).get(contract.META_PRECISION, "fp32")
        except (OnnxFileError, OSError):
            precision = "fp32"  # Model.load says what is wrong with the file
        threads = default_threads(precision)
    try:
        return Model.load(source, device="cpu", threads=threads, engine="onnxruntime",
                          session_config={"session.intra_op.allow_spinning": "0"})
    except (ModelError, ImportError) as e:
        raise EvalError(str(e)) from None


def _state(model, batch: int) -> np.ndarray:
    return np.zeros((model.num_layers, batch, model.hidden_size), np.float32)


def rollout(
    model, ids: np.ndarray, h: np.ndarray | None = None, on_steps: Callable[[int], None] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Teacher-forced through a chargen.runtime.Model's session: ids (T, B) -> logits (T, B, V)
    and the final state (L, B, H).

    Runs through IOBinding over buffers this function owns (the token, two
    state buffers used in turn, the logits): no allocation per step.
    """
    ort = model.ort
    ids = np.ascontiguousarray(np.asarray(ids, np.int64))
    T, B = ids.shape
    token = np.zeros(B, np.int64)
    states = [
        np.array(_state(model, B) if h is None else h, np.float32, copy=True, order="C"),
        _state(model, B),
    ]
    logits = np.zeros((B, model.vocab_size), np.float32)
    wrap = ort.OrtValue.ortvalue_from_numpy  # shares the numpy buffer, no copy
    token_v, logits_v = wrap(token), wrap(logits)
    state_v = [wrap(a) for a in states]
    bindings = []
    for i in range(2):
        bind = model.session.io_binding()
        bind.bind_ortvalue_input(contract.INPUT_TOKEN, token_v)
        bind.bind_ortvalue_input(contract.INPUT_H, state_v[i])
        bind.bind_ortvalue_output(contract.OUTPUT_LOGITS, logits_v)
        bind.bind_ortvalue_output(contract.OUTPUT_H, state_v[1 - i])
        bindings.append(bind)
    out = np.empty((T, B, model.vocab_size), np.float32)
    run = model.run_binding
    for t in range(T):
        token[:] = ids[t]
        run(bindings[t & 1])
        out[t] = logits
        if on_steps is not None and (t + 1) % CHUNK == 0:
            on_steps(CHUNK)
    if on_steps is not None and T % CHUNK:
        on_steps(T % CHUNK)
    return out, states[T & 1].copy()


def greedy(model, start: int, steps: int) -> list[int]:
    """argmax decoding for `steps` symbols after `start`, batch 1."""
    outputs = [contract.OUTPUT_LOGITS, contract.OUTPUT_H]
    token = np.array([start], np.int64)
    h = _state(model, 1)
    out = []
    for _ in range(steps):
        logits, h = model.session.run(outputs, {contract.INPUT_TOKEN: token, contract.INPUT_H: h})
        token = np.array([int(np.argmax(logits[0]))], np.int64)
        out.append(int(token[0]))
    return out


def stateful_loss(model, ids, on_steps: Callable[[int], None] | None = None) -> tuple[float, int]:
    """(mean nats/char, predictions) of predicting ids[1:] from ids[:-1], state carried throughout."""
    ids = np.asarray(ids, np.int64)
    if len(ids) < 2:
        raise EvalError("the text needs at least 2 characters (after removing unknown ones) to measure a loss")
    h = _state(model, 1)
    total = 0.0
    n = len(ids) - 1
    for start in range(0, n, CHUNK):
        x = ids[start : min(start + CHUNK, n)]
        y = ids[start + 1 : start + 1 + len(x)]
        logits, h = rollout(model, x[:, None], h)
        total += nll_sum(logits[:, 0], y)
        if on_steps is not None:
            on_steps(len(x))
    return total / n, n


def nll_sum(logits: np.ndarray, targets: np.ndarray) -> float:
    """Summed cross-entropy (nats) of logits (N, V) against integer targets (N,), in float64."""
    z = np.asarray(logits, np.float64).reshape(-1, logits.shape[-1])
    targets = np.asarray(targets).reshape(-1)
    m = z.max(axis=1, keepdims=True)
    lse = np.log(np.exp(z - m).sum(axis=1)) + m[:, 0]
    return float((lse - z[np.arange(len(targets)), targets]).sum())


def load_eval_text(data: str | os.PathLike | None, split: str = "val", val_fraction: float = 0.1) -> tuple[str, str]:
    """(description, text): the corpus at `data` (default tiny-shakespeare), its
    validation part (the same split as training) or all of it. Raises EvalError."""
    from chargen.train.data import CorpusError, load_corpus
    from chargen.train.data import split as split_text

    if split not in SPLITS:
        raise EvalError(f"unknown split {split!r}; use val or all")
    try:
        corpus = load_corpus(data)
        if split == "all":
            return f"{corpus.name} (all, {len(corpus.text):,} chars)", corpus.text
        _, val = split_text(corpus.text, val_fraction)
    except CorpusError as e:
        raise EvalError(str(e)) from None
    return f"{corpus.name} (validation split, last {val_fraction:g}: {len(val):,} chars)", val


def encode_text(vocab: Vocab, text: str, unknown: str = "error") -> tuple[np.ndarray, int]:
    """(ids, number of characters skipped). unknown='error' raises EvalError naming them."""
    if unknown not in UNKNOWN:
        raise EvalError(f"unknown must be error or skip, not {unknown!r}")
    try:
        ids = vocab.encode(text, unknown=unknown)
    except UnknownCharactersError as e:
        raise EvalError(str(e).replace("(unknown='skip', or --unknown skip)", "with --unknown skip")) from None
    return np.asarray(ids, np.int64), len(text) - len(ids)


@dataclass
class EvalResult:
    model: str
    text: str  # description of the text
    loss: float  # nats per character
    predictions: int  # characters predicted (len(ids) - 1)
    skipped: int = 0  # unknown characters skipped
    seconds: float = 0.0
    details: dict = field(default_factory=dict)

    @property
    def bits_per_char(self) -> float:
        return bits_per_char(self.loss)


def progress_bar(enabled: bool = True):
    """A rich progress bar on stderr; a no-op when disabled or stderr is not a terminal."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not (enabled and console.is_terminal),
    )


def evaluate_onnx(
    model,
    text: str,
    *,
    text_name: str = "text",
    unknown: str = "error",
    progress: bool = True,
) -> EvalResult:
    """Stateful loss of a chargen .onnx model (a path, or a Model from open_model) on `text`.
    Raises EvalError."""
    m = open_model(model) if isinstance(model, (str, os.PathLike)) else model
    ids, skipped = encode_text(m.vocab, text, unknown)
    t0 = time.perf_counter()
    with progress_bar(progress) as bar:
        task = bar.add_task("eval", total=max(len(ids) - 1, 0))
        loss, n = stateful_loss(m, ids, on_steps=lambda k: bar.update(task, advance=k))
    return EvalResult(
        model=f"{m.path} ({m.precision})",
        text=text_name,
        loss=loss,
        predictions=n,
        skipped=skipped,
        seconds=time.perf_counter() - t0,
    )


def evaluate_checkpoint(
    checkpoint: str | os.PathLike | None | tuple,
    text: str,
    *,
    text_name: str = "text",
    unknown: str = "error",
    runs_dir: str | os.PathLike = "runs",
) -> EvalResult:
    """Stateful loss of a torch checkpoint on `text`: the training loop's val_loss
    (chargen.train.evaluate.stateful_loss). checkpoint: a path, a run folder, None (the
    latest run), or what chargen.export.onnx_export.load_checkpoint returned. Imports torch.
    Raises ExportError (an unusable checkpoint) or EvalError."""
    from chargen.export.onnx_export import load_checkpoint
    from chargen.train.evaluate import stateful_loss as torch_stateful_loss

    loaded = checkpoint if isinstance(checkpoint, tuple) else load_checkpoint(checkpoint, runs_dir)
    path, model, vocab, _ = loaded
    ids, skipped = encode_text(vocab, text, unknown)
    if len(ids) < 2:
        raise EvalError("the text needs at least 2 characters (after removing unknown ones) to measure a loss")
    t0 = time.perf_counter()
    loss = torch_stateful_loss(model, ids)
    return EvalResult(
        model=f"{path} (torch)",
        text=text_name,
        loss=float(loss),
        predictions=len(ids) - 1,
        skipped=skipped,
        seconds=time.perf_counter() - t0,
    )
