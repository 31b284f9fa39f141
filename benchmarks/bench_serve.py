"""gen serve under load against the in-process batch of the same model, with where the CPU goes.

    python benchmarks/bench_serve.py                          # random tutorial-size models (E=256, H=1024, V=65)
    python benchmarks/bench_serve.py --fp32 m.onnx --int8 m-int8.onnx --seconds 30
    python benchmarks/bench_serve.py --clients 1 8 64 --engine chargen

Per model (fp32, int8), a server with its default options (engine auto, --max-batch 64), clients
in this process on 127.0.0.1 (on a small machine they take a share of the same CPU):

    long       C clients (--clients), one streaming request each: a prompt of 20 to 100
               characters and --chars characters (default 1,000)
    chain      64 clients, each sending 400-character requests one after another for --seconds
               (how real clients and load tests behave): chars/s and requests/s
    own        64 clients sending 1-character requests one after another for --own-seconds: a
               request's own cost (event loop and stepping side CPU a request, beside no text)
    burst      64 requests with 60-character prompts sent at once, 50 characters each: time to
               first character (request sent -> first chunk with text), p50 and p99
    in-process chars/s of a Batch of 64 in this process with the same requests, no HTTP, each
               engine pinned (the server's ceiling: the faster one)
    chain in-process: the chain phase without HTTP (a finished slot replaced at once by the next
               request), with the faster engine: what the chain costs the step itself (more
               prompt characters a generated one than the long phase)

The clients are benchmarks/loadgen.py's (asyncio, one keep-alive connection each: a tenth of a
core here); --client httpx measures with httpx's AsyncClient instead (half a core at 64 streams
on a 2-core machine, taken from the server under test).

Columns: chars/s; ttfc p50/p99; gap p50/p99 (the time between a client's chunks divided by the
characters in the chunk: the pace a reader sees); srv/inproc (the server's share of the
in-process batch of the fastest engine: the issue's target >= 0.80); and the CPU, in cores,
of the server's event loop (its main thread: HTTP, SSE), of its stepping side (every other
thread of the server: the stepping thread and the step's threads), of the clients, and what
stayed idle. A request's own cost in chain mode is the event loop's CPU a request. Bounded:
every phase stops at --phase-seconds; each figure is the best of --repeat runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from loadgen import Connection, host_port

ALPHABET = "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
WORDS = "the king and queen of rome said to his lord that all is well but who will come no".split()


def prompts(n: int) -> list[str]:
    out = []
    for i in range(n):
        length = 20 + (i * 37) % 81
        words, k = [], i
        while len(" ".join(words)) < length:
            words.append(WORDS[k % len(WORDS)])
            k = k * 7 + 3
        out.append((" ".join(words).capitalize() + ": ")[:length])
    return out


def bodies(n: int, chars: int) -> list[dict]:
    return [{"prompt": p, "max_tokens": chars, "seed": 1000 + i, "temperature": 0.8}
            for i, p in enumerate(prompts(n))]


def pct(xs, q):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


# ---------------------------------------------------------------------- models
def tutorial_models(folder: Path) -> tuple[Path, Path]:
    import onnx

    from chargen.export.graph_variants import random_weights

    from chargen.export.graph import build_step_graph
    from chargen.export.onnx_export import quantize_int8
    from chargen.runtime import Vocab

    vocab = Vocab.from_text(ALPHABET)
    E, H, L = 256, 1024, 1
    config = dict(vocab_size=len(vocab), embedding_dim=E, hidden_size=H, layers=L, dropout=0.0)
    weights = random_weights(len(vocab), E, H, L, seed=0, head_scale=8)
    fp32, int8 = folder / "tutorial.onnx", folder / "tutorial-int8.onnx"
    onnx.save(build_step_graph(weights, config, vocab, corpus="random", precision="fp32"), fp32)
    onnx.save(quantize_int8(build_step_graph(weights, config, vocab, corpus="random", precision="int8")), int8)
    return fp32, int8


# ---------------------------------------------------------------------- the server
def spawn(cmd: list[str], log) -> tuple[subprocess.Popen, str]:
    """Start `gen serve ... --port 0` (its stderr to the file log) and read its URL from the
    line it prints once it listens; SystemExit with its log if it does not start in 2 minutes."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log)
    deadline = time.monotonic() + 120
    line = b""
    while time.monotonic() < deadline and not line.endswith(b"\n"):
        r, _, _ = select.select([proc.stdout], [], [], 0.5)
        if r:
            b = os.read(proc.stdout.fileno(), 1)
            if not b:
                break
            line += b
        elif proc.poll() is not None:
            break
    if not line.endswith(b"\n"):
        log.seek(0)
        raise SystemExit(f"gen serve did not start: {log.read().decode(errors='replace')}")
    return proc, line.decode().split()[2]


