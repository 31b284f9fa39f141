"""chargen.runtime.Sampler: the Cython wrapper of the C sampler.

The exactness tests compare with an independent numpy reference (float64 softmax, full
sorts) and a pure-Python xoshiro256**/splitmix64, so they do not trust the C code.
"""

from __future__ import annotations

import math
import pickle
import threading
import time
import zlib

import numpy as np
import pytest

from chargen.runtime import Sampler, SamplerError

M64 = (1 << 64) - 1
LOG2E = 1.4426950408889634


# ---------------------------------------------------------------- references
def splitmix64(x: int) -> tuple[int, int]:
    x = (x + 0x9E3779B97F4A7C15) & M64
    z = x
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return x, z ^ (z >> 31)


def rotl(x: int, k: int) -> int:
    return ((x << k) | (x >> (64 - k))) & M64


class Xoshiro:
    """Reference xoshiro256** seeded as the header documents: stream s of seed S takes
    splitmix64 outputs 4s .. 4s+3 of the sequence started at S."""

    def __init__(self, seed: int, stream: int = 0):
        x = seed
        for _ in range(4 * stream):
            x, _ = splitmix64(x)
        self.s = []
        for _ in range(4):
            x, z = splitmix64(x)
            self.s.append(z)

    def next(self) -> int:
        s = self.s
        result = (rotl((s[1] * 5) & M64, 7) * 9) & M64
        t = (s[1] << 17) & M64
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = rotl(s[3], 45)
        return result

    def uniform(self) -> float:
        return (self.next() >> 11) * 2.0**-53

    def state_bytes(self) -> bytes:
        return b"".join(w.to_bytes(8, "little") for w in self.s)


def ref_probs(x, temperature=1.0, top_k=0, top_p=1.0) -> np.ndarray:
    """The documented distribution, in float64 with full sorts."""
    x = np.asarray(x, np.float64)
    V = len(x)
    m = x.max()
    with np.errstate(invalid="ignore"):
        t = (x - m) / temperature
    w = np.where(np.isneginf(x) | (t * LOG2E < -124), 0.0, np.exp(np.where(np.isneginf(x), 0, t)))
    order = np.lexsort((np.arange(V), -w))  # heaviest first, ties to the lower id
    keep = order[:top_k] if 0 < top_k < V else order
    if top_p < 1:
        c = np.cumsum(w[keep] / w[keep].sum())
        keep = keep[: int(np.searchsorted(c, top_p)) + 1]  # smallest prefix reaching top_p
    out = np.zeros(V)
    out[keep] = w[keep] / w[keep].sum()
    return out


