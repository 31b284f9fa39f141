"""The training corpus: load a text file or a folder of them, or the packaged tiny-shakespeare.

``load_corpus(data)`` is what ``gen train --data PATH`` calls:

* ``data`` is a file: it is read as UTF-8, whatever its extension.
* ``data`` is a folder: every ``*.txt`` file under it, recursively, is read in
  the order of its path relative to the folder, compared as POSIX strings
  (``a.txt``, ``b.txt``, ``b/c.txt``, ``c.txt``), and the texts are
  concatenated. Where one file does not end with a newline, a single ``"\\n"``
  is put between it and the next, so the last line of one file never runs into
  the first line of the next. Files and folders whose name starts with ``"."``
  (``.git``, ``.ipynb_checkpoints``, editor backups) are skipped. Symlinked
  files are followed; symlinked folders are not descended into.
* ``data`` is ``None``: tiny-shakespeare, the copy that ships inside the package
  (gzipped, about 0.4 MB), checked against its sha256. No network is needed.

Every text is decoded as strict UTF-8. A leading byte order mark (U+FEFF) is
removed from each file, and Windows line ends ``"\\r\\n"`` become ``"\\n"`` (a
lone ``"\\r"`` is kept), so the same text saved on Windows and on Linux trains
the same model with the same vocabulary.

Every problem with the corpus raises ``CorpusError`` (a ``ValueError``) whose
message is one line naming the file, the problem, and what to do about it.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

__all__ = [
    "TINYSHAKESPEARE_SHA256",
    "TINYSHAKESPEARE_CHARS",
    "TINYSHAKESPEARE_NAME",
    "TINYSHAKESPEARE_SOURCE",
    "CorpusError",
    "Corpus",
    "tinyshakespeare_text",
    "load_corpus",
    "check_length",
    "split",
]

# karpathy/char-rnn's data/tinyshakespeare/input.txt, as torch-rnn and the
# TensorFlow tutorial use it; the sha256 is of the uncompressed file.
TINYSHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
TINYSHAKESPEARE_CHARS = 1_115_394
TINYSHAKESPEARE_NAME = "tinyshakespeare"
#: The packaged copy, relative to this package (declared as package data in pyproject.toml).
TINYSHAKESPEARE_RESOURCE = "corpora/tinyshakespeare.txt.gz"
#: ``Corpus.source`` of the packaged copy (and so a checkpoint's ``corpus_source``).
TINYSHAKESPEARE_SOURCE = "tiny-shakespeare (packaged with chargen)"

_BOM = "\ufeff"


class CorpusError(ValueError):
    """The corpus cannot be used. The message is one line: file, problem, remedy."""

    def __init__(self, message: str):
        super().__init__(_one_line(message))


@dataclass(frozen=True)
class Corpus:
    """A loaded corpus.

    name:   file stem, folder name, or ``"tinyshakespeare"``; goes into the
            model's metadata as the training corpus name.
    text:   the whole text (BOM stripped, ``\\r\\n`` -> ``\\n``).
    source: where it came from: the file or folder path, or, for the default
            corpus, ``TINYSHAKESPEARE_SOURCE``.
    """

    name: str
    text: str
    source: str

    def __len__(self) -> int:
        return len(self.text)


def _one_line(s: object) -> str:
    return " ".join(str(s).split())


# ---------------------------------------------------------------- the packaged corpus


def tinyshakespeare_text(gz: str | os.PathLike | None = None) -> str:
    """The text of tiny-shakespeare from the gzipped copy ``gz`` (default: the one
    packaged with chargen), after checking its sha256 against ``TINYSHAKESPEARE_SHA256``.

    Raises CorpusError when the copy is missing, unreadable or not the right text
    (a damaged install): the message says to reinstall or to pass ``--data``.
    """
    where = Path(gz) if gz is not None else resources.files(__package__).joinpath(TINYSHAKESPEARE_RESOURCE)
    remedy = "reinstall chargen, or pass --data path/to/input.txt"
    try:
        raw = gzip.decompress(where.read_bytes())
    except (OSError, EOFError, zlib.error) as e:
        raise CorpusError(f"{where}: cannot read the packaged tiny-shakespeare ({e}); {remedy}") from e
    got = hashlib.sha256(raw).hexdigest()
    if got != TINYSHAKESPEARE_SHA256:
        raise CorpusError(
            f"{where}: the packaged tiny-shakespeare has sha256 {got}, expected "
            f"{TINYSHAKESPEARE_SHA256}; {remedy}"
        )
    return _decode(raw, Path(str(where)))


# ---------------------------------------------------------------- local files


def _decode(raw: bytes, path: Path) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CorpusError(
            f"{path}: not valid UTF-8 at byte offset {e.start} ({e.reason}); "
            f"re-save it as UTF-8 (e.g. iconv -f latin1 -t utf-8 in.txt > out.txt)"
        ) from e
    if text.startswith(_BOM):
        text = text[1:]
    return text.replace("\r\n", "\n")


def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise CorpusError(f"{path}: cannot read it ({e.strerror or e})") from e
    return _decode(raw, path)


def _txt_files(folder: Path) -> list[Path]:
    found = []
    for p in folder.rglob("*.txt"):
        rel = p.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if p.is_file():
            found.append((rel.as_posix(), p))
    found.sort()
    return [p for _, p in found]


def _load_folder(folder: Path) -> str:
    files = _txt_files(folder)
    if not files:
        raise CorpusError(
            f"{folder}: folder has no .txt files; put the training text in *.txt files "
            f"there, or pass --data a single text file"
        )
    parts: list[str] = []
    for f in files:
        text = _read_text(f)
        if not text:
            continue
        if parts and not parts[-1].endswith("\n"):
            parts.append("\n")
        parts.append(text)
    text = "".join(parts)
    if not text:
        raise CorpusError(
            f"{folder}: all {len(files)} .txt files in the folder are empty; "
            f"pass --data a folder or file with text in it"
        )
    return text


def load_corpus(data: str | os.PathLike | None = None) -> Corpus:
    """Load the training text: a UTF-8 file, a folder of ``*.txt`` files, or
    (``data=None``) the packaged tiny-shakespeare. See the module docstring for
    the folder order, BOM and newline rules.
    """
    if data is None:
        return Corpus(name=TINYSHAKESPEARE_NAME, text=tinyshakespeare_text(), source=TINYSHAKESPEARE_SOURCE)

    path = Path(data).expanduser()
    if not path.exists():
        raise CorpusError(
            f"{path}: no such file or folder; pass --data a UTF-8 text file or a folder "
            f"of .txt files, or leave --data out to train on tiny-shakespeare"
        )
    if path.is_dir():
        text = _load_folder(path)
        name = path.resolve().name or "corpus"
    elif path.is_file():
        text = _read_text(path)
        if not text:
            raise CorpusError(f"{path}: the file is empty; pass --data a file with text in it")
        name = path.stem or path.name
    else:
        raise CorpusError(
            f"{path}: not a regular file or folder; pass --data a UTF-8 text file "
            f"or a folder of .txt files"
        )
    return Corpus(name=name, text=text, source=str(path))


# ---------------------------------------------------------------- checks + split


def check_length(corpus: Corpus | str, min_chars: int, why: str = "") -> None:
    """Raise CorpusError if ``corpus`` has fewer than ``min_chars`` characters.

    ``why`` says what needs them, e.g. ``"for one training sequence of 101
    characters"``; it is put into the message as is.
    """
    if isinstance(corpus, Corpus):
        n, label = len(corpus.text), f"{corpus.source}: the corpus"
    else:
        n, label = len(corpus), "the corpus"
    if n < min_chars:
        need = f"{min_chars}" + (f" needed {why}" if why else " needed")
        raise CorpusError(
            f"{label} has {n} characters, fewer than the {need}; "
            f"use a longer text (or shorter sequences)"
        )


def split(text: str, val_fraction: float) -> tuple[str, str]:
    """Split ``text`` into (train, val): the first ``1 - val_fraction`` of the
    characters train, the rest validate (nanoGPT's split:
    ``train = text[:int(n * (1 - val_fraction))]``).

    Raises CorpusError if ``val_fraction`` is outside [0, 1] or either part
    would be empty.
    """
    f = float(val_fraction)
    if not 0.0 <= f <= 1.0:  # also rejects NaN
        raise CorpusError(
            f"validation fraction {val_fraction!r} is not between 0 and 1; "
            f"use e.g. 0.1 for the last 10% of the corpus"
        )
    n = len(text)
    cut = int(n * (1.0 - f))
    train, val = text[:cut], text[cut:]
    if not train or not val:
        raise CorpusError(
            f"a validation fraction of {f:g} splits the {n}-character corpus into "
            f"{len(train)} training and {len(val)} validation characters; both must be "
            f"non-empty: use a longer corpus or a validation fraction strictly between 0 and 1"
        )
    return train, val
