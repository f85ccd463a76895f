"""The generation stages Python users and the CLI call: `generate` (reference + pose frames → mp4) and
`animate` (reference + driving video → mp4: pose extraction aligned to the reference, identity, generation).

Every stage is cached: the rendered video is keyed by the reference, the pose frames, the identity embedding,
every option that changes pixels and the weights' signature, so a rerun with the same inputs copies the cached
video to the output without loading a model. Outputs are written under a temporary name and renamed when
complete, so an interrupted run leaves no partial mp4.

Output frame rate: ``fps`` when given, else the pose folder's ``meta.json`` fps (the driving video's rate for
folders written by `animator extract-pose`), else 25.

``GenerateOptions.face_opt`` turns on the HJB face optimisation (`animator_cli.hjb`, docs/hjb.md);
``identity_guard`` and ``drift_lock`` the repairs after the render (`animator_cli.guard`), whose record is kept
beside the cached video (REPAIRS_FILE) and returned in `GenerateResult`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from animator_cli.cache import CacheEntry, StageCache
from animator_cli.check.report import preflight
from animator_cli.device import device_type
from animator_cli.distributed import Ranks
from animator_cli.errors import InputError, option_error, require_file
from animator_cli.face import FaceIdentity, face_stage, load_identity
from animator_cli.fileio import atomic_path, check_output_path
from animator_cli.options import DEFAULT_FPS, GenerateOptions, Runtime
from animator_cli.pose import extract_pose
from animator_cli.pose.backend import resolve_backend
from animator_cli.progress import Progress, stage
from animator_cli.sampling.fit import fit_image
from animator_cli.video import (
    check_fps,
    check_min_size,
    list_frames,
    load_image,
    mux_audio,
    plan_audio,
)
from animator_cli.video.frame_output import frame_output
from animator_cli.weights.home import WeightsHome, resolve_checkpoint_dir

if TYPE_CHECKING:  # torch, diffusers and the models load only when a video is rendered, never on a cached rerun
    from animator_cli.models.loading import AnimatorModels
    from animator_cli.sampling.flops import UNetWork
    from animator_cli.sampling.pipeline import AnimationPipeline

log = logging.getLogger("animator")

VIDEO_FILE = "video.mp4"
REPAIRS_FILE = "repairs.json"  # the identity guard's and drift lock's record, beside the video in its cache entry


@dataclass(frozen=True)
class GenerateResult:
    output: Path
    frames: int
    fps: float
    width: int
    height: int
    cached: bool
    audio_from: Path | None = None
    unet_calls: int = 0  # the UNet calls this run made (0 when the video came from the cache)
    unet_shallow_calls: int = 0  # of which shallow-branch calls (--reuse-features)
    unet_tflop: float = 0.0  # their compute, counted (animator_cli.sampling.flops)
    identity_guard: dict[str, Any] | None = None  # `animator_cli.guard.identity.GuardRecord.as_dict`, when on
    drift_lock: list[dict[str, Any]] | None = None  # each window's colour correction, when on

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields; the repairs' records only when they ran."""
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()
                if v is not None or k not in ("identity_guard", "drift_lock")}


PipelineLoader = Callable[[], "AnimationPipeline"]


def load_pipeline(weights: WeightsHome, runtime: Runtime, models: AnimatorModels | None = None,
                  ranks: Ranks | None = None) -> AnimationPipeline:
    """Load every network once, straight onto its device (the CPU when offloading), placed (and compiled,
    quantised) as ``runtime`` says; ``models`` already built (e.g. benchmarks' random ones) are used instead of
    reading ``weights``. ``ranks``: the processes rendering each video together (`animator_cli.distributed`)."""
    with stage("loading models"):  # importing torch and diffusers is part of it: seconds
        import torch

        from animator_cli.models.backends import configure_process
        from animator_cli.models.loading import load_models
        from animator_cli.sampling.pipeline import AnimationPipeline

        configure_process(runtime)
        if runtime.fp8:  # before any weight is read: a GPU or torchao missing is said at once
            from animator_cli.models.fp8 import check_fp8

            check_fp8(runtime.torch_device())
        if models is None:
            home = torch.device("cpu") if runtime.offload else runtime.torch_device()  # no detour through host RAM
            models = load_models(weights, home, runtime.torch_dtype(), checkpoint_dir=runtime.checkpoint_dir)
        pipeline = AnimationPipeline(models, runtime.torch_device(), runtime.torch_dtype(), offload=runtime.offload,
                                     vae_on_cpu=runtime.vae_on_cpu, batch_cfg=runtime.batch_cfg,
                                     window_batch=runtime.window_batch, ranks=ranks,
                                     attention=runtime.attention, channels_last_3d=runtime.channels_last_3d)
        if runtime.temporal_conv_2d:
            from animator_cli.models.temporal_conv import use_temporal_conv_2d

            use_temporal_conv_2d(models.unet)
            use_temporal_conv_2d(models.vae)
        if runtime.fp8:
            from animator_cli.models.fp8 import quantize_fp8

            quantize_fp8(models.unet)
        if runtime.compile:
            from animator_cli.models.compile import compile_models

            compile_models(models.unet, models.vae, mode=runtime.compile_mode)
        return pipeline


