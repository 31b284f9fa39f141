"""Time to first character of a prompt that arrives while 63 slots generate, with the Batch's
prefill runs (prefill=8) and without (prefill=1), for an fp32 and an int8 model file:

    python benchmarks/bench_prefill.py fp32.onnx int8.onnx     # e.g. tutorial-size models

For each: 63 slots generate, then 8 times a 60-character prompt is admitted and the Batch
stepped until its first character; prints the median time and steps, and the median step time
meanwhile (what the other slots pay)."""

import statistics
import sys
import time

from chargen.runtime import GenerationOptions, Model
from chargen.runtime.batch import Batch

P = "First Citizen:\nBefore we proceed any further, hear me speak.\n"  # 60 characters
for f in sys.argv[1:]:
    m = Model.load(f, device="cpu")
    for prefill in (1, 8):
        b = Batch(m, max_batch=64, prefill=prefill)
        for j in range(63):
            b.admit("ROMEO: ", GenerationOptions(seed=j, max_length=10**9))
        for _ in range(10): b.step()
        ttfc, steps_t = [], []
        for r in range(8):
            t0 = time.perf_counter(); s = b.admit(P, GenerationOptions(seed=100 + r, max_length=1)); n = 0
            while True:
                a = time.perf_counter(); ev = b.step(); steps_t.append(time.perf_counter() - a); n += 1
                if any(e.slot == s for e in ev): break
            ttfc.append(time.perf_counter() - t0)
        print(f"{f} prefill={prefill}: ttfc p50 {statistics.median(ttfc)*1e3:.1f} ms over {n} steps; step p50 {statistics.median(steps_t)*1e3:.2f} ms")
