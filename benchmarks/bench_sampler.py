"""The C sampler (chargen.runtime.Sampler) against numpy, per call, in one run.

    python benchmarks/bench_sampler.py                 # V=65 (tiny-shakespeare), B=64
    python benchmarks/bench_sampler.py --V 5000        # a bigger vocabulary
    python benchmarks/bench_sampler.py --json out.json # + the figures as JSON

Measured (microseconds per call, from Python, float32 logits ~ N(0, 2^2)):
  sample            Sampler.sample(row): one id from V logits, no cut
  sample cuts       Sampler.sample(row, 0.8, top_k=40, top_p=0.95)
  numpy             softmax in float64 + np.random.choice(V, p=p): the usual way
  sample_batch      Sampler.sample_batch([B, V]): one id per row, one call
  numpy batch       the same in numpy, vectorised: softmax over rows, cumsum, inverse CDF
  numpy loop        B calls of the numpy way (what a per-stream loop costs)
Each figure is the best of many short timing windows (the machine may be shared: the
best window is the one nobody interrupted); the median is shown beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import timeit

import numpy as np


def per_call(fn, number: int, repeat: int) -> tuple[float, float]:
    """(best, median) seconds per call over `repeat` windows of `number` calls."""
    times = np.array(timeit.repeat(fn, number=number, repeat=repeat)) / number
    return float(times.min()), float(np.median(times))


def numpy_sample(x: np.ndarray) -> int:
    z = x.astype(np.float64)
    z = np.exp(z - z.max())
    z /= z.sum()
    return int(np.random.choice(len(z), p=z))


def numpy_batch(X: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    z = X.astype(np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    c = np.cumsum(z, axis=1)
    u = rng.random(len(X))[:, None] * c[:, -1:]
    return (c <= u).sum(axis=1)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--V", type=int, default=65, help="vocabulary size (default 65)")
    ap.add_argument("--B", type=int, default=64, help="rows of the batch (default 64)")
    ap.add_argument("--repeat", type=int, default=200, help="timing windows per figure")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args(argv)

    from chargen.runtime import Sampler

    V, B, R = args.V, args.B, args.repeat
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(V) * 2).astype(np.float32)
    X = (rng.standard_normal((B, V)) * 2).astype(np.float32)
    out = np.empty(B, np.int64)
    s = Sampler(0)
    np.random.seed(0)
    small = max(1, 20_000 // V)  # calls per window: windows of ~1-5 ms
    rows = {
        "sample": per_call(lambda: s.sample(x), small, R),
        "sample cuts": per_call(lambda: s.sample(x, 0.8, 40, 0.95), small, R),
        "numpy": per_call(lambda: numpy_sample(x), 20, R // 2),
        "sample_batch": per_call(lambda: s.sample_batch(X, out=out), max(1, small // B), R),
        "sample_batch cuts": per_call(lambda: s.sample_batch(X, 0.8, 40, 0.95, out=out), max(1, small // B), R),
        "numpy batch": per_call(lambda: numpy_batch(X, rng), 10, R // 2),
        "numpy loop": per_call(lambda: [numpy_sample(r) for r in X], 1, R // 4),
    }
    us = {k: (b * 1e6, m * 1e6) for k, (b, m) in rows.items()}

    print(f"chargen sampler benchmark: V={V}, B={B}; {platform.python_implementation()} "
          f"{platform.python_version()}, numpy {np.__version__}, {platform.machine()}, "
          f"{os.cpu_count()} CPUs ({platform.processor() or platform.platform()})")
    print(f"{'':28s}{'best us/call':>14s}{'median':>10s}")
    for name, (b, m) in us.items():
        print(f"  {name:26s}{b:14.3f}{m:10.3f}")
    ratios = {
        "numpy / sample": us["numpy"][0] / us["sample"][0],
        "numpy / sample cuts": us["numpy"][0] / us["sample cuts"][0],
        "numpy batch / sample_batch": us["numpy batch"][0] / us["sample_batch"][0],
        "numpy loop / sample_batch": us["numpy loop"][0] / us["sample_batch"][0],
        f"sample_batch per row ({B} rows)": us["sample_batch"][0] / B,
    }
    print("ratios (best figures):")
    for name, r in ratios.items():
        unit = " us" if name.startswith("sample_batch per row") else "x"
        print(f"  {name:34s}{r:10.2f}{unit}")
    result = {"V": V, "B": B, "us_per_call": {k: {"best": b, "median": m} for k, (b, m) in us.items()},
              "ratios": ratios, "python": platform.python_version(), "numpy": np.__version__,
              "machine": platform.machine(), "cpus": os.cpu_count()}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
