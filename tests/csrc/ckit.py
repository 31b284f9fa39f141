"""Build one of csrc/'s C tests with a plain C compiler and run it (the tests of tests/csrc); the
same for another CPU: a cross compiler and the emulator that runs its programs."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

CSRC = Path(__file__).resolve().parents[2] / "csrc"
CC = shutil.which("cc")


def build(tmp_path: Path, sources: list[str], flags=(), *, cc: str | None = None, csrc: Path = CSRC) -> Path:
    """cc -std=c99 -O2 -Wall -Wextra -Werror [flags] csrc/<sources> -lm: the program (csrc: another
    copy of the folder, e.g. one with a fault put in). Asserts that it builds without even a
    warning (later flags win: -O3 after -O2)."""
    exe = tmp_path / Path(sources[-1]).stem
    cmd = [cc or CC, "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", *flags,
           *(str(csrc / s) for s in sources), "-lm", "-o", str(exe)]
    built = subprocess.run(cmd, capture_output=True, text=True)
    assert built.returncode == 0 and built.stderr == "", f"{' '.join(cmd)}\n{built.stdout}{built.stderr}"
    return exe


def run(exe: Path, runner=(), timeout: float = 120) -> subprocess.CompletedProcess:
    """exe, under `runner` (an emulator's command line) if given."""
    return subprocess.run([*runner, str(exe)], capture_output=True, text=True, timeout=timeout)


def build_and_run(tmp_path: Path, sources: list[str], flags=(), *, cc: str | None = None, runner=(),
                  timeout: float = 120) -> str:
    """build(), then run it (under `runner`, e.g. qemu for a cross build): its stdout. Asserts that
    it builds without even a warning and exits 0."""
    ran = run(build(tmp_path, sources, flags, cc=cc), runner, timeout)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    return ran.stdout
