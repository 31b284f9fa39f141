"""Helpers of the gen serve tests: tiny model files, a real `gen serve` process on 127.0.0.1
and a free port, and a Server-Sent Events reader."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from modelkit import ALPHABET  # noqa: F401  (tests/modelkit.py: the test models' alphabet)
TIMEOUT = httpx.Timeout(30.0, connect=5.0)


def write_models(folder: Path, E: int = 16, H: int = 64, L: int = 1, seed: int = 1) -> tuple[Path, Path]:
    """A random-weight model (sharp head, so texts are not uniform noise) as fp32 and int8 files."""
    from modelkit import model_file

    shape = dict(embedding=E, hidden=H, layers=L, seed=seed)
    return model_file(folder / "tiny.onnx", "fp32", **shape), model_file(folder / "tiny-int8.onnx", "int8", **shape)


class ServerProcess:
    """`gen serve` in a subprocess (python -m chargen.cli serve ... --port 0), up once /health is 200."""

    def __init__(self, model: Path, *args: str, log: Path, env: dict | None = None):
        self.log_path = log
        self._log = open(log, "wb")
        cmd = [sys.executable, "-m", "chargen.cli", "serve", "--model", str(model), "--host", "127.0.0.1",
               "--port", "0", "--device", "cpu", "--threads", "1", *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._log, env={**os.environ, **(env or {})})
        self.ready_line = self._read_ready(60.0)
        self.url = self.ready_line.split()[2]
        self.wait_healthy()

    def _read_ready(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        line = b""
        while time.monotonic() < deadline:
            r, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if r:
                b = os.read(self.proc.stdout.fileno(), 1)
                if not b:
                    break
                if b == b"\n":
                    return line.decode()
                line += b
            elif self.proc.poll() is not None:
                break
        self.proc.kill()
        raise RuntimeError(f"gen serve did not start: {line!r}\n{self.log()}")

    def wait_healthy(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"gen serve never became healthy\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def metric(self, name: str, headers: dict | None = None, missing: float | None = None, **labels: str) -> float:
        """A Prometheus sample from /metrics: the sum over the series of `name` whose labels
        include `labels` (every model's, where no model is given). Where there is none:
        `missing` if given (a counter before its first count), else KeyError."""
        text = httpx.get(self.url + "/metrics", timeout=5, headers=headers).text
        try:
            return metric_value(text, name, **labels)
        except KeyError:
            if missing is None:
                raise
            return missing

    def wait_metric(self, name: str, value: float, timeout: float = 5.0, **labels: str) -> float:
        deadline = time.monotonic() + timeout
        while True:
            v = self.metric(name, **labels)
            if v == value or time.monotonic() > deadline:
                return v
            time.sleep(0.02)

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        self._log.close()
        return self.proc.returncode


def metric_value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of `name` in Prometheus text whose labels include `labels`."""
    from prometheus_client.parser import text_string_to_metric_families

    found = [s.value for family in text_string_to_metric_families(text) for s in family.samples
             if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    if not found:
        raise KeyError(f"{name}{labels or ''}")
    return sum(found)


def sse_events(lines) -> list:
    """The data payloads of an SSE stream (iterable of lines), decoded; '[DONE]' stays a string."""
    out = []
    for line in lines:
        if line.startswith("data: "):
            data = line[6:]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def stream(url: str, body: dict, headers: dict | None = None) -> dict:
    """One streaming completion over raw HTTP: texts per choice, finish reasons, the chunks."""
    with httpx.stream("POST", url + "/v1/completions", json={**body, "stream": True}, timeout=TIMEOUT,
                      headers=headers) as r:
        assert r.status_code == 200, r.read()
        events = sse_events(r.iter_lines())
    return collect(events)


def collect(events: list) -> dict:
    assert events and events[-1] == "[DONE]", events[-3:]
    texts: dict[int, str] = {}
    finish: dict[int, str] = {}
    usage = None
    for e in events[:-1]:
        assert e["object"] == "text_completion" and e["id"].startswith("cmpl-")
        if e.get("usage"):
            usage = e["usage"]
        for c in e["choices"]:
            texts[c["index"]] = texts.get(c["index"], "") + c["text"]
            if c["finish_reason"] is not None:
                assert c["index"] not in finish, "two finish reasons"
                finish[c["index"]] = c["finish_reason"]
    return {"texts": texts, "finish": finish, "usage": usage, "events": events}


def complete(url: str, body: dict, headers: dict | None = None) -> dict:
    r = httpx.post(url + "/v1/completions", json=body, timeout=TIMEOUT, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()
