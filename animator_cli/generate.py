"""The generation stages Python users and the CLI call: `generate` (reference + pose frames → mp4) and
`animate` (reference + driving video → mp4: pose extraction aligned to the reference, identity, generation).

Every stage is cached: the rendered video is keyed by the reference, the pose frames, the identity embedding,
every option that changes pixels and the weights' signature, so a rerun with the same inputs copies the cached
video to the output without loading a model. Outputs are written under a temporary name and renamed when
complete, so an interrupted run leaves no partial mp4.

Output frame rate: ``fps`` when given, else the pose folder's ``meta.json`` fps (the driving video's rate for
folders written by `animator extract-pose`), else 25.

``GenerateOptions.face_opt`` turns on the HJB face optimisation (`animator_cli.hjb`, docs/hjb.md).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from animator_cli.cache import StageCache
from animator_cli.errors import InputError
from animator_cli.face import face_stage, load_identity
from animator_cli.fileio import atomic_path, check_output_path, ensure_writable_dir
from animator_cli.hjb import FaceOptOptions, arcface_sources, build_refiner, parse_steps
from animator_cli.pose import extract_pose
from animator_cli.sampling.fit import Fit, fit_image
from animator_cli.sampling.pipeline import AnimationPipeline, Progress, SamplingOptions
from animator_cli.sampling.windows import window_indices
from animator_cli.video import (
    check_fps,
    check_min_size,
    list_frames,
    load_image,
    mux_audio,
    plan_audio,
    write_frame,
    write_video,
)
from animator_cli.weights.home import WeightsHome

log = logging.getLogger("animator")

DEFAULT_FPS = 25.0
DEFAULT_SEED = 23123134  # the released scripts' fixed seed
MAX_SEED = 2**63  # torch.Generator.manual_seed's range
MAX_SIDE = 4096  # larger outputs cannot fit in memory
MAX_STEPS = 1000  # the scheduler's training timesteps
RESOLUTIONS = {"512x512": (512, 512), "576x1024": (576, 1024), "1024x576": (1024, 576)}
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
VIDEO_FILE = "video.mp4"
_SAMPLING = SamplingOptions()
_FACE_OPT = FaceOptOptions()


@dataclass(frozen=True)
class GenerateOptions:
    """Everything that changes the pixels of the video (all of it goes into the cache key)."""

    width: int = 512
    height: int = 512
    seed: int = DEFAULT_SEED
    sampling: SamplingOptions = field(default_factory=SamplingOptions)
    fit: Fit = Fit.COVER
    fps: float | None = None
    crf: int = 18
    legacy_rgb_id: bool = False
    allow_no_face: bool = False
    face_opt: FaceOptOptions | None = None  # HJB face optimisation (animator_cli.hjb), off when None

    def validate(self) -> None:
        """Reject every out-of-range or non-finite value here, before any file is read or model loaded."""
        s = self.sampling
        for name, value in (("--width", self.width), ("--height", self.height), ("--seed", self.seed),
                            ("--steps", s.steps), ("--tile", s.tile), ("--overlap", s.overlap),
                            ("--motion-bucket", s.motion_bucket), ("--crf", self.crf),
                            ("--decode-chunk", s.decode_chunk)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise InputError(f"{name} {value!r} is not a whole number")
        for name, value in (("--width", self.width), ("--height", self.height)):
            if value < 64 or value % 64 or value > MAX_SIDE:
                raise InputError(f"{name} {value} is not a multiple of 64 between 64 and {MAX_SIDE}",
                                 "use e.g. --resolution 512x512, 576x1024 or 1024x576")
        if not 0 <= self.seed < MAX_SEED:
            raise InputError(f"--seed {self.seed} is out of range", f"use a seed between 0 and {MAX_SEED - 1}")
        window_indices(1, s.tile, s.overlap)  # bad tiling fails here, before any model is loaded
        if not 1 <= s.steps <= MAX_STEPS:
            raise InputError(f"--steps {s.steps} must be between 1 and {MAX_STEPS}")
        if s.decode_chunk < 1:
            raise InputError(f"--decode-chunk {s.decode_chunk} must be at least 1")
        if s.motion_bucket < 0:
            raise InputError(f"--motion-bucket {s.motion_bucket} must not be negative")
        for name, value in (("--guidance", s.max_guidance), ("--min-guidance", s.min_guidance),
                            ("--noise-aug", s.noise_aug), ("--id-scale", s.id_scale)):
            _finite(name, value)
        if not 0 <= s.noise_aug <= 1:
            raise InputError(f"--noise-aug {s.noise_aug} must be between 0 and 1")
        if not 0 <= self.crf <= 51:
            raise InputError(f"--crf {self.crf} must be between 0 and 51")
        if self.fps is not None:
            check_fps(_finite("--fps", self.fps, allow_inf=True))
        if self.face_opt is not None:
            _finite("--face-opt-lr", self.face_opt.lr)
            self.face_opt.validate()
            if self.face_opt.start >= s.steps:
                raise InputError(f"--face-opt-steps starts at step {self.face_opt.start} of {s.steps}",
                                 "use a START below --steps")


def _finite(name: str, value: object, allow_inf: bool = False) -> float:
    """``value`` as a float; an InputError for non-numbers, NaN and (unless ``allow_inf``) ±inf."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"{name} {value!r} is not a usable number") from None
    if math.isnan(number) or (math.isinf(number) and not allow_inf):
        raise InputError(f"{name} {value} is not a finite number")
    return number


