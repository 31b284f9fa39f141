import os
import subprocess
import sys
from pathlib import Path

import pytest

SHARED_CORPUS = Path(__file__).resolve().parents[3] / "shared" / "data" / "tinyshakespeare.txt"

# A tiny model and recipe: real training, seconds on 2 cores.
TINY = ["--embedding-dim", "8", "--hidden-size", "32", "--batch-size", "8", "--seq-len", "32",
        "--log-interval", "2", "--sample-length", "20"]


@pytest.fixture(scope="session")
def small_text() -> str:
    if SHARED_CORPUS.exists():
        return SHARED_CORPUS.read_text(encoding="utf-8")[:40_000]
    # A stand-in with the shape of a play, for machines without the shared corpus.
    lines = []
    for i in range(1500):
        lines.append(f"SPEAKER {i % 7}:\nWhat light through yonder window {i % 13} breaks, and why?\n")
    return "\n".join(lines)[:40_000]


@pytest.fixture
def corpus_file(tmp_path, small_text) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(small_text, encoding="utf-8")
    return path


def gen(*args, timeout=300, **kwargs) -> subprocess.CompletedProcess:
    """Run the real CLI in a fresh process."""
    env = dict(os.environ, COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "chargen", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env, **kwargs)
