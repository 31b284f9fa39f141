"""chargen.runtime.Generator on real onnxruntime sessions over real model files."""

from __future__ import annotations

import pickle
import threading

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from chargen.export.graph_variants import random_weights  # noqa: E402

from chargen.export.graph import build_step_graph  # noqa: E402
from chargen.runtime import GenerationOptions, Generator, Model, UnknownCharactersError, Vocab  # noqa: E402

from modelkit import ALPHABET  # noqa: E402  (tiny-shakespeare's 65 characters)
E, H, L = 16, 32, 2


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    vocab = Vocab.from_text(ALPHABET)
    config = dict(vocab_size=len(vocab), embedding_dim=E, hidden_size=H, layers=L, dropout=0.0)
    weights = random_weights(len(vocab), E, H, L, seed=1, head_scale=8, rnn_scale=4)
    path = tmp_path_factory.mktemp("gen") / "tiny.onnx"
    onnx.save(build_step_graph(weights, config, vocab), path)
    return path, weights


@pytest.fixture(scope="module")
def model(tiny):
    # the CPU's contract, bit-exact across batch sizes; test_cuda.py checks the GPU against it
    return Model.load(tiny[0], device="cpu")


def gen(model, batch_size=1, **kw):
    kw.setdefault("seed", 7)
    return Generator(model, GenerationOptions(**kw), batch_size=batch_size)


# ---------------------------------------------------------------- a numpy reference of the step
def reference_step(w, token: int, h: np.ndarray):
    """torch's GRU equations in float64, one stream: (logits [V], h [L, H])."""
    sig = lambda a: 1 / (1 + np.exp(-a))  # noqa: E731
    x = w["embedding.weight"][token].astype(np.float64)
    new = []
    for k in range(L):
        gi = w[f"rnn.weight_ih_l{k}"] @ x + w[f"rnn.bias_ih_l{k}"]
        gh = w[f"rnn.weight_hh_l{k}"] @ h[k] + w[f"rnn.bias_hh_l{k}"]
        r = sig(gi[:H] + gh[:H])
        z = sig(gi[H : 2 * H] + gh[H : 2 * H])
        n = np.tanh(gi[2 * H :] + r * gh[2 * H :])
        x = (1 - z) * n + z * h[k]
        new.append(x)
    return w["head.weight"] @ x + w["head.bias"], np.stack(new)


def test_greedy_equals_numpy_reference_rollout(tiny, model):
    """temperature 0 is the argmax of the reference GRU's logits, 200 steps on."""
    _, w = tiny
    w = {k: v.astype(np.float64) for k, v in w.items()}
    vocab = model.vocab
    start = "ROMEO: "
    h = np.zeros((L, H))
    for c in start:
        logits, h = reference_step(w, vocab.encode(c)[0], h)
    ref, margins = [], []
    for _ in range(200):
        top2 = np.sort(logits)[-2:]
        margins.append(top2[1] - top2[0])
        tok = int(np.argmax(logits))
        ref.append(vocab.chars[tok])
        logits, h = reference_step(w, tok, h)
    assert min(margins) > 1e-4  # no near-tie that float32 rounding could flip
    assert len(set(ref)) > 5  # not a trivial fixed point
    g = gen(model, temperature=0.0, max_length=200)
    assert g.generate(start) == ["".join(ref)]
    # the logits themselves agree with the reference to float32 accuracy
    np.testing.assert_allclose(g.logits[0], logits, rtol=1e-4, atol=1e-4)


def test_determinism_same_seed_same_text(model):
    a = gen(model, seed=123, max_length=300).generate("ROMEO: ")
    b = gen(model, seed=123, max_length=300).generate("ROMEO: ")
    c = gen(model, seed=124, max_length=300).generate("ROMEO: ")
    assert a == b and a != c
    assert len(a[0]) == 300


