"""Training throughput: chargen's CPU step against a plain PyTorch loop, in one run.

    python benchmarks/bench_train.py [--steps 6] [--rounds 3]

Both train the tutorial model (Embedding 256 -> GRU 1024 -> Linear, batch 64 x 100)
from the same initial weights on the same batches. The plain loop is what a
PyTorch user writes: nn.GRU, Adam, torch's default threads. chargen's step is
the one `gen train` runs on CPU (FusedGRU, numpy's BLAS for the recurrence).
Rounds alternate plain/chargen so that a noisy neighbour hurts both alike; the
figure is the median. The losses after the same steps are printed side by side:
the two are the same arithmetic, so they agree to float rounding.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time

import torch
import torch.nn.functional as F

from chargen.train.model import CharGRU, ModelConfig


def run(model: CharGRU, fused: bool, batches, threads: int):
    torch.set_num_threads(threads)
    model.fused = fused
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    times, losses = [], []
    for x, y in batches:
        t0 = time.perf_counter()
        if fused:
            loss, _ = model.loss(x, y)
        else:  # the plain loop: nn.GRU forward, no custom parts
            logits, _ = model.rnn(model.embedding(x))
            logits = model.head(logits)
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        times.append(time.perf_counter() - t0)
        losses.append(loss.item())
    chars = batches[0][0].numel()
    return [chars / t for t in times[1:]], losses  # the first step warms caches up


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    base = CharGRU(ModelConfig(65))
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randint(0, 65, (100, 64), generator=g), torch.randint(0, 65, (100, 64), generator=g))
               for _ in range(args.steps)]
    cores = os.cpu_count() or 1
    plain, fused = [], []
    for _ in range(args.rounds):
        speeds, plain_losses = run(copy.deepcopy(base), False, batches, cores)
        plain += speeds
        speeds, fused_losses = run(copy.deepcopy(base), True, batches, 1)
        fused += speeds
    p, f = statistics.median(plain), statistics.median(fused)
    print(f"tutorial model, batch 64 x 100, {cores} cores, {args.rounds} rounds x {args.steps - 1} timed steps")
    print(f"  plain PyTorch loop (nn.GRU, {cores} threads)  {p:8,.0f} chars/s")
    print(f"  chargen train step (FusedGRU)          {f:8,.0f} chars/s   {f / p:.2f}x")
    print(f"  loss after {args.steps} steps: plain {plain_losses[-1]:.5f}  chargen {fused_losses[-1]:.5f}")


if __name__ == "__main__":
    main()
