"""Build the StableAnimator models from a weights home and load the released checkpoints strictly.

API for the generation and training code::

    models = load_models(home, device="cuda", dtype=torch.float16)           # -> AnimatorModels
    models.unet(sample, timestep, encoder_hidden_states, added_time_ids, pose_latents=None)  # -> tensor

``AnimatorModels`` fields: ``unet`` (:class:`AnimatorUNet`; context (B, 5, 1024) = [CLIP; 4 face tokens]),
``vae`` (``AutoencoderKLTemporalDecoder``), ``image_encoder`` (``CLIPVisionModelWithProjection``), ``scheduler``
(``EulerDiscreteScheduler``), ``pose_net`` (:class:`PoseNet`), ``face_encoder`` (:class:`FaceEncoder`). All
modules are returned in eval mode on ``device`` in ``dtype`` (the scheduler has no device); ``requires_grad`` is
left on for training, so inference should run under ``torch.no_grad()`` or call ``requires_grad_(False)``.
No difference from the agreed API; additions: ``face_encoder(id_embeds (B, 512), clip_embeds (B, 1, C) or
(B, C))``, ``unet.set_id_scale(s)`` (identity strength), ``unet.processor_counts()``, and the building blocks
below (``build_architecture``, ``checkpoint_paths``, ``read_state_dict``, ``check_state_dict``,
``load_checkpoint``) for training and ``weights convert``.

Loader behaviour:

* Only local files are read (``local_files_only=True``); the SVD folder may hold the plain or the ``fp16``
  variant weight files, whichever exists.
* The UNet, PoseNet and face encoder are built on the meta device with their widths read from SVD's configs
  (so tiny homes work), the ID processors are installed, and the checkpoints are then assigned tensor by
  tensor straight onto ``device``: the SVD UNet weights are never read (``unet.pth`` holds the whole UNet) and
  no second copy of any model is held in RAM (``.pth`` files are memory-mapped, ``.safetensors`` streamed).
* ``<name>.safetensors`` is preferred over ``<name>.pth`` (``animator weights convert`` writes it).
  ``.pth`` files are read with ``torch.load(weights_only=True)``, so a pickle that would run code is refused.
* Any missing key, unexpected key or shape mismatch raises :class:`WeightsError` naming the file and the first
  offending keys; nothing is loaded non-strictly.
"""

from __future__ import annotations

import contextlib
import pickle
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler
from safetensors import SafetensorError, safe_open
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection
from transformers.utils import logging as transformers_logging

from animator_cli.errors import WeightsError
from animator_cli.models.face_encoder import FaceEncoder
from animator_cli.models.pose_net import PoseNet
from animator_cli.models.unet import AnimatorUNet
from animator_cli.weights.home import ANIMATION_CHECKPOINTS, WeightsHome, resolve_checkpoint_dir

ARCFACE_DIM = 512  # insightface antelopev2 glintr100 embedding
_FIX_SVD = "animator weights download --only svd"
_FIX_ANIMATION = "animator weights download --only animation"


@dataclass
class AnimatorModels:
    unet: AnimatorUNet
    vae: AutoencoderKLTemporalDecoder
    image_encoder: CLIPVisionModelWithProjection
    scheduler: EulerDiscreteScheduler
    pose_net: PoseNet
    face_encoder: FaceEncoder


@dataclass
class Architecture:
    """The three trained networks, empty (meta device), sized after a weights home's SVD configs."""

    pose_net: PoseNet
    face_encoder: FaceEncoder
    unet: AnimatorUNet

    def modules(self) -> dict[str, nn.Module]:
        """Checkpoint name → module, in ``ANIMATION_CHECKPOINTS`` order."""
        return {name: getattr(self, name) for name in ANIMATION_CHECKPOINTS}


def build_architecture(svd_dir: Path) -> Architecture:
    """Empty networks on the meta device; UNet from ``unet/config.json``, CLIP width from ``image_encoder``."""
    unet_config = _read_config(lambda: AnimatorUNet.load_config(str(svd_dir), subfolder="unet",
                                                                local_files_only=True), svd_dir / "unet")
    clip_config = _read_config(lambda: CLIPVisionConfig.from_pretrained(svd_dir / "image_encoder",
                                                                        local_files_only=True),
                               svd_dir / "image_encoder")
    with torch.device("meta"):
        unet = AnimatorUNet.from_config(unet_config)
        unet.install_processors()
        pose_net = PoseNet(noise_latent_channels=unet.config.block_out_channels[0])
        face_encoder = FaceEncoder(cross_attention_dim=unet.config.cross_attention_dim, id_embeddings_dim=ARCFACE_DIM,
                                   clip_embeddings_dim=clip_config.projection_dim)
    return Architecture(pose_net, face_encoder, unet)


def checkpoint_paths(home: WeightsHome, checkpoint_dir: Path | None = None) -> dict[str, Path]:
    """Where each checkpoint is read from: ``checkpoint_dir`` (a training run's folder) or the home's Animation
    folder, ``<name>.safetensors`` before ``<name>.pth``. Raises WeightsError when one is missing."""
    if checkpoint_dir is None:
        return {name: home.require(home.animation_checkpoint(name), f"StableAnimator checkpoint {name}",
                                   _FIX_ANIMATION) for name in ANIMATION_CHECKPOINTS}
    checkpoint_dir = resolve_checkpoint_dir(Path(checkpoint_dir))
    paths = {}
    for name in ANIMATION_CHECKPOINTS:
        path = Path(checkpoint_dir) / f"{name}.safetensors"
        paths[name] = path if path.exists() else path.with_suffix(".pth")
        if not paths[name].exists():
            raise WeightsError(f"StableAnimator checkpoint {name} not found at {paths[name]}",
                               f"pass a checkpoint folder holding {', '.join(ANIMATION_CHECKPOINTS)} (.pth)")
    return paths


