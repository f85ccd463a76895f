"""Fit the driving skeletons onto the reference person's body, so the generated video keeps the reference's build.

`global` is the reference's linear fit (spec §5, `get_video_pose`) with its bugs fixed (spec §7):
  y_ref = a_y · y_drv + b_y by least squares over the alignment keypoints of all frames; a_x follows from a_y
  through the *real* aspect ratios (the reference divides by fh/fw/height·width with fh=height, fw=width, so
  a_x = a_y always); invisible points are left out of the fit; every frame's tracked person takes part (the
  reference used only frames with exactly one person and crashed when there were none).
`limbs` then retargets bone by bone along the kinematic tree (as UniAnimate / Wan-Animate do): every bone keeps its
  direction in each frame but is scaled to the reference's length (by the ratio of the reference bone to the
  driving bone's median length), hanging from its already retargeted parent; the neck keeps the `global`
  trajectory. The head (eyes, ears, face) follows the nose rigidly, scaled like the neck-nose bone; the hands
  follow the wrists, scaled like the forearms; the feet follow the ankles.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from animator_cli.errors import InputError
from animator_cli.pose.keypoints import (
    FACE,
    KEYPOINT_THRESHOLD,
    L_ANKLE,
    L_EAR,
    L_ELBOW,
    L_WRIST,
    LEFT_HAND,
    NECK,
    NOSE,
    R_ANKLE,
    R_ELBOW,
    R_EYE,
    R_WRIST,
    RIGHT_HAND,
    Pose,
    PoseTrack,
)

ALIGN_MODES = ("global", "limbs", "none")
ALIGN_KEYPOINTS = (0, 1, 2, 5, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17)
# Kinematic tree rooted at the neck, parents before children. The head is not split into bones: eyes, ears and
# the face move rigidly with the nose, so the drawn eyes stay on the face.
BONES = ((1, 0), (1, 2), (1, 5), (1, 8), (1, 11), (2, 3), (5, 6), (8, 9), (11, 12), (3, 4), (6, 7), (9, 10),
         (12, 13))
HEAD = np.r_[R_EYE:L_EAR + 1, FACE.start:FACE.stop]
# Point groups, the body point they hang from, and the bone whose ratio scales them (None: translate only).
ATTACHED = ((HEAD, NOSE, (NECK, NOSE)), (np.r_[LEFT_HAND], L_WRIST, (L_ELBOW, L_WRIST)),
            (np.r_[RIGHT_HAND], R_WRIST, (R_ELBOW, R_WRIST)), (np.r_[18:21], L_ANKLE, None),
            (np.r_[21:24], R_ANKLE, None))


@dataclass
class Alignment:
    """How the driving poses were mapped: p_canvas = p_drv · scale + shift (normalised), then bone ratios."""

    mode: str
    scale: tuple[float, float] = (1.0, 1.0)
    shift: tuple[float, float] = (0.0, 0.0)
    bone_ratios: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"mode": self.mode, "scale": list(self.scale), "shift": list(self.shift),
                "bone_ratios": self.bone_ratios}


def fit_global(reference: Pose, reference_size: tuple[int, int], track: PoseTrack) -> Alignment:
    """Least-squares scale and shift taking the track's alignment keypoints onto the reference's."""
    ids = [i for i in ALIGN_KEYPOINTS if reference.scores[i] > KEYPOINT_THRESHOLD]
    if not ids:
        raise InputError("no body keypoints found in the reference image", "use a full-body photo or --align none")
    used = track.present | track.filled
    drv = track.points[used][:, ids]
    visible = track.scores[used][:, ids] > KEYPOINT_THRESHOLD
    ref = np.broadcast_to(reference.points[ids], drv.shape)
    drv_y, ref_y = drv[..., 1][visible], ref[..., 1][visible]
    if len(drv_y) < 2 or np.ptp(drv_y) == 0:
        raise InputError("too few visible body keypoints in the driving video to align it to the reference",
                         "use --align none")
    a_y, b_y = np.polyfit(drv_y.astype(np.float64), ref_y.astype(np.float64), 1)
    (fw, fh), (width, height) = track.size, reference_size
    a_x = a_y * (fw / fh) * (height / width)  # same pixel scale on both axes
    b_x = float(np.mean(ref[..., 0][visible] - a_x * drv[..., 0][visible]))
    return Alignment("global", (float(a_x), float(a_y)), (b_x, float(b_y)))


def apply_global(track: PoseTrack, alignment: Alignment, reference_size: tuple[int, int]) -> PoseTrack:
    """The track mapped into the reference's normalised frame; frames without a pose stay zero."""
    used = (track.present | track.filled)[:, None, None]
    points = np.where(used, track.points * np.float32(alignment.scale) + np.float32(alignment.shift), 0)
    return PoseTrack(points.astype(np.float32), track.scores, track.present, track.filled, reference_size, track.fps)


