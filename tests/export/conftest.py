"""Fixtures: a tiny CharGRU trained in-process for a few dozen steps, saved as a real checkpoint."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from chargen.runtime.contract import Vocab
from chargen.train import checkpoint as ckpt
from chargen.train.config import TrainConfig
from chargen.train.data import tinyshakespeare_text
from chargen.train.model import CharGRU, ModelConfig

TEXT_CHARS = 20_000


def small_text() -> str:
    """The first 20k chars of tiny-shakespeare (the packaged copy: every install has it)."""
    return tinyshakespeare_text()[:TEXT_CHARS]


def make_checkpoint(text: str, *, embedding_dim=16, hidden_size=32, layers=1, steps=40, seed=0, corpus="tiny") -> dict:
    """Train a CharGRU for `steps` Adam steps on `text` and return the checkpoint dict."""
    torch.manual_seed(seed)
    vocab = Vocab.from_text(text)
    mc = ModelConfig(vocab_size=len(vocab), embedding_dim=embedding_dim, hidden_size=hidden_size, layers=layers)
    tc = TrainConfig(embedding_dim=embedding_dim, hidden_size=hidden_size, layers=layers, batch_size=16, seq_len=50)
    model = CharGRU(mc)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    ids = torch.tensor(vocab.encode(text), dtype=torch.long)
    n_train = int(len(ids) * (1 - tc.val_fraction))
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        starts = torch.randint(0, n_train - tc.seq_len - 1, (tc.batch_size,), generator=g)
        window = torch.stack([ids[s : s + tc.seq_len + 1] for s in starts.tolist()], dim=1)  # (T+1, B)
        loss, _ = model.loss(window[:-1], window[1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return {
        "format": ckpt.FORMAT,
        "version": ckpt.VERSION,
        "model_config": asdict(mc),
        "train_config": tc.to_dict(),
        "vocab": list(vocab.chars),
        "corpus": corpus,
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "step": steps,
        "epoch": 0,
        "best_val_loss": loss.item(),
        "val_loss": loss.item(),
        "rng": {"torch": torch.get_rng_state(), "cuda": []},
    }


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "tiny.txt"
    path.write_text(small_text(), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory, corpus_file) -> Path:
    """runs/tiny/best.pt: a trained 1-layer E=16, H=32 model."""
    runs = tmp_path_factory.mktemp("runs")
    run = runs / "tiny"
    run.mkdir()
    cp = make_checkpoint(corpus_file.read_text(encoding="utf-8"))
    ckpt.save(cp, run / ckpt.BEST)
    return run


@pytest.fixture(scope="session")
def checkpoint_path(run_dir) -> Path:
    return run_dir / ckpt.BEST


@pytest.fixture(scope="session")
def deep_checkpoint_path(tmp_path_factory, corpus_file) -> Path:
    """A 2-layer model with dropout in its config (eval mode must switch it off)."""
    path = tmp_path_factory.mktemp("deep") / "best.pt"
    cp = make_checkpoint(corpus_file.read_text(encoding="utf-8"), hidden_size=24, layers=2, steps=20)
    cp["model_config"]["dropout"] = 0.2
    ckpt.save(cp, path)
    return path
