"""Skeleton drawing: the reference's colours, sizes and dimming at the right pixels (spec §5)."""

from __future__ import annotations

import numpy as np

from animator_cli.pose.draw import draw_pose
from animator_cli.pose.keypoints import FACE, LEFT_HAND, NUM_POINTS, Pose


def _pose(entries: dict[int, tuple[float, float, float]]) -> Pose:
    points = np.zeros((NUM_POINTS, 2), np.float32)
    scores = np.zeros(NUM_POINTS, np.float32)
    for index, (x, y, score) in entries.items():
        points[index], scores[index] = (x, y), score
    return Pose(points, scores)


def test_body_limb_and_points_at_canvas_scale():
    # 2160×2160 is the canvas itself: no resize, so pixels are exact.
    size = 2160
    pose = _pose({1: (1000 / size, 500 / size, 1.0),   # neck
                  2: (1000 / size, 900 / size, 1.0),   # right shoulder, limb 0 (neck-right shoulder), red
                  5: (1600 / size, 500 / size, 0.5),   # left shoulder, limb 1, (255, 85, 0) · 0.5
                  3: (1000 / size, 1500 / size, 0.2)})  # right elbow below 0.3: no limb, no point
    image = draw_pose(pose, size, size)
    assert image.shape == (size, size, 3) and image.dtype == np.uint8
    assert tuple(image[700, 1000]) == (153, 0, 0)  # limb midpoint: (255, 0, 0) · 1 · 1, dimmed × 0.6
    assert tuple(image[700, 1003]) == (153, 0, 0)  # half-width 4
    assert tuple(image[700, 1006]) == (0, 0, 0)
    assert tuple(image[500, 1300]) == (int(int(255 * 0.5) * 0.6), int(int(85 * 0.5) * 0.6), 0)
    assert tuple(image[500, 1000]) == (255, 85, 0)  # neck point colour 1, drawn after dimming
    assert tuple(image[900, 1000]) == (255, 170, 0)  # right shoulder point colour 2
    assert tuple(image[500, 1600]) == (int(85 * 0.5), int(255 * 0.5), 0)  # left shoulder colour 5, score 0.5
    assert tuple(image[505, 1600]) == (0, 0, 0)  # radius 4
    assert not image[1200:1600, 950:1050].any()  # nothing towards the invisible elbow


def test_hand_and_face_colours():
    size = 2160
    hand, face = LEFT_HAND.start, FACE.start
    pose = _pose({hand: (1000 / size, 1000 / size, 1.0), hand + 1: (1200 / size, 1000 / size, 1.0),
                  face: (500 / size, 500 / size, 0.5)})
    image = draw_pose(pose, size, size)
    assert tuple(image[1000, 1100]) == (255, 0, 0)  # edge 0: HSV(0, 1, 1) · 255
    assert tuple(image[1000, 1000]) == (0, 0, 255)  # hand points are blue
    assert tuple(image[1000, 1200]) == (0, 0, 255)
    assert tuple(image[500, 500]) == (127, 127, 127)  # face: grey int(0.5 · 255), radius 3
    assert tuple(image[500, 504]) == (0, 0, 0)
    # Undetected hand points sit at (0, 0) and are skipped, so the rest of the hand draws no edge to the corner.
    assert not image[:400, :400].any()


def test_resized_to_target_size_keeps_colours():
    pose = _pose({1: (0.5, 0.2, 1.0), 8: (0.5, 0.8, 1.0)})  # neck → right hip, limb 6, (0, 255, 0)
    image = draw_pose(pose, 256, 512)  # W 256, H 512: canvas 2160 × 4320, then bilinear down
    assert image.shape == (512, 256, 3)
    column = image[200:300, 120:136]
    assert column[..., 1].max() > 60 and column[..., 0].max() == 0 and column[..., 2].max() == 0
    assert not image[:, :100].any()


def test_no_pose_is_black():
    assert not draw_pose(None, 64, 48).any()
    assert draw_pose(None, 64, 48).shape == (48, 64, 3)


def test_scores_above_one_saturate_per_channel_as_the_reference():
    """SimCC confidences can exceed 1: the reference's int(c · s) colours saturate only the overflowing channel."""
    size = 2160
    pose = _pose({1: (1000 / size, 500 / size, 1.0), 5: (1600 / size, 500 / size, 1.15)})  # limb 1: (255, 85, 0)
    image = draw_pose(pose, size, size)
    assert tuple(image[500, 1300]) == (153, int(int(85 * 1.15) * 0.6), 0)  # 255 saturates; 97 → 58, not 51


def test_hand_line_colours_are_rounded_like_the_reference():
    """The reference passes hsv_to_rgb(...) · int(s_a · s_b · 255) as a float colour; cv2 rounds it."""
    import colorsys

    size = 2160
    hand = LEFT_HAND.start
    score = (211.5 / 255) ** 0.5  # strength int(s² · 255) = 211
    # edge 3 joins hand points 3 and 4; hue 3/20 gives green 0.9 · 211 = 189.9: rounded 190, truncated 189
    pose = _pose({hand + 3: (1000 / size, 1000 / size, score), hand + 4: (1200 / size, 1000 / size, score)})
    image = draw_pose(pose, size, size)
    strength = int(score * score * 255)
    expected = tuple(round(c * strength) for c in colorsys.hsv_to_rgb(3 / 20, 1.0, 1.0))
    assert strength == 211 and expected[1] == 190
    assert tuple(image[1000, 1100]) == expected
