"""`animator ui`: the session's library calls, the command's errors, and the page end to end in a real headless
browser (Debian's chromium and chromedriver through selenium).

The browser test starts `animator ui` as a separate process on a free port with the tiny weights home, a sign-in
(--auth) and a 1 MB upload cap; it checks that nothing is served before signing in, signs in, has an oversized
upload refused, uploads a real photo and a short clip, renders, and checks the video the page serves (and that
it is refused without the sign-in's cookie). It is skipped, saying why, when
gradio, selenium, chromium or chromedriver is missing (`.ci/run` installs them). Its screenshot is kept under
tests/artifacts/ (or $ANIMATOR_TEST_ARTIFACTS).
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from media import clip_with_audio
from test_generate import _skeletons

from animator_cli.cache import StageCache
from animator_cli.errors import InputError
from animator_cli.options import Runtime
from animator_cli.ui.session import RenderSettings, UiSession, error_text
from animator_cli.video import iter_frames, load_image, probe
from animator_cli.weights.home import WeightsHome

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
ARTIFACTS = Path(os.environ.get("ANIMATOR_TEST_ARTIFACTS") or Path(__file__).parent / "artifacts")
CLOSED_NETWORK_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        "--disable-dev-shm-usage", "--window-size=1280,1500")
WAIT = 300  # seconds; a CPU render of the tiny models takes a few
USER, PASSWORD, MAX_UPLOAD_MB = "tester", "pw:4-the-test", 1


def _browser_missing() -> str | None:
    for module, extra in (("gradio", 'pip install -e ".[ui]"'), ("selenium", 'pip install -e ".[ui,test]"')):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed ({extra})"
    if not (CHROMIUM and CHROMEDRIVER):
        return "no headless browser: install Debian's chromium and chromium-driver (apt-get install -y chromium " \
               "chromium-driver)"
    return None


browser_test = pytest.mark.skipif(_browser_missing() is not None, reason=str(_browser_missing()))
needs_gradio = pytest.mark.skipif(importlib.util.find_spec("gradio") is None,
                                  reason='gradio is not installed (pip install -e ".[ui]")')
FAST = {"width": 64, "height": 64, "steps": 2}


def test_page_defaults_are_the_cli_defaults():
    from animator_cli.cli.generate_cmd import animate

    cli_defaults = inspect.signature(animate).parameters
    page = RenderSettings()
    for name in page.__dataclass_fields__:
        assert getattr(page, name) == cli_defaults[name].default, name


@needs_gradio
def test_page_widgets_start_at_the_defaults_and_zero_means_unset():
    from animator_cli.ui.page import AUTO_DTYPE, _settings

    shown = {**RenderSettings().__dict__, "width": 0, "height": 0, "max_frames": 0, "dtype": AUTO_DTYPE}
    assert _settings(shown) == RenderSettings()
    assert _settings({**shown, "width": 64.0, "max_frames": 5}) == RenderSettings(width=64, max_frames=5)


def test_session_renders_a_pose_folder_like_the_cli_with_progress_then_from_cache(cli, tiny_home, tmp_path,
                                                                                 astronaut_path):
    folder, work = _skeletons(tmp_path / "poses", 3), tmp_path / "work"
    uploads = []  # Gradio keeps each uploaded file (of a folder, too) in a folder of its own, here work/uploads
    for index, file in enumerate([astronaut_path, *sorted(folder.iterdir())]):
        (work / "uploads" / str(index)).mkdir(parents=True)
        uploads.append(Path(shutil.copy(file, work / "uploads" / str(index))))
    reference = uploads.pop(0)
    session = UiSession(tiny_home, StageCache(tmp_path / "ui-cache"), work, device="cpu")
    poses = session.pose_folder(uploads)
    assert sorted(p.name for p in poses.iterdir()) == sorted(p.name for p in folder.iterdir())
    assert load_image(session.pose_preview(poses)).shape == (96, 3 * 64, 3)  # three frames side by side

    stages, swept = [], []

    def progress(*stage):  # a sweep in the middle of the render, as if it ran for hours, spares what it uses
        stages.append(stage)
        swept.extend(session.files.sweep(time.time() + 24 * 3600))
        assert reference.is_file() and poses.is_dir()

    settings = RenderSettings(**FAST)
    result = session.render(reference, settings, poses=poses, progress=progress)
    assert stages == [("poses, identity and models", None, None), ("denoising", 1, 2), ("writing the video", 2, 2)]
    assert {p.parent.name for p in swept} == {"uploads", "previews"}  # the pose upload, once gathered
    assert (result.frames, result.width, result.height, result.fps, result.cached) == (3, 64, 64, 12.0, False)
    assert result.output.is_relative_to(work)

    # The same video as `animator generate` renders from scratch (the CLI's cache is another folder).
    out = tmp_path / "cli.mp4"
    assert cli("--weights", tiny_home.root, "--device", "cpu", "generate", astronaut_path, folder, "-o", out,
               "--width", 64, "--height", 64, "--steps", 2).exit_code == 0
    np.testing.assert_array_equal(np.stack(list(iter_frames(result.output))), np.stack(list(iter_frames(out))))

    models = session.pipeline(Runtime(device="cpu"))
    stages.clear()
    again = session.render(reference, settings, poses=poses, progress=lambda *s: stages.append(s))
    assert again.cached and stages == [("poses, identity and models", None, None)]
    assert session.pipeline(Runtime(device="cpu")) is models  # kept for the next press
    assert session.files.sweep(time.time() + 1800) == []  # used within the hour
    session.files.sweep(time.time() + 24 * 3600)
    assert not [p for p in work.rglob("*") if p.is_file()]  # everything the session held, gone


def test_session_errors_are_the_cli_line(cli, tiny_home, tmp_path, astronaut_path):
    session = UiSession(tiny_home, StageCache(tmp_path / "cache"), tmp_path / "work")
    notes = tmp_path / "notes.txt"
    notes.write_text("not a pose frame")
    with pytest.raises(InputError) as caught:
        session.pose_folder([notes])
    gathered = next((tmp_path / "work" / "poses").iterdir())  # the upload, gathered: no frame in it
    (empty := tmp_path / "empty").mkdir()
    line = cli("--weights", tiny_home.root, "generate", astronaut_path, empty, "-o", tmp_path / "o.mp4").stderr
    assert f"error: {error_text(caught.value)}".replace(str(gathered), "FOLDER") == \
        line.strip().replace(str(empty), "FOLDER")
    with pytest.raises(InputError, match="give either a driving video or a pose folder \\(upload one of them\\)"):
        session.render(astronaut_path, RenderSettings())
    assert error_text(RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"), "cuda:1").startswith(
        "out of memory on cuda:1 (try fewer frames")
    assert error_text(ValueError("boom")) == "internal error: ValueError: boom"


@needs_gradio
def test_missing_weights_are_named_with_their_fix_and_generate_is_disabled(tmp_path, tiny_home):
    from animator_cli.ui.page import build_page, weights_note

    empty = UiSession(WeightsHome(tmp_path / "empty"), StageCache(tmp_path / "cache"), tmp_path / "work")
    text = weights_note(empty)
    for name in ("SVD (stable-video-diffusion-img2vid-xt)", "StableAnimator checkpoints", "antelopev2 (insightface)",
                 "animator weights download --only svd --only animation --only antelopev2",
                 "ANIMATOR_HOME"):
        assert name in text
    assert "DWPose" not in text  # optional: MediaPipe stands in
    generate = [b for b in build_page(empty).blocks.values() if getattr(b, "elem_id", None) == "generate"]
    assert generate[0].interactive is False
    assert weights_note(UiSession(tiny_home, StageCache(tmp_path / "cache"), tmp_path / "work")) == ""


def test_ui_without_gradio_is_a_one_line_usage_error(cli, monkeypatch, gradio_env):
    from animator_cli.ui.server import import_gradio

    monkeypatch.setitem(sys.modules, "gradio", None)  # what an install without the [ui] extra sees
    with pytest.raises(InputError) as caught:
        import_gradio()
    assert str(caught.value) == ("`animator ui` needs gradio, which cannot be imported (import of gradio halted; "
                                 'None in sys.modules) (install the web page\'s extra: pip install -e ".[ui]")')
    result = cli("ui")
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("error: `animator ui` needs gradio") and "pip install -e" in result.stderr


@needs_gradio
def test_ui_on_a_busy_port_is_a_usage_error(cli, tiny_home, gradio_env):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = cli("--weights", tiny_home.root, "ui", "--port", port)
    assert result.exit_code == 2
    assert f"error: cannot serve on 127.0.0.1:{port}" in result.stderr and "Traceback" not in result.stderr


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
                                "cpu", "ui", "--port", str(port), "--auth", f"{USER}:{PASSWORD}", "--max-upload-mb",
                                str(MAX_UPLOAD_MB)], env=env, stdout=log, stderr=subprocess.STDOUT)
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

    def find(self, css: str):
        from selenium.webdriver.common.by import By

        return self.wait.until(lambda d: d.find_element(By.CSS_SELECTOR, css))

    def sign_in(self, user: str, password: str) -> None:
        """Fill in and send Gradio's sign-in form; asserts that nothing of the page shows before."""
        for css, value in (("input[type=text]", user), ("input[type=password]", password)):
            field = self.find(css)
            field.clear()
            field.send_keys(value)
        assert not self.driver.find_elements("css selector", "#generate")
        self.find("button").click()

    def cookie(self) -> str:
        return "; ".join(f"{c['name']}={c['value']}" for c in self.driver.get_cookies())

    def text_appears(self, text: str) -> None:
        self.wait.until(lambda d: text in d.find_element("tag name", "body").text)

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


