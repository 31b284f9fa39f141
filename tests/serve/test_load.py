"""gen serve under load and through its life: 64 concurrent streaming clients, each seeded text
equal to the same request served alone (fp32; int8 on chargen's int8 step); clients that go away
free their slots; SIGTERM drains; `gen sample` and `import chargen.runtime` load no web stack.
Only 127.0.0.1; every client call has a timeout."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from servekit import ALPHABET, TIMEOUT, ServerProcess, collect, complete, sse_events

CLIENTS = 64
WORDS = "the king and queen of rome said to his lord that all is well but who will come no".split()


def prompts(n: int) -> list[str]:
    """n prompts of 20 to 100 characters."""
    out = []
    for i in range(n):
        words, k = [], i
        while len(" ".join(words)) < 20 + (i * 37) % 81:
            words.append(WORDS[k % len(WORDS)])
            k = k * 7 + 3
        out.append((" ".join(words).capitalize() + ": ")[: 20 + (i * 37) % 81])
    assert all(20 <= len(p) <= 100 and set(p) <= set(ALPHABET) for p in out)
    return out


async def _stream_all(url: str, bodies: list[dict]) -> list[dict]:
    limits = httpx.Limits(max_connections=len(bodies) + 4, max_keepalive_connections=len(bodies) + 4)
    async with httpx.AsyncClient(timeout=TIMEOUT, limits=limits) as client:
        async def one(body):
            async with client.stream("POST", url + "/v1/completions", json={**body, "stream": True}) as r:
                assert r.status_code == 200
                return collect(sse_events([line async for line in r.aiter_lines()]))

        return await asyncio.wait_for(asyncio.gather(*(one(b) for b in bodies)), 120)


def steps_and_chars(server) -> tuple[float, float]:
    return server.metric("chargen_step_seconds_count"), server.metric("chargen_generated_characters_total")


@pytest.mark.parametrize("which", ["fp32", "int8"])
def test_64_concurrent_streams_each_equal_to_its_request_alone(which, request):
    server = request.getfixturevalue("server" if which == "fp32" else "int8_server")
    bodies = [{"prompt": p, "max_tokens": 60 + 3 * i, "seed": 1000 + i, "temperature": 0.9,
               "top_k": 0 if i % 3 else 30} for i, p in enumerate(prompts(CLIENTS))]
    alone = [complete(server.url, b)["choices"][0]["text"] for b in bodies]  # one at a time
    steps0, chars0 = steps_and_chars(server)
    results = asyncio.run(_stream_all(server.url, bodies))
    steps1, chars1 = steps_and_chars(server)
    for i, (r, want) in enumerate(zip(results, alone)):
        assert r["finish"] == {0: "length"}, i
        assert r["texts"][0] == want, f"client {i}: its text differs from the same request served alone"
    # they were batched: many characters per step
    assert chars1 - chars0 == sum(b["max_tokens"] for b in bodies)
    ratio = (chars1 - chars0) / (steps1 - steps0)
    print(f"{which}: {ratio:.1f} characters per step")
    assert ratio >= 4  # 20-27 here: the clients overlap
    assert server.metric("chargen_active_slots") == 0


def test_a_client_that_goes_away_frees_its_slot(server):
    body = {"prompt": "ROMEO: ", "max_tokens": 900_000}
    before = httpx.get(server.url + "/metrics", timeout=TIMEOUT).text.count("\n")
    # streaming: read a chunk, then hang up
    with httpx.Client(timeout=TIMEOUT) as c:
        with c.stream("POST", server.url + "/v1/completions", json={**body, "stream": True}) as r:
            lines = r.iter_lines()  # kept open: leaving a loop over it would close the response
            while not next(lines).startswith("data: "):
                pass
            assert server.metric("chargen_active_slots") == 1
    assert server.wait_metric("chargen_active_slots", 0, timeout=2) == 0
    # not streaming: hang up while it runs
    with socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1])), timeout=10) as sock:
        data = json.dumps(body).encode()
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                     b"content-length: %d\r\n\r\n%s" % (len(data), data))
        assert server.wait_metric("chargen_active_slots", 1, timeout=5) == 1
    assert server.wait_metric("chargen_active_slots", 0, timeout=2) == 0
    assert server.metric("chargen_requests_total", model="tiny", status="499") >= 1
    assert before
    # and the server serves on
    assert complete(server.url, {"prompt": "A", "max_tokens": 5})["choices"][0]["finish_reason"] == "length"


def test_sigterm_drains_then_exits_0(tmp_path_factory, model_path):
    s = ServerProcess(model_path, "--grace", "6", "--max-chars", "10000000",
                      log=tmp_path_factory.mktemp("drain") / "server.log")
    try:
        t = time.perf_counter()
        complete(s.url, {"prompt": "A", "max_tokens": 20_000})
        rate = 20_000 / (time.perf_counter() - t)  # characters per second, alone
        n = int(min(max(rate * 1.0, 2_000), 5_000_000))  # about a second's work
        c = httpx.Client(timeout=TIMEOUT)
        finishing = c.send(c.build_request("POST", s.url + "/v1/completions",
                                           json={"prompt": "A", "max_tokens": n, "stream": True}), stream=True)
        endless = c.send(c.build_request("POST", s.url + "/v1/completions",
                                         json={"prompt": "B", "max_tokens": 9_000_000, "stream": True}), stream=True)
        assert s.wait_metric("chargen_active_slots", 2) == 2
        s.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 2
        while httpx.get(s.url + "/health", timeout=TIMEOUT).status_code != 503 and time.monotonic() < deadline:
            time.sleep(0.01)
        health = httpx.get(s.url + "/health", timeout=TIMEOUT)
        assert health.status_code == 503 and health.json()["status"] == "draining"
        r = httpx.post(s.url + "/v1/completions", json={"prompt": "A", "max_tokens": 5}, timeout=TIMEOUT)
        assert r.status_code == 503 and r.json()["error"]["code"] == "unavailable"
        done = collect(sse_events(finishing.iter_lines()))  # the running request finishes
        assert done["finish"] == {0: "length"} and len(done["texts"][0]) == n
        cut = sse_events(endless.iter_lines())  # the endless one is ended after --grace
        assert cut[-1] != "[DONE]" and cut[-1]["error"]["code"] == "unavailable"
        c.close()
        assert s.proc.wait(15) == 0
        assert "Traceback" not in s.log()
    finally:
        s.stop()


def test_runtime_and_gen_sample_load_no_web_stack_nor_torch(model_path):
    code = f"""
