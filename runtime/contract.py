"""What crosses the train/export -> runtime boundary: graph names, metadata keys, the vocabulary.

export writes these and runtime reads them; nothing else defines its own copy.
This module imports the standard library only, so torch-side code can use it.
"""

from __future__ import annotations

import json
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
