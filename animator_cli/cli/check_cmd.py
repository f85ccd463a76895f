"""`animator check REF DRIVING`: will the driving poses fit the reference? Findings before any rendering."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from animator_cli.check import check_alignment
from animator_cli.cli.app import app
from animator_cli.cli.context import emit, settings
from animator_cli.cli.help import BackendChoice


@app.command("check")
def check_command(
    reference: Annotated[Path, typer.Argument(help="Reference image (the person to animate).")],
    driving: Annotated[Path, typer.Argument(help="Driving video, or a folder of frame_<i>.png.")],
    align: Annotated[str, typer.Option(
        "--align", help="The alignment animate will use: global, limbs or none.")] = "global",
    pose_backend: Annotated[BackendChoice, typer.Option(
        "--pose-backend", help="auto: DWPose if its weights are installed, else MediaPipe.")] = BackendChoice["auto"],
    max_frames: Annotated[int | None, typer.Option(
        "--max-frames", min=1, help="Only the first N driving frames (as animate --max-frames).")] = None,
    preview: Annotated[Path | None, typer.Option(
        "--preview", help="Write a PNG: the reference with aligned driving skeletons, beside those frames.")] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Exit 2 when there is any warning.")] = False,
) -> None:
    """Check that REFERENCE and DRIVING fit before rendering: one finding a line (severity, code, what, fix).

    Exit code 2 on an error (e.g. no face in the reference) or, with --strict, on any warning.
    """
    report = check_alignment(reference, driving, weights=settings.weights, cache=settings.cache, align=align,
                             backend=pose_backend.value, device=settings.device, max_frames=max_frames, preview=preview)
    if settings.json:
        emit(report.as_dict())
    else:
        for finding in report.findings:
            print(finding.line())
        if report.preview:
            print(report.preview)
    report.raise_for(strict)
