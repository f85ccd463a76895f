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


@app.command("evaluate")
def evaluate_command(
    generated: Annotated[Path, typer.Argument(help="Generated video, frame folder, or folder of cases.")],
    ground_truth: Annotated[Path, typer.Argument(help="Ground truth of the same kind (cases matched by name).")],
    metrics: Annotated[str, typer.Option("--metrics", help=f"Comma-separated: {','.join(METRICS)}.")] = ",".join(
        METRICS),
    reference: Annotated[Path | None, typer.Option(
        "--reference", help="Reference image for CSIM (default: the ground-truth frame's face).")] = None,
    per_frame: Annotated[Path | None, typer.Option("--per-frame", help="Write per-frame values to this CSV.")
                         ] = None,
) -> None:
    """Compare generated frames with the ground truth; a table on stderr, JSON on stdout with --json."""
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
    emit(json_safe({"metrics": result.metrics, "cases": result.cases, "skipped": result.skipped,
                    "warnings": result.warnings, "per_frame_csv": str(per_frame) if per_frame else None}),
         [per_frame] if per_frame else [])
