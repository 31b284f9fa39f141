"""chargen.runtime.onnx_file: initializers read from the protobuf bytes by hand, checked
against onnx.numpy_helper.to_array on files written by onnx (raw_data and typed fields),
on real chargen step graphs (fp32, int8), and on hand-written bytes (packed dims,
unknown fields); every broken file raises OnnxFileError naming the file."""

from __future__ import annotations

import time

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from chargen.runtime.onnx_file import OnnxFileError, read_initializers, read_metadata  # noqa: E402


def save(tmp_path, tensors, name="model.onnx"):
    graph = helper.make_graph([], "g", [], [], initializer=tensors)
    path = tmp_path / name
    onnx.save(helper.make_model(graph), path)
    return path


def check_against_onnx(path, expect_names=None):
    """read_initializers(path) equals numpy_helper.to_array for every initializer."""
    refs = {t.name: numpy_helper.to_array(t) for t in onnx.load(path).graph.initializer}
    got = read_initializers(path)
    assert set(got) == set(refs)
    if expect_names is not None:
        assert set(got) == set(expect_names)
    for name, ref in refs.items():
        a = got[name]
        assert a.dtype == ref.dtype, name
        assert a.shape == ref.shape, name
        assert np.array_equal(a, ref, equal_nan=a.dtype.kind == "f"), name
        assert a.flags.writeable and a.flags.owndata, name
    return got


