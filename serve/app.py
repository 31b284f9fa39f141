"""The ASGI app: OpenAI's Completions API over the scheduler, plus /v1/models, /health,
/metrics and the playground page.

    app = create_app(model, ServeConfig(max_batch=64, api_key="..."))

Every choice of a request is one slot of the batch (a Job of the scheduler). Characters
come from the stepping thread once per step; a stream sends what arrived per flush
interval (one SSE chunk per choice, not one per character), holding back the characters
that could still be the start of a stop string.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import secrets
import time
from collections import Counter
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect
from starlette.responses import HTMLResponse, JSONResponse, Response

from chargen.serve.metrics import Metrics
from chargen.serve.protocol import ApiError, CompletionRequest, hold_back, parse_completion, strip_stop
from chargen.serve.scheduler import Draining, Job, QueueFull, Scheduler

log = logging.getLogger("chargen.serve")

# the headers the official JavaScript client (openai-node) sends from a browser
CORS_HEADERS = ("authorization", "content-type", "accept", "openai-organization", "openai-project",
                "openai-beta", "x-stainless-*", "openai-*")


@dataclass
class ServeConfig:
    max_batch: int = 64
    max_queue: int = 256
    max_chars: int = 4096  # prompt + max_tokens, per choice
    api_key: str | None = None
    cors_origins: tuple[str, ...] = ()
    grace: float = 10.0  # seconds running requests get to finish after SIGTERM
    max_body: int = 1 << 20  # bytes of a request body
    flush_interval: float = 0.025  # a stream sends what it has at most this often
    keepalive: float = 2.0  # seconds between ': keep-alive' comments while a stream waits
    model_id: str | None = None  # default: the model file's stem


def _json(obj) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def _error_response(e: ApiError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status, headers=e.headers)


class _State:
    """What the routes share: the model, the batch and its scheduler, the metrics."""

    def __init__(self, model, config: ServeConfig):
        from chargen.runtime.batch import Batch

        self.model = model
        self.config = config
        self.model_id = config.model_id or Path(str(model.path)).stem
        self.model_id_json = json.dumps(self.model_id, ensure_ascii=False)
        self.batch = Batch(model, max_batch=config.max_batch)
        self.metrics = Metrics(capacity=self.batch.capacity)
        self.scheduler: Scheduler | None = None
        self.status = "loading"  # -> ok -> draining
        self.live: set[_Completion] = set()
        self.created = int(time.time())
        try:
            self.model_created = int(Path(str(model.path)).stat().st_mtime)
        except OSError:
            self.model_created = self.created

    def start(self) -> None:
        self.scheduler = Scheduler(self.batch, asyncio.get_running_loop(), max_queue=self.config.max_queue,
                                   metrics=self.metrics)
        self.scheduler.start()
        self.status = "ok"

    async def drain(self, grace: float) -> None:
        """Stop admitting (503), let running requests finish for up to `grace` seconds, then
        end the rest with an error."""
        self.status = "draining"
        sched = self.scheduler
        if sched is None:
            return
        sched.stop_admitting()
        deadline = time.monotonic() + grace
        while self.live and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for comp in list(self.live):
            comp.abort("the server is shutting down")
        deadline = time.monotonic() + 2.0
        while self.live and time.monotonic() < deadline:  # let the responses go out
            await asyncio.sleep(0.02)

    def close(self) -> None:
        self.status = "draining"
        if self.scheduler is not None:
            self.scheduler.close()


# ---------------------------------------------------------------------- one request
class _Choice:
    """One choice: its text as it arrives, the held-back tail, logprobs, finish reason."""

    __slots__ = ("index", "comp", "stops", "lp_n", "prefix", "text", "sent", "held", "held_lp", "lp",
                 "lp_sent", "finish", "finish_sent", "generated", "job")

    def __init__(self, index: int, comp: "_Completion", prefix: str):
        self.index = index
        self.comp = comp
        self.stops = comp.req.stop
        self.lp_n = comp.req.logprobs
        self.prefix = prefix  # the prompt, with echo
        self.text: list[str] = []  # released characters
        self.sent = 0  # how many of them a stream has sent
        self.held = ""  # characters that could still start a stop string
        self.held_lp: list = []
        self.lp: list = []  # (char, logprob, top) per released character
        self.lp_sent = 0
        self.finish: str | None = None
        self.finish_sent = False
        self.generated = 0  # characters generated (a stop string included)
        self.job: Job | None = None

    def pull(self) -> bool:
        """Take the events the stepping thread gathered for this choice; True if there were any."""
        events = self.job.take()
        if events:
            self.feed(events)
        return bool(events)

    def feed(self, events) -> None:
        comp = self.comp
        for ev in events:
            if ev.text:
                self.generated += 1
                self.held += ev.text
                if self.lp_n is not None:
                    self.held_lp.append((ev.text, ev.logprob, ev.top_logprobs))
            if ev.finish is not None:
                self.finish = ev.finish
        held = self.held
        if self.finish is not None:
            kept = strip_stop(held, self.stops)
            if len(kept) < len(held):
                self.finish = "stop"
            self._release(kept)
            self.held = ""
            self.held_lp = []
            comp.choice_done()
        else:
            k = hold_back(held, self.stops)
            if k < len(held):
                self._release(held[: len(held) - k])
                self.held = held[len(held) - k:]
                if self.lp_n is not None:
                    self.held_lp = self.held_lp[len(held) - k:]

    def _release(self, text: str) -> None:
        if not text:
            return
        self.text.append(text)
        if self.lp_n is not None:
            self.lp.extend(self.held_lp[: len(text)])

    def fail(self, message: str) -> None:
        self.comp.abort(message)

    def logprobs(self, start: int = 0) -> dict | None:
        """OpenAI's logprobs object of the released characters from `start` on: the sampled
        character's logprob, and up to N+1 top ones (the top N, and the sampled one)."""
        if self.lp_n is None:
            return None
        n = self.lp_n
        base = len(self.prefix)
        tokens, token_lps, tops, offsets = [], [], [], []
        for i, (ch, lp, top) in enumerate(self.lp[start:], start):
            tokens.append(ch)
            token_lps.append(lp)
            best = dict(sorted(top.items(), key=lambda kv: -kv[1])[:n]) if top else {}
            if ch not in best and lp is not None:
                best[ch] = lp
            tops.append(best)
            offsets.append(base + i)
        return {"tokens": tokens, "token_logprobs": token_lps, "top_logprobs": tops, "text_offset": offsets}


