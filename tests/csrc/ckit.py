"""Build one of csrc/'s C tests with a plain C compiler and run it (the tests of tests/csrc)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

CSRC = Path(__file__).resolve().parents[2] / "csrc"
CC = shutil.which("cc")


def build_and_run(tmp_path: Path, sources: list[str], flags=()) -> str:
    """cc -std=c99 -O2 -Wall -Wextra -Werror [flags] csrc/<sources> -lm, run: its stdout. Asserts
    that it builds without even a warning and exits 0."""
    exe = tmp_path / Path(sources[-1]).stem
    cmd = [CC, "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", *flags, *(str(CSRC / s) for s in sources),
           "-lm", "-o", str(exe)]
    built = subprocess.run(cmd, capture_output=True, text=True)
    assert built.returncode == 0 and built.stderr == "", f"{' '.join(cmd)}\n{built.stdout}{built.stderr}"
    ran = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    return ran.stdout
