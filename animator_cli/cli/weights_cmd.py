"""`animator weights ...`: inspect and fetch the weights home."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from animator_cli.cli.app import app
from animator_cli.cli.context import emit, settings, stderr
from animator_cli.errors import InputError
from animator_cli.fileio import atomic_dir
from animator_cli.weights import download as downloader
from animator_cli.weights.home import ComponentStatus

weights_app = typer.Typer(help="Inspect, download and convert model weights.", no_args_is_help=True)
app.add_typer(weights_app, name="weights")

_STYLE = {ComponentStatus.PRESENT: "green", ComponentStatus.MISSING: "yellow", ComponentStatus.UNREADABLE: "red"}


@weights_app.command("check")
def check() -> None:
    """Show which components are present; exit 0 only when `generate` can run, else 3."""
    home = settings.weights
    table = Table(title=f"weights home: {home.root}", title_justify="left")
    for column in ("component", "status", "needed for", "fix"):
        table.add_column(column)
    result = []
    for component in home.components():
        status, path = home.status(component)
        needed = "generate" if component.required else f"optional: {component.purpose}"
        fix = "" if status is ComponentStatus.PRESENT else f"{component.fix}  ({path})"
        table.add_row(component.name, f"[{_STYLE[status]}]{status.value}[/]", needed, fix)
        result.append({"component": component.name, "status": status.value, "required": component.required,
                       "file": str(path) if path else None, "fix": component.fix if path else None})
    stderr.print(table)
    ready = home.can_generate()
    emit({"weights": str(home.root), "ready": ready, "components": result})
    if not ready:
        raise typer.Exit(3)


@weights_app.command("download")
def download(
    only: Annotated[list[str] | None, typer.Option(
        "--only", help=f"Component to fetch (repeatable): {', '.join(downloader.COMPONENTS)}.")] = None,
    token: Annotated[str | None, typer.Option(
        "--token", envvar="HF_TOKEN", help="Hugging Face token (SVD-xt is a gated model).")] = None,
) -> None:
    """Fetch the weights from Hugging Face and insightface's model zoo (resumable)."""
    for name in only or []:
        if name not in downloader.COMPONENTS:
            raise InputError(f"unknown component '{name}'", f"choose from {', '.join(downloader.COMPONENTS)}")
    fetched = downloader.download(settings.weights, only, token)
    emit({"weights": str(settings.weights.root), "downloaded": fetched}, [settings.weights.root])


@weights_app.command("manifest")
def manifest() -> None:
    """Print every key and shape of the three checkpoints, from the full-size architecture (TSV: file, key, shape)."""
    from animator_cli.models.manifest import format_manifest, manifest_rows

    rows = manifest_rows()
    if settings.json:
        emit({"keys": [{"file": file, "key": key, "shape": list(shape)} for file, key, shape in rows]})
    else:
        sys.stdout.write(format_manifest(rows))


@weights_app.command("convert")
def convert() -> None:
    """Write fp16 .safetensors twins of pose_net/face_encoder/unet.pth (loaded in preference: no pickle, faster)."""
    from animator_cli.models.convert import convert_checkpoints

    written = convert_checkpoints(settings.weights)
    emit({"weights": str(settings.weights.root), "written": [str(p) for p in written]}, written)


@weights_app.command("make-tiny")
def make_tiny(
    directory: Annotated[Path, typer.Argument(help="New (or empty) folder for the tiny weights home.")],
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random weights.")] = 0,
) -> None:
    """Write a complete weights home of tiny random models in the real formats (tests, smoke runs)."""
    from animator_cli.weights.tiny import make_tiny as write_tiny_home

    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise InputError(f"{directory} already exists and is not an empty folder", "choose a new folder")
    with atomic_dir(directory) as tmp:
        write_tiny_home(tmp, seed)
    emit({"weights": str(directory), "seed": seed}, [directory])
