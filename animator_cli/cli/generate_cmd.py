"""`animator generate`, `animator animate`, `animator batch`: thin wrappers over `animator_cli.generate`."""

from __future__ import annotations

import contextlib
import enum
import inspect
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from animator_cli.cli.app import app
from animator_cli.cli.context import configure_logging, emit, settings, stderr
from animator_cli.cli.help import (
    IDENTITY,
    MEMORY,
    OUTPUT,
    POSE,
    SAMPLING,
    AlignChoice,
    AttentionChoice,
    BackendChoice,
    CheckMode,
    CompileModeChoice,
    DtypeChoice,
    ResolutionChoice,
    ScheduleChoice,
)
from animator_cli.cli.stage_display import stage_display
from animator_cli.draft import PRESET, SHORT_SIDE, draft_output, full_output
from animator_cli.errors import InputError
from animator_cli.options import (
    DEFAULT_SEED,
    MAX_GUARD_RETRIES,
    FaceOptOptions,
    Fit,
    GenerateOptions,
    GuardOptions,
    Runtime,
    SamplingOptions,
    generate_options,
    runtime_options,
)

if TYPE_CHECKING:
    from animator_cli.distributed import Ranks
    from animator_cli.generate import GenerateResult

# The stages (torch, diffusers) are imported inside the commands, so --help and bad options answer at once.
_S = SamplingOptions()
_F = FaceOptOptions()
_G = GuardOptions()

Output = Annotated[Path, typer.Option("-o", "--output", help="Output .mp4.", rich_help_panel=OUTPUT)]
Resolution = Annotated[ResolutionChoice, typer.Option(
    "--resolution", help="Output size W×H.", rich_help_panel=OUTPUT)]
Width = Annotated[int | None, typer.Option(
    "--width", help="Output width (multiple of 64); overrides --resolution.", rich_help_panel=OUTPUT)]
Height = Annotated[int | None, typer.Option(
    "--height", help="Output height (multiple of 64); overrides --resolution.", rich_help_panel=OUTPUT)]
Fps = Annotated[float | None, typer.Option(
    "--fps", help="Output frame rate (default: the pose folder's meta.json / driving video, else 25).",
    rich_help_panel=OUTPUT)]
Crf = Annotated[int, typer.Option(
    "--crf", min=0, max=51, help="H.264 quality, lower is better.", rich_help_panel=OUTPUT)]
FitOpt = Annotated[Fit, typer.Option(
    "--fit", help="How images of another aspect ratio fit W×H: crop, pad or distort.", rich_help_panel=OUTPUT)]
Force = Annotated[bool, typer.Option(
    "--force", help="Recompute every stage even when cached.", rich_help_panel=OUTPUT)]
Seed = Annotated[int, typer.Option(
    "--seed", help="Random seed; the same seed gives the same video.", rich_help_panel=SAMPLING)]
Steps = Annotated[int, typer.Option("--steps", min=1, help="Denoising steps.", rich_help_panel=SAMPLING)]
Guidance = Annotated[float, typer.Option(
    "--guidance", help="Guidance scale of the last frame.", rich_help_panel=SAMPLING)]
MinGuidance = Annotated[float | None, typer.Option(
    "--min-guidance", help="Guidance scale of the first frame (default: --guidance); linear in between.",
    rich_help_panel=SAMPLING)]
Tile = Annotated[int, typer.Option("--tile", min=2, help="Frames per temporal window.", rich_help_panel=SAMPLING)]
Overlap = Annotated[int, typer.Option(
    "--overlap", min=1, help="Window overlap, counting the shared frame 0.", rich_help_panel=SAMPLING)]
NoiseAug = Annotated[float, typer.Option(
    "--noise-aug", help="Noise added to the reference before encoding.", rich_help_panel=SAMPLING)]
MotionBucket = Annotated[int, typer.Option(
    "--motion-bucket", help="SVD motion bucket id (more motion when higher).", rich_help_panel=SAMPLING)]
Checkpoint = Annotated[Path | None, typer.Option(
    "--checkpoint", help="Folder with pose_net/face_encoder/unet .pth to use instead of the released ones "
    "(a training run's checkpoint-N, the run folder or RUN/latest).", rich_help_panel=SAMPLING)]
IdScale = Annotated[float, typer.Option(
    "--id-scale", help="Identity strength of the ID adapter (1.0 = paper).", rich_help_panel=IDENTITY)]