@dataclass(frozen=True)
class Runtime:
    """Where and how the models run. ``dtype`` None picks fp16 on GPUs (the release's choice), fp32 on CPU."""

    device: str | None = None
    dtype: str | None = None
    offload: bool = False
    vae_on_cpu: bool = False
    batch_cfg: bool = True
    checkpoint_dir: Path | None = None

    def torch_device(self) -> torch.device:
        return torch.device(self.device or ("cuda" if torch.cuda.is_available() else "cpu"))

    def torch_dtype(self) -> torch.dtype:
        name = self.dtype or ("fp32" if self.torch_device().type == "cpu" else "fp16")
        if name not in DTYPES:
            raise InputError(f"unknown --dtype {name}", f"choose from {', '.join(DTYPES)}")
        return DTYPES[name]


@dataclass(frozen=True)
class GenerateResult:
    output: Path
    frames: int
    fps: float
    width: int
    height: int
    cached: bool
    audio_from: Path | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}


PipelineLoader = Callable[[], AnimationPipeline]


def make_options(resolution: str = "512x512", width: int | None = None, height: int | None = None,
                  seed: int = DEFAULT_SEED, steps: int = _SAMPLING.steps, guidance: float = _SAMPLING.max_guidance,
                  min_guidance: float | None = None, tile: int = _SAMPLING.tile, overlap: int = _SAMPLING.overlap,
                  noise_aug: float = _SAMPLING.noise_aug, motion_bucket: int = _SAMPLING.motion_bucket,
                  fps: float | None = None, id_scale: float = _SAMPLING.id_scale, crf: int = 18, fit: Fit = Fit.COVER,
                  decode_chunk: int = _SAMPLING.decode_chunk, legacy_rgb_id: bool = False,
                  allow_no_face: bool = False, face_opt: bool = False, face_opt_iters: int = _FACE_OPT.iters,
                  face_opt_steps: str = f"{_FACE_OPT.start}:{_FACE_OPT.end}",
                  face_opt_lr: float = _FACE_OPT.lr, face_opt_margin: int | None = None) -> GenerateOptions:
    """GenerateOptions from the CLI's values (`batch` job entries use the same names)."""
    if resolution not in RESOLUTIONS:
        raise InputError(f"unknown --resolution {resolution}", f"choose from {', '.join(RESOLUTIONS)}")
    if fit not in list(Fit):
        raise InputError(f"unknown --fit {fit}", f"choose from {', '.join(f.value for f in Fit)}")
    preset_w, preset_h = RESOLUTIONS[resolution]
    sampling = SamplingOptions(steps=steps, min_guidance=guidance if min_guidance is None else min_guidance,
                               max_guidance=guidance, tile=tile, overlap=overlap, noise_aug=noise_aug,
                               motion_bucket=motion_bucket, id_scale=id_scale, decode_chunk=decode_chunk)
    options = GenerateOptions(width=preset_w if width is None else width,
                              height=preset_h if height is None else height, seed=seed, sampling=sampling,
                              fit=Fit(fit), fps=fps, crf=crf, legacy_rgb_id=legacy_rgb_id,
                              allow_no_face=allow_no_face,
                              face_opt=FaceOptOptions(face_opt_iters, *parse_steps(face_opt_steps), face_opt_lr,
                                                      face_opt_margin)
                              if face_opt else None)
    options.validate()
    return options


