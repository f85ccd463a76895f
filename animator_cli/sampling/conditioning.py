"""Everything the UNet is conditioned on, computed once per video before the denoising loop.

- CLIP image embedding of the reference: an antialiased resize to 224×224 (Gaussian blur, then bicubic with
  align_corners=True, as SVD was trained), then CLIP's mean/std. Done with plain torch so that transformers'
  image processor (which needs torchvision) is not involved.
- Face tokens from the face encoder (ArcFace embedding + CLIP embedding → 4 tokens); the context is
  [CLIP token; 4 face tokens], the unconditional context is all zeros.
- The reference latent: the W×H reference in [-1, 1] plus ``noise_aug · N(0, 1)``, encoded by the VAE in fp32,
  ``latent_dist.mode()``, not multiplied by the scaling factor (SVD's convention).
- SVD's micro-conditioning ``added_time_ids`` = [fps − 1, motion_bucket, noise_aug].
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

CLIP_SIZE = 224
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """uint8 H×W×3 (or F×H×W×3) → float (1|F, 3, H, W) in [-1, 1]."""
    x = torch.tensor(rgb, dtype=torch.float32).div(127.5).sub(1)
    return x.permute(2, 0, 1)[None] if x.ndim == 3 else x.permute(0, 3, 1, 2)


def _gaussian_kernel(size: int, sigma: float) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32) - size // 2
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    return kernel / kernel.sum()


def antialiased_resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize (B, C, H, W) to ``size`` (h, w) like SVD's training code: a per-axis Gaussian blur with
    σ = max((scale − 1)/2, 0.001) and an odd kernel of about 4σ (reflect padding), then bicubic with
    align_corners=True."""
    blurred = image
    for axis, (length, target) in enumerate(zip(image.shape[-2:], size, strict=True)):
        sigma = max((length / target - 1) / 2, 0.001)
        ksize = int(max(4 * sigma, 3)) | 1
        ksize = min(ksize, 2 * length - 1 | 1) if length > 1 else 1  # reflect padding needs pad < length
        kernel = _gaussian_kernel(ksize, sigma).to(image)
        shape = (1, 1, ksize, 1) if axis == 0 else (1, 1, 1, ksize)
        pad = (0, 0, ksize // 2, ksize // 2) if axis == 0 else (ksize // 2, ksize // 2, 0, 0)
        channels = blurred.shape[1]
        blurred = F.conv2d(F.pad(blurred, pad, mode="reflect" if ksize > 1 else "constant"),
                           kernel.view(shape).expand(channels, 1, *shape[2:]), groups=channels)
    return F.interpolate(blurred, size=size, mode="bicubic", align_corners=True)


def clip_pixels(reference: torch.Tensor) -> torch.Tensor:
    """The CLIP input (B, 3, 224, 224) for a reference in [-1, 1]."""
    x = (antialiased_resize(reference.float(), (CLIP_SIZE, CLIP_SIZE)) + 1) / 2
    mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


@torch.no_grad()
def clip_embedding(image_encoder: torch.nn.Module, reference: torch.Tensor) -> torch.Tensor:
    """(1, 1, 1024) projected CLIP image embedding of the reference."""
    param = next(image_encoder.parameters())
    pixels = clip_pixels(reference.to(param.device)).to(param.dtype)
    return image_encoder(pixel_values=pixels).image_embeds[:, None]


def build_context(face_encoder: torch.nn.Module, clip_embeds: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
    """Conditional UNet context (B, 5, 1024): [CLIP token; 4 face tokens from the 512-d ArcFace embedding].

    ``clip_embeds`` is (B, 1, 1024), ``identity`` (B, 512) or (512,) for B = 1. Gradients flow (training uses it).
    """
    param = next(face_encoder.parameters())
    clip_embeds = clip_embeds.to(param.device, param.dtype)
    tokens = face_encoder(identity.reshape(len(clip_embeds), -1).to(param.device, param.dtype), clip_embeds)
    return torch.cat([clip_embeds, tokens], dim=1)


context_tokens = torch.no_grad()(build_context)


@torch.no_grad()
def reference_latent(vae: torch.nn.Module, reference: torch.Tensor, noise_aug: float,
                     generator: torch.Generator) -> torch.Tensor:
    """(1, 4, H/8, W/8) unscaled latent of the noise-augmented reference. The noise is drawn first from the
    generator, as ``randn(1, 3, H, W)`` in fp32 on the generator's device, matching the released pipeline."""
    noise = torch.randn(reference.shape, generator=generator, device=generator.device, dtype=torch.float32)
    image = reference.to(generator.device, torch.float32) + noise_aug * noise
    param = next(vae.parameters())
    # SVD's VAE is marked force_upcast (fp16 encoding overflows); only the encoding half is upcast.
    with _fp32(vae.encoder), _fp32(vae.quant_conv):
        latent = vae.encode(image.to(param.device)).latent_dist.mode()
    return latent.float()


@contextlib.contextmanager
def _fp32(module: torch.nn.Module) -> Iterator[None]:
    """Run a module in float32 for the duration of the block."""
    dtype = next(module.parameters()).dtype
    if dtype == torch.float32:
        yield
        return
    cast_module(module, torch.float32)
    try:
        yield
    finally:
        cast_module(module, dtype)


def cast_module(module: torch.nn.Module, dtype: torch.dtype) -> None:
    """``module.to(dtype)`` without diffusers' ModelMixin override, which warns on every cast in 0.42."""
    torch.nn.Module.to(module, dtype)


def added_time_ids(fps: int, motion_bucket: int, noise_aug: float) -> torch.Tensor:
    """SVD micro-conditioning (1, 3): [fps − 1, motion bucket, noise augmentation]. StableAnimator was trained
    with fps 7, motion bucket 127, noise_aug 0.02, i.e. [6, 127, 0.02]."""
    return torch.tensor([[fps - 1, motion_bucket, noise_aug]], dtype=torch.float32)

