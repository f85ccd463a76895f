"""Sampling one window of a finished video again, without seams (the identity guard's repair, docs/hjb.md).

The window is denoised alone, from its own initial noise (or another seed's), as a video of its n frames. The
frames it shares with other windows (frame 0, every window's anchor, and the overlap frames) are held to the
video's final latents, as temporal inpainting does: before each step they are set to x0 + σ·ε, the final latent
noised to the step's σ with one fixed ε (the pass's noise). Afterwards:

- frames of this window only take the new latents;
- an overlap frame is blended with the existing overlap weights: the new window's result enters with its
  triangular weight's share of the frame's weight sum, the video's final latent keeps the rest. The pass saw the
  frame held to its final value down to the last σ (0.002 in both schedules), so its result there stays close to
  it (tests/test_identity_guard.py states the bound);
- frame 0 is never changed, and no frame outside the window is touched.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from animator_cli.distributed import Ranks
from animator_cli.sampling.pipeline import AnimationPipeline, Refiner, SampledVideo
from animator_cli.sampling.windows import blend_weights


@dataclass(frozen=True)
class WindowPass:
    """How a window is sampled again: ``seed`` None reuses the window's own initial noise, else a fresh draw."""

    id_scale: float
    seed: int | None = None
    refine: Refiner | None = None


class _WindowFeatures:
    """A video's PoseNet features served to a pass that numbers one window's frames 0..n−1."""

    def __init__(self, video: SampledVideo, frames: list[int]) -> None:
        self.features, self.frames = video.pose_features, frames
        self.indices: dict[tuple[int, ...], torch.Tensor] = {}  # made once, not at every step

    def window(self, frames: list[int], index: torch.Tensor) -> torch.Tensor:
        real = [self.frames[i] for i in frames]
        if tuple(real) not in self.indices:
            self.indices[tuple(real)] = torch.tensor(real, device=index.device)
        return self.features.window(real, self.indices[tuple(real)])


def held_slots(windows: list[list[int]], index: int) -> list[int]:
    """The slots of window ``index`` whose frames another window also covers (frame 0 always)."""
    others = {frame for number, window in enumerate(windows) if number != index for frame in window}
    return [slot for slot, frame in enumerate(windows[index]) if frame == 0 or frame in others]


def free_slots(windows: list[list[int]], index: int) -> range:
    """The slots of window ``index`` that no other window covers: the frames a pass may change (one run, as
    windows are runs of frames after frame 0). HJB refines these only: the held slots are set from the
    neighbours at every step, so refining them would be work thrown away."""
    held = set(held_slots(windows, index))
    free = [slot for slot in range(len(windows[index])) if slot not in held]
    return range(free[0], free[-1] + 1) if free else range(0)


def overlap_share(windows: list[list[int]], index: int) -> torch.Tensor:
    """Per slot of window ``index``: its blending weight over the frame's weight sum over every window (1 where
    no other window covers the frame), the share a new result of the window gets there."""
    sums: dict[int, float] = {}
    for window in windows:
        for frame, weight in zip(window, blend_weights(len(window)).tolist(), strict=True):
            sums[frame] = sums.get(frame, 0.0) + weight
    own = blend_weights(len(windows[index]))
    return own / torch.tensor([sums[frame] for frame in windows[index]])


def window_noise(video: SampledVideo, index: int, seed: int | None, device: torch.device) -> torch.Tensor:
    """Unit initial noise (1, n, 4, h, w) fp32 of window ``index``: the video's own (``seed`` None) or a draw of
    ``seed``."""
    frames = video.windows[index]
    if seed is None:
        period = len(video.noise)
        return video.noise[[frame % period for frame in frames]][None].to(device, torch.float32)
    generator = torch.Generator(device=device).manual_seed(seed)
    shape = (1, len(frames), *video.noise.shape[1:])
    return torch.randn(shape, generator=generator, device=device, dtype=torch.float32)


def resample_window(pipeline: AnimationPipeline, video: SampledVideo, index: int, how: WindowPass) -> torch.Tensor:
    """The final latents (1, n, 4, h, w) of window ``index``'s frames after sampling it again as ``how`` says,
    merged with the video's as the module docstring says; ``video.latents`` is left as it was."""
    frames = video.windows[index]
    device = video.latents.device
    index_t = torch.tensor(frames, device=device)
    final = video.latents[:, index_t].clone()
    epsilon = window_noise(video, index, how.seed, device)
    held = torch.tensor(held_slots(video.windows, index), device=device)
    sigmas = video.schedule.sigmas.to(device)
    final_held, epsilon_held = final[:, held], epsilon[:, held]  # the same at every step

    def hold(latents: torch.Tensor, step: int) -> None:
        latents[:, held] = final_held + sigmas[step] * epsilon_held

    latents = epsilon * video.schedule.init_noise_sigma
    new = pipeline.denoise(video, latents, [list(range(len(frames)))], _WindowFeatures(video, frames),
                           video.guidance[:, index_t], how.id_scale, how.refine, ranks=Ranks(), hold=hold)
    share = overlap_share(video.windows, index).to(device)[held].view(1, -1, 1, 1, 1)
    new[:, held] = final[:, held] + share * (new[:, held] - final[:, held])
    new[:, 0] = final[:, 0]  # frame 0, slot 0 of every window
    return new