def _fetch(url: str, cookie: str | None = None, data: bytes | None = None, content_type: str | None = None) -> int:
    """The HTTP status of a GET (or a POST of ``data``), with the browser's sign-in ``cookie`` or none."""
    headers = {k: v for k, v in (("Cookie", cookie), ("Content-Type", content_type)) if v}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data, headers), timeout=60) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _multipart(name: str, content: bytes) -> tuple[bytes, str]:
    boundary = "animator-test-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{name}\"\r\n"
            f"Content-Type: video/mp4\r\n\r\n").encode() + content + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


@browser_test
def test_ui_signs_in_renders_in_a_browser_and_survives_bad_uploads(server, browser, cli, tiny_home, tmp_path,
                                                                   astronaut_path):
    url, server_tmp = server
    clip = clip_with_audio(tmp_path / "driving.mp4", frames=8, fps=10)
    not_a_video = tmp_path / "notes.mp4"
    not_a_video.write_text("this is a text file, not a video\n")
    too_large = tmp_path / "large.mp4"
    too_large.write_bytes(np.random.default_rng(0).bytes(MAX_UPLOAD_MB * 2**20 + 1))

    assert _fetch(url + "config") == 401  # the page's description, like every file, needs the sign-in
    page = Page(browser, url)
    page.sign_in(USER, PASSWORD + "x")  # a wrong password leaves the sign-in form
    page.text_appears("Incorrect Credentials")
    page.sign_in(USER, PASSWORD)
    page.find("#generate")
    page.text_appears(f"Files up to {MAX_UPLOAD_MB} MB each")

    page.upload("driving", too_large)  # refused on the page, and by the server whatever the page does
    page.text_appears(f'exceed the maximum allowed size of {MAX_UPLOAD_MB}.0 Mb: "large.mp4"')
    body, kind = _multipart("large.mp4", too_large.read_bytes())
    assert _fetch(url + "gradio_api/upload", page.cookie(), body, kind) == 413
    assert not [p for p in server_tmp.rglob("*") if p.is_file() and p.stat().st_size > MAX_UPLOAD_MB * 2**20]

    page.upload("reference", astronaut_path)
    page.find("#advanced button").click()  # open the collapsed group
    page.type_number("width", 64)
    page.type_number("height", 64)
    page.type_number("steps", 1)

    page.upload("driving", not_a_video)
    error = page.status_after_click("error:")
    cli_line = cli("--weights", tiny_home.root, "animate", astronaut_path, not_a_video, "-o", tmp_path / "o.mp4")
    assert cli_line.exit_code == 2
    cli_error = cli_line.stderr.strip().splitlines()[-1]  # after the log lines
    assert re.sub(r"\S*/notes\.mp4", "notes.mp4", error) == cli_error.replace(str(not_a_video), "notes.mp4")

    page.clear("driving")
    page.upload("driving", clip)
    status = page.status_after_click("Done:")
    assert "8 frames, 64×64 at 10 fps, with the driving video's audio" in status
    source = page.wait.until(lambda d: page.find("#result video").get_attribute("src"))
    rendered = tmp_path / "rendered.mp4"
    assert _fetch(source) in (401, 403)  # no file without the sign-in
    with urllib.request.urlopen(urllib.request.Request(source, headers={"Cookie": page.cookie()}),
                                timeout=60) as response:
        rendered.write_bytes(response.read())
    info = probe(rendered)
    assert (info.frame_count, info.width, info.height, info.has_audio) == (8, 64, 64, True)

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "ui.png"))

    assert "from the cache" in page.status_after_click("Done:")