class _Completion:
    """One request: its choices (one Job each), and the event its response waits on."""

    def __init__(self, state: _State, req: CompletionRequest, prompts_fed: list[str]):
        self.state = state
        self.req = req
        self.id = "cmpl-" + secrets.token_hex(12)
        self.created = int(time.time())
        self.t0 = time.perf_counter()
        self.wake = asyncio.Event()
        self.closed = False  # the client went away
        self.error: str | None = None  # the server ended it (shutdown, a failed step)
        self.remaining = 0
        self.prompt_chars = sum(len(p) for p in prompts_fed)
        self.choices: list[_Choice] = []
        self.jobs: list[Job] = []
        from chargen.runtime import GenerationOptions

        for p_index, (prompt, fed) in enumerate(zip(req.prompts, prompts_fed)):
            for j in range(req.n):
                index = p_index * req.n + j
                choice = _Choice(index, self, prompt if req.echo else "")
                seed = None if req.seed is None else (req.seed + index) % 2**64
                options = GenerationOptions(temperature=req.temperature, top_k=req.top_k, top_p=req.top_p,
                                            seed=seed, max_length=req.max_tokens, stop=req.stop)
                lp = 0 if req.logprobs is None else max(req.logprobs, 1)
                # a stream is woken at its first character, a whole response when its jobs finish
                choice.job = Job(fed, options, unknown="error", logprobs=lp, ready=self.wake.set, fail=choice.fail,
                                 notify=req.stream)
                self.choices.append(choice)
                self.jobs.append(choice.job)
        self.remaining = len(self.choices)

    @property
    def done(self) -> bool:
        return self.remaining == 0

    def pull(self) -> bool:
        """Take what the stepping thread gathered for every choice; True if anything came."""
        got = False
        for c in self.choices:
            if c.finish is None and c.pull():
                got = True
        return got

    def ask_to_be_woken(self) -> bool:
        """Set notify on the unfinished jobs; False if events came meanwhile (no need to wait)."""
        for c in self.choices:
            if c.finish is None:
                c.job.notify = True
        return not any(c.job.pending for c in self.choices if c.finish is None)

    def choice_done(self) -> None:
        self.remaining -= 1

    def disconnect(self) -> None:
        if not self.done and not self.closed:
            self.closed = True
            self.state.scheduler.cancel(self.jobs)
        self.wake.set()

    def abort(self, message: str) -> None:
        if self.error is None and not self.done:
            self.error = message
            self.state.scheduler.cancel(self.jobs)
        self.wake.set()

    def usage(self) -> dict:
        completion = sum(c.generated for c in self.choices)
        return {"prompt_tokens": self.prompt_chars, "completion_tokens": completion,
                "total_tokens": self.prompt_chars + completion}

    def body(self) -> dict:
        choices = []
        for c in self.choices:
            choices.append({"index": c.index, "text": c.prefix + "".join(c.text),
                            "finish_reason": c.finish, "logprobs": c.logprobs()})
        return {"id": self.id, "object": "text_completion", "created": self.created,
                "model": self.state.model_id, "choices": choices, "usage": self.usage()}