class Server:
    def __init__(self, model: Path, args):
        cmd = [sys.executable, "-m", "chargen.cli", "serve", "--model", str(model), "--host", "127.0.0.1",
               "--port", "0", "--device", "cpu", "--max-batch", str(max(args.clients)), "--engine", args.engine,
               "--max-queue", "1024"]
        if args.threads is not None:
            cmd += ["--threads", str(args.threads)]
        self.log = tempfile.TemporaryFile()
        self.proc, self.url = spawn(cmd, self.log)
        import httpx

        self.card = httpx.get(self.url + "/v1/models", timeout=30).json()["data"][0]

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class _Httpx:
    """httpx's AsyncClient behind loadgen.Connection's stream() (--client httpx)."""

    def __init__(self, client, url: str):
        self.client, self.url = client, url

    async def stream(self, path: str, body: dict):
        async with self.client.stream("POST", self.url + path, json={**body, "stream": True}) as r:
            r.raise_for_status()
            async for line in r.aiter_lines():
                if line.startswith("data: {"):
                    text = "".join(c["text"] for c in json.loads(line[6:])["choices"])
                    if text:
                        yield time.perf_counter(), text


@contextlib.asynccontextmanager
async def connections(kind: str, url: str, n: int):
    """n clients' connections: loadgen's (one keep-alive connection each) or httpx's pool."""
    if kind == "httpx":
        import httpx

        limits = httpx.Limits(max_connections=n + 4, max_keepalive_connections=n + 4)
        async with httpx.AsyncClient(timeout=httpx.Timeout(120, connect=10), limits=limits) as client:
            yield [_Httpx(client, url)] * n
        return
    host, port = host_port(url)
    conns = [await Connection.open(host, port) for _ in range(n)]
    try:
        yield conns
    finally:
        for c in conns:
            c.close()


async def _clients(url: str, reqs: list[dict], deadline: float, kind: str = "lean") -> dict:
    ttfc, gaps, chars = [], [], 0
    async with connections(kind, url, len(reqs)) as conns:
        async def one(conn, body):
            nonlocal chars
            t0 = time.perf_counter()
            last = None
            async for now, text in conn.stream("/v1/completions", body):
                if last is None:
                    ttfc.append(now - t0)
                else:
                    gaps.append((now - last) / len(text))
                last = now
                chars += len(text)

        t0 = time.perf_counter()
        tasks = [asyncio.ensure_future(one(c, b)) for c, b in zip(conns, reqs)]
        done, pending = await asyncio.wait(tasks, timeout=max(1.0, deadline - time.monotonic()))
        for t in pending:
            t.cancel()
        for t in done:
            t.result()
        wall = time.perf_counter() - t0
    return {"chars_s": chars / wall, "ttfc": ttfc, "gaps": gaps, "finished": len(done), "clients": len(reqs)}


def sequential(url: str, reqs: list[dict], seconds: float) -> dict:
    import httpx

    chars, n = 0, 0
    t0 = time.perf_counter()
    with httpx.Client(timeout=120) as client:
        for body in reqs:
            r = client.post(url + "/v1/completions", json=body)
            r.raise_for_status()
            chars += r.json()["usage"]["completion_tokens"]
            n += 1
            if time.perf_counter() - t0 > seconds:
                break
    return {"chars_s": chars / (time.perf_counter() - t0), "finished": n}


IN_PROCESS_CORES: dict[str, float] = {}  # engine -> cores the in-process batch used in its best run


