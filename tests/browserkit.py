"""Helpers of the tests that drive a real headless browser (Debian's chromium and chromedriver
through selenium): tests/serve/test_playground.py and tests/web/test_page.py.

    driver = chrome()                         # a headless chromium; quit() it when done
    fill(driver, "prompt", "ROMEO: ")
    driver.execute_script(WATCH)              # before the click: every change to #output is seen
    wait_for(lambda: ..., what="the text")    # the predicate's first true value, or AssertionError
"""

from __future__ import annotations

import os
import shutil
import time

import pytest

CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")

# Records the length of the generated text before every change the page makes to it (the pages
# append each streamed piece to one text node in #output): every step of the streaming is seen,
# however fast the machine, with no polling race.
WATCH = """
window.seen = [];
new MutationObserver(records => {
  for (const r of records) if (r.type === "characterData") window.seen.push(r.oldValue.length);
}).observe(document.getElementById("output"),
           {subtree: true, characterData: true, characterDataOldValue: true});
"""


def require(tool, what: str, install: str):
    """The tool's path; where it is missing, a failure in CI (env CI set), else a skip."""
    if tool is None:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set and {what} is missing: {install} (as .ci/run does)")
        pytest.skip(f"{what} is missing: {install}")
    return tool


def chrome(*args: str, performance_log: bool = False):
    """A headless chromium under chromedriver, with these extra command-line args."""
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = require(BROWSER, "chromium", "apt-get install chromium chromium-driver")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,900",
                *args):
        options.add_argument(arg)
    if performance_log:
        options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    return driver


def fill(driver, field: str, value: str) -> None:
    """Type value into the input of that id (cleared first)."""
    from selenium.webdriver.common.by import By

    box = driver.find_element(By.ID, field)
    box.clear()
    box.send_keys(value)


def wait_for(predicate, timeout: float = 60.0, what: str = ""):
    """The predicate's first true value, polled every 20 ms; AssertionError after timeout s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")