LegacyRgb = Annotated[bool, typer.Option(
    "--legacy-rgb-id", help="Give insightface RGB like the released scripts (training used BGR).",
    rich_help_panel=IDENTITY)]
AllowNoFace = Annotated[bool, typer.Option(
    "--allow-no-face", help="Use a zero identity if no face is found.", rich_help_panel=IDENTITY)]
FaceOpt = Annotated[bool, typer.Option(
    "--face-opt", help="HJB face optimisation: refine the face identity during denoising (slower).",
    rich_help_panel=IDENTITY)]
FaceOptIters = Annotated[int, typer.Option(
    "--face-opt-iters", min=1, help="Adam iterations per refined step.", rich_help_panel=IDENTITY)]
FaceOptSteps = Annotated[str, typer.Option(
    "--face-opt-steps", help="Refined steps START:END, inclusive, 0 = the noisiest step.", rich_help_panel=IDENTITY)]
FaceOptLr = Annotated[float, typer.Option(
    "--face-opt-lr", min=0.0, help="Adam learning rate η at step 0, decayed as η·(1 − i/steps).",
    rich_help_panel=IDENTITY)]
FaceOptMargin = Annotated[int | None, typer.Option(
    "--face-opt-margin", min=0, help="Decode only the faces' region plus N latent cells (8 px) instead of whole "
    "frames: several times faster, approximate.", rich_help_panel=IDENTITY)]
IdentityGuard = Annotated[str | None, typer.Option(
    "--identity-guard", metavar="[THRESHOLD]", help="After the render, render again the windows whose median identity "
    "cosine is below THRESHOLD (bare: the video's own median − 0.1), escalating HJB, --id-scale, seed; the best "
    "attempt is kept (docs/hjb.md).", rich_help_panel=IDENTITY)]
GuardRetries = Annotated[int, typer.Option(
    "--guard-retries", min=1, max=MAX_GUARD_RETRIES, help="With --identity-guard: attempts per window at most.",
    rich_help_panel=IDENTITY)]
DriftLock = Annotated[bool, typer.Option(
    "--drift-lock", help="Match every window's colours outside the person to the first window's (long videos).",
    rich_help_panel=OUTPUT)]
Dtype = Annotated[DtypeChoice | None, typer.Option(
    "--dtype", help="Model precision (default: fp16 on GPU, fp32 on CPU).", rich_help_panel=MEMORY)]
Offload = Annotated[bool, typer.Option(
    "--offload", help="Keep idle models on the CPU (less GPU memory).", rich_help_panel=MEMORY)]
VaeOnCpu = Annotated[bool, typer.Option(
    "--vae-on-cpu", help="Run the VAE on the CPU in fp32.", rich_help_panel=MEMORY)]
SplitCfg = Annotated[bool, typer.Option(
    "--split-cfg", help="Two UNet calls per window instead of one batched call (less memory).",
    rich_help_panel=MEMORY)]
DecodeChunk = Annotated[int, typer.Option(
    "--decode-chunk", min=1, help="Frames per VAE decode call (fewer: less memory).", rich_help_panel=MEMORY)]
CompileOpt = Annotated[bool, typer.Option(
    "--compile", help="torch.compile the UNet and VAE decoder blocks: the first steps compile (minutes), later ones "
    "run faster.", rich_help_panel=MEMORY)]
WindowBatch = Annotated[int, typer.Option(
    "--window-batch", min=0, help="Temporal windows per UNet call; 0: as many as free GPU memory holds (1 on the "
    "CPU). Same output up to float rounding.", rich_help_panel=MEMORY)]
CompileMode = Annotated[CompileModeChoice, typer.Option(
    "--compile-mode", help="With --compile: torch.compile's mode for the UNet (reduce-overhead: CUDA graphs; "
    "max-autotune-no-cudagraphs: tuned kernels, a longer first compile).", rich_help_panel=MEMORY)]
Attention = Annotated[AttentionChoice, typer.Option(
    "--attention", help="Attention kernel tried first (auto: torch's choice). Same output up to float rounding.",
    rich_help_panel=MEMORY)]
Fp8 = Annotated[bool, typer.Option(
    "--fp8", help="FP8 matrix products in the UNet (torchao; GPUs of compute capability 8.9+). Faster, lossy.",
    rich_help_panel=MEMORY)]
