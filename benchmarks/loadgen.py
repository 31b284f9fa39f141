"""A lean streaming client for load tests: HTTP/1.1 keep-alive connections on asyncio's Protocol
API, chunked transfer decoding and Server-Sent Events, nothing else.

    conn = await Connection.open("127.0.0.1", 8000)
    async for now, text in conn.stream("/v1/completions", {"prompt": "ROMEO:", "max_tokens": 50}):
        ...                                        # (perf_counter when the frame came, its text)
    conn.close()

Why not httpx: at 64 streaming clients on a 2-core machine, httpx's clients took half a core,
which the server under test then lacked. This client costs a fraction of that (bench_serve.py
prints the clients' CPU beside every figure), so the figures measure the server. It speaks only
what gen serve answers a streaming completion with (a 200 with chunked SSE, or an error body);
anything else raises LoadError naming what came.
"""

from __future__ import annotations

import asyncio
import json
import time


class LoadError(RuntimeError):
    """The server answered something other than a stream of completion frames."""


class _Protocol(asyncio.Protocol):
    def __init__(self):
        self.transport = None
        self.buf = bytearray()
        self.waiter: asyncio.Future | None = None
        self.closed = False

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.buf += data
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    def connection_lost(self, exc):
        self.closed = True
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)


class Connection:
    """One keep-alive connection; one request at a time."""

    def __init__(self, host: str, port: int, transport, proto: _Protocol):
        self.host, self.port = host, port
        self._t, self._p = transport, proto

    @classmethod
    async def open(cls, host: str, port: int) -> "Connection":
        loop = asyncio.get_running_loop()
        transport, proto = await loop.create_connection(_Protocol, host, port)
        return cls(host, port, transport, proto)

    def close(self) -> None:
        self._t.close()

    async def _more(self) -> None:
        p = self._p
        if p.closed:
            raise LoadError("the server closed the connection mid-response")
        p.waiter = asyncio.get_running_loop().create_future()
        await p.waiter
        p.waiter = None

    async def stream(self, path: str, body: dict):
        """POST body (with "stream": true) and yield (perf_counter, text) for every frame with
        text (choices' texts joined). Ends at the response's last chunk."""
        data = json.dumps({**body, "stream": True}).encode()
        self._t.write(b"POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
                      b"Content-Length: %d\r\n\r\n" % (path.encode(), self.host.encode(), self.port, len(data)) + data)
        p = self._p
        buf = p.buf
        # ---- status line and headers
        while (end := buf.find(b"\r\n\r\n")) < 0:
            await self._more()
        head = bytes(buf[:end]).decode("latin-1")
        del buf[:end + 4]
        status = head.split(" ", 2)[1]
        if status != "200":
            raise LoadError(f"HTTP {status}: {head.splitlines()[0]} (body: {bytes(buf[:300])!r})")
        if "transfer-encoding: chunked" not in head.lower():
            raise LoadError(f"not a chunked stream: {head!r}")
        # ---- chunks, and the SSE events inside them
        events = bytearray()
        while True:
            while (eol := buf.find(b"\r\n")) < 0:
                await self._more()
            size = int(bytes(buf[:eol]).split(b";")[0], 16)
            while len(buf) < eol + 2 + size + 2:
                await self._more()
            events += buf[eol + 2:eol + 2 + size]
            del buf[:eol + 2 + size + 2]
            if size == 0:
                return
            now = time.perf_counter()
            texts = []
            while (sep := events.find(b"\n\n")) >= 0:
                line = bytes(events[:sep])
                del events[:sep + 2]
                if line.startswith(b"data: {"):
                    frame = json.loads(line[6:])
                    if "error" in frame:
                        raise LoadError(f"error frame: {frame['error']}")
                    texts.extend(c["text"] for c in frame["choices"])
            if texts and (text := "".join(texts)):
                yield now, text


def host_port(url: str) -> tuple[str, int]:
    """("127.0.0.1", 8000) from "http://127.0.0.1:8000"."""
    rest = url.split("://", 1)[-1].rstrip("/")
    host, _, port = rest.rpartition(":")
    return host.strip("[]"), int(port)
