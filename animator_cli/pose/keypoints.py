"""The 134-point whole-body layout StableAnimator's poses use, and containers for detections and tracks.

Layout (DWPose after neck insertion and the OpenPose remap, spec §5):
    0-17    body in OpenPose-18 order: 0 nose, 1 neck, 2-4 right shoulder/elbow/wrist, 5-7 left shoulder/elbow/wrist,
            8-10 right hip/knee/ankle, 11-13 left hip/knee/ankle, 14 right eye, 15 left eye, 16 right ear, 17 left ear
    18-23   feet (left big toe, small toe, heel, right big toe, small toe, heel; never drawn)
    24-91   face, the 68-point iBUG layout
    92-112  left hand, 113-133 right hand (21 points each: wrist, then thumb, index, middle, ring, pinky tips last)

Coordinates are normalised: x by the image width, y by its height, as the reference's aligned detector stores them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from animator_cli.errors import InputError

KEYPOINTS_FILE = "keypoints.npz"  # in every pose folder: the detected and the drawn poses

NUM_POINTS = 134
BODY = slice(0, 18)
FEET = slice(18, 24)
FACE = slice(24, 92)
LEFT_HAND = slice(92, 113)
RIGHT_HAND = slice(113, 134)
HANDS = (LEFT_HAND, RIGHT_HAND)

NOSE, NECK = 0, 1
R_SHOULDER, R_ELBOW, R_WRIST, L_SHOULDER, L_ELBOW, L_WRIST = 2, 3, 4, 5, 6, 7
R_HIP, R_KNEE, R_ANKLE, L_HIP, L_KNEE, L_ANKLE = 8, 9, 10, 11, 12, 13
R_EYE, L_EYE, R_EAR, L_EAR = 14, 15, 16, 17

KEYPOINT_THRESHOLD = 0.3  # a body point below this score is invisible (subset = -1 in the reference)
MIN_FACE_POINTS = 5  # fewer visible face points is no usable face


@dataclass
class Pose:
    """One person in one image: ``points`` (134, 2) normalised x/W, y/H and ``scores`` (134,)."""

    points: np.ndarray
    scores: np.ndarray

    def visible(self, threshold: float = KEYPOINT_THRESHOLD) -> np.ndarray:
        return self.scores > threshold

    def body_box(self, threshold: float = KEYPOINT_THRESHOLD) -> np.ndarray | None:
        """Normalised (x0, y0, x1, y1) around the visible body points, or None when fewer than two are visible."""
        body = self.points[BODY][self.scores[BODY] > threshold]
        if len(body) < 2:
            return None
        return np.concatenate([body.min(0), body.max(0)])


def face_visible(scores: np.ndarray, min_score: float = KEYPOINT_THRESHOLD) -> np.ndarray:
    """Whether each pose of ``scores`` (..., 134) shows a usable face: at least 5 face points above ``min_score``."""
    return (scores[..., FACE] > min_score).sum(-1) >= MIN_FACE_POINTS


def empty_pose() -> Pose:
    return Pose(np.zeros((NUM_POINTS, 2), np.float32), np.zeros(NUM_POINTS, np.float32))


@dataclass
class PoseTrack:
    """One tracked person over a clip, the unit every later step (fill, smooth, align, draw) works on.

    ``points`` (F, 134, 2) are normalised to ``size`` = (width, height); ``present`` (F,) says which frames have a
    detection (the others hold zeros or values filled in from neighbours, see ``filled``).
    """

    points: np.ndarray
    scores: np.ndarray
    present: np.ndarray
    filled: np.ndarray
    size: tuple[int, int]
    fps: float

    def __len__(self) -> int:
        return len(self.points)

    def pose(self, index: int) -> Pose:
        return Pose(self.points[index], self.scores[index])

    @classmethod
    def from_poses(cls, poses: list[Pose | None], size: tuple[int, int], fps: float) -> PoseTrack:
        blank = empty_pose()
        points = np.stack([(p or blank).points for p in poses]).astype(np.float32)
        scores = np.stack([(p or blank).scores for p in poses]).astype(np.float32)
        present = np.array([p is not None for p in poses], bool)
        return cls(points, scores, present, np.zeros(len(poses), bool), size, fps)


def save_keypoints(path: Path, drawn: PoseTrack, source: PoseTrack) -> None:
    """Write ``keypoints.npz`` (F frames, float32 unless noted):

    points (F, 134, 2), scores (F, 134), present (F,) bool, canvas_size (2,) int [W, H]: the drawn (aligned) poses,
    normalised to the canvas, i.e. to the skeleton PNGs and so to any output they are resized to;
    source_points, source_scores, source_present, source_size: the tracked poses normalised to the driving video;
    fps.
    """
    np.savez_compressed(
        path,
        points=drawn.points.astype(np.float32), scores=drawn.scores.astype(np.float32),
        present=drawn.present | drawn.filled, canvas_size=np.array(drawn.size, np.int32),
        source_points=source.points.astype(np.float32), source_scores=source.scores.astype(np.float32),
        source_present=source.present, source_size=np.array(source.size, np.int32),
        fps=np.float32(source.fps),
    )


def _read(path: Path, build: Callable[[Any], PoseTrack]) -> PoseTrack:
    """``build(data)`` of a ``keypoints.npz`` (or of the one in a pose folder), with a one-line error if unreadable."""
    path = Path(path)
    if path.is_dir():
        path = path / "keypoints.npz"
    try:
        with np.load(path) as data:
            return build(data)
    except (OSError, KeyError, ValueError) as exc:
        raise InputError(f"cannot read pose keypoints from {path}: {exc}",
                         "rerun `animator extract-pose`") from exc


def load_keypoints(path: Path) -> PoseTrack:
    """The drawn poses of a ``keypoints.npz`` written by :func:`save_keypoints`."""
    return _read(path, lambda data: PoseTrack(
        data["points"], data["scores"], data["present"], np.zeros_like(data["present"]),
        tuple(int(v) for v in data["canvas_size"]), float(data["fps"])))


def load_source_track(path: Path) -> PoseTrack:
    """The tracked poses in the driving video's own frame (``source_*`` of a ``keypoints.npz``), filled frames
    marked as such: what alignment starts from, for checks that try other alignments than the drawn one."""
    def build(data: Any) -> PoseTrack:
        present = data["source_present"]
        return PoseTrack(data["source_points"], data["source_scores"], present, data["present"] & ~present,
                         tuple(int(v) for v in data["source_size"]), float(data["fps"]))

    return _read(path, build)


def face_boxes(path: Path, width: int, height: int, min_score: float = KEYPOINT_THRESHOLD,
               pad: float = 0.1) -> list[tuple[int, int, int, int] | None]:
    """Per-frame face boxes (x0, y0, x1, y1) in pixels of a ``width``×``height`` output, from the 68 face points.

    The boxes come from the *drawn* (aligned) poses, so they line up with the generated video, and are scaled to the
    output size; the reference took them from the unaligned driving frames at the wrong size (spec §7). ``pad``
    widens each side by that fraction of the box size. Frames whose face has fewer than 5 points above
    ``min_score`` give None.
    """
    track = load_keypoints(path)
    boxes: list[tuple[int, int, int, int] | None] = []
    for points, scores in zip(track.points[:, FACE], track.scores[:, FACE], strict=True):
        face = points[scores > min_score]
        if len(face) < MIN_FACE_POINTS:
            boxes.append(None)
            continue
        (x0, y0), (x1, y1) = face.min(0) * (width, height), face.max(0) * (width, height)
        dx, dy = (x1 - x0) * pad, (y1 - y0) * pad
        box = (max(0, int(np.floor(x0 - dx))), max(0, int(np.floor(y0 - dy))),
               min(width, int(np.ceil(x1 + dx))), min(height, int(np.ceil(y1 + dy))))
        boxes.append(box if box[2] > box[0] and box[3] > box[1] else None)
    return boxes


def pose_folder_faces(folder: Path, num_frames: int) -> tuple[tuple[int, int], np.ndarray, np.ndarray]:
    """The faces of a pose folder written by `animator extract-pose`: the (w, h) of its skeleton images, and per
    frame the 68 face points of the drawn poses in those images' pixels (F, 68, 2) with their scores (F, 68).
    ``num_frames``: the frames the folder holds (a keypoints file of another length is an error)."""
    from animator_cli.video import list_frames, load_image

    path = Path(folder) / KEYPOINTS_FILE
    if not path.is_file():
        raise InputError(f"face_opt needs face boxes: {path} does not exist",
                         "use a pose folder written by `animator extract-pose`, or give face_masks", option="face_opt")
    track = load_keypoints(path)
    if len(track.points) != num_frames:
        raise InputError(f"{path} has {len(track.points)} frames but the folder has {num_frames} poses",
                         "rerun `animator extract-pose`")
    height, width = load_image(list_frames(Path(folder))[0]).shape[:2]
    return (width, height), track.points[:, FACE] * (width, height), track.scores[:, FACE]
