"""Alignment to the reference, tracking, gap filling, smoothing and face boxes on constructed skeletons."""

from __future__ import annotations

import numpy as np
import pytest

from animator_cli.errors import InputError
from animator_cli.pose.align import BONES, align_track, fit_global
from animator_cli.pose.keypoints import FACE, NUM_POINTS, Pose, PoseTrack, face_boxes, save_keypoints
from animator_cli.pose.smooth import one_euro
from animator_cli.pose.track import MainPersonTracker, fill_gaps

# A standing person in pixels of a 400×600 reference image (OpenPose-18 order).
REF_BODY = np.array([(200, 100), (200, 160), (160, 160), (150, 240), (145, 310), (240, 160), (250, 240),
                     (255, 310), (175, 320), (172, 420), (170, 520), (225, 320), (228, 420), (230, 520),
                     (190, 90), (210, 90), (180, 95), (220, 95)], np.float32)
REF_SIZE = (400, 600)


def _pose(body_px, size, score=0.9) -> Pose:
    points = np.zeros((NUM_POINTS, 2), np.float32)
    scores = np.zeros(NUM_POINTS, np.float32)
    points[:18] = np.asarray(body_px) / size
    scores[:18] = score
    points[FACE] = (np.asarray(body_px)[0] + np.random.default_rng(1).normal(0, 8, (68, 2))) / size
    scores[FACE] = 0.8
    return Pose(points, scores)


def _track(poses, size, fps=25.0) -> PoseTrack:
    return PoseTrack.from_poses(poses, size, fps)


def test_global_recovers_known_scale_and_shift():
    scale, shift = 0.5, np.array([30.0, 40.0])  # reference px = scale · driving px + shift
    drive_size = (640, 360)
    drive = _pose((REF_BODY - shift) / scale, drive_size)
    garbage = _pose((REF_BODY - shift) / scale, drive_size)
    garbage.points[[9, 10]] = (0.99, 0.01)  # invisible right knee and ankle at absurd places
    garbage.scores[[9, 10]] = 0.1
    track = _track([drive, None, garbage], drive_size)  # a frame without anyone must not matter
    reference = _pose(REF_BODY, REF_SIZE)
    alignment = fit_global(reference, REF_SIZE, track)
    # In normalised coordinates: a_x = s·fw/W, a_y = s·fh/H (the reference's code forced a_x = a_y).
    np.testing.assert_allclose(alignment.scale, [0.5 * 640 / 400, 0.5 * 360 / 600], rtol=1e-5)
    aligned, _ = align_track(track, "global", reference, REF_SIZE)
    assert aligned.size == REF_SIZE
    for index in (0, 2):
        visible = aligned.scores[index, :18] > 0.3
        np.testing.assert_allclose(aligned.points[index, :18][visible] * REF_SIZE, REF_BODY[visible], atol=1e-3)
    assert not aligned.points[1].any()


def test_global_with_no_usable_frame_is_an_input_error_not_a_crash():
    reference = _pose(REF_BODY, REF_SIZE)
    invisible = _pose(REF_BODY, REF_SIZE, score=0.1)
    with pytest.raises(InputError):
        fit_global(reference, REF_SIZE, _track([invisible, None], REF_SIZE))
    with pytest.raises(InputError, match="reference"):
        fit_global(invisible, REF_SIZE, _track([reference], REF_SIZE))


def _bone_lengths(points_px):
    return np.array([np.linalg.norm(points_px[c] - points_px[p]) for p, c in BONES])


def test_limbs_gives_the_reference_bone_lengths():
    rng = np.random.default_rng(0)
    reference = _pose(REF_BODY, REF_SIZE)
    # A driver with other proportions (long arms, short legs) moving its limbs: every frame has the same bone
    # lengths but other directions.
    poses = []
    for _ in range(4):
        body = np.zeros((18, 2), np.float32)
        body[1] = (300, 150) + rng.normal(0, 10, 2)
        factors = {2: 1.6, 3: 1.6, 4: 1.6, 8: 0.7, 9: 0.7, 10: 0.7}
        for parent, child in BONES:
            length = np.linalg.norm(REF_BODY[child] - REF_BODY[parent]) * factors.get(child, factors.get(parent, 1.1))
            angle = rng.uniform(0, 2 * np.pi)
            body[child] = body[parent] + length * np.array([np.cos(angle), np.sin(angle)])
        body[14:18] = body[0] + (REF_BODY[14:18] - REF_BODY[0]) * 0.8
        poses.append(_pose(body, (640, 480)))
    track = _track(poses, (640, 480))
    globally, _ = align_track(track, "global", reference, REF_SIZE)
    limbs, alignment = align_track(track, "limbs", reference, REF_SIZE)
    assert alignment.mode == "limbs" and len(alignment.bone_ratios) == len(BONES)
    ref_lengths = _bone_lengths(REF_BODY)
    for frame in range(4):
        np.testing.assert_allclose(_bone_lengths(limbs.points[frame, :18] * REF_SIZE), ref_lengths, rtol=1e-4)
        np.testing.assert_allclose(limbs.points[frame, 1], globally.points[frame, 1], atol=1e-6)  # neck trajectory
        # The head (eyes, ears, face) moves rigidly with the nose, scaled like the neck-nose bone.
        head_ratio = alignment.bone_ratios["1-0"]
        for part in (slice(14, 18), FACE):
            np.testing.assert_allclose(
                (limbs.points[frame, part] - limbs.points[frame, 0]) * REF_SIZE,
                (globally.points[frame, part] - globally.points[frame, 0]) * REF_SIZE * head_ratio, atol=1e-3)


