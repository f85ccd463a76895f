"""How well an aligned driving track lands on the reference body: joints off the canvas, and a residual.

The residual compares each aligned frame's alignment keypoints with the reference's, in units of the reference
body's size (the diagonal of its visible joints' box). Poses differ while the driver moves, so the frames that
match best tell the body-shape mismatch that no pose change explains: the mean of the best RESIDUAL_SHARE of
frames is taken.
"""

from __future__ import annotations

import math

import numpy as np

from animator_cli.errors import InputError
from animator_cli.pose.align import ALIGN_KEYPOINTS, align_track
from animator_cli.pose.keypoints import BODY, KEYPOINT_THRESHOLD, Pose, PoseTrack

RESIDUAL_SHARE = 0.1
MIN_JOINTS = 3  # frames with fewer matched joints give no residual
EDGE_MARGIN = 0.02  # a joint this close beyond the edge (of the canvas size) is a border joint, not a cut-off one


def off_canvas(track: PoseTrack) -> np.ndarray:
    """(F,) whether a seen body joint of each used frame lies outside the canvas (by more than EDGE_MARGIN)."""
    body = track.points[:, BODY]
    seen = track.scores[:, BODY] > KEYPOINT_THRESHOLD
    outside = ((body < -EDGE_MARGIN) | (body > 1 + EDGE_MARGIN)).any(-1) & seen
    return outside.any(-1) & (track.present | track.filled)


def residual(aligned: PoseTrack, reference: Pose) -> float | None:
    """Mean distance of the best-matching frames' joints to the reference's, over the reference body's size."""
    ids = [i for i in ALIGN_KEYPOINTS if reference.scores[i] > KEYPOINT_THRESHOLD]
    size = np.asarray(aligned.size, np.float64)
    ref = reference.points[ids] * size
    seen = reference.points[BODY][reference.scores[BODY] > KEYPOINT_THRESHOLD] * size
    if len(ids) < MIN_JOINTS or len(seen) < 2:
        return None
    extent = math.hypot(*(seen.max(0) - seen.min(0)))
    used = aligned.present | aligned.filled
    points = aligned.points[used][:, ids] * size
    visible = aligned.scores[used][:, ids] > KEYPOINT_THRESHOLD
    counts = visible.sum(1)
    distances = np.where(visible, np.linalg.norm(points - ref, axis=-1), 0).sum(1)
    errors = np.sort(distances[counts >= MIN_JOINTS] / counts[counts >= MIN_JOINTS])
    if not len(errors) or extent <= 0:
        return None
    best = errors[:max(1, math.ceil(RESIDUAL_SHARE * len(errors)))]
    return float(best.mean() / extent)


def aligned_tracks(track: PoseTrack, reference: Pose, size: tuple[int, int],
                   modes: tuple[str, ...] = ("global", "limbs")) -> dict[str, PoseTrack]:
    """``track`` aligned to the reference with each of ``modes``; a mode the track cannot be fitted with is left
    out (too few visible joints)."""
    out = {}
    for mode in modes:
        try:
            out[mode] = align_track(track, mode, reference, size)[0]
        except InputError:
            continue
    return out
