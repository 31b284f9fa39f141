"""csrc/int8_step.c builds and passes its own C test with a plain C compiler: with each of its
kernels (AVX-512 VNNI, AVX2, plain C) and with OpenMP."""

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
    "flags, kernel",
    [([], None), (["-DCHARGEN_NO_AVX512"], None), (["-DCHARGEN_NO_AVX2"], "c"), (["-fopenmp"], None)],
    ids=["dispatch", "no-avx512", "no-avx2", "openmp"],
)
def test_c_int8_step(tmp_path, flags, kernel):
    exe = tmp_path / "test_int8_step"
    cmd = [CC, "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", *flags, str(CSRC / "int8_step.c"),
           str(CSRC / "gru_train.c"), str(CSRC / "test_int8_step.c"), "-lm", "-o", str(exe)]
    built = subprocess.run(cmd, capture_output=True, text=True)
    assert built.returncode == 0 and built.stderr == "", f"{' '.join(cmd)}\n{built.stdout}{built.stderr}"
    ran = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    m = re.search(r"test_int8_step: (\d+) checks, (\d+) failed \(kernel (\w+), openmp (\d)\)", ran.stdout)
    assert m and int(m.group(2)) == 0 and int(m.group(1)) >= 40, ran.stdout
    if kernel:
        assert m.group(3) == kernel
    assert m.group(4) == ("1" if "-fopenmp" in flags else "0")
