"""The HTTP app: OpenAI's Completions API (POST /v1/completions), /v1/models, /health, /metrics
and the playground page, with every error in OpenAI's shape.

    app = create_app(model, ServeConfig(max_batch=64, api_key="..."))     # one model
    app = create_app({"tiny": fp32_model, "q8": int8_model})             # several, by served name

The work is elsewhere: serving.py (requests -> the models' batches -> responses),
responses.py (JSON and SSE), middleware.py (API key, CORS), protocol.py (the API's shapes).
"""

from __future__ import annotations

import json
import logging
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import HTMLResponse, JSONResponse, Response

from chargen.serve.config import ServeConfig, check_name
from chargen.serve.middleware import middleware
from chargen.serve.protocol import ApiError, not_a_chat_model
from chargen.serve.responses import CompletionResponse
from chargen.serve.serving import Serving, read_body

log = logging.getLogger("chargen.serve")

__all__ = ["create_app", "ServeConfig"]


def _error_response(e: ApiError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status, headers=e.headers)


def served_models(models, config: ServeConfig) -> list[tuple[str, object]]:
    """(name, Model) pairs from a Model (named config.model_id or its file's stem), a mapping
    of name -> Model, or (name, Model) pairs."""
    if hasattr(models, "vocab"):  # one Model
        return [(config.model_id or Path(str(models.path)).stem, models)]
    pairs = list(models.items()) if hasattr(models, "items") else list(models)
    for name, _ in pairs:
        check_name(name)
    return pairs


def create_app(models, config: ServeConfig | None = None) -> FastAPI:
    """The ASGI app serving `models`: a loaded chargen.runtime.Model, or several by name (a
    dict or (name, Model) pairs; the first is the default of requests that name none)."""
    config = config or ServeConfig()
    serving = Serving(served_models(models, config), config)

    @asynccontextmanager
    async def lifespan(app):
        serving.start()
        try:
            yield
        finally:
            serving.close()

    app = FastAPI(title="chargen", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan,
                  middleware=middleware(config))
    app.state.chargen = serving

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
            comp = await serving.prepare(request)
        except ApiError as e:
            return _error_response(e)
        except ClientDisconnect:
            serving.metrics.request("499")
            return Response(status_code=400)
        return CompletionResponse(comp, config, serving.finished)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        name = None
        try:  # the model named, for the message; whatever the body, the answer is the same
            body = json.loads(await read_body(request, config.max_body))
            name = body.get("model") if isinstance(body, dict) else None
        except (ApiError, ClientDisconnect, ValueError, UnicodeDecodeError):
            pass
        raise not_a_chat_model(name, list(serving.models))

    @app.get("/v1/models")
    async def models_list():
        return {"object": "list", "data": [m.card() for m in serving.models.values()]}

    @app.get("/v1/models/{model_id:path}")
    async def model_card(model_id: str):
        return serving.model(model_id).card()

    @app.get("/health")
    async def health():
        body, ok = serving.health()
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics")
    async def metrics():
        return Response(serving.metrics.render(), media_type=serving.metrics.content_type)

    page = _playground()

    @app.get("/")
    async def playground():
        return HTMLResponse(page)

    # gen web's in-browser page beside the server-backed one (GET /web/): for the first model,
    # where the page runs it on chargen.wasm (int8, --int8-kernel dynamic), and only without an
    # API key, since the page hands the model file itself to the browser
    web = _web_files(serving.default.model) if config.api_key is None else {}
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


def _playground() -> str:
    try:
        return (resources.files("chargen.serve") / "static" / "playground.html").read_text(encoding="utf-8")
    except (FileNotFoundError, OSError):
        return ("<!doctype html><html><head><meta charset='utf-8'><title>chargen</title></head><body>"
                "<h1>chargen</h1><p>The playground page is not installed. The API: POST /v1/completions, "
                "GET /v1/models, GET /health, GET /metrics.</p></body></html>")