def read_state_dict(path: Path, device: torch.device | str = "cpu",
                    dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Tensors of a ``.pth`` (weights only, memory-mapped) or ``.safetensors`` file, floats cast to ``dtype``,
    moved to ``device`` one tensor at a time."""
    path = Path(path)
    if path.suffix == ".safetensors":
        try:
            with safe_open(str(path), framework="pt", device="cpu") as handle:
                return {key: _place(handle.get_tensor(key), device, dtype) for key in handle.keys()}  # noqa: SIM118 (no __iter__)
        except (SafetensorError, OSError) as exc:
            raise WeightsError(f"cannot read {path}: {exc}", "delete it and run `animator weights convert` "
                                                              "again, or re-download the checkpoint") from exc
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as exc:
        raise WeightsError(f"refusing to load {path}: it is not a plain tensor state dict and unpickling it "
                           "could run code", "use the authors' released checkpoint files") from exc
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        raise WeightsError(f"cannot read {path}: {exc}", "the file is damaged or truncated; re-download it") from exc
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise WeightsError(f"{path} does not hold a state dict of tensors", "use the authors' released files")
    for key in list(state_dict):
        state_dict[key] = _place(state_dict[key], device, dtype)
    return state_dict


def check_state_dict(state_dict: dict[str, torch.Tensor], model: nn.Module, path: Path) -> None:
    """Raise WeightsError unless ``state_dict`` has exactly ``model``'s keys and shapes."""
    expected = {key: tuple(t.shape) for key, t in model.state_dict().items()}
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    wrong = [f"{key} {tuple(state_dict[key].shape)} != expected {expected[key]}"
             for key in expected if key in state_dict and tuple(state_dict[key].shape) != expected[key]]
    problems = [f"{label} ({len(items)}): {', '.join(items[:3])}{', ...' if len(items) > 3 else ''}"
                for label, items in (("missing keys", missing), ("unexpected keys", unexpected),
                                     ("shape mismatches", wrong)) if items]
    if problems:
        raise WeightsError(f"{path} does not match the {type(model).__name__} architecture: {'; '.join(problems)}",
                           "use the released checkpoint that goes with this SVD folder")


def load_checkpoint(model: nn.Module, path: Path, device: torch.device | str, dtype: torch.dtype) -> nn.Module:
    """Strictly load ``path`` into ``model`` (typically built on the meta device) by assigning its tensors."""
    state_dict = read_state_dict(path, device, dtype)
    check_state_dict(state_dict, model, path)
    model.load_state_dict(state_dict, strict=True, assign=True)
    leftover = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if leftover:
        raise WeightsError(f"{path} left {leftover[0]} of {type(model).__name__} unset", "re-download it")
    return model.eval()


def load_models(home: WeightsHome, device: torch.device | str, dtype: torch.dtype,
                checkpoint_dir: Path | None = None) -> AnimatorModels:
    """Everything inference needs, from the weights home (and optionally a training run's checkpoints)."""
    svd_dir = home.require(home.svd_dir / "model_index.json", "SVD-xt diffusers folder", _FIX_SVD).parent
    paths = checkpoint_paths(home, checkpoint_dir)
    architecture = build_architecture(svd_dir)
    for name, module in architecture.modules().items():
        load_checkpoint(module, paths[name], device, dtype)
    vae = _from_pretrained(AutoencoderKLTemporalDecoder, svd_dir / "vae", "diffusion_pytorch_model.safetensors", dtype)
    image_encoder = _from_pretrained(CLIPVisionModelWithProjection, svd_dir / "image_encoder", "model.safetensors",
                                     dtype)
    scheduler = _read_config(lambda: EulerDiscreteScheduler.from_pretrained(
        str(svd_dir), subfolder="scheduler", local_files_only=True), svd_dir / "scheduler")
    return AnimatorModels(unet=architecture.unet, vae=vae.to(device).eval(),
                          image_encoder=image_encoder.to(device).eval(), scheduler=scheduler,
                          pose_net=architecture.pose_net, face_encoder=architecture.face_encoder)


def _place(tensor: torch.Tensor, device: torch.device | str, dtype: torch.dtype | None) -> torch.Tensor:
    if dtype is not None and tensor.is_floating_point():
        return tensor.to(device=device, dtype=dtype)
    return tensor.to(device=device)


def _read_config(read, folder: Path):
    """Run a diffusers/transformers config or model reader, turning its failures into one WeightsError."""
    try:
        return read()
    except (OSError, ValueError, KeyError, TypeError, SafetensorError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(f"cannot load {folder}: {first_line}", _FIX_SVD) from exc


def _from_pretrained(cls, folder: Path, weights_name: str, dtype: torch.dtype):
    """``cls.from_pretrained(folder)`` on local files, with the ``fp16`` variant when only that one is present."""
    stem, ext = weights_name.rsplit(".", 1)
    if (folder / weights_name).exists():
        variant = None
    elif (folder / f"{stem}.fp16.{ext}").exists():
        variant = "fp16"
    else:
        raise WeightsError(f"SVD weights not found: {folder / weights_name}", f"run `{_FIX_SVD}`")
    with no_progress_bars():
        return _read_config(lambda: cls.from_pretrained(str(folder), variant=variant, dtype=dtype,
                                                        local_files_only=True), folder)


@contextlib.contextmanager
def no_progress_bars() -> Iterator[None]:
    """transformers draws a bar for loading a few files; stderr is for the CLI's own progress."""
    enabled = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            transformers_logging.enable_progress_bar()