def test_state_restore_is_bit_exact(model):
    g = gen(model, batch_size=3, seed=99, top_k=20, top_p=0.9, temperature=0.8)
    g.feed(["First", "Second one", "x"])
    for _ in range(50):
        g.step()
    saved = pickle.loads(pickle.dumps(g.state()))
    first = [g.step() for _ in range(100)]
    logits_after = g.logits.copy()
    # in the same generator
    g.restore(saved)
    assert [g.step() for _ in range(100)] == first
    assert np.array_equal(g.logits, logits_after)
    # in a fresh one, even with another seed
    h = gen(model, batch_size=3, seed=1, top_k=20, top_p=0.9, temperature=0.8)
    h.restore(saved)
    assert [h.step() for _ in range(100)] == first
    assert np.array_equal(h.logits, logits_after)
    with pytest.raises(ValueError):
        gen(model, batch_size=2).restore(saved)


def test_batch_streams_equal_single_streams_with_per_stream_seeds(model):
    seeds = [11, 22, 33, 44]
    starts = ["ROMEO: ", "JULIET:\nO ", "A", "To be, or not"]
    opts = dict(temperature=0.9, top_k=30, max_length=150)
    batch = gen(model, batch_size=4, seed=seeds, **opts).generate(starts)
    singles = [gen(model, seed=s, **opts).generate(t)[0] for s, t in zip(seeds, starts)]
    assert batch == singles
    # an int seed S: stream 0 is the batch-1 generator with seed S
    b2 = gen(model, batch_size=3, seed=5, **opts).generate("KING ")
    assert b2[0] == gen(model, seed=5, **opts).generate("KING ")[0]
    assert len(set(b2)) == 3  # streams differ from each other


def test_feed_of_different_lengths_equals_separate_feeds(model):
    starts = ["abc", "a much longer start string", "z"]
    g = gen(model, batch_size=3)
    g.feed(starts)
    for b, s in enumerate(starts):
        single = gen(model)
        single.feed(s)
        assert np.array_equal(g.logits[b], single.logits[0])
        assert np.array_equal(g.state().h[:, b], single.state().h[:, 0])


def test_feeding_again_continues(model):
    """feed, generate, feed more == feeding the whole text at once (greedy, bit-exact)."""
    a = gen(model, temperature=0, max_length=30)
    first = a.generate("ROMEO: ")[0]
    a.feed(" and then")
    cont = "".join(c[0] for c in a)
    b = gen(model, temperature=0, max_length=30)
    assert b.generate("ROMEO: " + first + " and then") == [cont]
    # a per-stream feed where one stream gets nothing leaves that stream as it was
    g = gen(model, batch_size=2, temperature=0, max_length=10)
    g.feed(["Hello", "World"])
    before = g.state()
    g.feed(["", " again"])
    assert np.array_equal(g.logits[0], before.logits[0])
    assert np.array_equal(g.state().h[:, 0], before.h[:, 0])


