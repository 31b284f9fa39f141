"""The training corpus: load a text file or a folder of them, or fetch tiny-shakespeare.

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
* ``data`` is ``None``: tiny-shakespeare, downloaded once into ``cache_dir()``
  and checked against its sha256 (see ``download_tinyshakespeare``).

Every text is decoded as strict UTF-8. A leading byte order mark (U+FEFF) is
removed from each file, and Windows line ends ``"\\r\\n"`` become ``"\\n"`` (a
lone ``"\\r"`` is kept), so the same text saved on Windows and on Linux trains
the same model with the same vocabulary.

Every problem with the corpus raises ``CorpusError`` (a ``ValueError``) whose
message is one line naming the file, the problem, and what to do about it.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "TINYSHAKESPEARE_URL",
    "TINYSHAKESPEARE_SHA256",
    "TINYSHAKESPEARE_CHARS",
    "TINYSHAKESPEARE_FILENAME",
    "URL_ENV",
    "CACHE_ENV",
    "DOWNLOAD_TIMEOUT_S",
    "CorpusError",
    "Corpus",
    "cache_dir",
    "download_tinyshakespeare",
    "load_corpus",
    "check_length",
    "split",
]

TINYSHAKESPEARE_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
)
TINYSHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
TINYSHAKESPEARE_CHARS = 1_115_394
TINYSHAKESPEARE_FILENAME = "tinyshakespeare.txt"
TINYSHAKESPEARE_NAME = "tinyshakespeare"

#: Environment variable that overrides the download address of tiny-shakespeare.
URL_ENV = "CHARGEN_TINYSHAKESPEARE_URL"
#: Environment variable that overrides the cache directory.
CACHE_ENV = "CHARGEN_CACHE"
#: Seconds a connect or a single read may block before the download fails.
DOWNLOAD_TIMEOUT_S = 30.0

_CHUNK = 64 * 1024
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
            corpus, the URL it is downloaded from.
    """

    name: str
    text: str
    source: str

    def __len__(self) -> int:
        return len(self.text)


def _one_line(s: object) -> str:
    return " ".join(str(s).split())


# ---------------------------------------------------------------- cache + download


def cache_dir() -> Path:
    """Where downloaded corpora live: ``$CHARGEN_CACHE`` if set, else
    ``$XDG_CACHE_HOME/chargen``, else ``~/.cache/chargen``. Not created here."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "chargen"
    return Path.home() / ".cache" / "chargen"


_default_cache_dir = cache_dir  # the parameters below shadow the name


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _hint(target: Path) -> str:
    return (
        f"Offline? Download it elsewhere and pass --data path/to/input.txt, "
        f"or put it at {target}"
    )


def _progress_bar(enabled: bool):
    """A rich progress bar on stderr (bytes, speed, time left); a no-op when
    ``enabled`` is false or stderr is not a terminal."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    console = Console(stderr=True)
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not (enabled and console.is_terminal),
    )


