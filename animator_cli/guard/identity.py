"""The identity guard (`--identity-guard`): find the windows where the face stopped looking like the reference and
render only those again, keeping the best attempt.

Every frame is scored as the identity timeline scores it (`animator_cli.check.timeline.IdentityScorer`); a window's
score is the median over its real frames (all of window 0, the others without the shared frame 0), frames without
a face left out. Windows below the threshold (given, or the video's own median minus AUTO_MARGIN) are sampled
again (`animator_cli.sampling.repair`) by escalating, one more lever per attempt:

1. HJB face optimisation on that window only (skipped when the render already used it or no face boxes exist),
2. a higher ID-adapter strength (``id_scale`` × ID_SCALE_STEP),
3. and from then on another seed for the window's noise, one new seed per attempt.

At most ``retries`` attempts per window; it stops at the first that reaches the threshold. The best attempt by
the same score replaces the window, if it beats the render: a worse attempt is never kept. The record says per
window the score, the attempts with their scores and seconds, and what was kept.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np

from animator_cli.options import GuardOptions

log = logging.getLogger("animator")

AUTO_MARGIN = 0.1  # default threshold: the video's median cosine minus this
ID_SCALE_STEP = 1.5  # the second lever multiplies the ID adapter's strength by this

# Frames (n, H, W, 3) uint8 RGB → their identity cosines (n,), NaN where no face is found.
Scorer = Callable[[np.ndarray], np.ndarray]


@dataclass
class Attempt:
    """One rendering of a window: the levers it used, then its score and cost."""

    action: str  # the lever this attempt added: hjb, id_scale or seed
    hjb: bool
    id_scale: float
    seed: int | None
    score: float | None = None
    seconds: float = 0.0


@dataclass
class WindowRecord:
    window: int
    first: int  # the window's real frames, first and last
    last: int
    score: float | None  # median cosine of the render (None: no face in the window)
    attempts: list[Attempt] = field(default_factory=list)
    kept: int | None = None  # index of the attempt kept; None: the render was kept

    @property
    def kept_name(self) -> str:
        return "render" if self.kept is None else f"attempt {self.kept + 1} ({self.attempts[self.kept].action})"


@dataclass
class GuardRecord:
    """What the guard did to one video: threshold, per-window record, time spent scoring and re-rendering."""

    threshold: float
    windows: list[WindowRecord]
    scoring_s: float = 0.0
    repair_s: float = 0.0

    @property
    def rendered_again(self) -> int:
        return sum(bool(w.attempts) for w in self.windows)

    @property
    def repaired(self) -> int:
        return sum(w.kept is not None for w in self.windows)

    def summary(self) -> str:
        return (f"identity guard: threshold {self.threshold:.3f}; {self.rendered_again} of {len(self.windows)} "
                f"window(s) rendered again, {self.repaired} repaired; {self.scoring_s:.2f} s scoring, "
                f"{self.repair_s:.2f} s re-rendering")

    def as_dict(self) -> dict[str, Any]:
        record = asdict(self)
        for window, data in zip(self.windows, record["windows"], strict=True):
            data["kept"] = window.kept_name
        return {**record, "rendered_again": self.rendered_again, "repaired": self.repaired}


class Repairable(Protocol):
    """A finished video whose windows can be sampled again (`animator_cli.guard.run.PipelineRepair`)."""

    windows: list[list[int]]

    def resample(self, index: int, attempt: Attempt) -> Any:
        """The window's new final latents for ``attempt`` (the video unchanged)."""

    def pixels(self, index: int, latents: Any) -> np.ndarray:
        """The pixels of the window's frames but frame 0 (which a repair never changes) for those latents."""

    def commit(self, index: int, latents: Any, pixels: np.ndarray) -> None:
        """Make those latents the window's, and ``pixels`` (`pixels`' for them) its frames'."""


def real_frames(windows: list[list[int]], index: int) -> list[int]:
    """The frames a window is scored on: all of window 0's, the others' without the shared frame 0."""
    return windows[index] if index == 0 else [f for f in windows[index] if f != 0]


def window_score(cosines: np.ndarray, frames: list[int]) -> float | None:
    """Median cosine over ``frames`` with a face; None if none has one."""
    found = cosines[frames][np.isfinite(cosines[frames])]
    return float(np.median(found)) if len(found) else None


def auto_threshold(cosines: np.ndarray) -> float:
    """The default threshold: the video's median cosine minus AUTO_MARGIN."""
    found = cosines[np.isfinite(cosines)]
    return float(np.median(found)) - AUTO_MARGIN if len(found) else -math.inf


def escalation(retries: int, *, hjb: bool, id_scale: float, seed: int, window: int) -> list[Attempt]:
    """The attempts for one window, each adding a lever to the previous one's (module docstring); ``hjb``: whether
    HJB is a lever left to add."""
    levers = (["hjb"] if hjb else []) + ["id_scale"] + ["seed"] * retries
    attempts, used_hjb, scale, new_seed = [], False, id_scale, None
    for number, lever in enumerate(levers[:retries]):
        used_hjb |= lever == "hjb"
        scale = id_scale * ID_SCALE_STEP if lever != "hjb" else scale
        if lever == "seed":  # one fixed new seed per (seed, window, attempt)
            new_seed = (seed * 1_000_003 + 7_919 * (window + 1) + number) % 2**63
        attempts.append(Attempt(lever, used_hjb, scale, new_seed))
    return attempts


def guard_video(cosines: np.ndarray, video: Repairable, score: Scorer, options: GuardOptions,
                plan: Callable[[int], list[Attempt]], scoring_s: float = 0.0) -> GuardRecord:
    """Render the windows whose score in ``cosines`` (F,), the render's frames scored by ``score`` in
    ``scoring_s`` seconds, is below the threshold again as ``plan(window)`` says, and keep the best attempt:
    ``video`` and ``cosines`` are updated in place with what was kept."""
    record = GuardRecord(auto_threshold(cosines) if options.threshold is None else options.threshold, [],
                         scoring_s=scoring_s)
    for index, window in enumerate(video.windows):
        scored = real_frames(video.windows, index)
        item = WindowRecord(index, min(scored), max(scored), window_score(cosines, scored))
        record.windows.append(item)
        changed = [frame for frame in window if frame != 0]
        if item.score is None or item.score >= record.threshold or not changed:  # frame 0 alone is never changed
            continue
        started = time.perf_counter()
        best, best_score = None, item.score
        for number, attempt in enumerate(plan(index)):
            began = time.perf_counter()
            latents = video.resample(index, attempt)
            pixels = video.pixels(index, latents)
            trial = cosines.copy()
            trial[changed] = score(pixels)
            attempt.score, attempt.seconds = window_score(trial, scored), time.perf_counter() - began
            item.attempts.append(attempt)
            if attempt.score is not None and attempt.score > best_score:
                best, best_score, item.kept = (latents, pixels, trial), attempt.score, number
            if best_score >= record.threshold:
                break
        if best is not None:
            latents, pixels, cosines[:] = best
            video.commit(index, latents, pixels)
        record.repair_s += time.perf_counter() - started
        log.info("identity guard: window %d (frames %d-%d) scored %.3f < %.3f; %d attempt(s), kept the %s",
                 index, item.first, item.last, item.score, record.threshold, len(item.attempts), item.kept_name)
    log.info("%s", record.summary())
    return record
