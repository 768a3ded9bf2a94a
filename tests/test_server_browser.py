"""The web page end to end in a real headless browser (issue 18): Debian's chromium driven by
selenium uploads a recording, waits for the ranked list, checks the top piece, that the passage is
boxed on the page image and that the marker follows the recording, and saves a screenshot
(``$AUDIOSHEET_SCREENSHOT`` names a copy to keep, e.g. docs/img/serve.png).

Skipped, with the reason, where selenium or the browser (``apt-get install chromium
chromium-driver``; ``make test`` installs them where apt is available) is missing. Nothing is
downloaded: selenium is pointed at the system's chromedriver."""
from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the 'serve' extra is not installed (pip install 'audiosheet[serve]')")
pytest.importorskip("selenium", reason="selenium is not installed (pip install selenium)")
BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
if not (BROWSER and DRIVER):
    pytest.skip("no system chromium + chromedriver (apt-get install chromium chromium-driver)",
                allow_module_level=True)

import uvicorn  # noqa: E402
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from audiosheet.retrieval.collection import Collection  # noqa: E402
from audiosheet.server.app import create_app  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(files, tmp_path_factory):
    db = tmp_path_factory.mktemp("browser") / "db"
    Collection(db).add([files / "sheets"], progress=False)
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(db), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(300):
        if srv.started:
            break
        time.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = BROWSER
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000", "--autoplay-policy=no-user-gesture-required"):
        opts.add_argument(arg)
    try:
        driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    except Exception as exc:  # a browser that cannot start here (no display libraries, ...)
        pytest.skip(f"chromium does not start here: {str(exc).splitlines()[0]}")
    yield driver
    driver.quit()


def test_upload_shows_the_piece_the_passage_and_follows_the_recording(server, browser, files, tmp_path):
    piece = sorted((files / "sheets").glob("*.pdf"))[2].stem
    browser.get(server + "/")
    WebDriverWait(browser, 30).until(lambda d: "items" in d.find_element(By.ID, "status").text)
    browser.find_element(By.ID, "file").send_keys(str(files / "audio" / f"{piece}.flac"))
    WebDriverWait(browser, 120).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#results li"))
    first = browser.find_element(By.CSS_SELECTOR, "#results li .piece").text
    assert first == piece
    assert not browser.find_element(By.ID, "error").is_displayed()
    # the page image of the matched score, with the passage boxed
    WebDriverWait(browser, 30).until(lambda d: d.execute_script(
        "const i = document.getElementById('pageimg'); return i.complete && i.naturalWidth > 0"))
    box = browser.execute_script(
        "const p = document.querySelector('#overlay polygon.passage'); if (!p) return null;"
        "const r = p.getBoundingClientRect(); return [r.width, r.height]")
    assert box and box[0] > 20 and box[1] > 10
    # the marker follows the recording: at two times it is drawn at two places, left to right
    xs = []
    for t in (1.0, 6.0):
        browser.execute_script(
            "const a = document.getElementById('player'); a.currentTime = arguments[0];"
            "a.dispatchEvent(new Event('timeupdate'))", t)
        WebDriverWait(browser, 20).until(lambda d: d.execute_script(
            "const m = document.getElementById('marker'); return m && m.style.display !== 'none'"))
        xs.append(float(browser.find_element(By.ID, "marker").get_attribute("x1")))
    assert xs[1] > xs[0]
    shot = tmp_path / "serve.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    keep = os.environ.get("AUDIOSHEET_SCREENSHOT")
    if keep:
        Path(keep).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, keep)
