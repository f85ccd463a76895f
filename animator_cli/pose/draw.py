"""Skeleton images drawn exactly as StableAnimator's `draw_pose` renders them (spec §5): what PoseNet saw.

Everything is drawn on a black canvas whose short side is 2160 px and then resized to the target size with cv2's
bilinear filter, so lines end up thin and anti-aliased. Colours are RGB as the reference's PNGs hold them.
"""

from __future__ import annotations

import colorsys
import math

import cv2
import numpy as np

from animator_cli.pose.keypoints import BODY, FACE, HANDS, KEYPOINT_THRESHOLD, Pose

CANVAS_SHORT_SIDE = 2160
STICK_HALF_WIDTH = 4
BODY_RADIUS = 4
HAND_LINE_THICKNESS = 2
HAND_RADIUS = 4
FACE_RADIUS = 3
LIMB_DIM = 0.6
EPS = 0.01  # hand and face points at x or y <= EPS px are treated as undetected

# OpenPose limbSeq (0-based); the reference draws the first 17, skipping the two ear-shoulder links.
LIMBS = ((1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13),
         (1, 0), (0, 14), (14, 16), (0, 15), (15, 17))
COLORS = ((255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
          (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
          (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85))
HAND_EDGES = ((0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (0, 9), (9, 10), (10, 11), (11, 12),
              (0, 13), (13, 14), (14, 15), (15, 16), (0, 17), (17, 18), (18, 19), (19, 20))
HAND_EDGE_COLORS = tuple(colorsys.hsv_to_rgb(i / len(HAND_EDGES), 1.0, 1.0) for i in range(len(HAND_EDGES)))
_DIM_TABLE = (np.arange(256) * LIMB_DIM).astype(np.uint8)  # (canvas * 0.6).astype(uint8), as a fast lookup


def _scale(color: tuple[float, ...], factor: float) -> tuple[int, ...]:
    return tuple(int(float(c) * factor) for c in color)


def _draw_body(canvas: np.ndarray, points: np.ndarray, scores: np.ndarray) -> None:
    height, width = canvas.shape[:2]
    drawn = []
    for (a, b), color in zip(LIMBS, COLORS[: len(LIMBS)], strict=True):
        if scores[a] < KEYPOINT_THRESHOLD or scores[b] < KEYPOINT_THRESHOLD:
            continue
        xs, ys = points[[a, b], 0] * width, points[[a, b], 1] * height
        length = math.hypot(xs[0] - xs[1], ys[0] - ys[1])
        angle = math.degrees(math.atan2(ys[0] - ys[1], xs[0] - xs[1]))
        polygon = cv2.ellipse2Poly((int(xs.mean()), int(ys.mean())), (int(length / 2), STICK_HALF_WIDTH),
                                   int(angle), 0, 360, 1)
        cv2.fillConvexPoly(canvas, polygon, _scale(color, scores[a] * scores[b]))
        drawn.append(polygon)
    if drawn:  # dim only where limbs were drawn: the rest is black, and 0 · 0.6 = 0
        x, y, w, h = cv2.boundingRect(np.concatenate(drawn))
        x0, y0 = max(x, 0), max(y, 0)
        region = canvas[y0:max(y + h, 0), x0:max(x + w, 0)]
        if region.size:
            cv2.LUT(region, _DIM_TABLE, dst=region)
    for i, color in enumerate(COLORS):
        if scores[i] > KEYPOINT_THRESHOLD:
            center = (int(points[i, 0] * width), int(points[i, 1] * height))
            cv2.circle(canvas, center, BODY_RADIUS, _scale(color, scores[i]), thickness=-1)


def _draw_hand(canvas: np.ndarray, points: np.ndarray, scores: np.ndarray) -> None:
    height, width = canvas.shape[:2]
    pixels = [(int(x * width), int(y * height)) for x, y in points]
    for (a, b), color in zip(HAND_EDGES, HAND_EDGE_COLORS, strict=True):
        (x1, y1), (x2, y2) = pixels[a], pixels[b]
        if min(x1, y1, x2, y2) > EPS:
            # A float colour, as the reference passes it: cv2 rounds it (the body's colours are truncated).
            strength = int(scores[a] * scores[b] * 255)
            cv2.line(canvas, (x1, y1), (x2, y2), tuple(float(c) * strength for c in color),
                     thickness=HAND_LINE_THICKNESS)
    for (x, y), score in zip(pixels, scores, strict=True):
        if x > EPS and y > EPS:
            cv2.circle(canvas, (x, y), HAND_RADIUS, (0, 0, int(score * 255)), thickness=-1)


def _draw_face(canvas: np.ndarray, points: np.ndarray, scores: np.ndarray) -> None:
    height, width = canvas.shape[:2]
    for (x, y), score in zip(points, scores, strict=True):
        x, y = int(x * width), int(y * height)
        if x > EPS and y > EPS:
            grey = int(score * 255)
            cv2.circle(canvas, (x, y), FACE_RADIUS, (grey, grey, grey), thickness=-1)


def draw_pose(pose: Pose | None, width: int, height: int) -> np.ndarray:
    """RGB uint8 (height, width, 3) skeleton of ``pose`` (normalised coordinates); all black for None.

    Scores are used as they are, as in the reference: SimCC confidences can exceed 1, and cv2 then saturates
    only the channels that overflow (clipping the score would darken the others).
    """
    if pose is None:
        return np.zeros((height, width, 3), np.uint8)
    ratio = CANVAS_SHORT_SIDE / min(height, width)
    canvas = np.zeros((int(height * ratio), int(width * ratio), 3), np.uint8)
    points = np.asarray(pose.points, np.float64)
    scores = np.asarray(pose.scores, np.float64)
    _draw_body(canvas, points[BODY], scores[BODY])
    for hand in HANDS:
        _draw_hand(canvas, points[hand], scores[hand])
    _draw_face(canvas, points[FACE], scores[FACE])
    return cv2.resize(canvas, (width, height), interpolation=cv2.INTER_LINEAR)


def overlay(image: np.ndarray, skeleton: np.ndarray) -> np.ndarray:
    """``image`` with the drawn (non-black) pixels of ``skeleton`` (same size) on top."""
    return np.where(skeleton.max(-1, keepdims=True) > 0, skeleton, image)
