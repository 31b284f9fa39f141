"""csrc/int8_step.c builds and passes its own C test with a plain C compiler: with each of its
kernels (AVX-512 VNNI, AVX2, plain C), on csrc/pool.c's threads and without them."""

from __future__ import annotations

import re

import pytest
from ckit import CC, build_and_run

pytestmark = pytest.mark.skipif(CC is None, reason="no C compiler (cc) on PATH")


@pytest.mark.parametrize(
    "flags, kernel",
    [([], None), (["-DCHARGEN_NO_AVX512"], None), (["-DCHARGEN_NO_AVX2"], "c"), (["-DCHARGEN_NO_THREADS"], None)],
    ids=["dispatch", "no-avx512", "no-avx2", "no-threads"],
)
def test_c_int8_step(tmp_path, flags, kernel):
    out = build_and_run(tmp_path, ["int8_step.c", "pool.c", "gru_gates.c", "test_int8_step.c"], ["-pthread", *flags])
    m = re.search(r"test_int8_step: (\d+) checks, (\d+) failed \(kernel (\w+), threads (\d)\)", out)
    assert m and int(m.group(2)) == 0 and int(m.group(1)) >= 40, out
    if kernel:
        assert m.group(3) == kernel
    assert m.group(4) == ("0" if "-DCHARGEN_NO_THREADS" in flags else "1")
