"""Shared fixtures: small chargen model files from random weights, for every test folder.

    make_model(path, precision="fp32" | "fp16" | "int8", layers=1, hidden=64, ...) -> Path  (a fixture)
    model_files["fp32" | "int8"]                                                     (one small model)

The weights follow torch's default init (random_weights, benchmarks/graph_variants.py) with a
sharpened head, so the distributions are not flat; rnn_scale=4 makes the recurrence chaotic. Trained models come
from tests/export/conftest.py's checkpoints where a test needs them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# benchmarks/graph_variants.py (random weights, the step graphs that chargen does not ship) is
# shared by the benchmarks and the tests: `import graph_variants` in any test folder.
sys.path.append(str(Path(__file__).resolve().parents[1] / "benchmarks"))

ALPHABET = "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def model_file(path, precision: str = "fp32", *, layers: int = 1, hidden: int = 64, embedding: int = 16,
               kernel: str = "dynamic", seed: int = 3, rnn_scale: float = 1.0, alphabet: str = ALPHABET,
               options=None) -> Path:
    """Write a model file of that precision (int8: quantized with `kernel`) and return its path.
    options: a graph_variants.GraphOptions for a graph written otherwise than the export writes it."""
    import onnx
    from graph_variants import build_graph, random_weights

    from chargen.export.graph import build_step_graph
    from chargen.export.onnx_export import quantize_int8
    from chargen.runtime import Vocab

    vocab = Vocab.from_text(alphabet)
    config = dict(vocab_size=len(vocab), embedding_dim=embedding, hidden_size=hidden, layers=layers, dropout=0.0)
    weights = random_weights(len(vocab), embedding, hidden, layers, seed=seed, head_scale=8, rnn_scale=rnn_scale)
    if options is None:
        graph = build_step_graph(weights, config, vocab, corpus="random", precision=precision)
    else:
        graph = build_graph(weights, config, vocab, corpus="random", precision=precision, options=options)
    if precision == "int8":
        graph = quantize_int8(graph, kernel=kernel)
    onnx.save(graph, path)
    return Path(path)


@pytest.fixture(scope="session")
def make_model():
    """model_file, for fixtures of any scope."""
    return model_file


@pytest.fixture(scope="session")
def model_files(tmp_path_factory):
    """fp32 and int8 files of one small random model (L=1, H=64), made once per run."""
    folder = tmp_path_factory.mktemp("models")
    return {p: model_file(folder / f"{p}.onnx", p) for p in ("fp32", "int8")}