def _bone_lengths(points: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """(F, bones) pixel lengths, NaN where an end point is invisible."""
    parents, children = np.array(BONES).T
    lengths = np.linalg.norm(points[..., children, :] - points[..., parents, :], axis=-1)
    visible = (scores[..., children] > KEYPOINT_THRESHOLD) & (scores[..., parents] > KEYPOINT_THRESHOLD)
    return np.where(visible, lengths, np.nan)


def retarget_limbs(aligned: PoseTrack, reference: Pose, alignment: Alignment) -> tuple[PoseTrack, Alignment]:
    """Bone-by-bone retargeting of a globally aligned track (see the module docstring)."""
    size = np.array(aligned.size, np.float32)
    pixels = aligned.points * size
    ref_lengths = _bone_lengths(reference.points * size, reference.scores)
    drv_lengths = _bone_lengths(pixels, aligned.scores)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: bones never seen
        medians = np.nanmedian(drv_lengths, axis=0)
    ratios = np.where(np.isfinite(ref_lengths) & (medians > 0), ref_lengths / np.where(medians > 0, medians, 1), 1.0)
    out = pixels.copy()
    for (parent, child), ratio in zip(BONES, ratios, strict=True):
        bone = pixels[:, child] - pixels[:, parent]
        visible = (aligned.scores[:, [parent, child]] > KEYPOINT_THRESHOLD).all(1)[:, None]
        out[:, child] = out[:, parent] + np.where(visible, bone * ratio, bone)
    bone_ratio = {bone: ratio for bone, ratio in zip(BONES, ratios, strict=True)}
    for part, anchor, carrier in ATTACHED:
        factor = bone_ratio[carrier] if carrier else 1.0
        out[:, part] = out[:, anchor, None] + (pixels[:, part] - pixels[:, anchor, None]) * factor
    used = (aligned.present | aligned.filled)[:, None, None]
    points = np.where(used, out / size, 0).astype(np.float32)
    alignment = Alignment("limbs", alignment.scale, alignment.shift,
                          {f"{p}-{c}": float(r) for (p, c), r in zip(BONES, ratios, strict=True)})
    return PoseTrack(points, aligned.scores, aligned.present, aligned.filled, aligned.size, aligned.fps), alignment


def align_track(track: PoseTrack, mode: str, reference: Pose | None = None,
                reference_size: tuple[int, int] | None = None) -> tuple[PoseTrack, Alignment]:
    """Align ``track`` to ``reference`` (drawn at ``reference_size``) with ``mode`` in global, limbs, none."""
    if mode not in ALIGN_MODES:
        raise InputError(f"unknown alignment '{mode}'", f"choose from {', '.join(ALIGN_MODES)}")
    if mode == "none" or reference is None or reference_size is None:
        size = reference_size or track.size
        return PoseTrack(track.points, track.scores, track.present, track.filled, size, track.fps), Alignment("none")
    alignment = fit_global(reference, reference_size, track)
    aligned = apply_global(track, alignment, reference_size)
    if mode == "limbs":
        return retarget_limbs(aligned, reference, alignment)
    return aligned, alignment