def test_tracker_keeps_the_same_person():
    size = (640, 480)
    small = REF_BODY * 0.5 + (20, 100)
    big = REF_BODY + (300, -60)
    tracker = MainPersonTracker(size)
    assert tracker.update([_pose(small, size)]) is not None
    # A bigger person appears: the tracker stays with the one it followed (slightly moved).
    chosen = tracker.update([_pose(big, size), _pose(small + 5, size)])
    np.testing.assert_allclose(chosen.points[0] * size, small[0] + 5, atol=1e-3)
    assert tracker.update([]) is None
    # With nobody near the last position, the largest person is taken anew.
    chosen = tracker.update([_pose(big, size), _pose(small * 0.5 + 300, size)])
    np.testing.assert_allclose(chosen.points[0] * size, big[0], atol=1e-3)


def test_fill_gaps_interpolates_short_gaps_only():
    size = (100, 100)
    a, b = _pose(REF_BODY * 0.1, size), _pose(REF_BODY * 0.1 + 6, size)
    track = _track([a, None, None, b, None, None, None, None, a], size)
    filled = fill_gaps(track, max_gap=2)
    assert filled.filled.tolist() == [False, True, True, False, False, False, False, False, False]
    np.testing.assert_allclose(filled.points[1, :18] * 100, REF_BODY * 0.1 + 2, atol=1e-4)
    np.testing.assert_allclose(filled.points[2, :18] * 100, REF_BODY * 0.1 + 4, atol=1e-4)
    assert not filled.points[5].any()  # a 4-frame gap stays empty
    edge = fill_gaps(_track([None, None, None, a], size), max_gap=2)
    assert edge.filled.tolist() == [False, True, True, False]


def test_one_euro_removes_jitter_and_respects_confidence():
    size = (512, 512)
    rng = np.random.default_rng(0)
    poses = [_pose(REF_BODY + rng.normal(0, 3, REF_BODY.shape), size) for _ in range(50)]
    for pose in poses[:25]:  # the left hand is absent at first: score 0 at (0, 0)
        pose.scores[92:113] = 0
    for pose in poses[25:]:
        pose.points[92:113] = 0.5
        pose.scores[92:113] = 0.9
    track = _track(poses, size)
    smoothed = one_euro(track)
    raw_jitter = np.std(track.points[10:25, :18] * 512, axis=0).mean()
    smooth_jitter = np.std(smoothed.points[10:25, :18] * 512, axis=0).mean()
    assert smooth_jitter < raw_jitter * 0.6
    np.testing.assert_allclose(smoothed.points[25, 92:113], 0.5)  # reappearing hand starts where it is
    low = _track([_pose(REF_BODY, size, score=s) for s in (0.9, 0.9)], size)
    low.points[1, 0] += 10 / 512
    low_conf = _track([_pose(REF_BODY, size, score=s) for s in (0.9, 0.3)], size)
    low_conf.points[1, 0] += 10 / 512
    moved_sure = one_euro(low).points[1, 0, 0] - low.points[0, 0, 0]
    moved_unsure = one_euro(low_conf).points[1, 0, 0] - low_conf.points[0, 0, 0]
    assert 0 < moved_unsure < moved_sure


def test_face_boxes_at_output_size(tmp_path):
    size = (400, 600)
    pose = _pose(REF_BODY, size)
    pose.points[FACE] = np.array([[0.4, 0.1], [0.6, 0.1], [0.4, 0.2], [0.6, 0.2]] * 17)
    no_face = _pose(REF_BODY, size)
    no_face.scores[FACE] = 0.1
    track = _track([pose, no_face, None], size)
    save_keypoints(tmp_path / "keypoints.npz", track, track)
    boxes = face_boxes(tmp_path, 512, 768, pad=0.0)
    assert boxes == [(204, 76, 308, 154), None, None]  # 0.4·512 = 204.8 floored, 0.6·512 = 307.2 ceiled, …
