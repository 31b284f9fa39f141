"""chargen's int8 step in C (chargen.runtime.engine) against onnxruntime's session of the same
int8 model file: long rollouts, sampling, batches, threads, and the choice of engine."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime.quantization")

from chargen.export.graph_variants import GraphOptions, random_weights  # noqa: E402

from chargen.export.graph import build_step_graph  # noqa: E402
from chargen.runtime import EngineError, GenerationOptions, Generator, Model, Vocab  # noqa: E402
from chargen.runtime import _int8, engine  # noqa: E402

from modelkit import ALPHABET  # noqa: E402  (tiny-shakespeare's 65 characters)
TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
        "First Citizen:\nYou are all resolved rather to die than to famish?\n\n") * 8  # 1,000+ chars


@pytest.fixture(scope="module")
def int8_model(make_model):
    """int8_model(path, L, H, ...): an int8 model file from random weights (tests/conftest.py):
    torch's init scale (rnn_scale=1) gives a contractive recurrence, as trained models have;
    rnn_scale=4 a chaotic one."""
    def make(path, L, H, E=16, options=None, kernel="dynamic", seed=3, rnn_scale=1.0):
        return make_model(path, "int8", layers=L, hidden=H, embedding=E, options=options, kernel=kernel, seed=seed,
                          rnn_scale=rnn_scale)
    return make


# H=96: rows padded to 128 for the kernels; L=2: layer 1's quantized W_ih
@pytest.fixture(scope="module", params=[(1, 64), (2, 96)], ids=["L1-H64", "L2-H96"])
def path(int8_model, request, tmp_path_factory):
    L, H = request.param
    return int8_model(tmp_path_factory.mktemp("int8") / f"int8-L{L}-H{H}.onnx", L, H)


@pytest.fixture(scope="module")
def engines(path):
    return Model.load(path, device="cpu", engine="chargen"), Model.load(path, device="cpu", engine="onnxruntime")


def test_every_step_is_onnxruntimes_even_on_a_chaotic_model(int8_model, tmp_path):
    """From the same state, over 1,000+ characters of text, the C step's logits and state are
    within 2e-5 of onnxruntime's (both quantize the state alike and sum the int8 products
    exactly; the gates round differently) on a model whose recurrence amplifies any difference."""
    model = Model.load(int8_model(tmp_path / "chaos.onnx", 2, 96, rnn_scale=4.0), device="cpu", engine="chargen")
    worst = engine.check(model, model.int8_step, model.vocab.encode(TEXT))
    assert worst < 2e-5, worst


def test_a_long_rollout_follows_onnxruntime(engines):
    """Teacher-forced over 1,000+ characters, each engine on its own state: every step's logits
    within 1e-4 of onnxruntime's."""
    ours, theirs = engines
    assert (ours.engine, theirs.engine) == ("chargen", "onnxruntime")
    ids = ours.vocab.encode(TEXT)
    g, r = Generator(ours, GenerationOptions(seed=0)), Generator(theirs, GenerationOptions(seed=0))
    g.feed(TEXT[0])
    r.feed(TEXT[0])
    worst = 0.0
    for i in ids[1:]:
        worst = max(worst, float(np.max(np.abs(g.logits - r.logits))))
        g.advance([i])
        r.advance([i])
    assert len(ids) > 1000 and worst < 1e-4, worst
    assert np.max(np.abs(g.state().h - r.state().h)) < 1e-5


def test_greedy_text_is_onnxruntimes(engines):
    """Greedy text is the same (sampled text is each engine's own: see test_export.py's
    test_what_the_two_int8_engines_share_on_trained_models)."""
    ours, theirs = engines
    options = GenerationOptions(temperature=0, max_length=1000)
    a = Generator(ours, options).generate("ROMEO: ")[0]
    b = Generator(theirs, options).generate("ROMEO: ")[0]
    assert a == b and len(a) == options.max_length


def test_same_seed_same_text_and_restore_is_bit_exact(engines):
    model = engines[0]
    run = lambda: Generator(model, GenerationOptions(seed=5, max_length=300)).generate("KING: ")  # noqa: E731
    assert run() == run()
    g = Generator(model, GenerationOptions(seed=5, top_k=10), batch_size=2)
    g.feed("KING: ")
    for _ in range(50):
        g.step()
    saved = g.state()
    first = [g.step() for _ in range(100)]
    logits = g.logits.copy()
    g.restore(saved)
    assert [g.step() for _ in range(100)] == first
    assert np.array_equal(g.logits, logits)


def test_a_stream_does_not_depend_on_its_batch(engines):
    """The C step quantizes each stream's state on its own: a batch with per-stream seeds is
    B single runs, character for character (onnxruntime's int8 graph takes one scale for the
    whole batch, so it cannot promise this)."""
    model = engines[0]
    seeds, starts = [3, 4, 5, 6, 7], ["A", "BB", "Cat ", "\n", "ROMEO: "]
    batch = Generator(model, GenerationOptions(seed=seeds, max_length=200), batch_size=5).generate(starts)
    singles = [Generator(model, GenerationOptions(seed=s, max_length=200)).generate(t)[0] for s, t in zip(seeds, starts)]
    assert batch == singles


