"""What crosses the train/export -> runtime boundary: graph names, metadata keys, the vocabulary.

export writes these and runtime reads them; nothing else defines its own copy.
This module imports the standard library only, so torch-side code can use it.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass

# ONNX step graph: one step for B streams, L layers, H units, V symbols.
INPUT_TOKEN = "token"  # int64 [B]
INPUT_H = "h"  # float32 [L, B, H]
OUTPUT_LOGITS = "logits"  # float32 [B, V]
OUTPUT_H = "h_out"  # float32 [L, B, H]
BATCH_AXIS = "batch"

# metadata_props keys
META_FORMAT = "chargen.format"
META_VOCAB = "chargen.vocab"  # JSON list of characters in id order
META_CONFIG = "chargen.config"  # JSON object: the model config
META_CORPUS = "chargen.corpus"  # training corpus name
META_VAL_LOSS = "chargen.val_loss"  # best validation loss, nats per char
META_PRECISION = "chargen.precision"  # fp32 | fp16 | int8
META_INT8_KERNEL = "chargen.int8_kernel"  # int8 only: nbits (MatMulNBits) | dynamic (MatMulInteger)
INT8_KERNEL_OPS = {"dynamic": "MatMulInteger", "nbits": "MatMulNBits"}  # the onnxruntime op each writes
DEFAULT_INT8_KERNEL = "dynamic"  # full speed on every CPU; nbits is opt-in (chargen.export.onnx_export.quantize_int8)
FORMAT_VERSION = 1
ENGINES = ("auto", "onnxruntime", "chargen")  # who runs the step (chargen.runtime.engine)

# The initializers of an int8 step graph that chargen's own int8 step (runtime/engine.py) reads,
# as export/graph.py names them ("{base}_quantized", "_scale", "_zero_point" are quantize_dynamic's
# for a matrix). The biases "gh_rz" (when fold_hh_bias is off) and layer k's "gi" (when all zero)
# may be absent.
INT8_WEIGHTS = {
    "table": "gi_table_l0",  # [V, 3H] float32: layer 0's embedding, W_ih and biases folded
    "w_hh": "gh_l{k}_w_t",  # [H, 3H] int8 (W_hh^T), one scale per output
    "b_hh_rz": "gh_rz_l{k}_b",  # [2H] float32
    "b_hh_n": "gh_n_l{k}_b",  # [H] float32
    "w_ih": "gi_l{k}_w_t",  # [H, 3H] int8, layers k >= 1
    "b_ih": "gi_l{k}_b",  # [3H] float32, layers k >= 1
    "head_w_t": "head_w_t",  # [H, V] float32
    "head_b": "head_b",  # [V] float32
}


def bits_per_char(nats: float) -> float:
    """A loss in nats per character (training's val_loss, META_VAL_LOSS, gen eval's) in bits."""
    return nats / math.log(2)


def int8_weight_names(layers: int) -> list[str]:
    """Every initializer name INT8_WEIGHTS gives for a model of that many layers."""
    names = [INT8_WEIGHTS["table"], INT8_WEIGHTS["head_w_t"], INT8_WEIGHTS["head_b"]]
    for k in range(layers):
        matrices = ["w_hh"] + (["w_ih"] if k else [])
        names += [INT8_WEIGHTS[m].format(k=k) + s for m in matrices for s in ("_quantized", "_scale", "_zero_point")]
        names += [INT8_WEIGHTS[b].format(k=k) for b in ("b_hh_rz", "b_hh_n") + (("b_ih",) if k else ())]
    return names


class UnknownCharactersError(ValueError):
    """Text holds characters that the model's vocabulary lacks."""

    def __init__(self, unknown: Counter, vocab: "Vocab"):
        self.unknown = unknown
        shown = ", ".join(f"{c!r} (x{n})" for c, n in unknown.most_common(10))
        more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        super().__init__(
            f"{sum(unknown.values())} character(s) not in the model's vocabulary: {shown}{more}. "
            f"The model knows {len(vocab)} symbols: {''.join(vocab.chars)!r}. "
            "Remove them, or skip them (unknown='skip', or --unknown skip)."
        )


@dataclass(frozen=True)
class Vocab:
    """The sorted set of characters of a corpus; a character's id is its index."""

    chars: tuple[str, ...]

    def __post_init__(self):
        if not self.chars:
            raise ValueError("a vocabulary needs at least one character")
        if any(len(c) != 1 for c in self.chars) or len(set(self.chars)) != len(self.chars):
            raise ValueError("a vocabulary is a list of distinct single characters")
        object.__setattr__(self, "_index", {c: i for i, c in enumerate(self.chars)})

    @classmethod
    def from_text(cls, text: str) -> "Vocab":
        return cls(tuple(sorted(set(text))))

    @classmethod
    def from_json(cls, data: str) -> "Vocab":
        chars = json.loads(data)
        if not isinstance(chars, list):
            raise ValueError("vocabulary metadata is not a JSON list")
        return cls(tuple(chars))

    def to_json(self) -> str:
        return json.dumps(list(self.chars), ensure_ascii=False)

    def __len__(self) -> int:
        return len(self.chars)

    def __contains__(self, char: str) -> bool:
        return char in self._index

    def unknown(self, text: str) -> Counter:
        return Counter(c for c in text if c not in self._index)

    def encode(self, text: str, unknown: str = "error") -> list[int]:
        """Ids of text; unknown='error' raises UnknownCharactersError, 'skip' drops them."""
        if unknown not in ("error", "skip"):
            raise ValueError(f"unknown must be 'error' or 'skip', not {unknown!r}")
        index = self._index
        try:
            return [index[c] for c in text]
        except KeyError:
            if unknown == "error":
                raise UnknownCharactersError(self.unknown(text), self) from None
            return [index[c] for c in text if c in index]

    def decode(self, ids) -> str:
        chars = self.chars
        return "".join(chars[int(i)] for i in ids)
