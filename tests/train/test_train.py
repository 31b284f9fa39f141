import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from chargen.train import checkpoint as ckpt
from trainkit import TINY, gen


def weights(path):
    return torch.load(path, weights_only=True)["model"]


def test_train_writes_checkpoints_metrics_and_plot(tmp_path, corpus_file):
    out = tmp_path / "run"
    r = gen("train", "--data", corpus_file, "--out", out, *TINY, "--max-steps", "12", "--eval-interval", "6")
    assert r.returncode == 0, r.stderr
    assert "Total params" in r.stdout and "step 12" in r.stdout
    for name in ("best.pt", "last.pt", "loss.png", "metrics.jsonl"):
        assert (out / name).stat().st_size > 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4, 6, 8, 10, 12]
    for record in records:
        assert {"step", "epoch", "train_loss", "chars_per_s"} <= record.keys()
    evals = [r for r in records if "val_loss" in r]
    assert [r["step"] for r in evals] == [6, 12]
    for record in evals:
        assert record["val_bpc"] == pytest.approx(record["val_loss"] / math.log(2))
        assert 0 < record["val_loss_windowed"] < 6
    # a real model learns: the loss falls well below uniform guessing
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    last = torch.load(out / "last.pt", weights_only=True)  # loads without pickle
    assert last["step"] == 12 and last["format"] == ckpt.FORMAT
    assert last["best_val_loss"] == min(r["val_loss"] for r in evals)
    assert torch.load(out / "best.pt", weights_only=True)["val_loss"] == last["best_val_loss"]
    umask = os.umask(0)
    os.umask(umask)
    for name in ("best.pt", "last.pt", "loss.png"):  # atomic writes keep the usual permissions, not mkstemp's 0600
        assert (out / name).stat().st_mode & 0o777 == 0o666 & ~umask
    assert not list(out.glob(".*.tmp"))


RECIPE = ["--max-steps", "16", "--eval-interval", "4", "--schedule", "cosine", "--warmup-steps", "3",
          "--dropout", "0.2", "--layers", "2", "--seed", "7"]


@pytest.mark.parametrize("extra", [[], ["--stateful", "--state-reset", "0.25"], ["--ema", "0.9", "--input-dropout", "0.1"],
                                   ["--precision", "fp32"], ["--precision", "bf16"]],
                         ids=["windowed", "stateful", "ema-input-dropout", "fp32", "bf16"])
