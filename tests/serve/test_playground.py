"""The playground page (GET /) in a real headless browser: Debian's chromium and chromedriver
through selenium. Type a prompt, press Generate: the text appears, grows as it streams, and
ends as the same seeded completion the API gives."""

from __future__ import annotations

import time

import pytest

from servekit import complete

from browserkit import WATCH, chrome, fill, wait_for  # noqa: E402  (tests/browserkit.py)

pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402


@pytest.fixture(scope="module")
def browser():
    driver = chrome()
    yield driver
    driver.quit()


def output(driver) -> str:
    return driver.find_element(By.ID, "output").text


def seconds_of_text(url: str, seconds: float) -> int:
    """How many characters the server generates alone in about `seconds` (measured now, on this
    machine), so a stream lasts many of its flush intervals on a fast CPU as on a slow one."""
    start = time.perf_counter()
    complete(url, dict(prompt="A", max_tokens=20_000))
    rate = 20_000 / (time.perf_counter() - start)
    return int(min(max(rate * seconds, 3_000), 500_000))


def test_type_a_prompt_press_generate_and_the_text_streams_in(browser, server):
    browser.get(server.url + "/")
    assert browser.title == "chargen playground"
    wait_for(lambda: "engine" in browser.find_element(By.ID, "model").text, what="the model card")
    assert not browser.find_element(By.ID, "model_select").is_displayed()  # one model: no picker
    prompt, n, seed = "KING RICHARD:\n", seconds_of_text(server.url, 0.5), 12
    fill(browser, "prompt", prompt)
    fill(browser, "max_tokens", str(n))
    fill(browser, "temperature", "0.9")
    fill(browser, "top_k", "20")
    fill(browser, "seed", str(seed))
    browser.execute_script(WATCH)
    browser.find_element(By.ID, "generate").click()
    wait_for(lambda: "finished" in browser.find_element(By.ID, "stats").text, timeout=120, what="the end")
    stats = browser.find_element(By.ID, "stats").text
    assert "finished: length" in stats and "chars/s" in stats, stats
    # the text grew while it streamed: the page showed it at several lengths before the end
    seen = browser.execute_script("return window.seen")
    grown = sorted(set(l for l in seen if 0 < l < n))
    assert len(grown) >= 2, f"the text did not appear in steps: {seen[:20]}"
    want = complete(server.url, dict(prompt=prompt, max_tokens=n, temperature=0.9, top_k=20, seed=seed))
    text = output(browser)
    # the element's text as the browser renders it (trailing spaces of the last line aside)
    assert text.rstrip() == (prompt + want["choices"][0]["text"]).rstrip()
    assert f"{n} characters" in stats and browser.find_element(By.ID, "error").text == ""


def test_a_bad_request_shows_the_servers_message(browser, server):
    browser.get(server.url + "/")
    fill(browser, "prompt", "snow\u2603man")
    browser.find_element(By.ID, "generate").click()
    wait_for(lambda: browser.find_element(By.ID, "error").text, what="the error line")
    assert "\u2603" in browser.find_element(By.ID, "error").text
    assert browser.find_element(By.ID, "generate").is_enabled()


def test_pick_a_model_when_there_are_several(browser, two_models_server):
    from selenium.webdriver.support.ui import Select

    s = two_models_server
    browser.get(s.url + "/")
    wait_for(lambda: "engine" in browser.find_element(By.ID, "model").text, what="the model card")
    pick = Select(browser.find_element(By.ID, "model_select"))
    assert browser.find_element(By.ID, "model_select").is_displayed()
    assert [o.text for o in pick.options] == ["tiny", "q8"]
    assert browser.find_element(By.ID, "model").text.startswith("tiny: fp32")
    pick.select_by_value("q8")
    assert browser.find_element(By.ID, "model").text.startswith("q8: int8")
    body = dict(prompt="ROMEO: ", max_tokens=300, temperature=0.9, seed=4)
    fill(browser, "prompt", body["prompt"])
    fill(browser, "max_tokens", "300")
    fill(browser, "temperature", "0.9")
    fill(browser, "top_k", "0")
    fill(browser, "seed", "4")
    def requests_of(model):
        return s.metric("chargen_requests_total", missing=0, model=model, status="200")

    served = {m: requests_of(m) for m in ("tiny", "q8")}
    browser.find_element(By.ID, "generate").click()
    wait_for(lambda: "finished" in browser.find_element(By.ID, "stats").text, timeout=120, what="the end")
    # the page's request went to q8 (the server counts it there)...
    assert {m: requests_of(m) - served[m] for m in served} == {"tiny": 0, "q8": 1}
    # ...and shows q8's text for that seed
    want = complete(s.url, {**body, "model": "q8"})["choices"][0]["text"]
    assert output(browser).rstrip() == (body["prompt"] + want).rstrip()
