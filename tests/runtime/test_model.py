"""chargen.runtime.Model: loading real .onnx files, refusing what is not a chargen model,
device selection. Model files are built with export.graph from random weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from chargen.export.graph_variants import random_weights  # noqa: E402

from chargen.export.graph import build_step_graph  # noqa: E402
from chargen.runtime import contract  # noqa: E402
from chargen.runtime.contract import Vocab  # noqa: E402

from modelkit import ALPHABET  # noqa: E402  (tiny-shakespeare's 65 characters)


def make_model_proto(E=16, H=32, L=2, seed=0, alphabet=ALPHABET):
    vocab = Vocab.from_text(alphabet)
    config = dict(vocab_size=len(vocab), embedding_dim=E, hidden_size=H, layers=L, dropout=0.0)
    weights = random_weights(len(vocab), E, H, L, seed)
    return build_step_graph(weights, config, vocab, corpus="test", val_loss=1.5), weights, config, vocab


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    proto, *_ = make_model_proto()
    path = tmp_path_factory.mktemp("model") / "tiny.onnx"
    onnx.save(proto, path)
    return path


def _set_meta(proto, key, value):
    for p in proto.metadata_props:
        if p.key == key:
            if value is None:
                proto.metadata_props.remove(p)
            else:
                p.value = value
            return proto
    raise KeyError(key)


def test_load(model_path):
    from chargen.runtime import Model

    m = Model.load(model_path, device="cpu")
    assert m.device == "cpu"
    assert m.vocab == Vocab.from_text(ALPHABET)
    assert (m.num_layers, m.hidden_size, m.vocab_size) == (2, 32, 65)
    assert m.config["embedding_dim"] == 16
    assert m.metadata[contract.META_FORMAT] == str(contract.FORMAT_VERSION)
    assert m.corpus == "test" and m.val_loss == pytest.approx(1.5) and m.precision == "fp32"
    assert "tiny.onnx" in repr(m)
    assert Model.load(str(model_path), device="cpu", threads=1).device == "cpu"


def test_missing_file(tmp_path):
    from chargen.runtime import Model, ModelError

    with pytest.raises(ModelError, match="no such model file"):
        Model.load(tmp_path / "nope.onnx")
    with pytest.raises(ModelError, match="not a file"):
        Model.load(tmp_path)


@pytest.mark.parametrize("content", [b"", b"hello, I am not a model\n", bytes(range(256)) * 10])
def test_not_onnx(tmp_path, content):
    from chargen.runtime import Model, ModelError

    path = tmp_path / "junk.onnx"
    path.write_bytes(content)
    with pytest.raises(ModelError) as e:
        Model.load(path)
    assert "not an ONNX model" in str(e.value) or "cannot load" in str(e.value)
    assert "\n" not in str(e.value)


def test_onnx_without_chargen_metadata(tmp_path):
    from onnx import TensorProto, helper

    from chargen.runtime import Model, ModelError

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    path = tmp_path / "other.onnx"
    onnx.save(proto, path)
    with pytest.raises(ModelError, match="not a chargen model"):
        Model.load(path)
    # chargen metadata on a graph that breaks the step contract
    entry = proto.metadata_props.add()
    entry.key, entry.value = contract.META_FORMAT, str(contract.FORMAT_VERSION)
    entry = proto.metadata_props.add()
    entry.key, entry.value = contract.META_VOCAB, json.dumps(list("ab"))
    onnx.save(proto, path)
    with pytest.raises(ModelError, match="graph inputs"):
        Model.load(path)


@pytest.mark.parametrize("version,match", [("2", "format version 2"), ("0", "format version 0"), ("x", "unreadable")])
def test_wrong_format_version(tmp_path, version, match):
    from chargen.runtime import Model, ModelError

    proto, *_ = make_model_proto()
    _set_meta(proto, contract.META_FORMAT, version)
    path = tmp_path / "v.onnx"
    onnx.save(proto, path)
    with pytest.raises(ModelError, match=match) as e:
        Model.load(path)
    assert "\n" not in str(e.value)


def test_bad_vocab_metadata(tmp_path):
    from chargen.runtime import Model, ModelError

    proto, *_ = make_model_proto()
    _set_meta(proto, contract.META_VOCAB, None)
    onnx.save(proto, tmp_path / "a.onnx")
    with pytest.raises(ModelError, match="vocabulary"):
        Model.load(tmp_path / "a.onnx")
    proto, *_ = make_model_proto()
    _set_meta(proto, contract.META_VOCAB, json.dumps(list("abc")))  # 3 symbols, 65 logits
    onnx.save(proto, tmp_path / "b.onnx")
    with pytest.raises(ModelError):
        Model.load(tmp_path / "b.onnx")


def test_bad_arguments(model_path):
    from chargen.runtime import Model

    with pytest.raises(ValueError, match="device"):
        Model.load(model_path, device="tpu")
    with pytest.raises(ValueError, match="threads"):
        Model.load(model_path, threads=-1)


def _cuda_usable() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


@pytest.mark.skipif(_cuda_usable(), reason="this machine has CUDA")
def test_cuda_on_cpu_machine_is_a_clear_error(model_path):
    from chargen.runtime import DeviceError, Model

    with pytest.raises(DeviceError) as e:
        Model.load(model_path, device="cuda")
    msg = str(e.value)
    assert "cuda" in msg and "device='cpu'" in msg and "\n" not in msg


def _run_python(code: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=120, **kwargs)


@pytest.mark.skipif(_cuda_usable(), reason="this machine has CUDA")
def test_auto_is_cpu_and_quiet(model_path):
    """device='auto' on a CPU-only machine: 'cpu', and nothing at all on fd 1 or fd 2."""
    proc = _run_python(f"""
        from chargen.runtime import Model, Generator, GenerationOptions
        m = Model.load({str(model_path)!r})
        assert m.device == "cpu", m.device
        g = Generator(m, GenerationOptions(seed=0, max_length=5))
        g.generate("ab")
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "" and proc.stdout == ""