def values(dtype, shape):
    """Values spanning the dtype's range: extremes, negatives, and for floats inf/nan."""
    n = int(np.prod(shape))
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return (np.arange(n) % 3 == 0).reshape(shape)
    if dtype.kind == "f":
        base = np.array([0.0, -0.0, 1.5, -2.25, np.inf, -np.inf, np.nan, np.finfo(dtype).max, np.finfo(dtype).tiny])
    else:
        info = np.iinfo(dtype)
        base = np.array([0, 1, info.max, info.min, info.max - 1, info.min // 2 + 3], dtype=object)
    return np.resize(base, n).astype(dtype).reshape(shape)


DTYPES = [np.float32, np.float16, np.float64, np.int8, np.uint8, np.int16, np.uint16, np.int32, np.int64,
          np.uint32, np.uint64, np.bool_]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_raw_data_matches_onnx(tmp_path, dtype):
    tensors = [
        numpy_helper.from_array(values(dtype, (3, 4)), "matrix"),
        numpy_helper.from_array(values(dtype, (2, 1, 5)), "cube"),
        numpy_helper.from_array(values(dtype, ()), "scalar"),
        numpy_helper.from_array(values(dtype, (0,)), "empty"),
        numpy_helper.from_array(values(dtype, (2, 0, 3)), "empty3"),
    ]
    assert all(t.HasField("raw_data") for t in tensors)
    got = check_against_onnx(save(tmp_path, tensors))
    assert got["scalar"].shape == () and got["empty3"].shape == (2, 0, 3)


TYPED = {  # data_type -> the TensorProto field make_tensor(raw=False) fills
    TensorProto.FLOAT: "float_data", TensorProto.FLOAT16: "int32_data", TensorProto.DOUBLE: "double_data",
    TensorProto.INT8: "int32_data", TensorProto.UINT8: "int32_data", TensorProto.INT16: "int32_data",
    TensorProto.UINT16: "int32_data", TensorProto.INT32: "int32_data", TensorProto.BOOL: "int32_data",
    TensorProto.INT64: "int64_data", TensorProto.UINT32: "uint64_data", TensorProto.UINT64: "uint64_data",
}


@pytest.mark.parametrize("data_type", TYPED, ids=lambda c: TensorProto.DataType.Name(c))
def test_typed_fields_match_onnx(tmp_path, data_type):
    dtype = helper.tensor_dtype_to_np_dtype(data_type)
    tensors = []
    for name, shape in [("matrix", (3, 4)), ("scalar", ()), ("empty", (0,))]:
        t = helper.make_tensor(name, data_type, shape, values(dtype, shape).flatten(), raw=False)
        assert not t.HasField("raw_data")
        tensors.append(t)
    assert len(getattr(tensors[0], TYPED[data_type])) == 12
    check_against_onnx(save(tmp_path, tensors))


def test_negative_integers(tmp_path):
    """int32 and int64 two's complement: 10-byte varints in int32_data/int64_data."""
    i32 = np.array([-1, -2, -(2**31), 2**31 - 1, 0, -300], np.int32)
    i64 = np.array([-1, -(2**63), 2**63 - 1, -(2**35), 0, -300], np.int64)
    i8 = np.array([-128, -1, 127, 0], np.int8)
    tensors = [
        helper.make_tensor("i32", TensorProto.INT32, [6], i32, raw=False),
        helper.make_tensor("i64", TensorProto.INT64, [2, 3], i64, raw=False),
        helper.make_tensor("i8", TensorProto.INT8, [4], i8, raw=False),
        numpy_helper.from_array(i32, "i32_raw"),
        numpy_helper.from_array(i64, "i64_raw"),
    ]
    got = check_against_onnx(save(tmp_path, tensors))
    np.testing.assert_array_equal(got["i32"], i32)
    np.testing.assert_array_equal(got["i64"], i64.reshape(2, 3))
    np.testing.assert_array_equal(got["i8"], i8)


# --- hand-written protobuf --------------------------------------------------------------

def varint(n):
    n &= (1 << 64) - 1  # negative ints: two's complement, 10 bytes
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def key(field, wire):
    return varint(field << 3 | wire)


def ld(field, payload):  # a length-delimited field
    return key(field, 2) + varint(len(payload)) + payload


def unknown_fields():
    """One field of each wire type, with field numbers no message here uses."""
    return (key(99, 0) + varint(2**63 + 5) + key(98, 1) + b"\x01" * 8 + ld(97, b"\x00" * 300)
            + key(96, 5) + b"\xff" * 4)


def model_bytes(*tensors):
    node = helper.make_node("Identity", ["a"], ["b"]).SerializeToString()
    graph = unknown_fields() + ld(1, node) + b"".join(ld(5, t) for t in tensors) + ld(2, b"g")
    return key(1, 0) + varint(8) + unknown_fields() + ld(7, graph) + ld(8, ld(1, b"") + key(2, 0) + varint(17))


def test_dims_unpacked_and_packed(tmp_path):
    # onnx itself writes dims unpacked (dims is not [packed=true] in onnx.proto): key 0x08
    assert numpy_helper.from_array(np.zeros((2, 3), np.float32)).SerializeToString().startswith(b"\x08\x02\x08\x03")
    w = np.arange(-3, 3, dtype=np.float32).reshape(2, 3)
    i64 = np.array([[-1, 2**40], [-(2**63), 7], [300, -300]], np.int64)
    packed_dims = ld(1, varint(2) + varint(3))
    unpacked_dims = key(1, 0) + varint(3) + key(1, 0) + varint(2)
    tensors = [
        # packed dims, raw_data, unknown fields of every wire type inside the tensor
        packed_dims + key(2, 0) + varint(1) + ld(8, b"packed") + unknown_fields() + ld(9, w.tobytes()),
        # unpacked dims, int64_data unpacked (one varint per key)
        unpacked_dims + key(2, 0) + varint(7) + ld(8, b"unpacked")
        + b"".join(key(7, 0) + varint(int(v)) for v in i64.flat),
        # dims split over a packed and an unpacked occurrence; int64_data packed in two chunks
        ld(1, varint(3)) + key(1, 0) + varint(2) + key(2, 0) + varint(7) + ld(8, b"mixed")
        + ld(7, b"".join(varint(int(v)) for v in i64.flat[:4])) + ld(7, b"".join(varint(int(v)) for v in i64.flat[4:])),
        # float_data unpacked (fixed32 per key) and a scalar (no dims)
        key(1, 0) + varint(6) + key(2, 0) + varint(1) + ld(8, b"floats")
        + b"".join(key(4, 5) + np.float32(v).tobytes() for v in w.flat),
        key(2, 0) + varint(7) + ld(8, b"scalar") + key(7, 0) + varint(-5),
    ]
    path = tmp_path / "hand.onnx"
    path.write_bytes(model_bytes(*tensors))
    got = check_against_onnx(path)  # protobuf itself parses these bytes to the same tensors
    np.testing.assert_array_equal(got["packed"], w)
    np.testing.assert_array_equal(got["unpacked"], i64)
    np.testing.assert_array_equal(got["mixed"], i64)
    np.testing.assert_array_equal(got["floats"], w.reshape(6))
    assert got["scalar"].shape == () and got["scalar"] == -5


# --- real chargen step graphs -----------------------------------------------------------

@pytest.fixture(scope="module")
def step_graphs():
    pytest.importorskip("onnxruntime")
    from chargen.export.graph_variants import random_weights

    from chargen.export.graph import build_step_graph
    from chargen.export.onnx_export import quantize_int8
    from chargen.runtime.contract import Vocab

    vocab = Vocab.from_text("\n abcdefghij")
    config = dict(vocab_size=len(vocab), embedding_dim=16, hidden_size=32, layers=2, dropout=0.0)
    w = random_weights(len(vocab), 16, 32, 2)
    src = build_step_graph(w, config, vocab, corpus="random", precision="int8")
    return {"int8": quantize_int8(src), "fp32": build_step_graph(w, config, vocab, corpus="random", precision="fp32")}


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_chargen_step_graph(tmp_path, step_graphs, precision):
    model = step_graphs[precision]
    path = tmp_path / f"{precision}.onnx"
    onnx.save(model, path)
    names = [t.name for t in model.graph.initializer]
    got = check_against_onnx(path, names)
    dtypes = {a.dtype for a in got.values()}
    if precision == "int8":  # MatMulInteger: int8 weights, float scales, int8 zero points
        assert np.dtype(np.int8) in dtypes and np.dtype(np.float32) in dtypes
        assert any(n.op_type == "MatMulInteger" for n in model.graph.node)

    asked = [names[0], names[-1], "not-a-tensor"]
    sub = read_initializers(path, names=asked)
    assert set(sub) == {names[0], names[-1]}
    np.testing.assert_array_equal(sub[names[0]], got[names[0]])
    assert set(read_initializers(path, names=iter(names[1:2]))) == {names[1]}
    assert read_initializers(path, names=[]) == {}
    # the metadata the runtime picks an engine by, as onnx reads it
    meta = read_metadata(path)
    assert meta == {p.key: p.value for p in model.metadata_props} and meta["chargen.precision"] == precision


def test_metadata_errors_and_absence(tmp_path):
    model = helper.make_model(helper.make_graph([], "g", [], []))
    onnx.save(model, tmp_path / "bare.onnx")
    assert read_metadata(tmp_path / "bare.onnx") == {}
    (tmp_path / "junk.onnx").write_bytes(b"\x72\x05ab")  # field 14, a length past the end
    with pytest.raises(OnnxFileError, match="junk.onnx"):
        read_metadata(tmp_path / "junk.onnx")
    with pytest.raises(OnnxFileError, match="cannot read"):
        read_metadata(tmp_path / "missing.onnx")


def test_metadata_of_a_truncated_model_is_an_error(tmp_path, step_graphs):
    whole = step_graphs["int8"].SerializeToString()
    (tmp_path / "cut.onnx").write_bytes(whole[: len(whole) // 2])  # inside the graph
    with pytest.raises(OnnxFileError, match="cut.onnx: truncated or corrupt protobuf"):
        read_metadata(tmp_path / "cut.onnx")
    (tmp_path / "cut2.onnx").write_bytes(whole[:-3])  # inside the last metadata entry
    with pytest.raises(OnnxFileError, match="cut2.onnx"):
        read_metadata(tmp_path / "cut2.onnx")


def test_unsupported_type_only_fails_when_asked(tmp_path):
    path = save(tmp_path, [
        numpy_helper.from_array(np.ones(3, np.float32), "w"),
        helper.make_tensor("words", TensorProto.STRING, [2], [b"a", b"b"]),
        helper.make_tensor("bf16", TensorProto.BFLOAT16, [2], [1.0, 2.0]),
    ])
    assert set(read_initializers(path, names=["w"])) == {"w"}
    for name in ["words", "bf16"]:
        with pytest.raises(OnnxFileError, match=f"model.onnx.*{name}.*data type"):
            read_initializers(path, names=[name, "w"])
    with pytest.raises(OnnxFileError, match="model.onnx"):
        read_initializers(path)


def test_parses_a_13mb_model_fast(tmp_path):
    rng = np.random.default_rng(0)
    tensors = [numpy_helper.from_array(rng.standard_normal((1000, 1024)).astype(np.float32), f"big{i}")
               for i in range(3)]
    tensors += [numpy_helper.from_array(rng.standard_normal(64).astype(np.float32), f"small{i}") for i in range(500)]
    path = save(tmp_path, tensors)
    assert path.stat().st_size > 12_000_000
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        got = read_initializers(path)
        best = min(best, time.perf_counter() - start)
    assert len(got) == 503 and np.array_equal(got["big1"], numpy_helper.to_array(tensors[1]))
    assert best < 0.5, f"{best * 1000:.0f} ms"  # typically ~10 ms; generous for a loaded machine


# --- errors -----------------------------------------------------------------------------

def test_missing_file(tmp_path):
    with pytest.raises(OnnxFileError, match="nope.onnx.*cannot read"):
        read_initializers(tmp_path / "nope.onnx")
    with pytest.raises(OnnxFileError, match="cannot read"):
        read_initializers(tmp_path)  # a directory


def test_truncated_file(tmp_path, step_graphs):
    model = step_graphs["fp32"]
    data = model.SerializeToString()
    big = max(model.graph.initializer, key=lambda t: len(t.raw_data))
    inside = data.index(big.raw_data) + len(big.raw_data) // 2
    graph = model.graph.SerializeToString()
    start = data.index(graph)
    end = start + len(graph)  # every cut inside the graph field leaves a length running past the end
    cuts = [inside, start, start + 1, end - 1, *np.linspace(start, end - 1, 40).astype(int)]
    for cut in cuts:
        path = tmp_path / "cut.onnx"
        path.write_bytes(data[:cut])
        with pytest.raises(OnnxFileError, match=r"cut\.onnx"):
            read_initializers(path)
    path.write_bytes(data[:inside])
    with pytest.raises(OnnxFileError, match=r"cut\.onnx: truncated or corrupt protobuf"):
        read_initializers(path)


@pytest.mark.parametrize("garbage", [
    b"", b"\xff" * 32, b"this is not an onnx model\n", b"\x3a\x10short", b"\x08\x01\x3b\x00",  # group wire type
    np.random.default_rng(1).bytes(4096), b"\x00\x01\x02",
], ids=["empty", "long-varint", "text", "length-past-end", "group", "random", "field-0"])
def test_garbage(tmp_path, garbage):
    path = tmp_path / "garbage.onnx"
    path.write_bytes(garbage)
    with pytest.raises(OnnxFileError, match=r"garbage\.onnx: ") as info:
        read_initializers(path)
    assert "\n" not in str(info.value)


def test_corrupt_tensors(tmp_path):
    t = numpy_helper.from_array(np.ones((2, 3), np.float32), "short")
    t.dims[0] = 5
    typed = helper.make_tensor("few", TensorProto.INT64, [3], [1, 2, 3], raw=False)
    typed.dims[0] = 4
    bad_dims = numpy_helper.from_array(np.ones(0, np.float32), "neg")
    bad_dims.dims[0] = -1
    for tensor, what in [(t, "short.*raw_data"), (typed, "few.*3 values"), (bad_dims, "neg.*negative")]:
        path = save(tmp_path, [tensor], "bad.onnx")
        with pytest.raises(OnnxFileError, match=f"bad.onnx: tensor '{what}"):
            read_initializers(path)
    # wrong wire types inside a tensor: data_type as bytes, packed floats of 5 bytes
    for tensor in [ld(2, b"\x01") + ld(8, b"x"), key(2, 0) + varint(1) + ld(8, b"x") + ld(4, b"\x00" * 5)]:
        path = tmp_path / "wire.onnx"
        path.write_bytes(model_bytes(tensor))
        with pytest.raises(OnnxFileError, match=r"wire\.onnx: truncated or corrupt protobuf"):
            read_initializers(path)


def test_external_data(tmp_path):
    t = numpy_helper.from_array(np.ones((4, 4), np.float32), "outside")
    t.data_location = TensorProto.EXTERNAL
    entry = t.external_data.add()
    entry.key, entry.value = "location", "weights.bin"
    t.ClearField("raw_data")
    path = save(tmp_path, [t, numpy_helper.from_array(np.ones(2, np.float32), "inside")], "ext.onnx")
    with pytest.raises(OnnxFileError, match="ext.onnx: tensor 'outside' is stored in an external file; "
                                            "chargen reads self-contained models only"):
        read_initializers(path)
    assert set(read_initializers(path, names=["inside"])) == {"inside"}