def test_one_model_many_threads(engines):
    model = engines[0]
    seeds = list(range(6))
    want = [Generator(model, GenerationOptions(seed=s, max_length=300)).generate("To be")[0] for s in seeds]
    got = [None] * len(seeds)
    barrier = threading.Barrier(len(seeds))

    def work(i):
        g = Generator(model, GenerationOptions(seed=seeds[i], max_length=300))
        barrier.wait()
        got[i] = g.generate("To be")[0]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(seeds))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == want


def test_thread_count_does_not_change_a_bit(path):
    texts, logits = [], []
    for threads in (1, 2, 3):
        model = Model.load(path, device="cpu", engine="chargen", threads=threads)
        g = Generator(model, GenerationOptions(seed=2, max_length=200), batch_size=5)
        texts.append(g.generate("Hi"))
        logits.append(g.logits.copy())
    assert texts[0] == texts[1] == texts[2]
    assert np.array_equal(logits[0], logits[1]) and np.array_equal(logits[0], logits[2])


def test_pinned_engines_and_models_with_one_engine(path, tmp_path):
    forced = Model.load(path, device="cpu", engine="chargen")
    assert forced.engine == "chargen" and "engine='chargen'" in repr(forced)
    assert Generator(forced, batch_size=64).engine == "chargen"
    assert forced.choice(64).source == "pinned"
    theirs = Model.load(path, device="cpu", engine="onnxruntime")
    assert theirs.int8_step is None and Generator(theirs, batch_size=2).engine == "onnxruntime"
    fp32 = tmp_path / "fp32.onnx"
    vocab = Vocab.from_text(ALPHABET)
    config = dict(vocab_size=len(vocab), embedding_dim=8, hidden_size=32, layers=1, dropout=0.0)
    onnx.save(build_step_graph(random_weights(len(vocab), 8, 32, 1), config, vocab), fp32)
    only = Model.load(fp32, device="cpu")
    assert only.engine == "onnxruntime" and only.choice(4).source == "only engine"
    with pytest.raises(EngineError, match="engine='chargen' cannot run this model: it runs int8 models, and this one is fp32"):
        Model.load(fp32, device="cpu", engine="chargen")
    with pytest.raises(ValueError, match="engine must be one of auto, onnxruntime, chargen"):
        Model.load(fp32, engine="tensorrt")


def test_nbits_models_stay_with_onnxruntime(int8_model, tmp_path):
    nbits = int8_model(tmp_path / "nbits.onnx", 1, 32, kernel="nbits")
    assert Model.load(nbits, device="cpu").engine == "onnxruntime"
    with pytest.raises(EngineError, match="MatMulInteger weights"):
        Model.load(nbits, device="cpu", engine="chargen")


def test_a_graph_that_is_not_its_weights_is_refused(int8_model, tmp_path, monkeypatch):
    """The step is checked against the graph at every load: a graph that computes something
    else from the same weights (here its Tanh made a Sigmoid) is refused, and 'auto' falls
    back to onnxruntime."""
    path = int8_model(tmp_path / "m.onnx", 1, 64)
    m = onnx.load(path)
    next(n for n in m.graph.node if n.op_type == "Tanh").op_type = "Sigmoid"
    onnx.save(m, path)
    with pytest.raises(EngineError, match="disagrees with onnxruntime"):
        Model.load(path, device="cpu", engine="chargen")
    monkeypatch.setenv("CHARGEN_NO_CALIBRATION", "0")  # 'auto' makes the step, which fails its check
    model = Model.load(path, device="cpu")
    assert model.engine == "onnxruntime" and model.int8_step is None
    assert model.choice(8).engine == "onnxruntime"


def test_a_graph_written_otherwise_is_refused_by_name(int8_model, tmp_path):
    path = int8_model(tmp_path / "split.onnx", 1, 32, options=GraphOptions(fused_gates=False))
    with pytest.raises(EngineError, match="not chargen's int8 step graph"):
        Model.load(path, device="cpu", engine="chargen")
    assert Model.load(path, device="cpu").engine == "onnxruntime"