def test_import_is_lazy():
    """Importing chargen.runtime loads neither onnxruntime nor torch; Model does not load torch."""
    proc = _run_python("""
        import sys
        import chargen.runtime
        assert "onnxruntime" not in sys.modules and "torch" not in sys.modules
        from chargen.runtime import Model, Generator, GenerationOptions, ModelError
        assert "torch" not in sys.modules
        print("ok")
    """)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_without_onnxruntime(model_path):
    proc = _run_python(f"""
        import sys
        sys.modules["onnxruntime"] = None  # as if it were not installed
        from chargen.runtime import Model
        try:
            Model.load({str(model_path)!r})
        except ImportError as e:
            print(e)
    """)
    assert proc.returncode == 0, proc.stderr
    assert 'pip install "chargen[cpu]"' in proc.stdout and "chargen[gpu]" in proc.stdout


def test_model_serves_threads_and_generators(model_path):
    """Model.generator() is the same as Generator(model, ...)."""
    from chargen.runtime import GenerationOptions, Generator, Model

    m = Model.load(model_path)
    o = GenerationOptions(seed=5, max_length=20)
    assert m.generator(o, batch_size=2).generate("ab") == Generator(m, o, batch_size=2).generate("ab")


def test_model_rejects_wrong_graph_types(tmp_path):
    """A graph with the contract's names but a float16 hidden state is refused."""
    from onnx import TensorProto

    from chargen.runtime import Model, ModelError

    proto, *_ = make_model_proto()
    for i in proto.graph.input:
        if i.name == contract.INPUT_H:
            i.type.tensor_type.elem_type = TensorProto.FLOAT16
    path = tmp_path / "t.onnx"
    onnx.save(proto, path)
    with pytest.raises(ModelError):
        Model.load(path)


def test_env_untouched_by_auto_probe(model_path):
    # fd 2 is restored after loading (the CUDA probe may silence it for a moment)
    from chargen.runtime import Model

    before = os.fstat(2)
    Model.load(model_path, device="auto")
    after = os.fstat(2)
    assert (before.st_ino, before.st_dev) == (after.st_ino, after.st_dev)