Schedule = Annotated[ScheduleChoice, typer.Option(
    "--schedule", help="Noise levels: karras (the release's) or ays (Align Your Steps for SVD; --schedule ays "
    "--steps 10 is the fast preset). ays changes the output.", rich_help_panel=SAMPLING)]
ReuseFeatures = Annotated[int, typer.Option(
    "--reuse-features", min=1, help="Run the whole UNet every N-th step and only its shallow branch, on the deep "
    "features kept from then, in between (DeepCache); 1: every step. Above 1 it changes the output.",
    rich_help_panel=MEMORY)]
Draft = Annotated[bool, typer.Option(
    "--draft", help=f"Quick preview: short side {SHORT_SIDE} px, {PRESET}; writes NAME.draft.mp4 beside -o.",
    rich_help_panel=OUTPUT)]
Report = Annotated[Path | None, typer.Option(
    "--report", help="Also write the identity timeline of the result (identity.csv, identity.png) here.",
    rich_help_panel=OUTPUT)]
Check = Annotated[CheckMode, typer.Option(
    "--check", help="Alignment check before rendering (`animator check`): warn, strict (stop on a warning), off.",
    rich_help_panel=POSE)]


def command_values(function: Callable[..., Any], values: dict[str, Any], **renamed: str) -> dict[str, Any]:
    """The command's parameter ``values`` that ``function`` (`generate_options`, `runtime_options`) takes, by name
    (``renamed``: function name → parameter name where they differ), choices as their plain values; so every
    command passes every option the same way and a new option needs no line here."""
    names = inspect.signature(function).parameters
    picked = {name: values[renamed.get(name, name)] for name in names if renamed.get(name, name) in values}
    return {name: value.value if isinstance(value, enum.Enum) else value for name, value in picked.items()}


def command_options(values: dict[str, Any]) -> GenerateOptions:
    """What generate or animate was asked to render (their parameters: ``locals()`` at their first line)."""
    return generate_options(**command_values(generate_options, values))


def command_runtime(values: dict[str, Any]) -> Runtime:
    """Where and how generate, animate or batch run the models (their parameters, as for `command_options`)."""
    return runtime_options(**command_values(runtime_options, values, compile="compiled"), device=settings.device)


def draft_note(result: GenerateResult) -> None:
    """The line (stderr) that says what a draft left out and how to render the full version."""
    stderr.print(f"draft: {result.width}×{result.height}, {PRESET}; for the full render run the same command "
                 f"without --draft and with -o {full_output(result.output)}", highlight=False, soft_wrap=True)


class Parallel(str, enum.Enum):
    """How `animator batch` uses the processes of a torchrun / accelerate launch."""

    JOBS = "jobs"
    WINDOWS = "windows"


@contextlib.contextmanager
def rank_session(runtime: Runtime) -> Iterator[tuple[Runtime, Ranks]]:
    """(``runtime``, this process's `Ranks`) joined to the other processes of a torchrun / accelerate launch (one
    video on many GPUs); only rank 0 logs, shows progress and prints results, each rank prints only its own error."""
    from animator_cli.distributed import session

    with session(runtime) as (runtime, ranks):
        if not ranks.is_main:
            configure_logging(True, settings.verbose)
        yield runtime, ranks