def test_threads_share_one_model(model):
    """Many Generators over one Model in many threads: each stream as in a single-threaded run."""
    opts = [dict(seed=100 + i, temperature=0.7 + 0.1 * (i % 3), max_length=400) for i in range(6)]
    expected = [gen(model, batch_size=1 + i % 3, **o).generate("ROMEO: ") for i, o in enumerate(opts)]
    results = [None] * len(opts)
    barrier = threading.Barrier(len(opts))
    errors = []

    def work(i):
        try:
            g = gen(model, batch_size=1 + i % 3, **opts[i])
            barrier.wait()
            out = []
            for _ in range(3):  # several rounds, so that the runs overlap
                out.append(g.generate("ROMEO: "))
            results[i] = out
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(opts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i, exp in enumerate(expected):
        assert results[i][0] == exp
        assert len(set(map(tuple, results[i]))) == 3  # the RNG went on between rounds


def test_unknown_characters(model):
    g = gen(model)
    with pytest.raises(UnknownCharactersError) as e:
        g.feed("Héllo wörld ~")
    msg = str(e.value)
    assert "'é'" in msg and "'ö'" in msg and "'~'" in msg and "abcdefghijklmnopqrstuvwxyz" in msg
    g.feed("Héllo wörld ~", unknown="skip")
    skipped = gen(model).generate("Héllo", 20, unknown="skip")
    assert skipped == gen(model).generate("Hllo", 20)
    with pytest.raises(ValueError, match="empty"):
        gen(model).feed("ééé", unknown="skip")
    with pytest.raises(ValueError):
        gen(model).feed("abc", unknown="ignore")


def test_iteration_max_length_and_stop(model):
    g = gen(model, max_length=25)
    g.feed("ab")
    chunks = list(g)
    assert len(chunks) == 25 and all(len(c) == 1 and len(c[0]) == 1 for c in chunks)
    assert list(g) == []  # max_length reached until the next feed
    g.feed("c")
    assert len(list(g)) == 25
    assert gen(model, max_length=0).generate("ab") == [""]

    # stop: find a string that stream 0 generates, then stop on it
    full = gen(model, batch_size=3, seed=3, max_length=200).generate("ab")
    stop = full[0][40:42]
    out = gen(model, batch_size=3, seed=3, max_length=200, stop=stop).generate("ab")
    for o, f in zip(out, full):
        i = f.find(stop)
        assert o == (f if i < 0 else f[: i + len(stop)])
    g = gen(model, batch_size=3, seed=3, max_length=200, stop=[stop, "zzz"])
    g.feed("ab")
    chunks = list(g)
    col0 = [c[0] for c in chunks]
    assert "".join(col0) == out[0]
    assert col0[len(out[0]):] == [""] * (len(chunks) - len(out[0]))  # stopped: empty strings
    assert g.finished[0]


def test_step_logits_and_advance(model):
    """An app can sample on its own from .logits and advance() with its choice."""
    a = gen(model, temperature=0, batch_size=2)
    a.feed(["ROMEO", "KING"])
    b = gen(model, temperature=0, batch_size=2)
    b.feed(["ROMEO", "KING"])
    for _ in range(40):
        assert a.logits.shape == (2, 65) and a.logits.dtype == np.float32
        mine = np.argmax(a.logits, axis=1)
        assert a.advance(mine) == b.step()
    with pytest.raises(ValueError):
        a.logits[0, 0] = 1.0  # read-only view
    with pytest.raises(ValueError):
        a.advance([0, 99])
    ids = b.step_ids()
    assert ids.shape == (2,) and ids.dtype == np.int64


def test_step_before_feed_and_reset(model):
    g = gen(model)
    with pytest.raises(RuntimeError, match="feed"):
        g.step()
    first = g.generate("ab", 30)
    g.reset()
    with pytest.raises(RuntimeError):
        g.logits
    again = Generator(model, GenerationOptions(seed=7), batch_size=1)
    again.generate("ab", 30)
    g2 = gen(model)
    assert g2.generate("ab", 30) == first


def test_options_validation():
    for bad in (dict(temperature=-0.1), dict(temperature=float("nan")), dict(temperature=float("inf")),
                dict(top_p=0.0), dict(top_p=1.01), dict(top_p=-1), dict(top_k=-1), dict(top_k=1.5),
                dict(max_length=-1), dict(seed=-1), dict(seed=2**64), dict(seed="x"), dict(stop=""),
                dict(stop=["a", ""]), dict(seed=[])):
        with pytest.raises(ValueError):
            GenerationOptions(**bad)
    o = GenerationOptions(temperature=0, top_p=1, stop="\n\n", seed=np.int64(3))
    assert o.stop == ("\n\n",) and o.seed == 3 and isinstance(o.temperature, float)


def test_generator_arguments(model):
    with pytest.raises(ValueError):
        Generator(model, GenerationOptions(), batch_size=0)
    with pytest.raises(ValueError, match="one per stream"):
        Generator(model, GenerationOptions(seed=[1, 2]), batch_size=3)
    with pytest.raises(ValueError):
        gen(model, batch_size=2).feed(["only one"])
    g = Generator(model, GenerationOptions(seed=None))
    assert isinstance(g.seed, int)
    # the seed read back reproduces the run
    text = g.generate("ab", 50)
    assert gen(model, seed=g.seed).generate("ab", 50) == text


def test_set_options(model):
    g = gen(model, temperature=1.0)
    g.feed("ab")
    g.set_options(GenerationOptions(temperature=0, max_length=10))
    greedy = "".join(c[0] for c in g)
    ref = gen(model, temperature=0)
    assert ref.generate("ab", 10) == [greedy]
