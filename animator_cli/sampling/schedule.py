"""The noise schedules and Euler step of SVD, written in k-diffusion form.

``karras`` (the default, the released pipeline's): the sigmas and the UNet timesteps come from diffusers'
`EulerDiscreteScheduler`, built from the SVD folder's `scheduler_config.json` (Karras sigmas between 0.002 and 700,
rho 7, a final sigma of 0, continuous timesteps c_noise = 0.25 ln sigma).

``ays``: NVIDIA's Align Your Steps noise levels for SVD (Sabour, Fidler, Kreis, ICML 2024, arXiv:2404.14507),
eleven levels from 700 to 0.002 for ten steps, as published on the authors' quick-start page
(research.nvidia.com/labs/toronto-ai/AlignYourSteps/howto.html) and carried by ComfyUI's AlignYourStepsScheduler
(comfy_extras/nodes_align_your_steps.py, model type "SVD"). Other step counts interpolate log sigma linearly over
the levels, as the authors do; the last level is then replaced by 0 like ComfyUI does, so the last step returns
the denoised estimate, as every k-diffusion schedule ends.

The step itself is the few lines of k-diffusion's `sample_euler` for a v-prediction model, so the sampling loop
can blend and guide whole tensors without the scheduler's internal step counter. `KarrasSchedule` holds any such
sigma list (the name is the default's).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import EulerDiscreteScheduler

from animator_cli.errors import WeightsError

# Align Your Steps' SVD noise levels (10 steps), from the sources named in the module docstring.
AYS_SVD_SIGMAS = (700.00, 54.5, 15.886, 7.977, 4.248, 1.789, 0.981, 0.403, 0.173, 0.034, 0.002)


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
        ``refine`` may replace the denoised estimate x̂0 before the step (the HJB face optimisation).

        ``x`` is updated in place and ``v`` used as scratch: they are the loop's largest tensors, and a long video
        must not hold more copies of them than it needs. The operations are those of `denoised_from_v` and
        `euler_step` in the same order, so the result is the same bit for bit (tests/test_sampling.py)."""
        sigma, sigma_next = self.sigmas[step], self.sigmas[step + 1]
        v = v.to(x.dtype)
        denoised = (x / (sigma**2 + 1)).sub_(v.mul_(sigma).mul_(c_in(sigma)))  # denoised_from_v
        if refine is not None:
            denoised = refine(denoised)
        return x.add_(torch.sub(x, denoised, out=denoised).div_(sigma).mul_(sigma_next - sigma))  # euler_step


def karras_schedule(scheduler: EulerDiscreteScheduler, steps: int) -> KarrasSchedule:
    """Sigmas and timesteps for ``steps`` denoising steps from SVD's scheduler configuration."""
    _check_config(scheduler)
    scheduler.set_timesteps(steps, device="cpu")
    sigmas = scheduler.sigmas.to(torch.float32)
    return KarrasSchedule(sigmas=sigmas, timesteps=c_noise(sigmas[:-1]))


def ays_schedule(scheduler: EulerDiscreteScheduler, steps: int) -> KarrasSchedule:
    """Align Your Steps' SVD levels for ``steps`` steps (log-linearly interpolated unless 10), ending in 0."""
    _check_config(scheduler)
    levels = AYS_SVD_SIGMAS if steps + 1 == len(AYS_SVD_SIGMAS) else loglinear_levels(AYS_SVD_SIGMAS, steps + 1)
    sigmas = torch.tensor([*levels[:-1], 0.0], dtype=torch.float32)
    return KarrasSchedule(sigmas=sigmas, timesteps=c_noise(sigmas[:-1]))


def loglinear_levels(levels: Sequence[float], count: int) -> list[float]:
    """``count`` decreasing levels whose log follows ``levels``' log, linearly interpolated on an even grid (the
    AYS authors' way of moving a schedule to another step count)."""
    grid = np.linspace(0, 1, len(levels))
    return np.exp(np.interp(np.linspace(0, 1, count), grid, np.log(levels))).tolist()


SCHEDULE_BUILDERS = {"karras": karras_schedule, "ays": ays_schedule}  # the names of options.SCHEDULES


def make_schedule(scheduler: EulerDiscreteScheduler, steps: int, name: str = "karras") -> KarrasSchedule:
    """The ``name`` schedule (`options.SCHEDULES`) for ``steps`` steps."""
    return SCHEDULE_BUILDERS[name](scheduler, steps)


def _check_config(scheduler: EulerDiscreteScheduler) -> None:
    """The sampler's formulas hold for SVD's v-prediction model with continuous timesteps only."""
    config = scheduler.config
    if config.prediction_type != "v_prediction" or config.timestep_type != "continuous":
        raise WeightsError(
            f"the SVD scheduler config is {config.prediction_type}/{config.timestep_type}, expected "
            "v_prediction/continuous", "reinstall checkpoints/SVD/scheduler/scheduler_config.json")
