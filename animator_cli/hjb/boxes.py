"""Face boxes in output pixels for the face optimisation, one box convention for the reference and the frames.

Convention: the **ArcFace template box**. ArcFace (glintr100) was trained on 112×112 crops in which the five
facial points (eye centres, nose tip, mouth corners) sit at fixed template positions. The box of a face is the
square that this template covers once carried onto the face's five points by the least-squares scale and
translation (no rotation, so the crop stays an axis-aligned box resized to 112×112, as in the reference). The
reference's five points are the face stage's (insightface's detector keypoints); a frame's are derived from the
68 face points of its drawn pose. Both faces are therefore framed alike, so the identity gradient does not chase
a difference of framing (before, frames used the landmarks' eyebrows-to-chin box + 10 % and the reference the
detector's forehead-to-chin box). With ``--face-masks`` the frames' boxes are the masks' bounding boxes, which by
the reference's convention (its face_mask_extraction.py) are detector boxes, so the reference uses its detector
box too.

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
from animator_cli.hjb.iresnet import INPUT_SIZE
from animator_cli.pose import pose_folder_faces
from animator_cli.pose.keypoints import KEYPOINT_THRESHOLD
from animator_cli.sampling.fit import Fit, fit_geometry
from animator_cli.video import list_frames, load_image

# iBUG-68 indices averaged into ArcFace's five points, in insightface's order (image-left eye first): the eye
# contours' centres, the nose tip, the mouth corners.
FIVE_FROM_68 = (tuple(range(36, 42)), tuple(range(42, 48)), (30,), (48,), (54,))
MIN_TEMPLATE_POINTS = 3  # visible points needed to place the template (scale and translation)

FloatBox = tuple[float, float, float, float]


def template_box(points: np.ndarray, visible: np.ndarray | None = None) -> FloatBox | None:
    """(x0, y0, x1, y1): ArcFace's 112×112 crop square carried onto the five ``points`` (5, 2) by the least-squares
    scale and translation, using the ``visible`` ones; None with fewer than 3 of them or a degenerate fit."""
    from insightface.utils.face_align import arcface_dst

    visible = np.ones(5, bool) if visible is None else np.asarray(visible, bool)
    if visible.sum() < MIN_TEMPLATE_POINTS:
        return None
    template, target = arcface_dst[visible].astype(np.float64), np.asarray(points, np.float64)[visible]
    centred = template - template.mean(0)
    scale = float((centred * (target - target.mean(0))).sum() / (centred**2).sum())
    if not scale > 0:
        return None
    x0, y0 = target.mean(0) - scale * template.mean(0)
    side = scale * INPUT_SIZE
    return float(x0), float(y0), float(x0 + side), float(y0 + side)


def five_points(face: np.ndarray, scores: np.ndarray, min_score: float = KEYPOINT_THRESHOLD
                ) -> tuple[np.ndarray, np.ndarray]:
    """ArcFace's five points (5, 2) from the 68 face points (68, 2) of a pose, and which of them are visible (a
    point is the mean of its visible source points)."""
    points, visible = np.zeros((5, 2)), np.zeros(5, bool)
    for k, indices in enumerate(FIVE_FROM_68):
        seen = [i for i in indices if scores[i] > min_score]
        if seen:
            points[k], visible[k] = face[seen].mean(0), True
    return points, visible


def fit_box(box: FloatBox, size: tuple[int, int], width: int, height: int, mode: Fit) -> Box | None:
    """``box`` (x0, y0, x1, y1) of an image of ``size`` (w, h) mapped by `fit_image`'s geometry to the
    ``width``×``height`` output, rounded outwards and clipped; None when nothing of it is left inside."""
    (new_w, new_h), (left, top) = fit_geometry(size, width, height, mode)
    scale_x, scale_y = new_w / size[0], new_h / size[1]
    x0, y0, x1, y1 = box
    fitted = (max(0, int(np.floor(x0 * scale_x + left))), max(0, int(np.floor(y0 * scale_y + top))),
              min(width, int(np.ceil(x1 * scale_x + left))), min(height, int(np.ceil(y1 * scale_y + top))))
    return fitted if fitted[2] > fitted[0] and fitted[3] > fitted[1] else None


def pose_face_boxes(poses: Path, num_frames: int, width: int, height: int, mode: Fit) -> list[Box | None]:
    """Per-frame template boxes from the face points of a pose folder's drawn poses (`animator extract-pose`),
    in the skeleton PNGs' pixels, fitted like the pose frames."""
    canvas, points, scores = pose_folder_faces(Path(poses), num_frames)
    boxes: list[Box | None] = []
    for face, face_scores in zip(points, scores, strict=True):
        box = template_box(*five_points(face, face_scores))
        boxes.append(None if box is None else fit_box(box, canvas, width, height, mode))
    return boxes


def mask_face_boxes(masks: Path, num_frames: int, width: int, height: int, mode: Fit) -> list[Box | None]:
    """Per-frame boxes from a folder of ``frame_<i>.png`` face masks: the bounding box of the pixels above half
    intensity, fitted like the pose frames; an empty mask gives None."""
    paths = list_frames(Path(masks)) if Path(masks).is_dir() else []
    if len(paths) != num_frames:
        raise InputError(f"face_masks {masks} has {len(paths)} masks for {num_frames} pose frames",
                         "give one frame_<i>.png mask per pose frame", option="face_masks")
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
