"""The folder `gen web` writes, in a real headless browser (Debian's chromium and chromedriver
through selenium), served from 127.0.0.1 by Python's http.server as any static host would: the
page loads nothing from another origin, generates in the tab, streams, cancels, gives the text
`gen sample --engine chargen` gives, and says in one line what is wrong with a bad model file."""

from __future__ import annotations

import functools
import http.server
import json
import threading
import time

import pytest
from typer.testing import CliRunner

from webkit import gen_sample, printed

from chargen.cli import app

from browserkit import WATCH, chrome, fill, wait_for  # noqa: E402  (tests/browserkit.py)

pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402


class Site:
    """A folder served on 127.0.0.1 (a free port) by http.server, recording the paths asked for."""

    def __init__(self, folder):
        self.paths = []
        site = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args):
                site.paths.append(self.path)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(folder)))
        # a connection the browser opened and never used must not hold up stop()
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def gen_web(model, out):
    result = CliRunner().invoke(app, ["web", str(model), str(out)])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def site(tmp_path_factory, web_models):
    s = Site(gen_web(web_models["int8-2l"], tmp_path_factory.mktemp("site") / "out"))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def browser():
    # every host but 127.0.0.1 unreachable: the page must work offline
    driver = chrome("--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", performance_log=True)
    yield driver
    driver.quit()


def text(driver, field: str) -> str:
    return driver.execute_script("return document.getElementById(arguments[0]).textContent", field)


def open_page(driver, url):
    driver.get(url + "/index.html")
    ready = wait_for(lambda: driver.execute_script("return document.body.dataset.ready"), what="the model to load")
    return ready


def generate(driver, prompt: str, **fields) -> str:
    fill(driver, "prompt", prompt)
    for name, value in fields.items():
        fill(driver, name, str(value))
    driver.execute_script(WATCH)
    driver.find_element(By.ID, "generate").click()
    wait_for(lambda: "finished" in text(driver, "stats"), what="the end of the generation")
    return text(driver, "stats")


def test_the_page_loads_from_its_own_origin_only_and_greedy_text_is_gen_sample_s(browser, site, web_models):
    browser.get_log("performance")  # drop what came before
    assert open_page(browser, site.url) == "1", text(browser, "load_error")
    assert "chargen-wasm-int8" in text(browser, "model")
    stats = generate(browser, "ROMEO: ", max_length=500, temperature=0, seed="")
    assert "finished: length" in stats and "chars/s" in stats and "first after" in stats, stats
    want = gen_sample(web_models["int8-2l"], "ROMEO: ", 500, "--temperature", "0")
    assert printed("", text(browser, "output")) == want
    # every request the browser made (the page's and its worker's) went to the page's origin
    urls = [json.loads(e["message"])["message"]["params"].get("request", {}).get("url", "")
            for e in browser.get_log("performance")]
    urls = [u for u in urls if u and not u.startswith(("data:", "blob:"))]
    assert urls and all(u.startswith(site.url + "/") for u in urls), urls
    served = {p.split("?")[0] for p in site.paths}
    assert {"/index.html", "/chargen.js", "/worker.js", "/chargen.wasm", "/int8-2l.onnx"} <= served, served


def test_the_text_streams_in_pieces(browser, site):
    open_page(browser, site.url)
    n = 200_000  # far longer than a piece (the worker sends what it made in 25 ms), on any CPU
    stats = generate(browser, "A", max_length=n, temperature=1, seed="5")
    assert f"{n} characters" in stats, stats
    seen = browser.execute_script("return window.seen")  # the text's length before each piece
    grown = sorted(set(length for length in seen if 1 < length < n + 1))
    assert len(grown) >= 3, f"the text did not appear in pieces: {seen[:20]}"
    assert len(text(browser, "output")) == n + 1


def test_seeded_text_is_gen_sample_s(browser, site, web_models):
    open_page(browser, site.url)
    stats = generate(browser, "\n", max_length=400, temperature=0.8, top_k=20, seed="18446744073709551615")
    assert "finished: length" in stats, stats
    want = gen_sample(web_models["int8-2l"], "\n", 400, "--temperature", "0.8", "--top-k", "20",
                      "--seed", "18446744073709551615")
    assert printed("", text(browser, "output")) == want


def test_a_stop_string_ends_the_text(browser, site):
    open_page(browser, site.url)
    generate(browser, "A", max_length=300, seed="3", temperature=1)
    full = text(browser, "output")[1:]
    stop = full[30:32]
    stats = generate(browser, "A", max_length=300, seed="3", temperature=1, stop=stop)
    assert "finished: stop" in stats
    assert text(browser, "output") == "A" + full[: full.index(stop) + len(stop)]


