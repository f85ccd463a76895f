"""Confidence-aware One Euro filtering of a pose track: removes detector jitter without lagging fast motion.

One Euro (Casiez et al., CHI 2012) adapts its low-pass cutoff to the speed: slow points are smoothed hard, fast
ones barely. Here each point's smoothing factor is also multiplied by its confidence, so an uncertain detection
moves the filtered point less than a sure one. Coordinates are filtered in units of the frame's short side
(resolution-independent); the state restarts after a frame without any pose, and per point when it reappears.
"""

from __future__ import annotations

import math

import numpy as np

from animator_cli.pose.keypoints import PoseTrack

MIN_CUTOFF = 1.0  # Hz
BETA = 5.0  # cutoff increase per (short sides / s) of speed
D_CUTOFF = 1.0  # Hz, for the speed estimate


def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
    tau = 1.0 / (2 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


def one_euro(track: PoseTrack, min_cutoff: float = MIN_CUTOFF, beta: float = BETA,
             d_cutoff: float = D_CUTOFF) -> PoseTrack:
    """A smoothed copy of ``track`` (points only; scores and flags unchanged)."""
    width, height = track.size
    unit = np.array([width, height], np.float64) / min(width, height)
    dt = 1.0 / (track.fps or 25.0)
    raw = track.points.astype(np.float64) * unit
    out = raw.copy()
    usable = track.present | track.filled
    prev_x = prev_dx = None
    for i in range(len(track)):
        if not usable[i]:
            prev_x = prev_dx = None
            continue
        confidence = np.clip(track.scores[i], 0.0, 1.0)[:, None]
        if prev_x is None:
            prev_x, prev_dx = raw[i].copy(), np.zeros_like(raw[i])
        # A point that was absent (score 0) starts afresh where it is now instead of sliding in from (0, 0).
        fresh = (track.scores[i - 1] <= 0 if i else np.ones(len(confidence), bool)) | (confidence[:, 0] <= 0)
        prev_x[fresh], prev_dx[fresh] = raw[i][fresh], 0.0
        dx = (raw[i] - prev_x) / dt
        prev_dx = prev_dx + _alpha(d_cutoff, dt) * (dx - prev_dx)
        speed = np.linalg.norm(prev_dx, axis=1, keepdims=True)
        alpha = _alpha(min_cutoff + beta * speed, dt) * confidence
        prev_x = prev_x + alpha * (raw[i] - prev_x)
        out[i] = prev_x
    return PoseTrack((out / unit).astype(np.float32), track.scores, track.present, track.filled, track.size,
                     track.fps)
