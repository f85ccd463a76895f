"""`animator ui` end to end in a real headless browser: Debian's chromium and chromedriver through selenium.

The browser test starts `animator ui` as a separate process on a free port with the tiny weights home, uploads
a real photo and a short clip, renders, and checks the video the page serves. It is skipped, saying why, when
gradio, selenium, chromium or chromedriver is missing (`.ci/run` installs them). Its screenshot is kept under
tests/artifacts/ (or $ANIMATOR_TEST_ARTIFACTS).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from media import clip_with_audio

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
ARTIFACTS = Path(os.environ.get("ANIMATOR_TEST_ARTIFACTS") or Path(__file__).parent / "artifacts")
CLOSED_NETWORK_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        "--disable-dev-shm-usage", "--window-size=1280,1500")
WAIT = 300  # seconds; a CPU render of the tiny models takes a few


def _browser_missing() -> str | None:
    for module, extra in (("gradio", 'pip install -e ".[ui]"'), ("selenium", 'pip install -e ".[ui,test]"')):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed ({extra})"
    if not (CHROMIUM and CHROMEDRIVER):
        return "no headless browser: install Debian's chromium and chromium-driver (apt-get install -y chromium " \
               "chromium-driver)"
    return None


browser_test = pytest.mark.skipif(_browser_missing() is not None, reason=str(_browser_missing()))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def server(tiny_home, tmp_path):
    """`animator ui` in its own process; yields (url, its TMPDIR). Stopped with SIGTERM, which must clean up."""
    port, tmp = _free_port(), tmp_path / "server-tmp"
    tmp.mkdir()
    env = {**os.environ, "ANIMATOR_CACHE": str(tmp_path / "cache"), "TMPDIR": str(tmp),
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115 — closed below, after the process
    process = subprocess.Popen([sys.executable, "-m", "animator_cli", "--weights", str(tiny_home.root), "--device",
                                "cpu", "ui", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                pytest.fail(f"animator ui exited with {process.returncode}: {(tmp_path / 'server.log').read_text()}")
            try:
                urllib.request.urlopen(url, timeout=5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("animator ui did not start within 120 s")
                time.sleep(0.5)
        yield url, tmp
    finally:
        process.terminate()
        process.wait(60)
        log.close()
    assert process.returncode == 0, (tmp_path / "server.log").read_text()
    assert not list(tmp.glob("animator-ui-*")), "the server left its upload folder behind"


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # selenium-manager must not look for a browser download
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CLOSED_NETWORK_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


class Page:
    """The few interactions the test needs, by the elem_ids of animator_cli/ui/page.py."""

    def __init__(self, driver, url: str) -> None:
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver, self.wait = driver, WebDriverWait(driver, WAIT)
        driver.get(url)
        self.find("#generate")

    def find(self, css: str):
        from selenium.webdriver.common.by import By

        return self.wait.until(lambda d: d.find_element(By.CSS_SELECTOR, css))

    def upload(self, elem_id: str, path: Path) -> None:
        self.find(f"#{elem_id} input[type=file]").send_keys(str(path))

    def clear(self, elem_id: str) -> None:
        self.find(f"#{elem_id} button[aria-label='Clear']").click()

    def type_number(self, elem_id: str, value: int) -> None:
        field = self.find(f"#{elem_id} input[type=number]")
        field.clear()
        field.send_keys(str(value))

    def status_after_click(self, expect: str) -> str:
        """Press Generate; the status text once it has changed and holds ``expect``."""
        note = "#status .note"  # the message itself, not the progress bar drawn over it
        before = self.driver.execute_script(f"return document.querySelector('{note}')?.textContent ?? ''")
        self.find("#generate").click()
        self.wait.until(lambda d: (text := self.find(note).text) != before and expect in text)
        return self.find(note).text


@browser_test
def test_ui_renders_in_a_browser_and_survives_a_bad_upload(server, browser, tmp_path, astronaut_path):
    from animator_cli.video import probe

    url, _ = server
    clip = clip_with_audio(tmp_path / "driving.mp4", frames=8, fps=10)
    not_a_video = tmp_path / "notes.mp4"
    not_a_video.write_text("this is a text file, not a video\n")

    page = Page(browser, url)
    page.upload("reference", astronaut_path)
    page.find("#advanced button").click()  # open the collapsed group
    page.type_number("width", 64)
    page.type_number("height", 64)
    page.type_number("steps", 1)

    page.upload("driving", not_a_video)
    error = page.status_after_click("error:")
    assert "notes.mp4" in error and "Traceback" not in error

    page.clear("driving")
    page.upload("driving", clip)
    status = page.status_after_click("Done:")
    assert "8 frames, 64×64 at 10 fps, with the driving video's audio" in status
    source = page.wait.until(lambda d: page.find("#result video").get_attribute("src"))
    rendered = tmp_path / "rendered.mp4"
    with urllib.request.urlopen(source, timeout=60) as response:
        rendered.write_bytes(response.read())
    info = probe(rendered)
    assert (info.frame_count, info.width, info.height, info.has_audio) == (8, 64, 64, True)

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "ui.png"))

    assert "from the cache" in page.status_after_click("Done:")
