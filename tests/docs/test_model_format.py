"""docs/model-format.md is a specification: a runtime written from it alone reads every file
`gen export` writes.

The reference reader below follows the document and nothing else: it reads a file with the
`onnx` package and numpy, takes its int8 products from the document's own numpy block, and is
held to onnxruntime one step at a time (batch 1 and 3) within the document's tolerances, and
over greedy rollouts, on 1- and 2-layer files of every precision and int8 kernel. The
document's tables (initializers with dtype and shape, ops, metadata and config keys) are
parsed and checked against the files, so the document and the files cannot drift apart.

The files come from two small CharGRUs trained for a few dozen steps (trained-looking
weights: a peaked head, a contractive recurrence), written by chargen.export.model_to_onnx as
`gen export` writes them: L=1 with H=136 (nbits blocks of 128, the second one padded) and L=2
with H=48 (blocks of 32, padded).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import numpy_helper  # noqa: E402

DOC = Path(__file__).resolve().parents[2] / "docs" / "model-format.md"
KINDS = ("fp32", "fp16", "int8-dynamic", "int8-nbits")  # precision-kernel of the files under test
SHAPES = {1: 136, 2: 48}  # layers -> hidden size
STEPS = 150  # teacher-forced steps per file and batch size
ROLLOUT = 150  # greedy steps
F32 = np.float32
QUANTIZED = ("gh_l{k}_w_t", "gi_l{k}_w_t")  # int8 files' quantized matrices (both int8 sections name them)


# ---------------------------------------------------------------- what the document says


def doc_text() -> str:
    return DOC.read_text(encoding="utf-8")


def section(heading: str) -> str:
    """The document's text from the heading line to the next heading of the same or a higher level."""
    text = doc_text()
    m = re.search(rf"^(#+) {re.escape(heading)}\s*$", text, re.M)
    assert m, f"docs/model-format.md has no heading {heading!r}"
    level = len(m.group(1))
    end = re.compile(rf"^#{{1,{level}}} ", re.M).search(text, m.end())
    return text[m.end(): end.start() if end else len(text)]


def python_block(heading: str) -> str:
    return re.search(r"```python\n(.*?)```", section(heading), re.S).group(1)


