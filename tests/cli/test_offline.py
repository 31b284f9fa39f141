"""The quickstart on a machine without a network: `gen train` with no --data trains on the
tiny-shakespeare that ships in the package, and `gen export` and `gen eval` find the same copy.

Each command runs in a network namespace of its own (`unshare --net`, with a user namespace so
it needs no root), where no address is reachable.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

from chargen.train.data import TINYSHAKESPEARE_CHARS, TINYSHAKESPEARE_SOURCE  # noqa: E402

OFFLINE = ["unshare", "--net", "--map-root-user"]


def offline(*args, cwd, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([*OFFLINE, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, COLUMNS="200"))


@pytest.fixture(scope="module")
def no_network(tmp_path_factory):
    if shutil.which("unshare") is None:
        pytest.skip("no unshare(1) here")
    probe = subprocess.run([*OFFLINE, "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a network namespace here: {probe.stderr.strip()}")
    connect = "import socket; socket.create_connection(('1.1.1.1', 443), timeout=5)"
    r = offline(sys.executable, "-c", connect, cwd=tmp_path_factory.mktemp("probe"))
    assert r.returncode != 0 and "Network is unreachable" in r.stderr, r.stderr  # really offline


def test_train_export_and_eval_on_the_default_corpus_without_a_network(no_network, tmp_path):
    gen = [sys.executable, "-m", "chargen"]
    r = offline(*gen, "train", "--max-steps", "2", "--eval-interval", "2", "--hidden-size", "16",
                "--embedding-dim", "8", "--batch-size", "4", "--seq-len", "16", "--sample-length", "10", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"corpus tinyshakespeare ({TINYSHAKESPEARE_CHARS:,} chars, 65 symbols)" in r.stdout
    run = tmp_path / "runs" / "tinyshakespeare"
    saved = torch.load(run / "last.pt", weights_only=True)
    assert saved["step"] == 2 and saved["corpus"] == "tinyshakespeare"
    assert saved["corpus_source"] == TINYSHAKESPEARE_SOURCE and len(saved["vocab"]) == 65

    r = offline(*gen, "export", "model.onnx", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "validation split of tinyshakespeare (111,540 chars)" in " ".join(r.stdout.split())

    r = offline(*gen, "eval", "--model", "model.onnx", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "tinyshakespeare (validation split, last 0.1: 111,540 chars)" in " ".join(r.stdout.split())
