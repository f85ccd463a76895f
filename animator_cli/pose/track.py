"""One person per frame: follow the main person through a clip and bridge short detection gaps."""

from __future__ import annotations

import numpy as np

from animator_cli.pose.credible import is_credible
from animator_cli.pose.keypoints import Pose, PoseTrack


def _area(box: np.ndarray) -> float:
    return float(max(box[2] - box[0], 0) * max(box[3] - box[1], 0))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = _area(np.concatenate([np.maximum(a[:2], b[:2]), np.minimum(a[2:], b[2:])]))
    union = _area(a) + _area(b) - inter
    return inter / union if union > 0 else 0.0


def credible_people(poses: list[Pose], size: tuple[int, int]) -> list[Pose]:
    """The detections in an image of ``size`` (width, height) that are people, not phantoms (credible.py)."""
    return [p for p in poses if is_credible(p, size)]


def largest(poses: list[Pose], size: tuple[int, int]) -> Pose | None:
    """The person with the biggest visible body in an image of ``size``, the one a portrait or a dance clip is
    about."""
    people = credible_people(poses, size)
    return max(people, key=lambda p: _area(p.body_box())) if people else None


class MainPersonTracker:
    """Picks the same person in every frame of a clip of ``size`` (width, height): the largest at first, then the
    best box overlap with the last position, then the nearest centre within one box diagonal; if nobody is close,
    the largest is taken anew."""

    def __init__(self, size: tuple[int, int]) -> None:
        self.size = size
        self.last: np.ndarray | None = None

    def update(self, poses: list[Pose]) -> Pose | None:
        people = credible_people(poses, self.size)
        if not people:
            return None
        chosen = None
        if self.last is not None:
            boxes = [p.body_box() for p in people]
            overlaps = [_iou(self.last, box) for box in boxes]
            best = int(np.argmax(overlaps))
            if overlaps[best] >= 0.1:
                chosen = people[best]
            else:
                centre = (self.last[:2] + self.last[2:]) / 2
                reach = float(np.hypot(*(self.last[2:] - self.last[:2])))
                distances = [float(np.hypot(*((b[:2] + b[2:]) / 2 - centre))) for b in boxes]
                nearest = int(np.argmin(distances))
                chosen = people[nearest] if distances[nearest] <= reach else None
        chosen = chosen or largest(people, self.size)
        self.last = chosen.body_box()
        return chosen


def fill_gaps(track: PoseTrack, max_gap: int) -> PoseTrack:
    """Frames without a detection get poses interpolated from the nearest detected neighbours.

    Interior gaps up to ``max_gap`` frames are interpolated linearly (points and scores); up to ``max_gap`` frames
    before the first or after the last detection repeat it. Longer gaps stay empty (drawn black) and are marked so.
    """
    points, scores = track.points.copy(), track.scores.copy()
    filled = np.zeros(len(track), bool)
    detected = np.flatnonzero(track.present)
    if not len(detected):
        return track
    for start, end in zip(detected[:-1], detected[1:], strict=True):
        gap = end - start - 1
        if 0 < gap <= max_gap:
            t = (np.arange(1, gap + 1) / (gap + 1))[:, None, None]
            points[start + 1:end] = (1 - t) * points[start] + t * points[end]
            scores[start + 1:end] = (1 - t[..., 0]) * scores[start] + t[..., 0] * scores[end]
            filled[start + 1:end] = True
    first, last = detected[0], detected[-1]
    head = np.arange(max(0, first - max_gap), first)
    tail = np.arange(last + 1, min(len(track), last + 1 + max_gap))
    points[head], scores[head], filled[head] = points[first], scores[first], True
    points[tail], scores[tail], filled[tail] = points[last], scores[last], True
    return PoseTrack(points, scores, track.present, filled, track.size, track.fps)
