"""Serving the page: Gradio imported on demand, no telemetry, uploads and outputs in a folder removed on exit."""

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
from animator_cli.weights.home import WeightsHome

log = logging.getLogger("animator")
INSTALL_HINT = 'install the web page\'s extra: pip install -e ".[ui]"'


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


def serve(weights: WeightsHome, cache: StageCache, *, device: str | None = None, host: str = "127.0.0.1",
          port: int = 7860, share: bool = False) -> None:
    """Serve the page on ``host:port`` until interrupted; ``share`` also opens a public gradio.live link."""
    with tempfile.TemporaryDirectory(prefix="animator-ui-", ignore_cleanup_errors=True) as workdir:
        os.environ["GRADIO_TEMP_DIR"] = str(Path(workdir) / "uploads")  # read when Gradio is imported
        import_gradio()
        from animator_cli.ui.page import CSS, build_page, theme
        from animator_cli.ui.session import UiSession

        page = build_page(UiSession(weights, cache, Path(workdir), device))
        page.queue(default_concurrency_limit=1)  # the queue shows waiting users their position
        with _stop_on_sigterm():
            try:
                page.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=True, quiet=True,
                            ssr_mode=False, mcp_server=False, footer_links=[], theme=theme(), css=CSS)
            except OSError as exc:
                raise InputError(f"cannot serve on {host}:{port}: {exc}", "choose another --port") from None
            log.info("animator ui: %s%s (Ctrl-C stops it)", page.local_url,
                     f" and {page.share_url}" if page.share_url else "")
            try:
                page.block_thread()
            finally:
                page.close()
