"""The training noise-level sampler: k-diffusion's ``rand_cosine_interpolated`` ("simple diffusion").

StableAnimator (like SVD_Xtend) draws one σ per sample from a cosine log-SNR schedule shifted for resolution,
interpolated between a noise resolution of 32 (at low noise) and 64 (at high noise) for an image size of 64,
mapped onto σ ∈ [0.002, 700] with σ_data 0.5. Written here in a few lines because k-diffusion itself pulls
torchvision. The uniform draws are stratified: across ranks too (``group``/``groups`` = rank/world size), so
a global batch covers the whole range evenly.
"""

from __future__ import annotations

import math

import torch

IMAGE_D = 64
NOISE_D_LOW = 32
NOISE_D_HIGH = 64
SIGMA_DATA = 0.5
SIGMA_MIN = 0.002
SIGMA_MAX = 700.0


def stratified_uniform(n: int, generator: torch.Generator, group: int = 0, groups: int = 1,
                       device: torch.device | str = "cpu") -> torch.Tensor:
    """``n`` draws in [0, 1), one per stratum; the ``groups`` callers (ranks) get interleaved strata."""
    if not 0 <= group < groups:
        raise ValueError(f"group {group} is outside 0..{groups - 1}")
    total = n * groups
    offsets = torch.arange(group, total, groups, dtype=torch.float64, device=device)
    return (offsets + torch.rand(n, generator=generator, dtype=torch.float64, device=device)) / total


def _logsnr_cosine(t: torch.Tensor, logsnr_min: float, logsnr_max: float) -> torch.Tensor:
    t_min = math.atan(math.exp(-0.5 * logsnr_max))
    t_max = math.atan(math.exp(-0.5 * logsnr_min))
    return -2 * torch.log(torch.tan(t_min + t * (t_max - t_min)))


def _logsnr_cosine_shifted(t: torch.Tensor, noise_d: float, logsnr_min: float, logsnr_max: float) -> torch.Tensor:
    shift = 2 * math.log(noise_d / IMAGE_D)
    return _logsnr_cosine(t, logsnr_min - shift, logsnr_max - shift) + shift


def sigmas_from_uniform(u: torch.Tensor) -> torch.Tensor:
    """Map u ∈ [0, 1] to σ, decreasing: u = 0 gives σ_max, u = 1 gives σ_min.

    k-diffusion's argument order is kept: the schedule's "logsnr_min" is the log-SNR of σ_min (the largest
    value) and the interpolation weight u leans on noise_d_low near σ_max and noise_d_high near σ_min.
    """
    logsnr_at_min = -2 * math.log(SIGMA_MIN / SIGMA_DATA)
    logsnr_at_max = -2 * math.log(SIGMA_MAX / SIGMA_DATA)
    low = _logsnr_cosine_shifted(u, NOISE_D_LOW, logsnr_at_min, logsnr_at_max)
    high = _logsnr_cosine_shifted(u, NOISE_D_HIGH, logsnr_at_min, logsnr_at_max)
    logsnr = torch.lerp(low, high, u)
    return torch.exp(-logsnr / 2) * SIGMA_DATA


def sample_sigmas(n: int, generator: torch.Generator, rank: int = 0, world_size: int = 1,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """One σ per sample (float32, on ``device``) from the interpolated-cosine distribution."""
    u = stratified_uniform(n, generator, rank, world_size, device=generator.device)
    return sigmas_from_uniform(u).float().to(device)
