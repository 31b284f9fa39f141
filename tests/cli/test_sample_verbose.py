"""`gen sample --verbose` names the engine that ran (the README's advice for reproducing
sampled text across machines rests on it)."""

from __future__ import annotations

import pytest

pytest.importorskip("onnx")

from typer.testing import CliRunner  # noqa: E402

from chargen.cli import app  # noqa: E402

runner = CliRunner()


@pytest.mark.parametrize("precision, engine, says", [
    ("fp32", "auto", "engine onnxruntime (only engine)"),
    ("int8", "auto", "engine onnxruntime (calibration off)"),
    ("int8", "onnxruntime", "engine onnxruntime (pinned)"),
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


def test_verbose_says_what_auto_measured(model_files, tmp_path, monkeypatch):
    monkeypatch.setenv("CHARGEN_NO_CALIBRATION", "0")
    monkeypatch.setenv("CHARGEN_CACHE_DIR", str(tmp_path))
    args = ["sample", "-m", str(model_files["int8"]), "--length", "10", "--seed", "1", "--num-samples", "3", "-v"]
    first, again = runner.invoke(app, args), runner.invoke(app, args)
    assert first.exit_code == 0 and again.exit_code == 0, first.output
    assert "(measured: " in first.stderr and "(cache: " in again.stderr, (first.stderr, again.stderr)
    for line in (first.stderr, again.stderr):
        assert "chargen " in line and "onnxruntime " in line and "chars/s" in line
