"""gen serve for a long while under clients that misbehave: does it stay whole?

    python benchmarks/soak_serve.py                          # 30 minutes, 64 clients, tutorial-size int8 model
    python benchmarks/soak_serve.py --seconds 20 --clients 16 --model tiny.onnx --json out.json   # CI's short run

C clients on 127.0.0.1 send requests one after another for --seconds: streaming and whole
completions of 20 to 400 characters with their own seeds; a third of the streams are left
mid-stream at a random point (the client hangs up); one request in 20 is malformed (bad JSON, a
character the model does not know, a bad number, a wrong type) and must get a 4xx with a message.
The server's resident memory is sampled every second. Afterwards the checks:

    no 5xx and no traceback in the server's log; every malformed request a 4xx
    active slots and queue back to 0 within a few seconds of the last client
    resident memory flat: the last quarter's mean within --rss-growth MiB of the second quarter's
    a seeded request gives the same text before and after the load
    SIGTERM: the server drains and exits 0

Prints the figures and exits 1 if a check fails (--json writes them).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serve import spawn, tutorial_models  # noqa: E402  (benchmarks/bench_serve.py)

MALFORMED = [  # (body bytes, what it tests)
    (b'{"prompt": "ROMEO: ", "max_tokens": ', "truncated JSON"),
    (json.dumps({"prompt": "snow\u2603man", "max_tokens": 5}).encode(), "a character the model does not know"),
    (json.dumps({"prompt": "A", "max_tokens": -3}).encode(), "a negative max_tokens"),
    (json.dumps({"prompt": "A", "temperature": "hot"}).encode(), "a string for a number"),
    (json.dumps({"prompt": 5, "max_tokens": 5}).encode(), "a number for the prompt"),
    (json.dumps({"prompt": "A", "top_p": 7}).encode(), "top_p out of range"),
    (b"[1, 2, 3]", "a JSON list"),
]
SEEDED = {"prompt": "ROMEO: ", "max_tokens": 300, "seed": 4242, "temperature": 0.9, "top_k": 20}


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def metric(text: str, name: str) -> float:
    """A gauge's value, summed over its label sets (one per model)."""
    return sum(float(m.group(1)) for m in re.finditer(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


class Server:
    """`gen serve` in a subprocess on 127.0.0.1 and a free port; its log in a temporary file."""

    def __init__(self, model: Path, max_batch: int, extra: list[str]):
        cmd = [sys.executable, "-m", "chargen.cli", "serve", "--model", str(model), "--host", "127.0.0.1",
               "--port", "0", "--device", "cpu", "--max-batch", str(max_batch), "--max-queue", "256", *extra]
        self.log = tempfile.NamedTemporaryFile(prefix="soak-serve-", suffix=".log", delete=False)
        self.proc, self.url = spawn(cmd, self.log)

    def log_text(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return -9


async def soak(url: str, pid: int, seconds: float, clients: int, seed: int) -> dict:
    import httpx

    stats = {"requests": 0, "statuses": {}, "left_mid_stream": 0, "malformed": 0, "malformed_not_4xx": [],
             "characters": 0, "errors": []}
    rss: list[tuple[float, float]] = []
    deadline = time.monotonic() + seconds
    # idle connections expire on the client's side first (gen serve keeps them 5 s): with equal
    # times a request can go out on a connection the server is closing (a ReadError that says
    # nothing about the server)
    limits = httpx.Limits(max_connections=clients + 8, max_keepalive_connections=clients + 8, keepalive_expiry=2.0)

    def count(status: int) -> None:
        stats["requests"] += 1
        stats["statuses"][str(status)] = stats["statuses"].get(str(status), 0) + 1

    async with httpx.AsyncClient(timeout=httpx.Timeout(60, connect=10), limits=limits) as http:
        async def client(k: int) -> None:
            r = random.Random(seed * 1000 + k)
            while time.monotonic() < deadline:
                kind = "malformed"
                try:
                    if r.random() < 0.05:
                        body, what = MALFORMED[r.randrange(len(MALFORMED))]
                        resp = await http.post(url + "/v1/completions", content=body,
                                               headers={"content-type": "application/json"})
                        count(resp.status_code)
                        stats["malformed"] += 1
                        if not (400 <= resp.status_code < 500 and resp.json().get("error", {}).get("message")):
                            stats["malformed_not_4xx"].append(f"{what}: {resp.status_code}")
                        continue
                    body = {"prompt": "ROMEO: " if r.random() < 0.5 else "JULIET:\nO ", "seed": r.randrange(2**32),
                            "max_tokens": r.randint(20, 400), "temperature": 0.8}
                    kind = "whole"
                    if r.random() < 0.25:
                        resp = await http.post(url + "/v1/completions", json=body)
                        count(resp.status_code)
                        if resp.status_code == 200:
                            stats["characters"] += len(resp.json()["choices"][0]["text"])
                        continue
                    leave = r.random() < 1 / 3
                    kind = "stream, leaving" if leave else "stream"
                    stop_after = r.randint(1, 6)
                    async with http.stream("POST", url + "/v1/completions", json={**body, "stream": True}) as resp:
                        count(resp.status_code)
                        chunks = 0
                        async for line in resp.aiter_lines():
                            if line.startswith("data: {"):
                                chunks += 1
                                stats["characters"] += sum(len(c["text"]) for c in json.loads(line[6:])["choices"])
                            if leave and chunks >= stop_after:
                                stats["left_mid_stream"] += 1
                                break  # leaving the block closes the connection mid-stream
                except (httpx.HTTPError, ValueError) as e:
                    stats["errors"].append(f"{kind}: {type(e).__name__}: {e!r}"[:200])

        async def sampler() -> None:
            t0 = time.monotonic()
            while time.monotonic() < deadline:
                rss.append((time.monotonic() - t0, rss_mib(pid)))
                await asyncio.sleep(1.0)

        t0 = time.perf_counter()
        await asyncio.gather(sampler(), *(client(k) for k in range(clients)))
        stats["wall_s"] = time.perf_counter() - t0
    stats["rss"] = rss
    return stats


def settle(url: str, timeout: float = 15.0) -> tuple[float, float]:
    """(active slots, queue depth) once both are 0, or as they are at the timeout."""
    import httpx

    end = time.monotonic() + timeout
    while True:
        text = httpx.get(url + "/metrics", timeout=10).text
        active, queued = metric(text, "chargen_active_slots"), metric(text, "chargen_queue_depth")
        if (active == 0 and queued == 0) or time.monotonic() > end:
            return active, queued
        time.sleep(0.1)


def seeded_text(url: str) -> str:
    import httpx

    return httpx.post(url + "/v1/completions", json=SEEDED, timeout=60).json()["choices"][0]["text"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, help="a model file (default: a tutorial-size random int8 model)")
    ap.add_argument("--seconds", type=float, default=1800)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rss-growth", type=float, default=20.0, help="MiB the resident memory may grow (default 20)")
    ap.add_argument("--server-arg", action="append", default=[], help="one more argument for gen serve")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    from chargen.runtime.calibrate import cpu_name

    model = args.model
    if model is None:
        model = tutorial_models(Path(tempfile.mkdtemp(prefix="soak-")))[1]
    server = Server(model, args.clients, args.server_arg)
    try:
        before = seeded_text(server.url)
        stats = asyncio.run(soak(server.url, server.proc.pid, args.seconds, args.clients, args.seed))
        active, queued = settle(server.url)
        after = seeded_text(server.url)
    finally:
        code = server.stop()
    rss = [m for _, m in stats.pop("rss")]
    q = max(1, len(rss) // 4)
    second, last = rss[q:2 * q] or rss, rss[-q:] or rss
    growth = sum(last) / len(last) - sum(second) / len(second)
    log = server.log_text()
    fivexx = sum(n for s, n in stats["statuses"].items() if s.startswith("5"))
    checks = {
        "no 5xx": fivexx == 0,
        "no traceback in the server's log": "Traceback" not in log,
        "every malformed request a 4xx with a message": not stats["malformed_not_4xx"],
        "no client errors": not stats["errors"],
        "active slots and queue back to 0": active == 0 and queued == 0,
        f"resident memory flat (grew {growth:+.1f} MiB, limit {args.rss_growth:g})": growth <= args.rss_growth,
        "the seeded request's text unchanged": before == after and len(before) == SEEDED["max_tokens"],
        "SIGTERM: drained, exit 0": code == 0,
    }
    figures = {"cpu": cpu_name(), "model": str(model), "seconds": args.seconds, "clients": args.clients, **stats,
               "rss_mib_first": rss[0] if rss else None, "rss_mib_max": max(rss, default=None),
               "rss_mib_last": rss[-1] if rss else None, "rss_growth_mib": growth, "active_after": active,
               "queue_after": queued, "checks": checks}
    print(f"CPU: {cpu_name()}; {args.clients} clients for {args.seconds:g} s against {model.name}")
    print(f"requests {stats['requests']:,} ({stats['requests'] / stats['wall_s']:.0f}/s), statuses {stats['statuses']}, "
          f"left mid-stream {stats['left_mid_stream']:,}, malformed {stats['malformed']:,}, "
          f"characters {stats['characters']:,} ({stats['characters'] / stats['wall_s']:,.0f}/s)")
    print(f"resident memory MiB: first {figures['rss_mib_first']:.1f}, max {figures['rss_mib_max']:.1f}, "
          f"last {figures['rss_mib_last']:.1f}; last quarter against the second {growth:+.1f}")
    for name, ok in checks.items():
        print(f"  {'ok  ' if ok else 'FAIL'} {name}")
    for e in (stats["errors"] + stats["malformed_not_4xx"])[:5]:
        print(f"       {e}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    if not all(checks.values()):
        print(f"server log: {server.log.name}")
        sys.exit(1)


if __name__ == "__main__":
    main()
