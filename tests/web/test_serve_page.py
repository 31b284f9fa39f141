"""gen serve offers gen web's in-browser page at /web/ beside its own playground: for int8
(dynamic) models, and never with an API key (the page hands out the model file)."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from chargen.runtime import Model  # noqa: E402
from chargen.serve.app import ServeConfig, create_app  # noqa: E402
from chargen.web import STATIC  # noqa: E402


def client(path, **config):
    return TestClient(create_app(Model.load(path, engine="chargen" if "int8" in path.name else "auto",
                                            threads=1), ServeConfig(**config)))


def test_an_int8_model_gets_the_in_browser_page(web_models):
    path = web_models["int8"]
    with client(path) as c:
        page = c.get("/web/")
        assert page.status_code == 200 and 'data-model="int8.onnx"' in page.text
        wasm = c.get("/web/chargen.wasm")
        assert wasm.content == (STATIC / "chargen.wasm").read_bytes()
        assert wasm.headers["content-type"] == "application/wasm"
        assert c.get("/web/chargen.js").headers["content-type"].startswith("text/javascript")
        assert c.get("/web/int8.onnx").content == path.read_bytes()
        assert c.get("/web/secrets.txt").status_code == 404
        assert c.get("/").status_code == 200  # the server-backed playground stays


@pytest.mark.parametrize("which,config", [("fp32", {}), ("int8", {"api_key": "k"})])
def test_no_page_for_fp32_or_behind_an_api_key(web_models, which, config):
    with client(web_models[which], **config) as c:
        assert c.get("/web/").status_code == 404
        assert c.get(f"/web/{which}.onnx").status_code == 404
