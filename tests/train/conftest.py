from pathlib import Path

import pytest

SHARED_CORPUS = Path(__file__).resolve().parents[3] / "shared" / "data" / "tinyshakespeare.txt"

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
