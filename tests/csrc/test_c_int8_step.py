"""csrc/'s int8 layers (int8_matrix.c, int8_matvec.c, int8_gemm.c, int8_step.c) build and pass their
own C test with a plain C compiler: with each of the matrix-vector kernels this CPU runs (AVX-512
VNNI, AVX2, plain C), on csrc/pool.c's threads and without them; and every packed kernel (AMX,
AVX-512 VNNI, AVX2, C) on any x86 CPU, built on SIMDe's and csrc/amx_emulate.h's plain-C versions
of their instructions (CHARGEN_X86_EMULATE), so that their loops and tails are held to the plain
loops bit for bit on CPUs without AMX or VNNI too."""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

import pytest
from ckit import CC, build_and_run

pytestmark = pytest.mark.skipif(CC is None, reason="no C compiler (cc) on PATH")

SOURCES = ["int8_matrix.c", "int8_matvec.c", "int8_gemm.c", "int8_step.c", "pool.c", "gru_gates.c", "test_int8_step.c"]
SIMDE = Path("/usr/include/simde/x86/avx512/dpbusd.h")
SUMMARY = (r"test_int8_step: (\d+) checks, (\d+) failed "
           r"\(kernel ([\w-]+), threads (\d), matvec ([\w,-]*), packed ([\w,-]*)\)")


@pytest.mark.parametrize(
    "flags, kernel",
    [([], None), (["-DCHARGEN_NO_AVX512"], None), (["-DCHARGEN_NO_AVX2"], "c"), (["-DCHARGEN_NO_THREADS"], None)],
    ids=["dispatch", "no-avx512", "no-avx2", "no-threads"],
)
def test_c_int8_step(tmp_path, flags, kernel):
    out = build_and_run(tmp_path, SOURCES, ["-pthread", *flags])
    m = re.search(SUMMARY, out)
    assert m and int(m.group(2)) == 0 and int(m.group(1)) >= 60, out
    if kernel:
        assert m.group(3) == kernel
    assert m.group(4) == ("0" if "-DCHARGEN_NO_THREADS" in flags else "1")
    matvec = m.group(5).split(",")
    assert matvec[0] == m.group(3) and matvec[-1] == "c", out  # the picked kernel first, plain C always
    assert "c" in m.group(6).split(","), out  # the packed layout's plain loops run everywhere


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="the emulated kernels are x86's")
def test_c_int8_packed_kernels_emulated(tmp_path):
    """AMX and AVX-512 VNNI run here whatever the CPU: each against the plain loops, bit for bit,
    alone and as the step's product."""
    if not SIMDE.exists():
        assert not os.environ.get("CI"), f"{SIMDE} is missing: apt-get install libsimde-dev (.ci/run does)"
        pytest.skip("SIMDe is not installed: apt-get install libsimde-dev")
    out = build_and_run(tmp_path, SOURCES, ["-pthread", "-DCHARGEN_X86_EMULATE", "-Wno-psabi"])
    m = re.search(SUMMARY, out)
    assert m and int(m.group(2)) == 0 and int(m.group(1)) >= 100, out
    assert m.group(6).split(",") == ["amx", "avx512vnni", "avx2", "c"], out
