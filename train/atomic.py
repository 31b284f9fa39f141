"""Replace a file all at once: a crash or a kill never leaves a half-written one.

The temporary file beside the target is named ``.<name>.<host>.<pid>.<random>.tmp``:
a writer killed with SIGKILL cannot remove its own, so the next write of the same
target removes those whose writer is gone (same host, process no longer running),
and never one that a live process is still writing.
"""

from __future__ import annotations

import glob
import os
import re
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _host() -> str:
    """This machine's name as it goes into temp file names (a shared folder may be
    written from several machines, whose process ids mean nothing here)."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())


def _alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would send CTRL_C_EVENT there: assume alive, keep the file
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, someone else's
        return True
    return True


def remove_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files that killed writers of `path` left beside it; return them.

    Only files of this naming, written on this host by a process that no longer
    exists, are removed: a live writer's file, another host's, or any other file
    is left alone.
    """
    path = Path(path)
    prefix, suffix = f".{path.name}.", ".tmp"
    host = _host()
    removed = []
    try:
        candidates = list(path.parent.glob(f".{glob.escape(path.name)}.*.tmp"))
    except OSError:
        return removed
    for tmp in candidates:
        middle = tmp.name[len(prefix) : -len(suffix)]
        parts = middle.rsplit(".", 2)
        if len(parts) != 3 or parts[0] != host or not parts[1].isdigit():
            continue
        if _alive(int(parts[1])):
            continue
        try:
            tmp.unlink()
            removed.append(tmp)
        except OSError:  # gone already (another cleaner), or not ours to remove
            pass
    return removed


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb"):
    """Yield a file beside `path`; on a clean exit fsync it and rename it over `path`.

    On any error the temporary file is removed and `path` is left as it was.
    The file gets the permissions a plain open() would give (mkstemp's are 0600).
    Temp files that killed writers of `path` left behind are removed first.
    """
    path = Path(path)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_host()}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
