from pathlib import Path

import pytest

from chargen.train.data import tinyshakespeare_text


@pytest.fixture(scope="session")
def small_text() -> str:
    """The first 40k chars of tiny-shakespeare (the packaged copy: every install has it)."""
    return tinyshakespeare_text()[:40_000]


@pytest.fixture
def corpus_file(tmp_path, small_text) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(small_text, encoding="utf-8")
    return path