class _CompletionResponse(Response):
    """Answers one completion, streaming or not, and watches the connection: a client that
    goes away cancels its choices (queued or running) at once."""

    def __init__(self, comp: _Completion):
        self.comp = comp
        self.status_code = 200
        self.background = None

    async def _listen(self, receive) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.comp.disconnect()
                return

    async def __call__(self, scope, receive, send) -> None:
        comp = self.comp
        state = comp.state
        state.live.add(comp)  # (already there since it was queued; drain() waits for it)
        listener = asyncio.ensure_future(self._listen(receive))
        status = "200"
        try:
            if comp.req.stream:
                status = await self._stream(send)
            else:
                status = await self._whole(send)
        except OSError:  # the connection broke while sending
            comp.disconnect()
            status = "499"
        finally:
            listener.cancel()
            if not comp.done:
                comp.disconnect()
            state.live.discard(comp)
            state.metrics.requests.labels(status).inc()

    async def _whole(self, send) -> str:
        comp = self.comp
        while True:
            comp.pull()
            if comp.done or comp.closed or comp.error is not None:
                break
            try:  # woken when the jobs finish; meanwhile take their characters now and then
                await asyncio.wait_for(comp.wake.wait(), 0.5)
            except asyncio.TimeoutError:
                pass
            comp.wake.clear()
        if comp.closed:
            return "499"
        if comp.error is not None:
            e = ApiError(503, comp.error, code="unavailable")
            await _send_json(send, e.status, e.body())
            return "503"
        await _send_json(send, 200, comp.body())
        return "200"

    async def _stream(self, send) -> str:
        comp = self.comp
        cfg = comp.state.config
        head = (f'data: {{"id":"{comp.id}","object":"text_completion","created":{comp.created},'
                f'"model":{comp.state.model_id_json},"choices":[').encode()
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no")]})

        def body(data: bytes) -> dict:
            return {"type": "http.response.body", "body": data, "more_body": True}

        if comp.req.echo:
            parts = [head + _json({"index": c.index, "text": c.prefix, "logprobs": None, "finish_reason": None})
                     + b"]}\n\n" for c in comp.choices]
            await send(body(b"".join(parts)))
        started = False  # some text went out: no more keep-alives
        while True:
            got = comp.pull()
            if comp.closed:
                return "499"
            parts = []
            for c in comp.choices:
                n_text = len(c.text)
                new_finish = c.finish is not None and not c.finish_sent
                if n_text == c.sent and not new_finish:
                    continue
                text = "".join(c.text[c.sent:n_text])
                lp = None
                if c.lp_n is not None:
                    lp = c.logprobs(c.lp_sent)
                    c.lp_sent = len(c.lp)
                c.sent = n_text
                finish = c.finish if new_finish else None
                c.finish_sent = c.finish_sent or new_finish
                parts.append(head + _json({"index": c.index, "text": text, "logprobs": lp, "finish_reason": finish})
                             + b"]}\n\n")
            if comp.error is not None and not comp.done:
                e = ApiError(503, comp.error, code="unavailable")
                parts.append(b"data: " + _json(e.body()) + b"\n\n")
                await send(body(b"".join(parts)))
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return "503"
            if comp.done:
                if comp.req.include_usage:
                    parts.append(head + b"]," + f'"usage":{_json(comp.usage()).decode()}}}\n\n'.encode())
                parts.append(b"data: [DONE]\n\n")
                await send({"type": "http.response.body", "body": b"".join(parts), "more_body": False})
                return "200"
            if parts:
                started = True
                await send(body(b"".join(parts)))
            if got:
                # characters are coming: take the next ones after a flush interval (own timer,
                # no wake-up per step)
                await asyncio.sleep(cfg.flush_interval)
                continue
            # nothing came since the last look: be woken by the next event
            comp.wake.clear()
            if not comp.ask_to_be_woken():
                continue
            if started:
                await comp.wake.wait()
            else:
                try:
                    await asyncio.wait_for(comp.wake.wait(), cfg.keepalive)
                except asyncio.TimeoutError:
                    if not comp.closed:
                        await send(body(b": keep-alive\n\n"))