@app.command("generate")
def generate(
    reference: Annotated[Path, typer.Argument(help="Reference image (the person to animate).")],
    poses: Annotated[Path, typer.Argument(help="Pose folder from `animator extract-pose`, or skeleton frames.")],
    output: Output,
    resolution: Resolution = ResolutionChoice["512x512"], width: Width = None, height: Height = None,
    fps: Fps = None, crf: Crf = 18, fit: FitOpt = Fit.COVER,
    frames_dir: Annotated[Path | None, typer.Option(
        "--frames-dir", help="Also write frame_<i>.png here.", rich_help_panel=OUTPUT)] = None,
    audio_from: Annotated[Path | None, typer.Option(
        "--audio-from", help="Mux this video's audio.", rich_help_panel=OUTPUT)] = None,
    force: Force = False,
    seed: Seed = DEFAULT_SEED, steps: Steps = _S.steps, guidance: Guidance = _S.max_guidance,
    min_guidance: MinGuidance = None, tile: Tile = _S.tile, overlap: Overlap = _S.overlap,
    noise_aug: NoiseAug = _S.noise_aug, motion_bucket: MotionBucket = _S.motion_bucket, checkpoint: Checkpoint = None,
    id_scale: IdScale = _S.id_scale, legacy_rgb_id: LegacyRgb = False, allow_no_face: AllowNoFace = False,
    face_opt: FaceOpt = False, face_opt_iters: FaceOptIters = _F.iters,
    face_opt_steps: FaceOptSteps = f"{_F.start}:{_F.end}", face_opt_lr: FaceOptLr = _F.lr,
    face_opt_margin: FaceOptMargin = None, identity_guard: IdentityGuard = None,
    guard_retries: GuardRetries = _G.retries, drift_lock: DriftLock = False,
    face_masks: Annotated[Path | None, typer.Option(
        "--face-masks", help="With --face-opt: folder of frame_<i>.png face masks instead of the pose keypoints.",
        rich_help_panel=IDENTITY)] = None,
    dtype: Dtype = None, offload: Offload = False, vae_on_cpu: VaeOnCpu = False, split_cfg: SplitCfg = False,
    compiled: CompileOpt = False, window_batch: WindowBatch = 1, decode_chunk: DecodeChunk = _S.decode_chunk,
    compile_mode: CompileMode = CompileModeChoice["default"], attention: Attention = AttentionChoice["auto"],
    fp8: Fp8 = False,
    report: Report = None, schedule: Schedule = ScheduleChoice[_S.schedule], reuse_features: ReuseFeatures = 1,
    draft: Draft = False,
) -> None:
    """Animate REFERENCE along the skeleton frames in POSES; writes an H.264 mp4."""
    options, runtime = command_options(locals()), command_runtime(locals())
    from animator_cli.generate import generate as generate_stage

    with rank_session(runtime) as (runtime, ranks), stage_display("generate", ranks.is_main) as progress:
        result = generate_stage(reference, poses, draft_output(output) if draft else output, options, runtime,
                                weights=settings.weights, cache=settings.cache, audio_from=audio_from,
                                frames_dir=frames_dir, face_masks=face_masks, force=force, progress=progress,
                                report=report, ranks=ranks)
    if ranks.is_main:
        emit(result.as_dict(), [result.output])
        if draft:
            draft_note(result)


@app.command("animate")
def animate(
    reference: Annotated[Path, typer.Argument(help="Reference image (the person to animate).")],
    driving: Annotated[Path, typer.Argument(help="Driving video (or frame folder) whose motion is copied.")],
    output: Output,
    resolution: Resolution = ResolutionChoice["512x512"], width: Width = None, height: Height = None,
    fps: Fps = None, crf: Crf = 18, fit: FitOpt = Fit.COVER, force: Force = False,
    align: Annotated[AlignChoice, typer.Option(
        "--align", help="Pose alignment to the reference: global scale+shift (the paper's), also the limbs' "
        "lengths, or none.", rich_help_panel=POSE)] = AlignChoice["global"],
    pose_backend: Annotated[BackendChoice, typer.Option(
        "--pose-backend", help="auto: DWPose if its weights are installed, else MediaPipe.", rich_help_panel=POSE)
    ] = BackendChoice["auto"],
    max_frames: Annotated[int | None, typer.Option(
        "--max-frames", min=1, help="Use only the first N frames.", rich_help_panel=POSE)] = None,
    seed: Seed = DEFAULT_SEED, steps: Steps = _S.steps, guidance: Guidance = _S.max_guidance,
    min_guidance: MinGuidance = None, tile: Tile = _S.tile, overlap: Overlap = _S.overlap,
    noise_aug: NoiseAug = _S.noise_aug, motion_bucket: MotionBucket = _S.motion_bucket, checkpoint: Checkpoint = None,
    id_scale: IdScale = _S.id_scale, legacy_rgb_id: LegacyRgb = False, allow_no_face: AllowNoFace = False,
    face_opt: FaceOpt = False, face_opt_iters: FaceOptIters = _F.iters,
    face_opt_steps: FaceOptSteps = f"{_F.start}:{_F.end}", face_opt_lr: FaceOptLr = _F.lr,
    face_opt_margin: FaceOptMargin = None, identity_guard: IdentityGuard = None,
    guard_retries: GuardRetries = _G.retries, drift_lock: DriftLock = False,
    dtype: Dtype = None, offload: Offload = False, vae_on_cpu: VaeOnCpu = False, split_cfg: SplitCfg = False,
    compiled: CompileOpt = False, window_batch: WindowBatch = 1, decode_chunk: DecodeChunk = _S.decode_chunk,
    compile_mode: CompileMode = CompileModeChoice["default"], attention: Attention = AttentionChoice["auto"],
    fp8: Fp8 = False,
    check: Check = CheckMode["warn"], report: Report = None, schedule: Schedule = ScheduleChoice[_S.schedule],
    reuse_features: ReuseFeatures = 1, draft: Draft = False,
) -> None:
    """Extract poses from DRIVING (aligned to REFERENCE), then generate; the driving audio is kept."""
    options, runtime = command_options(locals()), command_runtime(locals())
    from animator_cli.generate import animate as animate_stage

    with rank_session(runtime) as (runtime, ranks), stage_display("animate", ranks.is_main) as progress:
        result = animate_stage(reference, driving, draft_output(output) if draft else output, options, runtime,
                               weights=settings.weights, cache=settings.cache, align=align.value,
                               pose_backend=pose_backend.value, max_frames=max_frames, force=force,
                               progress=progress, check=check.value, report=report, ranks=ranks)
    if ranks.is_main:
        emit(result.as_dict(), [result.output])
        if draft:
            draft_note(result)


