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


def test_an_fp32_folder_holds_onnxruntime_web_too(web_models, ort_web, tmp_path):
    from chargen.web import ORT_WEB_FILES

    result = gen_web(web_models["fp32"], tmp_path / "site", "--onnxruntime-web", ort_web)
    assert result.exit_code == 0, result.output
    files = sorted(p.name for p in (tmp_path / "site").iterdir())
    assert files == sorted(PAGE_FILES + ORT_WEB_FILES + ["fp32.onnx"])
    # an int8 model written over it takes onnxruntime-web away again
    assert gen_web(web_models["int8"], tmp_path / "site").exit_code == 1  # fp32.onnx is not gen web's own file
    (tmp_path / "site" / "fp32.onnx").unlink()
    assert gen_web(web_models["int8"], tmp_path / "site").exit_code == 0
    assert sorted(p.name for p in (tmp_path / "site").iterdir()) == sorted(PAGE_FILES + ["int8.onnx"])


@pytest.mark.parametrize("case,words", [
    ("old-ort", "onnxruntime-web 1.0.0; chargen's page is pinned to 1.31.1"),
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
    extra = []
    if case == "old-ort":
        model = web_models["fp32"]
        (tmp_path / "ort" / "dist").mkdir(parents=True)
        (tmp_path / "ort" / "package.json").write_text('{"name": "onnxruntime-web", "version": "1.0.0"}')
        extra = ["--onnxruntime-web", tmp_path / "ort"]
    result = gen_web(model, out, *extra)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], result.output
    if case == "taken":
        assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