def test_int8step_checks_its_arrays():
    H, V = 32, 5
    ok = dict(table=np.zeros((V, 3 * H), np.float32), b_hh=np.zeros((1, 3 * H), np.float32),
              head_w=np.zeros((V, H), np.float32), head_b=np.zeros(V, np.float32))
    rows = engine._aligned_rows(np.ones((H, 3 * H), np.int8))
    scale = np.ones(3 * H, np.float32)
    step = _int8.Int8Step(w_ih=[None], w_hh=[(rows, scale)], **ok)
    h = np.zeros((1, 2, H), np.float32)
    logits = np.zeros((2, V), np.float32)
    step.step(np.array([0, 4]), h, h.copy(), logits, step.scratch(2))
    with pytest.raises(ValueError, match="outside"):
        step.step(np.array([0, V]), h, h.copy(), logits, step.scratch(2))
    with pytest.raises(ValueError, match="scratch is too small"):
        step.step(np.array([0, 1]), h, h.copy(), logits, step.scratch(1))
    with pytest.raises(ValueError, match="must not be h_in"):
        step.step(np.array([0, 1]), h, h, logits, step.scratch(2))
    with pytest.raises(ValueError, match="64-byte boundary"):
        unaligned = np.zeros(rows.size + 1, np.int8)[1:].reshape(rows.shape)
        _int8.Int8Step(w_ih=[None], w_hh=[(unaligned, scale)], **ok)
    with pytest.raises(ValueError, match="padding"):
        padded = engine._aligned_rows(np.ones((H, 3 * H), np.int8))
        padded[:, H:] = 1
        _int8.Int8Step(w_ih=[None], w_hh=[(padded, scale)], **ok)
    with pytest.raises(ValueError, match="float32"):
        _int8.Int8Step(w_ih=[None], w_hh=[(rows, scale.astype(np.float64))], **ok)


@pytest.mark.parametrize("bound, narrow", [(64, True), (65, False), (127, False)])
def test_int8step_knows_narrow_weights(bound, narrow):
    """Weights within [-64, 64] (the export's 7-bit int8) are 'narrow': AVX2's packed loop sums
    their products in 16 bits exactly; past it, the loop widens to 16 bits first. Either way each stream
    of a batch gets, bit for bit, what the unpacked step (the matrix-vector kernels) gives it alone."""
    H, V, B = 32, 5, 6
    rng = np.random.default_rng(bound)
    w = rng.integers(-bound, bound + 1, (H, 3 * H)).astype(np.int8)
    w[0, 0] = -bound
    head_w = rng.standard_normal((V, H)).astype(np.float32)
    table = rng.standard_normal((V, 3 * H)).astype(np.float32)
    step = _int8.Int8Step(table=table, b_hh=np.zeros((1, 3 * H), np.float32), head_w=head_w,
                          head_b=np.zeros(V, np.float32), w_ih=[None],
                          w_hh=[(engine._aligned_rows(w), np.full(3 * H, 1e-3, np.float32))])
    assert step.narrow == narrow
    if (_int8.packed_kernel() or ("",))[0] == "avx2":
        assert step.kernel_for(B) == "avx2 packed" + (" narrow" if narrow else "")
    h_in = rng.uniform(-1, 1, (1, B, H)).astype(np.float32)
    h_out, logits = np.zeros_like(h_in), np.zeros((B, V), np.float32)
    tokens = np.arange(B, dtype=np.int64) % V
    step.step(tokens, h_in, h_out, logits, step.scratch(B))
    unpacked = _int8.Int8Step(table=table, b_hh=np.zeros((1, 3 * H), np.float32), head_w=head_w,
                              head_b=np.zeros(V, np.float32), w_ih=[None],
                              w_hh=[(engine._aligned_rows(w), np.full(3 * H, 1e-3, np.float32))], packed=False)
    assert unpacked.packed_bytes == 0 and unpacked.kernel_for(B) == _int8.kernel()
    for b in range(B):
        one_h, one_logits = np.zeros((1, 1, H), np.float32), np.zeros((1, V), np.float32)
        unpacked.step(tokens[b : b + 1], np.ascontiguousarray(h_in[:, b : b + 1]), one_h, one_logits, unpacked.scratch(1))
        assert np.array_equal(one_h[0, 0], h_out[0, b]) and np.array_equal(one_logits[0], logits[b])


def _child_generates(model, conn):
    text = Generator(model, GenerationOptions(seed=4, max_length=100)).generate("To")[0]
    conn.send(text)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_a_process_forked_after_generating_still_generates(path):
    """A child forked after its parent generated (a server that loads and warms up, then forks
    workers) steps the parent's model on a new pool of threads (the old pool's threads are not
    in the child): the same text, no hang."""
    import multiprocessing

    model = Model.load(path, device="cpu", engine="chargen", threads=2)
    assert model.int8_step.threads == (2 if _int8.threaded() else 1)
    want = Generator(model, GenerationOptions(seed=4, max_length=100)).generate("To")[0]  # starts the threads
    ctx = multiprocessing.get_context("fork")
    parent_end, child_end = ctx.Pipe()
    child = ctx.Process(target=_child_generates, args=(model, child_end))
    child.start()
    assert parent_end.poll(60), "the forked child did not finish generating"
    text = parent_end.recv()
    child.join(10)
    assert text == want and child.exitcode == 0
    assert Generator(model, GenerationOptions(seed=4, max_length=100)).generate("To")[0] == want  # the parent's threads