import sys
import chargen.runtime
from chargen.runtime import Model, GenerationOptions
from chargen.runtime.batch import Batch
sys.argv = ["gen", "sample", "--model", {str(model_path)!r}, "--length", "5", "--device", "cpu", "--seed", "1"]
from chargen.cli import main
try:
    main()
except SystemExit as e:
    assert not e.code, e.code
banned = ("fastapi", "starlette", "uvicorn", "prometheus_client", "torch", "chargen.serve", "httpx", "openai")
print("LOADED", sorted(m for m in banned if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "LOADED []" in out.stdout, out.stdout
    # and the server itself never imports torch
    code = "import sys; import chargen.serve.server, chargen.serve.app; print('TORCH', 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "TORCH False" in out.stdout, out.stdout + out.stderr


def test_cli_errors(model_path, tmp_path):
    def gen(*args):
        return subprocess.run([sys.executable, "-m", "chargen.cli", "serve", *args], capture_output=True, text=True,
                              timeout=60)

    r = gen("--model", str(tmp_path / "missing.onnx"), "--port", "0")
    assert r.returncode == 1 and r.stderr.startswith("error: ") and "Traceback" not in r.stderr
    r = gen("--model", str(model_path), "--max-batch", "0")
    assert r.returncode == 1 and "--max-batch must be >= 1" in r.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        r = gen("--model", str(model_path), "--port", str(taken.getsockname()[1]))
    assert r.returncode == 1 and "cannot listen on 127.0.0.1:" in r.stderr and "Traceback" not in r.stderr


def test_without_the_serve_extra_gen_serve_says_what_to_install(model_path):
    code = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("fastapi", "uvicorn"):
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, Block())
sys.argv = ["gen", "serve", "--model", {str(model_path)!r}, "--port", "0"]
from chargen.cli import main
main()
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert 'is not installed: pip install "chargen[serve]"' in out.stderr
