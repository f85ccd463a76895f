"""`animator evaluate GENERATED GROUND_TRUTH`: L1, PSNR, SSIM, LPIPS, FVD and CSIM (see docs/evaluation.md)."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from animator_cli.cli.app import app
from animator_cli.cli.context import emit, settings, stderr
from animator_cli.errors import InputError
from animator_cli.evaluation import METRICS, EvaluationResult, evaluate, json_safe, parse_metrics
from animator_cli.fileio import atomic_path, check_output_path


def _format(value: float | None) -> str:
    if value is None:
        return "-"
    if math.isinf(value):
        return "inf"
    return f"{value:.4g}" if abs(value) < 1e-2 else f"{value:.4f}"


def _table(result: EvaluationResult) -> Table:
    names = list(result.metrics)
    table = Table(title="evaluation", title_justify="left")
    for column in ["case", "frames", *names]:
        table.add_column(column, justify="left" if column == "case" else "right")
    if len(result.cases) > 1:
        for case in result.cases:
            table.add_row(case["case"], str(case["frames"]), *(_format(case.get(n)) for n in names))
    frames = sum(c["frames"] for c in result.cases)
    table.add_row("all" if len(result.cases) > 1 else result.cases[0]["case"], str(frames),
                  *(_format(result.metrics[n]) for n in names))
    return table


def _write_csv(path: Path, result: EvaluationResult) -> None:
    columns = ["case", "frame", *(n for n in result.metrics if n != "fvd")]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in result.per_frame:
            writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in columns})


def _timeline(generated: Path, reference: Path | None, folder: Path | None, tile: int | None,
              overlap: int | None, face_opt_steps: str | None) -> dict:
    """The identity timeline of ``generated`` (summary on stderr, files in ``folder``) as a JSON-safe dict."""
    from animator_cli.check.timeline import identity_timeline
    from animator_cli.options import parse_steps

    if reference is None:
        raise InputError("the identity timeline needs --reference", "pass the reference image the video animates")
    steps = parse_steps(face_opt_steps) if face_opt_steps else None
    with stderr.status("identity timeline...") as status:
        timeline = identity_timeline(generated, reference, weights=settings.weights, device=settings.device,
                                     tile=tile, overlap=overlap, hjb_steps=steps,
                                     progress=lambda n: status.update(f"identity timeline: frame {n}"))
    stderr.print(timeline.summary(), highlight=False, soft_wrap=True)
    files = timeline.write(folder) if folder is not None else []
    return {"summary": timeline.summary(), "cosines": [None if math.isnan(v) else v for v in timeline.cosines],
            "worst_range": list(timeline.worst_range() or []), "files": [str(f) for f in files]}


@app.command("evaluate")
def evaluate_command(
    generated: Annotated[Path, typer.Argument(help="Generated video, frame folder, or folder of cases.")],
    ground_truth: Annotated[Path | None, typer.Argument(
        help="Ground truth of the same kind (cases matched by name); omit it for the identity timeline "
        "against --reference only.")] = None,
    metrics: Annotated[str, typer.Option("--metrics", help=f"Comma-separated: {','.join(METRICS)}.")] = ",".join(
        METRICS),
    reference: Annotated[Path | None, typer.Option(
        "--reference", "-r", help="Reference image for CSIM (default: the ground-truth frame's face).")] = None,
    per_frame: Annotated[Path | None, typer.Option("--per-frame", help="Write per-frame values to this CSV.")
                         ] = None,
    timeline: Annotated[Path | None, typer.Option(
        "--timeline", help="Write the identity timeline (identity.csv, identity.png) of GENERATED against "
        "--reference into this folder.")] = None,
    tile: Annotated[int | None, typer.Option(
        "--tile", min=2, help="Frames per window the video was rendered with, to mark windows (default 16).")] = None,
    overlap: Annotated[int | None, typer.Option(
        "--overlap", min=1, help="Window overlap it was rendered with (default 4).")] = None,
    face_opt_steps: Annotated[str | None, typer.Option(
        "--face-opt-steps", help="START:END: the HJB steps it was rendered with, named on the plot.")] = None,
) -> None:
    """Compare generated frames with the ground truth; a table on stderr, JSON on stdout with --json.

    Without GROUND_TRUTH: only the per-frame identity against --reference (summary line; files with --timeline).
    """
    identity = None
    if ground_truth is None or timeline is not None:
        identity = _timeline(generated, reference, timeline, tile, overlap, face_opt_steps)
    if ground_truth is None:
        emit(json_safe({"identity": identity}), [Path(f) for f in identity["files"]])
        return
    names = parse_metrics(metrics)
    if per_frame is not None:
        check_output_path(per_frame, [generated, ground_truth, reference])
    with stderr.status("evaluating...") as status:
        result = evaluate(generated, ground_truth, names, settings.weights, reference, settings.device,
                          progress=lambda case, n: status.update(f"evaluating {case}: frame {n}"))
    stderr.print(_table(result))
    for metric, reason in result.skipped.items():
        stderr.print(f"[yellow]{metric} skipped:[/] {reason}", highlight=False, soft_wrap=True)
    if per_frame is not None:
        _write_csv(per_frame, result)
    files = [per_frame] if per_frame else []
    emit(json_safe({"metrics": result.metrics, "cases": result.cases, "skipped": result.skipped,
                    "warnings": result.warnings, "per_frame_csv": str(per_frame) if per_frame else None,
                    **({"identity": identity} if identity else {})}),
         files + [Path(f) for f in identity["files"]] if identity else files)
