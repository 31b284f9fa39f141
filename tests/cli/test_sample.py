"""`gen sample` and `gen bench`: real model files, real processes where it matters (pipes,
terminals, what gets imported)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from typer.testing import CliRunner  # noqa: E402

from chargen.cli import app  # noqa: E402

from chargen.runtime import GenerationOptions, Generator, Model, _int8  # noqa: E402
from chargen.bench import StepSplit, compare_bench  # noqa: E402

from modelkit import model_file  # noqa: E402


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return model_file(tmp_path_factory.mktemp("cli") / "tiny.onnx", hidden=32, seed=2, rnn_scale=4, corpus="")


runner = CliRunner()


def sample(*args):
    return runner.invoke(app, ["sample", *map(str, args)])


def generate(path, start, n, batch_size=1, **opts):
    g = Generator(Model.load(path), GenerationOptions(max_length=n, **opts), batch_size=batch_size)
    return g.generate(start)


def test_sample_prints_start_and_continuation(model_path):
    r = sample("--model", model_path, "--start", "ROMEO: ", "--length", 200, "--seed", 4)
    assert r.exit_code == 0, r.output
    expected = "ROMEO: " + generate(model_path, "ROMEO: ", 200, seed=4)[0]
    assert r.stdout == expected + ("" if expected.endswith("\n") else "\n")
    again = sample("--model", model_path, "--start", "ROMEO: ", "--length", 200, "--seed", 4)
    assert again.stdout == r.stdout


def test_sample_options_reach_the_generator(model_path):
    r = sample("-m", model_path, "--start", "KING", "--length", 100, "--temperature", 0.5,
               "--top-k", 10, "--top-p", 0.9, "--seed", 1, "--device", "cpu", "--threads", 1)
    assert r.exit_code == 0, r.output
    text = generate(model_path, "KING", 100, seed=1, temperature=0.5, top_k=10, top_p=0.9)[0]
    assert r.stdout.rstrip("\n") == ("KING" + text).rstrip("\n")
    greedy = sample("-m", model_path, "--start", "KING", "--length", 50, "--temperature", 0)
    assert greedy.stdout.rstrip("\n") == ("KING" + generate(model_path, "KING", 50, temperature=0)[0]).rstrip("\n")


def test_several_samples_are_separated(model_path):
    r = sample("-m", model_path, "--start", "A", "--length", 80, "--num-samples", 3, "--seed", 9)
    assert r.exit_code == 0, r.output
    texts = generate(model_path, "A", 80, batch_size=3, seed=9)
    expected = "".join(
        f"--- sample {i} ---\nA{t}" + ("" if t.endswith("\n") else "\n") for i, t in enumerate(texts, 1)
    )
    assert r.stdout == expected


def test_stop(model_path):
    full = generate(model_path, "A", 300, seed=9)[0]
    stop = full[100:103]
    r = sample("-m", model_path, "--start", "A", "--length", 300, "--seed", 9, "--stop", stop)
    assert r.exit_code == 0
    assert r.stdout.rstrip("\n") == ("A" + full[: full.find(stop) + len(stop)]).rstrip("\n")
    nl = sample("-m", model_path, "--start", "A", "--length", 300, "--seed", 9, "--stop", "\\n")
    assert nl.stdout.count("\n") == 1


@pytest.mark.parametrize(
    "args,match",
    [
        (["--temperature", "-1"], "temperature"),
        (["--top-p", "0"], "top_p"),
        (["--top-p", "1.5"], "top_p"),
        (["--top-k", "-3"], "top_k"),
        (["--length", "-1"], "length"),
        (["--num-samples", "0"], "num-samples"),
        (["--start", "Héllo"], "not in the model's vocabulary"),
        (["--seed", "-5"], "seed"),
    ],
)
def test_bad_arguments_are_one_line_errors(model_path, args, match):
    r = sample("-m", model_path, *args)
    assert r.exit_code != 0
    assert r.stdout == ""
    assert match in r.stderr and r.stderr.startswith("error: ") and r.stderr.count("\n") == 1
    assert "Traceback" not in r.stderr


def test_bad_models_are_one_line_errors(tmp_path):
    (tmp_path / "junk.onnx").write_text("not a model")
    for path, match in ((tmp_path / "missing.onnx", "no such model file"), (tmp_path / "junk.onnx", "ONNX")):
        r = sample("-m", path)
        assert r.exit_code == 1 and match in r.stderr and r.stderr.count("\n") == 1


def test_unknown_skip(model_path):
    r = sample("-m", model_path, "--start", "Héllo", "--unknown", "skip", "--length", 30, "--seed", 2)
    assert r.exit_code == 0
    assert r.stdout.startswith("Hllo")
    assert r.stdout.rstrip("\n") == ("Hllo" + generate(model_path, "Hllo", 30, seed=2)[0]).rstrip("\n")


def _gen(*args, **kw):
    return subprocess.run([sys.executable, "-m", "chargen", *map(str, args)], capture_output=True,
                          text=True, timeout=120, **kw)


def test_closed_stdout_ends_quietly(model_path):
    """`gen sample ... | head -c 10`: ten characters, no traceback, a quiet exit (0 or 141)."""
    cmd = (f"set -o pipefail; {sys.executable} -m chargen sample --model '{model_path}' "
           f"--start 'ROMEO: ' --length 200000 --seed 1 | head -c 10")
    proc = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=120)
    assert proc.stdout == "ROMEO: " + generate(model_path, "ROMEO: ", 3, seed=1)[0]
    assert proc.stderr == ""
    assert proc.returncode in (0, 141)


def test_sample_does_not_import_torch(model_path):
    code = f"""
        import sys
        from chargen.cli import app
        try:
            app(["sample", "--model", {str(model_path)!r}, "--length", "20", "--seed", "1"])
        except SystemExit as e:
            assert e.code in (0, None), e.code
        assert "torch" not in sys.modules, "gen sample imported torch"
        print("\\nno torch")
    """
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.endswith("no torch\n") and proc.stderr == ""


def test_sample_streams_to_a_terminal(model_path):
    """On a terminal every character is flushed as it comes; the text is the same."""
    import pty

    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "chargen", "sample", "-m", str(model_path),
                                 "--start", "AB", "--length", "50", "--seed", "3"],
                                stdout=slave, stderr=subprocess.PIPE)
        os.close(slave)
        data = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            data += chunk
        proc.wait(timeout=60)
    finally:
        os.close(master)
    assert proc.returncode == 0
    expected = "AB" + generate(model_path, "AB", 50, seed=3)[0]
    assert data.decode().replace("\r\n", "\n").rstrip("\n") == expected.rstrip("\n")


def test_bench(model_path):
    r = runner.invoke(app, ["bench", "--model", str(model_path), "--seconds", "0.2", "--batch", "1", "--batch", "4"])
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert "chars/s" in out and "cold start" in out and "resident memory" in out
    rows = [line.split() for line in out.splitlines() if line.strip().startswith(("1 ", "4 "))]
    assert [row[0] for row in rows] == ["1", "4"]
    assert all(float(row[1].replace(",", "")) > 0 for row in rows)
    bad = runner.invoke(app, ["bench", "--model", "/nonexistent.onnx"])
    assert bad.exit_code == 1 and "no such model file" in bad.stderr


def _bench_generator(model, B=3):
    g = Generator(model, GenerationOptions(seed=11), batch_size=B)
    g.feed("to be")
    return g


def test_bench_split_times_the_real_step_and_leaves_the_generator_as_it_was(model_path):
    model = Model.load(model_path, device="cpu")
    timed, plain = _bench_generator(model), _bench_generator(model)
    split = StepSplit(timed)
    whole, graph, sampler = split.run(40)
    assert graph > 0 and sampler > 0 and whole >= graph + sampler
    # the timed steps are the generator's own: same text as untimed steps, and afterwards the
    # generator runs its own methods again
    for _ in range(40):
        plain.step()
    assert np.array_equal(timed.state().h, plain.state().h)
    assert timed.core.timer is None and timed.sample_timer is None  # the hooks are off again
    assert timed.step() == plain.step()


def test_bench_split_adds_up_to_the_step_it_was_taken_from(model_path):
    report = compare_bench([model_path], device="cpu", seconds=0.1, batch_sizes=(1, 4), cold_start=False)[0]
    for run in report["runs"]:
        parts = run["graph_us"] + run["sampler_us"] + run["rest_us"]
        assert run["rest_us"] >= 0 and parts == pytest.approx(run["split_step_us"])
        assert run["chars_per_s"] == pytest.approx(run["batch_size"] / run["step_us"] * 1e6)


# ---------------------------------------------------------------- --engine
@pytest.fixture(scope="module")
def int8_path(tmp_path_factory):
    pytest.importorskip("onnxruntime.quantization")
    return model_file(tmp_path_factory.mktemp("cli") / "int8.onnx", "int8", hidden=64, seed=2, corpus="")


def test_sample_engine_chargen_prints_what_onnxruntime_prints(int8_path):
    runs = {e: sample("-m", int8_path, "--start", "ROMEO: ", "--length", 300, "--seed", 9, "--engine", e)
            for e in ("chargen", "onnxruntime", "auto")}
    assert all(r.exit_code == 0 for r in runs.values()), [r.output for r in runs.values()]
    assert runs["chargen"].stdout == runs["onnxruntime"].stdout == runs["auto"].stdout
    assert len(runs["chargen"].stdout) >= 300


def test_bench_says_what_auto_chose_for_each_batch_size_and_why(int8_path, tmp_path, monkeypatch):
    monkeypatch.setenv("CHARGEN_NO_CALIBRATION", "0")
    monkeypatch.setenv("CHARGEN_CACHE_DIR", str(tmp_path))
    r = runner.invoke(app, ["bench", "-m", str(int8_path), "--seconds", "0.1", "--batch", "1", "--batch", "4",
                            "--no-cold-start"])
    assert r.exit_code == 0, r.output
    rows = [line for line in r.stdout.splitlines() if line.strip().startswith(("1 ", "4 "))]
    assert len(rows) == 2 and all("<- auto, measured: chargen " in row or "<- auto, measured: onnxruntime " in row
                                  for row in rows), r.stdout
    for row in rows:  # the engine that ran is the one its figures put first
        ran, why = row.rsplit("  ", 1)[-1].split(" <- auto, measured: ")
        assert ran.split()[0] == why.split()[0]


def test_sample_engine_errors_are_one_line(model_path):
    r = sample("-m", model_path, "--engine", "chargen", "--length", 5)
    assert r.exit_code == 1 and r.stderr.count("\n") == 1
    assert "engine='chargen' cannot run this model: it runs int8 models, and this one is fp32" in r.stderr


@pytest.mark.parametrize("option, value", [("--engine", "tvm"), ("--device", "tpu"), ("--unknown", "maybe")])
def test_bad_choices_are_usage_errors_that_list_the_choices(model_path, option, value):
    """typer refuses a value outside an option's choices (exit 2) and names them; --help lists them."""
    r = sample("-m", model_path, option, value, "--length", 5)
    assert r.exit_code == 2 and r.stdout == ""
    err = " ".join(r.stderr.replace("│", " ").split())
    assert f"Invalid value for '{option}'" in err and f"'{value}' is not one of" in err, r.stderr
    assert "Traceback" not in r.stderr
    shown = runner.invoke(app, ["sample", "--help"], env={"COLUMNS": "200"}).stdout
    help_text = " ".join(shown.replace("│", " ").split())
    assert {"--engine": "auto|onnxruntime|chargen", "--device": "auto|cpu|cuda", "--unknown": "error|skip"}[option] in help_text


