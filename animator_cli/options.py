"""What a render is asked to do: generation, sampling and face-optimisation options, where the models run, and
the validation of all of it.

Nothing here imports torch or diffusers (they take seconds to import), so `--help`, usage errors and bad option
values are answered at once; the stages import torch only when they run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from animator_cli.device import default_device, device_type
from animator_cli.distributed import Ranks
from animator_cli.draft import draft_sampling, draft_size
from animator_cli.errors import InputError
from animator_cli.sampling.fit import Fit
from animator_cli.sampling.windows import window_indices
from animator_cli.video.writer import check_fps

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
            raise InputError(f"--face-opt-iters {self.iters} must be at least 1")
        if not 0 <= self.start <= self.end:
            raise InputError(f"--face-opt-steps {self.start}:{self.end} must be START:END with 0 <= START <= END")
        if self.lr < 0:
            raise InputError(f"--face-opt-lr {self.lr} must not be negative")
        if self.margin is not None and self.margin < 0:
            raise InputError(f"--face-opt-margin {self.margin} must not be negative")


def parse_steps(text: str) -> tuple[int, int]:
    """``START:END`` (inclusive step indices, 0 = the noisiest step) → (start, end)."""
    try:
        start, end = (int(part) for part in text.split(":"))
    except ValueError:
        raise InputError(f"--face-opt-steps {text!r} is not START:END", "e.g. --face-opt-steps 0:20") from None
    return start, end


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
                            ("--decode-chunk", s.decode_chunk), ("--reuse-features", s.reuse_features)):
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
        if s.schedule not in SCHEDULES:
            raise InputError(f"unknown --schedule {s.schedule}", f"choose from {', '.join(SCHEDULES)}")
        if s.reuse_features < 1:
            raise InputError(f"--reuse-features {s.reuse_features} must be at least 1",
                             "1 runs the whole UNet at every step; N reuses its deep features for N-1 steps")
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
    compile: bool = False  # torch.compile the UNet blocks and the VAE decoder (animator_cli.models.compile)
    window_batch: int | None = 1  # windows per UNet call; None: from free GPU memory (1 on the CPU)
    # GPU speed levers (docs/speed.md, each a variant of benchmarks/gpu_suite.py). None: decided by the device.
    cudnn_benchmark: bool | None = None  # cuDNN tries its convolution algorithms on each new shape (GPU)
    attention: str = "auto"  # scaled_dot_product_attention backend preferred: auto = torch's own choice
    channels_last_3d: bool = False  # the VAE decoder's 3-D convolutions in channels-last-3d layout (GPU)
    temporal_conv_2d: bool = False  # the (3, 1, 1) 3-D convolutions run as 2-D ones (models/temporal_conv.py)
    compile_mode: str = "default"  # torch.compile mode under compile=True; reduce-overhead = CUDA graphs
    fp8: bool = False  # float8 dynamic quantisation of the UNet's linear layers (torchao; lossy; FP8 GPUs)
    # The processes rendering one video together (distributed.py); where, not how: left out of comparisons.
    ranks: Ranks = field(default_factory=Ranks, compare=False)

    def validate(self) -> None:
        """Reject an unknown --dtype, attention backend or compile mode, or a --window-batch below 1, without
        importing torch."""
        if self.dtype is not None and self.dtype not in DTYPES:
            raise InputError(f"unknown --dtype {self.dtype}", f"choose from {', '.join(DTYPES)}")
        if self.window_batch is not None and self.window_batch < 1:
            raise InputError(f"--window-batch {self.window_batch} must be at least 1")
        if self.attention not in ATTENTION_BACKENDS:
            raise InputError(f"unknown --attention {self.attention}", f"choose from {', '.join(ATTENTION_BACKENDS)}")
        if self.compile_mode not in COMPILE_MODES:
            raise InputError(f"unknown --compile-mode {self.compile_mode}", f"choose from {', '.join(COMPILE_MODES)}")
        if self.compile_mode != "default" and not self.compile:
            raise InputError(f"--compile-mode {self.compile_mode} needs --compile")
        if self.fp8 and device_type(self.device_name()) != "cuda":
            raise InputError(f"--fp8 needs a CUDA GPU, not {self.device_name()}",
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


def make_options(resolution: str = "512x512", width: int | None = None, height: int | None = None,
                  seed: int = DEFAULT_SEED, steps: int = _SAMPLING.steps, guidance: float = _SAMPLING.max_guidance,
                  min_guidance: float | None = None, tile: int = _SAMPLING.tile, overlap: int = _SAMPLING.overlap,
                  noise_aug: float = _SAMPLING.noise_aug, motion_bucket: int = _SAMPLING.motion_bucket,
                  fps: float | None = None, id_scale: float = _SAMPLING.id_scale, crf: int = 18, fit: Fit = Fit.COVER,
                  decode_chunk: int = _SAMPLING.decode_chunk, legacy_rgb_id: bool = False,
                  allow_no_face: bool = False, face_opt: bool = False, face_opt_iters: int = _FACE_OPT.iters,
                  face_opt_steps: str = f"{_FACE_OPT.start}:{_FACE_OPT.end}",
                  face_opt_lr: float = _FACE_OPT.lr, face_opt_margin: int | None = None,
                  schedule: str = _SAMPLING.schedule, reuse_features: int = _SAMPLING.reuse_features,
                  draft: bool = False) -> GenerateOptions:
    """GenerateOptions from the CLI's values (`batch` job entries use the same names). ``draft``: the preview
    preset of `animator_cli.draft` (smaller, fewer and cheaper steps, no HJB)."""
    if draft:
        steps, schedule, reuse_features = draft_sampling(
            steps, schedule, reuse_features, face_opt,
            defaults=(_SAMPLING.steps, _SAMPLING.schedule, _SAMPLING.reuse_features))
    if resolution not in RESOLUTIONS:
        raise InputError(f"unknown --resolution {resolution}", f"choose from {', '.join(RESOLUTIONS)}")
    if fit not in list(Fit):
        raise InputError(f"unknown --fit {fit}", f"choose from {', '.join(f.value for f in Fit)}")
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
                              if face_opt else None)
    options.validate()
    if draft:  # sized down from the requested size, once that is known to be valid
        width, height = draft_size(options.width, options.height)
        options = replace(options, width=width, height=height)
    return options


