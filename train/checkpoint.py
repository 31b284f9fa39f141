"""Checkpoints: written atomically, loadable with torch.load(weights_only=True).

A checkpoint is a plain dict of tensors and Python primitives:

    format        "chargen-checkpoint"
    version       1
    model_config  ModelConfig as a dict (vocab_size, embedding_dim, hidden_size, layers, dropout, weight_drop)
    train_config  TrainConfig as a dict
    vocab         list of characters in id order
    corpus        corpus name
    corpus_source the path the corpus was read from, or chargen.train.data.TINYSHAKESPEARE_SOURCE
    model         state_dict of CharGRU
    optimizer     state_dict of the optimizer
    step, epoch   optimizer steps done; the epoch the next step belongs to
    best_val_loss best stateful validation loss so far (inf before the first evaluation)
    val_loss      the stateful validation loss at this step, or None
    rng           {"torch": ByteTensor, "cuda": [ByteTensor, ...]}
"""

from __future__ import annotations

from pathlib import Path

import torch

from chargen.train.atomic import atomic_write

FORMAT = "chargen-checkpoint"
VERSION = 1
LAST = "last.pt"
BEST = "best.pt"


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt, or not a chargen checkpoint; one-line message."""


def save(checkpoint: dict, path: Path) -> None:
    """Write to a temporary file beside `path`, fsync, then rename over it."""
    with atomic_write(path) as f:
        torch.save(checkpoint, f)


def load(path: Path, map_location="cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path} is not a readable checkpoint (corrupt or truncated?): {reason}") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a chargen checkpoint")
    if checkpoint.get("version") != VERSION:
        raise CheckpointError(
            f"{path} has checkpoint version {checkpoint.get('version')}; this chargen reads version {VERSION}"
        )
    return checkpoint


def find(path: Path | None = None, runs_dir: Path = Path("runs"), which: str = BEST) -> Path:
    """Resolve a checkpoint file, a run folder (its best.pt, else last.pt), or the latest run."""
    if path is not None:
        path = Path(path)
        if path.is_dir():
            for name in (which, LAST, BEST):
                if (path / name).is_file():
                    return path / name
            raise CheckpointError(f"no checkpoint ({BEST} or {LAST}) in {path}")
        if not path.exists():
            raise CheckpointError(f"no checkpoint at {path}")
        return path
    candidates = [p for p in Path(runs_dir).glob(f"*/{LAST}")] + [p for p in Path(runs_dir).glob(f"*/{BEST}")]
    if not candidates:
        raise CheckpointError(
            f"no checkpoint found under {runs_dir}/; run `gen train` first or pass --checkpoint PATH"
        )
    latest_run = max(candidates, key=lambda p: p.stat().st_mtime).parent
    return find(latest_run, runs_dir, which)


def load_model(path: Path, map_location="cpu"):
    """(CharGRU in eval mode, Vocab, checkpoint dict) from a checkpoint file."""
    from chargen.runtime.contract import Vocab
    from chargen.train.model import CharGRU, ModelConfig

    checkpoint = load(path, map_location)
    try:
        vocab = Vocab(tuple(checkpoint["vocab"]))
        model = CharGRU(ModelConfig(**checkpoint["model_config"]))
        model.load_state_dict(checkpoint["model"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        reason = str(e).strip().splitlines()[0]
        raise CheckpointError(f"{path} is a damaged chargen checkpoint: {reason}") from None
    model.eval()
    return model, vocab, checkpoint
