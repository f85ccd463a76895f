"""What a render is asked to do: generation, sampling and face-optimisation options, where the models run, and
the validation of all of it.

Nothing here imports torch or diffusers (they take seconds to import), so `--help`, usage errors and bad option
values are answered at once; the stages import torch only when they run. This module is a leaf of the package (it
imports only `errors`, `device` and `draft`): every stage may import it, it imports no stage.

Options are named as the CLI's long flags with underscores (``min_guidance`` for ``--min-guidance``): the Python
API (`animator_cli.Animator`), `animator batch` job entries and the CLI all build them through `generate_options`
and `runtime_options`, by keyword. Error messages name options that way; the CLI spells them as flags.
"""

from __future__ import annotations

import difflib
import enum
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from animator_cli.device import default_device, device_type
from animator_cli.draft import draft_sampling, draft_size
from animator_cli.errors import InputError, option_error

if TYPE_CHECKING:
    import torch

DEFAULT_FPS = 25.0
DEFAULT_SEED = 23123134  # the released scripts' fixed seed
MAX_SEED = 2**63  # torch.Generator.manual_seed's range
MAX_SIDE = 4096  # larger outputs cannot fit in memory
MAX_STEPS = 1000  # the scheduler's training timesteps
RESOLUTIONS = {"512x512": (512, 512), "576x1024": (576, 1024), "1024x576": (1024, 576)}
DTYPES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}  # --dtype → torch dtype name
ATTENTION_BACKENDS = ("auto", "cudnn", "flash", "efficient", "math")  # --attention (animator_cli.models.backends)
COMPILE_MODES = ("default", "max-autotune-no-cudagraphs", "reduce-overhead")  # --compile-mode (torch.compile mode)
SCHEDULES = ("karras", "ays")  # --schedule: animator_cli.sampling.schedule.SCHEDULE_BUILDERS
MAX_FPS = 1000.0
MAX_GUARD_RETRIES = 5


class Fit(str, enum.Enum):
    """How an image of another aspect ratio fits W×H (`animator_cli.sampling.fit`): crop, pad or distort."""

    COVER = "cover"
    CONTAIN = "contain"
    STRETCH = "stretch"


def check_fps(fps: float) -> float:
    """``fps`` if it is a usable frame rate (finite, 0 < fps ≤ 1000), else an InputError."""
    if not (math.isfinite(fps) and 0 < fps <= MAX_FPS):
        raise option_error("fps", fps, "is not a usable frame rate", f"use a rate between 0 and {MAX_FPS:g}")
    return fps


def check_tiling(tile: int, overlap: int) -> None:
    """Temporal windows of ``tile`` frames overlapping by ``overlap`` (frame 0 included) must advance."""
    if tile < 2:
        raise option_error("tile", tile, "must be at least 2")
    if not 1 <= overlap < tile:
        raise option_error("overlap", overlap, f"must be between 1 and tile - 1 ({tile - 1})")


@dataclass(frozen=True)
class SamplingOptions:
    """What shapes the video (everything here goes into the generation cache key)."""

    steps: int = 25
    min_guidance: float = 3.0
    max_guidance: float = 3.0
    tile: int = 16
    overlap: int = 4
    noise_aug: float = 0.02
    motion_bucket: int = 127
    cond_fps: int = 7  # SVD micro-conditioning; StableAnimator was trained and released with 7
    id_scale: float = 1.0
    decode_chunk: int = 4
    schedule: str = "karras"  # noise levels: the released pipeline's Karras sigmas, or Align Your Steps' ("ays")
    reuse_features: int = 1  # N: the whole UNet every N-th step, its shallow branch in between (1: every step)


@dataclass(frozen=True)
class FaceOptOptions:
    """What the face optimisation does (all of it goes into the generation cache key)."""

    iters: int = 3
    start: int = 0
    end: int = 20
    lr: float = 0.1
    margin: int | None = None  # decode only the faces' region widened by this many latent cells; None: whole frames

    def validate(self) -> None:
        if self.iters < 1:
            raise option_error("face_opt_iters", self.iters, "must be at least 1")
        if not 0 <= self.start <= self.end:
            raise option_error("face_opt_steps", f"{self.start}:{self.end}", "must be START:END with 0 <= START <= END")
        if self.lr < 0:
            raise option_error("face_opt_lr", self.lr, "must not be negative")
        if self.margin is not None and self.margin < 0:
            raise option_error("face_opt_margin", self.margin, "must not be negative")


def parse_steps(steps: str | tuple[int, int]) -> tuple[int, int]:
    """``"START:END"`` or ``(START, END)`` (inclusive step indices, 0 = the noisiest step) → (start, end)."""
    try:
        start, end = (int(part) for part in (steps.split(":") if isinstance(steps, str) else steps))
    except (ValueError, TypeError):
        raise option_error("face_opt_steps", repr(steps), "is not START:END", "e.g. 0:20") from None
    return start, end


