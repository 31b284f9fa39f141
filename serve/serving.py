"""Requests to the batches and back: the served models (each its own Batch, stepping thread and
metrics), admission (body -> checked request -> the chosen model's queue), the live requests,
the drain on SIGTERM, and health.

    serving = Serving([("tiny", model), ("q8", int8_model)], ServeConfig())
    serving.start()                               # on the event loop: one stepping thread per model
    comp = await serving.prepare(request)         # ApiError (4xx/5xx) where it cannot be admitted
    return CompletionResponse(comp, serving.config, serving.finished)
    await serving.drain(grace=10)                 # SIGTERM: 503 to new requests, the rest finish

A request picks its model by `model` (a served name; without one, the first model); any
other name is a 404 (model_not_found), however many models there are.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from chargen.serve.completion import Completion
from chargen.serve.config import ServeConfig
from chargen.serve.metrics import Metrics
from chargen.serve.protocol import (ApiError, CompletionRequest, model_card, model_not_found, queue_full, too_large,
                                    unavailable, unknown_characters)
from chargen.serve.scheduler import Draining, QueueFull, Scheduler


class ServedModel:
    """One model under its served name: its Batch, the Scheduler that steps it, its metrics."""

    def __init__(self, name: str, model, config: ServeConfig, metrics: Metrics):
        from chargen.runtime.batch import Batch

        self.name = name
        self.model = model
        self.config = config
        self.batch = Batch(model, max_batch=config.max_batch)
        self.metrics = metrics.model(name, self.batch.capacity)
        self.scheduler: Scheduler | None = None
        try:
            self.created = int(Path(str(model.path)).stat().st_mtime)
        except OSError:
            self.created = int(time.time())

    def start(self) -> None:
        self.scheduler = Scheduler(self.batch, asyncio.get_running_loop(), max_queue=self.config.max_queue,
                                   metrics=self.metrics)
        self.scheduler.start()

    @property
    def alive(self) -> bool:
        return self.scheduler is not None and self.scheduler.alive

    def card(self) -> dict:
        return model_card(self.name, self.model, created=self.created, engine=self.batch.engine,
                          max_batch=self.batch.capacity, max_chars=self.config.max_chars)

    def health(self) -> dict:
        s = self.scheduler
        return {"status": "ok" if self.alive else ("loading" if s is None else "error"),
                "slots_active": s.running if s else 0, "slots": self.batch.capacity, "queue": s.queued if s else 0}


class Serving:
    """What the routes share: the served models in the order given (the first is the default),
    the config, the metrics, the status (loading -> ok -> draining) and the live requests."""

    def __init__(self, models, config: ServeConfig):
        self.config = config
        self.metrics = Metrics()
        self.models: dict[str, ServedModel] = {}
        for name, model in models:
            if name in self.models:
                raise ValueError(f"two models are named {name!r}")
            self.models[name] = ServedModel(name, model, config, self.metrics)
        if not self.models:
            raise ValueError("no models to serve")
        self.default = next(iter(self.models.values()))
        self.status = "loading"
        self.live: set[Completion] = set()

    # ------------------------------------------------------------------ life
    def start(self) -> None:
        for m in self.models.values():
            m.start()
        self.status = "ok"

    async def drain(self, grace: float) -> None:
        """Stop admitting (503), let running requests of every model finish for up to `grace`
        seconds, then end the rest with an error."""
        self.status = "draining"
        for m in self.models.values():
            if m.scheduler is not None:
                m.scheduler.stop_admitting()
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
        for m in self.models.values():
            if m.scheduler is not None:
                m.scheduler.close()

    # ------------------------------------------------------------------ what the routes ask
    def model(self, name: str | None) -> ServedModel:
        """The served model of that name (None: the first), or ApiError 404 model_not_found."""
        if name is None:
            return self.default
        m = self.models.get(name)
        if m is None:
            raise model_not_found(name, list(self.models))
        return m

    def health(self) -> tuple[dict, bool]:
        """/health's body, and whether every model is up (200) or not (503)."""
        models = {name: m.health() for name, m in self.models.items()}
        ok = self.status == "ok" and all(h["status"] == "ok" for h in models.values())
        status = self.status if self.status != "ok" or ok else "error"
        body = {"status": status,
                "slots_active": sum(h["slots_active"] for h in models.values()),
                "slots": sum(h["slots"] for h in models.values()),
                "queue": sum(h["queue"] for h in models.values()),
                "models": models}
        return body, ok

    async def prepare(self, request) -> Completion:
        """Read and check a completion request (a starlette Request) and queue its choices on
        its model. ApiError where it cannot be (counted in the metrics under its model, or
        model "" where it names no served one)."""
        served = None
        try:
            if self.status != "ok":
                raise unavailable(f"the server is {self.status}; try another replica or retry later")
            req = self._parse(await read_body(request, self.config.max_body))
            served = self.model(req.model)
            comp = self._admit(served, req)
        except ApiError as e:
            self.metrics.request(str(e.status), served.name if served else "")
            raise
        self.live.add(comp)
        served.metrics.prompt_characters.inc(comp.prompt_chars * req.n)
        return comp

    def finished(self, comp: Completion, status: str) -> None:
        """A response ended (status "200", "503", "499")."""
        self.live.discard(comp)
        self.models[comp.model].metrics.request(status)

    # ------------------------------------------------------------------ admission
    def _parse(self, raw: bytes) -> CompletionRequest:
        cfg = self.config
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise ApiError(400, f"the request body is not valid JSON: {e}", code="invalid_json") from None
        return CompletionRequest.parse(body, max_chars=cfg.max_chars, max_choices=cfg.max_batch + cfg.max_queue)

    def _admit(self, served: ServedModel, req: CompletionRequest) -> Completion:
        vocab = served.model.vocab
        fed = []
        for i, p in enumerate(req.prompts):
            unknown = vocab.unknown(p)
            where = f"prompt[{i}]" if req.prompt_is_list else "prompt"
            if unknown and req.unknown == "error":
                raise unknown_characters(where, unknown, vocab)
            if unknown:
                p = "".join(c for c in p if c in vocab)
                if not p:
                    raise ApiError(400, f"'{where}' is empty after skipping the characters the model does not know",
                                   param="prompt", code="invalid_value")
            fed.append(p)
        sched = served.scheduler
        comp = Completion(req, fed, model=served.name, cancel=sched.cancel)
        try:
            sched.submit(comp.jobs)
        except QueueFull:
            raise queue_full(self.config.max_queue, served.name) from None
        except Draining:
            raise unavailable("the server is shutting down; try another replica") from None
        return comp


async def read_body(request, limit: int) -> bytes:
    """The body, or ApiError 413 as soon as it is over `limit` bytes (Content-Length or not)."""
    length = request.headers.get("content-length")
    if length is not None and length.strip().isdigit() and int(length) > limit:
        raise too_large(limit, int(length))
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)
