"""The check's preview image: do the driving poses land on the reference body?

One row per representative driving frame: on the left the reference photo with that frame's aligned skeleton
drawn over it (exactly the skeleton PoseNet would see), on the right the driving frame with its detected skeleton.
Rows are ROW_HEIGHT pixels high; the reference cell is the photo resized to that height (INTER_AREA).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from animator_cli.errors import InputError
from animator_cli.fileio import atomic_path
from animator_cli.pose.draw import draw_pose, overlay
from animator_cli.pose.keypoints import PoseTrack

ROW_HEIGHT = 384
PREVIEW_FRAMES = 3


def representative_frames(track: PoseTrack, count: int = PREVIEW_FRAMES) -> list[int]:
    """``count`` frames with a pose, evenly spread over the clip."""
    used = np.flatnonzero(track.present | track.filled)
    if not len(used):
        return []
    return sorted({int(used[i]) for i in np.linspace(0, len(used) - 1, min(count, len(used))).round().astype(int)})


def _to_height(image: np.ndarray, height: int) -> np.ndarray:
    width = max(1, round(image.shape[1] * height / image.shape[0]))
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def preview_rows(reference: np.ndarray, aligned: PoseTrack, source: PoseTrack,
                 frames: dict[int, np.ndarray]) -> np.ndarray:
    """The preview as an RGB array (see the module docstring); ``frames`` maps frame index → driving frame."""
    ref_height, ref_width = reference.shape[:2]
    rows = []
    for index, frame in sorted(frames.items()):
        on_reference = overlay(reference, draw_pose(aligned.pose(index), ref_width, ref_height))
        height, width = frame.shape[:2]
        on_driving = overlay(frame, draw_pose(source.pose(index), width, height))
        driving = _to_height(on_driving, ROW_HEIGHT)
        cv2.putText(driving, f"frame {index}", (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 2)
        rows.append(np.concatenate([_to_height(on_reference, ROW_HEIGHT), driving], 1))
    width = max(r.shape[1] for r in rows)
    return np.concatenate([np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows], 0)


def write_preview(path: Path, reference: np.ndarray, aligned: PoseTrack, source: PoseTrack,
                  frames: dict[int, np.ndarray]) -> Path:
    """Write :func:`preview_rows` as a PNG (atomically)."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise InputError(f"--preview {path} must end in .png")
    if not frames:
        raise InputError("no driving frame with a person to preview")
    rgb = preview_rows(reference, aligned, source, frames)
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), np.ascontiguousarray(rgb[..., ::-1])):
            raise InputError(f"cannot write {path}")
    return path
