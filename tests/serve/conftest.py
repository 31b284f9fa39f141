"""Fixtures of the gen serve tests: tiny model files and real servers on 127.0.0.1."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")
pytest.importorskip("onnx")  # the test models are written with chargen.export

from servekit import ServerProcess, write_models  # noqa: E402

BIG = "1000000"  # --max-chars for servers whose requests must outlast a test's actions


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    """(fp32, int8) tiny random-weight models: V=65, E=16, H=64, 1 layer."""
    return write_models(tmp_path_factory.mktemp("serve-models"))


@pytest.fixture(scope="session")
def model_path(models):
    return models[0]


def start(tmp_path_factory, model, *args, name="server"):
    return ServerProcess(model, *args, log=tmp_path_factory.mktemp(name) / "server.log")


@pytest.fixture(scope="session")
def server(tmp_path_factory, model_path):
    """The shared fp32 server: 64 slots, a long --max-chars."""
    s = start(tmp_path_factory, model_path, "--max-chars", BIG)
    yield s
    s.stop()


@pytest.fixture(scope="session")
def int8_server(tmp_path_factory, models):
    """The int8 model on chargen's int8 step (rows quantized alone: seeded texts do not depend on
    the other slots; onnxruntime's int8 graph shares one activation scale across the batch)."""
    s = start(tmp_path_factory, models[1], "--engine", "chargen", name="int8")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def key_server(tmp_path_factory, model_path):
    """--api-key and --cors-origin."""
    s = start(tmp_path_factory, model_path, "--api-key", "sekrit", "--cors-origin", "http://app.test", name="key")
    yield s
    s.stop()


@pytest.fixture(scope="session")
def two_models_server(tmp_path_factory, models):
    """One server, two models: the fp32 one under its stem ('tiny'), the int8 one as 'q8'
    (--model NAME=PATH); engine auto, as a user starts it."""
    s = start(tmp_path_factory, models[0], "--model", f"q8={models[1]}", "--max-chars", BIG, name="two")
    yield s
    s.stop()
