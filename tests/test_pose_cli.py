"""`animator extract-pose` end to end on short generated clips."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from animator_cli.pose import extract_pose, face_boxes, load_keypoints
from animator_cli.video import list_frames, load_image, probe, write_video

pytest.importorskip("mediapipe")
FRAMES = 6


@pytest.fixture(scope="module")
def clip(tmp_path_factory, astronaut_path) -> Path:
    """The astronaut sliding right by 4 px a frame, at 256×256 and 10 fps."""
    image = cv2.resize(load_image(astronaut_path), (256, 256), interpolation=cv2.INTER_AREA)
    path = tmp_path_factory.mktemp("clips") / "astronaut.mp4"
    write_video(path, [np.roll(image, 4 * i, axis=1) for i in range(FRAMES)], fps=10)
    return path


@pytest.fixture(scope="module")
def empty_clip(tmp_path_factory) -> Path:
    gradient = np.tile(np.linspace(40, 200, 128, dtype=np.uint8)[None, :, None], (96, 1, 3))
    path = tmp_path_factory.mktemp("clips") / "nobody.mp4"
    write_video(path, [gradient] * 4, fps=10)
    return path


def test_extract_pose_writes_frames_meta_keypoints_and_caches(cli, clip):
    result = cli("extract-pose", clip)
    assert result.exit_code == 0, result.stderr
    folder = Path(result.stdout.strip())
    frames = list_frames(folder)
    assert [p.name for p in frames] == [f"frame_{i}.png" for i in range(FRAMES)]
    first = load_image(frames[0])
    assert first.shape == (256, 256, 3) and first.any()
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["frame_count"] == FRAMES and meta["fps"] == 10 and meta["backend"] == "mediapipe"
    assert meta["source_size"] == [256, 256] and meta["detected_frames"] == FRAMES
    track = load_keypoints(folder)
    assert track.points.shape == (FRAMES, 134, 2) and track.present.all()
    # The person slides right 4 px a frame, and the nose follows.
    noses = track.points[:, 0, 0] * 256
    assert 10 < noses[-1] - noses[0] < 30
    stamp = (folder / "frame_0.png").stat().st_mtime_ns
    again = cli("extract-pose", clip)
    assert again.exit_code == 0 and again.stdout == result.stdout
    assert (folder / "frame_0.png").stat().st_mtime_ns == stamp  # served from the cache, not rewritten


def test_reference_alignment_output_folder_and_preview(cli, clip, astronaut_path, tmp_path):
    out = tmp_path / "poses"
    result = cli("extract-pose", clip, "-o", out, "--reference", astronaut_path, "--align", "limbs", "--preview",
                 "--max-frames", "3")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == str(out)
    assert len(list_frames(out)) == 3
    assert load_image(out / "frame_0.png").shape == (512, 512, 3)  # drawn at the reference's size
    meta = json.loads((out / "meta.json").read_text())
    assert meta["alignment"]["mode"] == "limbs" and meta["canvas_size"] == [512, 512]
    # The same photo at half the size: pixel scale 2, so in normalised coordinates the map is about the identity.
    assert meta["alignment"]["scale"] == pytest.approx([1.0, 1.0], rel=0.1)
    info = probe(out / "preview.mp4")
    assert info.frame_count == 3 and info.width == 256 + 256
    assert not list(tmp_path.glob(".poses*"))  # no temporary folder left behind
    boxes = face_boxes(out, 512, 512)
    assert all(b is not None for b in boxes)
    x0, y0, x1, y1 = boxes[0]
    assert x0 < 222 < x1 and y0 < 128 < y1  # around the astronaut's nose in the 512-px photo


def test_video_without_person_exits_2(cli, empty_clip, tmp_path):
    result = cli("extract-pose", empty_clip, "-o", tmp_path / "out")
    assert result.exit_code == 2
    assert "no person" in result.stderr
    assert not (tmp_path / "out").exists()


def test_bad_inputs(cli, clip, tmp_path):
    assert cli("extract-pose", tmp_path / "missing.mp4").exit_code == 2
    assert cli("extract-pose", clip, "--align", "sideways").exit_code == 2
    assert cli("extract-pose", clip, "--backend", "openpose").exit_code == 2
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert cli("extract-pose", clip, "-o", tmp_path / "mine").exit_code == 2  # never wipes a foreign folder
    assert (tmp_path / "mine" / "notes.txt").exists()
    result = cli("--weights", tmp_path / "empty-home", "extract-pose", clip, "--backend", "dwpose")
    assert result.exit_code == 3 and "weights download --only dwpose" in result.stderr


def test_dwpose_backend_with_tiny_weights_and_frame_folder(cli, tiny_home, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"frame_{i}.png"), np.zeros((240, 320, 3), np.uint8))
    result = cli("--weights", tiny_home.root, "extract-pose", folder, "--fps", "8")
    assert result.exit_code == 0, result.stderr
    meta = json.loads((Path(result.stdout.strip()) / "meta.json").read_text())
    assert meta["backend"] == "dwpose" and meta["fps"] == 8 and meta["frame_count"] == 3  # auto picks DWPose


def test_library_call_returns_the_cache_entry(clip, tmp_path):
    from animator_cli.cache import StageCache
    from animator_cli.weights.home import WeightsHome

    cache = StageCache(tmp_path / "cache")
    first = extract_pose(clip, max_frames=2, smooth=False, weights=WeightsHome(tmp_path / "w"), cache=cache)
    assert first.parent.parent == cache.root and (first / "manifest.json").exists()
    other = extract_pose(clip, max_frames=2, smooth=True, weights=WeightsHome(tmp_path / "w"), cache=cache)
    assert other != first  # options are part of the key


def test_align_none_draws_unaligned_at_the_reference_size(clip, tmp_path):
    from animator_cli.weights.home import WeightsHome

    reference = tmp_path / "ref.png"
    cv2.imwrite(str(reference), np.zeros((300, 200, 3), np.uint8))  # no person needed without alignment
    folder = extract_pose(clip, tmp_path / "out", reference, align="none", max_frames=1,
                          weights=WeightsHome(tmp_path / "w"))
    assert load_image(folder / "frame_0.png").shape == (300, 200, 3)
    source, drawn = np.load(folder / "keypoints.npz")["source_points"], load_keypoints(folder).points
    np.testing.assert_array_equal(source, drawn)


@pytest.mark.parametrize("option", [("--fps", "0"), ("--fps", "-5"), ("--max-frames", "0"), ("--fps", "inf"),
                                    ("--fps", "1e12"), ("--fps", "nan")])
def test_invalid_fps_or_frame_count_exits_2(cli, tmp_path, option):
    clip = tmp_path / "clip.mp4"
    write_video(clip, [np.zeros((64, 64, 3), np.uint8)] * 2, fps=10)
    result = cli("extract-pose", clip, "-o", tmp_path / "poses", *option)
    assert result.exit_code == 2 and option[0] in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "poses").exists()


@pytest.mark.parametrize("size", [(1, 1), (31, 200), (200, 16)])
def test_tiny_reference_or_driving_frames_exit_2(cli, clip, tmp_path, size):
    """A 1×1 reference used to give a 1×1 pose canvas; images under 32 px a side are refused up front."""
    width, height = size
    reference = tmp_path / "ref.png"
    cv2.imwrite(str(reference), np.full((height, width, 3), 128, np.uint8))
    result = cli("extract-pose", clip, "-r", reference, "-o", tmp_path / "a")
    assert result.exit_code == 2 and "32 pixels" in result.stderr and "ref.png" in result.stderr
    frames = tmp_path / "frames"
    frames.mkdir()
    cv2.imwrite(str(frames / "frame_0.png"), np.full((height, width, 3), 128, np.uint8))
    result = cli("extract-pose", frames, "-o", tmp_path / "b", "--backend", "mediapipe")
    assert result.exit_code == 2 and "32 pixels" in result.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_force_replaces_only_a_previous_pose_output(cli, clip, tmp_path):
    """A folder with just a meta.json (e.g. a `face -o` output plus the user's files) is never deleted."""
    other = tmp_path / "face"
    other.mkdir()
    (other / "meta.json").write_text(json.dumps({"faces": 1}))
    (other / "keypoints.npz").write_bytes(b"")
    (other / "notes.txt").write_text("keep me")
    result = cli("extract-pose", clip, "-o", other, "--force", "--max-frames", "1")
    assert result.exit_code == 2 and "not a pose folder" in result.stderr
    assert (other / "notes.txt").read_text() == "keep me"
    poses = tmp_path / "poses"
    assert cli("extract-pose", clip, "-o", poses, "--max-frames", "1").exit_code == 0
    again = cli("extract-pose", clip, "-o", poses, "--force", "--max-frames", "2")
    assert again.exit_code == 0, again.stderr
    assert len(list_frames(poses)) == 2
