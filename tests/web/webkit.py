"""Helpers of the chargen.web tests: the page's JavaScript under Node (tests/web/node_driver.mjs),
and what gen sample prints for the same model, start and options."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from browserkit import require  # tests/browserkit.py

DRIVER = Path(__file__).resolve().parent / "node_driver.mjs"
NODE = shutil.which("node") or shutil.which("nodejs")


def node(*args, ok: bool = True, timeout: float = 120, env=None) -> dict:
    """Run the driver under Node; its JSON answer (an error answer fails the test unless ok=False)."""
    exe = require(NODE, "node", "apt-get install nodejs")
    done = subprocess.run([exe, str(DRIVER), *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env=env)
    lines = done.stdout.strip().splitlines()
    assert lines, f"node printed nothing (exit {done.returncode}): {done.stderr[-2000:]}"
    answer = json.loads(lines[-1])
    if ok:
        assert "error" not in answer, answer
        assert done.returncode == 0, done.stderr[-2000:]
    return answer


def gen_sample(model: Path, start: str, length: int, *options: str, engine: str = "chargen") -> str:
    """What `gen sample --engine chargen` (or another engine) prints (the start, the text, a final newline)."""
    from typer.testing import CliRunner

    from chargen.cli import app

    result = CliRunner().invoke(app, ["sample", "-m", str(model), "--start", start, "--length", str(length),
                                      "--engine", engine, *options])
    assert result.exit_code == 0, result.output
    return result.stdout


def printed(start: str, text: str) -> str:
    """gen sample's output for a generated text: the start, the text, a newline if it lacks one."""
    out = start + text
    return out if out.endswith("\n") else out + "\n"