@dataclass(frozen=True)
class GuardOptions:
    """The identity guard (`animator_cli.guard`): windows whose median identity cosine is below ``threshold``
    (None: the video's own median minus `animator_cli.guard.identity.AUTO_MARGIN`) are rendered again, at most
    ``retries`` times each."""

    threshold: float | None = None
    retries: int = 2
    hjb: bool = True  # HJB on the window is a lever (not in a --draft, which renders without HJB)

    def validate(self) -> None:
        if self.threshold is not None and not -1 <= _finite("identity_guard", self.threshold) <= 1:
            raise option_error("identity_guard", self.threshold, "is not a cosine between -1 and 1")
        if (not isinstance(self.retries, int) or isinstance(self.retries, bool)
                or not 1 <= self.retries <= MAX_GUARD_RETRIES):
            raise option_error("guard_retries", self.retries, f"must be a whole number from 1 to {MAX_GUARD_RETRIES}")


def parse_guard(value: float | str | bool | None, retries: int, hjb: bool = True) -> GuardOptions | None:
    """``identity_guard`` as given (None/False: off; True or "auto": the video's own threshold; a number: that
    threshold) → GuardOptions."""
    if value is None or value is False:
        return None
    if value is True or value == "auto":
        return GuardOptions(None, retries, hjb)
    try:
        return GuardOptions(float(value), retries, hjb)
    except (TypeError, ValueError):
        raise option_error("identity_guard", repr(value), "is not a threshold",
                           "give a cosine between -1 and 1, or auto") from None


def check_switches(**switches: object) -> None:
    """Each switch (option name → value) must be True or False: from a job file or Python, "no" or 1 would
    otherwise turn it on."""
    for name, value in switches.items():
        if not isinstance(value, bool):
            raise option_error(name, repr(value), "is not true or false")


