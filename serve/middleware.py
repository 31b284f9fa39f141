"""The ASGI middleware of the app: the API key (--api-key) and CORS (--cors-origin).

    FastAPI(middleware=middleware(config))

CORS is outermost, so a page on an allowed origin can read a 401 too.
"""

from __future__ import annotations

import hmac

from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

from chargen.serve.config import ServeConfig
from chargen.serve.protocol import ApiError
from chargen.serve.responses import send_json

# the headers the official JavaScript client (openai-node) sends from a browser
CORS_HEADERS = ("authorization", "content-type", "accept", "openai-organization", "openai-project",
                "openai-beta", "x-stainless-*", "openai-*")


def middleware(config: ServeConfig) -> list[Middleware]:
    out = []
    if config.cors_origins:
        plain = [h for h in CORS_HEADERS if not h.endswith("*")]
        out.append(Middleware(
            PatternCORSMiddleware, allow_origins=list(config.cors_origins), allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=plain, allow_header_patterns=[h for h in CORS_HEADERS if h.endswith("*")],
            expose_headers=["retry-after"], max_age=600,
        ))
    out.append(Middleware(AuthMiddleware, api_key=config.api_key))
    return out


class AuthMiddleware:
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
                    await send_json(send, 401, e.body(), e.headers)
                    return
        await self.app(scope, receive, send)


class PatternCORSMiddleware(CORSMiddleware):
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
