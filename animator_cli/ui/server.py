"""Serving the page: Gradio imported on demand, no telemetry, a sign-in off this machine (`access`), uploads capped
per file, uploads and outputs in a folder swept of old work while serving (`workfolder`) and removed on exit."""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

from animator_cli.cache import StageCache
from animator_cli.errors import InputError
from animator_cli.ui import KEEP_MINUTES, MAX_UPLOAD_MB
from animator_cli.ui.access import Access, decide_access
from animator_cli.weights.home import WeightsHome

log = logging.getLogger("animator")
INSTALL_HINT = 'install the web page\'s extra: pip install -e ".[ui]"'
SIGN_IN_MESSAGE = "Sign in with the user and password animator ui printed when it started, or those given to --auth."


def import_gradio() -> None:
    """Import Gradio with its telemetry and version check off; an InputError naming the extra when missing."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own requests to itself
    try:
        importlib.import_module("gradio")
    except ImportError as exc:
        raise InputError(f"`animator ui` needs gradio, which cannot be imported ({exc})", INSTALL_HINT) from None


@contextlib.contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C, so a stopped server still removes its temporary folder."""
    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def announce(access: Access, host: str, port: int, urls: str) -> None:
    """Say where the page is and how to sign in: a made-up password is printed this once (as a warning, so
    --quiet keeps it); serving the network without a sign-in is warned about."""
    log.info("animator ui: %s (Ctrl-C stops it)", urls)
    if access.made_up:
        log.warning("animator ui: sign in as user %s with password %s (made up for this run; "
                    "--auth USER:PASSWORD chooses your own)", access.user, access.password)
    elif access.open and access.exposed:
        log.warning("animator ui: --no-auth: anyone who can reach %s:%d can upload files and use this machine's "
                    "GPU", host, port)


def serve(weights: WeightsHome, cache: StageCache, *, device: str | None = None, host: str = "127.0.0.1",
          port: int = 7860, share: bool = False, auth: str | None = None, no_auth: bool = False,
          max_upload_mb: int = MAX_UPLOAD_MB, keep_minutes: float = KEEP_MINUTES) -> None:
    """Serve the page on ``host:port`` until interrupted; ``share`` also opens a public gradio.live link.

    ``auth`` (``USER:PASSWORD``) and ``no_auth``: the sign-in, see `access`. ``max_upload_mb``: the largest file
    the page accepts. ``keep_minutes``: uploads and results unused this long are removed."""
    access = decide_access(host, share, auth, no_auth)
    keep = keep_minutes * 60
    with tempfile.TemporaryDirectory(prefix="animator-ui-", ignore_cleanup_errors=True) as workdir:
        os.environ["GRADIO_TEMP_DIR"] = str(Path(workdir) / "uploads")  # read when Gradio is imported
        import_gradio()
        from animator_cli.ui.page import CSS, build_page, theme
        from animator_cli.ui.session import UiSession

        session = UiSession(weights, cache, Path(workdir), device, keep=keep)
        page = build_page(session, max_upload_mb=max_upload_mb)
        page.queue(default_concurrency_limit=1)  # the queue shows waiting users their position
        with _stop_on_sigterm():
            try:
                page.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=True, quiet=True,
                            ssr_mode=False, mcp_server=False, footer_links=[], theme=theme(), css=CSS,
                            auth=access.check(), auth_message=SIGN_IN_MESSAGE,
                            max_file_size=max_upload_mb * 2**20)
            except OSError as exc:
                raise InputError(f"cannot serve on {host}:{port}: {exc}", "choose another --port") from None
            announce(access, host, port, page.local_url + (f" and {page.share_url}" if page.share_url else ""))
            stop_sweeping = session.files.sweep_every(max(1.0, min(keep / 4, 300.0)))
            try:
                page.block_thread()
            finally:
                stop_sweeping.set()
                page.close()