_SAMPLING = SamplingOptions()
_FACE_OPT = FaceOptOptions()
_GUARD = GuardOptions()


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
    identity_guard: GuardOptions | None = None  # windows rendered again where identity slips; off when None
    drift_lock: bool = False  # colours of every window matched to the first's (animator_cli.guard.drift)

    def validate(self) -> None:
        """Reject every out-of-range or non-finite value here, before any file is read or model loaded."""
        s = self.sampling
        for name, value in (("width", self.width), ("height", self.height), ("seed", self.seed),
                            ("steps", s.steps), ("tile", s.tile), ("overlap", s.overlap),
                            ("motion_bucket", s.motion_bucket), ("crf", self.crf),
                            ("decode_chunk", s.decode_chunk), ("reuse_features", s.reuse_features)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise option_error(name, repr(value), "is not a whole number")
        for name, value in (("width", self.width), ("height", self.height)):
            if value < 64 or value % 64 or value > MAX_SIDE:
                raise option_error(name, value, f"is not a multiple of 64 between 64 and {MAX_SIDE}",
                                   "e.g. resolution 512x512, 576x1024 or 1024x576")
        if not 0 <= self.seed < MAX_SEED:
            raise option_error("seed", self.seed, "is out of range", f"use a seed between 0 and {MAX_SEED - 1}")
        check_tiling(s.tile, s.overlap)  # bad tiling fails here, before any model is loaded
        if not 1 <= s.steps <= MAX_STEPS:
            raise option_error("steps", s.steps, f"must be between 1 and {MAX_STEPS}")
        if s.decode_chunk < 1:
            raise option_error("decode_chunk", s.decode_chunk, "must be at least 1")
        if s.schedule not in SCHEDULES:
            raise option_error("schedule", s.schedule, "is not a schedule", f"choose from {', '.join(SCHEDULES)}")
        if s.reuse_features < 1:
            raise option_error("reuse_features", s.reuse_features, "must be at least 1",
                               "1 runs the whole UNet at every step; N reuses its deep features for N-1 steps")
        if s.motion_bucket < 0:
            raise option_error("motion_bucket", s.motion_bucket, "must not be negative")
        for name, value in (("guidance", s.max_guidance), ("min_guidance", s.min_guidance),
                            ("noise_aug", s.noise_aug), ("id_scale", s.id_scale)):
            _finite(name, value)
        if not 0 <= s.noise_aug <= 1:
            raise option_error("noise_aug", s.noise_aug, "must be between 0 and 1")
        if not 0 <= self.crf <= 51:
            raise option_error("crf", self.crf, "must be between 0 and 51")
        if self.fps is not None:
            check_fps(_finite("fps", self.fps, allow_inf=True))
        if self.face_opt is not None:
            _finite("face_opt_lr", self.face_opt.lr)
            self.face_opt.validate()
            if self.face_opt.start >= s.steps:
                raise option_error("face_opt_steps", f"{self.face_opt.start}:{self.face_opt.end}",
                                   f"starts after the last of {s.steps} steps", "use a START below steps")
        if self.identity_guard is not None:
            self.identity_guard.validate()


def _finite(name: str, value: object, allow_inf: bool = False) -> float:
    """``value`` as a float; an InputError for non-numbers, NaN and (unless ``allow_inf``) ±inf."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        raise option_error(name, repr(value), "is not a usable number") from None
    if math.isnan(number) or (math.isinf(number) and not allow_inf):
        raise option_error(name, value, "is not a finite number")
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
    compile: bool = False  # torch.compile the UNet blocks and the VAE decoder (animator_cli.models.compile)
    window_batch: int | None = 1  # windows per UNet call; None: from free GPU memory (1 on the CPU)
    # GPU speed levers (docs/speed.md, each a variant of benchmarks/gpu_suite.py). None: decided by the device.
    cudnn_benchmark: bool | None = None  # cuDNN tries its convolution algorithms on each new shape (GPU)
    attention: str = "auto"  # scaled_dot_product_attention backend preferred: auto = torch's own choice
    channels_last_3d: bool = False  # the VAE decoder's 3-D convolutions in channels-last-3d layout (GPU)
    temporal_conv_2d: bool = False  # the (3, 1, 1) 3-D convolutions run as 2-D ones (models/temporal_conv.py)
    compile_mode: str = "default"  # torch.compile mode under compile=True; reduce-overhead = CUDA graphs
    fp8: bool = False  # float8 dynamic quantisation of the UNet's linear layers (torchao; lossy; FP8 GPUs)

    def validate(self) -> None:
        """Reject an unknown dtype, attention backend or compile mode, or a window_batch below 1, without importing
        torch."""
        if self.dtype is not None and self.dtype not in DTYPES:
            raise option_error("dtype", self.dtype, "is not a dtype", f"choose from {', '.join(DTYPES)}")
        if self.window_batch is not None and self.window_batch < 1:
            raise option_error("window_batch", self.window_batch, "must be at least 1")
        if self.attention not in ATTENTION_BACKENDS:
            raise option_error("attention", self.attention, "is not an attention backend",
                               f"choose from {', '.join(ATTENTION_BACKENDS)}")
        if self.compile_mode not in COMPILE_MODES:
            raise option_error("compile_mode", self.compile_mode, "is not a compile mode",
                               f"choose from {', '.join(COMPILE_MODES)}")
        if self.compile_mode != "default" and not self.compile:
            raise option_error("compile_mode", self.compile_mode, "needs compile")
        if self.fp8 and device_type(self.device_name()) != "cuda":
            raise option_error("fp8", None, f"needs a CUDA GPU, not {self.device_name()}",
                               "float8 matrix multiplication runs on GPUs of compute capability 8.9 or newer")

    def device_name(self) -> str:
        """The device the models run on: ``device``, else cuda when torch can use a GPU, else cpu."""
        return self.device or default_device()

    def dtype_name(self) -> str:
        """torch's name of the model dtype (``float16``…), without importing torch."""
        self.validate()
        return DTYPES[self.dtype or ("fp32" if device_type(self.device_name()) == "cpu" else "fp16")]

    def torch_device(self) -> torch.device:
        import torch

        return torch.device(self.device_name())

    def torch_dtype(self) -> torch.dtype:
        import torch

        return getattr(torch, self.dtype_name())


def generate_options(*, resolution: str = "512x512", width: int | None = None, height: int | None = None,
                     seed: int = DEFAULT_SEED, steps: int = _SAMPLING.steps, guidance: float = _SAMPLING.max_guidance,
                     min_guidance: float | None = None, tile: int = _SAMPLING.tile, overlap: int = _SAMPLING.overlap,
                     noise_aug: float = _SAMPLING.noise_aug, motion_bucket: int = _SAMPLING.motion_bucket,
                     fps: float | None = None, id_scale: float = _SAMPLING.id_scale, crf: int = 18,
                     fit: Fit | str = Fit.COVER, decode_chunk: int = _SAMPLING.decode_chunk,
                     legacy_rgb_id: bool = False, allow_no_face: bool = False, face_opt: bool = False,
                     face_opt_iters: int = _FACE_OPT.iters,
                     face_opt_steps: str | tuple[int, int] = f"{_FACE_OPT.start}:{_FACE_OPT.end}",
                     face_opt_lr: float = _FACE_OPT.lr, face_opt_margin: int | None = None,
                     schedule: str = _SAMPLING.schedule, reuse_features: int = _SAMPLING.reuse_features,
                     draft: bool = False, identity_guard: float | str | bool | None = None,
                     guard_retries: int = _GUARD.retries, drift_lock: bool = False) -> GenerateOptions:
    """GenerateOptions from options named as the CLI's flags (``min_guidance`` for ``--min-guidance``), validated.
    ``guidance`` is the last frame's scale, ``min_guidance`` the first's (default: ``guidance``); ``draft``: the
    preview preset of `animator_cli.draft` (smaller, fewer and cheaper steps, no HJB); ``identity_guard``: a
    threshold, True or "auto" (see `parse_guard`)."""
    check_switches(legacy_rgb_id=legacy_rgb_id, allow_no_face=allow_no_face, face_opt=face_opt, draft=draft,
                   drift_lock=drift_lock)
    if draft:
        steps, schedule, reuse_features = draft_sampling(
            steps, schedule, reuse_features, face_opt,
            defaults=(_SAMPLING.steps, _SAMPLING.schedule, _SAMPLING.reuse_features))
    if resolution not in RESOLUTIONS:
        raise option_error("resolution", resolution, "is not a preset size", f"choose from {', '.join(RESOLUTIONS)}")
    if fit not in [f.value for f in Fit]:
        raise option_error("fit", fit, "is not a fit mode", f"choose from {', '.join(f.value for f in Fit)}")
    preset_w, preset_h = RESOLUTIONS[resolution]
    sampling = SamplingOptions(steps=steps, min_guidance=guidance if min_guidance is None else min_guidance,
                               max_guidance=guidance, tile=tile, overlap=overlap, noise_aug=noise_aug,
                               motion_bucket=motion_bucket, id_scale=id_scale, decode_chunk=decode_chunk,
                               schedule=schedule, reuse_features=reuse_features)
    options = GenerateOptions(width=preset_w if width is None else width,
                              height=preset_h if height is None else height, seed=seed, sampling=sampling,
                              fit=Fit(fit), fps=fps, crf=crf, legacy_rgb_id=legacy_rgb_id,
                              allow_no_face=allow_no_face,
                              face_opt=FaceOptOptions(face_opt_iters, *parse_steps(face_opt_steps), face_opt_lr,
                                                      face_opt_margin)
                              if face_opt else None,
                              identity_guard=parse_guard(identity_guard, guard_retries, hjb=not draft),
                              drift_lock=drift_lock)
    options.validate()
    if draft:  # sized down from the requested size, once that is known to be valid
        width, height = draft_size(options.width, options.height)
        options = replace(options, width=width, height=height)
    return options


def runtime_options(*, device: str | None = None, dtype: str | None = None, offload: bool = False,
                    vae_on_cpu: bool = False, split_cfg: bool = False, checkpoint: Path | str | None = None,
                    compile: bool = False, window_batch: int | None = 1, compile_mode: str = "default",
                    attention: str = "auto", fp8: bool = False) -> Runtime:
    """A validated Runtime from options named as the CLI's flags (``split_cfg``: two UNet calls per window;
    ``window_batch`` None or 0: as many windows per call as free GPU memory holds; ``checkpoint``: a training
    run's checkpoint-N, run folder or RUN/latest instead of the released weights)."""
    check_switches(offload=offload, vae_on_cpu=vae_on_cpu, split_cfg=split_cfg, compile=compile, fp8=fp8)
    if checkpoint is not None:
        run_folder = Path(checkpoint).parent if Path(checkpoint).name == "latest" else Path(checkpoint)
        if not run_folder.is_dir():
            raise option_error("checkpoint", checkpoint, "is not a folder", "pass RUN/checkpoint-N, RUN or RUN/latest")
    runtime = Runtime(device=device, dtype=dtype, offload=offload, vae_on_cpu=vae_on_cpu, batch_cfg=not split_cfg,
                      checkpoint_dir=Path(checkpoint) if checkpoint is not None else None, compile=compile,
                      window_batch=window_batch or None, compile_mode=compile_mode, attention=attention, fp8=fp8)
    runtime.validate()
    return runtime


def check_names(given: dict[str, object], *accepted: object, what: str = "option") -> None:
    """An InputError naming the first of ``given``'s keys that no function in ``accepted`` takes as a keyword
    (with the nearest accepted name), so a typo is not silently ignored."""
    import inspect

    names = {name for function in accepted for name in inspect.signature(function).parameters}
    for key in given:
        if key not in names:
            close = difflib.get_close_matches(key, sorted(names), n=1)
            raise InputError(f"unknown {what} {key!r}", f"did you mean {close[0]!r}?" if close else
                             f"see {', '.join(sorted(names))}")
