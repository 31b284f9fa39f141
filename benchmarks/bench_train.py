"""Training throughput: chargen's CPU step against a plain PyTorch loop, in one run.

    python benchmarks/bench_train.py [--steps 6] [--rounds 3] [--data input.txt]

All train the tutorial model (Embedding 256 -> GRU 1024 -> Linear, batch 64 x 100)
from the same initial weights on the same batches. The plain loop is what a
PyTorch user writes: nn.GRU, Adam, torch's default threads. chargen's steps are
the ones `gen train` runs on CPU: FusedGRU with float32 GEMMs in numpy's BLAS
(`--precision fp32`), and with bfloat16 GEMMs in torch's oneDNN (`--precision
bf16`, the default where the CPU multiplies bf16 natively).
Rounds alternate the loops so that a noisy neighbour hurts all alike; the
figure is the median. The losses after the same steps are printed side by side:
plain and fp32 are the same arithmetic and agree to float rounding; bf16 rounds
the GEMMs' inputs to 8 bits of mantissa. --data trains on windows of a real text
(else random symbols), so that the losses mean something.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F

from chargen.train.loop import usable_cores
from chargen.train.model import CharGRU, ModelConfig


def run(model: CharGRU, fused: bool, batches, threads: int, bf16: bool = False):
    torch.set_num_threads(threads)
    model.fused, model.bf16 = fused, bf16
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
    parser.add_argument("--data", help="a UTF-8 text to draw the batches from (default: random symbols)")
    args = parser.parse_args()
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    if args.data:
        text = open(args.data, encoding="utf-8").read()
        chars = sorted(set(text))
        ids = torch.tensor([chars.index(c) for c in text[:200_000]])
        V = len(chars)

        def batch():
            starts = torch.randint(0, len(ids) - 101, (64,), generator=g)
            w = torch.stack([ids[s : s + 101] for s in starts.tolist()], 1)  # w: (101, 64)
            return w[:-1], w[1:]
    else:
        V = 65

        def batch():
            return torch.randint(0, V, (100, 64), generator=g), torch.randint(0, V, (100, 64), generator=g)

    base = CharGRU(ModelConfig(V))
    batches = [batch() for _ in range(args.steps)]
    cores = usable_cores()
    loops = {  # name: (fused, torch threads, bf16)
        f"plain PyTorch loop (nn.GRU, {cores} threads)": (False, cores, False),
        "chargen, --precision fp32 (OpenBLAS)": (True, 1, False),
        f"chargen, --precision bf16 (oneDNN, {cores} threads)": (True, cores, True),
    }
    speeds = {name: [] for name in loops}
    losses = {}
    for _ in range(args.rounds):
        for name, (fused, threads, bf16) in loops.items():
            s, losses[name] = run(copy.deepcopy(base), fused, batches, threads, bf16)
            speeds[name] += s
    print(f"tutorial model, batch 64 x 100, {cores} cores, {args.rounds} rounds x {args.steps - 1} timed steps, "
          f"{'text ' + args.data if args.data else 'random symbols'}")
    p = statistics.median(next(iter(speeds.values())))
    for name in loops:
        f = statistics.median(speeds[name])
        print(f"  {name:44s} {f:8,.0f} chars/s   {f / p:.2f}x   loss after {args.steps} steps {losses[name][-1]:.5f}")


if __name__ == "__main__":
    main()
