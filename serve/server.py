"""Run the app under uvicorn, with chargen's shutdown: SIGTERM (or Ctrl-C) stops admitting
(503 on new requests and on /health), lets running requests finish for up to --grace
seconds, ends the rest, and exits with status 0. A second signal exits at once."""

from __future__ import annotations

import asyncio
import logging
import socket

import uvicorn

from chargen.serve.app import create_app
from chargen.serve.config import ServeConfig

log = logging.getLogger("chargen.serve")


class ListenError(OSError):
    """The server cannot listen on the host and port asked for."""


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: a free one; read it back from getsockname())."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise ListenError(f"cannot resolve --host {host!r}: {e.strerror}") from None
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(addr)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        raise ListenError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


class _Server(uvicorn.Server):
    """uvicorn's server, draining on the first SIGTERM/SIGINT instead of closing at once,
    and not re-raising the signal afterwards (so the exit status is 0)."""

    def __init__(self, config, state, grace: float, on_ready=None):
        super().__init__(config)
        self._state = state
        self._grace = grace
        self._on_ready = on_ready
        self._draining = False
        self._loop = None
        self.ready_error: BaseException | None = None

    @property
    def draining(self) -> bool:
        return self._draining

    async def startup(self, sockets=None):
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets=sockets)
        if self.started and not self.should_exit and self._on_ready is not None:
            try:
                self._on_ready()
            except BaseException as e:  # e.g. stdout is full: stop, and raise it after the shutdown
                self.ready_error = e
                self.should_exit = True

    def handle_exit(self, sig, frame):
        if self._draining or self._loop is None:
            self.should_exit = True
            self.force_exit = self._draining
            return
        self._draining = True
        self._loop.call_soon_threadsafe(lambda: self._loop.create_task(self._drain()))

    async def _drain(self):
        try:
            await self._state.drain(self._grace)
        finally:
            self.should_exit = True


# onnxruntime's intra-op threads must not spin between steps: the step shares the cores with the
# event loop and the connections, and spinning threads took twice the CPU per step under load
SESSION_CONFIG = {"session.intra_op.allow_spinning": "0"}


def run(models, config: ServeConfig | None = None, *, host: str = "127.0.0.1", port: int = 8000,
        sock: socket.socket | None = None, on_ready=None, log_level: str = "warning") -> None:
    """Serve `models` (a Model, or several by name: see create_app) until SIGTERM/SIGINT.
    on_ready(url) runs once it accepts requests."""
    config = config or ServeConfig()
    app = create_app(models, config)
    if sock is None:
        sock = bind(host, port)
    url = url_of(sock)
    import importlib.util

    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    uconfig = uvicorn.Config(app, loop=loop, http=http, log_level=log_level, access_log=False,
                             lifespan="on", timeout_graceful_shutdown=3, timeout_keep_alive=5,
                             server_header=False)
    server = _Server(uconfig, app.state.chargen, config.grace,
                     on_ready=(lambda: on_ready(url)) if on_ready else None)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    if server.ready_error is not None:
        raise server.ready_error
