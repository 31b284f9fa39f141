"""`gen bench`: how fast the runtime generates with a given model on this machine. It lives
beside the CLI, not in chargen.runtime (what apps embed), and times the step through the
runtime's public hooks (StepCore.timer, Generator.sample_timer); benchmarks/ use its harness.

Figures: chars/s at each batch size; each step split into graph run, sampler and the rest
(the Python around them); cold start (import + load + first step, in a fresh process);
resident memory of a process that generates. Imports numpy and onnxruntime only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from chargen.runtime import contract


class BenchError(RuntimeError):
    """The model cannot be benchmarked; one-line message."""


class StepSplit:
    """Generator.step() with its graph run and its sampler call timed from inside, through the
    runtime's timing hooks (Generator.core.timer, Generator.sample_timer), so that one loop of
    the real step gives all three parts; subtracting parts timed in other loops would put the
    machine's noise into the rest."""

    def __init__(self, generator):
        self.generator = generator

    def run(self, n: int) -> tuple[float, float, float]:
        """n steps -> ns per step: (whole step, graph run, sampler)."""
        g, runs, samples = self.generator, [], []
        g.core.timer, g.sample_timer = runs.append, samples.append
        try:
            a = time.perf_counter_ns()
            for _ in range(n):
                g.step()
            total = time.perf_counter_ns() - a
        finally:
            g.core.timer = g.sample_timer = None
        return total / n, sum(runs) / n, sum(samples) / n


class Timed:
    """One contender: step() advances it; slices of steps are timed in turns with the others."""

    def __init__(self, step, batch_size: int = 1):
        self.step = step
        self.batch_size = batch_size
        self.slices: list[float] = []  # seconds per step, one entry a slice
        self.steps = 0

    @property
    def best(self) -> float:
        return min(self.slices, default=float("inf"))

    @property
    def median(self) -> float:
        # a neighbour that leaves the shared L3 for a moment flatters one slice; the median doesn't care
        return float(np.median(self.slices)) if self.slices else float("inf")

    def slice(self, n: int) -> None:
        step = self.step
        t0 = time.perf_counter()
        for _ in range(n):
            step()
        self.slices.append((time.perf_counter() - t0) / n)
        self.steps += n


class Split(Timed):
    """A Generator's step() timed with its graph run and sampler call split from inside
    (StepSplit), so rest = step - graph - sampler comes from the same steps; best_split is the
    slice with the fastest whole step."""

    def __init__(self, generator):
        self.split = StepSplit(generator)
        super().__init__(generator.step, generator.batch_size)
        self.best_split = (float("inf"), 0.0, 0.0)  # s per step: (whole, graph, sampler)

    def slice(self, n: int) -> None:
        whole, graph, sampler = (ns / 1e9 for ns in self.split.run(n))
        self.slices.append(whole)
        self.steps += n
        self.best_split = min(self.best_split, (whole, graph, sampler))

    def result(self) -> dict:
        whole, graph, sampler = (s * 1e6 for s in self.best_split)
        return {
            "batch_size": self.batch_size,
            "steps": self.steps,
            "chars_per_s": self.batch_size / self.best,
            "step_us": self.best * 1e6,
            "split_step_us": whole,  # the timed loop's step: graph + sampler + rest
            "graph_us": graph,
            "sampler_us": sampler,
            "rest_us": max(0.0, whole - graph - sampler),
        }


# Idle time before each slice when contenders take turns. onnxruntime's intra-op threads keep
# spinning after a run (measured: ~50 ms of CPU burnt after the last step, on the 2-core EPYC),
# chargen's int8 step's pool 10-20 ms: without a pause, a slice shares the cores with the
# previous contender's spinning threads (measured: chargen's int8 step 83 us/step right after
# onnxruntime's fp32 one against 39 us alone; the fp32 step 158 us right after chargen's
# against 107 us).
SETTLE_S = 0.06


