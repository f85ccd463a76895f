"""`animator ui`: serve the web page; a thin wrapper over `animator_cli.ui.server.serve`."""

from __future__ import annotations

from typing import Annotated

import typer

from animator_cli.cli.app import app
from animator_cli.cli.context import settings


@app.command("ui")
def ui(
    host: Annotated[str, typer.Option(
        "--host", help="Address to listen on; 0.0.0.0 opens the page to your network.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port to listen on.")] = 7860,
    share: Annotated[bool, typer.Option(
        "--share/--no-share", help="Also publish a public gradio.live link (off: only this machine).")] = False,
) -> None:
    """Open a local web page: upload a photo and a driving video, check them, generate, download.

    Needs the [ui] extra: pip install -e ".[ui]". Stop it with Ctrl-C.
    """
    from animator_cli.ui.server import serve

    serve(settings.weights, settings.cache, device=settings.device, host=host, port=port, share=share)
