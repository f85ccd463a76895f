"""StableAnimator's training loss: EDM-weighted denoising error with the face region counted twice.

D = c_skip·x_σ + c_out·F (the same v-prediction → x̂0 conversion as the sampler, ``denoised_from_v``),
loss = mean_b mean_{f,c,h,w} [ λ(σ)·(D − x0)²·(1 + w·M) ] with λ = (1 + σ²)/σ² and M the face mask
nearest-downsampled to latent size (w = 1 in the paper). Always computed in float32, whatever the autocast
dtype of the UNet output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from animator_cli.sampling.schedule import denoised_from_v


def edm_weight(sigma: torch.Tensor) -> torch.Tensor:
    """λ(σ) = (1 + σ²)/σ², the EDM weight for σ_data = 1 (SVD's latents)."""
    sigma = sigma.double()
    return ((1 + sigma**2) / sigma**2).float()


def latent_face_mask(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, F, 1, H, W) masks in [0, 1] → (B, F, 1, h, w), nearest-neighbour (as the reference)."""
    batch, frames = masks.shape[:2]
    small = F.interpolate(masks.flatten(0, 1).float(), size=size, mode="nearest")
    return small.view(batch, frames, 1, *size)


def denoising_loss(prediction: torch.Tensor, noisy: torch.Tensor, target: torch.Tensor, sigma: torch.Tensor,
                   face_masks: torch.Tensor | None = None, face_weight: float = 1.0) -> torch.Tensor:
    """Scalar loss for UNet output ``prediction`` (B, F, 4, h, w) at noise levels ``sigma`` (B,).

    ``noisy`` is x_σ = x0 + σ·ε (before the UNet's input scaling), ``target`` is x0; ``face_masks``
    (B, F, 1, H, W) at pixel resolution, or None for no face weighting.
    """
    sigma = sigma.float().view(-1, 1, 1, 1, 1)
    denoised = denoised_from_v(noisy.float(), prediction.float(), sigma)
    error = edm_weight(sigma) * (denoised - target.float()) ** 2
    if face_masks is not None:
        error = error * (1 + face_weight * latent_face_mask(face_masks, tuple(target.shape[-2:])))
    return error.flatten(1).mean(dim=1).mean()
