"""engine='auto' chooses per batch size by measurement (chargen.runtime.calibrate): what it
measured decides, the user cache keeps it, any change of what decides it measures again, and
CHARGEN_NO_CALIBRATION turns it off. Which engine wins is this machine's business: the tests
hold the choice to its own figures, never to an engine."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime.quantization")

import chargen  # noqa: E402
from chargen.runtime import Batch, GenerationOptions, Generator, Model, calibrate  # noqa: E402


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """Calibration on (tests/conftest.py turns it off for every other test), in a fresh cache."""
    monkeypatch.setenv(calibrate.NO_CALIBRATION_ENV, "0")
    monkeypatch.setenv(calibrate.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache" / "calibration.json"


@pytest.fixture(scope="module")
def path(make_model, tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("cal") / "int8.onnx", "int8", layers=2, hidden=96)


def entries(cache_file):
    return json.loads(cache_file.read_text())["entries"]


def test_auto_runs_each_batch_size_on_the_engine_that_measured_faster(path, cache):
    model = Model.load(path, device="cpu")
    assert model.engine == "auto" and model.int8_step is not None
    for B in (1, 16):
        choice = model.choice(B)
        assert choice.source == "measured"
        assert set(choice.figures) == {"chargen", "onnxruntime"} and min(choice.figures.values()) > 0
        assert choice.engine == max(choice.figures, key=choice.figures.get)
        assert Generator(model, GenerationOptions(seed=1), batch_size=B).engine == choice.engine
        assert model.choice(B) is choice  # measured once per model and batch size
        assert choice.engine in choice.describe() and "chars/s" in choice.describe()
    assert Batch(model, max_batch=16).engine == model.choice(16).engine
    keys = [json.loads(k) for k in entries(cache)]
    assert sorted(k["batch"] for k in keys) == [1, 16]
    assert {k["chargen"] for k in keys} == {chargen.__version__}
    assert all(k["cpu"] == calibrate.cpu_name() and k["kernel"] == model.int8_step.kernel_for(k["batch"]) for k in keys)


def test_the_cache_keeps_a_measurement_until_what_decides_it_changes(path, cache, monkeypatch):
    first = Model.load(path, device="cpu").choice(4)
    again = Model.load(path, device="cpu").choice(4)  # a new process would read the same file
    assert again.source == "cache" and again.figures == first.figures and again.engine == first.engine
    # other threads: another measurement, beside the first
    assert Model.load(path, device="cpu", threads=1).choice(4).source == "measured"
    assert len(entries(cache)) == 2
    # another chargen (or onnxruntime, CPU, kernel, model shape): measured again
    monkeypatch.setattr(chargen, "__version__", chargen.__version__ + ".dev1")
    assert Model.load(path, device="cpu").choice(4).source == "measured"
    assert len(entries(cache)) == 3


def test_an_unreadable_cache_is_measured_again_and_rewritten(path, cache):
    cache.parent.mkdir(parents=True)
    cache.write_text("{not json")
    assert Model.load(path, device="cpu").choice(2).source == "measured"
    assert len(entries(cache)) == 1


def test_calibration_off_and_pinned_engines_measure_nothing(path, cache, monkeypatch):
    for engine in ("chargen", "onnxruntime"):
        choice = Model.load(path, device="cpu", engine=engine).choice(4)
        assert (choice.engine, choice.source, choice.figures) == (engine, "pinned", {})
    monkeypatch.setenv(calibrate.NO_CALIBRATION_ENV, "1")
    model = Model.load(path, device="cpu")
    assert model.int8_step is None and model.engine == "onnxruntime"
    assert model.choice(4) == calibrate.Choice("onnxruntime", "calibration off")
    assert not cache.exists()