def chi2_sf(stat: float, df: int) -> float:
    """Chi-square upper tail Q(df/2, stat/2): series / continued fraction (Numerical Recipes),
    so that the tests need no scipy."""
    a, x = df / 2.0, stat / 2.0
    if x <= 0:
        return 1.0
    lg = a * math.log(x) - x - math.lgamma(a)
    if x < a + 1:  # P by its series
        term = total = 1.0 / a
        ap = a
        for _ in range(100_000):
            ap += 1
            term *= x / ap
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return max(0.0, 1.0 - total * math.exp(lg))
    b = x + 1 - a  # Q by Lentz's continued fraction
    c = 1 / 1e-300
    d = 1 / b
    h = d
    for i in range(1, 100_000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = 1e-300 if abs(d) < 1e-300 else d
        c = b + an / c
        c = 1e-300 if abs(c) < 1e-300 else c
        d = 1 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-15:
            break
    return math.exp(lg) * h


def chi2_pvalue(ids: np.ndarray, probs: np.ndarray) -> float:
    """Goodness of fit of the draws; bins expected under 5 are pooled.  A draw of an id
    of probability 0 fails outright."""
    n = len(ids)
    counts = np.bincount(ids, minlength=len(probs)).astype(np.float64)
    assert counts[probs == 0].sum() == 0, "drew an id of probability 0"
    exp = probs * n
    big = exp >= 5
    obs_bins = list(counts[big])
    exp_bins = list(exp[big])
    small = (~big) & (probs > 0)
    if small.any():
        obs_bins.append(counts[small].sum())
        exp_bins.append(exp[small].sum())
    if len(exp_bins) < 2:
        return 1.0
    o, e = np.array(obs_bins), np.array(exp_bins)
    return chi2_sf(float(((o - e) ** 2 / e).sum()), len(e) - 1)


@pytest.fixture(scope="module")
def logits65() -> np.ndarray:
    return (np.random.default_rng(65).standard_normal(65) * 2).astype(np.float32)


# ---------------------------------------------------------------- the reference helpers
def test_chi2_sf_matches_known_values():
    assert chi2_sf(3.841458820694124, 1) == pytest.approx(0.05, rel=1e-6)
    assert chi2_sf(124.342, 100) == pytest.approx(0.05, rel=1e-3)
    assert chi2_sf(2.0, 2) == pytest.approx(math.exp(-1), rel=1e-9)
    scipy_stats = pytest.importorskip("scipy.stats")
    for stat, df in [(10.0, 4), (64.0, 64), (5100.0, 4999), (4800.0, 4999), (90.0, 50)]:
        assert chi2_sf(stat, df) == pytest.approx(scipy_stats.chi2.sf(stat, df), rel=1e-6)


# ---------------------------------------------------------------- RNG and determinism
def test_streams_are_reference_xoshiro256_starstar():
    s = Sampler(2024)
    version, seed, streams = s.get_state()
    assert (version, seed) == (1, 2024)
    assert streams == Xoshiro(2024, 0).state_bytes()
    s.sample_batch(np.zeros((3, 5), np.float32), temperature=0.0)  # greedy: no draw
    assert s.get_state()[2] == b"".join(Xoshiro(2024, b).state_bytes() for b in range(3))


def test_draw_is_the_inverse_cdf_at_one_53_bit_uniform(logits65):
    """id = the first id whose cumulative probability exceeds u, with u the reference
    generator's next uniform; cuts keep the ids in increasing order."""
    for temperature, top_k, top_p in [(1.0, 0, 1.0), (0.7, 10, 1.0), (1.3, 0, 0.8), (1.0, 30, 0.6)]:
        s, ref = Sampler(99), Xoshiro(99)
        c = np.cumsum(ref_probs(logits65, temperature, top_k, top_p))
        checked = 0
        for _ in range(2000):
            got = s.sample(logits65, temperature, top_k, top_p)
            u = ref.uniform()
            if np.min(np.abs(c - u)) < 1e-7:  # too close to a boundary to call
                continue
            assert got == int(np.searchsorted(c, u, side="right")), (temperature, top_k, top_p)
            checked += 1
        assert checked > 1900
        assert s.get_state()[2] == ref.state_bytes()  # one 64-bit output per draw


def test_pinned_ids():
    """Same seed, same logits, same ids: on every platform and build, forever."""
    x = ((np.arange(65) * 13) % 97 - 33).astype(np.float32) / np.float32(9.0)
    s = Sampler(42)
    assert [s.sample(x) for _ in range(16)] == [7, 28, 44, 59, 59, 52, 51, 52, 52, 37, 44, 22, 52, 22, 50, 52]
    assert [s.sample(x, 0.8, 20, 0.9) for _ in range(16)] == [
        44, 52, 51, 51, 7, 14, 37, 37, 22, 37, 29, 52, 44, 22, 36, 44]


def test_same_seed_same_ids_different_seeds_differ(logits65):
    a = [Sampler(7).sample_n(logits65, 300).tolist() for _ in range(2)]
    assert a[0] == a[1]
    b = Sampler(8).sample_n(logits65, 300).tolist()
    assert b != a[0]
    s1, s2 = Sampler(7), Sampler(7)
    assert [s1.sample(logits65, 0.9, 20, 0.95) for _ in range(100)] == [
        s2.sample(logits65, 0.9, 20, 0.95) for _ in range(100)]


def test_seed_none_is_random_and_exposed():
    a, b = Sampler(), Sampler(None)
    assert 0 <= a.seed < 2**64 and isinstance(a.seed, int)
    assert a.seed != b.seed
    assert Sampler(a.seed).get_state() == a.get_state()
    assert Sampler(np.uint64(2**64 - 1)).seed == 2**64 - 1
    assert repr(Sampler(5)) == "Sampler(seed=5)"


@pytest.mark.parametrize("bad", [-1, 2**64, 1.5, "7"])
def test_bad_seed(bad):
    with pytest.raises((TypeError, ValueError)):
        Sampler(bad)


# ---------------------------------------------------------------- state
def test_state_save_restore_continues_bit_exactly(logits65):
    s = Sampler(11)
    X = np.tile(logits65, (4, 1))
    for _ in range(5):
        s.sample(logits65)
        s.sample_batch(X, 0.8, 0, 0.9)
    state = s.get_state()
    assert isinstance(state, tuple) and pickle.loads(pickle.dumps(state)) == state
    after = [s.sample(logits65), s.sample_batch(X).tolist(), s.sample_n(logits65, 50, 1.2).tolist()]
    s.set_state(state)
    again = [s.sample(logits65), s.sample_batch(X).tolist(), s.sample_n(logits65, 50, 1.2).tolist()]
    assert after == again
    fresh = Sampler(0)  # restore into another Sampler: seed and streams travel
    fresh.set_state(state)
    assert fresh.seed == 11 and fresh.n_streams == 4
    assert [fresh.sample(logits65), fresh.sample_batch(X).tolist(),
            fresh.sample_n(logits65, 50, 1.2).tolist()] == after
    # streams made later derive from the restored seed, as they would have
    big = np.tile(logits65, (9, 1))
    s.set_state(state)
    fresh.set_state(state)
    assert s.sample_batch(big).tolist() == fresh.sample_batch(big).tolist()


def test_pickle_and_copy(logits65):
    import copy

    s = Sampler(3)
    s.sample_n(logits65, 10)
    for clone in (pickle.loads(pickle.dumps(s)), copy.deepcopy(s)):
        assert clone.seed == 3
        assert clone.sample_n(logits65, 20).tolist() == Sampler(3).sample_n(logits65, 30)[10:].tolist()


@pytest.mark.parametrize("bad", [None, (1, 2), (2, 0, bytes(32)), (1, 0, b""), (1, 0, bytes(31)),
                                 (1, 0, bytes(32)), (1, -5, b"\x01" * 32), (1, 0, "x" * 32)])
def test_bad_state(bad):
    s = Sampler(1)
    before = s.get_state()
    with pytest.raises((TypeError, ValueError)):
        s.set_state(bad)
    assert s.get_state() == before


# ---------------------------------------------------------------- semantics
def test_greedy_ties_lowest_id_and_no_draw():
    x = np.array([1.0, 3.0, -np.inf, 3.0, 2.0, 3.0], np.float32)
    s = Sampler(5)
    before = s.get_state()
    assert s.sample(x, temperature=0.0) == 1
    assert s.sample(x, 0.0, 3, 0.2) == 1  # cuts play no part in greedy
    assert s.sample(np.array([-np.inf, -np.inf, -50.0], np.float32), 0.0) == 2
    assert s.sample_batch(np.stack([x, x[::-1].copy()]), 0.0).tolist() == [1, 0]
    # greedy consumes no randomness (the batch only made stream 1)
    assert s.get_state()[2] == before[2] + Xoshiro(5, 1).state_bytes()
    assert s.sample(x, 2.0, top_k=1) == 1  # top_k 1 is the argmax, ties to the lowest id
    assert s.get_state()[2][:32] != before[2]


def test_top_k_1_is_always_the_argmax(logits65):
    ids = Sampler(1).sample_n(logits65, 20_000, temperature=5.0, top_k=1)
    assert set(ids.tolist()) == {int(np.argmax(logits65))}


def test_minus_inf_is_masked(logits65):
    x = logits65.copy()
    masked = [0, 7, int(np.argmax(x)), 64]
    x[masked] = -np.inf
    s = Sampler(2)
    for kw in ({}, {"temperature": 30.0}, {"top_k": 62}, {"top_p": 0.999}, {"top_k": 64, "top_p": 0.99}):
        ids = s.sample_n(x, 50_000, **kw)
        assert not np.isin(ids, masked).any(), kw
    only = np.full(65, -np.inf, np.float32)
    only[17] = -1e30
    assert set(s.sample_n(only, 1000).tolist()) == {17}


def test_probs_match_the_reference_and_cuts_are_exact(logits65):
    s = Sampler(0)
    for T, k, p in [(1.0, 0, 1.0), (0.5, 0, 1.0), (1.0, 10, 1.0), (1.0, 0, 0.5), (0.8, 20, 0.9), (1.0, 1, 1.0)]:
        got = s.probs(logits65, T, k, p)
        ref = ref_probs(logits65, T, k, p)
        assert got.sum() == pytest.approx(1.0, abs=1e-12)
        np.testing.assert_allclose(got, ref, atol=1e-6, rtol=1e-5)
        assert np.array_equal(got > 0, ref > 0), (T, k, p)
    # top_k 1: all the mass on the argmax
    assert s.probs(logits65, 1.0, 1).tolist() == np.eye(65)[np.argmax(logits65)].tolist()
    # top_p 0.5: exactly the smallest prefix of the sorted probabilities that reaches 0.5
    full = ref_probs(logits65)
    order = np.argsort(-full, kind="stable")
    m = int(np.argmax(np.cumsum(full[order]) >= 0.5)) + 1
    assert set(np.flatnonzero(s.probs(logits65, 1.0, 0, 0.5))) == set(order[:m].tolist())
    assert full[order[: m - 1]].sum() < 0.5 <= full[order[:m]].sum()
    # top_k 10: exactly the 10 largest logits, renormalised
    top = s.probs(logits65, 1.0, 10)
    assert set(np.flatnonzero(top)) == set(np.argsort(-logits65)[:10].tolist())
    # top_k <= 0 or >= V and top_p >= 1 are no cut
    for k, p in [(0, 1.0), (-3, 1.0), (65, 1.0), (10**12, 7.0)]:
        assert np.array_equal(s.probs(logits65, 1.0, k, p), s.probs(logits65))


def test_temperature_is_a_limit_not_a_cliff():
    x = np.array([0.0, 1.0, 1.0 - 1e-6], np.float32)
    s = Sampler(0)
    assert s.probs(x, 1e-300).tolist() == [0.0, 1.0, 0.0]  # tiny: (almost) greedy, no error
    np.testing.assert_allclose(s.probs(x, 1e30), [1 / 3] * 3, rtol=1e-6)  # huge: uniform


# ---------------------------------------------------------------- exact distribution
CASES = [
    ("V=65 T=1", 65, 2.0, 1.0, 0, 1.0),
    ("V=65 peaked", 65, 6.0, 1.0, 0, 1.0),
    ("V=65 flat", 65, 0.05, 1.0, 0, 1.0),
    ("V=65 top_k=1", 65, 2.0, 1.0, 1, 1.0),
    ("V=65 top_k=10 T=0.7", 65, 2.0, 0.7, 10, 1.0),
    ("V=65 top_p=0.5", 65, 2.0, 1.0, 0, 0.5),
    ("V=65 top_k=30 top_p=0.9", 65, 2.0, 1.2, 30, 0.9),
    ("V=5000 flat-ish", 5000, 0.3, 1.0, 0, 1.0),
    ("V=5000 peaked", 5000, 4.0, 1.0, 0, 1.0),
    ("V=5000 top_p=0.5", 5000, 1.0, 1.0, 0, 0.5),
    ("V=5000 top_k=200 top_p=0.8", 5000, 1.0, 1.0, 200, 0.8),
]


@pytest.mark.parametrize("name,V,scale,T,k,p", CASES, ids=[c[0] for c in CASES])
def test_one_million_draws_fit(name, V, scale, T, k, p):
    x = (np.random.default_rng(V + int(scale * 100)).standard_normal(V) * scale).astype(np.float32)
    probs = ref_probs(x, T, k, p)
    # a fixed seed per case (str's hash() changes with every process: a 1-in-1000 chance per case
    # and run of a false alarm at this p-value)
    ids = Sampler(zlib.crc32(name.encode())).sample_n(x, 1_000_000, T, k, p)
    assert chi2_pvalue(ids, probs) > 1e-3
    if k == 1:
        assert (ids == np.argmax(x)).all()


def test_one_million_batch_draws_fit(logits65):
    """The same through sample_batch: 1000 rows (streams) x 1000 calls."""
    X = np.tile(logits65, (1000, 1))
    s = Sampler(77)
    out = np.empty(1000, np.int64)
    counts = np.zeros(65, np.int64)
    for _ in range(1000):
        counts += np.bincount(s.sample_batch(X, 0.9, 0, 0.95, out=out), minlength=65)
    ids = np.repeat(np.arange(65), counts)
    assert chi2_pvalue(ids, ref_probs(logits65, 0.9, 0, 0.95)) > 1e-3


# ---------------------------------------------------------------- batch
def test_batch_row0_is_sample_and_rows_are_independent(logits65):
    X = np.tile(logits65, (6, 1))
    a, b = Sampler(4), Sampler(4)
    for _ in range(30):
        row = a.sample_batch(X[:1], 1.1, 20, 0.95)
        assert row.dtype == np.int64 and row.shape == (1,)
        assert row[0] == b.sample(logits65, 1.1, 20, 0.95)
    # row b uses stream b whatever the other rows hold
    s1, s2 = Sampler(9), Sampler(9)
    Y = X.copy()
    Y[2] = np.linspace(-3, 3, 65, dtype=np.float32)
    Y[4, 10] = 8.0
    ids1 = np.array([s1.sample_batch(X) for _ in range(40)])
    ids2 = np.array([s2.sample_batch(Y) for _ in range(40)])
    same = [0, 1, 3, 5]
    assert np.array_equal(ids1[:, same], ids2[:, same])
    # identical rows, different streams: different sequences
    assert len({tuple(ids1[:, r]) for r in range(6)}) == 6


def test_batch_streams_match_single_stream_samplers(logits65):
    """Stream b of a batch is reproducible: the b-th stream state equals the reference."""
    X = np.tile(logits65, (5, 1))
    s = Sampler(123)
    for _ in range(3):
        s.sample_batch(X)
    refs = [Xoshiro(123, b) for b in range(5)]
    for r in refs:
        for _ in range(3):
            r.next()
    assert s.get_state()[2] == b"".join(r.state_bytes() for r in refs)


def test_batch_out_and_strided_rows(logits65):
    wide = np.random.default_rng(1).standard_normal((7, 80)).astype(np.float32)
    view = wide[:, 5:70]  # rows strided, each contiguous: used in place
    out = np.full(7, -1, np.int64)
    r = Sampler(6).sample_batch(view, out=out)
    assert r is out and (out >= 0).all()
    assert out.tolist() == Sampler(6).sample_batch(np.ascontiguousarray(view)).tolist()
    cols = wide[:, ::2]  # columns strided: copied
    assert Sampler(6).sample_batch(cols).tolist() == Sampler(6).sample_batch(cols.copy()).tolist()
    assert Sampler(6).sample_batch(np.zeros((0, 65), np.float32)).shape == (0,)
    with pytest.raises(TypeError):
        Sampler(6).sample_batch(view, out=np.zeros(7, np.int32))
    with pytest.raises(SamplerError):
        Sampler(6).sample_batch(view, out=np.zeros(6, np.int64))


# ---------------------------------------------------------------- errors
def test_value_errors_name_the_problem(logits65):
    s = Sampler(0)
    x = logits65.copy()
    x[3] = np.nan
    with pytest.raises(SamplerError, match="NaN"):
        s.sample(x)
    with pytest.raises(SamplerError, match="NaN"):
        s.sample(x, temperature=0.0)
    x[3] = np.inf
    with pytest.raises(SamplerError, match=r"\+inf"):
        s.sample(x)
    with pytest.raises(SamplerError, match="all -inf"):
        s.sample(np.full(65, -np.inf, np.float32))
    for bad_t in (-0.5, float("nan"), float("inf")):
        with pytest.raises(SamplerError, match="temperature"):
            s.sample(logits65, temperature=bad_t)
    for bad_p in (0.0, -0.1, float("nan")):
        with pytest.raises(SamplerError, match="top_p"):
            s.sample(logits65, top_p=bad_p)
    with pytest.raises(SamplerError, match="top_p"):
        s.sample(logits65, temperature=0.0, top_p=0.0)  # validated even for greedy
    assert issubclass(SamplerError, ValueError)


def test_shape_and_type_errors(logits65):
    s = Sampler(0)
    with pytest.raises(SamplerError, match="1-D"):
        s.sample(np.tile(logits65, (2, 1)))
    with pytest.raises(SamplerError, match="1-D"):
        s.sample(np.float32(1.0))
    with pytest.raises(SamplerError, match="empty"):
        s.sample(np.zeros(0, np.float32))
    with pytest.raises(SamplerError, match="2-D"):
        s.sample_batch(logits65)
    with pytest.raises(SamplerError, match="2-D"):
        s.sample_batch(np.zeros((2, 3, 4), np.float32))
    with pytest.raises(SamplerError, match="empty"):
        s.sample_batch(np.zeros((3, 0), np.float32))
    for bad in (np.arange(65), np.ones(65, bool), np.ones(65, np.complex64), "abc", [1, 2, 3], None):
        with pytest.raises(TypeError):
            s.sample(bad)
    with pytest.raises(TypeError):
        s.sample(logits65, top_k=2.5)
    with pytest.raises(SamplerError):
        s.sample_n(logits65, -1)


def test_batch_error_names_the_row_and_consumes_nothing(logits65):
    X = np.tile(logits65, (6, 1))
    X[3, 10] = np.nan
    s = Sampler(5)
    s.sample_batch(np.tile(logits65, (6, 1)))
    before = s.get_state()
    with pytest.raises(SamplerError, match="row 3 contains NaN"):
        s.sample_batch(X)
    X[3, 10] = 0
    X[4] = -np.inf
    with pytest.raises(SamplerError, match="row 4 is all -inf"):
        s.sample_batch(X, 0.7, 5, 0.9)
    assert s.get_state() == before


def test_other_float_dtypes_and_layouts_are_converted(logits65):
    ref = Sampler(1).sample_n(logits65, 5, 0.9)
    for x in (logits65.astype(np.float64), logits65.tolist(), logits65.astype(np.float16).astype(np.float32)):
        s = Sampler(1)
        got = [s.sample(x, 0.9) for _ in range(5)]
        if isinstance(x, np.ndarray) and x.dtype == np.float32:
            continue  # float16 round trip changes the logits: only checks it runs
        assert got == ref.tolist()
    strided = np.repeat(logits65, 2)[::2]
    assert not strided.flags.c_contiguous
    assert Sampler(1).sample(strided) == Sampler(1).sample(logits65)
    assert Sampler(1).sample(logits65.astype(np.float16)) in range(65)


def test_vocabulary_sizes(logits65):
    s = Sampler(0)
    assert s.sample(np.array([3.0], np.float32)) == 0
    big = np.random.default_rng(3).standard_normal(200_000).astype(np.float32)
    ids = s.sample_n(big, 100, 1.0, 50, 0.9)  # scratch grows
    assert ((ids >= 0) & (ids < 200_000)).all()
    assert set(ids.tolist()) <= set(np.argsort(-big)[:50].tolist())
    assert s.sample(logits65) in range(65)  # and smaller rows still work


def test_concurrent_use_of_one_sampler_is_refused(logits65):
    s = Sampler(0)
    big = np.random.default_rng(0).standard_normal(5000).astype(np.float32)
    worker = threading.Thread(target=s.sample_n, args=(big, 3_000_000))
    worker.start()
    refused = False
    while worker.is_alive() and not refused:
        try:
            s.sample(logits65)
        except RuntimeError as e:
            refused = "thread" in str(e)
        time.sleep(0.001)
    # while it is busy, nothing may grow or replace its buffers under the C code
    for call in (lambda: s.sample(np.zeros(100_000, np.float32)),
                 lambda: s.sample_batch(np.zeros((300, 65), np.float32)),
                 lambda: s.set_state(Sampler(1).get_state()),
                 lambda: s.probs(np.zeros(70_000, np.float32))):
        try:
            call()
        except RuntimeError:
            pass
    worker.join()
    assert refused
    assert s.sample(logits65) in range(65)  # usable again afterwards
