"""Training configuration: a dataclass schema, loaded from YAML and overridden by ``key=value`` pairs.

Every key is checked: an unknown key or a value of the wrong type raises InputError (exit 2) naming the
dotted key, so a typo never silently falls back to a default. Overrides use dotted keys
(``optim.learning_rate=3e-5``, ``data.num_frames=8``); their values are parsed as YAML scalars/lists.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from animator_cli.errors import InputError


@dataclass
class Bucket:
    """One training resolution and the list file (in the dataset folder) of the clips trained at it."""

    width: int = 512
    height: int = 512
    list_file: str = "video_rec_path.txt"


@dataclass
class DataConfig:
    path: str | None = None  # dataset folder written by `animator prepare-data` (or --data)
    buckets: list[Bucket] = field(default_factory=lambda: [Bucket()])
    num_frames: int = 16  # frames per training clip
    stride: int = 4  # frame stride inside a clip (16 frames at stride 4 span 61 source frames)
    fit: Literal["cover", "contain", "stretch"] = "cover"  # how frames meet W×H (the reference stretched)
    batch_size: int = 1  # clips per GPU per micro-batch
    num_workers: int = 4  # DataLoader worker processes
    on_bad_clip: Literal["skip", "error"] = "skip"  # what the up-front data check does with a broken clip
    verify_images: bool = False  # the data check also decodes every PNG header (slower, catches corrupt files)


@dataclass
class ModelConfig:
    weights: str | None = None  # weights home (default: the global --weights / ANIMATOR_HOME)
    init: Literal["release", "svd"] = "release"  # fine-tune the released checkpoints, or train from SVD-xt
    init_checkpoint: str | None = None  # with init=release: a folder of the three .pth instead of the home's
    gradient_checkpointing: bool = True
    compile: bool = False  # torch.compile the UNet blocks (regional; `animator train --compile`)
    lora_rank: int = 0  # > 0: train LoRA adapters (peft) on the UNet attention projections instead of all weights
    lora_alpha: float = 0.0  # LoRA scale numerator; 0 means alpha = rank


@dataclass
class OptimConfig:
    learning_rate: float = 1e-5
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    weight_decay: float = 0.01
    adam_epsilon: float = 1e-8
    lr_scheduler: Literal["constant_with_warmup", "constant", "cosine", "linear"] = "constant_with_warmup"
    warmup_steps: int = 500
    max_grad_norm: float = 1.0  # 0 disables clipping
    gradient_accumulation_steps: int = 1


@dataclass
class ConditioningConfig:
    """Conditioning dropout (one r ~ U(0,1) per sample, as the reference) and SVD micro-conditioning."""

    drop_image: float = 0.2  # P(CLIP token dropped): the whole context is zeroed, as the sampler's uncond branch
    drop_latent: float = 0.2  # P(reference latent zeroed)
    drop_both: float = 0.1  # P(both dropped): a fully unconditional sample
    drop_pose_when_unconditional: bool = True  # also drop the pose then, matching the sampler's uncond branch
    noise_aug: float = 0.02  # reference noise augmentation
    fps: int = 7
    motion_bucket: int = 127
    face_weight: float = 1.0  # loss weight added on face pixels (1 → ×2, as the paper)


@dataclass
class ValidationConfig:
    every: int = 500  # steps between validation videos; 0 disables
    reference: str | None = None  # reference image; default: frame 0 of the first training clip
    poses: str | None = None  # pose frames folder; default: the first training clip's poses
    num_frames: int = 16
    width: int = 512
    height: int = 512
    steps: int = 25
    guidance: float = 3.0


@dataclass
class EmaConfig:
    enabled: bool = False
    decay: float = 0.9999


@dataclass
class TrainConfig:
    seed: int = 42
    output: str = "runs/train"
    max_steps: int = 100_000  # optimizer steps
    mixed_precision: Literal["no", "fp16", "bf16"] = "fp16"
    cpu: bool = False  # force training on CPU (tiny models, tests)
    checkpoint_every: int = 2000
    checkpoints_keep: int = 5  # newest checkpoints kept; 0 keeps all
    log_every: int = 10
    overfit_batch: bool = False  # debugging: train on micro-batch 0 with the same noise every step (loss must fall)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    conditioning: ConditioningConfig = field(default_factory=ConditioningConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    ema: EmaConfig = field(default_factory=EmaConfig)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_config(path: Path | str | None = None, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Read a YAML config (or start from the defaults), apply ``key=value`` overrides, validate."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            loaded = yaml.safe_load(path.read_text())
        except OSError as exc:
            raise InputError(f"cannot read config {path}: {exc.strerror}", "check the --config path") from exc
        except yaml.YAMLError as exc:
            raise InputError(f"config {path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise InputError(f"config {path} must be a mapping of keys to values")
        raw = loaded or {}
    for item in overrides:
        key, value = parse_override(item)
        _set_dotted(raw, key, value)
    config = _build(TrainConfig, raw, "")
    validate(config)
    return config


def parse_override(item: str) -> tuple[str, Any]:
    """``a.b=value`` → ("a.b", YAML-parsed value)."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise InputError(f"override {item!r} is not of the form key=value", "e.g. optim.learning_rate=3e-5")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as exc:
        raise InputError(f"override {key}: cannot parse value {text!r}") from exc
    return key.strip(), value