def interleaved(contenders: dict, seconds: float, slice_s: float = 0.15, settle_s: float | None = None) -> None:
    """Time every contender in turns (round-robin slices of about slice_s, each after settle_s of
    idle where there are several), keeping the time of every slice of each: a machine shared
    with other work then slows every contender alike. The one turn-taking harness of gen bench
    and benchmarks/."""
    if settle_s is None:
        settle_s = SETTLE_S if len(contenders) > 1 else 0.0
    chunks = {}
    for name, c in contenders.items():  # warm-up, and a chunk size of about one slice
        t0, n = time.perf_counter(), 0
        while time.perf_counter() - t0 < min(0.05, slice_s) or n < 3:
            c.step()
            n += 1
        chunks[name] = max(1, int(n * slice_s / max(time.perf_counter() - t0, 1e-9)))
    deadline = time.perf_counter() + seconds * len(contenders)
    while True:
        for name, c in contenders.items():
            if settle_s:
                time.sleep(settle_s)
                deadline += settle_s  # the budget is for timed work
            c.slice(chunks[name])
        if time.perf_counter() >= deadline:
            return


def _measure_in_turns(generators, seconds: float) -> list[dict]:
    """Each generator's figures from about `seconds` of slices, the generators taking turns, so
    that models compared in one run see the same machine."""
    contenders = {i: Split(g) for i, g in enumerate(generators)}
    interleaved(contenders, seconds, slice_s=min(0.1, seconds / 10))
    return [c.result() for c in contenders.values()]


_COLD = r"""
import resource, sys, time
t0 = time.perf_counter()
from chargen.runtime import GenerationOptions, Generator, Model
t1 = time.perf_counter()
model = Model.load(sys.argv[1], device=sys.argv[2], threads=None if sys.argv[3] == "" else int(sys.argv[3]),
                   engine=sys.argv[4])
t2 = time.perf_counter()
g = Generator(model, GenerationOptions(seed=0))
g.feed(model.vocab.chars[0])
g.step()
t3 = time.perf_counter()
for _ in range(200):
    g.step()
try:  # VmHWM: this process's own peak (ru_maxrss may carry the parent's across fork + exec)
    with open("/proc/self/status") as f:
        rss = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmHWM:"))
except (OSError, StopIteration):
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
print({"import_s": t1 - t0, "load_s": t2 - t1, "first_step_s": t3 - t2, "total_s": t3 - t0,
       "max_rss_bytes": rss, "torch_imported": "torch" in sys.modules})
"""


def measure_cold_start(path, device: str = "auto", threads: int | None = None, engine: str = "auto") -> dict:
    """import + load + first step in a fresh interpreter (and its wall time from the outside)."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _COLD, os.fspath(path), device, "" if threads is None else str(threads), engine],
        capture_output=True, text=True, timeout=300,
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise BenchError(f"the cold-start process failed: {tail}")
    import ast

    result = ast.literal_eval(proc.stdout.strip().splitlines()[-1])
    result["process_wall_s"] = wall
    return result


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_bench(path, *, device: str = "auto", threads: int | None = None, seconds: float = 2.0,
              batch_sizes=None, cold_start: bool = True, engine: str = "auto") -> dict:
    """The figures of one model (see compare_bench)."""
    return compare_bench([path], device=device, threads=threads, seconds=seconds,
                         batch_sizes=batch_sizes, cold_start=cold_start, engines=[engine])[0]


BATCH_SIZES = (1, 64)
INT8_BATCH_SIZES = (1, 4, 16, 64, 256)  # where an int8 step's kernels change, and a server's batches


def compare_bench(paths, *, device: str = "auto", threads: int | None = None, seconds: float = 2.0,
                  batch_sizes=None, cold_start: bool = True, engines=("auto",)) -> list[dict]:
    """One report per model; at each batch size the models take turns in short slices, so their
    ratios hold even on a machine whose speed drifts (an fp32 against an int8 export, say).
    engines: one for every model, or one per model (the same file twice compares engines).
    batch_sizes: None for INT8_BATCH_SIZES where a model is int8, else BATCH_SIZES.

    Where onnxruntime and chargen's int8 step share the process and threads is None, the
    onnxruntime sessions get their default thread count given explicitly (physical_cores()):
    by default onnxruntime pins its threads to cores, and pinned and spinning they starved the
    int8 step's threads on the same core (measured 2x slower in half the runs)."""
    from chargen.runtime.engine import planned
    from chargen.runtime.generator import GenerationOptions, Generator
    from chargen.runtime.model import DeviceError, Model, ModelError, physical_cores

    paths = [Path(p) for p in paths]
    engines = list(engines) * len(paths) if len(engines) == 1 else list(engines)
    if len(engines) != len(paths):
        raise BenchError(f"{len(engines)} engines for {len(paths)} models: give one, or one per model")
    plans = [planned(e, device, p) for p, e in zip(paths, engines)]
    if threads is None and any(plans) and not all(plans):
        threads = physical_cores()
    models, reports = [], []
    for path, engine in zip(paths, engines):
        try:
            model = Model.load(path, device=device, threads=threads, engine=engine)
        except (ModelError, DeviceError, ImportError, ValueError) as e:
            raise BenchError(str(e)) from None
        so = model.session.get_session_options()
        models.append(model)
        reports.append({
            "model": os.fspath(path),
            "engine": model.engine,
            "device": model.device,
            "precision": model.precision,
            "int8_kernel": model.metadata.get(contract.META_INT8_KERNEL),
            "layers": model.num_layers,
            "hidden_size": model.hidden_size,
            "vocab_size": model.vocab_size,
            "embedding_dim": model.config.get("embedding_dim"),
            "threads": (model.int8_step.threads if model.int8_step is not None else so.intra_op_num_threads),
            "cpus": os.cpu_count(),
            "runs": [],
        })
    if batch_sizes is None:
        batch_sizes = INT8_BATCH_SIZES if any(m.precision == "int8" for m in models) else BATCH_SIZES
    for B in batch_sizes:
        generators = []
        for model in models:
            g = Generator(model, GenerationOptions(seed=0, temperature=1.0), batch_size=int(B))
            g.feed(model.vocab.chars[0])
            generators.append(g)
        for report, run, g, model in zip(reports, _measure_in_turns(generators, seconds), generators, models):
            kernel = model.int8_step.kernel_for(int(B)) if g.engine == "chargen" else None
            chosen = {"auto": model.choice(int(B)).describe()} if model.engine == "auto" else {}
            report["runs"].append({**run, "engine": g.engine, **({"kernel": kernel} if kernel else {}), **chosen})
        del generators
    for report, model in zip(reports, models):
        peak = int8_peak(model, threads, seconds=min(0.3, seconds / 4))
        if peak:
            report["int8_peak"] = peak
            for run in report["runs"]:
                run.update(peak_fractions(run["chars_per_s"], run["batch_size"], peak))
    rss = _rss_bytes()
    for report in reports:
        report["rss_bytes"] = rss
        report["models_loaded"] = len(models)
        if cold_start:
            report["cold_start"] = measure_cold_start(report["model"], device, threads, report["engine"])
    return reports


