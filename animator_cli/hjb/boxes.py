"""Face boxes in output pixels for the face optimisation, without hand-made masks.

Fixes of the reference (spec §7): boxes come from the *aligned* poses (the skeleton frames the video follows), not
the raw driving frames, and every box is carried through the same fit (cover/contain/stretch) as the image it
belongs to, so it lands on the generated face at any input size; an empty mask or an invisible face gives None
(that frame is left out of the loss) instead of the reference's ``1/0`` crash.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from animator_cli.errors import InputError
from animator_cli.hjb.arcface import Box
from animator_cli.pose import face_boxes
from animator_cli.sampling.fit import Fit, fit_geometry
from animator_cli.video import list_frames, load_image

KEYPOINTS_FILE = "keypoints.npz"


def fit_box(box: tuple[float, float, float, float], size: tuple[int, int], width: int, height: int,
            mode: Fit) -> Box | None:
    """``box`` (x0, y0, x1, y1) of an image of ``size`` (w, h) mapped by `fit_image`'s geometry to the
    ``width``×``height`` output, rounded outwards and clipped; None when nothing of it is left inside."""
    (new_w, new_h), (left, top) = fit_geometry(size, width, height, mode)
    scale_x, scale_y = new_w / size[0], new_h / size[1]
    x0, y0, x1, y1 = box
    fitted = (max(0, int(np.floor(x0 * scale_x + left))), max(0, int(np.floor(y0 * scale_y + top))),
              min(width, int(np.ceil(x1 * scale_x + left))), min(height, int(np.ceil(y1 * scale_y + top))))
    return fitted if fitted[2] > fitted[0] and fitted[3] > fitted[1] else None


def pose_face_boxes(poses: Path, num_frames: int, width: int, height: int, mode: Fit) -> list[Box | None]:
    """Per-frame face boxes from a pose folder's ``keypoints.npz`` (written by `animator extract-pose`)."""
    poses = Path(poses)
    if not (poses / KEYPOINTS_FILE).is_file():
        raise InputError(f"--face-opt needs face boxes: {poses / KEYPOINTS_FILE} does not exist",
                         "use a pose folder written by `animator extract-pose`, or pass --face-masks DIR")
    frames = list_frames(poses)
    canvas_h, canvas_w = load_image(frames[0]).shape[:2]
    boxes = face_boxes(poses / KEYPOINTS_FILE, canvas_w, canvas_h)
    if len(boxes) != num_frames:
        raise InputError(f"{poses / KEYPOINTS_FILE} has {len(boxes)} frames but the folder has {num_frames} poses",
                         "rerun `animator extract-pose`")
    return [None if b is None else fit_box(b, (canvas_w, canvas_h), width, height, mode) for b in boxes]


def mask_face_boxes(masks: Path, num_frames: int, width: int, height: int, mode: Fit) -> list[Box | None]:
    """Per-frame boxes from a folder of ``frame_<i>.png`` face masks: the bounding box of the pixels above half
    intensity, fitted like the pose frames; an empty mask gives None."""
    paths = list_frames(Path(masks)) if Path(masks).is_dir() else []
    if len(paths) != num_frames:
        raise InputError(f"--face-masks {masks} has {len(paths)} masks for {num_frames} pose frames",
                         "give one frame_<i>.png mask per pose frame")
    boxes: list[Box | None] = []
    for path in paths:
        mask = load_image(path).max(axis=2) > 127
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if not len(rows):
            boxes.append(None)
            continue
        box = (float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1))
        boxes.append(fit_box(box, (mask.shape[1], mask.shape[0]), width, height, mode))
    return boxes
