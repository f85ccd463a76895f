"""The generation stages Python users and the CLI call: `generate` (reference + pose frames → mp4) and
`animate` (reference + driving video → mp4: pose extraction aligned to the reference, identity, generation).

Every stage is cached: the rendered video is keyed by the reference, the pose frames, the identity embedding,
every option that changes pixels and the weights' signature, so a rerun with the same inputs copies the cached
video to the output without loading a model. Outputs are written under a temporary name and renamed when
complete, so an interrupted run leaves no partial mp4.

Output frame rate: ``fps`` when given, else the pose folder's ``meta.json`` fps (the driving video's rate for
folders written by `animator extract-pose`), else 25.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from animator_cli.cache import StageCache
from animator_cli.errors import InputError
from animator_cli.face import face_stage, load_identity
from animator_cli.fileio import atomic_path, ensure_writable_dir
from animator_cli.sampling.fit import Fit, fit_image
from animator_cli.sampling.pipeline import AnimationPipeline, Progress, SamplingOptions
from animator_cli.video import list_frames, load_image, mux_audio, write_frame, write_video
from animator_cli.weights.home import WeightsHome

log = logging.getLogger("animator")

DEFAULT_FPS = 25.0
DEFAULT_SEED = 23123134  # the released scripts' fixed seed
RESOLUTIONS = {"512x512": (512, 512), "576x1024": (576, 1024), "1024x576": (1024, 576)}
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
VIDEO_FILE = "video.mp4"


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

    def validate(self) -> None:
        for name, value in (("--width", self.width), ("--height", self.height)):
            if value < 64 or value % 64:
                raise InputError(f"{name} {value} is not a positive multiple of 64",
                                 "use e.g. --resolution 512x512, 576x1024 or 1024x576")
        s = self.sampling
        if s.steps < 1:
            raise InputError(f"--steps {s.steps} must be at least 1")
        if s.decode_chunk < 1:
            raise InputError(f"--decode-chunk {s.decode_chunk} must be at least 1")
        if not 0 <= s.noise_aug <= 1:
            raise InputError(f"--noise-aug {s.noise_aug} must be between 0 and 1")
        if not 0 <= self.crf <= 51:
            raise InputError(f"--crf {self.crf} must be between 0 and 51")
        if self.fps is not None and self.fps <= 0:
            raise InputError(f"--fps {self.fps} must be positive")


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


def load_pipeline(weights: WeightsHome, runtime: Runtime) -> AnimationPipeline:
    """Load every network once (on the CPU, then placed as ``runtime`` says)."""
    from animator_cli.models.loading import load_models

    models = load_models(weights, "cpu", runtime.torch_dtype(), checkpoint_dir=runtime.checkpoint_dir)
    return AnimationPipeline(models, runtime.torch_device(), runtime.torch_dtype(), offload=runtime.offload,
                             vae_on_cpu=runtime.vae_on_cpu, batch_cfg=runtime.batch_cfg)


def load_poses(folder: Path, width: int, height: int, fit: Fit) -> tuple[np.ndarray, float | None]:
    """Pose frames (F, H, W, 3) fitted to the output size, and the fps recorded in ``meta.json`` if any."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"pose folder {folder} does not exist",
                         "pass a folder written by `animator extract-pose`, or a folder of skeleton frames")
    frames = np.stack([fit_image(load_image(p), width, height, fit, pose=True) for p in list_frames(folder)])
    fps = None
    if (meta := folder / "meta.json").is_file():
        try:
            fps = float(json.loads(meta.read_text()).get("fps") or 0) or None
        except (ValueError, TypeError, AttributeError) as exc:
            raise InputError(f"{meta} is not valid JSON ({exc})", "rerun `animator extract-pose`") from exc
    return frames, fps


def weights_signature(weights: WeightsHome, checkpoint_dir: Path | None) -> dict[str, list[int]]:
    """Size and mtime of every weight file generation reads, so the cache follows a change of weights."""
    animation = Path(checkpoint_dir) if checkpoint_dir else weights.animation_dir
    files = [p for sub in ("unet", "vae", "image_encoder") for p in sorted((weights.svd_dir / sub).glob("*"))]
    files += sorted(p for p in animation.glob("*") if p.suffix in (".pth", ".safetensors"))
    return {str(p): [p.stat().st_size, p.stat().st_mtime_ns] for p in files if p.is_file()}


def generate(reference: Path, poses: Path, output: Path, options: GenerateOptions = GenerateOptions(),
             runtime: Runtime = Runtime(), *, weights: WeightsHome, cache: StageCache,
             pipeline: AnimationPipeline | None = None, audio_from: Path | None = None,
             frames_dir: Path | None = None, force: bool = False, progress: Progress | None = None) -> GenerateResult:
    """Animate ``reference`` along the skeleton frames in ``poses`` and write an H.264 mp4 to ``output``.

    ``audio_from`` muxes that video's audio; ``frames_dir`` also writes each frame as `frame_<i>.png` (this
    renders even when the video is cached). ``pipeline`` reuses loaded models (see `load_pipeline`).
    """
    options.validate()
    reference, poses, output = Path(reference), Path(poses), Path(output)
    if output.suffix.lower() != ".mp4":
        raise InputError(f"output {output} must end in .mp4")
    if audio_from is not None and not Path(audio_from).is_file():
        raise InputError(f"--audio-from {audio_from} does not exist")
    rgb = fit_image(load_image(reference), options.width, options.height, options.fit)
    pose_frames, pose_fps = load_poses(poses, options.width, options.height, options.fit)
    fps = options.fps or pose_fps or DEFAULT_FPS
    face_dir, _ = face_stage(reference, weights, cache, legacy_rgb=options.legacy_rgb_id,
                             allow_no_face=options.allow_no_face, device=runtime.device, force=force)
    identity = load_identity(face_dir).embedding

    params = {"options": asdict(options), "fps": fps, "dtype": str(runtime.torch_dtype()),
              "identity": hashlib.sha256(identity.tobytes()).hexdigest(),
              "weights": weights_signature(weights, runtime.checkpoint_dir)}
    entry = cache.entry("generate", [reference, poses], params)
    cached = entry.done and not force and frames_dir is None
    if cached:
        log.info("generation cached: %s", entry.path)
    else:
        pipeline = pipeline or load_pipeline(weights, runtime)
        generator = torch.Generator(device=pipeline.device).manual_seed(options.seed)
        frames = pipeline(rgb, pose_frames, identity, options.sampling, generator, progress)
        with entry.writing() as tmp:
            write_video(tmp / VIDEO_FILE, frames, fps, options.crf)
        if frames_dir is not None:
            ensure_writable_dir(frames_dir)
            for i, frame in enumerate(frames):
                write_frame(frames_dir, i, frame)
    _export(entry.path / VIDEO_FILE, output, audio_from)
    return GenerateResult(output, len(pose_frames), fps, options.width, options.height, cached,
                          Path(audio_from) if audio_from else None)


def _export(video: Path, output: Path, audio_from: Path | None) -> None:
    """Copy the cached silent video to ``output``, with ``audio_from``'s audio muxed in when given."""
    if audio_from is not None:
        mux_audio(video, Path(audio_from), output)
        return
    with atomic_path(output) as tmp:
        shutil.copyfile(video, tmp)