def int8_peak(model, threads: int | None, seconds: float = 0.3) -> dict | None:
    """The ceilings of an int8 (MatMulInteger) model's products on this CPU, measured here: the
    multiply-adds a second of chargen's packed kernel's inner loop on data in L1, and the read rate
    of the products' weights (as the packed kernel holds them), on the step's threads. None for
    other models, or where the CPU has no packed kernel."""
    from chargen.runtime import _int8
    from chargen.runtime.engine import EngineError, build, unsupported

    if unsupported(model.device, model.metadata) or _int8.packed_kernel() is None:
        return None
    try:
        step = model.int8_step or build(model, threads)
    except EngineError:
        return None
    return {"kernel": _int8.packed_kernel()[0], "threads": step.threads, "macs_per_s": step.peak(seconds),
            "read_bytes_per_s": step.read_rate(seconds), "macs_per_char": step.weight_bytes,
            "weight_bytes": step.weight_bytes, "packed_bytes": step.packed_bytes}


def peak_fractions(chars_per_s: float, batch_size: int, peak: dict) -> dict:
    """A figure against int8_peak's: its products' multiply-adds a second over the kernel's, and
    the bytes of weights a second its steps read (once a step) over the read rate."""
    return {"product_of_peak": chars_per_s * peak["macs_per_char"] / peak["macs_per_s"],
            "weights_of_read_rate": chars_per_s / batch_size * peak["weight_bytes"] / peak["read_bytes_per_s"]}


def format_comparison(reports: list[dict]) -> str:
    """Each model's report, then every model's chars/s as a multiple of the first one's."""
    if len(reports) == 1:
        return format_report(reports[0])
    first = reports[0]
    lines = ["\n\n".join(format_report(r) for r in reports), "",
             f"chars/s against {first['model']} ({_label(first)}), measured in turns:"]
    for k, base in enumerate(first["runs"]):
        ratios = ", ".join(f"{r['model']} ({_label(r)}) {r['runs'][k]['chars_per_s'] / base['chars_per_s']:.3g}x"
                           for r in reports[1:])
        lines.append(f"  batch {base['batch_size']}: {ratios}")
    return "\n".join(lines)