@app.command("batch")
def batch(
    jobs: Annotated[Path, typer.Argument(help="YAML file with an optional `defaults:` mapping and a `jobs:` list.")],
    shard: Annotated[str | None, typer.Option(
        "--shard", help="Run only jobs i, i+N, ... as I/N (default: RANK/WORLD_SIZE, else all).")] = None,
    force: Force = False, checkpoint: Checkpoint = None,
    parallel: Annotated[Parallel, typer.Option(
        "--parallel", help="Under torchrun / accelerate launch: each process runs its own jobs (jobs), or all "
        "render each job together, sharing its windows (windows; the first failed job stops the batch).",
        rich_help_panel=MEMORY)]
    = Parallel.JOBS,
    dtype: Dtype = None, offload: Offload = False, vae_on_cpu: VaeOnCpu = False, split_cfg: SplitCfg = False,
    compiled: CompileOpt = False, window_batch: WindowBatch = 1,
    compile_mode: CompileMode = CompileModeChoice["default"], attention: Attention = AttentionChoice["auto"],
    fp8: Fp8 = False,
) -> None:
    """Run many generate/animate jobs with the models loaded once; a failed job does not stop the others.

    Exit code: 0 if every job succeeded, else the first failed job's own code (2 bad input, 3 weights,
    4 out of memory, 1 internal error).

    A job: `reference`, `output`, and either `driving` (a video, as in `animate`) or `poses` (a folder, as in
    `generate`); any other generate/animate option by its long name, e.g. `steps: 30` or `face-opt: true`.
    Paths are relative to the YAML file; `defaults:` applies to every job it means something for. Example:

        defaults: {resolution: 576x1024, steps: 25}
        jobs:
          - {reference: alice.png, driving: dance.mp4, output: out/alice.mp4}
          - {reference: bob.jpg, poses: poses/wave, output: out/bob.mp4, seed: 7}
    """
    runtime = command_runtime(locals())
    windows = parallel is Parallel.WINDOWS
    if windows and shard is not None:
        raise InputError("--shard shares out jobs; --parallel windows runs every job on every process")
    from animator_cli.batch import JobOutcome, parse_shard, run_batch

    def report(outcome: JobOutcome) -> None:
        status = "[green]ok[/]" if outcome.ok else f"[red]failed:[/] {outcome.error}"
        stderr.print(f"job {outcome.index}: {outcome.output} {status}", highlight=False, soft_wrap=True)

    from animator_cli.distributed import Ranks

    with rank_session(runtime) if windows else contextlib.nullcontext((runtime, Ranks())) as (runtime, ranks):
        outcomes = run_batch(jobs, runtime, weights=settings.weights, cache=settings.cache,
                             shard=(0, 1) if windows else parse_shard(shard), force=force,
                             on_done=report if ranks.is_main else None, ranks=ranks)
    if not ranks.is_main:
        return
    failed = [o for o in outcomes if not o.ok]
    emit({"jobs": [{"index": o.index, "output": o.output, "ok": o.ok, "error": o.error,
                    "cached": o.result.cached if o.result else None} for o in outcomes],
          "failed": len(failed)}, [o.result.output for o in outcomes if o.ok])
    if failed:
        stderr.print(f"[bold red]{len(failed)} of {len(outcomes)} jobs failed[/]")
        raise typer.Exit(failed[0].exit_code)
