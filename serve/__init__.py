"""chargen.serve: `gen serve`, an HTTP server over the runtime's batched step.

Every active request is one slot of a chargen.runtime.batch.Batch, and one thread steps all
the slots of a model in the same graph run (continuous batching); several models are served
side by side, each with its own Batch and thread, and a request picks one by `model`. The HTTP
face is OpenAI's Completions API (POST /v1/completions, streaming or not), plus /v1/models,
/health, /metrics and a playground page at /.

Imports the runtime and the web stack (the `serve` extra: fastapi, uvicorn,
prometheus_client); never torch.

    from chargen.serve import create_app, run
    app = create_app(model)              # an ASGI app (FastAPI)
    run(model, host="127.0.0.1", port=8000)
    run({"tiny": model, "q8": int8_model}, ServeConfig(max_batch=32))   # several models, by name

    config.py     ServeConfig (checked limits), the served models' names
    protocol.py   OpenAI's API: the request that checks itself, errors, response bodies
    stops.py      stop strings in a stream: hold_back, strip_stop
    completion.py one request as its choices arrive (one scheduler Job per choice)
    serving.py    the served models (a Batch and stepping thread each), admission, drain, health
    scheduler.py  the stepping thread of one model's Batch
    responses.py  the HTTP answer: JSON, or Server-Sent Events; disconnects
    middleware.py the API key, CORS
    app.py        the routes and error handlers
    metrics.py    Prometheus, labelled by model
    server.py     uvicorn, SIGTERM's drain
"""

from __future__ import annotations

__all__ = ["create_app", "run", "ServeConfig"]


def __getattr__(name):
    if name == "create_app":
        from chargen.serve.app import create_app

        return create_app
    if name == "ServeConfig":
        from chargen.serve.config import ServeConfig

        return ServeConfig
    if name == "run":
        from chargen.serve.server import run

        return run
    raise AttributeError(f"module 'chargen.serve' has no attribute {name!r}")
