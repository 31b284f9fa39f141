"""chargen.serve: `gen serve`, an HTTP server over the runtime's batched step.

Every active request is one slot of a chargen.runtime.batch.Batch, and one thread steps
them all in the same graph run (continuous batching). The HTTP face is OpenAI's
Completions API (POST /v1/completions, streaming or not), plus /v1/models, /health,
/metrics and a playground page at /.

Imports the runtime and the web stack (the `serve` extra: fastapi, uvicorn,
prometheus_client); never torch.

    from chargen.serve import create_app, run
    app = create_app(model)              # an ASGI app (FastAPI)
    run(model, host="127.0.0.1", port=8000)
"""

from __future__ import annotations

__all__ = ["create_app", "run", "ServeConfig"]


def __getattr__(name):
    if name in ("create_app", "ServeConfig"):
        from chargen.serve import app

        return getattr(app, name)
    if name == "run":
        from chargen.serve.server import run

        return run
    raise AttributeError(f"module 'chargen.serve' has no attribute {name!r}")