def in_process(model, reqs: list[dict], capacity: int, seconds: float, repeat: int = 2,
               chain: bool = False) -> float:
    """chars/s of a Batch (capacity slots, as the server's) with these requests, stepped to the
    end, or with chain for `seconds`, every finished slot replaced at once by the next request
    (the chain phase without HTTP). The CPU it used, in cores, goes in IN_PROCESS_CORES under
    its engine (of the long runs)."""
    from chargen.runtime import GenerationOptions
    from chargen.runtime.batch import Batch

    def admit(batch, b: dict, seed: int) -> None:
        batch.admit(b["prompt"], GenerationOptions(temperature=b["temperature"], seed=seed, max_length=b["max_tokens"]))

    best = 0.0
    for _ in range(repeat):
        batch = Batch(model, max_batch=capacity)
        for b in reqs:
            admit(batch, b, b["seed"])
        sent = len(reqs)
        chars = 0
        t0, c0 = time.perf_counter(), sum(os.times()[:2])
        while (chain or batch.active) and time.perf_counter() - t0 < seconds:
            for ev in batch.step():
                chars += len(ev.text)
                if chain and ev.finish is not None:
                    admit(batch, reqs[sent % len(reqs)], sent)
                    sent += 1
        wall = time.perf_counter() - t0
        if chars / wall > best:
            best = chars / wall
            if not chain:
                IN_PROCESS_CORES[batch.engine] = (sum(os.times()[:2]) - c0) / wall
    return best


# ---------------------------------------------------------------------- CPU accounting
TICK = os.sysconf("SC_CLK_TCK")


def server_cpu(pid: int) -> tuple[float, float]:
    """(the main thread's CPU seconds: the event loop, every other thread's: the stepping side)."""
    main = other = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # a thread that just ended
        cpu = (int(fields[11]) + int(fields[12])) / TICK  # utime, stime
        if int(task.name) == pid:
            main += cpu
        else:
            other += cpu
    return main, other


class CpuMeter:
    """The CPU of the server's two sides and of this process over a phase, in cores."""

    def __init__(self, pid: int):
        self.pid = pid
        self.t0, self.s0, self.c0 = time.perf_counter(), server_cpu(pid), sum(os.times()[:2])

    def stop(self) -> dict:
        wall = time.perf_counter() - self.t0
        (m1, o1), c1 = server_cpu(self.pid), sum(os.times()[:2])
        loop, step, clients = (m1 - self.s0[0]) / wall, (o1 - self.s0[1]) / wall, (c1 - self.c0) / wall
        cores = os.cpu_count() or 1
        return {"loop": loop, "step": step, "clients": clients, "idle": max(0.0, cores - loop - step - clients),
                "loop_s": m1 - self.s0[0], "step_s": o1 - self.s0[1]}


def cpu_words(cpu: dict) -> str:
    return (f"event loop {cpu['loop']:.2f}, stepping side {cpu['step']:.2f}, clients {cpu['clients']:.2f}, "
            f"idle {cpu['idle']:.2f} cores")


# ---------------------------------------------------------------------- the other phases
async def _chain(url: str, clients: int, chars: int, seconds: float, kind: str = "lean") -> dict:
    """clients sending `chars`-character streaming requests one after another for `seconds`."""
    total, n = 0, 0
    texts = prompts(clients)
    deadline = time.monotonic() + seconds
    async with connections(kind, url, clients) as conns:
        async def one(k: int):
            nonlocal total, n
            i = 0
            while time.monotonic() < deadline:
                body = {"prompt": texts[k], "max_tokens": chars, "seed": k * 100_000 + i, "temperature": 0.8}
                async for _, text in conns[k].stream("/v1/completions", body):
                    total += len(text)
                n += 1
                i += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(one(k) for k in range(clients)))
        wall = time.perf_counter() - t0
    return {"chars_s": total / wall, "requests_s": n / wall, "requests": n}


