"""Geometry of one detected pose that predicts how well it drives or receives an animation.

Everything works on normalised poses (keypoints.py) and the pixel size of the image they belong to, so the same
rules judge the reference photo and every driving frame. Joints count as seen above KEYPOINT_THRESHOLD.
"""

from __future__ import annotations

import math

import numpy as np

from animator_cli.pose.keypoints import (
    BODY,
    KEYPOINT_THRESHOLD,
    L_ANKLE,
    L_EYE,
    L_HIP,
    L_KNEE,
    L_SHOULDER,
    NECK,
    NOSE,
    R_ANKLE,
    R_EYE,
    R_HIP,
    R_KNEE,
    R_SHOULDER,
    Pose,
    face_visible,
)

# How much of the body a picture shows, from least to most; a driver showing more than the reference makes the
# model invent the rest.
REGIONS = ("head", "upper", "knees", "full")
VIEWS = ("front", "side", "back")
SIDE_RATIO = 0.6  # shoulder span below this many head lengths (neck–nose): a side view


def _seen(pose: Pose, *joints: int) -> bool:
    return bool((pose.scores[list(joints)] > KEYPOINT_THRESHOLD).any())


def _pixels(pose: Pose, size: tuple[int, int]) -> np.ndarray:
    return pose.points[BODY].astype(np.float64) * np.asarray(size, np.float64)


def body_region(pose: Pose) -> str | None:
    """The lowest body part in view: full (an ankle), knees, upper (a shoulder or hip), head; None: nothing seen."""
    if _seen(pose, R_ANKLE, L_ANKLE):
        return "full"
    if _seen(pose, R_KNEE, L_KNEE):
        return "knees"
    if _seen(pose, R_SHOULDER, L_SHOULDER, R_HIP, L_HIP):
        return "upper"
    if _seen(pose, NOSE, R_EYE, L_EYE) or bool(face_visible(pose.scores)):
        return "head"
    return None


def head_length(pose: Pose, size: tuple[int, int]) -> float | None:
    """Neck–nose distance in pixels: the body's unit of length that changes least with the pose."""
    if not (_seen(pose, NECK) and _seen(pose, NOSE)):
        return None
    xy = _pixels(pose, size)
    return float(np.hypot(*(xy[NOSE] - xy[NECK]))) or None


def shoulder_span(pose: Pose, size: tuple[int, int]) -> float | None:
    """Distance in pixels from the subject's right shoulder to the left one across the body (perpendicular to
    neck→nose, so a tilted photo measures like an upright one): positive when the person faces the camera."""
    if not (_seen(pose, R_SHOULDER) and _seen(pose, L_SHOULDER)):
        return None
    xy = _pixels(pose, size)
    head = head_length(pose, size)
    up = (xy[NOSE] - xy[NECK]) / head if head else np.array([0.0, -1.0])
    return float(np.dot(xy[L_SHOULDER] - xy[R_SHOULDER], (-up[1], up[0])))


def facing(pose: Pose, size: tuple[int, int]) -> str | None:
    """front, side or back; None when the shoulders or the head are not seen.

    Back: no face is seen, or the shoulders are mirrored (the subject's left on the image's left). Side: the
    shoulders overlap (span under SIDE_RATIO head lengths).
    """
    span, head = shoulder_span(pose, size), head_length(pose, size)
    face = _seen(pose, NOSE, R_EYE, L_EYE) or bool(face_visible(pose.scores))
    if span is None:
        return None
    if not face:
        return "back"
    if head is None:
        return None
    if abs(span) < SIDE_RATIO * head:
        return "side"
    return "front" if span > 0 else "back"


def tilt_degrees(pose: Pose, size: tuple[int, int]) -> float | None:
    """Angle of the neck→nose direction from straight up, in degrees (0 upright, ±90 lying, 180 upside down)."""
    if head_length(pose, size) is None:
        return None
    dx, dy = _pixels(pose, size)[NOSE] - _pixels(pose, size)[NECK]
    return math.degrees(math.atan2(dx, -dy))


def body_aspect(pose: Pose, size: tuple[int, int]) -> float | None:
    """Shoulder span over head length (front views only): the body's build, independent of its scale."""
    span, head = shoulder_span(pose, size), head_length(pose, size)
    if span is None or head is None or facing(pose, size) != "front":
        return None
    return span / head
