"""Temporal tiling: long videos are denoised as overlapping windows that all share frame 0 as an anchor.

Window layout (as in the released pipeline, from MimicMotion): for each start ``i`` in
``range(0, F − T + 1, T − O)`` the window is ``[0, i+1, …, min(i+T, F) − 1]``; when the last window stops short
of frame F − 1, a tail window ``[0, F−T+1, …, F−1]`` is appended. Consecutive windows share O − 1 real frames plus
the anchor. Fixed here: a video shorter than a window (F < T) gets the single window ``[0, …, F−1]`` (the reference
produced no window and crashed with an IndexError), and an overlap of 0, which leaves frames in no window, is
rejected instead of producing NaNs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from animator_cli.errors import InputError
from animator_cli.options import check_tiling

if TYPE_CHECKING:
    import torch


def window_indices(num_frames: int, tile: int, overlap: int) -> list[list[int]]:
    """Frame indices of every window; frame 0 is slot 0 of each."""
    if num_frames < 1:
        raise InputError("there are no pose frames to animate", "check the POSES folder")
    check_tiling(tile, overlap)
    if num_frames <= tile:
        return [list(range(num_frames))]
    windows = [[0, *range(i + 1, min(i + tile, num_frames))] for i in range(0, num_frames - tile + 1, tile - overlap)]
    if windows[-1][-1] < num_frames - 1:
        windows.append([0, *range(num_frames - tile + 1, num_frames)])
    return windows


def group_windows(windows: list[list[int]], size: int) -> list[list[list[int]]]:
    """Consecutive windows grouped for one UNet call each: at most ``size`` windows per group, all of one length
    (a group is one (K, n) batch)."""
    if size < 1:
        raise ValueError(f"window batch size {size} must be at least 1")
    groups: list[list[list[int]]] = []
    for window in windows:
        if groups and len(groups[-1]) < size and len(groups[-1][0]) == len(window):
            groups[-1].append(window)
        else:
            groups.append([window])
    return groups


def blend_weights(size: int) -> torch.Tensor:
    """Triangular per-slot weights w_p = min((p+½)·2/T, 2 − (p+½)·2/T), so window edges fade into neighbours."""
    import torch  # here, not at the top: option validation uses window_indices before torch is needed

    ramp = (torch.arange(size, dtype=torch.float32) + 0.5) * 2 / size
    return torch.minimum(ramp, 2 - ramp)


def periodic_noise(shape: tuple[int, int, int], num_frames: int, tile: int, generator: torch.Generator,
                   dtype: torch.dtype | None = None) -> torch.Tensor:
    """Initial noise (1, F, C, h, w): one draw of ``tile`` frames repeated along time, so every window starts
    from the same noise; drawn as ``randn(1, tile, C, h, w)`` on the generator's device, like the reference."""
    import torch

    noise = torch.randn((1, tile, *shape), generator=generator, device=generator.device, dtype=dtype or torch.float32)
    return noise.repeat(1, num_frames // tile + 1, 1, 1, 1)[:, :num_frames]