def test_stop_cancels_the_generation_and_the_page_stays_usable(browser, site):
    open_page(browser, site.url)
    fill(browser, "prompt", "A")
    fill(browser, "max_length", "100000000")
    browser.execute_script(WATCH)
    browser.find_element(By.ID, "generate").click()
    wait_for(lambda: len(text(browser, "output")) > 50, what="some text")
    browser.find_element(By.ID, "stop_button").click()
    stats = wait_for(lambda: "finished" in text(browser, "stats") and text(browser, "stats"), what="the stop")
    assert "finished: stopped" in stats
    shown = text(browser, "output")
    time.sleep(0.3)
    assert text(browser, "output") == shown  # nothing more came
    assert len(shown) < 100_000_000
    # the page (and its worker) still generate after a cancel
    stats = generate(browser, "B", max_length=20, seed="1")
    assert "finished: length" in stats and len(text(browser, "output")) == 21


def test_a_bad_model_file_gets_a_clear_message_in_the_page(browser, tmp_path, web_models):
    folder = gen_web(web_models["int8"], tmp_path / "bad")
    (folder / "int8.onnx").write_bytes(web_models["int8"].read_bytes()[:5000])  # cut short
    s = Site(folder)
    try:
        assert open_page(browser, s.url) == "error"
        message = text(browser, "load_error")
        assert message.startswith("The model cannot run here: truncated or corrupt protobuf"), message
        assert not browser.find_element(By.ID, "generate").is_enabled()
    finally:
        s.stop()


def test_an_fp32_model_runs_on_onnxruntime_web_from_the_folder_with_gen_sample_s_greedy_text(
        browser, tmp_path, web_models, ort_web):
    from chargen.web import ORT_WEB_FILES

    result = CliRunner().invoke(app, ["web", str(web_models["fp32"]), str(tmp_path / "fp32"), "--onnxruntime-web",
                                      str(ort_web)])
    assert result.exit_code == 0, result.output
    s = Site(tmp_path / "fp32")
    try:
        browser.get_log("performance")
        assert open_page(browser, s.url) == "1", text(browser, "load_error")
        assert "onnxruntime-web-fp32" in text(browser, "model")
        stats = generate(browser, "ROMEO: ", max_length=300, temperature=0, seed="")
        assert "finished: length" in stats, stats
        want = gen_sample(web_models["fp32"], "ROMEO: ", 300, "--temperature", "0", engine="onnxruntime")
        assert printed("", text(browser, "output")) == want
        urls = [json.loads(e["message"])["message"]["params"].get("request", {}).get("url", "")
                for e in browser.get_log("performance")]
        assert all(u.startswith(s.url + "/") for u in urls if u and not u.startswith(("data:", "blob:"))), urls
        assert {"/" + f for f in ORT_WEB_FILES} <= {p.split("?")[0] for p in s.paths}
    finally:
        s.stop()


def test_the_module_loads_a_model_from_bytes_and_reports_unknown_characters(browser, site, web_models):
    open_page(browser, site.url)
    answer = browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        (async () => {
          const { load } = await import("./chargen.js");
          const bytes = await (await fetch(arguments[0])).arrayBuffer();
          const model = await load(new Uint8Array(bytes));
          const text = await model.generate("ROMEO: ", { temperature: 0, max_length: 200 }).text();
          let error = null;
          try { await model.generate("snow\\u2603man").text(); } catch (e) { error = e.message; }
          const skipped = await model.generate("snow\\u2603man", { seed: 2, max_length: 5 }, "skip").text();
          model.dispose();
          return { text, error, skipped, engine: model.info.engine };
        })().then(done, e => done({ failed: e.message }));
    """, "int8-2l.onnx")
    assert "failed" not in answer, answer
    assert answer["engine"] == "chargen-wasm-int8"
    assert printed("ROMEO: ", answer["text"]) == gen_sample(web_models["int8-2l"], "ROMEO: ", 200, "--temperature", "0")
    assert "not in the model's vocabulary" in answer["error"] and "\u2603" in answer["error"]
    assert len(answer["skipped"]) == 5


def test_gen_serve_offers_the_same_page_at_web(browser, web_models, tmp_path):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("servekit", Path(__file__).parents[1] / "serve" / "servekit.py")
    servekit = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(servekit)
    server = servekit.ServerProcess(web_models["int8-2l"], log=tmp_path / "serve.log")
    try:
        browser.get(server.url + "/web/")
        wait_for(lambda: browser.execute_script("return document.body.dataset.ready"), what="the model to load")
        assert "chargen-wasm-int8" in text(browser, "model"), text(browser, "load_error")
        stats = generate(browser, "ROMEO: ", max_length=300, temperature=0, seed="")
        assert "finished: length" in stats
        want = gen_sample(web_models["int8-2l"], "ROMEO: ", 300, "--temperature", "0")
        assert printed("", text(browser, "output")) == want
    finally:
        server.stop()
