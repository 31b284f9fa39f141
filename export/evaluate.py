"""Loss of a chargen ONNX step graph on a text, with onnxruntime alone (never torch).

    gen eval --model model.onnx [--data PATH] [--split val|all] [--val-fraction 0.1]

The loss is what training reports as val_loss: one stateful pass, the hidden
state carried from character to character from a zero state, the mean
cross-entropy (nats per character) of predicting text[1:] from text[:-1].
Bits per character = nats / ln 2.

This module imports numpy, onnxruntime (on first use) and chargen.train.data
(standard library only); `gen eval --model` therefore works without torch.
The same OnnxModel rolls graphs out for the export's parity check.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from chargen.runtime import contract
from chargen.runtime.contract import UnknownCharactersError, Vocab

__all__ = [
    "EvalError",
    "EvalResult",
    "OnnxModel",
    "SPLITS",
    "UNKNOWN",
    "load_eval_text",
    "encode_text",
    "nll_sum",
    "evaluate_onnx",
    "bits_per_char",
]

SPLITS = ("val", "all")
UNKNOWN = ("error", "skip")
CHUNK = 1024  # steps between progress updates / loss accumulations


class EvalError(ValueError):
    """A model or text that cannot be evaluated; the message is one line."""


def _one_line(s: object) -> str:
    return " ".join(str(s).split())


def bits_per_char(nats: float) -> float:
    return nats / math.log(2)


def _import_ort():
    try:
        import onnxruntime
    except ImportError as e:  # pragma: no cover - depends on the install
        raise EvalError('onnxruntime is not installed: pip install "chargen[cpu]"') from e
    return onnxruntime


def session_options(threads: int = 1):
    """Sequential execution, `threads` intra-op threads, no spinning (idle threads sleep
    instead of burning a core that other processes may need)."""
    ort = _import_ort()
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so


class OnnxModel:
    """A chargen step graph in an onnxruntime session: its vocab, config and metadata,
    and step-by-step rollouts over token sequences."""

    def __init__(self, source: str | os.PathLike | bytes, *, threads: int | None = None, name: str | None = None):
        """threads: onnxruntime intra-op threads; None picks what measured fastest at batch 1
        on a 2-core CPU (benchmarks/bench_export.py): 2 for fp32/fp16 (the float32 matvec
        splits well), 1 for int8 (its quantize + integer matmul does not)."""
        ort = _import_ort()
        self.name = name or (str(source) if not isinstance(source, bytes) else "<model>")
        if not isinstance(source, bytes):
            path = Path(source)
            if not path.is_file():
                raise EvalError(f"no model at {path}" + ("" if not path.is_dir() else " (it is a folder)"))
            source = str(path)
            from chargen.runtime.onnx_file import OnnxFileError, read_metadata

            try:  # a file that is not a chargen model is refused before onnxruntime logs about it
                if contract.META_FORMAT not in read_metadata(path):
                    raise EvalError(f"{self.name} is an ONNX model but not a chargen model "
                                    f"(no {contract.META_FORMAT} metadata)")
            except OnnxFileError:
                pass  # not readable as ONNX here: onnxruntime says what is wrong with it
        try:
            self.session = ort.InferenceSession(
                source, session_options(threads or 1), providers=["CPUExecutionProvider"]
            )
        except Exception as e:  # onnxruntime raises its own exception types
            reason = _one_line(e)[:200]
            raise EvalError(f"{self.name} is not a loadable ONNX model: {reason}") from None
        meta = dict(self.session.get_modelmeta().custom_metadata_map)
        if threads is None and meta.get(contract.META_PRECISION) != "int8" and (os.cpu_count() or 1) > 1:
            self.session = ort.InferenceSession(source, session_options(2), providers=["CPUExecutionProvider"])
        self.metadata = meta
        if contract.META_FORMAT not in meta:
            raise EvalError(f"{self.name} is an ONNX model but not a chargen model (no {contract.META_FORMAT} metadata)")
        try:
            version = int(meta[contract.META_FORMAT])
            self.vocab = Vocab.from_json(meta[contract.META_VOCAB])
            self.config = json.loads(meta[contract.META_CONFIG])
            self.layers = int(self.config["layers"])
            self.hidden_size = int(self.config["hidden_size"])
        except (KeyError, ValueError, TypeError) as e:
            raise EvalError(f"{self.name} has damaged chargen metadata: {_one_line(e)}") from None
        if version > contract.FORMAT_VERSION:
            raise EvalError(
                f"{self.name} is chargen model format {version}; this chargen reads format {contract.FORMAT_VERSION}"
            )
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        if sorted(inputs) != sorted([contract.INPUT_TOKEN, contract.INPUT_H]) or not {
            contract.OUTPUT_LOGITS,
            contract.OUTPUT_H,
        } <= set(outputs):
            raise EvalError(f"{self.name} does not have the chargen step interface (inputs {inputs}, outputs {outputs})")
        self.precision = meta.get(contract.META_PRECISION, "fp32")
        self._outputs = [contract.OUTPUT_LOGITS, contract.OUTPUT_H]

    def initial_state(self, batch: int) -> np.ndarray:
        return np.zeros((self.layers, batch, self.hidden_size), np.float32)

    def step(self, tokens: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, h = self.session.run(
            self._outputs, {contract.INPUT_TOKEN: np.asarray(tokens, np.int64), contract.INPUT_H: h}
        )
        return logits, h

    def rollout(
        self, ids: np.ndarray, h: np.ndarray | None = None, on_steps: Callable[[int], None] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Teacher-forced: ids (T, B) -> logits (T, B, V) and the final state (L, B, H).

        Runs through IOBinding over buffers this function owns (the token, two
        state buffers used in turn, the logits): no allocation per step.
        """
        ort = _import_ort()
        ids = np.ascontiguousarray(np.asarray(ids, np.int64))
        T, B = ids.shape
        token = np.zeros(B, np.int64)
        states = [
            np.array(self.initial_state(B) if h is None else h, np.float32, copy=True, order="C"),
            self.initial_state(B),
        ]
        logits = np.zeros((B, len(self.vocab)), np.float32)
        wrap = ort.OrtValue.ortvalue_from_numpy  # shares the numpy buffer, no copy
        token_v, logits_v = wrap(token), wrap(logits)
        state_v = [wrap(a) for a in states]
        bindings = []
        for i in range(2):
            bind = self.session.io_binding()
            bind.bind_ortvalue_input(contract.INPUT_TOKEN, token_v)
            bind.bind_ortvalue_input(contract.INPUT_H, state_v[i])
            bind.bind_ortvalue_output(contract.OUTPUT_LOGITS, logits_v)
            bind.bind_ortvalue_output(contract.OUTPUT_H, state_v[1 - i])
            bindings.append(bind)
        out = np.empty((T, B, len(self.vocab)), np.float32)
        run = self.session.run_with_iobinding
        for t in range(T):
            token[:] = ids[t]
            run(bindings[t & 1])
            out[t] = logits
            if on_steps is not None and (t + 1) % CHUNK == 0:
                on_steps(CHUNK)
        if on_steps is not None and T % CHUNK:
            on_steps(T % CHUNK)
        return out, states[T & 1].copy()

    def greedy(self, start: int, steps: int) -> list[int]:
        """argmax decoding for `steps` symbols after `start`, batch 1."""
        token = np.array([start], np.int64)
        h = self.initial_state(1)
        out = []
        for _ in range(steps):
            logits, h = self.step(token, h)
            token = np.array([int(np.argmax(logits[0]))], np.int64)
            out.append(int(token[0]))
        return out

    def stateful_loss(self, ids, on_steps: Callable[[int], None] | None = None) -> tuple[float, int]:
        """(mean nats/char, predictions) of predicting ids[1:] from ids[:-1], state carried throughout."""
        ids = np.asarray(ids, np.int64)
        if len(ids) < 2:
            raise EvalError("the text needs at least 2 characters (after removing unknown ones) to measure a loss")
        h = self.initial_state(1)
        total = 0.0
        n = len(ids) - 1
        for start in range(0, n, CHUNK):
            x = ids[start : min(start + CHUNK, n)]
            y = ids[start + 1 : start + 1 + len(x)]
            logits, h = self.rollout(x[:, None], h)
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
    model: str | os.PathLike | OnnxModel,
    text: str,
    *,
    text_name: str = "text",
    unknown: str = "error",
    progress: bool = True,
) -> EvalResult:
    """Stateful loss of a chargen .onnx model on `text`. Raises EvalError."""
    import time

    m = model if isinstance(model, OnnxModel) else OnnxModel(model)
    ids, skipped = encode_text(m.vocab, text, unknown)
    t0 = time.perf_counter()
    with progress_bar(progress) as bar:
        task = bar.add_task("eval", total=max(len(ids) - 1, 0))
        loss, n = m.stateful_loss(ids, on_steps=lambda k: bar.update(task, advance=k))
    return EvalResult(
        model=f"{m.name} ({m.precision})",
        text=text_name,
        loss=loss,
        predictions=n,
        skipped=skipped,
        seconds=time.perf_counter() - t0,
    )
