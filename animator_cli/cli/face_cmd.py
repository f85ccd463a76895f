"""`animator face REF.png`: the reference identity (ArcFace embedding, face box, mask), cached."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from animator_cli.cli.app import app
from animator_cli.cli.context import emit, settings, stderr
from animator_cli.face import EXPORT_FILES, export_stage, face_stage, load_identity
from animator_cli.fileio import check_output_path


@app.command("face")
def face(
    image: Annotated[Path, typer.Argument(help="Reference image.")],
    output: Annotated[Path | None, typer.Option(
        "-o", "--output", help="Also copy identity.npz, face_mask.png and meta.json into this folder.")] = None,
    legacy_rgb_id: Annotated[bool, typer.Option(
        "--legacy-rgb-id", help="Feed insightface RGB like the released inference scripts (training used BGR).")
    ] = False,
    allow_no_face: Annotated[bool, typer.Option(
        "--allow-no-face", help="Use a zero identity instead of failing when no face is found.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Recompute even if cached.")] = False,
) -> None:
    """Detect the largest face and compute its identity embedding; prints the output folder."""
    if output is not None:
        check_output_path(output, [image], names=EXPORT_FILES)
    folder, cached = face_stage(image, settings.weights, settings.cache, legacy_rgb=legacy_rgb_id,
                                allow_no_face=allow_no_face, force=force, device=settings.device)
    if output is not None:
        folder = export_stage(folder, output)
    identity = load_identity(folder)
    if identity.found:
        x0, y0, x1, y1 = (round(float(v)) for v in identity.box)
        stderr.print(f"face at ({x0}, {y0})-({x1}, {y1}), score {identity.det_score:.2f}"
                     f"{' (cached)' if cached else ''}", highlight=False)
    emit({"face": str(folder), "found": identity.found, "cached": cached, "box": identity.box.tolist(),
          "det_score": identity.det_score, "legacy_rgb": legacy_rgb_id}, [folder])
