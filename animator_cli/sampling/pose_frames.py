"""Pose frames read from their folder when the sampler asks for them, so a long video is never in memory whole."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from animator_cli.sampling.fit import Fit, fit_image
from animator_cli.video import load_image


class FittedPoses:
    """The skeleton images ``paths`` as the (F, H, W, 3) uint8 array `AnimationPipeline` takes, read lazily.

    Only slices are supported, and a slice reads and fits (``fit_image(..., pose=True)``) just its frames: the
    sampler holds one chunk of poses at a time instead of all of them (7,500 frames at 576×1024 are 13 GB).
    """

    def __init__(self, paths: Sequence[Path], width: int, height: int, fit: Fit) -> None:
        self.paths, self.width, self.height, self.fit = list(paths), width, height, fit

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: slice) -> np.ndarray:
        if not isinstance(index, slice):
            raise TypeError(f"FittedPoses takes slices, not {type(index).__name__}")
        frames = [fit_image(load_image(p), self.width, self.height, self.fit, pose=True) for p in self.paths[index]]
        return np.stack(frames) if frames else np.zeros((0, self.height, self.width, 3), np.uint8)