def burst_bodies(n: int, prompt_chars: int = 60, chars: int = 50) -> list[dict]:
    base = " ".join(WORDS) * 4
    return [{"prompt": (base[i % 40:] + base)[:prompt_chars], "max_tokens": chars, "seed": 7000 + i,
             "temperature": 0.8} for i in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fp32", type=Path, help="fp32 model (default: a random tutorial-size one)")
    ap.add_argument("--int8", type=Path, help="int8 model (default: a random tutorial-size one)")
    ap.add_argument("--clients", type=int, nargs="+", default=[64], help="client counts of the long phase")
    ap.add_argument("--chars", type=int, default=1000, help="characters each long request generates")
    ap.add_argument("--seconds", type=float, default=30.0, help="length of the chain phase")
    ap.add_argument("--own-seconds", type=float, default=5.0, help="length of the 1-character requests phase")
    ap.add_argument("--threads", type=int, default=None, help="the step's threads (server and in-process)")
    ap.add_argument("--engine", default="auto", help="the server's engine: auto, onnxruntime or chargen")
    ap.add_argument("--phase-seconds", type=float, default=60.0, help="bound of each long phase")
    ap.add_argument("--repeat", type=int, default=2, help="runs of each phase; the best one counts")
    ap.add_argument("--client", choices=["lean", "httpx"], default="lean",
                    help="the clients: loadgen's lean asyncio client (default) or httpx's AsyncClient")
    ap.add_argument("--skip-sequential", action="store_true", help="skip the one-at-a-time phase")
    args = ap.parse_args()

    from chargen.runtime import Model
    from chargen.runtime.calibrate import cpu_name
    from chargen.serve.server import SESSION_CONFIG

    tmp = tempfile.TemporaryDirectory()
    fp32, int8 = args.fp32, args.int8
    if fp32 is None or int8 is None:
        print("building random tutorial-size models (E=256, H=1024, V=65) ...", file=sys.stderr)
        built = tutorial_models(Path(tmp.name))
        fp32, int8 = fp32 or built[0], int8 or built[1]
    args.clients = sorted(set(args.clients) | {64})
    capacity = max(args.clients)

    rows, report, cores = [], [], {}
    for name, path in (("fp32", fp32), ("int8", int8)):
        # the ceiling: a Batch of 64 in this process, each engine pinned (the server's session options)
        engines = ["onnxruntime"] + (["chargen"] if name == "int8" else [])
        reqs = bodies(capacity, args.chars)
        inproc = {e: in_process(Model.load(path, device="cpu", threads=args.threads, engine=e,
                                           session_config=SESSION_CONFIG), reqs, capacity, args.phase_seconds,
                                args.repeat) for e in engines}
        ceiling = max(inproc.values())
        fastest = max(inproc, key=inproc.get)
        cores[name] = IN_PROCESS_CORES[fastest]
        chain_ceiling = in_process(Model.load(path, device="cpu", threads=args.threads, engine=fastest,
                                              session_config=SESSION_CONFIG), bodies(capacity, 400), capacity,
                                   min(args.seconds, args.phase_seconds), args.repeat, chain=True)
        server = Server(path, args)
        try:
            engine = server.card["engine"]
            asyncio.run(_clients(server.url, bodies(4, 20), time.monotonic() + 30, args.client))  # warm up the whole path
            for c in args.clients:
                best = None
                for _ in range(args.repeat):
                    meter = CpuMeter(server.proc.pid)
                    got = asyncio.run(_clients(server.url, bodies(c, args.chars), time.monotonic() + args.phase_seconds,
                                                    args.client))
                    got["cpu"] = meter.stop()
                    best = got if best is None or got["chars_s"] > best["chars_s"] else best
                rows.append((name, engine, c, best, ceiling))
                print(f"  {name} long, {c:3d} clients: {best['chars_s']:9,.0f} chars/s; {cpu_words(best['cpu'])}",
                      file=sys.stderr)
            chain = None
            for _ in range(args.repeat):
                meter = CpuMeter(server.proc.pid)
                got = asyncio.run(_chain(server.url, capacity, 400, args.seconds, args.client))
                got["cpu"] = meter.stop()
                chain = got if chain is None or got["chars_s"] > chain["chars_s"] else chain
            print(f"  {name} chain: {chain['chars_s']:9,.0f} chars/s, {chain['requests_s']:.0f} requests/s; "
                  f"{cpu_words(chain['cpu'])}", file=sys.stderr)
            meter = CpuMeter(server.proc.pid)
            own = asyncio.run(_chain(server.url, capacity, 1, args.own_seconds, args.client))
            own["cpu"] = meter.stop()
            bursts = [asyncio.run(_clients(server.url, burst_bodies(capacity), time.monotonic() + args.phase_seconds,
                                            args.client))
                      for _ in range(max(3, args.repeat))]
            burst = min(bursts, key=lambda r: pct(r["ttfc"], 50))
            seq = None
            if not args.skip_sequential:
                seq = max((sequential(server.url, bodies(capacity, 200), args.phase_seconds)
                           for _ in range(args.repeat)), key=lambda r: r["chars_s"])
            report.append((name, engine, inproc, fastest, ceiling, chain, chain_ceiling, own, burst, seq))
        finally:
            server.stop()

    print()
    print(f"gen serve on {cpu_name()}, {os.cpu_count()} CPUs; default options (engine {args.engine}, "
          f"--max-batch {capacity}); threads {args.threads or 'default'}; best of {args.repeat} runs; {args.client} clients")
    print(f"long: one request of {args.chars} characters per client, prompts of 20-100 characters")
    print(f"{'model':6} {'engine':11} {'clients':>7} {'chars/s':>9} {'ttfc p50':>9} {'ttfc p99':>9} "
          f"{'gap p50':>8} {'gap p99':>8} {'in-proc':>9} {'srv/inproc':>10}  CPU (cores)")
    for name, engine, c, s, ceiling in rows:
        done = "" if s["finished"] == s["clients"] else f"  ({s['finished']}/{s['clients']} finished)"
        print(f"{name:6} {engine:11} {c:7d} {s['chars_s']:9,.0f} {pct(s['ttfc'], 50) * 1e3:7.1f}ms "
              f"{pct(s['ttfc'], 99) * 1e3:7.1f}ms {pct(s['gaps'], 50) * 1e3:6.2f}ms {pct(s['gaps'], 99) * 1e3:6.2f}ms "
              f"{ceiling:9,.0f} {s['chars_s'] / ceiling:10.2f}  {cpu_words(s['cpu'])}{done}")
    for name, engine, inproc, fastest, ceiling, chain, chain_ceiling, own, burst, seq in report:
        per_request = chain["cpu"]["loop_s"] / max(1, chain["requests"]) * 1e3
        print(f"{name}: in-process batch of {capacity}: " + ", ".join(f"{e} {v:,.0f}" for e, v in inproc.items())
              + f" chars/s; the faster used {cores[name]:.2f} cores")
        print(f"{name}: chain of 400-character requests: {chain['chars_s']:,.0f} chars/s "
              f"({chain['chars_s'] / ceiling:.2f} of in-process), {chain['requests_s']:.0f} requests/s, "
              f"{per_request:.2f} ms of event loop CPU a request; {cpu_words(chain['cpu'])}")
        print(f"{name}: the same chain in-process (no HTTP, {fastest}): {chain_ceiling:,.0f} chars/s; "
              f"the server {chain['chars_s'] / chain_ceiling:.2f} of that")
        print(f"{name}: 1-character requests: {own['requests_s']:.0f} requests/s, a request's own cost "
              f"{own['cpu']['loop_s'] / own['requests'] * 1e3:.2f} ms of event loop CPU and "
              f"{own['cpu']['step_s'] / own['requests'] * 1e3:.2f} ms of stepping side CPU; {cpu_words(own['cpu'])}")
        print(f"{name}: burst of {capacity} requests with 60-character prompts: time to first character "
              f"p50 {pct(burst['ttfc'], 50) * 1e3:.0f} ms, p99 {pct(burst['ttfc'], 99) * 1e3:.0f} ms")
        if seq:
            print(f"{name}: {capacity} requests one at a time: {seq['chars_s']:,.0f} chars/s ({seq['finished']} served)")
    tmp.cleanup()


if __name__ == "__main__":
    main()
