"""torchrun with 2 gloo processes on CPU: the same recipe as one process."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from trainkit import TINY, gen

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
            "-m", "chargen"]


def torchrun(*args, timeout=300):
    env = dict(os.environ, OMP_NUM_THREADS="1", CHARGEN_DIST_TIMEOUT="60", COLUMNS="200")
    return subprocess.run([*TORCHRUN, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env)


@pytest.mark.parametrize("recipe", [["--max-steps", "1"], ["--max-steps", "3", "--stateful", "--state-reset", "0.3"]],
                         ids=["one-step", "stateful-3-steps"])
def test_steps_on_two_processes_equal_one_process(tmp_path, corpus_file, recipe):
    # stateful: each process carries the states of its own half of the streams. float32: in
    # bf16 each process would round its half of the weight gradient to bf16 before the average
    args = ["--data", corpus_file, *TINY, "--batch-size", "8", *recipe, "--eval-interval", recipe[1],
            "--precision", "fp32"]
    single = gen("train", "--out", tmp_path / "one", *args)
    assert single.returncode == 0, single.stderr
    double = torchrun("train", "--out", tmp_path / "two", *args)
    assert double.returncode == 0, double.stderr
    assert "x 2 processes" in double.stdout
    a = torch.load(tmp_path / "one" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "two" / "last.pt", weights_only=True)
    for key in a["model"]:
        assert torch.allclose(a["model"][key], b["model"][key], atol=1e-5), key
    # validation is measured on the whole text either way
    assert abs(a["val_loss"] - b["val_loss"]) < 1e-5
    if "--stateful" in recipe:  # rank 0 saved every stream's state, gathered in stream order
        assert a["carry"].shape == b["carry"].shape == (1, 8, 32)
        assert torch.allclose(a["carry"], b["carry"], atol=1e-5)
    else:
        assert a["carry"] is None and b["carry"] is None


def test_two_process_run_learns_and_its_checkpoint_resumes_in_one_process(tmp_path, corpus_file):
    out = tmp_path / "run"
    r = torchrun("train", "--data", corpus_file, "--out", out, *TINY, "--max-steps", "30", "--eval-interval", "10",
                 "--lr", "3e-3")
    assert r.returncode == 0, r.stderr
    evals = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [e for e in evals if "val_loss" in e]
    assert [e["step"] for e in evals] == [10, 20, 30]  # rank 0 alone writes: no duplicate lines
    assert evals[-1]["val_loss"] < evals[0]["val_loss"]
    r = gen("export", tmp_path / "model.onnx", "--checkpoint", out, "--data", corpus_file)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "model.onnx").stat().st_size > 0
    r = gen("train", "--data", corpus_file, "--out", out, "--resume", "--max-steps", "32")
    assert r.returncode == 0, r.stderr
    assert torch.load(out / "last.pt", weights_only=True)["step"] == 32


def test_a_dead_rank_stops_the_others_and_resume_recovers(tmp_path, corpus_file):
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", CHARGEN_DIST_TIMEOUT="20")
    proc = subprocess.Popen([*TORCHRUN, "train", "--data", str(corpus_file), "--out", str(out), *TINY,
                             "--max-steps", "100000", "--eval-interval", "3", "--sample-length", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 120
    while not (out / "last.pt").exists() and time.time() < deadline:
        time.sleep(0.1)
    assert (out / "last.pt").exists()
    workers = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert len(workers) == 2
    os.kill(int(workers[-1]), signal.SIGKILL)
    proc.communicate(timeout=120)  # does not hang
    assert proc.returncode != 0
    r = gen("train", "--data", corpus_file, "--out", out, "--resume",
            "--max-steps", str(torch.load(out / "last.pt", weights_only=True)["step"] + 2))
    assert r.returncode == 0, r.stderr
