"""csrc/gru_train.c builds and passes its own C test with a plain C compiler, with
without the AVX-512 build, and without either."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

CSRC = Path(__file__).resolve().parents[2] / "csrc"
CC = shutil.which("cc")

pytestmark = pytest.mark.skipif(CC is None, reason="no C compiler (cc) on PATH")


@pytest.mark.parametrize(
    "flags", [[], ["-DCHARGEN_NO_AVX512"], ["-DCHARGEN_NO_AVX2"]], ids=["dispatch", "no-avx512", "no-avx2"]
)
def test_c_gru_kernels(tmp_path, flags):
    exe = tmp_path / "test_gru_train"
    cmd = [CC, "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", *flags,
           str(CSRC / "gru_train.c"), str(CSRC / "test_gru_train.c"), "-lm", "-o", str(exe)]
    built = subprocess.run(cmd, capture_output=True, text=True)
    assert built.returncode == 0 and built.stderr == "", f"{' '.join(cmd)}\n{built.stdout}{built.stderr}"
    ran = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    m = re.search(r"test_gru_train: (\d+) checks, (\d+) failed", ran.stdout)
    assert m and int(m.group(2)) == 0 and int(m.group(1)) >= 8, ran.stdout
