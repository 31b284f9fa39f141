"""engine='auto': for each batch size a model runs, the engine that measured faster here.

Where a model has two engines (an int8 model with MatMulInteger weights on the CPU: onnxruntime
and chargen's int8 step), the first Generator or Batch of a batch size times a few steps of
each engine at that size (BUDGET_S in all), on this machine, for this model's shape, and
keeps the faster. Which one wins differs between CPUs, thread counts and batch sizes (three
CPUs have given three answers at batch 64), so nothing here is a table.

The figures are kept in the user's cache (calibration.json under $CHARGEN_CACHE_DIR, else
$XDG_CACHE_HOME/chargen, else ~/.cache/chargen), keyed by everything that decides them: the
CPU's model name, chargen's int8 kernel for that batch size, the model's shape and weight
range, the thread counts, and the onnxruntime and chargen versions; an entry whose key
changed is measured again. CHARGEN_NO_CALIBRATION=1 turns measuring off (auto then runs
onnxruntime, the reference engine); engine='onnxruntime' or 'chargen' pins the engine.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

NO_CALIBRATION_ENV = "CHARGEN_NO_CALIBRATION"
CACHE_ENV = "CHARGEN_CACHE_DIR"
BUDGET_S = 0.3  # seconds of timed runs for one batch size, both engines together
ROUNDS = 2  # turns each engine takes within the budget
SETTLE_S = 0.05  # idle before each of chargen's turns: onnxruntime's threads spin ~50 ms after a run
ENGINES = ("chargen", "onnxruntime")
_lock = threading.Lock()  # one measurement at a time in a process (they would slow each other)


@dataclass(frozen=True)
class Choice:
    """Who runs a batch size, and why.

    engine:  'chargen' or 'onnxruntime'.
    source:  'pinned' (engine= given), 'only engine' (the model has one here), 'calibration
             off' (CHARGEN_NO_CALIBRATION), 'measured' (just now) or 'cache' (calibration.json).
    figures: chars/s of each engine's step at this batch size, where measured."""

    engine: str
    source: str
    figures: dict = field(default_factory=dict)

    def describe(self) -> str:
        """One line, e.g. "chargen (measured: chargen 41,200 chars/s, onnxruntime 30,100)"."""
        if not self.figures:
            return f"{self.engine} ({self.source})"
        parts = ", ".join(f"{e} {v:,.0f}" for e, v in sorted(self.figures.items(), key=lambda kv: -kv[1]))
        return f"{self.engine} ({self.source}: {parts} chars/s)"


def disabled() -> bool:
    return os.environ.get(NO_CALIBRATION_ENV, "").strip() not in ("", "0")


def cache_dir() -> Path:
    """chargen's user cache: $CHARGEN_CACHE_DIR, else $XDG_CACHE_HOME/chargen, else ~/.cache/chargen
    (calibration.json here; gen web's onnxruntime-web files too)."""
    folder = os.environ.get(CACHE_ENV)
    if not folder:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        folder = os.path.join(base, "chargen")
    return Path(folder)


def cache_path() -> Path:
    return cache_dir() / "calibration.json"


def cpu_name() -> str:
    """The CPU's model name as the OS reports it, with its family and model numbers where it
    gives them (Linux /proc/cpuinfo: "AMD EPYC" names CPUs of several generations), else
    platform's."""
    facts = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.strip():
                    break  # the first CPU's block is enough
                k, _, v = line.partition(":")
                facts.setdefault(k.strip(), v.strip())
    except OSError:
        pass
    name = facts.get("model name") or facts.get("Model") or platform.processor() or platform.machine() or "unknown"
    numbers = [f"{k} {facts[k]}" for k in ("cpu family", "model", "CPU implementer", "CPU part") if facts.get(k)]
    return f"{name} ({', '.join(numbers)})" if numbers else name


def key(model, batch_size: int) -> str:
    """The cache key of a measurement: everything its figures depend on."""
    import chargen

    step = model.int8_step
    facts = {
        "cpu": cpu_name(),
        "machine": platform.machine(),
        "batch": int(batch_size),
        "kernel": step.kernel_for(int(batch_size)),
        "step_threads": step.threads,
        "ort_threads": model.threads,
        "shape": [model.num_layers, model.config.get("embedding_dim"), model.hidden_size, model.vocab_size],
        "narrow": bool(getattr(step, "narrow", False)),
        "onnxruntime": model.ort.__version__,
        "chargen": chargen.__version__,
    }
    return json.dumps(facts, sort_keys=True)


def measure(model, batch_size: int, budget: float = BUDGET_S, rounds: int = ROUNDS) -> dict:
    """chars/s of each engine's step (the run only: sampling costs both the same) at this batch
    size: the engines take turns in `rounds` blocks each (so a machine whose speed drifts, shared
    with other work, slows both alike), each keeping its best chunk of about 10 ms. Every
    chargen block starts after SETTLE_S: onnxruntime's threads spin for a while after its runs
    and would stall the step's threads beside them."""
    from chargen.runtime.core import StepCore

    rng = np.random.default_rng(0)
    cores = {}
    for engine in ENGINES:
        core = cores[engine] = StepCore(model, batch_size, engine)
        core.token[:] = rng.integers(0, model.vocab_size, batch_size)
        core.run(batch_size)  # first run: bindings, buffers
    best = {engine: float("inf") for engine in ENGINES}
    block = budget / (rounds * len(ENGINES))
    for _ in range(rounds):
        for engine in ENGINES:
            if engine == "chargen":
                time.sleep(SETTLE_S)
            core, chunk = cores[engine], 1
            t_end = time.perf_counter() + block
            while True:
                t0 = time.perf_counter()
                for _ in range(chunk):
                    core.run(batch_size)
                dt = (time.perf_counter() - t0) / chunk
                best[engine] = min(best[engine], dt)
                if time.perf_counter() >= t_end:
                    break
                chunk = max(1, min(64, int(0.01 / max(dt, 1e-7))))  # chunks of about 10 ms
    return {engine: batch_size / best[engine] for engine in ENGINES}


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) and isinstance(data.get("entries"), dict) else {"entries": {}}
    except (OSError, ValueError):
        return {"entries": {}}  # missing or unreadable: measured again, and rewritten


def _write(path: Path, data: dict) -> None:
    """Atomically (temp file + rename); a cache that cannot be written is only a lost cache."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".calibration-", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except OSError:
        pass


def choose(model, batch_size: int) -> Choice:
    """The engine='auto' choice for a model that has chargen's int8 step (model.int8_step)."""
    k = key(model, batch_size)
    with _lock:
        path = cache_path()
        data = _read(path)
        entry = data["entries"].get(k)
        if isinstance(entry, dict) and all(isinstance(entry.get(e), (int, float)) for e in ENGINES):
            figures, source = {e: float(entry[e]) for e in ENGINES}, "cache"
        else:
            figures, source = measure(model, batch_size), "measured"
            data = _read(path)  # another process may have written meanwhile
            data["entries"][k] = {**figures, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
            _write(path, data)
    return Choice(max(ENGINES, key=lambda e: figures[e]), source, figures)
