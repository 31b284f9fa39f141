"""Helpers shared by the training tests (imported by name, unlike conftest)."""

import os
import subprocess
import sys

# A tiny model and recipe: real training, seconds on 2 cores.
TINY = ["--embedding-dim", "8", "--hidden-size", "32", "--batch-size", "8", "--seq-len", "32",
        "--log-interval", "2", "--sample-length", "20"]


def gen(*args, timeout=300, **kwargs) -> subprocess.CompletedProcess:
    """Run the real CLI in a fresh process."""
    env = dict(os.environ, COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "chargen", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env, **kwargs)
