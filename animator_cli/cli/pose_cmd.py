"""`animator extract-pose`: driving video → folder of skeleton images (printed on stdout)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from animator_cli.cli.app import app
from animator_cli.cli.context import emit, settings
from animator_cli.cli.help import AlignChoice, BackendChoice, renamed_option
from animator_cli.cli.stage_display import stage_display
from animator_cli.pose import extract_pose


@app.command("extract-pose")
def extract_pose_command(
    ctx: typer.Context,
    source: Annotated[Path, typer.Argument(help="Driving video, or a folder of frame_<i>.png.")],
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Write the skeletons here (default: the stage cache).")] = None,
    reference: Annotated[Path | None, typer.Option(
        "--reference", "-r", help="Reference image: poses are aligned to this person and drawn at its size.")] = None,
    align: Annotated[AlignChoice, typer.Option(
        "--align", help="global: scale+shift fit (the paper's); limbs: also bone lengths of the reference; none.")
    ] = AlignChoice["global"],
    pose_backend: Annotated[BackendChoice, typer.Option(
        "--pose-backend", help="auto: DWPose if its weights are installed, else MediaPipe.")] = BackendChoice["auto"],
    old_backend: Annotated[BackendChoice | None, typer.Option(
        "--backend", hidden=True, help="The old name of --pose-backend, still read.")] = None,
    smooth: Annotated[bool, typer.Option("--smooth/--no-smooth", help="One Euro filter against jitter.")] = True,
    max_frames: Annotated[int | None, typer.Option("--max-frames", help="Only the first N frames.")] = None,
    fps: Annotated[float | None, typer.Option(
        "--fps", help="Frame rate of a frame folder (default 25) or override for a video.")] = None,
    preview: Annotated[bool, typer.Option("--preview", help="Also write preview.mp4 (skeleton over video).")] = False,
    force: Annotated[bool, typer.Option("--force", help="Recompute even if cached.")] = False,
) -> None:
    """Extract StableAnimator pose skeletons (frame_<i>.png, keypoints.npz, meta.json) from a driving video."""
    backend = renamed_option(ctx, "pose_backend", pose_backend, old_backend, "--backend")
    with stage_display("extract-pose") as progress:
        folder = extract_pose(
            source, output, reference, align=align.value, backend=backend.value, smooth=smooth,
            max_frames=max_frames, preview=preview, fps=fps, weights=settings.weights, cache=settings.cache,
            device=settings.device, force=force, progress=progress)
    meta = json.loads((folder / "meta.json").read_text())
    emit({"poses": str(folder), **meta}, [folder])
