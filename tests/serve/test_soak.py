"""benchmarks/soak_serve.py's short run (CI's): clients that leave mid-stream and malformed
requests beside ordinary ones, and the server stays whole (the checks are the script's)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "soak_serve.py"


def test_a_short_soak_leaves_the_server_whole(model_path, tmp_path):
    out = tmp_path / "soak.json"
    r = subprocess.run([sys.executable, str(SCRIPT), "--model", str(model_path), "--seconds", "12",
                        "--clients", "16", "--rss-growth", "30", "--json", str(out)],
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    figures = json.loads(out.read_text())
    assert all(figures["checks"].values()), figures["checks"]
    # the load was what it says: streams left mid-way, malformed requests answered 4xx, texts served
    assert figures["left_mid_stream"] > 0 and figures["malformed"] > 0 and figures["characters"] > 0
    assert figures["statuses"].get("200", 0) > 0 and figures["statuses"].get("400", 0) > 0
