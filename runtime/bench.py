"""`gen bench`: how fast the runtime generates with a given model on this machine.

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

from chargen.runtime import contract


class BenchError(RuntimeError):
    """The model cannot be benchmarked; one-line message."""


def _measure_generator(generator, seconds: float) -> dict:
    """chars/s of plain step() calls, and the per-step split (graph run, sampler, the rest) from
    an instrumented loop of the same two calls; the two loops take turns in short slices and
    each keeps its best slice, so a machine busy with other work skews neither more."""
    B = generator.batch_size
    step = generator.step
    sample, run = generator._sampler.sample_batch, generator._run
    args = (generator._logits, generator._temperature, generator._top_k, generator._top_p, generator._tok)
    clock = time.perf_counter_ns
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < min(0.05, seconds / 10) or n < 3:  # warm-up; slice size
        step()
        n += 1
    chunk = max(1, int(n * min(0.1, seconds / 10) / max(time.perf_counter() - t0, 1e-9)))
    best_step = best_split = float("inf")
    graph_ns = sampler_ns = 0.0
    steps = 0
    deadline = time.perf_counter() + seconds
    while True:
        a = clock()
        for _ in range(chunk):
            step()
        best_step = min(best_step, (clock() - a) / chunk)
        tg = ts = 0
        for _ in range(chunk):
            a = clock()
            sample(*args)
            b = clock()
            run()
            tg += clock() - b
            ts += b - a
        if (tg + ts) / chunk < best_split:
            best_split = (tg + ts) / chunk
            graph_ns, sampler_ns = tg / chunk, ts / chunk
        steps += 2 * chunk
        if time.perf_counter() >= deadline:
            break
    total_us = best_step / 1e3
    return {
        "batch_size": B,
        "steps": steps,
        "chars_per_s": B / (best_step / 1e9),
        "step_us": total_us,
        "graph_us": graph_ns / 1e3,
        "sampler_us": sampler_ns / 1e3,
        "rest_us": max(0.0, total_us - graph_ns / 1e3 - sampler_ns / 1e3),
    }


_COLD = r"""
import resource, sys, time
t0 = time.perf_counter()
from chargen.runtime import GenerationOptions, Generator, Model
t1 = time.perf_counter()
model = Model.load(sys.argv[1], device=sys.argv[2], threads=None if sys.argv[3] == "" else int(sys.argv[3]))
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


def measure_cold_start(path, device: str = "auto", threads: int | None = None) -> dict:
    """import + load + first step in a fresh interpreter (and its wall time from the outside)."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _COLD, os.fspath(path), device, "" if threads is None else str(threads)],
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
              batch_sizes=(1, 64), cold_start: bool = True) -> dict:
    from chargen.runtime.generator import GenerationOptions, Generator
    from chargen.runtime.model import DeviceError, Model, ModelError

    path = Path(path)
    try:
        model = Model.load(path, device=device, threads=threads)
    except (ModelError, DeviceError, ImportError, ValueError) as e:
        raise BenchError(str(e)) from None
    so = model.session.get_session_options()
    report = {
        "model": os.fspath(path),
        "device": model.device,
        "precision": model.precision,
        "int8_kernel": model.metadata.get(contract.META_INT8_KERNEL),
        "layers": model.num_layers,
        "hidden_size": model.hidden_size,
        "vocab_size": model.vocab_size,
        "embedding_dim": model.config.get("embedding_dim"),
        "threads": so.intra_op_num_threads,
        "cpus": os.cpu_count(),
        "runs": [],
    }
    start = model.vocab.chars[0]
    for B in batch_sizes:
        g = Generator(model, GenerationOptions(seed=0, temperature=1.0), batch_size=int(B))
        g.feed(start)
        report["runs"].append(_measure_generator(g, seconds))
        del g
    report["rss_bytes"] = _rss_bytes()
    if cold_start:
        report["cold_start"] = measure_cold_start(path, device, threads)
    return report


def _precision(report: dict) -> str:
    kernel = report.get("int8_kernel")
    return f"{report['precision']} {contract.INT8_KERNEL_OPS.get(kernel, kernel)}" if kernel else report["precision"]


def format_report(report: dict) -> str:
    lines = [
        f"model     {report['model']}  ({_precision(report)}, "
        f"L={report['layers']} "
        f"E={report['embedding_dim']} H={report['hidden_size']} V={report['vocab_size']})",
        f"device    {report['device']}, {report['threads'] or 'onnxruntime default (one per core)'} intra-op thread(s), {report['cpus']} CPU(s)",
        "",
        f"{'batch':>6} {'chars/s':>12} {'step us':>9} {'graph us':>9} {'sampler us':>11} {'rest us':>8}",
    ]
    for r in report["runs"]:
        lines.append(
            f"{r['batch_size']:>6} {r['chars_per_s']:>12,.0f} {r['step_us']:>9.1f} {r['graph_us']:>9.1f} "
            f"{r['sampler_us']:>11.2f} {r['rest_us']:>8.1f}"
        )
    lines.append("")
    lines.append(f"resident memory (this process, after the runs): {report['rss_bytes'] / 2**20:.0f} MiB")
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
