"""csrc/ builds and tests alone with a plain C compiler, and agrees bit for bit with the
Cython build of the same sources."""

from __future__ import annotations

import re
from pathlib import Path

import ckit
import numpy as np
import pytest
from ckit import CC

pytestmark = pytest.mark.skipif(CC is None, reason="no C compiler (cc) on PATH")


def build_and_run(tmp_path: Path, *extra: str) -> str:
    return ckit.build_and_run(tmp_path, ["sampler.c", "test_sampler.c"], extra)


@pytest.fixture(scope="module")
def c_output(tmp_path_factory) -> str:
    return build_and_run(tmp_path_factory.mktemp("csampler"))


def test_c_tests_pass(c_output):
    assert "FAIL" not in c_output
    m = re.search(r"test_sampler: (\d+) checks, (\d+) failed", c_output)
    assert m, c_output
    assert int(m.group(2)) == 0
    assert int(m.group(1)) > 100_000  # includes the per-draw checks


def test_c_chi_square_lines(c_output):
    """The C suite draws 10^6 ids per setting and checks the fit; check it really did."""
    rows = re.findall(r"chi2 (.+?)\s+support\s+(\d+)\s+max\|p - ref\| (\S+)\s+p-value (\S+)", c_output)
    names = {name.strip() for name, *_ in rows}
    for needed in ("V=65 peaked", "V=65 flat", "V=65 top_k=1", "V=65 top_p=0.5",
                   "V=5000 flat-ish", "V=5000 top_p=0.5"):
        assert needed in names, c_output
    for name, support, maxdiff, pval in rows:
        assert float(pval) > 1e-3, name
        assert float(maxdiff) < 1e-6, name
    supports = {name.strip(): int(s) for name, s, *_ in rows}
    assert supports["V=65 top_k=1"] == 1
    assert supports["V=65 top_k=10"] == 10


def test_c_without_avx2_gives_the_same_bits(c_output, tmp_path):
    """The AVX2 build of the vector loops must not change a single bit."""
    plain = build_and_run(tmp_path, "-DCHARGEN_NO_AVX2")
    golden = [line for line in c_output.splitlines() if line.startswith("golden")]
    assert len(golden) == 3
    assert golden == [line for line in plain.splitlines() if line.startswith("golden")]


# ---------------------------------------------------------------- C == Cython
def make_logits(V: int, mult: int, div: float) -> np.ndarray:
    """The C test's make_logits: one correctly rounded float32 division each."""
    num = ((np.arange(V) * mult) % 97 - 33).astype(np.float32)
    return num / np.float32(div)


def fnv1a(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def test_cython_build_matches_c_build(c_output):
    sampler = pytest.importorskip("chargen.runtime._sampler")
    lines = {line.split(":")[0]: line.split(":")[1].split() for line in c_output.splitlines()
             if line.startswith("golden")}
    x = make_logits(65, 13, 9.0)
    s = sampler.Sampler(42)
    ids1 = [s.sample(x, 1.0) for _ in range(16)]
    ids2 = [s.sample(x, 0.8, 20, 0.9) for _ in range(16)]
    assert ids1 == [int(v) for v in lines["golden T=1"]]
    assert ids2 == [int(v) for v in lines["golden T=0.8 k=20 p=0.9"]]
    # every bit of the probabilities (the -O2 cc build against the -O3 extension)
    w = make_logits(5000, 31, 100.0)
    probs = np.concatenate([s.probs(x, 1.0), s.probs(x, 0.8, 20, 0.9), s.probs(w, 0.7)])
    assert f"{fnv1a(probs.tobytes()):016x}" == lines["golden probs fnv1a"][0]
