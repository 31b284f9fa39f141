"""Training on a real GPU (cuDNN GRU, bf16 autocast); nothing to run on a machine without one.
The CPU path of every step here is tested in test_train.py."""

import pytest
import torch

from trainkit import TINY, gen


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU to train on")
@pytest.mark.parametrize("extra", [[], ["--stateful", "--weight-drop", "0.2", "--dropout", "0.2", "--input-dropout", "0.1", "--ema", "0.9"]],
                         ids=["plain", "stateful-regularized"])
def test_cuda_training_learns_and_exports(tmp_path, corpus_file, extra):
    out = tmp_path / "run"
    r = gen("train", "--data", corpus_file, "--out", out, *TINY, "--device", "cuda", "--max-steps", "60",
            "--eval-interval", "20", "--lr", "3e-3", *extra)
    assert r.returncode == 0, r.stderr
    assert "device cuda" in r.stdout
    saved = torch.load(out / "last.pt", weights_only=True)
    assert saved["step"] == 60 and saved["val_loss"] < 3.0
    # the export compares ONNX against torch on the CPU: a cuDNN-trained checkpoint must pass it
    r = gen("export", tmp_path / "m.onnx", "--checkpoint", out, "--data", corpus_file)
    assert r.returncode == 0, r.stderr
