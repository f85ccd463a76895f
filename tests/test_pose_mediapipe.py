"""MediaPipe backend on real photos: body points land where a person measured them by eye (zoomed grid views)."""

from __future__ import annotations

import numpy as np
import pytest

from animator_cli.pose.keypoints import FACE, LEFT_HAND, NUM_POINTS, RIGHT_HAND
from animator_cli.pose.mediapipe_backend import FACE_MESH_TO_68, MediaPipeBackend
from animator_cli.video import load_image

pytest.importorskip("mediapipe")

# (OpenPose index, name, x range, y range) in pixels, measured by hand on 3-5× zoomed crops with a 10-px grid.
ASTRONAUT = [
    (0, "nose", (212, 232), (118, 138)),
    (14, "right eye", (192, 215), (94, 114)),
    (15, "left eye", (235, 258), (94, 118)),
    (2, "right shoulder", (80, 150), (210, 280)),
    (5, "left shoulder", (280, 350), (220, 290)),
]
# t1.jpg holds six people; MediaPipe follows one, the woman at the left edge (head tilted, cards in her left hand).
T1_LEFT_WOMAN = [
    (0, "nose", (105, 130), (330, 355)),
    (14, "right eye", (72, 98), (318, 342)),
    (15, "left eye", (118, 145), (298, 322)),
    (2, "right shoulder", (0, 80), (400, 480)),
    (5, "left shoulder", (160, 235), (370, 460)),
]


@pytest.fixture(scope="module")
def backend():
    detector = MediaPipeBackend()
    yield detector
    detector.close()


@pytest.mark.parametrize(("photo", "expected"), [("astronaut_path", ASTRONAUT), ("t1_path", T1_LEFT_WOMAN)])
def test_body_points_in_measured_regions(backend, request, photo, expected):
    rgb = load_image(request.getfixturevalue(photo))
    height, width = rgb.shape[:2]
    poses = backend.detect(rgb)
    assert len(poses) == 1
    pose = poses[0]
    assert pose.points.shape == (NUM_POINTS, 2)
    for index, name, (x0, x1), (y0, y1) in expected:
        x, y = pose.points[index] * (width, height)
        assert x0 <= x <= x1 and y0 <= y <= y1, f"{name} at ({x:.0f}, {y:.0f})"
        assert pose.scores[index] > 0.5, name
    neck = pose.points[1]
    np.testing.assert_allclose(neck, pose.points[[2, 5]].mean(0), atol=1e-6)


def test_joints_beyond_the_frame_are_invisible(backend, astronaut_path):
    """The astronaut photo ends at the waist: BlazePose extrapolates the legs below it, we drop them."""
    pose = backend.detect(load_image(astronaut_path))[0]
    knees_ankles = [9, 10, 12, 13]
    assert (pose.points[knees_ankles, 1] > 1).all() and (pose.scores[knees_ankles] == 0).all()
    outside = ((pose.points[:18] < 0) | (pose.points[:18] > 1)).any(1)
    assert (pose.scores[:18][outside] == 0).all()


def test_face_mesh_mapped_to_68_points(backend, astronaut_path):
    pose = backend.detect(load_image(astronaut_path))[0]
    face = pose.points[FACE] * 512
    assert len(set(FACE_MESH_TO_68)) == 68 and (pose.scores[FACE] == 1.0).all()
    # iBUG layout: jaw runs from the subject's right (image left) over the chin (8) to the left; the eyes sit
    # between the brows and the nose tip; the mouth below the nose.
    assert face[0, 0] < face[8, 0] < face[16, 0]
    assert face[8, 1] == face[:17, 1].max()
    assert face[19, 1] < face[37, 1] < face[30, 1] < face[51, 1] < face[57, 1] < face[8, 1]
    assert face[36, 0] < face[39, 0] < face[42, 0] < face[45, 0]
    assert 212 <= face[30, 0] <= 232 and 118 <= face[30, 1] <= 138  # nose tip, measured like the body points


def test_no_person_and_no_hands(backend):
    assert backend.detect(np.full((256, 256, 3), 90, np.uint8)) == []


def test_hand_follows_the_wrist(backend, t1_path):
    """The man in the middle of t1.jpg raises his right hand holding a card (about x 600-700, y 370-520)."""
    rgb = load_image(t1_path)[150:700, 300:700]
    pose = backend.detect(rgb)[0]
    hand = pose.points[RIGHT_HAND] * (400, 550) + (300, 150)
    assert (pose.scores[RIGHT_HAND] == 1.0).all() and (pose.scores[LEFT_HAND] == 0.0).all()
    assert ((hand > (600, 370)) & (hand < (700, 520))).all()
    wrist = pose.points[4] * (400, 550) + (300, 150)
    assert np.hypot(*(hand[0] - wrist)) < 30
