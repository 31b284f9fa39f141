"""`gen web MODEL OUT/`: the folder it writes, and its one-line errors."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from chargen.cli import app
from chargen.web import PAGE_FILES


def gen_web(*args):
    return CliRunner().invoke(app, ["web", *map(str, args)])


def test_the_folder_holds_the_page_the_model_and_the_module(web_models, tmp_path):
    result = gen_web(web_models["int8"], tmp_path / "site")
    assert result.exit_code == 0, result.output
    files = sorted(p.name for p in (tmp_path / "site").iterdir())
    assert files == sorted(PAGE_FILES + ["int8.onnx"])
    page = (tmp_path / "site" / "index.html").read_text()
    assert 'data-model="int8.onnx"' in page
    assert "http://" not in page and "https://" not in page  # nothing from another origin
    # writing it again over the folder it wrote is fine
    assert gen_web(web_models["int8"], tmp_path / "site").exit_code == 0


def test_the_folder_of_a_tutorial_size_int8_model_is_under_6_mb(make_model, tmp_path):
    model = make_model(tmp_path / "tutorial.onnx", "int8", hidden=1024, embedding=256)
    assert gen_web(model, tmp_path / "site").exit_code == 0
    total = sum(p.stat().st_size for p in (tmp_path / "site").iterdir())
    assert total <= 6_000_000, total


@pytest.mark.parametrize("case,words", [
    ("fp32", "the page runs int8 models (gen export --precision int8), and this one is fp32"),
    ("nbits", "with --int8-kernel dynamic, and this one has nbits"),
    ("missing", "no such model file"),
    ("not-onnx", "truncated or corrupt protobuf"),
    ("taken", "the folder has files of its own"),
])
def test_errors_are_one_line(web_models, tmp_path, case, words):
    model, out = web_models.get(case, web_models["int8"]), tmp_path / "site"
    if case == "missing":
        model = tmp_path / "nope.onnx"
    if case == "not-onnx":
        model = tmp_path / "x.onnx"
        model.write_text("hello\n" * 100)
    if case == "taken":
        out.mkdir()
        (out / "notes.txt").write_text("mine")
    result = gen_web(model, out)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], result.output
    if case == "taken":
        assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
