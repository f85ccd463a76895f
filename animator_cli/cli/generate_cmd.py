"""`animator generate`, `animator animate`, `animator batch`: thin wrappers over `animator_cli.generate`."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from animator_cli.cli.app import app
from animator_cli.cli.context import emit, settings, stderr
from animator_cli.errors import InputError
from animator_cli.options import (
    DEFAULT_SEED,
    DTYPES,
    RESOLUTIONS,
    FaceOptOptions,
    Runtime,
    SamplingOptions,
    make_options,
)
from animator_cli.sampling.fit import Fit

# The stages (torch, diffusers) are imported inside the commands, so --help and bad options answer at once.
ProgressFn = Callable[[int, int], None]

_S = SamplingOptions()
_F = FaceOptOptions()

Resolution = Annotated[str, typer.Option("--resolution", "-r", help=f"Preset W×H: {', '.join(RESOLUTIONS)}.")]
Width = Annotated[int | None, typer.Option("--width", help="Output width (multiple of 64); overrides -r.")]
Height = Annotated[int | None, typer.Option("--height", help="Output height (multiple of 64); overrides -r.")]
Seed = Annotated[int, typer.Option("--seed", help="Random seed; the same seed gives the same video.")]
Steps = Annotated[int, typer.Option("--steps", min=1, help="Denoising steps.")]
Guidance = Annotated[float, typer.Option("--guidance", help="Guidance scale of the last frame.")]
MinGuidance = Annotated[float | None, typer.Option(
    "--min-guidance", help="Guidance scale of the first frame (default: --guidance); linear in between.")]
Tile = Annotated[int, typer.Option("--tile", min=2, help="Frames per temporal window.")]
Overlap = Annotated[int, typer.Option("--overlap", min=1, help="Window overlap, counting the shared frame 0.")]
NoiseAug = Annotated[float, typer.Option("--noise-aug", help="Noise added to the reference before encoding.")]
MotionBucket = Annotated[int, typer.Option("--motion-bucket", help="SVD motion bucket id.")]
Fps = Annotated[float | None, typer.Option(
    "--fps", help="Output frame rate (default: the pose folder's meta.json / driving video, else 25).")]
IdScale = Annotated[float, typer.Option("--id-scale", help="Identity strength of the ID adapter (1.0 = paper).")]
Crf = Annotated[int, typer.Option("--crf", min=0, max=51, help="H.264 quality, lower is better.")]
FitOpt = Annotated[Fit, typer.Option("--fit", help="How images of another aspect ratio fit W×H.")]
DecodeChunk = Annotated[int, typer.Option("--decode-chunk", min=1, help="Frames per VAE decode call.")]
Dtype = Annotated[str | None, typer.Option(
    "--dtype", help=f"{'|'.join(DTYPES)} (default: fp16 on GPU, fp32 on CPU).")]
Offload = Annotated[bool, typer.Option("--offload", help="Keep idle models on the CPU (less GPU memory).")]
VaeOnCpu = Annotated[bool, typer.Option("--vae-on-cpu", help="Run the VAE on the CPU in fp32.")]
SplitCfg = Annotated[bool, typer.Option(
    "--split-cfg", help="Two UNet calls per window instead of one batched call (less memory).")]
CompileOpt = Annotated[bool, typer.Option(
    "--compile", help="torch.compile the UNet and VAE decoder blocks: the first steps compile, later ones run faster.")]
WindowBatch = Annotated[int | None, typer.Option(
    "--window-batch", min=1, help="Temporal windows per UNet call (default: as many as free GPU memory holds; 1 "
    "on CPU).")]
LegacyRgb = Annotated[bool, typer.Option(
    "--legacy-rgb-id", help="Give insightface RGB like the released scripts (training used BGR).")]
AllowNoFace = Annotated[bool, typer.Option("--allow-no-face", help="Use a zero identity if no face is found.")]
Checkpoint = Annotated[Path | None, typer.Option(
    "--checkpoint", help="Folder with pose_net/face_encoder/unet .pth to use instead of the released ones.")]
Force = Annotated[bool, typer.Option("--force", help="Recompute every stage even when cached.")]
FaceOpt = Annotated[bool, typer.Option(
    "--face-opt", help="HJB face optimisation: refine the face identity during denoising (slower).")]
FaceOptIters = Annotated[int, typer.Option("--face-opt-iters", min=1, help="Adam iterations per refined step.")]
FaceOptSteps = Annotated[str, typer.Option(
    "--face-opt-steps", help="Refined steps START:END, inclusive, 0 = the noisiest step.")]
FaceOptLr = Annotated[float, typer.Option(
    "--face-opt-lr", min=0.0, help="Adam learning rate η at step 0, decayed as η·(1 − i/steps).")]
FaceOptMargin = Annotated[int | None, typer.Option(
    "--face-opt-margin", min=0, help="Decode only the faces' region plus N latent cells (8 px) instead of whole "
    "frames: several times faster, approximate (docs/hjb.md).")]
Output = Annotated[Path, typer.Option("-o", "--output", help="Output .mp4.")]


def build_runtime(dtype: str | None = None, offload: bool = False, vae_on_cpu: bool = False,
                  split_cfg: bool = False, checkpoint: Path | None = None, device: str | None = None,
                  compiled: bool = False, window_batch: int | None = None) -> Runtime:
    run_folder = Path(checkpoint).parent if checkpoint is not None and Path(checkpoint).name == "latest" else checkpoint
    if run_folder is not None and not Path(run_folder).is_dir():
        raise InputError(f"--checkpoint {checkpoint} is not a folder", "pass RUN/checkpoint-N, RUN or RUN/latest")
    runtime = Runtime(device=device or settings.device, dtype=dtype, offload=offload, vae_on_cpu=vae_on_cpu,
                      batch_cfg=not split_cfg, checkpoint_dir=checkpoint, compile=compiled,
                      window_batch=window_batch)
    runtime.validate()  # an unknown --dtype fails here, before any work
    return runtime


@contextlib.contextmanager
def step_progress(label: str) -> Iterator[ProgressFn]:
    """A progress bar on stderr fed by the pipeline's (step, total) callback; silent with --quiet."""
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} steps"),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=stderr, transient=True, disable=settings.quiet) as bar:
        task = bar.add_task(label, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


@app.command("generate")
def generate(
    reference: Annotated[Path, typer.Argument(help="Reference image (the person to animate).")],
    poses: Annotated[Path, typer.Argument(help="Pose folder from `animator extract-pose`, or skeleton frames.")],
    output: Output,
    resolution: Resolution = "512x512", width: Width = None, height: Height = None, seed: Seed = DEFAULT_SEED,
    steps: Steps = _S.steps, guidance: Guidance = _S.max_guidance, min_guidance: MinGuidance = None,
    tile: Tile = _S.tile, overlap: Overlap = _S.overlap, noise_aug: NoiseAug = _S.noise_aug,
    motion_bucket: MotionBucket = _S.motion_bucket, fps: Fps = None, id_scale: IdScale = _S.id_scale,
    crf: Crf = 18, fit: FitOpt = Fit.COVER, decode_chunk: DecodeChunk = _S.decode_chunk,
    frames_dir: Annotated[Path | None, typer.Option("--frames-dir", help="Also write frame_<i>.png here.")] = None,
    audio_from: Annotated[Path | None, typer.Option("--audio-from", help="Mux this video's audio.")] = None,
    dtype: Dtype = None, offload: Offload = False, vae_on_cpu: VaeOnCpu = False, split_cfg: SplitCfg = False,
    compiled: CompileOpt = False, window_batch: WindowBatch = None,
    legacy_rgb_id: LegacyRgb = False, allow_no_face: AllowNoFace = False, checkpoint: Checkpoint = None,
    face_opt: FaceOpt = False, face_opt_iters: FaceOptIters = _F.iters,
    face_opt_steps: FaceOptSteps = f"{_F.start}:{_F.end}", face_opt_lr: FaceOptLr = _F.lr,
    face_opt_margin: FaceOptMargin = None,
    face_masks: Annotated[Path | None, typer.Option(
        "--face-masks", help="With --face-opt: folder of frame_<i>.png face masks instead of the pose keypoints.")]
    = None,
    force: Force = False,
) -> None:
    """Animate REFERENCE along the skeleton frames in POSES; writes an H.264 mp4."""
    options = make_options(resolution, width, height, seed, steps, guidance, min_guidance, tile, overlap,
                            noise_aug, motion_bucket, fps, id_scale, crf, fit, decode_chunk, legacy_rgb_id,
                            allow_no_face, face_opt, face_opt_iters, face_opt_steps, face_opt_lr,
                            face_opt_margin)
    runtime = build_runtime(dtype, offload, vae_on_cpu, split_cfg, checkpoint, compiled=compiled,
                            window_batch=window_batch)
    from animator_cli.generate import generate as generate_stage

    with step_progress("generate") as progress:
        result = generate_stage(reference, poses, output, options, runtime, weights=settings.weights,
                                cache=settings.cache, audio_from=audio_from, frames_dir=frames_dir,
                                face_masks=face_masks, force=force, progress=progress)
    emit(result.as_dict(), [result.output])


@app.command("animate")
def animate(
    reference: Annotated[Path, typer.Argument(help="Reference image (the person to animate).")],
    driving: Annotated[Path, typer.Argument(help="Driving video (or frame folder) whose motion is copied.")],
    output: Output,
    resolution: Resolution = "512x512", width: Width = None, height: Height = None, seed: Seed = DEFAULT_SEED,
    steps: Steps = _S.steps, guidance: Guidance = _S.max_guidance, min_guidance: MinGuidance = None,
    tile: Tile = _S.tile, overlap: Overlap = _S.overlap, noise_aug: NoiseAug = _S.noise_aug,
    motion_bucket: MotionBucket = _S.motion_bucket, fps: Fps = None, id_scale: IdScale = _S.id_scale,
    crf: Crf = 18, fit: FitOpt = Fit.COVER, decode_chunk: DecodeChunk = _S.decode_chunk,
    align: Annotated[str, typer.Option("--align", help="Pose alignment to the reference: global, limbs, none.")]
    = "global",
    pose_backend: Annotated[str, typer.Option("--pose-backend", help="auto, dwpose or mediapipe.")] = "auto",
    max_frames: Annotated[int | None, typer.Option("--max-frames", min=1, help="Use only the first N frames.")]
    = None,
    dtype: Dtype = None, offload: Offload = False, vae_on_cpu: VaeOnCpu = False, split_cfg: SplitCfg = False,
    compiled: CompileOpt = False, window_batch: WindowBatch = None,
    legacy_rgb_id: LegacyRgb = False, allow_no_face: AllowNoFace = False, checkpoint: Checkpoint = None,
    face_opt: FaceOpt = False, face_opt_iters: FaceOptIters = _F.iters,
    face_opt_steps: FaceOptSteps = f"{_F.start}:{_F.end}", face_opt_lr: FaceOptLr = _F.lr,
    face_opt_margin: FaceOptMargin = None,
    force: Force = False,
) -> None:
    """Extract poses from DRIVING (aligned to REFERENCE), then generate; the driving audio is kept."""
    options = make_options(resolution, width, height, seed, steps, guidance, min_guidance, tile, overlap,
                           noise_aug, motion_bucket, fps, id_scale, crf, fit, decode_chunk, legacy_rgb_id,
                           allow_no_face, face_opt, face_opt_iters, face_opt_steps, face_opt_lr,
                           face_opt_margin)
    runtime = build_runtime(dtype, offload, vae_on_cpu, split_cfg, checkpoint, compiled=compiled,
                            window_batch=window_batch)
    from animator_cli.generate import animate as animate_stage

    with step_progress("animate") as progress:
        result = animate_stage(reference, driving, output, options, runtime, weights=settings.weights,
                               cache=settings.cache, align=align, pose_backend=pose_backend, max_frames=max_frames,
                               force=force, progress=progress)
    emit(result.as_dict(), [result.output])


@app.command("batch")
def batch(
    jobs: Annotated[Path, typer.Argument(help="YAML file with an optional `defaults:` mapping and a `jobs:` list.")],
    shard: Annotated[str | None, typer.Option(
        "--shard", help="Run only jobs i, i+N, ... as I/N (default: RANK/WORLD_SIZE, else all).")] = None,
    dtype: Dtype = None, offload: Offload = False, vae_on_cpu: VaeOnCpu = False, split_cfg: SplitCfg = False,
    compiled: CompileOpt = False, window_batch: WindowBatch = None, checkpoint: Checkpoint = None,
    force: Force = False,
) -> None:
    """Run many generate/animate jobs with the models loaded once; a failed job does not stop the others.

    Exit code: 0 if every job succeeded, else the first failed job's own code (2 bad input, 3 weights,
    4 out of memory, 1 internal error).

    A job: reference, output, driving (video) or poses (folder), any generate option by its long name.

    Paths are relative to the YAML file; `defaults:` applies to every job. Format: animator_cli/batch.py.
    """
    runtime = build_runtime(dtype, offload, vae_on_cpu, split_cfg, checkpoint, compiled=compiled,
                            window_batch=window_batch)
    from animator_cli.batch import JobOutcome, parse_shard, run_batch

    def report(outcome: JobOutcome) -> None:
        status = "[green]ok[/]" if outcome.ok else f"[red]failed:[/] {outcome.error}"
        stderr.print(f"job {outcome.index}: {outcome.output} {status}", highlight=False, soft_wrap=True)

    outcomes = run_batch(jobs, runtime, weights=settings.weights, cache=settings.cache, shard=parse_shard(shard),
                         force=force, on_done=report)
    failed = [o for o in outcomes if not o.ok]
    emit({"jobs": [{"index": o.index, "output": o.output, "ok": o.ok, "error": o.error,
                    "cached": o.result.cached if o.result else None} for o in outcomes],
          "failed": len(failed)}, [o.result.output for o in outcomes if o.ok])
    if failed:
        stderr.print(f"[bold red]{len(failed)} of {len(outcomes)} jobs failed[/]")
        raise typer.Exit(failed[0].exit_code)