def _set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    node = raw
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise InputError(f"config key {'.'.join(parts[:i + 1])} is not a section, cannot set {key}")
        node = child
    node[parts[-1]] = value


def _build(cls: type, raw: Any, prefix: str) -> Any:
    where = prefix.rstrip(".") or "the config"
    if not isinstance(raw, dict):
        raise InputError(f"config key {where}: expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            raise InputError(f"unknown config key {prefix}{key}",
                             f"valid keys here: {', '.join(sorted(fields))}")
    values = {name: _convert(hints[name], raw[name], f"{prefix}{name}") for name in fields if name in raw}
    return cls(**values)


def _convert(hint: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        (inner,) = [option for option in options if option is not type(None)]
        return _convert(inner, value, key)
    if origin is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise InputError(f"config key {key}: {value!r} is not one of {', '.join(map(str, choices))}")
        return value
    if origin is list:
        (inner,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise InputError(f"config key {key}: expected a list, got {type(value).__name__}")
        return [_convert(inner, item, f"{key}[{i}]") for i, item in enumerate(value)]
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, f"{key}.")
    if hint is bool and isinstance(value, bool):
        return value
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):  # YAML 1.1 reads "1e-5" (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if hint is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    raise InputError(f"config key {key}: expected {getattr(hint, '__name__', hint)}, got {value!r}")


def validate(config: TrainConfig) -> None:
    """Value checks the types cannot express; each failure names its key."""
    def require(ok: bool, key: str, message: str) -> None:
        if not ok:
            raise InputError(f"config key {key}: {message}")

    data, optim, cond = config.data, config.optim, config.conditioning
    require(len(data.buckets) > 0, "data.buckets", "needs at least one resolution")
    for i, bucket in enumerate(data.buckets):
        for side in ("width", "height"):
            value = getattr(bucket, side)
            require(value > 0 and value % 64 == 0, f"data.buckets[{i}].{side}",
                    f"{value} must be a positive multiple of 64")
    require(data.num_frames >= 2, "data.num_frames", "must be at least 2")
    require(data.stride >= 1, "data.stride", "must be at least 1")
    require(data.batch_size >= 1, "data.batch_size", "must be at least 1")
    require(data.num_workers >= 0, "data.num_workers", "must be 0 or more")
    require(config.max_steps >= 1, "max_steps", "must be at least 1")
    require(config.checkpoint_every >= 1, "checkpoint_every", "must be at least 1")
    require(config.checkpoints_keep >= 0, "checkpoints_keep", "must be 0 (keep all) or more")
    require(config.log_every >= 1, "log_every", "must be at least 1")
    require(optim.learning_rate > 0, "optim.learning_rate", "must be positive")
    require(optim.warmup_steps >= 0, "optim.warmup_steps", "must be 0 or more")
    require(optim.max_grad_norm >= 0, "optim.max_grad_norm", "must be 0 (off) or more")
    require(optim.gradient_accumulation_steps >= 1, "optim.gradient_accumulation_steps", "must be at least 1")
    require(optim.weight_decay >= 0, "optim.weight_decay", "must be 0 or more")
    for name in ("drop_image", "drop_latent", "drop_both"):
        require(0 <= getattr(cond, name) <= 1, f"conditioning.{name}", "must be a probability in [0, 1]")
    require(cond.drop_both <= min(cond.drop_image, cond.drop_latent), "conditioning.drop_both",
            "cannot exceed drop_image or drop_latent")
    require(cond.drop_image + cond.drop_latent - cond.drop_both <= 1, "conditioning.drop_latent",
            "drop_image + drop_latent − drop_both must not exceed 1")
    require(cond.noise_aug >= 0, "conditioning.noise_aug", "must be 0 or more")
    require(config.model.lora_rank >= 0, "model.lora_rank", "must be 0 (off) or more")
    require(config.model.init == "release" or config.model.init_checkpoint is None, "model.init_checkpoint",
            "only applies with model.init=release")
    require(config.validation.every >= 0, "validation.every", "must be 0 (off) or more")
    for side in ("width", "height"):
        value = getattr(config.validation, side)
        require(value > 0 and value % 64 == 0, f"validation.{side}", f"{value} must be a positive multiple of 64")
    require(0 < config.ema.decay < 1, "ema.decay", "must be in (0, 1)")
