"""The built site in a real browser: Debian's headless Chromium, driven through chromedriver by Selenium.

The site is served from 127.0.0.1 on a free port for the length of the test.
It takes screenshots of the index and of one API page (written to
``docs/_build/screenshots/``), fails on any message the browser's console
logs at the error level, and searches for ``unroll``.

Needs ``apt-get install chromium chromium-driver`` (``/usr/bin/chromium``,
``/usr/bin/chromedriver``) and the ``docs`` extra (Selenium).
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import pathlib
import shutil
import tempfile
import threading

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SITE = pathlib.Path(os.environ.get("SCANRNN_SITE", ROOT / "docs" / "_build" / "html"))
SHOTS = SITE.parent / "screenshots"
CHROMIUM = os.environ.get("SCANRNN_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("SCANRNN_CHROMEDRIVER", "/usr/bin/chromedriver")
API_PAGE = "api/generated/scanrnn.state_space.lru.html"  # equations in its docstring
TIMEOUT = 30  # seconds for any one page or wait

for needed in (SITE / "index.html", pathlib.Path(CHROMIUM), pathlib.Path(CHROMEDRIVER)):
    if not needed.exists():
        pytest.fail(f"{needed} is missing: build the site and apt-get install chromium chromium-driver", pytrace=False)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serve(folder: pathlib.Path):
    """``http://127.0.0.1:PORT/`` serving ``folder`` from a thread, shut down on exit."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(TIMEOUT)


@contextlib.contextmanager
def chromium():
    """A headless Chromium with a fresh profile, quit (and its profile removed) on exit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="scanrnn-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # The network is closed: no background connections, no component updates.
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,900", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(TIMEOUT)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def console_errors(driver) -> list:
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def test_the_site_in_chromium():
    from selenium.webdriver.support.ui import WebDriverWait

    SHOTS.mkdir(parents=True, exist_ok=True)
    with serve(SITE) as url, chromium() as driver:
        errors = {}
        for name, page in (("index", "index.html"), ("api", API_PAGE)):
            driver.get(url + page)
            WebDriverWait(driver, TIMEOUT).until(lambda d: d.execute_script("return document.readyState") == "complete")
            assert "scanrnn" in driver.title, driver.title
            if name == "api":
                # The equations render as MathML, and the signature is there.
                assert driver.find_elements("css selector", "math"), "no MathML on the API page"
                assert driver.find_elements("css selector", "dt.sig"), "no signature on the API page"
            driver.save_screenshot(str(SHOTS / f"{name}.png"))
            errors[page] = console_errors(driver)

        driver.get(url + "search.html?q=unroll")
        WebDriverWait(driver, TIMEOUT).until(
            lambda d: d.execute_script("return document.querySelectorAll('#search-results li').length") > 0)
        results = driver.execute_script(
            "return Array.from(document.querySelectorAll('#search-results li a')).map(a => a.textContent)")
        driver.save_screenshot(str(SHOTS / "search.png"))
        errors["search.html"] = console_errors(driver)

    assert any("unroll" in text for text in results), results[:10]
    assert not any(errors.values()), f"console errors: {errors}"
    for name in ("index", "api", "search"):
        assert (SHOTS / f"{name}.png").stat().st_size > 10_000