def load_pipeline(weights: WeightsHome, runtime: Runtime) -> AnimationPipeline:
    """Load every network once, straight onto its device (the CPU when offloading), placed as ``runtime`` says."""
    from animator_cli.models.loading import load_models

    home = torch.device("cpu") if runtime.offload else runtime.torch_device()  # no detour through host RAM
    models = load_models(weights, home, runtime.torch_dtype(), checkpoint_dir=runtime.checkpoint_dir)
    return AnimationPipeline(models, runtime.torch_device(), runtime.torch_dtype(), offload=runtime.offload,
                             vae_on_cpu=runtime.vae_on_cpu, batch_cfg=runtime.batch_cfg)


def lazy_pipeline(weights: WeightsHome, runtime: Runtime) -> PipelineLoader:
    """A loader that reads the models on its first call only, so cached runs never load them and many runs
    (``animator batch``) share one copy."""
    return functools.cache(lambda: load_pipeline(weights, runtime))


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


def load_poses(paths: list[Path], width: int, height: int, fit: Fit) -> np.ndarray:
    """Pose frames (F, H, W, 3) uint8 fitted to the output size like the reference."""
    return np.stack([fit_image(load_image(p), width, height, fit, pose=True) for p in paths])


def weights_signature(weights: WeightsHome, checkpoint_dir: Path | None,
                      face_opt: bool = False) -> dict[str, list[int]]:
    """Size and mtime of every weight file generation reads, so the cache follows a change of weights."""
    animation = Path(checkpoint_dir) if checkpoint_dir else weights.animation_dir
    files = [p for sub in ("unet", "vae", "image_encoder") for p in sorted((weights.svd_dir / sub).glob("*"))]
    files += sorted(p for p in animation.glob("*") if p.suffix in (".pth", ".safetensors"))
    files += arcface_sources(weights) if face_opt else []
    return {str(p): [p.stat().st_size, p.stat().st_mtime_ns] for p in files if p.is_file()}