async def _send_json(send, status: int, obj, headers: dict | None = None) -> None:
    data = _json(obj)
    hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    for k, v in (headers or {}).items():
        hdrs.append((k.lower().encode(), str(v).encode()))
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": data, "more_body": False})


# ---------------------------------------------------------------------- middleware
class _AuthMiddleware:
    """--api-key: /v1/* and /metrics want `Authorization: Bearer KEY` (/health and / stay open)."""

    def __init__(self, app, api_key: str | None):
        self.app = app
        self.key = api_key.encode() if api_key else None

    async def __call__(self, scope, receive, send):
        if self.key is not None and scope["type"] == "http" and scope.get("method") != "OPTIONS":
            path = scope.get("path", "")
            if path.startswith("/v1/") or path == "/v1" or path == "/metrics":
                auth = dict(scope.get("headers") or ()).get(b"authorization", b"")
                scheme, _, token = auth.partition(b" ")
                if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self.key):
                    e = ApiError(401, "Incorrect or missing API key: send it as 'Authorization: Bearer KEY'.",
                                 code="invalid_api_key", headers={"www-authenticate": "Bearer"})
                    await _send_json(send, 401, e.body(), e.headers)
                    return
        await self.app(scope, receive, send)


class _CORSMiddleware(CORSMiddleware):
    """Starlette's CORS, with header patterns (x-stainless-*, openai-*) in allow_headers."""

    def __init__(self, app, *, allow_header_patterns=(), **kwargs):
        super().__init__(app, **kwargs)
        self._prefixes = tuple(p[:-1] for p in allow_header_patterns if p.endswith("*"))

    def preflight_response(self, request_headers):
        requested = request_headers.get("access-control-request-headers")
        if requested and self._prefixes:
            names = [h.strip().lower() for h in requested.split(",") if h.strip()]
            if all(h in self.allow_headers or h.startswith(self._prefixes) for h in names):
                raw = [(k, v) for k, v in request_headers.raw if k.lower() != b"access-control-request-headers"]
                response = super().preflight_response(Headers(raw=raw))
                if response.status_code == 200:
                    extra = [h for h in names if h not in self.allow_headers]
                    response.headers["access-control-allow-headers"] = ", ".join([*self.allow_headers, *extra])
                return response
        return super().preflight_response(request_headers)