def tables(text: str) -> list[list[dict[str, str]]]:
    """The markdown tables of text, each as rows of {header: cell} (backslash-escaped pipes kept)."""
    out, lines = [], text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("|") and i + 1 < len(lines) and re.match(r"^\|[-| ]+\|$", lines[i + 1]):
            cells = lambda line: [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            head, rows = cells(lines[i]), []
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(dict(zip(head, cells(lines[i]))))
                i += 1
            out.append(rows)
        else:
            i += 1
    return out


def table(heading: str, first_column: str) -> list[dict[str, str]]:
    found = [t for t in tables(section(heading)) if t and next(iter(t[0])) == first_column]
    assert len(found) == 1, f"section {heading!r} should hold one table headed {first_column!r}"
    return found[0]


def code(cell: str) -> str:
    """The first `code` span of a table cell."""
    m = re.match(r"`([^`]+)`", cell)
    assert m, f"a table cell without a name in backticks: {cell!r}"
    return m.group(1)


def shape_of(spec: str, **sizes) -> tuple[int, ...]:
    """A shape as the document writes it ([V, 3H], [3H, ceil(H/b), b], []) for these sizes."""
    items = [s.strip() for s in spec.strip("[]").split(",") if s.strip()]
    out = []
    for item in items:
        expr = item.replace("ceil(H/b)", "(-(-H // b))")
        expr = re.sub(r"(\d)([A-Za-z(])", r"\1*\2", expr)
        assert re.fullmatch(r"[-+*/() \dVHLb]+", expr), f"a shape the test cannot read: {spec!r}"
        out.append(int(eval(expr, {}, sizes)))
    return tuple(out)


# ---------------------------------------------------------------- the files


def _train(vocab, ids, layers: int, hidden: int, steps: int = 30, batch: int = 8, seed: int = 0):
    """A CharGRU after `steps` Adam steps on the text (the loss falls from 4.1 to about 2.5 nats):
    weights that look trained, made in about a second."""
    import torch

    from chargen.train.model import CharGRU, ModelConfig

    torch.manual_seed(seed)
    model = CharGRU(ModelConfig(vocab_size=len(vocab), embedding_dim=16, hidden_size=hidden, layers=layers))
    model.fused = False  # nn.GRU: the fastest path at this size
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        starts = torch.randint(0, len(ids) - 51, (batch,), generator=g).tolist()
        window = torch.stack([ids[s: s + 51] for s in starts], dim=1)
        loss, _ = model.loss(window[:-1], window[1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def text() -> str:
    """Training text and held-out text for the steps (tiny-shakespeare, packaged)."""
    from chargen.train.data import tinyshakespeare_text

    return tinyshakespeare_text()


@pytest.fixture(scope="module")
def files(text, tmp_path_factory) -> dict[tuple[str, int], Path]:
    """{(kind, layers): path}: each model written in every precision and int8 kernel."""
    import torch

    from chargen.export.onnx_export import model_to_onnx
    from chargen.runtime.contract import Vocab

    folder = tmp_path_factory.mktemp("format")
    train_text = text[:20_000]
    vocab = Vocab.from_text(train_text)
    ids = torch.tensor(vocab.encode(train_text))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        models = {layers: _train(vocab, ids, layers, hidden) for layers, hidden in SHAPES.items()}
    finally:
        torch.set_num_threads(threads)
    out = {}
    for layers, model in models.items():
        for kind in KINDS:
            precision, _, kernel = kind.partition("-")
            proto = model_to_onnx(model, vocab, corpus="tiny", val_loss=2.0, precision=precision,
                                  int8_kernel=kernel or "dynamic")
            out[kind, layers] = folder / f"{kind}-L{layers}.onnx"
            onnx.save(proto, out[kind, layers])
    return out


def session(path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


# ---------------------------------------------------------------- the reference reader


def doc_products() -> dict:
    """matmul_integer and matmul_nbits, as the document's numpy block defines them."""
    scope: dict = {}
    exec(compile(python_block("The int8 products in numpy"), str(DOC), "exec"), scope)
    return scope


def _ort_nbits_is_int8() -> bool:
    """Whether onnxruntime runs MatMulNBits with its int8 kernel here. Where it has none, the
    document says it multiplies the dequantized weights in float32, and the reader does the same
    to be compared with it (the x86-64 AVX2 machines this suite runs on have the kernel)."""
    from chargen.runtime.model import _platform_facts, nbits_slow_reason

    return nbits_slow_reason(*_platform_facts(ort)) is None


class Reader:
    """A chargen model file read as docs/model-format.md says, with the onnx package and numpy.

    per_row (int8 dynamic) and nbits_float (int8 nbits) are the misreadings the document warns
    of, for the test that shows they are caught."""

    def __init__(self, path, *, per_row: bool = False, nbits_float: bool | None = None):
        model = onnx.load(str(path))
        meta = {p.key: p.value for p in model.metadata_props}
        if meta.get("chargen.format") != "1":
            raise ValueError(f"format version {meta.get('chargen.format')!r}: this reader knows version 1")
        self.vocab = json.loads(meta["chargen.vocab"])
        config = json.loads(meta["chargen.config"])  # unknown keys ignored
        self.L, self.H, self.V = config["layers"], config["hidden_size"], config["vocab_size"]
        self.precision = meta["chargen.precision"]
        self.kernel = meta.get("chargen.int8_kernel", "dynamic") if self.precision == "int8" else None
        w = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        self.w = {k: v.astype(F32) if v.dtype == np.float16 else v for k, v in w.items()}  # fp16: exactly
        self.products = doc_products()
        self.per_row = per_row
        self.nbits_float = (not _ort_nbits_is_int8()) if nbits_float is None else nbits_float

    def matmul(self, x: np.ndarray, name: str) -> np.ndarray:
        w = self.w
        if name in w:
            return x @ w[name]
        if self.kernel == "nbits":
            q8, scales = w[name + "_Q8"], w[name + "_scales"]
            if self.nbits_float:  # dequantize, then multiply in float32
                weights = ((q8.astype(F32) - 128) * scales[:, :, None]).reshape(len(q8), -1)[:, : x.shape[1]]
                return x @ weights.T
            return self.products["matmul_nbits"](x, q8, scales)
        args = w[name + "_quantized"], w[name + "_scale"], w[name + "_zero_point"]
        if self.per_row:
            return np.concatenate([self.products["matmul_integer"](row[None], *args) for row in x])
        return self.products["matmul_integer"](x, *args)

    def integers(self, x: np.ndarray) -> np.ndarray:
        """The integers the int8 products make of activations x (the document's quantization)."""
        if self.kernel == "nbits":
            b = self.w["gh_l0_w_t_Q8"].shape[2]
            a = np.zeros((len(x), -(-x.shape[1] // b) * b), F32)
            a[:, : x.shape[1]] = x
            a = a.reshape(len(x), -1, b)
            amax = np.abs(a).max(axis=2, keepdims=True)
            return np.rint(a * np.where(amax > 0, F32(127) / np.where(amax > 0, amax, F32(1)), F32(0)))
        lo, hi = min(x.min(), F32(0)), max(x.max(), F32(0))
        scale = F32(1) if hi == lo else (hi - lo) / F32(255)
        return np.clip(np.rint(x / scale) + np.clip(np.rint(-lo / scale), 0, 255), 0, 255)

    def flipped(self, h, h_out, want_h, want_h_out) -> bool:
        """Whether a quantized product of this step made other integers of the reader's inputs
        (h, its own h_out of the layers below) than of onnxruntime's (the document's flip step)."""
        if self.precision != "int8":
            return False
        ours = [h[k] for k in range(self.L)] + [h_out[k] for k in range(self.L - 1)]
        theirs = [want_h[k] for k in range(self.L)] + [want_h_out[k] for k in range(self.L - 1)]
        return any((self.integers(a) != self.integers(b)).any() for a, b in zip(ours, theirs))

    def step(self, token: np.ndarray, h: np.ndarray, below: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(logits, h_out) of one step; below: the inputs of the layers k >= 1 (instead of the
        reader's own h_out[k - 1]), to feed the reader onnxruntime's."""
        H, w = self.H, self.w
        sigmoid = lambda v: F32(1) / (F32(1) + np.exp(-v))
        h_out = np.empty_like(h)
        for k in range(self.L):
            if k == 0:
                gi = w["gi_table_l0"][token]
            else:
                x = h_out[k - 1] if below is None else below[k - 1]
                gi = self.matmul(x, f"gi_l{k}_w_t") + w[f"gi_l{k}_b"]
            gh = self.matmul(h[k], f"gh_l{k}_w_t")
            if f"gh_rz_l{k}_b" in w:
                gh[:, : 2 * H] += w[f"gh_rz_l{k}_b"]
            gh[:, 2 * H:] += w[f"gh_n_l{k}_b"]
            rz = sigmoid(gi[:, : 2 * H] + gh[:, : 2 * H])
            r, z = rz[:, :H], rz[:, H:]
            n = np.tanh(gi[:, 2 * H:] + r * gh[:, 2 * H:])
            h_out[k] = n + z * (h[k] - n)
        return h_out[-1] @ w["head_w_t"] + w["head_b"], h_out


# ---------------------------------------------------------------- the document's tolerances


def tolerances() -> dict[str, dict[str, float]]:
    """{kind: {"logits", "h_out", "flip_logits", "flip_h_out"}} from the tolerance table."""
    out = {}
    for row in table("How close a reimplementation gets", "precision"):
        kind = row["precision"].replace("`", "").replace("int8 ", "int8-")
        limits = {}
        for column, key in ((r"\|logits difference\|", "logits"), (r"\|h_out difference\|", "h_out")):
            m = re.fullmatch(r"≤ (\S+?)(?:, on a flip step ≤ (\S+))?", row[column])
            assert m, f"tolerance cell {row[column]!r}"
            limits[key] = float(m.group(1))
            limits["flip_" + key] = float(m.group(2) or m.group(1))
        out[kind] = limits
    assert set(out) == set(KINDS), sorted(out)
    return out


def held_out_ids(text: str, vocab: list[str], batch: int, steps: int) -> np.ndarray:
    """(steps, batch) ids of text the models were not trained on, the streams far apart."""
    held_out = [vocab.index(c) for c in text[-60_000:] if c in vocab]
    return np.stack([held_out[b * 20_000: b * 20_000 + steps] for b in range(batch)], axis=1).astype(np.int64)


# ---------------------------------------------------------------- tests


@pytest.mark.parametrize("layers", [1, 2])
def test_the_worked_example_is_onnxruntimes_step(layers, make_model, tmp_path):
    path = make_model(tmp_path / f"L{layers}.onnx", "fp32", layers=layers, hidden=48)
    scope = {"path": str(path)}
    exec(compile(python_block("One step by hand"), str(DOC), "exec"), scope)  # its own asserts compare with onnxruntime
    assert scope["next_char"] in scope["vocab"]


@pytest.mark.parametrize("layers", sorted(SHAPES))
@pytest.mark.parametrize("kind", KINDS)
def test_the_tables_are_what_a_file_holds(kind, layers, files):
    """Initializers (name, dtype, shape, the int64 helpers' values), ops, opsets, metadata and
    config keys: exactly what the document's tables say for this precision and kernel."""
    model = onnx.load(str(files[kind, layers]))
    precision, _, kernel = kind.partition("-")
    meta = {p.key: p.value for p in model.metadata_props}
    config = json.loads(meta["chargen.config"])
    L, H, V = config["layers"], config["hidden_size"], config["vocab_size"]
    assert (L, H) == (layers, SHAPES[layers]) and V == len(json.loads(meta["chargen.vocab"]))

    # metadata and config keys
    keys = [code(r["key"]) for r in table("Metadata (`metadata_props`)", "key")]
    assert set(meta) == set(keys) - ({"chargen.int8_kernel"} if precision != "int8" else set()), sorted(meta)
    assert meta["chargen.format"] == "1" and meta["chargen.precision"] == precision
    assert meta.get("chargen.int8_kernel") == (kernel or None)
    assert sorted(config) == sorted(code(r["config key"]) for r in table("Metadata (`metadata_props`)", "config key"))

    # the graph's inputs and outputs
    io = table("Inputs and outputs", "name")
    values = {v.name: v for v in [*model.graph.input, *model.graph.output]}
    assert [code(r["name"]) for r in io] == [v.name for v in [*model.graph.input, *model.graph.output]]
    for row in io:
        t = values[code(row["name"])].type.tensor_type
        assert onnx.helper.tensor_dtype_to_np_dtype(t.elem_type) == np.dtype(row["dtype"]), row
        dims = [d.dim_param or d.dim_value for d in t.shape.dim]
        spec = [s.strip() for s in row["shape"].strip("[]").split(",")]
        assert dims == ["batch" if s == "B" else shape_of(f"[{s}]", V=V, H=H, L=L)[0] for s in spec], row

    # initializers: the float table, with each quantized matrix replaced in int8 files
    b = None
    if kernel == "nbits":
        b = model.graph.initializer[[t.name for t in model.graph.initializer].index("gh_l0_w_t_Q8")].dims[2]
        assert b == (128 if H >= 128 else max(16, 1 << (H.bit_length() - 1)))
    want: dict[str, tuple[str, tuple[int, ...]]] = {}
    helper_values = {}
    presence = {"always": [None], "every k": range(L), "k ≥ 1": range(1, L), "L ≥ 2": range(L) if L >= 2 else [],
                "optional": []}
    for row in table("The arithmetic", "initializer"):
        pattern = code(row["initializer"])
        assert row["present"] in presence, f"a presence the test does not know: {row['present']!r}"
        for k in presence[row["present"]]:
            name = pattern.format(k=k) if k is not None else pattern
            dtype = {"float": "float16" if precision == "fp16" else "float32"}.get(row["dtype"], row["dtype"])
            quantized = precision == "int8" and any(name == q.format(k=k) for q in QUANTIZED)
            if not quantized:
                want[name] = dtype, shape_of(row["shape"], V=V, H=H, L=L)
                if dtype == "int64":
                    m = re.match(r"(\[[^\]]*\]|k):", row["holds"])
                    assert m, row
                    helper_values[name] = [k] if m.group(1) == "k" else list(shape_of(m.group(1), H=H))
                continue
            heading = "int8 `dynamic` (MatMulInteger)" if kernel == "dynamic" else "int8 `nbits` (MatMulNBits)"
            first_sentence = section(heading).strip().split(". ")[0]
            assert all(f"`{q}`" in first_sentence for q in QUANTIZED), first_sentence
            for sub in table(heading, "initializer"):
                want[code(sub["initializer"]).replace("NAME", name)] = sub["dtype"], shape_of(sub["shape"], H=H, b=b)
    have = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    assert sorted(have) == sorted(want)
    for name, (dtype, shape) in want.items():
        assert (str(have[name].dtype), have[name].shape) == (dtype, shape), name
    for name, value in helper_values.items():
        assert have[name].ravel().tolist() == value and have[name].shape == want[name][1], name

    # what the int8 sections say of the stored values
    for name, a in have.items():
        if name.endswith("_zero_point"):
            assert not a.any(), name
        if name.endswith("_quantized"):
            assert -64 <= a.min() and a.max() <= 64, name
        if name.endswith("_Q8"):
            padding = a.reshape(len(a), -1)[:, H:]
            assert padding.size == a.size - len(a) * H and not padding.any(), name  # K padded, with 0
            weights = a.reshape(len(a), -1)[:, :H]
            assert weights.min() < 128 < weights.max(), name  # offset by 128: signed weights either side
        if name.endswith("_scale"):
            assert (a > 0).all(), name
        if name.endswith("_scales"):  # signed: each block's largest-magnitude weight is stored as -128
            assert (a != 0).all() and (a < 0).any() and (a > 0).any(), name
            q8 = have[name.replace("_scales", "_Q8")].astype(np.int32)
            valid = (np.arange(q8.shape[1] * b) < H).reshape(q8.shape[1:])
            assert (np.where(valid, q8, 255).min(axis=2) == 0).all(), name

    # ops and opsets
    ops = table("The arithmetic", "op")
    tag = {"all": True, "L = 1": L == 1, "L ≥ 2": L >= 2, precision: True, kind.replace("-", " "): True}
    expected = {(code(r["op"]), r["domain"]) for r in ops
                if any(tag.get(t.strip(), False) for t in r["files"].split(","))}
    nodes = {(n.op_type, n.domain or "ai.onnx") for n in model.graph.node}
    assert nodes == expected
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    assert opsets == ({"ai.onnx": 17, "com.microsoft": 1} if kernel == "nbits" else {"ai.onnx": 17})
    for node in model.graph.node:
        if node.op_type == "MatMulNBits":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            assert attrs == {"K": H, "N": 3 * H, "bits": 8, "block_size": b, "accuracy_level": 4}
            assert len(node.input) == 3  # no zero points: the implicit 128


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("layers", sorted(SHAPES))
@pytest.mark.parametrize("kind", KINDS)
def test_the_reader_steps_as_onnxruntime(kind, layers, batch, files, text):
    """From h = 0 (the first step quantizes an all-zero state), teacher-forced on held-out text:
    every step within the document's tolerance; flip steps (int8, layers >= 1) within the flip
    tolerance and rare. Fed onnxruntime's own layer inputs, an int8 step is never a flip step."""
    path = files[kind, layers]
    reader, sess, tol = Reader(path), session(path), tolerances()[kind]
    ids = held_out_ids(text, reader.vocab, batch, STEPS)
    h = np.zeros((reader.L, batch, reader.H), F32)
    worst, worst_flip, flips = [0.0, 0.0], [0.0, 0.0], 0
    for t in range(STEPS):
        want_logits, want_h = sess.run(None, {"token": ids[t], "h": h})
        logits, h_out = reader.step(ids[t], h)
        assert np.isfinite(logits).all() and np.isfinite(h_out).all(), f"step {t}"
        diff = [float(np.abs(logits - want_logits).max()), float(np.abs(h_out - want_h).max())]
        if reader.flipped(h, h_out, h, want_h):
            flips += 1
            worst_flip = np.maximum(worst_flip, diff).tolist()
            fed = reader.step(ids[t], h, below=want_h)  # the same integers as onnxruntime's: no flip
            assert np.abs(fed[0] - want_logits).max() <= tol["logits"], f"step {t}"
            assert np.abs(fed[1] - want_h).max() <= tol["h_out"], f"step {t}"
        else:
            worst = np.maximum(worst, diff).tolist()
        h = want_h
    assert worst[0] <= tol["logits"] and worst[1] <= tol["h_out"], (worst, tol)
    assert worst_flip[0] <= tol["flip_logits"] and worst_flip[1] <= tol["flip_h_out"], (worst_flip, tol)
    assert flips <= STEPS // 50, f"{flips} flip steps in {STEPS}"
    if layers == 1:
        assert flips == 0  # layer 0 quantizes the given state: nothing to flip


@pytest.mark.parametrize("layers", sorted(SHAPES))
@pytest.mark.parametrize("kind", KINDS)
def test_the_reader_follows_a_greedy_rollout(kind, layers, files):
    """The reader and onnxruntime each generate greedily from their own state: the same text,
    unless it parts where the top two logits were within the tolerance (float files) or after a
    flip step (int8 files, as the document says)."""
    path = files[kind, layers]
    reader, sess, tol = Reader(path), session(path), tolerances()[kind]
    start = np.array([reader.vocab.index("\n")], np.int64)
    ours, theirs = (start, np.zeros((reader.L, 1, reader.H), F32)), (start, np.zeros((reader.L, 1, reader.H), F32))
    first_flip = None
    for t in range(ROLLOUT):
        logits, h_out = reader.step(*ours)
        want_logits, want_h = sess.run(None, {"token": theirs[0], "h": theirs[1]})
        if first_flip is None and reader.flipped(ours[1], h_out, theirs[1], want_h):
            first_flip = t
        ours, theirs = (logits.argmax(1), h_out), (want_logits.argmax(1), want_h)
        if ours[0][0] != theirs[0][0]:
            top2 = np.sort(want_logits[0])[-2:]
            near_tie = top2[1] - top2[0] <= tol["logits"]
            assert near_tie or (first_flip is not None and first_flip <= t), (
                f"greedy texts part at step {t} (top-2 margin {top2[1] - top2[0]:.3g}, first flip {first_flip})")
            return


@pytest.mark.parametrize("kind", ["int8-dynamic", "int8-nbits"])
def test_one_rounding_flip_is_a_flip_step(kind, files, text):
    """What the document says of flip steps, on the 2-layer file: fed onnxruntime's own layer-0
    output, layer 1 quantizes the same integers and the step is within the tolerance; one value
    of that input moved across a rounding boundary (what a float32 difference of 1e-7 does to a
    value that lies that close to it) changes one integer, which the reader reports as a flip,
    and moves the step past the tolerance but within the flip tolerance."""
    path = files[kind, 2]
    reader, sess, tol = Reader(path), session(path), tolerances()[kind]
    ids = held_out_ids(text, reader.vocab, 1, 30)
    h = np.zeros((2, 1, SHAPES[2]), F32)
    for t in range(len(ids) - 1):
        h = sess.run(None, {"token": ids[t], "h": h})[1]
    want_logits, want_h = sess.run(None, {"token": ids[-1], "h": h})
    logits, h_out = reader.step(ids[-1], h, below=want_h)
    assert np.abs(logits - want_logits).max() <= tol["logits"] and np.abs(h_out - want_h).max() <= tol["h_out"]

    # the value of layer 0's output nearest a rounding boundary, other than the one that sets the scale
    x = want_h[0, 0]
    if kind == "int8-dynamic":
        lo, hi = min(x.min(), F32(0)), max(x.max(), F32(0))
        units = x / ((hi - lo) / F32(255))
    else:
        b = reader.w["gh_l0_w_t_Q8"].shape[2]
        amax = np.repeat([np.abs(x[j: j + b]).max() for j in range(0, len(x), b)], b)[: len(x)]
        units = x * (F32(127) / amax)
    distance = np.abs(units - np.floor(units) - 0.5)
    distance[[np.argmin(x), np.argmax(x), np.argmax(np.abs(x))]] = np.inf
    j = int(np.argmin(distance))
    boundary = np.floor(units[j]) + 0.5
    moved = want_h.copy()
    moved[0, 0, j] = F32(x[j] * (boundary + (1e-3 if units[j] < boundary else -1e-3)) / units[j])
    assert np.count_nonzero(reader.integers(moved[0]) != reader.integers(want_h[0])) == 1
    logits, h_out = reader.step(ids[-1], h, below=moved)
    assert reader.flipped(h, moved, h, want_h)
    diff = float(np.abs(logits - want_logits).max()), float(np.abs(h_out[1] - want_h[1]).max())
    assert diff[0] > tol["logits"] or diff[1] > tol["h_out"], diff
    assert diff[0] <= tol["flip_logits"] and diff[1] <= tol["flip_h_out"], diff


def test_the_misreadings_the_document_warns_of_are_caught(files, text):
    """Per-row quantization in a dynamic file (at batch 3), "dequantize then multiply in float32"
    in an nbits file, and the ONNX operator text's 0/0 at h = 0 all miss onnxruntime's step by
    far more than the tolerance: the checks above tell the document's arithmetic from them."""
    tol = tolerances()
    ids = held_out_ids(text, Reader(files["fp32", 1]).vocab, 3, 40)  # every file has the same vocabulary

    def worst(reader, path):
        sess, h, out = session(path), np.zeros((reader.L, 3, reader.H), F32), 0.0
        for t in range(len(ids)):
            want_logits, want_h = sess.run(None, {"token": ids[t], "h": h})
            out = max(out, float(np.abs(reader.step(ids[t], h)[0] - want_logits).max()))
            h = want_h
        return out

    for layers in SHAPES:
        dynamic, nbits = files["int8-dynamic", layers], files["int8-nbits", layers]
        assert worst(Reader(dynamic, per_row=True), dynamic) > 20 * tol["int8-dynamic"]["logits"]
        if _ort_nbits_is_int8():
            assert worst(Reader(nbits, nbits_float=True), nbits) > 20 * tol["int8-nbits"]["logits"]

    # DynamicQuantizeLinear as the ONNX operator text reads, on the all-zero start state
    x = np.zeros((3, 8), F32)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = (max(x.max(), F32(0)) - min(x.min(), F32(0))) / F32(255)
        assert np.isnan(np.rint(-min(x.min(), F32(0)) / scale))  # zero = round(-min / scale) = NaN
    q = doc_products()["matmul_integer"](x, np.ones((8, 2), np.int8), np.ones(2, F32), np.zeros(2, np.int8))
    assert np.array_equal(q, np.zeros((3, 2), F32))


def test_unknown_keys_are_ignored_and_unknown_versions_refused(files, tmp_path):
    """A reader ignores metadata and config keys it does not know, and refuses another version."""
    model = onnx.load(str(files["int8-dynamic", 2]))
    for p in model.metadata_props:
        if p.key == "chargen.config":
            p.value = json.dumps({**json.loads(p.value), "future_option": [1, 2]})
    extra = model.metadata_props.add()
    extra.key, extra.value = "chargen.future", "anything"
    onnx.save(model, tmp_path / "extra.onnx")
    token, h = np.array([3, 5], np.int64), np.full((2, 2, SHAPES[2]), 0.25, F32)
    got = Reader(tmp_path / "extra.onnx").step(token, h)
    want = session(files["int8-dynamic", 2]).run(None, {"token": token, "h": h})
    assert np.abs(got[0] - want[0]).max() <= tolerances()["int8-dynamic"]["logits"]

    for p in model.metadata_props:
        if p.key == "chargen.format":
            p.value = "2"
    onnx.save(model, tmp_path / "v2.onnx")
    with pytest.raises(ValueError, match="version '2'"):
        Reader(tmp_path / "v2.onnx")


def test_an_int8_file_without_its_kernel_key_is_dynamic(files, tmp_path):
    """int8 files written before chargen.int8_kernel existed lack it: the document says to read
    them as `dynamic`, which is what chargen's runtime does, and the graph agrees."""
    from chargen.runtime.engine import unsupported

    model = onnx.load(str(files["int8-dynamic", 1]))
    keep = [(p.key, p.value) for p in model.metadata_props if p.key != "chargen.int8_kernel"]
    del model.metadata_props[:]
    for key, value in keep:
        p = model.metadata_props.add()
        p.key, p.value = key, value
    onnx.save(model, tmp_path / "old.onnx")
    reader = Reader(tmp_path / "old.onnx")
    assert reader.kernel == "dynamic" and "MatMulInteger" in {n.op_type for n in model.graph.node}
    assert unsupported("cpu", dict(keep)) is None  # chargen's int8 engine takes it as MatMulInteger weights
    token, h = np.array([1], np.int64), np.zeros((1, 1, SHAPES[1]), F32)
    got, want = reader.step(token, h), session(tmp_path / "old.onnx").run(None, {"token": token, "h": h})
    assert np.abs(got[0] - want[0]).max() <= tolerances()["int8-dynamic"]["logits"]