def lazy_pipeline(weights: WeightsHome, runtime: Runtime, ranks: Ranks | None = None) -> PipelineLoader:
    """A loader that reads the models on its first call only, so cached runs never load them and many runs
    (``animator batch``) share one copy."""
    return functools.cache(lambda: load_pipeline(weights, runtime, ranks=ranks))


def pose_frames(folder: Path) -> list[Path]:
    """The skeleton images of a pose folder, in frame order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"pose folder {folder} does not exist",
                         "pass a folder written by `animator extract-pose`, or a folder of skeleton frames")
    return list_frames(folder)


def pose_fps(folder: Path) -> float | None:
    """The frame rate recorded in a pose folder's ``meta.json`` (the driving video's), if any."""
    meta = Path(folder) / "meta.json"
    if not meta.is_file():
        return None
    try:
        fps = float(json.loads(meta.read_text()).get("fps") or 0)
        return check_fps(fps) if fps else None
    except (ValueError, TypeError, AttributeError, OverflowError, InputError) as exc:
        raise InputError(f"{meta} is not a valid pose meta.json ({exc})", "rerun `animator extract-pose`") from exc


def weights_signature(weights: WeightsHome, checkpoint_dir: Path | None,
                      face_opt: bool = False) -> dict[str, list[int]]:
    """Size and mtime of every weight file generation reads, so the cache follows a change of weights."""
    # RUN and RUN/latest stand for the run's newest checkpoint: its files, not the folder's name, make the key
    animation = resolve_checkpoint_dir(Path(checkpoint_dir)) if checkpoint_dir else weights.animation_dir
    files = [p for sub in ("unet", "vae", "image_encoder") for p in sorted((weights.svd_dir / sub).glob("*"))]
    files += sorted(p for p in animation.glob("*") if p.suffix in (".pth", ".safetensors"))
    files += weights.arcface_files() if face_opt else []
    return {str(p): [p.stat().st_size, p.stat().st_mtime_ns] for p in files if p.is_file()}


def needed_weights(runtime: Runtime, pose_backend: str | None = None) -> list[str]:
    """The weights components a render reads (`WeightsHome.component` keys): SVD, the StableAnimator checkpoints
    unless ``runtime.checkpoint_dir`` replaces them, antelopev2 (face stage; its glintr100 is also --face-opt's
    ArcFace), and DWPose when ``pose_backend`` asks for it by name."""
    keys = ["svd", *([] if runtime.checkpoint_dir else ["animation"]), "antelopev2"]
    return keys + (["dwpose"] if pose_backend == "dwpose" else [])


def check_inputs(reference: Path, output: Path | None, options: GenerateOptions, runtime: Runtime, *,
                 driving: Path | None = None, poses: Path | None = None, audio_from: Path | None = None,
                 face_masks: Path | None = None) -> None:
    """Option values, then input and output paths (the output, when there is one, may be none of the inputs):
    checked before any work and without importing anything heavy."""
    options.validate()
    runtime.validate()
    if driving is not None and not Path(driving).exists():
        raise InputError(f"driving video {driving} does not exist")
    if output is not None:
        check_output(output, [reference, driving, poses, audio_from, face_masks])
    require_file(reference, "reference image")
    if audio_from is not None:
        require_file(audio_from, "audio_from", option="audio_from")
    if face_masks is not None and (options.face_opt is None or not Path(face_masks).is_dir()):
        raise InputError(f"face_masks {face_masks} needs face_opt and must be a folder of frame_<i>.png",
                         option="face_masks")


def check_output(output: Path, inputs: list[Path | None]) -> None:
    """An mp4 path that is none of ``inputs`` and can be written."""
    if Path(output).suffix.lower() != ".mp4":
        raise InputError(f"output {output} must end in .mp4")
    check_output_path(Path(output), inputs)


def check_weights(weights: WeightsHome, runtime: Runtime, pose_backend: str | None = None) -> None:
    """Every weights component the render needs (all missing ones in one error), and a usable pose backend."""
    weights.require_components(needed_weights(runtime, pose_backend))
    if pose_backend is not None:
        resolve_backend(pose_backend, weights)  # an unknown name, or `auto` with neither DWPose nor MediaPipe


@dataclass(frozen=True)
class Rendered:
    """A render in the stage cache: its silent H.264 ``video`` and what `export` needs to write the output."""

    video: Path
    result: GenerateResult  # its ``output`` is the cache's video until `export` writes elsewhere
    options: GenerateOptions


def render(reference: Path, poses: Path, options: GenerateOptions = GenerateOptions(),
           runtime: Runtime = Runtime(), *, weights: WeightsHome, cache: StageCache,
           pipeline: PipelineLoader | None = None, audio_from: Path | None = None, frames_dir: Path | None = None,
           face_masks: Path | None = None, force: bool = False, progress: Progress | None = None,
           ranks: Ranks | None = None, outputs: list[Path] | None = None, check: str = "warn") -> Rendered:
    """Animate ``reference`` along the skeleton frames in ``poses`` into the stage cache (or find it there): the
    step `generate` and the Python API (`animator_cli.Animator`) share. ``outputs``: paths to be written after it,
    that ``frames_dir`` must not clash with. ``check`` strict: a reference without a face stops an identity-guarded
    render (InputError) instead of skipping the guard with a warning."""
    reference, poses = Path(reference), Path(poses)
    check_inputs(reference, None, options, runtime, poses=poses, audio_from=audio_from, face_masks=face_masks)
    frame_paths = pose_frames(poses)
    if frames_dir is not None:
        check_output_path(frames_dir, [reference, poses, audio_from, face_masks, *(outputs or [])],
                          names=(f"frame_{i}.png" for i in range(len(frame_paths))))
    check_weights(weights, runtime)
    if audio_from is not None and plan_audio(Path(audio_from)) is None:  # unusable audio: known now, not at the end
        audio_from = None
    source = load_image(reference)
    check_min_size(reference, "reference image", source.shape[1], source.shape[0])
    rgb = fit_image(source, options.width, options.height, options.fit)
    fps = options.fps or pose_fps(poses) or DEFAULT_FPS
    ranks = ranks or Ranks()  # in a window-parallel run, rank 0 runs the cached stages and writes the output
    face_dir, _ = ranks.on_main(lambda: face_stage(reference, weights, cache, legacy_rgb=options.legacy_rgb_id,
                                                   allow_no_face=options.allow_no_face, device=runtime.device,
                                                   force=force))
    face = load_identity(face_dir)
    options = _guard_for(options, face, check, ranks)

    # The device changes the random draws (CPU and CUDA generators differ) and --vae-on-cpu the VAE's precision.
    params = {"options": cache_options(options), "fps": fps, "dtype": f"torch.{runtime.dtype_name()}",
              "device": device_type(runtime.device_name()), "vae_on_cpu": runtime.vae_on_cpu,
              **({"fp8": True} if runtime.fp8 else {}),  # lossy; absent otherwise, so earlier entries still hit
              "identity": hashlib.sha256(face.embedding.tobytes()).hexdigest(),
              "weights": weights_signature(weights, runtime.checkpoint_dir,
                                           options.face_opt is not None or options.identity_guard is not None)}
    entry = cache.entry("generate", [reference, poses, *([face_masks] if face_masks else [])], params)
    cached = ranks.on_main(lambda: entry.done and not force and frames_dir is None)
    result = GenerateResult(entry.path / VIDEO_FILE, len(frame_paths), fps, options.width, options.height, cached,
                            Path(audio_from) if audio_from else None)
    if cached:
        log.info("generation cached: %s", entry.path)
    else:
        work = _render(entry, rgb=rgb, source_size=source.shape[1::-1], face=face, reference=reference, poses=poses,
                       frame_paths=frame_paths, fps=fps, options=options, runtime=runtime, weights=weights,
                       pipeline=pipeline, frames_dir=frames_dir, face_masks=face_masks, progress=progress,
                       force=force, ranks=ranks)
        log.info("UNet work: %d calls (%d shallow), %.4g TFLOP", work.calls, work.shallow_calls, work.tflop)
        result = replace(result, unet_calls=work.calls, unet_shallow_calls=work.shallow_calls, unet_tflop=work.tflop)
    if ranks.is_main and (entry.path / REPAIRS_FILE).is_file():
        result = replace(result, **json.loads((entry.path / REPAIRS_FILE).read_text()))
    return Rendered(entry.path / VIDEO_FILE, result, options)


def cache_options(options: GenerateOptions) -> dict[str, Any]:
    """The options as the cache key holds them: the repairs' settings only when they are on, so the key of every
    render without them is what it was before they existed."""
    values = asdict(options)
    for name in ("identity_guard", "drift_lock"):
        if not values[name]:
            del values[name]
    return values


def _guard_for(options: GenerateOptions, face: FaceIdentity, check: str, ranks: Ranks) -> GenerateOptions:
    """``options`` without the identity guard when the reference shows no face (one warning; an InputError under
    ``check`` strict); the repairs run in one process only."""
    if ranks.parallel and (options.identity_guard is not None or options.drift_lock):
        raise option_error("identity_guard" if options.identity_guard is not None else "drift_lock", None,
                           "runs in a single process", "render without --parallel windows / torchrun, or without it")
    if options.identity_guard is None or face.found:
        return options
    if check == "strict":
        raise option_error("identity_guard", None, "needs a face in the reference image, and none was found",
                           "use a reference photo with a visible face, or drop the identity guard")
    log.warning("identity guard skipped: no face in the reference image to compare the frames with")
    return replace(options, identity_guard=None)


def generate(reference: Path, poses: Path, output: Path, options: GenerateOptions = GenerateOptions(),
             runtime: Runtime = Runtime(), *, weights: WeightsHome, cache: StageCache,
             pipeline: PipelineLoader | None = None, audio_from: Path | None = None,
             frames_dir: Path | None = None, face_masks: Path | None = None, force: bool = False,
             progress: Progress | None = None, report: Path | None = None,
             ranks: Ranks | None = None, check: str = "warn") -> GenerateResult:
    """Animate ``reference`` along the skeleton frames in ``poses`` and write an H.264 mp4 to ``output``.

    ``audio_from`` muxes that video's audio; ``frames_dir`` also writes each frame as `frame_<i>.png` (this
    renders even when the video is cached). ``pipeline`` returns loaded models (see `lazy_pipeline`); it is
    called only when the video must be rendered. With ``options.face_opt``, the face boxes come from
    ``face_masks`` (frame_<i>.png masks) when given, else from the pose folder's keypoints.npz.
    A cached video is found without importing torch: the cache key needs only file hashes and parameters.
    """
    output = Path(output)
    check_inputs(Path(reference), output, options, runtime, poses=Path(poses), audio_from=audio_from,
                 face_masks=face_masks)
    ranks = ranks or Ranks()
    rendered = render(reference, poses, options, runtime, weights=weights, cache=cache, pipeline=pipeline,
                      audio_from=audio_from, frames_dir=frames_dir, face_masks=face_masks, force=force,
                      progress=progress, ranks=ranks, outputs=[output], check=check)
    result = replace(rendered.result, output=output)
    if not ranks.is_main:  # rank 0 writes the output
        return result
    export(rendered.video, output, result.audio_from)
    if report is not None:  # the identity timeline of the video just written (animator_cli.check.timeline)
        from animator_cli.check.timeline import write_identity_report

        write_identity_report(report, output, reference, weights=weights, device=runtime.device, fps=result.fps,
                              guard=result.identity_guard, **timeline_marks(options, result))
    return result


def timeline_marks(options: GenerateOptions, result: GenerateResult | None = None) -> dict[str, Any]:
    """What the identity timeline marks on its plot: the windows' tiling, HJB's steps, the repaired windows."""
    guard = result.identity_guard if result is not None else None
    return {"tile": options.sampling.tile, "overlap": options.sampling.overlap,
            "hjb_steps": (options.face_opt.start, options.face_opt.end) if options.face_opt else None,
            "repaired": tuple(w["window"] for w in guard["windows"] if w["kept"] != "render") if guard else ()}


def _render(entry: CacheEntry, *, rgb: np.ndarray, source_size: tuple[int, int], face: FaceIdentity,
            reference: Path, poses: Path, frame_paths: list[Path], fps: float, options: GenerateOptions,
            runtime: Runtime, weights: WeightsHome, pipeline: PipelineLoader | None, frames_dir: Path | None,
            face_masks: Path | None, progress: Progress | None, force: bool, ranks: Ranks) -> UNetWork:
    """Render the video into the cache ``entry`` (and ``frames_dir``); the only part that needs torch. ``force``
    replaces an entry that another process finished meanwhile (it is kept otherwise). Poses are read and frames
    encoded chunk by chunk as the pipeline needs and decodes them, so memory does not grow with the length. Returns
    the UNet work of the render (every rank's) and of the identity guard's passes."""
    import torch

    from animator_cli.hjb import build_refiner
    from animator_cli.sampling.pose_frames import FittedPoses

    animation = (pipeline or lazy_pipeline(weights, runtime, ranks))()
    refiner = functools.partial(
        build_refiner, rgb, source_size, face, poses, len(frame_paths), fit=options.fit,
        steps=options.sampling.steps, chunk=options.sampling.decode_chunk, weights=weights, masks=face_masks,
        ranks=ranks, device="cpu" if runtime.vae_on_cpu else animation.device)  # where the VAE decodes for HJB
    refine = None if options.face_opt is None else refiner(options.face_opt)
    skeletons = FittedPoses(frame_paths, options.width, options.height, options.fit)
    generator = torch.Generator(device=animation.device).manual_seed(options.seed)
    args = (rgb, skeletons, face.embedding, options.sampling, generator, progress)
    if not ranks.is_main:  # rank 0 decodes and writes the video
        animation(*args, refine=refine)
        return animation.work
    with entry.writing(replace=force) as tmp, frame_output(tmp / VIDEO_FILE, fps, options.crf, frames_dir) as sink:
        if options.identity_guard is None and not options.drift_lock:
            animation(*args, refine=refine, sink=sink)
            return animation.work
        from animator_cli.guard.run import repaired_render

        work, record = repaired_render(animation, animation.sample(*args, refine=refine), options, sink,
                                       reference=reference, skeletons=skeletons, weights=weights,
                                       device=runtime.device, refiner=refiner)
        (tmp / REPAIRS_FILE).write_text(json.dumps(record, indent=1))
    return work


def animate(reference: Path, driving: Path, output: Path, options: GenerateOptions = GenerateOptions(),
            runtime: Runtime = Runtime(), *, weights: WeightsHome, cache: StageCache,
            pipeline: PipelineLoader | None = None, align: str = "global", pose_backend: str = "auto",
            max_frames: int | None = None, force: bool = False, progress: Progress | None = None,
            check: str = "warn", report: Path | None = None, ranks: Ranks | None = None) -> GenerateResult:
    """Animate ``reference`` with the motion of the ``driving`` video: pose extraction aligned to the
    reference, identity, generation, the driving audio muxed in. Each stage is cached. Options, paths and
    weights are all checked before the pose stage starts; in a window-parallel run rank 0 runs the check and the
    pose stage.

    ``check``: the alignment preflight first (`animator check`; warn logs, strict stops on a warning, off).
    ``report``: also write the identity timeline of the result into that folder."""
    check_inputs(Path(reference), Path(output), options, runtime, driving=Path(driving))
    ranks = ranks or Ranks()
    poses = driving_poses(reference, driving, runtime, weights=weights, cache=cache, align=align,
                          pose_backend=pose_backend, max_frames=max_frames, force=force, progress=progress,
                          check=check, ranks=ranks)
    return generate(reference, poses, output, options, runtime, weights=weights, cache=cache, pipeline=pipeline,
                    audio_from=driving_audio(driving), force=force, progress=progress, report=report, ranks=ranks,
                    check=check)


def driving_poses(reference: Path, driving: Path, runtime: Runtime, *, weights: WeightsHome, cache: StageCache,
                  align: str = "global", pose_backend: str = "auto", max_frames: int | None = None,
                  force: bool = False, progress: Progress | None = None, check: str = "warn",
                  ranks: Ranks | None = None) -> Path:
    """The pose folder of ``driving`` aligned to ``reference`` (cached), after the alignment preflight ``check``;
    run by rank 0 of a window-parallel run."""
    if not Path(driving).exists():
        raise InputError(f"driving video {driving} does not exist")
    check_weights(weights, runtime, pose_backend)
    ranks = ranks or Ranks()
    ranks.on_main(lambda: preflight(reference, driving, check, weights=weights, cache=cache, align=align,
                                    backend=pose_backend, device=runtime.device, max_frames=max_frames))
    return ranks.on_main(lambda: extract_pose(
        Path(driving), reference=Path(reference), align=align, backend=pose_backend, max_frames=max_frames,
        weights=weights, cache=cache, device=runtime.device, force=force, progress=progress))


def driving_audio(driving: Path) -> Path | None:
    """Where an animation's audio comes from: the driving video (not a frame folder)."""
    return Path(driving) if Path(driving).is_file() else None


def export(video: Path, output: Path, audio_from: Path | None) -> None:
    """Copy the cached silent video to ``output`` (whole, or not at all), with ``audio_from``'s audio muxed in
    when given."""
    if audio_from is not None:
        mux_audio(video, Path(audio_from), output)
        return
    with atomic_path(output) as tmp:
        shutil.copyfile(video, tmp)
