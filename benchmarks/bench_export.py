"""Step time of the exported ONNX graph at batch 1, variant by variant, beside the floor.

    python benchmarks/bench_export.py                     # tutorial size: E=256, H=1024, V=65
    python benchmarks/bench_export.py --hidden 512 --steps 2000 --rounds 5
    python benchmarks/bench_export.py --checkpoint runs/x/best.pt   # a trained model

One step at batch 1 is the inner loop of every generated character. Printed in
one run, per variant and intra-op thread count (1 and 2), through
session.run and through run_with_iobinding (preallocated state buffers, as
chargen.runtime runs it), the best over --rounds interleaved rounds of --steps
steps each (us per step, the state fed back each step, as generation does),
with the file size:

    gru-op          the ONNX GRU op (linear_before_reset=1): what a GRU export gives
    plain           chargen's graph: folded [V, 3H] gather table, one [H, 3H] MatMul, fused r|z gates
    plain-nofold    the same without folding b_hh's r, z parts into the table
                    (the whole b_hh stays with the MatMul, which onnxruntime fuses into a Gemm)
    plain-2mm       two recurrent MatMuls ([H, 2H] for r|z, [H, H] + bias for n) and two
                    gather tables: no Split of gi or gh
    plain-gemm      one recurrent Gemm that adds [gi_rz | b_hn], gathered from a [V, 3H]
                    table: 15 nodes after onnxruntime's fusions instead of 17
    plain-gemm2     two recurrent Gemms that add gi_rz (then Sigmoid: one FusedGemm) and
                    b_hn: 14 nodes, two parallel sections
    fp16-weights    fp16 initializers Cast to float32 (folded at session start)
    fp16-full       float16 arithmetic, Cast at inputs and outputs
    int8            quantize_dynamic on the recurrent MatMul, s8 weights, reduce_range (the export's)
    int8-u8         the same with u8 weights, full range
    int8-head       s8 with the head's MatMul quantized too
    int8-nofold, int8-2mm   the int8 export of those layouts
    int8-nbits      --int8-kernel nbits: the recurrent MatMul as onnxruntime's MatMulNBits
                    (8-bit weights, symmetric blocks of 128, accuracy level 4 = int8
                    arithmetic): the weight-only format LLM exports use
    int8-nbits-head the same with the head's MatMul quantized too

and the floor: numpy's 3H x H float32 matrix-vector product alone (the one
piece of arithmetic a step cannot avoid). The machine is shared: rounds are
interleaved across variants and the best round is kept.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--vocab", type=int, default=65)
    p.add_argument("--embedding", type=int, default=256)
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--checkpoint", default=None, help="benchmark a trained checkpoint instead of a random init")
    p.add_argument("--steps", type=int, default=2000, help="steps per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", default="1,2", help="intra-op thread counts to try")
    p.add_argument("--variants", default="all", help="comma-separated subset of the variants")
    return p.parse_args()


def build_variants(args):
    import torch

    from chargen.export.graph_variants import GraphOptions, build_graph, build_gru_op_graph

    from chargen.export.graph import build_step_graph
    from chargen.export.onnx_export import quantize_int8, torch_weights
    from chargen.runtime.contract import Vocab
    from chargen.train.model import CharGRU, ModelConfig

    if args.checkpoint:
        from chargen.train.checkpoint import load_model

        model, vocab, _ = load_model(args.checkpoint)
        what = f"checkpoint {args.checkpoint}"
    else:
        torch.manual_seed(0)
        model = CharGRU(ModelConfig(args.vocab, args.embedding, args.hidden, args.layers)).eval()
        vocab = Vocab(tuple(chr(0x100 + i) for i in range(args.vocab)))
        what = "random init (torch's default)"
    from dataclasses import asdict

    cfg = asdict(model.config)
    w = torch_weights(model)
    fp32 = build_step_graph(w, cfg, vocab)
    int8_fp32 = build_step_graph(w, cfg, vocab, precision="int8")
    nofold, two = GraphOptions(fold_hh_bias=False), GraphOptions(fused_gates=False)
    makers = {
        "gru-op": lambda: build_gru_op_graph(w, cfg, vocab),
        "plain": lambda: fp32,
        "plain-nofold": lambda: build_graph(w, cfg, vocab, options=nofold),
        "plain-2mm": lambda: build_graph(w, cfg, vocab, options=two),
        "plain-gemm": lambda: build_graph(w, cfg, vocab, options=GraphOptions(gemm_gates=True)),
        "plain-gemm2": lambda: build_graph(w, cfg, vocab, options=GraphOptions(gemm_gates=True, fused_gates=False)),
        "fp16-weights": lambda: build_graph(w, cfg, vocab, precision="fp16", options=GraphOptions(fp16="weights")),
        "fp16-full": lambda: build_graph(w, cfg, vocab, precision="fp16", options=GraphOptions(fp16="full")),
        "int8": lambda: quantize_int8(int8_fp32),
        "int8-u8": lambda: quantize_int8(int8_fp32, weight_type="u8"),
        "int8-head": lambda: quantize_int8(int8_fp32, head=True),
        "int8-nofold": lambda: quantize_int8(build_graph(w, cfg, vocab, precision="int8", options=nofold)),
        "int8-2mm": lambda: quantize_int8(build_graph(w, cfg, vocab, precision="int8", options=two)),
        "int8-nbits": lambda: quantize_int8(int8_fp32, kernel="nbits"),
        "int8-nbits-head": lambda: quantize_int8(int8_fp32, kernel="nbits", head=True),
    }
    chosen = list(makers) if args.variants == "all" else args.variants.split(",")
    return model, what, {name: makers[name]().SerializeToString() for name in chosen}


def session(data: bytes, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def time_steps(s, L, H, steps) -> float:
    """us per step at batch 1, the state fed back each step (as in generation)."""
    feed = {"token": np.zeros(1, np.int64), "h": np.zeros((L, 1, H), np.float32)}
    names = ["logits", "h_out"]
    run = s.run
    t = time.perf_counter()
    for i in range(steps):
        feed["token"][0] = i % 7
        _, feed["h"] = run(names, feed)
    return (time.perf_counter() - t) / steps * 1e6


def time_steps_iobinding(s, L, H, steps) -> float:
    """The same through IOBinding with preallocated state buffers (what chargen.runtime does):
    no per-step allocation or copy of the state."""
    import onnxruntime as ort

    token = np.zeros(1, np.int64)
    hs = [ort.OrtValue.ortvalue_from_numpy(np.zeros((L, 1, H), np.float32)) for _ in range(2)]
    V = s.get_outputs()[0].shape[1]
    logits = ort.OrtValue.ortvalue_from_numpy(np.zeros((1, V), np.float32))
    tok = ort.OrtValue.ortvalue_from_numpy(token)
    bindings = []
    for i in range(2):
        b = s.io_binding()
        b.bind_ortvalue_input("token", tok)
        b.bind_ortvalue_input("h", hs[i])
        b.bind_ortvalue_output("logits", logits)
        b.bind_ortvalue_output("h_out", hs[1 - i])
        bindings.append(b)
    run = s.run_with_iobinding
    t = time.perf_counter()
    for i in range(steps):
        run(bindings[i & 1])
    return (time.perf_counter() - t) / steps * 1e6


FLOOR_CODE = """
import sys, time, numpy as np
H, steps = int(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
w_t = rng.standard_normal((H, 3 * H)).astype(np.float32)  # W_hh^T, [H, 3H]
w = np.ascontiguousarray(w_t.T)  # W_hh, [3H, H]
h = rng.standard_normal((1, H)).astype(np.float32)
out = np.empty((1, 3 * H), np.float32)
best = 1e9
for f in (lambda: np.matmul(h, w_t, out=out), lambda: np.dot(w, h[0])):
    for _ in range(100):
        f()
    t = time.perf_counter()
    for _ in range(steps):
        f()
    best = min(best, (time.perf_counter() - t) / steps * 1e6)
print(best)
"""


def time_matvec(H, steps, threads) -> float:
    """numpy's (3H x H) float32 matrix-vector product, h @ W^T or W @ h, whichever is faster,
    in a fresh process with OpenBLAS limited to `threads` threads."""
    import subprocess

    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    r = subprocess.run([sys.executable, "-c", FLOOR_CODE, str(H), str(steps)], env=env,
                       capture_output=True, text=True, check=True)
    return float(r.stdout.strip())


def main():
    args = parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    t0 = time.perf_counter()
    model, what, variants = build_variants(args)
    L, H = model.config.layers, model.config.hidden_size
    print(f"chargen export benchmark: V={model.config.vocab_size} E={model.config.embedding_dim} H={H} L={L}, {what}")
    print(f"  {os.cpu_count()} CPUs, onnxruntime {__import__('onnxruntime').__version__}, "
          f"numpy {np.__version__}; {args.rounds} rounds x {args.steps} steps, best round kept "
          f"(built in {time.perf_counter() - t0:.1f} s)")
    sessions = {(name, th): session(data, th) for name, data in variants.items() for th in threads}
    modes = {"run": time_steps, "iob": time_steps_iobinding}
    for s in sessions.values():  # warm-up
        for f in modes.values():
            f(s, L, H, 200)
    times = {(key, m): [] for key in sessions for m in modes}
    floor = {th: [] for th in threads}
    for _ in range(args.rounds):
        for th in threads:
            floor[th].append(time_matvec(H, args.steps, th))
        for key, s in sessions.items():
            for m, f in modes.items():
                times[(key, m)].append(f(s, L, H, args.steps))
    fl = min(min(v) for v in floor.values())
    best = {name: min(min(times[((name, th), m)]) for th in threads for m in modes) for name in variants}
    print("  us per step at batch 1 (best round); run = session.run, iob = run_with_iobinding")
    head = f"  {'variant':<14}{'size':>9}" + "".join(f"{f'{th}thr run':>11}{f'{th}thr iob':>10}" for th in threads)
    head += f"{'best':>8}{'x floor':>9}" + ("   vs gru-op" if "gru-op" in variants else "")
    print(head)
    for name, data in variants.items():
        row = f"  {name:<14}{len(data) / 2**20:>7.2f}MB"
        for th in threads:
            row += f"{min(times[((name, th), 'run')]):>11.1f}{min(times[((name, th), 'iob')]):>10.1f}"
        row += f"{best[name]:>8.1f}{best[name] / fl:>9.2f}"
        if "gru-op" in variants:
            row += f"{best['gru-op'] / best[name]:>10.2f}x"
        print(row)
    print(f"  floor: numpy {3 * H}x{H} float32 matvec: "
          + ", ".join(f"{th} thr {min(v):.1f} us (median {statistics.median(v):.1f})" for th, v in floor.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