def generate(reference: Path, poses: Path, output: Path, options: GenerateOptions = GenerateOptions(),
             runtime: Runtime = Runtime(), *, weights: WeightsHome, cache: StageCache,
             pipeline: PipelineLoader | None = None, audio_from: Path | None = None,
             frames_dir: Path | None = None, face_masks: Path | None = None, force: bool = False,
             progress: Progress | None = None) -> GenerateResult:
    """Animate ``reference`` along the skeleton frames in ``poses`` and write an H.264 mp4 to ``output``.

    ``audio_from`` muxes that video's audio; ``frames_dir`` also writes each frame as `frame_<i>.png` (this
    renders even when the video is cached). ``pipeline`` returns loaded models (see `lazy_pipeline`); it is
    called only when the video must be rendered. With ``options.face_opt``, the face boxes come from
    ``face_masks`` (frame_<i>.png masks) when given, else from the pose folder's keypoints.npz.
    """
    options.validate()
    reference, poses, output = Path(reference), Path(poses), Path(output)
    inputs = [reference, poses, audio_from, face_masks]
    _check_output(output, inputs)
    if audio_from is not None and not Path(audio_from).is_file():
        what = "is a folder" if Path(audio_from).is_dir() else "does not exist"
        raise InputError(f"--audio-from {audio_from} {what}", "pass a video or audio file")
    if face_masks is not None and (options.face_opt is None or not Path(face_masks).is_dir()):
        raise InputError(f"--face-masks {face_masks} needs --face-opt and must be a folder of frame_<i>.png")
    source = load_image(reference)
    check_min_size(reference, "reference image", source.shape[1], source.shape[0])
    rgb = fit_image(source, options.width, options.height, options.fit)
    frame_paths = pose_frames(poses)
    if frames_dir is not None:
        check_output_path(frames_dir, [*inputs, output],
                                  names=(f"frame_{i}.png" for i in range(len(frame_paths))))
    if audio_from is not None and plan_audio(Path(audio_from)) is None:  # unusable audio: known now, not at the end
        audio_from = None
    fps = options.fps or pose_fps(poses) or DEFAULT_FPS
    face_dir, _ = face_stage(reference, weights, cache, legacy_rgb=options.legacy_rgb_id,
                             allow_no_face=options.allow_no_face, device=runtime.device, force=force)
    face = load_identity(face_dir)
    identity = face.embedding

    # The device changes the random draws (CPU and CUDA generators differ) and --vae-on-cpu the VAE's precision.
    params = {"options": asdict(options), "fps": fps, "dtype": str(runtime.torch_dtype()),
              "device": runtime.torch_device().type, "vae_on_cpu": runtime.vae_on_cpu,
              "identity": hashlib.sha256(identity.tobytes()).hexdigest(),
              "weights": weights_signature(weights, runtime.checkpoint_dir, options.face_opt is not None)}
    entry = cache.entry("generate", [reference, poses, *([face_masks] if face_masks else [])], params)
    cached = entry.done and not force and frames_dir is None
    if cached:
        log.info("generation cached: %s", entry.path)
    else:
        refine = None if options.face_opt is None else build_refiner(
            rgb, source.shape[1::-1], face, poses, len(frame_paths), options.face_opt, fit=options.fit,
            steps=options.sampling.steps, chunk=options.sampling.decode_chunk, weights=weights, masks=face_masks)
        animation = (pipeline or lazy_pipeline(weights, runtime))()
        frames = load_poses(frame_paths, options.width, options.height, options.fit)
        generator = torch.Generator(device=animation.device).manual_seed(options.seed)
        video = animation(rgb, frames, identity, options.sampling, generator, progress, refine=refine)
        with entry.writing() as tmp:
            write_video(tmp / VIDEO_FILE, video, fps, options.crf)
        if frames_dir is not None:
            ensure_writable_dir(frames_dir)
            for i, frame in enumerate(video):
                write_frame(frames_dir, i, frame)
    _export(entry.path / VIDEO_FILE, output, audio_from)
    return GenerateResult(output, len(frame_paths), fps, options.width, options.height, cached,
                          Path(audio_from) if audio_from else None)


def animate(reference: Path, driving: Path, output: Path, options: GenerateOptions = GenerateOptions(),
            runtime: Runtime = Runtime(), *, weights: WeightsHome, cache: StageCache,
            pipeline: PipelineLoader | None = None, align: str = "global", pose_backend: str = "auto",
            max_frames: int | None = None, force: bool = False, progress: Progress | None = None) -> GenerateResult:
    """Animate ``reference`` with the motion of the ``driving`` video: pose extraction aligned to the
    reference, identity, generation, the driving audio muxed in. Each stage is cached."""
    options.validate()
    _check_output(Path(output), [reference, driving])
    if not Path(driving).exists():
        raise InputError(f"driving video {driving} does not exist")
    poses = extract_pose(Path(driving), reference=Path(reference), align=align, backend=pose_backend,
                         max_frames=max_frames, weights=weights, cache=cache, device=runtime.device, force=force)
    audio = Path(driving) if Path(driving).is_file() else None
    return generate(reference, poses, output, options, runtime, weights=weights, cache=cache, pipeline=pipeline,
                    audio_from=audio, force=force, progress=progress)


def _check_output(output: Path, inputs: list[Path | None]) -> None:
    """An .mp4 output that is none of the inputs: checked before any work."""
    if output.suffix.lower() != ".mp4":
        raise InputError(f"output {output} must end in .mp4")
    check_output_path(output, inputs)


def _export(video: Path, output: Path, audio_from: Path | None) -> None:
    """Copy the cached silent video to ``output``, with ``audio_from``'s audio muxed in when given."""
    if audio_from is not None:
        mux_audio(video, Path(audio_from), output)
        return
    with atomic_path(output) as tmp:
        shutil.copyfile(video, tmp)
