"""The noise schedule and Euler step of SVD, written in k-diffusion form.

The sigmas and the UNet timesteps come from diffusers' `EulerDiscreteScheduler`, built from the SVD folder's
`scheduler_config.json` (Karras sigmas between 0.002 and 700, rho 7, a final sigma of 0, continuous timesteps
c_noise = 0.25 ln sigma). The step itself is the few lines of k-diffusion's `sample_euler` for a v-prediction
model, so the sampling loop can blend and guide whole tensors without the scheduler's internal step counter.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from diffusers import EulerDiscreteScheduler

from animator_cli.errors import WeightsError


def c_noise(sigma: torch.Tensor) -> torch.Tensor:
    """The UNet's timestep input for a noise level (EDM preconditioning as in SVD)."""
    return 0.25 * sigma.log()


def c_in(sigma: torch.Tensor) -> torch.Tensor:
    """Input scale so the UNet sees unit-variance latents at every noise level."""
    return (sigma**2 + 1) ** -0.5


def denoised_from_v(x: torch.Tensor, v: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """x̂0 from a v-prediction: −σ/√(σ²+1)·v + x/(σ²+1)."""
    return x / (sigma**2 + 1) - v * sigma * c_in(sigma)


def euler_step(x: torch.Tensor, denoised: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
    """One Euler step of the probability-flow ODE dx/dσ = (x − x̂0)/σ, with no churn."""
    return x + (x - denoised) / sigma * (sigma_next - sigma)


@dataclass(frozen=True)
class KarrasSchedule:
    """Sigmas (steps + 1, ending in 0) and the matching UNet timesteps (steps)."""

    sigmas: torch.Tensor
    timesteps: torch.Tensor

    @property
    def init_noise_sigma(self) -> float:
        """Scale of the initial noise, √(σ_max² + 1) as in diffusers."""
        return float((self.sigmas[0] ** 2 + 1) ** 0.5)

    def __len__(self) -> int:
        return len(self.timesteps)

    def scale_input(self, x: torch.Tensor, step: int) -> torch.Tensor:
        return x * c_in(self.sigmas[step])

    def step(self, x: torch.Tensor, v: torch.Tensor, step: int,
             refine: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """Advance fp32 latents ``x`` from sigma[step] to sigma[step + 1] given the model's v-prediction;
        ``refine`` may replace the denoised estimate x̂0 before the step (the HJB face optimisation)."""
        sigma, sigma_next = self.sigmas[step], self.sigmas[step + 1]
        denoised = denoised_from_v(x, v.to(x.dtype), sigma)
        return euler_step(x, denoised if refine is None else refine(denoised), sigma, sigma_next)


def karras_schedule(scheduler: EulerDiscreteScheduler, steps: int) -> KarrasSchedule:
    """Sigmas and timesteps for ``steps`` denoising steps from SVD's scheduler configuration."""
    config = scheduler.config
    if config.prediction_type != "v_prediction" or config.timestep_type != "continuous":
        raise WeightsError(
            f"the SVD scheduler config is {config.prediction_type}/{config.timestep_type}, expected "
            "v_prediction/continuous", "reinstall checkpoints/SVD/scheduler/scheduler_config.json")
    scheduler.set_timesteps(steps, device="cpu")
    sigmas = scheduler.sigmas.to(torch.float32)
    return KarrasSchedule(sigmas=sigmas, timesteps=c_noise(sigmas[:-1]))