def download_tinyshakespeare(
    cache_dir: str | os.PathLike | None = None,
    url: str | None = None,
    sha256: str | None = None,
    progress: bool = True,
    *,
    timeout: float = DOWNLOAD_TIMEOUT_S,
) -> Path:
    """Return the path of the verified tiny-shakespeare file, downloading it once.

    The file is ``<cache_dir>/tinyshakespeare.txt`` (``cache_dir`` defaults to
    ``cache_dir()``). A cached copy whose sha256 matches is returned without
    touching the network. Otherwise the file is fetched from ``url`` (default:
    ``$CHARGEN_TINYSHAKESPEARE_URL``, else ``TINYSHAKESPEARE_URL``) into a temp
    file in the same folder, checked against ``sha256`` (default
    ``TINYSHAKESPEARE_SHA256``) and the Content-Length, and moved into place
    with ``os.replace`` (atomic: concurrent runs never see a partial file). A
    cached copy that fails the check is replaced only by a good download.

    Raises CorpusError (with a hint to use ``--data``) when the download fails
    for any reason: offline, refused, timed out, HTTP error, connection dropped
    mid-way, or wrong checksum. No partial or temp file is left behind.
    """
    folder = Path(cache_dir).expanduser() if cache_dir is not None else _default_cache_dir()
    url = url or os.environ.get(URL_ENV) or TINYSHAKESPEARE_URL
    expected = (sha256 or TINYSHAKESPEARE_SHA256).lower()
    target = folder / TINYSHAKESPEARE_FILENAME

    stale = ""
    if target.is_file():
        try:
            if _sha256_file(target) == expected:
                return target
        except OSError as e:
            raise CorpusError(f"{target}: cannot read the cached tiny-shakespeare ({e})") from e
        stale = f" (the cached copy at {target} fails the sha256 check)"

    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(
            dir=folder, prefix=f".{TINYSHAKESPEARE_FILENAME}.", suffix=".part"
        )
    except OSError as e:
        raise CorpusError(
            f"cannot write to the cache folder {folder} ({e}); set ${CACHE_ENV} to a "
            f"writable folder, or pass --data path/to/input.txt"
        ) from e
    tmp = Path(tmp_name)

    def fail(reason: object) -> CorpusError:
        return CorpusError(
            f"could not download tiny-shakespeare from {url} ({_one_line(reason)}){stale}. "
            + _hint(target)
        )

    try:
        h = hashlib.sha256()
        received = 0
        try:
            with os.fdopen(fd, "wb") as out:
                request = urllib.request.Request(
                    url, headers={"User-Agent": "chargen (python urllib)"}
                )
                with urllib.request.urlopen(request, timeout=timeout) as resp:
                    length = resp.headers.get("Content-Length")
                    total = int(length) if length and length.strip().isdigit() else None
                    with _progress_bar(progress) as bar:
                        task = bar.add_task("tiny-shakespeare", total=total)
                        while True:
                            chunk = resp.read(_CHUNK)
                            if not chunk:
                                break
                            out.write(chunk)
                            h.update(chunk)
                            received += len(chunk)
                            bar.update(task, advance=len(chunk))
                    # http.client's read(amt) returns b"" when the server closes
                    # early instead of raising IncompleteRead: check it here.
                    if total is not None and received != total:
                        raise fail(
                            f"connection closed after {received} of {total} bytes"
                        )
                out.flush()
                os.fsync(out.fileno())
        except CorpusError:
            raise
        except http.client.IncompleteRead as e:
            raise fail(
                f"connection closed after {received + len(e.partial)} bytes, "
                f"{e.expected} more expected"
            ) from e
        except urllib.error.HTTPError as e:
            e.close()  # an HTTPError is also the open error response
            raise fail(f"HTTP {e.code} {e.reason}") from e
        except urllib.error.URLError as e:
            raise fail(e.reason) from e
        except (socket.timeout, TimeoutError) as e:
            raise fail(f"timed out after {timeout:g} s") from e
        except (OSError, http.client.HTTPException, ValueError) as e:
            raise fail(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__) from e

        got = h.hexdigest()
        if got != expected:
            raise CorpusError(
                f"the tiny-shakespeare downloaded from {url} has sha256 {got}, expected "
                f"{expected} ({received} bytes); it was discarded. " + _hint(target)
            )
        os.replace(tmp, target)
        return target
    finally:
        try:
            tmp.unlink()  # gone already after a successful os.replace
        except OSError:
            pass


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


def load_corpus(
    data: str | os.PathLike | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    url: str | None = None,
    sha256: str | None = None,
    progress: bool = True,
) -> Corpus:
    """Load the training text: a UTF-8 file, a folder of ``*.txt`` files, or
    (``data=None``) tiny-shakespeare from the cache, downloading it once.

    ``cache_dir``, ``url``, ``sha256`` and ``progress`` only matter for the
    default corpus and are passed to ``download_tinyshakespeare``. See the
    module docstring for the folder order, BOM and newline rules.
    """
    if data is None:
        path = download_tinyshakespeare(cache_dir, url=url, sha256=sha256, progress=progress)
        source = url or os.environ.get(URL_ENV) or TINYSHAKESPEARE_URL
        return Corpus(name=TINYSHAKESPEARE_NAME, text=_read_text(path), source=source)

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
