"""`animator prepare-data` (videos → training dataset) and `animator train` (accelerate training loop).

One GPU (or CPU): `animator train --config presets/tiktok.yaml --data DS --output runs/tiktok`.
Several GPUs, one node: the same arguments through accelerate (global options such as --weights go before `train`):
    accelerate launch --multi_gpu --num_processes 4 -m animator_cli --weights HOME train --config ... --data DS
Several nodes: add `--num_machines N --machine_rank R --main_process_ip HOST --main_process_port 29500` and set
--num_processes to the total number of GPUs; `torchrun ... -m animator_cli train ...` works as well.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from animator_cli.cli.app import app
from animator_cli.cli.context import emit, settings, stderr
from animator_cli.cli.help import BackendChoice
from animator_cli.cli.stage_display import stage_display
from animator_cli.errors import InputError
from animator_cli.weights.home import WeightsHome


@app.command("prepare-data")
def prepare_data(
    videos_dir: Annotated[Path, typer.Argument(help="Folder of training videos (one clip per file).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Dataset folder to create or complete.")],
    workers: Annotated[int, typer.Option("--workers", min=1, help="Videos processed in parallel.")] = 1,
    pose_backend: Annotated[BackendChoice, typer.Option(
        "--pose-backend", help="auto: DWPose if its weights are installed, else MediaPipe.")] = BackendChoice["auto"],
) -> None:
    """Frames, unaligned skeletons, face masks and cached identities for every video; resumable.

    A video that fails is reported and skipped; the command then exits 2 after the others are built."""
    from animator_cli.training.prepare import prepare_dataset

    with stage_display("prepare-data") as progress:
        result = prepare_dataset(videos_dir, output, settings.weights, workers=workers,
                                 pose_backend=pose_backend.value, device=settings.device,
                                 progress=lambda clip, done, total: progress(done, total))
    stderr.print(f"{len(result.built)} clips built, {len(result.skipped)} already done, {len(result.failed)} failed",
                 highlight=False)
    for clip, why in result.failed.items():
        stderr.print(f"[yellow]failed:[/] {clip}: {why}", highlight=False, soft_wrap=True)
    emit({"dataset": str(result.dataset), "built": result.built, "skipped": result.skipped, "failed": result.failed,
          "list_files": [str(p) for p in result.list_files]}, [result.dataset])
    if result.failed:
        total = len(result.built) + len(result.skipped) + len(result.failed)
        raise InputError(f"{len(result.failed)} of {total} videos failed (listed above); the other clips are built",
                         "fix or remove those videos and run prepare-data again: finished clips are skipped")


@app.command("train", context_settings={"allow_extra_args": False})
def train(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML config, e.g. presets/tiktok.yaml.")
                      ] = None,
    overrides: Annotated[list[str] | None, typer.Argument(
        help="Config overrides key=value (dotted keys, e.g. optim.learning_rate=3e-5).", show_default=False)] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Config override key=value (repeatable).")
                    ] = None,
    data: Annotated[Path | None, typer.Option("--data", help="Dataset folder (data.path).")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Run folder (output).")] = None,
    max_steps: Annotated[int | None, typer.Option("--max-steps", min=1, help="Optimizer steps (max_steps).")
                         ] = None,
    resume: Annotated[str | None, typer.Option(
        "--resume", help="`latest` (newest checkpoint of the run folder, if any) or a checkpoint folder.")] = None,
    compiled: Annotated[bool, typer.Option("--compile", help="torch.compile the UNet blocks (model.compile).")]
    = False,
    force: Annotated[bool, typer.Option(
        "--force", help="Start a new run in a run folder that holds one; the previous run's files move to "
        "RUN/old-<time>/.")] = False,
) -> None:
    """Train PoseNet, the face encoder and the UNet attention layers; prints the checkpoints written."""
    from animator_cli.training.config import load_config
    from animator_cli.training.preflight import check_training

    pairs = [*(overrides or []), *(set_ or [])]
    flags = (("data.path", data), ("output", output), ("max_steps", max_steps), ("model.compile", compiled or None))
    pairs += [f"{key}={value}" for key, value in flags if value is not None]
    cfg = load_config(config, pairs)
    weights = WeightsHome.resolve(cfg.model.weights) if cfg.model.weights else settings.weights
    check_training(cfg, weights, force=force, resume=resume)  # before torch and diffusers are imported (seconds)
    from animator_cli.training.trainer import train as run_training

    result = run_training(cfg, weights, resume=resume, force=force)
    if not result.is_main:  # under `accelerate launch`, one process prints the result
        return
    emit({"run_dir": str(result.run_dir), "start_step": result.start_step, "step": result.step,
          "checkpoints": [str(p) for p in result.checkpoints],
          "validation_videos": [str(p) for p in result.validation_videos]}, result.checkpoints)