def test_bench_compares_the_engines_on_one_model(int8_path):
    r = runner.invoke(app, ["bench", "-m", str(int8_path), "-m", str(int8_path), "--engine", "onnxruntime",
                            "--engine", "chargen", "--seconds", "0.1", "--batch", "1", "--batch", "4", "--no-cold-start"])
    assert r.exit_code == 0, r.output
    rows = [line for line in r.stdout.splitlines() if line.strip().startswith(("1 ", "4 "))]
    engines = [line.rsplit("  ", 1)[-1] for line in rows]  # the last column: who ran the step, on what kernel
    step = Model.load(int8_path, device="cpu", engine="chargen").int8_step
    assert engines == ["onnxruntime", "onnxruntime", f"chargen ({step.kernel_for(1)})", f"chargen ({step.kernel_for(4)})"]
    packed = _int8.packed_kernel()
    if packed and packed[1] <= 4:  # the packed kernel names itself
        assert step.kernel_for(4).startswith(f"{packed[0]} packed"), step.kernel_for(4)
    assert "(int8 MatMulInteger, chargen engine) " in r.stdout and "batch 4:" in r.stdout  # the ratio lines
    if packed:  # each figure against the peak measured here: the kernel's inner loop, the weights' read rate
        assert "% peak  % read" in r.stdout and f"against chargen's {packed[0]} kernel's inner loop" in r.stdout
        assert all(len(re.findall(r" \d+% ", line)) == 2 for line in rows), r.stdout
    bad = runner.invoke(app, ["bench", "-m", str(int8_path), "--engine", "chargen", "--engine", "auto"])
    assert bad.exit_code == 1 and "give --engine once, or once per --model (1), not 2 times" in bad.stderr