def _engine(report: dict) -> str:
    if report.get("engine") == "auto":
        return ("auto: for each batch size the engine measured faster here (onnxruntime, or chargen's int8 step "
                "in C: 'graph us' is then its step); each row says which, and from what")
    if report.get("engine") == "chargen":
        threads = report["threads"] or "one per CPU:"
        return f"chargen's int8 step in C ({threads} thread(s)) where a row says chargen ('graph us' is its step), else onnxruntime"
    return f"onnxruntime ({report['threads'] or 'its default: one per core,'} intra-op thread(s))"


def _precision(report: dict) -> str:
    kernel = report.get("int8_kernel")
    return f"{report['precision']} {contract.INT8_KERNEL_OPS.get(kernel, kernel)}" if kernel else report["precision"]


def _label(report: dict) -> str:
    """The model's precision, and the engine where it is chargen's (the same file may be compared
    on both engines)."""
    return _precision(report) + (", chargen engine" if report.get("engine") == "chargen" else "")


def format_report(report: dict) -> str:
    lines = [
        f"model     {report['model']}  ({_precision(report)}, L={report['layers']} "
        f"E={report['embedding_dim']} H={report['hidden_size']} V={report['vocab_size']})",
        f"device    {report['device']}, engine {_engine(report)}, {report['cpus']} CPU(s)",
        "",
    ]
    peak = report.get("int8_peak")
    fractions = f" {'% peak':>7} {'% read':>7}" if peak else ""
    lines.append(f"{'batch':>6} {'chars/s':>12} {'step us':>9} {'graph us':>9} {'sampler us':>11} {'rest us':>8}"
                 f"{fractions}  engine")
    for r in report["runs"]:
        engine = r.get("engine", "onnxruntime") + (f" ({r['kernel']})" if r.get("kernel") else "")
        if r.get("auto"):  # e.g. "chargen (measured: chargen 41,200, onnxruntime 30,100 chars/s)"
            engine += " <- auto, " + r["auto"].split(" ", 1)[1].strip("()")
        cells = f" {r['product_of_peak']:>7.0%} {r['weights_of_read_rate']:>7.0%}" if peak else ""
        lines.append(
            f"{r['batch_size']:>6} {r['chars_per_s']:>12,.0f} {r['step_us']:>9.1f} {r['graph_us']:>9.1f} "
            f"{r['sampler_us']:>11.2f} {r['rest_us']:>8.1f}{cells}  {engine}"
        )
    if peak:
        lines.append(
            f"% peak: the step's int8 multiply-adds a second ({peak['macs_per_char'] / 1e6:.2f} M a character) "
            f"against chargen's {peak['kernel']} kernel's inner loop on data in L1, "
            f"{peak['macs_per_s'] / 1e9:.1f} G/s on {peak['threads']} thread(s); % read: the int8 weights "
            f"({peak['weight_bytes'] / 2**20:.1f} MiB) read once a step, against "
            f"{peak['read_bytes_per_s'] / 1e9:.1f} GB/s read of them here")
    lines.append("")
    loaded = report.get("models_loaded", 1)
    which = "after the runs" if loaded == 1 else f"after the runs, {loaded} models loaded"
    lines.append(f"resident memory (this process, {which}): {report['rss_bytes'] / 2**20:.0f} MiB")
    cs = report.get("cold_start")
    if cs:
        lines.append(
            f"cold start: {cs['total_s'] * 1e3:.0f} ms = import {cs['import_s'] * 1e3:.0f} + load "
            f"{cs['load_s'] * 1e3:.0f} + first step {cs['first_step_s'] * 1e3:.1f} ms "
            f"(whole process, interpreter start included: {cs['process_wall_s'] * 1e3:.0f} ms); "
            f"peak resident memory of a generating process {cs['max_rss_bytes'] / 2**20:.0f} MiB"
        )
    return "\n".join(lines)


def main(argv=None) -> None:  # python -m chargen.runtime.bench model.onnx [--json]
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print("usage: python -m chargen.runtime.bench MODEL.onnx [--json]", file=sys.stderr)
        raise SystemExit(2)
    report = run_bench(argv[0])
    print(json.dumps(report, indent=2) if "--json" in argv else format_report(report))


if __name__ == "__main__":
    main()
