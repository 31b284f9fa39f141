"""The runtime against the two obvious alternatives, in one run, on one random-init model.

    python benchmarks/bench_runtime.py                  # tutorial size: E=256, H=1024, V=65
    python benchmarks/bench_runtime.py --sweep          # + onnxruntime session options
    python benchmarks/bench_runtime.py --json out.json  # + the figures as JSON
    python benchmarks/bench_runtime.py --contention 3   # only chargen's int8 step: default threads
                                                        # against 1, quiet and beside 3 busy processes

Measured (chars/s; per step: one graph run + one draw for every stream):
  runtime       chargen.runtime: IOBinding, ping-pong hidden state, C sampler (fp32, int8, int8-nbits),
                on onnxruntime
  runtime int8-chargen  the int8 model on chargen's own int8 step in C (chargen.runtime.engine)
  ort+numpy     a plain loop: session.run(feeds) + numpy softmax + np.random.choice
  torch eager   nn.Embedding + nn.GRU + nn.Linear, one step at a time, torch.multinomial
  floor         the step's weight read alone: the same weight matrices as MatMuls in one graph,
                run the same way, timed in turns with the fp32 step alone (the ceiling for fp32;
                "fp32 / floor" = floor time / step time)
  floor int8    the same graph quantized as the int8 export is (each kernel): onnxruntime's
                int8 products alone, timed in turns with that int8 step alone
  peak          the int8 rows' share of two ceilings measured first on this machine
                (chargen.bench.int8_peak): the multiply-adds a second of chargen's packed
                kernel's inner loop on data in L1 ("product % of peak": the step's int8 products
                a second over it), and the read rate of the int8 weights ("weights % of read
                rate": one read of them a step)
Every onnxruntime session gets onnxruntime's default thread count (one per physical core) given
explicitly: left to its default, onnxruntime pins its threads to cores, and those pinned threads,
spinning after a run, starved chargen's int8 step on the same core (2x slower in half the runs);
given, they are not pinned, and onnxruntime's own figures did not change.
The weights are random (speed does not depend on them); the graph comes from
chargen.export.graph.build_step_graph, int8 from chargen.export.onnx_export.quantize_int8
(int8: MatMulInteger, the export's default; int8-nbits: --int8-kernel nbits).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from chargen.bench import Split, Timed, interleaved

ALPHABET = "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"  # tiny-shakespeare's 65


def build_models(tmp: Path, E: int, H: int, L: int):
    import onnx

    from chargen.export.graph_variants import random_weights

    from chargen.export.graph import build_step_graph
    from chargen.export.onnx_export import quantize_int8
    from chargen.runtime.contract import Vocab

    vocab = Vocab.from_text(ALPHABET)
    config = dict(vocab_size=len(vocab), embedding_dim=E, hidden_size=H, layers=L, dropout=0.0)
    weights = random_weights(len(vocab), E, H, L)
    int8_src = build_step_graph(weights, config, vocab, corpus="random", precision="int8")
    models = {
        "fp32": build_step_graph(weights, config, vocab, corpus="random", precision="fp32"),
        "int8": quantize_int8(int8_src),  # the export's default: MatMulInteger
        "int8-nbits": quantize_int8(int8_src, kernel="nbits"),
    }
    paths = {}
    for name, proto in models.items():
        paths[name] = tmp / f"{name}.onnx"
        onnx.save(proto, paths[name])
    floor = floor_graph(weights, L)
    floors = {"fp32": floor, "int8": quantize_int8(floor), "int8-nbits": quantize_int8(floor, kernel="nbits")}
    for precision, proto in floors.items():
        paths[FLOORS[precision]] = tmp / f"floor-{precision}.onnx"
        onnx.save(proto, paths[FLOORS[precision]])
    return paths, weights, config, vocab


def floor_graph(weights: dict, L: int):
    """The weight read a step cannot avoid, and nothing else: h (B, H) times every layer's
    recurrent [H, 3H] matrix (and the deeper layers' input ones) and the head's [H, V], as
    MatMuls in one graph. Its step time is this machine's ceiling for the fp32 step, measured
    in the same run as the runtime (the issue's '80% of the ceiling'). The head's MatMul is
    named as in the export, so quantize_int8 leaves it float32 here too."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from chargen.export.graph import HEAD_MATMUL
    from chargen.runtime.contract import META_CONFIG

    mats = [weights[f"rnn.weight_hh_l{k}"].T for k in range(L)]
    mats += [weights[f"rnn.weight_ih_l{k}"].T for k in range(1, L)]
    mats.append(weights["head.weight"].T)
    H = mats[0].shape[0]
    inits = [numpy_helper.from_array(np.ascontiguousarray(m, np.float32), f"w{i}") for i, m in enumerate(mats)]
    nodes = [helper.make_node("MatMul", ["h", f"w{i}"], [f"y{i}"], name=f"mm{i}") for i in range(len(mats))]
    nodes[-1].name = HEAD_MATMUL
    outputs = [helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, ["batch", m.shape[1]]) for i, m in enumerate(mats)]
    graph = helper.make_graph(nodes, "floor", [helper.make_tensor_value_info("h", TensorProto.FLOAT, ["batch", H])],
                              outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    helper.set_model_props(model, {META_CONFIG: json.dumps({"hidden_size": H})})  # nbits' block size
    return model


# ------------------------------------------------------------------------------ the contenders
PRECISIONS = ("fp32", "int8", "int8-nbits")  # the exports, each on onnxruntime
CHARGEN = "runtime int8-chargen (chargen's int8 step in C)"  # the int8 export on chargen's own step
FLOORS = {"fp32": "floor: the weight read alone (MatMuls)", "int8": "floor int8: the quantized MatMuls alone",
          "int8-nbits": "floor int8-nbits: the MatMulNBits alone"}


def runtime_name(precision: str) -> str:
    return f"runtime {precision} (default options)"


def default_threads() -> int:
    from chargen.runtime.model import physical_cores

    return physical_cores()


def runtime_generator(path, B, threads=None, session_config=None, engine="onnxruntime"):
    from chargen.runtime import GenerationOptions, Generator, Model

    threads = threads or default_threads()  # see the module docstring
    model = Model.load(path, device="cpu", threads=threads, session_config=session_config, engine=engine)
    g = Generator(model, GenerationOptions(seed=0), batch_size=B)
    assert g.engine == engine  # engine='chargen' runs every batch size
    g.feed("ROMEO: ")
    return g


def floor_step(path, B, H):
    """The floor graph through IOBinding, bound once, with the runtime's session options."""
    import onnxruntime as ort

    from chargen.runtime.model import _session_options

    so = _session_options(ort, default_threads())
    session = ort.InferenceSession(os.fspath(path), so, providers=["CPUExecutionProvider"])
    binding = session.io_binding()
    binding.bind_cpu_input("h", np.random.default_rng(0).standard_normal((B, H)).astype(np.float32))
    for out in session.get_outputs():
        binding.bind_output(out.name)
    session.run_with_iobinding(binding)
    for out, value in zip(session.get_outputs(), binding.get_outputs()):
        binding.bind_ortvalue_output(out.name, value)  # reuse the buffers, as the runtime does
    run, inner = session._sess.run_with_iobinding, binding._iobinding
    return lambda: run(inner, None)


def ort_numpy_step(path, B, L, H, V):
    """What one writes first: session.run with a feed dict, softmax in numpy, np.random.choice."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = default_threads()
    session = ort.InferenceSession(os.fspath(path), so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    state = {"tok": np.zeros(B, np.int64), "h": np.zeros((L, B, H), np.float32)}

    def step():
        logits, h = session.run(None, {"token": state["tok"], "h": state["h"]})
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        state["tok"] = np.array([rng.choice(V, p=row) for row in p], np.int64)
        state["h"] = h

    return step


def torch_step(weights, config, B):
    """torch eager: the same weights in nn.Embedding / nn.GRU / nn.Linear, one step per call."""
    import torch
    from torch import nn

    V, E, H, L = (config[k] for k in ("vocab_size", "embedding_dim", "hidden_size", "layers"))
    emb, rnn, head = nn.Embedding(V, E), nn.GRU(E, H, num_layers=L), nn.Linear(H, V)
    with torch.no_grad():
        emb.weight.copy_(torch.from_numpy(weights["embedding.weight"]))
        head.weight.copy_(torch.from_numpy(weights["head.weight"]))
        head.bias.copy_(torch.from_numpy(weights["head.bias"]))
        for name, p in rnn.named_parameters():
            p.copy_(torch.from_numpy(weights[f"rnn.{name}"]))
    gen = torch.Generator().manual_seed(0)
    state = {"tok": torch.zeros(1, B, dtype=torch.long), "h": torch.zeros(L, B, H)}

    @torch.inference_mode()
    def step():
        x, h = rnn(emb(state["tok"]), state["h"])
        p = torch.softmax(head(x[0]), dim=-1)
        state["tok"] = torch.multinomial(p, 1, generator=gen).T
        state["h"] = h

    return step


def cold_start(path):
    from chargen.bench import measure_cold_start

    return measure_cold_start(path, "cpu")


def busy_processes(n: int, seconds: float) -> list:
    """n processes that each keep a CPU busy (pure Python loops), for at most `seconds`: they
    stop by themselves should this one die before it stops them."""
    code = f"import time\nend = time.monotonic() + {seconds:.0f}\nwhile time.monotonic() < end:\n    pass"
    return [subprocess.Popen([sys.executable, "-c", code]) for _ in range(n)]


def contention(path, batches, busy: int, seconds: float) -> list[dict]:
    """chargen's int8 step with its default threads (as `gen sample` runs it) against one thread,
    in turns, quiet and then beside `busy` processes that keep a CPU busy each (other work on the
    machine: a web server, the app that embeds the runtime). Median slices: under contention the
    best slice is the one the scheduler happened to leave alone."""
    from chargen.runtime import GenerationOptions, Generator, Model

    rows = []
    for B in batches:
        gens = {}
        for threads in (None, 1):
            model = Model.load(path, device="cpu", threads=threads, engine="chargen")
            g = Generator(model, GenerationOptions(seed=0), batch_size=B)
            g.feed("ROMEO: ")
            gens[model.int8_step.threads if threads is None else 1] = g
        for n in (0, busy):
            procs = busy_processes(n, 4 * seconds + 30)
            try:
                time.sleep(0.3 if n else 0)
                contenders = {k: Timed(g.step) for k, g in gens.items()}
                interleaved(contenders, seconds, slice_s=0.05)
            finally:
                for proc in procs:
                    proc.kill()
                    proc.wait()
            default, one = (contenders[k] for k in gens)
            row = {"batch": B, "busy_processes": n, "default_threads": next(iter(gens)),
                   "default_median_us": default.median * 1e6, "default_best_us": default.best * 1e6,
                   "one_thread_median_us": one.median * 1e6, "one_thread_best_us": one.best * 1e6}
            rows.append(row)
            where = f"beside {n} busy processes" if n else "quiet"
            print(f"chargen int8 B={B:<3} {where:<26} default threads ({row['default_threads']}): "
                  f"{B / default.median:>9,.0f} chars/s ({row['default_median_us']:7.1f} us/step median, "
                  f"best {row['default_best_us']:7.1f});  --threads 1: {B / one.median:>9,.0f} chars/s "
                  f"({row['one_thread_median_us']:7.1f}, best {row['one_thread_best_us']:7.1f});  "
                  f"default / 1: {one.median / default.median:.2f}x", flush=True)
    return rows


# ------------------------------------------------------------------------------ main
def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--embedding-dim", type=int, default=256)
    ap.add_argument("--hidden-size", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=3.0, help="time budget of each figure (they are measured in turns)")
    ap.add_argument("--batch", type=int, action="append", help="batch sizes [1, 4, 16, 64, 256]")
    ap.add_argument("--sweep", action="store_true", help="also measure intra-op threads x spinning")
    ap.add_argument("--no-torch", action="store_true", help="skip the torch eager loop")
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--contention", type=int, metavar="N",
                    help="only chargen's int8 step: default threads against --threads 1, quiet and beside N busy processes")
    args = ap.parse_args(argv)
    batches = args.batch or [1, 4, 16, 64, 256]
    results: dict = {
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "python": platform.python_version(), "load_avg_before": os.getloadavg()},
        "model": {"embedding_dim": args.embedding_dim, "hidden_size": args.hidden_size,
                  "layers": args.layers, "vocab_size": len(ALPHABET)},
        "rows": [],
    }
    import onnxruntime as ort

    from chargen.runtime import Model
    from chargen.bench import int8_peak, peak_fractions

    results["machine"]["onnxruntime"] = ort.__version__

    def row(name, B, r):
        r = {"name": name, "batch": B, **r}
        results["rows"].append(r)
        split = ""
        if "floor_fraction" in r:
            split += (f"   {r['floor_of']} step beside it {r['step_beside_us']:.1f} us: "
                      f"{r['floor_fraction']:.0%} of the floor's speed")
        if "graph_us" in r:
            split = f"   graph {r['graph_us']:8.1f}  sampler {r['sampler_us']:6.2f}  rest {r['rest_us']:6.1f} us"
        if peak and name in (runtime_name("int8"), CHARGEN):
            r.update(peak_fractions(r["chars_per_s"], B, peak))
            split += f"   product {r['product_of_peak']:4.0%} of peak, weights {r['weights_of_read_rate']:4.0%} of read rate"
        if name == CHARGEN:
            r["kernel"] = kernels[B]
            split += f"   kernel {r['kernel']}"
        print(f"{name:<40} B={B:<3} {r['chars_per_s']:>11,.0f} chars/s  {r['step_us']:9.1f} us/step "
              f"(median {r['median_step_us']:8.1f}){split}", flush=True)

    with tempfile.TemporaryDirectory(prefix="chargen-bench-") as tmp:
        paths, weights, config, vocab = build_models(Path(tmp), args.embedding_dim, args.hidden_size, args.layers)
        L, H, V = args.layers, args.hidden_size, len(vocab)
        peak = int8_peak(Model.load(paths["int8"], device="cpu", engine="chargen"), None)
        results["int8_peak"] = peak
        if peak:
            print(f"int8 peak here: chargen's {peak['kernel']} kernel's inner loop {peak['macs_per_s'] / 1e9:.1f} G "
                  f"multiply-adds/s on {peak['threads']} threads (L1 data); the int8 weights "
                  f"({peak['weight_bytes'] / 2**20:.1f} MiB) read at {peak['read_bytes_per_s'] / 1e9:.1f} GB/s", flush=True)
        kernels = {}
        if args.contention is not None:
            results["contention"] = contention(paths["int8"], args.batch or [1, 4], args.contention, args.seconds)
            batches = []
        for B in batches:
            gens = {runtime_name(p): runtime_generator(paths[p], B) for p in PRECISIONS}
            gens[CHARGEN] = runtime_generator(paths["int8"], B, engine="chargen")
            kernels[B] = gens[CHARGEN].model.int8_step.kernel_for(B)
            if args.sweep:
                for threads in (1, 2):
                    for spin in ("0", "1"):
                        for p in PRECISIONS:
                            gens[f"runtime {p} threads={threads} spin={spin}"] = runtime_generator(
                                paths[p], B, threads, {"session.intra_op.allow_spinning": spin})
            contenders = {name: Timed(g.step) for name, g in gens.items()}
            splits = {name: Split(g) for name, g in gens.items()}
            contenders.update({name + " #split": sp for name, sp in splits.items()})
            contenders["ort+numpy fp32 (session.run loop)"] = Timed(ort_numpy_step(paths["fp32"], B, L, H, V))
            if not args.no_torch:
                contenders["torch eager fp32 (nn.GRU step)"] = Timed(torch_step(weights, config, B))
            interleaved(contenders, args.seconds)
            # each floor is timed beside its step alone: in the big round the fp32 one came out
            # 1.2-1.5x slower than the step it bounds (on a 2-core EPYC with a shared 32 MB L3;
            # alone, the pair measured the other way round), so what ran before each slice mattered
            beside = {}
            for p in PRECISIONS:
                pair = {p: Timed(gens[runtime_name(p)].step), FLOORS[p]: Timed(floor_step(paths[FLOORS[p]], B, H))}
                interleaved(pair, args.seconds)
                contenders[FLOORS[p]], beside[FLOORS[p]] = pair[FLOORS[p]], (p, pair[p])
            for name, c in contenders.items():
                if name.endswith(" #split"):
                    continue
                r = {"chars_per_s": B / c.best, "step_us": c.best * 1e6, "median_step_us": c.median * 1e6}
                if name in beside:
                    p, step = beside[name]
                    r.update(floor_of=p, step_beside_us=step.best * 1e6, floor_fraction=c.best / step.best)
                if name in splits:
                    sp = splits[name]
                    whole, graph, sampler = (t * 1e6 for t in sp.best_split)
                    r.update(split_step_us=whole, graph_us=graph, sampler_us=sampler,
                             rest_us=max(0.0, whole - graph - sampler))
                row(name, B, r)
            for kind in ("best", "median"):
                t = {name: getattr(c, kind) for name, c in contenders.items()}
                fp32 = t[runtime_name("fp32")]
                ratios = {
                    "int8 / fp32": fp32 / t[runtime_name("int8")],
                    "int8-nbits / fp32": fp32 / t[runtime_name("int8-nbits")],
                    "int8-chargen / fp32": fp32 / t[CHARGEN],
                    "int8-chargen / int8": t[runtime_name("int8")] / t[CHARGEN],
                    "fp32 / ort+numpy": t["ort+numpy fp32 (session.run loop)"] / fp32,
                    **{f"{p} / floor": t[FLOORS[p]] / getattr(beside[FLOORS[p]][1], kind) for p in PRECISIONS},
                }
                results.setdefault("ratios", {}).setdefault(str(B), {})[kind] = ratios
                print(f"B={B} speed ratios ({kind} slices): " + ", ".join(
                    f"{k} {v:.2f}x" if "floor" not in k else f"{k} {v:.0%}" for k, v in ratios.items()), flush=True)
            del gens, contenders
        if batches:
            cs = results["cold_start"] = cold_start(paths["fp32"])
            print(f"cold start (fp32, fresh process): import {cs['import_s'] * 1e3:.0f} ms + load "
                  f"{cs['load_s'] * 1e3:.0f} ms + first step {cs['first_step_s'] * 1e3:.1f} ms = "
                  f"{cs['total_s'] * 1e3:.0f} ms; whole process {cs['process_wall_s'] * 1e3:.0f} ms; "
                  f"peak RSS {cs['max_rss_bytes'] / 2**20:.0f} MiB; torch imported: {cs['torch_imported']}")
    results["machine"]["load_avg_after"] = os.getloadavg()
    print(f"load average before/after: {results['machine']['load_avg_before'][0]:.2f} / "
          f"{results['machine']['load_avg_after'][0]:.2f} (on {os.cpu_count()} CPUs; > 0.5 means shared, noisy figures)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
