"""Every command's error path, as one table: bad input, a missing or broken file, an output that
cannot be written -> a non-zero exit and no traceback. Errors of chargen's own checks are one
line on stderr, "error: ..." with status 1; typer's usage errors (an option that does not parse)
keep typer's form, "Usage: ..." and a boxed message, with status 2.

Each row runs the real `gen` in a fresh process. A new command gets rows here: the last test
fails while a command has none.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from chargen.cli import app  # noqa: E402
from chargen.export.graph_variants import random_weights  # noqa: E402

from chargen.export.graph import build_step_graph  # noqa: E402
from chargen.runtime import Vocab  # noqa: E402
from chargen.train.data import tinyshakespeare_text  # noqa: E402

TINY = "--embedding-dim 8 --hidden-size 16 --batch-size 4 --seq-len 16 --log-interval 1 --sample-length 10"


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("errors")
    text = tinyshakespeare_text()[:20_000]
    (d / "small.txt").write_text(text, encoding="utf-8")
    (d / "one.txt").write_text("x")
    (d / "ten.txt").write_text("0123456789")
    (d / "latin1.txt").write_bytes("caf".encode() + "é".encode("latin-1"))
    (d / "garbage.onnx").write_bytes(b"not a model\n" * 10)
    (d / "garbage.pt").write_bytes(b"not a checkpoint\n" * 10)
    (d / "plain.onnx").write_bytes(onnx.helper.make_model(onnx.helper.make_graph([], "g", [], [])).SerializeToString())
    vocab = Vocab.from_text(text)
    config = dict(vocab_size=len(vocab), embedding_dim=8, hidden_size=16, layers=1, dropout=0.0)
    weights = random_weights(len(vocab), 8, 16, 1, seed=1)
    onnx.save(build_step_graph(weights, config, vocab), d / "model.onnx")
    from chargen.export.onnx_export import quantize_int8

    onnx.save(quantize_int8(build_step_graph(weights, config, vocab, precision="int8")), d / "int8.onnx")
    run = d / "run"
    r = gen(f"train --data {d / 'small.txt'} --out {run} {TINY} --max-steps 2 --eval-interval 2")
    assert r.returncode == 0, r.stderr
    names = {"small": "small.txt", "one": "one.txt", "ten": "ten.txt", "latin1": "latin1.txt", "run": "run",
             "garbage_onnx": "garbage.onnx", "garbage_pt": "garbage.pt", "plain_onnx": "plain.onnx", "model": "model.onnx",
             "int8": "int8.onnx"}
    return {"dir": str(d), **{key: str(d / name) for key, name in names.items()}}


def gen(args: str, stdout: str = "pipe", timeout: float = 300) -> subprocess.CompletedProcess:
    """`gen ARGS` in a fresh process, its stdout a pipe, /dev/full ("full") or closed ("closed")."""
    kwargs = {}
    if stdout == "full":
        kwargs["stdout"] = open("/dev/full", "w")
    elif stdout == "closed":
        kwargs["preexec_fn"] = lambda: os.close(1)
    else:
        kwargs["stdout"] = subprocess.PIPE
    try:
        return subprocess.run([sys.executable, "-m", "chargen", *args.split()], stderr=subprocess.PIPE, text=True,
                              timeout=timeout, env=dict(os.environ, COLUMNS="200"), **kwargs)
    finally:
        if stdout == "full":
            kwargs["stdout"].close()


FULL = "cannot write to stdout: No space left on device"
CLOSED = "stdout is closed"

SERVE = [pytest.mark.skipif(importlib.util.find_spec("fastapi") is None, reason="no serve extra")]

# (command line with {file} names, stdout, exit status, what the message says)
CASES = [
    # train
    ("train --data {one} --out {dir}/t1", "pipe", 1, "splits the 1-character corpus into 0 training"),
    ("train --data {ten} --val-fraction 0.99 --out {dir}/t2", "pipe", 1, "a validation fraction of 0.99 splits"),
    ("train --data {dir}/missing.txt --out {dir}/t3", "pipe", 1, "no such file or folder"),
    ("train --data {latin1} --out {dir}/t4", "pipe", 1, "not valid UTF-8 at byte offset 3"),
    ("train --data {small} --out {dir}/t5 --batch-size 0", "pipe", 1, "--batch-size"),
    ("train --data {small} --out {run} --resume --hidden-size 99", "pipe", 1, "model size"),
    ("train --data {small} --out {dir}/t6 --epochs many", "pipe", 2, "Invalid value for '--epochs'"),
    ("train --data {small} --out {dir}/t7 " + TINY + " --max-steps 2", "full", 1, FULL),
    ("train --data {small} --out {dir}/t8 " + TINY + " --max-steps 2", "closed", 1, CLOSED),
    # export
    ("export {dir}/e.onnx --checkpoint {dir}/missing.pt", "pipe", 1, "no checkpoint at"),
    ("export {dir}/e.onnx --checkpoint {garbage_pt}", "pipe", 1, "not a readable checkpoint"),
    ("export {dir}/nowhere/e.onnx --checkpoint {run}", "pipe", 1, "does not exist"),
    ("export {dir}/e.onnx --checkpoint {run} --precision fp8", "pipe", 2, "Invalid value for '--precision'"),
    ("export {dir}/e.onnx --checkpoint {run} --precision int8 --int8-kernel int4", "pipe", 2,
     "Invalid value for '--int8-kernel'"),
    ("export {dir}/e.onnx --checkpoint {run} --check-steps 10", "pipe", 1, "--check-steps must be at least 1000"),
    ("export {dir}/e.onnx --checkpoint {run} --data {latin1}", "pipe", 1, "not valid UTF-8"),
    ("export {dir}/e.onnx --checkpoint {run}", "full", 1, FULL),
    ("export {dir}/e.onnx --checkpoint {run}", "closed", 1, CLOSED),
    # eval
    ("eval", "pipe", 1, "give exactly one of --model"),
    ("eval --model {garbage_onnx} --data {small}", "pipe", 1, "garbage.onnx"),
    ("eval --model {plain_onnx} --data {small}", "pipe", 1, "not a chargen model"),
    ("eval --model {model} --data {dir}/missing.txt", "pipe", 1, "no such file or folder"),
    ("eval --model {model} --data {latin1}", "pipe", 1, "not valid UTF-8"),
    ("eval --model {model} --data {small} --split test", "pipe", 2, "Invalid value for '--split'"),
    ("eval --model {model} --data {small} --unknown keep", "pipe", 2, "Invalid value for '--unknown'"),
    ("eval --checkpoint {garbage_pt} --data {small}", "pipe", 1, "not a readable checkpoint"),
    ("eval --model {model} --data {small}", "full", 1, FULL),
    ("eval --model {model} --data {small}", "closed", 1, CLOSED),
    # sample
    ("sample --model {dir}/missing.onnx", "pipe", 1, "missing.onnx"),
    ("sample --model {garbage_onnx}", "pipe", 1, "garbage.onnx"),
    ("sample --model {plain_onnx}", "pipe", 1, "not a chargen model"),
    ("sample --model {model} --length -1", "pipe", 1, "--length must be >= 0"),
    ("sample --model {model} --temperature -1", "pipe", 1, "temperature"),
    ("sample --model {model} --start ~~~", "pipe", 1, "~"),
    ("sample --model {model} --engine magic", "pipe", 2, "Invalid value for '--engine'"),
    ("sample --model {model} --device tpu", "pipe", 2, "Invalid value for '--device'"),
    ("sample", "pipe", 2, "Missing option '--model'"),
    ("sample --model {model} --length 50", "full", 1, FULL),
    ("sample --model {model} --length 50", "closed", 1, CLOSED),
    # bench
    ("bench --model {dir}/missing.onnx --no-cold-start", "pipe", 1, "missing.onnx"),
    ("bench --model {garbage_onnx} --no-cold-start", "pipe", 1, "garbage.onnx"),
    ("bench --model {model} --seconds 0", "pipe", 1, "--seconds must be > 0"),
    ("bench --model {model} --batch 0", "pipe", 1, "--batch sizes must be >= 1"),
    ("bench --model {model} --engine auto --engine auto --engine auto", "pipe", 1, "give --engine once"),
    ("bench --model {model} --engine magic", "pipe", 2, "Invalid value for '--engine'"),
    ("bench --model {model} --seconds 0.1 --batch 1 --no-cold-start", "full", 1, FULL),
    ("bench --model {model} --seconds 0.1 --batch 1 --no-cold-start", "closed", 1, CLOSED),
    # serve (the serve extra)
    pytest.param("serve --model {model} --port 70000", "pipe", 1, "--port must be in [0, 65535]", marks=SERVE),
    pytest.param("serve --model {model} --port 0 --max-batch 0", "pipe", 1, "--max-batch must be >= 1", marks=SERVE),
    pytest.param("serve --model {dir}/missing.onnx --port 0", "pipe", 1, "missing.onnx", marks=SERVE),
    pytest.param("serve --model {model} --model model={garbage_onnx} --port 0", "pipe", 1,
                 "two models are named 'model'", marks=SERVE),
    pytest.param("serve --model {model} --model ={model} --port 0", "pipe", 1, "the model name ''", marks=SERVE),
    pytest.param("serve --model {model} --model q8={dir}/missing.onnx --port 0", "pipe", 1, "missing.onnx",
                 marks=SERVE),
    pytest.param("serve --model {model} --port 0 --grace -1", "pipe", 1, "--grace must be >= 0", marks=SERVE),
    pytest.param("serve --model {garbage_onnx} --port 0", "pipe", 1, "garbage.onnx", marks=SERVE),
    pytest.param("serve --model {model} --port 0", "closed", 1, CLOSED, marks=SERVE),
    pytest.param("serve --model {model} --port 0", "full", 1, FULL, marks=SERVE),
    # web
    ("web {dir}/missing.onnx {dir}/site-1", "pipe", 1, "no such model file"),
    ("web {garbage_onnx} {dir}/site-2", "pipe", 1, "garbage.onnx"),
    ("web {plain_onnx} {dir}/site-3", "pipe", 1, "not a chargen model"),
    ("web {model} {small}", "pipe", 1, "exists and is not a folder"),
    ("web {int8} {dir}", "pipe", 1, "the folder has files of its own"),
    ("web {int8} {dir}/site-4", "full", 1, FULL),
    ("web {int8} {dir}/site-5", "closed", 1, CLOSED),
    # the app itself
    ("--version", "full", 1, FULL),
    ("nonsense", "pipe", 2, "No such command 'nonsense'"),
]


def command_line(case) -> str:
    return case.values[0] if hasattr(case, "values") else case[0]


@pytest.mark.parametrize("line, stdout, status, says", CASES, ids=[f"{command_line(c).split()[0]}-{i}" for i, c in enumerate(CASES)])
def test_error(files, line, stdout, status, says):
    if stdout == "full" and not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    r = gen(line.format(**files), stdout=stdout)
    assert r.returncode == status, r.stderr
    assert "Traceback" not in r.stderr and "Exception ignored" not in r.stderr, r.stderr
    if status == 2:  # typer's usage error
        assert r.stderr.startswith("Usage: "), r.stderr
        assert says in " ".join(r.stderr.replace("│", " ").split()), r.stderr
        return
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert says in lines[0]


def test_every_command_has_rows():
    import typer.main

    commands = set(typer.main.get_command(app).commands)
    covered = {command_line(case).split()[0] for case in CASES}
    assert commands <= covered, f"commands without error rows: {sorted(commands - covered)}"
