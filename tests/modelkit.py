"""Small chargen models from random weights for every test folder: `from modelkit import ...`
(tests/ is on sys.path wherever tests/conftest.py is loaded).

    ALPHABET                                  tiny-shakespeare's 65 characters
    random_model(...) -> (weights, config, vocab)
    model_file(path, precision, ...) -> Path  the model written as `gen export` writes it
"""

from __future__ import annotations

from pathlib import Path

ALPHABET = "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def random_model(*, layers: int = 1, hidden: int = 64, embedding: int = 16, seed: int = 3, head_scale: float = 8.0,
                 rnn_scale: float = 1.0, alphabet: str = ALPHABET):
    """(weights, config, vocab) of a random CharGRU: torch's default init (graph_variants.random_weights)
    with the head sharpened by head_scale so the distributions are not flat; rnn_scale=4 makes the
    recurrence chaotic."""
    from chargen.export.graph_variants import random_weights

    from chargen.runtime import Vocab

    vocab = Vocab.from_text(alphabet)
    config = dict(vocab_size=len(vocab), embedding_dim=embedding, hidden_size=hidden, layers=layers, dropout=0.0)
    weights = random_weights(len(vocab), embedding, hidden, layers, seed=seed, head_scale=head_scale,
                             rnn_scale=rnn_scale)
    return weights, config, vocab


def model_file(path, precision: str = "fp32", *, kernel: str = "dynamic", options=None, corpus: str = "random",
               val_loss: float | None = None, **model) -> Path:
    """Write random_model(**model) as a model file of that precision (int8: quantized with
    `kernel`) and return its path. options: a graph_variants.GraphOptions for a graph written
    otherwise than the export writes it."""
    import onnx
    from chargen.export.graph_variants import build_graph

    from chargen.export.graph import build_step_graph
    from chargen.export.onnx_export import quantize_int8

    weights, config, vocab = random_model(**model)
    if options is None:
        graph = build_step_graph(weights, config, vocab, corpus=corpus, val_loss=val_loss, precision=precision)
    else:
        graph = build_graph(weights, config, vocab, corpus=corpus, val_loss=val_loss, precision=precision,
                            options=options)
    if precision == "int8":
        graph = quantize_int8(graph, kernel=kernel)
    onnx.save(graph, path)
    return Path(path)
