"""The HTTP answer to one completion: the whole JSON body once every choice finished, or a stream
of Server-Sent Events (one frame per choice per flush interval, built as bytes), and a watch on
the connection: a client that goes away cancels its choices at once.

    return CompletionResponse(comp, config, on_end=lambda comp, status: ...)   # from a route

Streams send what arrived per flush interval (not one frame per character), and ': keep-alive'
comments while a request waits for a slot.
"""

from __future__ import annotations

import asyncio
import json
from typing import Callable

from starlette.responses import Response

from chargen.serve.completion import Completion
from chargen.serve.config import ServeConfig
from chargen.serve.protocol import ApiError

SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
               (b"x-accel-buffering", b"no")]


def json_bytes(obj) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


async def send_json(send, status: int, obj, headers: dict | None = None) -> None:
    """A whole JSON response on a raw ASGI send."""
    data = json_bytes(obj)
    hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    for k, v in (headers or {}).items():
        hdrs.append((k.lower().encode(), str(v).encode()))
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": data, "more_body": False})


def _more(data: bytes) -> dict:
    return {"type": "http.response.body", "body": data, "more_body": True}


class CompletionResponse(Response):
    """Answers one completion, streaming or not. on_end(comp, status) runs once it is over,
    whatever the end ("200", "503", "499" where the client went away)."""

    def __init__(self, comp: Completion, config: ServeConfig, on_end: Callable[[Completion, str], None]):
        self.comp = comp
        self.config = config
        self.on_end = on_end
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
        listener = asyncio.ensure_future(self._listen(receive))
        status = "200"
        try:
            status = await (self._stream(send) if comp.req.stream else self._whole(send))
        except OSError:  # the connection broke while sending
            comp.disconnect()
            status = "499"
        finally:
            listener.cancel()
            if not comp.done:
                comp.disconnect()
            self.on_end(comp, status)

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
            await send_json(send, e.status, e.body())
            return "503"
        await send_json(send, 200, comp.body())
        return "200"

    async def _stream(self, send) -> str:
        comp = self.comp
        cfg = self.config
        head = (f'data: {{"id":"{comp.id}","object":"text_completion","created":{comp.created},'
                f'"model":{json.dumps(comp.model, ensure_ascii=False)},"choices":[').encode()
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})

        if comp.req.echo:
            parts = [head + json_bytes({"index": c.index, "text": c.prefix, "logprobs": None, "finish_reason": None})
                     + b"]}\n\n" for c in comp.choices]
            await send(_more(b"".join(parts)))
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
                parts.append(head + json_bytes({"index": c.index, "text": text, "logprobs": lp,
                                                "finish_reason": finish}) + b"]}\n\n")
            if comp.error is not None and not comp.done:
                e = ApiError(503, comp.error, code="unavailable")
                parts.append(b"data: " + json_bytes(e.body()) + b"\n\n")
                await send(_more(b"".join(parts)))
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return "503"
            if comp.done:
                if comp.req.include_usage:
                    parts.append(head + b"]," + b'"usage":' + json_bytes(comp.usage()) + b"}\n\n")
                parts.append(b"data: [DONE]\n\n")
                await send({"type": "http.response.body", "body": b"".join(parts), "more_body": False})
                return "200"
            if parts:
                started = True
                await send(_more(b"".join(parts)))
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
                        await send(_more(b": keep-alive\n\n"))