def test_resumed_run_ends_with_the_same_weights(tmp_path, corpus_file, extra):
    # stateful: the hidden states the streams carry must survive the stop too
    straight, split_run = tmp_path / "straight", tmp_path / "split"
    assert gen("train", "--data", corpus_file, "--out", straight, *TINY, *RECIPE, *extra).returncode == 0
    # stop half-way, keeping the 16-step cosine schedule
    r = gen("train", "--data", corpus_file, "--out", split_run, *TINY, *RECIPE, *extra, "--stop-after", "9")
    assert r.returncode == 0, r.stderr
    assert torch.load(split_run / "last.pt", weights_only=True)["step"] == 9
    r = gen("train", "--data", corpus_file, "--out", split_run, "--resume")
    assert r.returncode == 0, r.stderr
    a, b = weights(straight / "last.pt"), weights(split_run / "last.pt")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    steps = [json.loads(line)["step"] for line in (split_run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 16


def test_precision_auto_picks_bf16_only_where_the_cpu_has_it(tmp_path, corpus_file):
    from chargen.train.loop import cpu_has_bf16

    native = "bf16 GEMMs" if cpu_has_bf16() else "float32"
    for precision, expected in (("fp32", "float32"), ("bf16", "bf16 GEMMs"), ("auto", native)):
        out = tmp_path / precision
        r = gen("train", "--data", corpus_file, "--out", out, *TINY, "--max-steps", "2", "--eval-interval", "2",
                "--precision", precision)
        assert r.returncode == 0, r.stderr
        assert expected in r.stdout.splitlines()[0] + r.stdout.splitlines()[1], r.stdout
        assert torch.load(out / "last.pt", weights_only=True)["train_config"]["precision"] == precision


def test_ema_checkpoint_holds_the_average_it_evaluated(tmp_path, corpus_file):
    from chargen.train import evaluate
    from chargen.train.data import split

    out = tmp_path / "run"
    r = gen("train", "--data", corpus_file, "--out", out, *TINY, "--max-steps", "12", "--eval-interval", "12",
            "--ema", "0.8", "--lr", "3e-3")
    assert r.returncode == 0, r.stderr
    saved = torch.load(out / "last.pt", weights_only=True)
    averaged, trained = saved["model"], saved["train_weights"]
    assert averaged.keys() == trained.keys()
    assert any(not torch.equal(averaged[k], trained[k]) for k in averaged)
    # the val_loss it logged is the average's, and the average is what loads for export and eval
    model, vocab, _ = ckpt.load_model(out / "last.pt")
    _, val_text = split(corpus_file.read_text(encoding="utf-8"), 0.1)
    ids = vocab.encode(val_text)
    assert evaluate.stateful_loss(model, ids) == pytest.approx(saved["val_loss"], abs=1e-6)
    model.load_state_dict(trained)
    assert evaluate.stateful_loss(model, ids) != pytest.approx(saved["val_loss"], abs=1e-6)


def wait_for(predicate, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def start(args):
    return subprocess.Popen([sys.executable, "-m", "chargen", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(tmp_path, corpus_file):
    out = tmp_path / "run"
    proc = start(["train", "--data", corpus_file, "--out", out, *TINY, "--max-steps", "100000",
                  "--eval-interval", "100000"])
    assert wait_for(lambda: (out / "metrics.jsonl").exists() and (out / "metrics.jsonl").stat().st_size > 0)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert "Traceback" not in stderr and "interrupted" in stdout
    saved = torch.load(out / "last.pt", weights_only=True)
    assert 0 < saved["step"] < 100000
    r = gen("train", "--data", corpus_file, "--out", out, "--resume", "--max-steps", str(saved["step"] + 2))
    assert r.returncode == 0, r.stderr
    assert torch.load(out / "last.pt", weights_only=True)["step"] == saved["step"] + 2


def test_kill_9_leaves_a_loadable_checkpoint(tmp_path, corpus_file):
    out = tmp_path / "run"
    proc = start(["train", "--data", corpus_file, "--out", out, *TINY, "--max-steps", "100000",
                  "--eval-interval", "3", "--sample-length", "0"])
    assert wait_for(lambda: (out / "last.pt").exists())
    time.sleep(1.0)  # let it be in the middle of later steps and saves
    proc.kill()
    proc.wait()
    saved = ckpt.load(out / "last.pt")
    assert saved["step"] >= 3 and saved["step"] % 3 == 0
    r = gen("train", "--data", corpus_file, "--out", out, "--resume", "--max-steps", str(saved["step"] + 3))
    assert r.returncode == 0, r.stderr


def error_of(r):
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    return lines[0]


def test_bad_input_gets_one_line_errors(tmp_path, corpus_file):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    short = tmp_path / "short.txt"
    short.write_text("To be or not to be")
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("hello caf".encode() + "é".encode("latin-1") + b" more")
    no_txt = tmp_path / "folder"
    no_txt.mkdir()
    (no_txt / "notes.md").write_text("not a txt")
    a_file = tmp_path / "plain"
    a_file.write_text("x")
    cases = [
        (["--data", tmp_path / "missing.txt"], "missing.txt"),
        (["--data", empty], "empty"),
        (["--data", short, "--seq-len", "100"], "too short"),
        (["--data", latin1], "byte offset 9"),
        (["--data", no_txt], ".txt"),
        (["--data", corpus_file, "--out", a_file / "sub"], "cannot write"),
        (["--data", corpus_file, "--batch-size", "0"], "--batch-size"),
        (["--data", corpus_file, "--lr", "-1"], "--lr"),
        (["--data", corpus_file, "--val-fraction", "1.5"], "--val-fraction"),
        (["--data", corpus_file, "--val-fraction", "0"], "--val-fraction"),
        (["--data", corpus_file, "--out", tmp_path / "none", "--resume"], "--resume"),
    ]
    for args, expected in cases:
        line = error_of(gen("train", *args, "--out", tmp_path / "o") if "--out" not in args else gen("train", *args))
        assert expected in line, (args, line)
    # choices outside an option's list are typer's usage errors (exit 2), which name the option
    for option, value in (("--device", "tpu"), ("--precision", "fp8"), ("--preset", "huge"), ("--schedule", "step")):
        r = gen("train", "--data", corpus_file, "--out", tmp_path / "o", option, value)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert f"Invalid value for '{option}'" in " ".join(r.stderr.replace("│", " ").split()), r.stderr


def test_resume_refuses_another_vocabulary_or_model_size(tmp_path, corpus_file):
    out = tmp_path / "run"
    assert gen("train", "--data", corpus_file, "--out", out, *TINY, "--max-steps", "2",
               "--eval-interval", "2").returncode == 0
    other = tmp_path / "other.txt"
    other.write_text(corpus_file.read_text().upper() + "~~~~")
    assert "vocabulary" in error_of(gen("train", "--data", other, "--out", out, "--resume"))
    assert "model size" in error_of(gen("train", "--data", corpus_file, "--out", out, "--resume",
                                        "--hidden-size", "64"))
    # and a fresh run never overwrites an existing one
    assert "--resume" in error_of(gen("train", "--data", corpus_file, "--out", out, *TINY))
    # a truncated checkpoint is refused, not half-loaded
    data = (out / "last.pt").read_bytes()
    (out / "last.pt").write_bytes(data[: len(data) // 2])
    assert "corrupt" in error_of(gen("train", "--data", corpus_file, "--out", out, "--resume"))


def test_a_kill_between_the_first_best_and_last_checkpoint_still_resumes(tmp_path, corpus_file):
    """best.pt is written before last.pt: a kill between the two at the first evaluation leaves
    best.pt alone, which --resume starts from and a fresh run does not overwrite."""
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert gen("train", "--data", corpus_file, "--out", straight, *TINY, "--max-steps", "8",
               "--eval-interval", "4").returncode == 0
    r = gen("train", "--data", corpus_file, "--out", killed, *TINY, "--max-steps", "8", "--eval-interval", "4",
            "--stop-after", "4")
    assert r.returncode == 0, r.stderr
    (killed / "last.pt").unlink()  # the state a kill leaves between the two writes of step 4
    assert ckpt.load(killed / "best.pt")["step"] == 4
    assert "--resume" in error_of(gen("train", "--data", corpus_file, "--out", killed, *TINY))
    r = gen("train", "--data", corpus_file, "--out", killed, "--resume")
    assert r.returncode == 0, r.stderr
    assert "resuming at step 4" in r.stdout
    a, b = weights(straight / "last.pt"), weights(killed / "last.pt")
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_a_failed_run_leaves_no_out_folder(tmp_path, corpus_file):
    one = tmp_path / "one.txt"
    one.write_text("x")
    out = tmp_path / "refused"
    assert "1-character corpus" in error_of(gen("train", "--data", one, "--out", out))
    assert not out.exists()
    # a run that fails once it has started (here: its output cannot be written) removes the folder it made
    if os.path.exists("/dev/full"):
        out = tmp_path / "failed"
        with open("/dev/full", "w") as full:
            r = subprocess.run([sys.executable, "-m", "chargen", "train", "--data", str(corpus_file), "--out", str(out),
                                *TINY, "--max-steps", "2"], stdout=full, stderr=subprocess.PIPE, text=True, timeout=300)
        assert "No space left on device" in error_of(r)
        assert not out.exists()
    # a folder that was there before is left as it was
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep")
    assert "1-character corpus" in error_of(gen("train", "--data", one, "--out", out))
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
