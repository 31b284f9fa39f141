"""Shared fixtures: small chargen model files from random weights, for every test folder
(the builders are in tests/modelkit.py, importable from any test folder).

    make_model(path, precision="fp32" | "fp16" | "int8", layers=1, hidden=64, ...) -> Path  (a fixture)
    model_files["fp32" | "int8"]                                                     (one small model)

The weights follow torch's default init (chargen.export.graph_variants.random_weights) with a
sharpened head, so the distributions are not flat; rnn_scale=4 makes the recurrence chaotic. Trained models come
from tests/export/conftest.py's checkpoints where a test needs them.
"""

from __future__ import annotations

import os
import tempfile

import pytest

# engine='auto' measures engines on first use (chargen.runtime.calibrate): tests do not depend on
# what a measurement found, so it is off for every test and the subprocesses they start, and the
# cache goes to a folder of this run (tests/runtime/test_calibrate.py turns it on where it is tested)
os.environ["CHARGEN_NO_CALIBRATION"] = "1"
os.environ["CHARGEN_CACHE_DIR"] = tempfile.mkdtemp(prefix="chargen-cache-")


from modelkit import model_file  # noqa: E402  (tests/modelkit.py)


@pytest.fixture(scope="session")
def make_model():
    """model_file, for fixtures of any scope."""
    return model_file


@pytest.fixture(scope="session")
def model_files(tmp_path_factory):
    """fp32 and int8 files of one small random model (L=1, H=64), made once per run."""
    folder = tmp_path_factory.mktemp("models")
    return {p: model_file(folder / f"{p}.onnx", p) for p in ("fp32", "int8")}
