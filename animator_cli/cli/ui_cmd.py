"""`animator ui`: serve the web page; a thin wrapper over `animator_cli.ui.server.serve`."""

from __future__ import annotations

from typing import Annotated

import typer

from animator_cli.cli.app import app
from animator_cli.cli.context import settings
from animator_cli.ui import KEEP_MINUTES, MAX_UPLOAD_MB


@app.command("ui")
def ui(
    host: Annotated[str, typer.Option(
        "--host", help="Address to listen on; 0.0.0.0 opens the page to your network (sign-in required).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port to listen on.")] = 7860,
    share: Annotated[bool, typer.Option(
        "--share/--no-share", help="Also publish a public gradio.live link (sign-in required; off: only this "
        "machine).")] = False,
    auth: Annotated[str | None, typer.Option(
        "--auth", envvar="ANIMATOR_UI_AUTH", metavar="USER:PASSWORD",
        help="Ask for this sign-in. Off this machine without it, a random password is printed at start.")] = None,
    no_auth: Annotated[bool, typer.Option(
        "--no-auth", help="Serve a network address or --share link with no sign-in (anyone may use the GPU).")
    ] = False,
    max_upload_mb: Annotated[int, typer.Option(
        "--max-upload-mb", min=1, help="Largest file the page accepts, in MB.")] = MAX_UPLOAD_MB,
    keep_minutes: Annotated[float, typer.Option(
        "--keep-minutes", min=1, help="Remove uploads and results unused for this long.")] = KEEP_MINUTES,
) -> None:
    """Open a local web page: upload a photo and a driving video, check them, generate, download.

    Needs the [ui] extra: pip install -e ".[ui]". Stop it with Ctrl-C.
    """
    from animator_cli.ui.server import serve

    serve(settings.weights, settings.cache, device=settings.device, host=host, port=port, share=share, auth=auth,
          no_auth=no_auth, max_upload_mb=max_upload_mb, keep_minutes=keep_minutes)