# ---------------------------------------------------------------------- the app
def create_app(model, config: ServeConfig | None = None) -> FastAPI:
    """The ASGI app serving `model` (a loaded chargen.runtime.Model)."""
    from contextlib import asynccontextmanager

    config = config or ServeConfig()
    state = _State(model, config)

    @asynccontextmanager
    async def lifespan(app):
        state.start()
        try:
            yield
        finally:
            state.close()

    middleware = []
    if config.cors_origins:
        plain = [h for h in CORS_HEADERS if not h.endswith("*")]
        middleware.append(Middleware(
            _CORSMiddleware, allow_origins=list(config.cors_origins), allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=plain, allow_header_patterns=[h for h in CORS_HEADERS if h.endswith("*")],
            expose_headers=["retry-after"], max_age=600,
        ))
    middleware.append(Middleware(_AuthMiddleware, api_key=config.api_key))

    app = FastAPI(title="chargen", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan,
                  middleware=middleware)
    app.state.chargen = state

    @app.exception_handler(ApiError)
    async def _api_error(request, e: ApiError):
        return _error_response(e)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, e: StarletteHTTPException):
        codes = {404: "not_found", 405: "method_not_allowed"}
        msg = {404: f"no route {request.url.path}", 405: f"{request.method} is not allowed on {request.url.path}"}
        return _error_response(ApiError(e.status_code, msg.get(e.status_code, str(e.detail)),
                                        code=codes.get(e.status_code), headers=getattr(e, "headers", None)))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request, e):
        return _error_response(ApiError(400, "invalid request"))

    @app.exception_handler(Exception)
    async def _bug(request, e: Exception):
        log.error("%s %s failed: %s: %s", request.method, request.url.path, type(e).__name__, e, exc_info=e)
        return _error_response(ApiError(500, "internal server error", code="internal_error"))

    # ------------------------------------------------------------------ routes
    @app.post("/v1/completions")
    async def completions(request: Request):
        try:
            comp = await _prepare(request, state)
        except ApiError as e:
            state.metrics.requests.labels(str(e.status)).inc()
            return _error_response(e)
        except ClientDisconnect:
            state.metrics.requests.labels("499").inc()
            return Response(status_code=400)
        return _CompletionResponse(comp)

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [_model_card(state)]}

    @app.get("/v1/models/{model_id}")
    async def model(model_id: str):
        if model_id != state.model_id:
            raise ApiError(404, f"the model {model_id!r} does not exist; this server serves {state.model_id!r}",
                           param="model", code="model_not_found")
        return _model_card(state)

    @app.get("/health")
    async def health():
        sched = state.scheduler
        ok = state.status == "ok" and sched is not None and sched.alive
        status = state.status if state.status != "ok" or ok else "error"
        body = {"status": status}
        if sched is not None:
            body.update(slots_active=sched.running, slots=state.batch.capacity, queue=sched.queued)
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics")
    async def metrics():
        return Response(state.metrics.render(), media_type=state.metrics.content_type)

    page = _playground()

    @app.get("/")
    async def playground():
        return HTMLResponse(page)

    # gen web's in-browser page beside the server-backed one (GET /web/): for a model the page
    # runs on chargen.wasm (int8, --int8-kernel dynamic), and only without an API key, since the
    # page hands the model file itself to the browser
    web = _web_files(state.model) if config.api_key is None else {}
    if web:
        @app.get("/web/")
        async def web_page():
            return Response(web["index.html"][0], media_type=web["index.html"][1])

        @app.get("/web/{name}")
        async def web_file(name: str):
            if name not in web:
                raise ApiError(404, f"no route /web/{name}", code="not_found")
            body, media_type = web[name]
            return Response(body, media_type=media_type)

    return app


_MEDIA_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript", ".wasm": "application/wasm",
                ".onnx": "application/octet-stream"}


def _web_files(model) -> dict[str, tuple[bytes, str]]:
    """{name: (bytes, media type)} of gen web's folder for this model, read once; {} where the page
    cannot run it here (not an int8 dynamic model, or chargen.web not installed)."""
    try:
        from chargen.web import PAGE_FILES, STATIC, WebError, check_model
    except ImportError:
        return {}
    try:
        meta = check_model(model.path)
        if meta.get("chargen.precision") != "int8":
            return {}  # fp32 and fp16 need onnxruntime-web, which only a gen web folder carries
        name = model.path.name
        if not name.endswith(".onnx") or any(c in name for c in '"<>&/?#% ') or name in PAGE_FILES:
            return {}  # a name the page could not take as it is
        files = {f: (STATIC / f).read_bytes() for f in PAGE_FILES}
        files["index.html"] = files["index.html"].replace(b"__MODEL__", name.encode("utf-8"))
        files[name] = model.path.read_bytes()
    except (WebError, OSError) as e:
        log.info("no in-browser page at /web/: %s", e)
        return {}
    return {f: (body, _MEDIA_TYPES.get(Path(f).suffix, "application/octet-stream")) for f, body in files.items()}


