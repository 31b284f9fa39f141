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

from chargen.export.graph import build_step_graph, random_weights  # noqa: E402
from chargen.runtime import contract  # noqa: E402
from chargen.runtime.contract import Vocab  # noqa: E402

ALPHABET = "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"  # tiny-shakespeare's 65


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
