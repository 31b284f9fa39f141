"""`gen sample --verbose` names the engine that ran (the README's advice for reproducing
sampled text across machines rests on it)."""

from __future__ import annotations

import pytest

pytest.importorskip("onnx")

from typer.testing import CliRunner  # noqa: E402

from chargen.cli import app  # noqa: E402

runner = CliRunner()


@pytest.mark.parametrize("precision, engine, says", [
    ("fp32", "auto", "engine onnxruntime"),
    ("int8", "onnxruntime", "engine onnxruntime"),
    ("int8", "chargen", "engine chargen's int8 step ("),
])
def test_verbose_names_the_engine(model_files, precision, engine, says):
    path = model_files[precision]
    r = runner.invoke(app, ["sample", "-m", str(path), "--length", "10", "--seed", "1", "--engine", engine, "-v"])
    assert r.exit_code == 0, r.output
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{path}: {precision}, L=1") and says in lines[0], lines
    quiet = runner.invoke(app, ["sample", "-m", str(path), "--length", "10", "--seed", "1", "--engine", engine])
    assert quiet.stderr == "" and quiet.stdout == r.stdout