def _model_card(state: _State) -> dict:
    m = state.model
    cfg = dict(m.config)
    return {
        "id": state.model_id, "object": "model", "created": state.model_created, "owned_by": "chargen",
        "vocab_size": m.vocab_size, "layers": m.num_layers, "hidden_size": m.hidden_size,
        "embedding_dim": cfg.get("embedding_dim"), "precision": m.precision, "engine": state.batch.engine,
        "device": m.device, "corpus": m.corpus or None, "val_loss": m.val_loss,
        "max_batch": state.batch.capacity, "max_chars": state.config.max_chars,
    }


def _playground() -> str:
    try:
        return (resources.files("chargen.serve") / "static" / "playground.html").read_text(encoding="utf-8")
    except (FileNotFoundError, OSError):
        return ("<!doctype html><html><head><meta charset='utf-8'><title>chargen</title></head><body>"
                "<h1>chargen</h1><p>The playground page is not installed. The API: POST /v1/completions, "
                "GET /v1/models, GET /health, GET /metrics.</p></body></html>")


async def _read_body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and length.strip().isdigit() and int(length) > limit:
        raise ApiError(413, f"the request body is {int(length)} bytes, over the limit of {limit}",
                       code="request_too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"the request body is over the limit of {limit} bytes", code="request_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


async def _prepare(request: Request, state: _State) -> _Completion:
    """Read and check a completion request and queue its choices (ApiError where it cannot)."""
    if state.status != "ok":
        raise ApiError(503, f"the server is {state.status}; try another replica or retry later",
                       code="unavailable", headers={"retry-after": "1"})
    cfg = state.config
    raw = await _read_body(request, cfg.max_body)
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError(400, f"the request body is not valid JSON: {e}", code="invalid_json") from None
    req = parse_completion(body, max_chars=cfg.max_chars, max_choices=cfg.max_batch + cfg.max_queue)
    vocab = state.model.vocab
    fed = []
    for i, p in enumerate(req.prompts):
        unknown = vocab.unknown(p)
        where = f"prompt[{i}]" if req.prompt_is_list else "prompt"
        if unknown and req.unknown == "error":
            raise ApiError(400, _unknown_message(where, unknown, vocab), param="prompt", code="unknown_characters")
        if unknown:
            p = "".join(c for c in p if c in vocab)
            if not p:
                raise ApiError(400, f"'{where}' is empty after skipping the characters the model does not know",
                               param="prompt", code="invalid_value")
        fed.append(p)
    comp = _Completion(state, req, fed)
    try:
        state.scheduler.submit(comp.jobs)
    except QueueFull:
        raise ApiError(429, f"the server is busy: {state.config.max_queue} choices wait for a slot already; "
                            "retry later", type="server_busy", code="queue_full", headers={"retry-after": "1"}) from None
    except Draining:
        raise ApiError(503, "the server is shutting down; try another replica", code="unavailable",
                       headers={"retry-after": "1"}) from None
    state.live.add(comp)
    state.metrics.prompt_characters.inc(comp.prompt_chars * req.n)
    return comp


def _unknown_message(where: str, unknown: Counter, vocab) -> str:
    shown = ", ".join(f"{c!r} (x{n})" for c, n in unknown.most_common(10))
    more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
    return (f"'{where}' has {sum(unknown.values())} character(s) not in the model's alphabet: {shown}{more}. "
            f"The model knows {len(vocab)} characters: {''.join(vocab.chars)!r}. Remove them, or send "
            f"\"unknown\": \"skip\" to drop them.")
