"""csrc/gru_train.c (with gru_gates.c) builds and passes its own C test with a plain C compiler, with
without the AVX-512 build, and without either."""

from __future__ import annotations

import re

import pytest
from ckit import CC, build_and_run

pytestmark = pytest.mark.skipif(CC is None, reason="no C compiler (cc) on PATH")


@pytest.mark.parametrize(
    "flags", [[], ["-DCHARGEN_NO_AVX512"], ["-DCHARGEN_NO_AVX2"]], ids=["dispatch", "no-avx512", "no-avx2"]
)
def test_c_gru_kernels(tmp_path, flags):
    out = build_and_run(tmp_path, ["gru_gates.c", "gru_train.c", "test_gru_train.c"], flags)
    m = re.search(r"test_gru_train: (\d+) checks, (\d+) failed", out)
    assert m and int(m.group(2)) == 0 and int(m.group(1)) >= 8, out
