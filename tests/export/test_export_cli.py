"""gen export and gen eval through the command line: summaries, agreement, one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from typer.testing import CliRunner

from chargen.cli import app

runner = CliRunner()


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})
    return result


def assert_one_line_error(result, *needles):
    assert result.exit_code == 1, (result.exit_code, result.output)
    err = result.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in result.output, err
    for needle in needles:
        assert needle in err, err
    assert result.exception is None or isinstance(result.exception, SystemExit)


@pytest.fixture(scope="module")
def exported(checkpoint_path, corpus_file, tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    out = folder / "model.onnx"
    result = invoke("export", out, "--checkpoint", checkpoint_path.parent, "--data", corpus_file)
    assert result.exit_code == 0, result.output
    return out, result.stdout


def test_export_prints_a_summary(exported):
    out, stdout = exported
    assert out.is_file()
    for needle in ("exported", "model.onnx", "fp32", "token int64 [batch]", "h float32 [1, batch, 32]",
                   "logits float32 [batch,", "parameters", "symbols", "max |logits - torch|", "500/500"):
        assert needle in stdout, needle


@pytest.mark.parametrize("kernel, op", [(None, "MatMulInteger"), ("nbits", "MatMulNBits")])
def test_export_int8_kernels_then_sample(kernel, op, exported, checkpoint_path, corpus_file, tmp_path, monkeypatch):
    """--precision int8 takes MatMulInteger unless --int8-kernel nbits; gen sample runs either, and
    warns in one line where onnxruntime has no int8 kernel for MatMulNBits (simulated CPU facts)."""
    out = tmp_path / "int8.onnx"
    args = ["export", out, "--checkpoint", checkpoint_path, "--data", corpus_file, "--precision", "int8"]
    r = invoke(*args, *(["--int8-kernel", kernel] if kernel else []))
    assert r.exit_code == 0, r.output
    assert f"int8 {op}" in r.stdout
    assert op in {n.op_type for n in onnx.load(str(out)).graph.node}
    from chargen.runtime import model as model_module

    monkeypatch.setattr(model_module, "_platform_facts", lambda ort: ("aarch64", {"ASIMD"}, "1.32.0"))
    r = invoke("sample", "--model", out, "--start", "ab", "--length", "20", "--seed", "1")
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("ab") and len(r.stdout) >= 22  # start + 20 generated (+ a final newline)
    warned = [line for line in r.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warned) == (1 if op == "MatMulNBits" else 0), r.stderr
    assert all("--int8-kernel dynamic" in line for line in warned)
    fp32 = exported[0]
    # the engine pinned: what auto picks depends on the CPU
    r = invoke("bench", "--model", fp32, "--model", out, "--seconds", "0.1", "--batch", "1", "--batch", "2",
               "--no-cold-start", "--engine", "onnxruntime")
    assert r.exit_code == 0, r.output
    assert f"{fp32}  (fp32, L=" in r.stdout and f"{out}  (int8 {op}, L=" in r.stdout
    assert [l for l in r.stderr.splitlines() if l.strip()] == warned  # the same one line, nothing else
    # the two models measured in turns, the second's chars/s as a multiple of the first's
    compared = r.stdout.split(f"chars/s against {fp32} (fp32), measured in turns:")[1].splitlines()
    assert [l.split(":")[0].strip() for l in compared if l.strip()] == ["batch 1", "batch 2"]
    assert all(float(l.rsplit(" ", 1)[1].rstrip("x")) > 0 and f"{out} (int8 {op}) " in l for l in compared if l.strip())


def test_eval_onnx_and_checkpoint_agree(exported, checkpoint_path, corpus_file):
    out, _ = exported
    a = invoke("eval", "--model", out, "--data", corpus_file)
    b = invoke("eval", "--checkpoint", checkpoint_path, "--data", corpus_file)
    assert a.exit_code == 0 and b.exit_code == 0, (a.output, b.output)

    def loss(r):
        line = next(l for l in r.stdout.splitlines() if l.startswith("loss"))
        return float(line.split()[1])

    assert abs(loss(a) - loss(b)) <= 2e-4
    assert "bits/char" in a.stdout and "validation split" in a.stdout


def test_eval_api_onnx_matches_torch_to_1e4(exported, checkpoint_path, corpus_file):
    from chargen.export.evaluate import evaluate_checkpoint, evaluate_onnx, load_eval_text

    name, text = load_eval_text(corpus_file, "all")
    a = evaluate_onnx(exported[0], text, text_name=name, progress=False)
    b = evaluate_checkpoint(checkpoint_path, text, text_name=name)
    assert a.predictions == b.predictions == len(text) - 1
    assert abs(a.loss - b.loss) <= 1e-4
    assert a.bits_per_char == pytest.approx(a.loss / np.log(2))


def test_eval_unknown_characters_error_then_skip(exported, tmp_path):
    out, _ = exported
    text = tmp_path / "odd.txt"
    text.write_text("Hello there, ü and € and ü again.\n" * 20, encoding="utf-8")
    r = invoke("eval", "--model", out, "--data", text, "--split", "all")
    assert_one_line_error(r, "not in the model's vocabulary", "'ü' (x40)", "'€' (x20)", "--unknown skip")
    r = invoke("eval", "--model", out, "--data", text, "--split", "all", "--unknown", "skip")
    assert r.exit_code == 0, r.output
    assert "60 unknown characters skipped" in r.stdout


def test_eval_onnx_needs_no_torch(exported, corpus_file):
    out, _ = exported
    code = (
        "import sys; sys.modules['torch'] = None\n"  # any import of torch now fails
        "from chargen.cli import main\n"
        f"sys.argv = ['gen', 'eval', '--model', {str(out)!r}, '--data', {str(corpus_file)!r}]\n"
        "main()\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "nats/char" in r.stdout


def test_eval_rejects_files_that_are_not_chargen_models(tmp_path, corpus_file):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00not a model at all" * 10)
    assert_one_line_error(invoke("eval", "--model", junk, "--data", corpus_file), "is not an ONNX model")
    plain = tmp_path / "plain.onnx"
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), plain)
    assert_one_line_error(invoke("eval", "--model", plain, "--data", corpus_file), "not a chargen model")
    assert_one_line_error(invoke("eval", "--model", tmp_path / "none.onnx", "--data", corpus_file), "no such model file")
    assert_one_line_error(invoke("eval", "--data", corpus_file), "exactly one of")
    r = invoke("eval", "--model", plain, "--split", "test")
    assert r.exit_code == 2 and "Invalid value for '--split'" in " ".join(r.stderr.replace("│", " ").split())


def _truncated(checkpoint_path, tmp_path):
    p = tmp_path / "half.pt"
    data = checkpoint_path.read_bytes()
    p.write_bytes(data[: len(data) * 2 // 3])
    return p


def _not_checkpoint(tmp_path):
    p = tmp_path / "weights.pt"
    torch.save({"state": torch.zeros(2)}, p)
    return p


@pytest.mark.parametrize("case", ["missing", "truncated", "not-checkpoint", "text-file", "no-folder",
                                  "kernel-not-int8", "no-runs"])
def test_export_cli_errors(case, checkpoint_path, tmp_path, monkeypatch):
    out = tmp_path / "m.onnx"
    args = ["export", out, "--checkpoint", checkpoint_path]
    needles = {
        "missing": "no checkpoint at",
        "truncated": "corrupt or truncated",
        "not-checkpoint": "not a chargen checkpoint",
        "text-file": "corrupt or truncated",
        "no-folder": "does not exist",
        "kernel-not-int8": "--int8-kernel is for --precision int8, not fp16",
        "no-runs": "no checkpoint found",
    }
    if case == "missing":
        args[3] = tmp_path / "nope.pt"
    elif case == "truncated":
        args[3] = _truncated(checkpoint_path, tmp_path)
    elif case == "not-checkpoint":
        args[3] = _not_checkpoint(tmp_path)
    elif case == "text-file":
        args[3] = tmp_path / "notes.txt"
        args[3].write_text("hello")
    elif case == "no-folder":
        out = tmp_path / "nowhere" / "m.onnx"
        args[1] = out
    elif case == "kernel-not-int8":
        args += ["--precision", "fp16", "--int8-kernel", "nbits"]
    elif case == "no-runs":
        monkeypatch.chdir(tmp_path)
        args = ["export", out]
    r = invoke(*args)
    assert_one_line_error(r, needles[case])
    assert not out.exists()


def test_export_cli_unwritable_folder(checkpoint_path, tmp_path):
    if os.geteuid() == 0:
        # root writes through permission bits, but not into /proc
        assert_one_line_error(invoke("export", "/proc/m.onnx", "--checkpoint", checkpoint_path), "writ")
        return
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        assert_one_line_error(invoke("export", folder / "m.onnx", "--checkpoint", checkpoint_path), "not writable")
    finally:
        folder.chmod(0o755)


def test_eval_checkpoint_errors(checkpoint_path, tmp_path, corpus_file):
    assert_one_line_error(
        invoke("eval", "--checkpoint", _truncated(checkpoint_path, tmp_path), "--data", corpus_file), "corrupt or truncated"
    )
    assert_one_line_error(invoke("eval", "--checkpoint", tmp_path / "x.pt", "--data", corpus_file), "no checkpoint at")


def test_python_m_chargen_export_subprocess(checkpoint_path, tmp_path):
    """The real entry point, in a fresh process: exit status and stderr."""
    r = subprocess.run(
        [sys.executable, "-m", "chargen", "export", str(tmp_path / "m.onnx"), "--checkpoint", str(tmp_path / "no.pt")],
        capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 1 and r.stderr.strip().startswith("error: no checkpoint at") and "Traceback" not in r.stderr