@pytest.mark.skipif(_cuda_usable(), reason="this machine has CUDA")
def test_cuda_listed_but_not_really_usable(model_path):
    """onnxruntime lists CUDAExecutionProvider but the session does not get it (onnxruntime-gpu on
    a machine without a usable GPU): 'auto' quietly takes the CPU, 'cuda' is a clear error."""
    proc = _run_python(f"""
        import onnxruntime
        onnxruntime.get_available_providers = lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
        from chargen.runtime import Model, DeviceError
        m = Model.load({str(model_path)!r}, device="auto")
        assert m.device == "cpu" and not m.cuda_graph, (m.device, m.cuda_graph)
        try:
            Model.load({str(model_path)!r}, device="cuda")
        except DeviceError as e:
            assert "could not start its CUDA provider" in str(e), e
        else:
            raise AssertionError("device='cuda' loaded")
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "" and proc.stdout == ""


# ---------------------------------------------------------------- int8 with MatMulNBits
def _int8_nbits_path(tmp_path, kernel="nbits"):
    pytest.importorskip("onnxruntime.quantization")
    from chargen.export.onnx_export import quantize_int8

    vocab = Vocab.from_text(ALPHABET)
    config = dict(vocab_size=len(vocab), embedding_dim=16, hidden_size=64, layers=2, dropout=0.0)
    weights = random_weights(len(vocab), 16, 64, 2, 3)
    proto = quantize_int8(build_step_graph(weights, config, vocab, corpus="test", precision="int8"), kernel=kernel)
    fp32 = build_step_graph(weights, config, vocab, corpus="test")
    paths = tmp_path / f"int8-{kernel}.onnx", tmp_path / "fp32.onnx"
    onnx.save(proto, paths[0])
    onnx.save(fp32, paths[1])
    return paths


def test_int8_nbits_model_loads_and_tracks_fp32(tmp_path):
    """An nbits int8 export runs through the runtime and stays near the float32 graph over a
    rollout; where this CPU has onnxruntime's 8-bit kernel, loading it warns of nothing."""
    import warnings

    import onnxruntime as ort

    from chargen.runtime import GenerationOptions, Model, SlowModelWarning
    from chargen.runtime.model import _platform_facts, nbits_slow_reason

    int8_path, fp32_path = _int8_nbits_path(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m8 = Model.load(int8_path, device="cpu")
    slow = [w for w in caught if issubclass(w.category, SlowModelWarning)]
    assert bool(slow) == bool(nbits_slow_reason(*_platform_facts(ort)))
    assert m8.precision == "int8" and m8.metadata[contract.META_INT8_KERNEL] == "nbits"
    m32 = Model.load(fp32_path, device="cpu")
    text = (ALPHABET * 4)[:200]
    g8, g32 = (m.generator(GenerationOptions(seed=1)) for m in (m8, m32))
    g8.feed("\n")
    g32.feed("\n")
    worst = float(np.abs(g8.logits - g32.logits).max())
    for ch in text:  # teacher-forced: the same input every step, so the states may drift only by rounding
        g8.advance([m8.vocab.encode(ch)[0]])
        g32.advance([m32.vocab.encode(ch)[0]])
        worst = max(worst, float(np.abs(g8.logits - g32.logits).max()))
    assert 0 < worst < 0.1


def test_int8_nbits_warns_where_onnxruntime_has_no_kernel(tmp_path, monkeypatch):
    """On a CPU without int8 dot products (a Raspberry Pi 4's Cortex-A72, say) onnxruntime runs
    MatMulNBits by dequantizing every call: the load says so, once, and still works."""
    import warnings

    from chargen.runtime import Model, SlowModelWarning
    from chargen.runtime import model as model_module

    int8_path, fp32_path = _int8_nbits_path(tmp_path)
    monkeypatch.setattr(model_module, "_platform_facts", lambda ort: ("aarch64", {"ASIMD"}, "1.32.0"))
    with pytest.warns(SlowModelWarning, match=r"no int8 kernel here \(the CPU has no int8 dot-product.*--int8-kernel dynamic"):
        m = Model.load(int8_path, device="cpu")
    assert len(m.generator().generate("ROMEO", 5)[0]) == 5
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # fp32 and the portable int8 never warn
        Model.load(fp32_path, device="cpu")
        Model.load(_int8_nbits_path(tmp_path, "dynamic")[0], device="cpu")


@pytest.mark.parametrize("machine, features, version, slow", [
    ("x86_64", {"AVX2", "AVX512VNNI"}, "1.32.0", None),
    ("AMD64", {"AVX2"}, "1.22.0", None),
    ("x86_64", {"AVX", "SSE42"}, "1.32.0", "no AVX2"),
    ("x86_64", {"AVX2"}, "1.21.1", "predates its 8-bit x86 kernels"),
    ("aarch64", {"ASIMD", "ASIMDDP"}, "1.23.2", None),
    ("arm64", {"ASIMD", "ASIMDDP"}, "1.22.0", "predates its 8-bit ARM64 kernels"),
    ("aarch64", {"ASIMD"}, "1.32.0", "no int8 dot-product"),
    ("armv7l", {"NEON"}, "1.32.0", "no 8-bit kernel for armv7l"),
    ("x86_64", {"AVX2"}, "1.24.0.dev20260101", None),
])
def test_nbits_slow_reason(machine, features, version, slow):
    from chargen.runtime.model import nbits_slow_reason

    why = nbits_slow_reason(machine, features, version)
    assert (why is None) if slow is None else (slow in why)


def test_onnxruntime_without_8bit_matmulnbits_is_a_clear_error(tmp_path):
    from chargen.runtime.model import _open_error

    e = _open_error(tmp_path / "m.onnx", RuntimeError(
        "[ONNXRuntimeError] : 1 : FAIL : Load model from m.onnx failed: Only 4b quantization is supported "
        "for MatMulNBits op, additional bits support is planned.\nStack trace"), "1.20.1")
    msg = str(e)
    assert "onnxruntime 1.20.1" in msg and "1.22 or later" in msg and "--int8-kernel dynamic" in msg
    assert "\n" not in msg
