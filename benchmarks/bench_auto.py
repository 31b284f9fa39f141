"""engine='auto' against the two pinned engines, each batch size in a process of its own.

    python benchmarks/bench_auto.py                       # tutorial size (E=256, H=1024, V=65), int8 and fp32
    python benchmarks/bench_auto.py --batch 1 --batch 64 --rounds 3 --seconds 2

For every model and batch size: chars/s of the step (the run and the sampler, as gen sample
generates) with engine='onnxruntime', engine='chargen' (int8 models) and engine='auto' (after its
calibration, which the first 'auto' process measures and later ones read from the cache of this
run), auto's choice, and auto against the faster pinned engine. Every figure is a fresh process
(the state a user's program starts from), the configurations take turns round by round, and
each keeps its best round, so drift on a shared machine touches every column alike.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BATCHES = (1, 4, 16, 64, 256)


def child(path: str, engine: str, B: int, seconds: float) -> dict:
    """In the measuring process: load, make the generator (auto calibrates here), time steps."""
    from chargen.runtime import GenerationOptions, Generator, Model

    model = Model.load(path, device="cpu", engine=engine)
    g = Generator(model, GenerationOptions(seed=0), batch_size=B)
    g.feed("ROMEO: ")
    for _ in range(5):
        g.step()
    best, end = float("inf"), time.perf_counter() + seconds
    chunk = 1
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        for _ in range(chunk):
            g.step()
        dt = (time.perf_counter() - t0) / chunk
        best = min(best, dt)
        chunk = max(1, min(200, int(0.05 / max(dt, 1e-7))))
    choice = model.choice(B)
    return {"chars_per_s": B / best, "engine": g.engine, "why": choice.describe()}


def measure(path, engine, B, seconds, env) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", str(path), engine, str(B), str(seconds)],
                         capture_output=True, text=True, env=env, timeout=600)
    if out.returncode != 0:
        raise SystemExit(f"{engine} at batch {B} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, action="append", help="batch sizes (default 1 4 16 64 256)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=1.5, help="timed seconds per process")
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--embedding", type=int, default=256)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.child:
        path, engine, B, seconds = args.child
        print(json.dumps(child(path, engine, int(B), float(seconds))))
        return

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_runtime import build_models

    from chargen.runtime.calibrate import cpu_name

    batches = args.batch or list(BATCHES)
    tmp = Path(tempfile.mkdtemp(prefix="bench-auto-"))
    paths = build_models(tmp, args.embedding, args.hidden, 1)[0]
    env = dict(os.environ, CHARGEN_CACHE_DIR=str(tmp / "cache"))
    env.pop("CHARGEN_NO_CALIBRATION", None)
    configs = [("int8", e) for e in ("onnxruntime", "chargen", "auto")] + [("fp32", e) for e in ("onnxruntime", "auto")]
    best: dict = {}
    for r in range(args.rounds):
        for B in batches:
            for precision, engine in configs:
                got = measure(paths[precision], engine, B, args.seconds, env)
                key = (precision, B, engine)
                if key not in best or got["chars_per_s"] > best[key]["chars_per_s"]:
                    best[key] = got
        print(f"round {r + 1} of {args.rounds} done", file=sys.stderr)

    print(f"CPU: {cpu_name()}, {os.cpu_count()} CPUs; E={args.embedding} H={args.hidden} V=65; "
          f"best of {args.rounds} rounds, {args.seconds:g} s each, one process per figure (chars/s)")
    rows = []
    for precision in ("int8", "fp32"):
        engines = [e for p, e in configs if p == precision]
        pinned = [e for e in engines if e != "auto"]
        print(f"\n{precision}\n| batch | " + " | ".join(engines) + " | auto ran | auto / best pinned |")
        print("|---:|" + "---:|" * len(engines) + "---|---:|")
        for B in batches:
            figs = {e: best[(precision, B, e)]["chars_per_s"] for e in engines}
            ratio = figs["auto"] / max(figs[e] for e in pinned)
            print(f"| {B} | " + " | ".join(f"{figs[e]:,.0f}" for e in engines)
                  + f" | {best[(precision, B, 'auto')]['engine']} | {ratio:.2f} |")
            rows.append({"precision": precision, "batch": B, **figs, "auto_engine": best[(precision, B, "auto")]["engine"],
                         "auto_why": best[(precision, B, "auto")]["why"], "ratio": ratio})
    print("\nauto's calibration (first process of each batch size):")
    for B in batches:
        print(f"  int8 batch {B}: {best[('int8', B, 'auto')]['why']}")
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_name(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
