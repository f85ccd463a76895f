"""A person is a credible skeleton: each rule of pose/credible.py at its boundary, and real clips (a coffee cup
panning, noise, the astronaut walking in late) through extract-pose, check and animate with MediaPipe."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from animator_cli.pose import credible
from animator_cli.pose.credible import is_credible
from animator_cli.pose.keypoints import (
    FACE,
    L_KNEE,
    L_SHOULDER,
    MIN_FACE_POINTS,
    NUM_POINTS,
    R_ELBOW,
    R_KNEE,
    R_WRIST,
    Pose,
)
from animator_cli.video import load_image, write_video

SIZE = (512, 768)  # (width, height): the short side is 512
# A person standing in a 512×768 frame (OpenPose-18 order, pixels): torso 180 px (neck y 180 to mid-hip y 360),
# knees 160 px below the hips; the trunk is nose to a hip, hypot(30, 240).
BODY = np.array([(256, 120), (256, 180), (206, 180), (196, 270), (190, 350), (306, 180), (316, 270), (322, 350),
                 (226, 360), (224, 520), (222, 680), (286, 360), (288, 520), (290, 680), (246, 110), (266, 110),
                 (236, 115), (276, 115)], np.float64)
TRUNK = math.hypot(30, 240)
UPPER = [0, 1, 2, 3, 4, 5, 6, 7, 14, 15, 16, 17]  # what leans when the person bends at the hips
MID_HIP = BODY[[8, 11]].mean(0)


def _pose(body: np.ndarray = BODY, face_points: int = 68, score: float = 0.9) -> Pose:
    points = np.zeros((NUM_POINTS, 2), np.float32)
    scores = np.zeros(NUM_POINTS, np.float32)
    points[:18], scores[:18] = body / SIZE, score
    points[FACE] = (body[0] + np.random.default_rng(0).normal(0, 10, (68, 2))) / SIZE
    scores[FACE.start:FACE.start + face_points] = 0.8
    return Pose(points, scores)


def _scaled(factor: float) -> np.ndarray:
    return MID_HIP + (BODY - MID_HIP) * factor


def _leaning(degrees: float) -> np.ndarray:
    """The upper body turned by ``degrees`` about the mid-hip, the legs still standing."""
    body, angle = BODY.copy(), math.radians(degrees)
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    body[UPPER] = MID_HIP + (BODY[UPPER] - MID_HIP) @ rotation.T
    return body


def _forearm(length: float) -> np.ndarray:
    body = BODY.copy()
    body[R_WRIST] = body[R_ELBOW] + (0, length)
    return body


def _knees(drop: float) -> np.ndarray:
    body = BODY.copy()
    body[[R_KNEE, L_KNEE], 1] = 360 + drop
    return body


def _lying(face_points: int) -> Pose:
    """The standing person turned onto its side (a face, or nothing, must vouch for it)."""
    body = MID_HIP + (BODY - MID_HIP) @ np.array([[0.0, -1.0], [1.0, 0.0]]).T
    return _pose(body, face_points)


def _with(pose: Pose, index: int, score: float) -> Pose:
    pose.scores[index] = score
    return pose


MAIN, TORSO = credible.MAIN_SCORE, 180.0
CASES = {
    # main joints: both shoulders, or one and the face
    "shoulder at the score": (_with(_pose(face_points=0), L_SHOULDER, MAIN), True),
    "shoulder under the score, no face": (_with(_pose(face_points=0), L_SHOULDER, MAIN - 0.01), False),
    "one shoulder and the face": (_with(_pose(), L_SHOULDER, 0.0), True),
    # size: the trunk against the short side
    "trunk just big enough": (_pose(_scaled(credible.MIN_TRUNK * 512 / TRUNK * 1.01)), True),
    "trunk just too small": (_pose(_scaled(credible.MIN_TRUNK * 512 / TRUNK * 0.99)), False),
    # limbs in proportion
    "forearm just in proportion": (_pose(_forearm(credible.MAX_LIMB * TRUNK * 0.99)), True),
    "forearm just too long": (_pose(_forearm(credible.MAX_LIMB * TRUNK * 1.01)), False),
    # a face, or a body standing on its legs
    "lying with a face": (_lying(MIN_FACE_POINTS), True),
    "lying with too little face": (_lying(MIN_FACE_POINTS - 1), False),
    "no face, leaning just enough": (_pose(_leaning(credible.UPRIGHT_DEGREES - 0.5), face_points=0), True),
    "no face, leaning too far": (_pose(_leaning(credible.UPRIGHT_DEGREES + 0.5), face_points=0), False),
    "no face, knees just low enough": (_pose(_knees(credible.MIN_KNEE_DROP * TORSO * 1.01), face_points=0), True),
    "no face, knees too high": (_pose(_knees(credible.MIN_KNEE_DROP * TORSO * 0.99), face_points=0), False),
    "no face, no hips": (_with(_with(_pose(face_points=0), 8, 0.0), 11, 0.0), False),
}


@pytest.mark.parametrize("name", CASES)
def test_each_rule_at_its_boundary(name: str) -> None:
    pose, expected = CASES[name]
    assert is_credible(pose, SIZE) is expected


# --- real clips through the CLI (MediaPipe: no weights home) ---------------------------------------------------

FPS = 10
EMPTY = 8  # frames of coffee cup before the astronaut walks in


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory, astronaut_path: Path) -> dict[str, Path]:
    """256×256 clips: a window panning across skimage's coffee cup (MediaPipe saw a person in all 10 frames),
    noise, and the coffee pan cut to EMPTY frames followed by the astronaut sliding in view."""
    import skimage

    root = tmp_path_factory.mktemp("credible")
    coffee = load_image(Path(skimage.__file__).parent / "data" / "coffee.png")
    pan = [np.ascontiguousarray(coffee[40:296, 20 * i:20 * i + 256]) for i in range(10)]
    astronaut = cv2.resize(load_image(astronaut_path), (256, 256), interpolation=cv2.INTER_AREA)
    noise = np.random.default_rng(0).integers(0, 256, (6, 256, 256, 3), dtype=np.uint8)
    frames = {"coffee": pan, "noise": list(noise),
              "late": pan[:EMPTY] + [np.roll(astronaut, 4 * i, axis=1) for i in range(6)]}
    paths = {name: root / f"{name}.mp4" for name in frames}
    for name, clip in frames.items():
        write_video(paths[name], clip, fps=FPS)
    return paths


@pytest.mark.parametrize("name", ["coffee", "noise"])
def test_clip_without_a_person_is_refused(cli, clips, tmp_path, name: str) -> None:
    result = cli("--weights", tmp_path / "no-weights", "extract-pose", clips[name], "-o", tmp_path / "poses")
    assert result.exit_code == 2, result.stdout
    assert "no person found in any frame" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "poses").exists()


def test_person_entering_late_is_found_and_the_phantoms_before_are_dropped(cli, clips, tmp_path) -> None:
    result = cli("--weights", tmp_path / "no-weights", "--json", "extract-pose", clips["late"], "-o", tmp_path / "p")
    assert result.exit_code == 0, result.stderr
    meta = json.loads(result.stdout)
    with np.load(tmp_path / "p" / "keypoints.npz") as data:
        present, drawn = data["source_present"], data["present"]
    assert present.tolist() == [False] * EMPTY + [True] * 6  # the astronaut, from her first frame on
    gap = round(0.5 * FPS)  # the frames just before her are filled with her first pose, the rest stay black
    assert drawn.tolist() == [False] * (EMPTY - gap) + [True] * (gap + 6)
    assert meta["detected_frames"] == 6 and meta["filled_frames"] == gap
    assert not load_image(tmp_path / "p" / "frame_0.png").any() and load_image(tmp_path / "p" / "frame_8.png").any()


def test_check_reports_the_empty_driving_video_as_an_error_finding(cli, clips, astronaut_path, tmp_path) -> None:
    result = cli("--weights", tmp_path / "no-weights", "--json", "check", astronaut_path, clips["coffee"])
    assert result.exit_code == 2
    report = json.loads(result.stdout)
    errors = [f for f in report["findings"] if f["severity"] == "error"]
    assert [f["code"] for f in errors] == ["driving-people"] and report["no_person_share"] == 1.0
    assert report["reference_people"] == 1  # the reference is still judged
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "nobody is found in any driving frame" in error_lines[0]


def test_animate_stops_before_rendering_a_phantom(cli, tiny_home, clips, astronaut_path, tmp_path) -> None:
    out = tmp_path / "out.mp4"
    result = cli("--weights", tiny_home.root, "animate", astronaut_path, clips["coffee"], "-o", out,
                 "--pose-backend", "mediapipe", "--width", "64", "--height", "64", "--steps", "1")
    assert result.exit_code == 2 and "no person found in any frame" in result.stderr
    assert not out.exists() and not list(tmp_path.glob(".out*"))
