"""Drift lock (`--drift-lock`): every window keeps the colours of the first.

Long videos drift from window to window (colour, exposure, background), because each window is denoised with its
own context. Per window, the per-channel mean and spread of its decoded frames outside the person are matched to
the first window's: a gain and an offset per channel, gain = σ_anchor/σ_window, offset = μ_anchor − gain·μ_window,
applied to the whole frame (drift moves the whole picture; only its measure leaves the person out, whose motion
would otherwise read as drift).

- A window is measured on its own frames (those no other window shares), so a neighbour's drift does not leak
  into it; a window without such frames is measured on all of its frames.
- A frame several windows share gets the blend of their corrections with the sampler's triangular overlap
  weights, as its latents got the blend of their predictions: the correction fades across the overlap.
- The person is the pose skeleton's bounding box widened by PERSON_MARGIN of its size on each side.
- The first window is the anchor: its frames, and frame 0, are never changed; a frame whose correction is the
  identity keeps its exact pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from animator_cli.sampling.windows import blend_weights

PERSON_MARGIN = 0.25  # the skeleton's box widened by this fraction of its width/height on each side
SKELETON_LEVEL = 16  # a pose pixel above this (any channel) is part of the drawn skeleton

# frame indices → their pose frames (n, H, W, 3) uint8, at the video's size
PoseReader = Callable[[list[int]], np.ndarray]


@dataclass(frozen=True)
class Correction:
    """Per-channel gain and offset (3,) float64 of one window."""

    gain: np.ndarray
    offset: np.ndarray

    @staticmethod
    def identity() -> Correction:
        return Correction(np.ones(3), np.zeros(3))


def person_mask(pose: np.ndarray) -> np.ndarray:
    """(H, W) bool: True inside the person (the widened skeleton box); all False without a skeleton."""
    drawn = (pose > SKELETON_LEVEL).any(axis=2)
    mask = np.zeros(drawn.shape, bool)
    if not drawn.any():
        return mask
    rows, cols = np.flatnonzero(drawn.any(axis=1)), np.flatnonzero(drawn.any(axis=0))
    dy, dx = PERSON_MARGIN * (rows[-1] - rows[0] + 1), PERSON_MARGIN * (cols[-1] - cols[0] + 1)
    mask[max(0, int(rows[0] - dy)):int(rows[-1] + dy) + 1, max(0, int(cols[0] - dx)):int(cols[-1] + dx) + 1] = True
    return mask


class BackgroundMeasure:
    """Per frame, the pixel count, sum and sum of squares per channel outside the person: gathered chunk by chunk
    as the frames are decoded (a frame measured again replaces its sums), so a long video is never held whole.
    The sums are of integers, exact in float64 up to 2^53, so a window's statistics do not depend on the order
    its frames were measured in."""

    def __init__(self, num_frames: int) -> None:
        self.count = np.zeros(num_frames)
        self.sums = np.zeros((num_frames, 3))
        self.squares = np.zeros((num_frames, 3))

    def add(self, frames: Sequence[int], pixels: np.ndarray, poses: np.ndarray) -> None:
        """Measure ``pixels`` (n, H, W, 3) uint8, the video's ``frames``, whose pose frames are ``poses``."""
        for frame, image, pose in zip(frames, pixels, poses, strict=True):
            outside = ~person_mask(pose)
            values = (image[outside] if outside.any() else image.reshape(-1, 3)).astype(np.float64)
            self.count[frame], self.sums[frame], self.squares[frame] = len(values), values.sum(0), (values**2).sum(0)

    def stats(self, frames: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel mean and standard deviation (3,) of ``frames`` outside the person, over all their pixels."""
        count = self.count[frames].sum()
        mean = self.sums[frames].sum(0) / count
        return mean, np.sqrt(np.maximum(self.squares[frames].sum(0) / count - mean**2, 0.0))

    def corrections(self, windows: list[list[int]]) -> list[Correction]:
        """Each window's correction towards window 0's background colours (window 0's is the identity)."""
        mean_a, std_a = self.stats(own_frames(windows, 0))
        corrections = [Correction.identity()]
        for index in range(1, len(windows)):
            mean, std = self.stats(own_frames(windows, index))
            gain = np.where(std > 1e-6, std_a / np.maximum(std, 1e-6), 1.0)
            corrections.append(Correction(gain, mean_a - gain * mean))
        return corrections


def own_frames(windows: list[list[int]], index: int) -> list[int]:
    """The frames only window ``index`` covers, else all of its frames but the shared frame 0 (if any remain)."""
    others = {frame for number, window in enumerate(windows) if number != index for frame in window}
    own = [frame for frame in windows[index] if frame not in others]
    return own or [frame for frame in windows[index] if frame != 0] or windows[index]


def frame_corrections(corrections: list[Correction], windows: list[list[int]], num_frames: int) -> list[Correction]:
    """Per frame, the windows' corrections blended with the overlap weights (frame 0 and window 0's own frames
    keep the identity)."""
    gains, offsets, weights = np.zeros((num_frames, 3)), np.zeros((num_frames, 3)), np.zeros(num_frames)
    for index, (window, correction) in enumerate(zip(windows, corrections, strict=True)):
        for frame, weight in zip(window, blend_weights(len(window)).tolist(), strict=True):
            if frame == 0 and index:
                continue  # frame 0 is the first window's
            gains[frame] += weight * correction.gain
            offsets[frame] += weight * correction.offset
            weights[frame] += weight
    return [Correction(g / w, o / w) for g, o, w in zip(gains, offsets, weights[:, None], strict=True)]


def correct(pixels: np.ndarray, corrections: list[Correction]) -> None:
    """Apply per-frame ``corrections`` to ``pixels`` (n, H, W, 3) uint8 in place; a frame whose correction is the
    identity keeps its exact bytes."""
    for image, correction in zip(pixels, corrections, strict=True):
        if np.array_equal(correction.gain, np.ones(3)) and not correction.offset.any():
            continue
        image[:] = np.clip(np.round(image.astype(np.float64) * correction.gain + correction.offset), 0, 255)


def drift_lock(frames: np.ndarray, windows: list[list[int]], poses: PoseReader) -> list[Correction]:
    """Match every window's background colours to window 0's in ``frames`` (F, H, W, 3) uint8, held whole, in
    place; returns each window's correction. (A render streams its frames through `BackgroundMeasure` and
    `correct` instead: `animator_cli.guard.run`.)"""
    every = list(range(len(frames)))
    measure = BackgroundMeasure(len(frames))
    measure.add(every, frames, poses(every))
    corrections = measure.corrections(windows)
    correct(frames, frame_corrections(corrections, windows, len(frames)))
    return corrections
