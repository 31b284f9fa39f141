"""Fixtures of the chargen.web tests: small model files (tests/modelkit.py), the tools on the path."""

from __future__ import annotations

import shutil

import pytest

from webkit import require

pytest.importorskip("onnx")  # the test models are written with chargen.export


@pytest.fixture(scope="session")
def web_models(tmp_path_factory, make_model):
    """int8 (1 layer of 64; 2 layers of 96), fp32, fp16 and an nbits int8 file of random models."""
    folder = tmp_path_factory.mktemp("web-models")
    return {
        "int8": make_model(folder / "int8.onnx", "int8"),
        "int8-2l": make_model(folder / "int8-2l.onnx", "int8", layers=2, hidden=96, seed=5),
        "fp32": make_model(folder / "fp32.onnx", "fp32", layers=2, hidden=48),
        "fp16": make_model(folder / "fp16.onnx", "fp16"),
        "nbits": make_model(folder / "nbits.onnx", "int8", kernel="nbits", hidden=128),
    }


@pytest.fixture(scope="session")
def ort_web():
    """onnxruntime-web's files as gen web vendors them (chargen's cache, filled from npm once)."""
    from chargen.web import onnxruntime_web

    require(shutil.which("npm"), "npm", "apt-get install nodejs npm")
    return onnxruntime_web()
