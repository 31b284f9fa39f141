"""benchmarks/loadgen.py, the lean client bench_serve measures the server with: it must count
what the server sends, no more and no less, or the benchmark's figures mean nothing."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

import httpx
import pytest

_SPEC = importlib.util.spec_from_file_location(
    "loadgen", Path(__file__).resolve().parents[2] / "benchmarks" / "loadgen.py")
loadgen = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(loadgen)


async def _streams(url: str, bodies: list[dict]) -> list[str]:
    """The bodies one after another on one keep-alive connection: each one's text."""
    host, port = loadgen.host_port(url)
    conn = await loadgen.Connection.open(host, port)
    try:
        texts = []
        for body in bodies:
            texts.append("".join([t async for _, t in conn.stream("/v1/completions", body)]))
        return texts
    finally:
        conn.close()


def test_the_lean_client_reads_every_character_the_server_sends(server):
    bodies = [{"prompt": "ROMEO: ", "max_tokens": n, "seed": 50 + n, "temperature": 0.9} for n in (1, 40, 700)]
    got = asyncio.run(_streams(server.url, bodies))
    for body, text in zip(bodies, got):
        whole = httpx.post(server.url + "/v1/completions", json=body, timeout=30).json()
        assert text == whole["choices"][0]["text"]
        assert len(text) == whole["usage"]["completion_tokens"] == body["max_tokens"]


def test_the_lean_client_names_an_error_answer(server):
    with pytest.raises(loadgen.LoadError, match="HTTP 400"):
        asyncio.run(_streams(server.url, [{"prompt": "snow\u2603man", "max_tokens": 5}]))
    assert loadgen.host_port("http://127.0.0.1:8123") == ("127.0.0.1", 8123)
    assert loadgen.host_port("http://[::1]:80/") == ("::1", 80)
