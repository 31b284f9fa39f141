"""docs/model-format.md is a specification: its worked example (one step by hand with numpy)
runs against real model files, and the tables name what the files hold."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

onnx = pytest.importorskip("onnx")

DOC = Path(__file__).resolve().parents[2] / "docs" / "model-format.md"


def example() -> str:
    text = DOC.read_text(encoding="utf-8")
    part = text[text.index("## One step by hand"):]
    return re.search(r"```python\n(.*?)```", part, re.S).group(1)


@pytest.mark.parametrize("layers", [1, 2])
def test_the_worked_example_is_onnxruntimes_step(layers, make_model, tmp_path):
    path = make_model(tmp_path / f"L{layers}.onnx", "fp32", layers=layers, hidden=48)
    scope = {"path": str(path)}
    exec(compile(example(), str(DOC), "exec"), scope)  # its own asserts compare with onnxruntime
    assert scope["next_char"] in scope["vocab"]


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_the_tables_name_what_a_file_holds(precision, make_model, tmp_path):
    doc = DOC.read_text(encoding="utf-8")
    model = onnx.load(make_model(tmp_path / "m.onnx", precision, layers=2, hidden=32))
    meta = {p.key: p.value for p in model.metadata_props}
    for key in meta:
        assert f"`{key}`" in doc, key
    assert meta["chargen.format"] == "1" and meta["chargen.precision"] == precision
    assert isinstance(json.loads(meta["chargen.vocab"]), list)
    io = [(v.name, v.type.tensor_type.elem_type) for v in [*model.graph.input, *model.graph.output]]
    assert [n for n, _ in io] == ["token", "h", "logits", "h_out"]
    names = {t.name for t in model.graph.initializer}
    suffixes = ("_quantized", "_scale", "_zero_point") if precision == "int8" else ("",)
    for base in ("gh_l0_w_t", "gh_l1_w_t", "gi_l1_w_t"):
        assert all(base + s in names for s in suffixes), (base, sorted(names))
    for name in ("gi_table_l0", "gh_n_l0_b", "gh_n_l1_b", "gi_l1_b", "head_w_t", "head_b"):
        assert name in names, name
        documented = name if name == "gi_table_l0" else re.sub(r"_l\d", "_l{k}", name)
        assert f"`{documented}`" in doc, documented
