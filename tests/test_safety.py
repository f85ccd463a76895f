"""Data safety: no command writes over its own inputs, a full disk is bad input (exit 2) with nothing left behind,
huge or tiny images are refused, and frame folders follow one naming rule."""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
from media import clip_with_audio, stick_poses
from PIL import Image

import animator_cli.batch as batch
from animator_cli.errors import DiskFullError, InputError, classify, is_disk_full
from animator_cli.fileio import atomic_path, check_output_path
from animator_cli.video import MAX_PIXELS, list_frames, load_image, probe, write_frame

SMALL = ("--width", 64, "--height", 64, "--steps", 1)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _frames_folder(folder: Path, count: int = 3, size: int = 64) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        write_frame(folder, i, np.full((size, size, 3), 20 * i % 256, np.uint8))
    return folder


@pytest.fixture
def photo(tmp_path: Path, astronaut_path: Path) -> Path:
    """The astronaut photo at 128×128: a real reference image, quick to process."""
    path = tmp_path / "ref.png"
    Image.open(astronaut_path).resize((128, 128)).save(path)
    return path


# --- the helper ------------------------------------------------------------------------------------------------

def test_helper_sees_through_names_links_and_folders(tmp_path: Path) -> None:
    source = tmp_path / "in.mp4"
    source.write_bytes(b"video")
    (tmp_path / "hard.mp4").hardlink_to(source)
    (tmp_path / "soft.mp4").symlink_to(source)
    (tmp_path / "dirlink").symlink_to(tmp_path, target_is_directory=True)
    for alias in (source, tmp_path / "hard.mp4", tmp_path / "soft.mp4", tmp_path / "dirlink" / "in.mp4",
                  tmp_path / "sub" / ".." / "in.mp4"):
        with pytest.raises(InputError, match="is also an input"):
            check_output_path(alias, [None, source])
    check_output_path(tmp_path / "new.mp4", [source])  # a new name is fine
    with pytest.raises(InputError, match="holds the input"):
        check_output_path(tmp_path / "dirlink", [source], folder=True)
    check_output_path(tmp_path / "elsewhere", [source], folder=True)
    (tmp_path / "frames").mkdir()
    with pytest.raises(InputError, match="frame_1.png is also an input"):
        check_output_path(tmp_path, [tmp_path / "frames", source.rename(tmp_path / "frame_1.png")],
                                  names=["frame_0.png", "frame_1.png"])
    assert (tmp_path / "frame_1.png").read_bytes() == b"video"


# --- every writing command --------------------------------------------------------------------------------------

def test_animate_refuses_to_replace_its_driving_video(cli, tiny_home, tmp_path: Path, photo: Path) -> None:
    mine = clip_with_audio(tmp_path / "mine.mp4", 6, 10)
    before = _digest(mine)
    result = cli("--weights", tiny_home.root, "animate", photo, mine, "-o", mine, *SMALL)
    assert result.exit_code == 2 and "is also an input" in result.stderr, result.stderr
    assert _digest(mine) == before
    assert not (tmp_path / "stage-cache").exists()  # refused before any stage ran
    link = tmp_path / "link.mp4"
    link.symlink_to(mine)
    result = cli("--weights", tiny_home.root, "animate", photo, link, "-o", mine, *SMALL)
    assert result.exit_code == 2 and _digest(mine) == before


def test_generate_refuses_audio_frames_dir_and_mask_clashes(cli, tiny_home, tmp_path: Path, photo: Path) -> None:
    poses = stick_poses(tmp_path / "poses")
    music = clip_with_audio(tmp_path / "music.mp4", 6, 10)
    (tmp_path / "hard.mp4").hardlink_to(music)
    pose_digests = {p.name: _digest(p) for p in poses.iterdir()}
    base = ["--weights", tiny_home.root, "generate", photo, poses, *SMALL]
    for args in (["-o", music, "--audio-from", music], ["-o", tmp_path / "hard.mp4", "--audio-from", music],
                 ["-o", tmp_path / "o.mp4", "--frames-dir", poses],
                 ["-o", tmp_path / "o.mp4", "--face-opt", "--face-masks", poses, "--frames-dir", poses]):
        result = cli(*base, *args)
        assert result.exit_code == 2 and "input" in result.stderr, (args, result.stderr)
    assert _digest(music) == _digest(tmp_path / "hard.mp4")
    assert {p.name: _digest(p) for p in poses.iterdir()} == pose_digests
    assert not (tmp_path / "o.mp4").exists() and not (tmp_path / "stage-cache").exists()


def test_batch_job_may_not_replace_another_jobs_input(cli, tiny_home, tmp_path: Path, photo: Path,
                                                      monkeypatch) -> None:
    clip_with_audio(tmp_path / "dance.mp4", 6, 10)
    before = _digest(tmp_path / "dance.mp4")
    (tmp_path / "jobs.yaml").write_text("jobs:\n  - {reference: ref.png, driving: dance.mp4, output: a.mp4}\n"
                                        "  - {reference: ref.png, poses: poses, output: dance.mp4}\n")
    ran = []
    monkeypatch.setattr(batch, "run_job", lambda job, *_: ran.append(job["output"].name) or batch.GenerateResult(
        job["output"], 1, 25.0, 64, 64, cached=True))
    result = cli("--weights", tiny_home.root, "--json", "batch", tmp_path / "jobs.yaml")
    assert result.exit_code == 2 and ran == ["a.mp4"]
    report = json.loads(result.stdout)
    assert "is also an input" in report["jobs"][1]["error"] and _digest(tmp_path / "dance.mp4") == before


def test_video_frames_and_encode_keep_their_inputs(cli, tmp_path: Path) -> None:
    folder = tmp_path / "clips"
    folder.mkdir()
    clip = clip_with_audio(folder / "clip.mp4", 4, 10)
    before = _digest(clip)
    result = cli("video", "frames", clip, "-o", folder)
    assert result.exit_code == 2 and "holds the input" in result.stderr and _digest(clip) == before
    frames = _frames_folder(tmp_path / "frames")
    result = cli("video", "encode", frames, "-o", clip, "--audio-from", clip)
    assert result.exit_code == 2 and "is also an input" in result.stderr and _digest(clip) == before


def test_extract_pose_face_and_evaluate_keep_their_inputs(cli, tiny_home, tmp_path: Path, photo: Path) -> None:
    frames = _frames_folder(tmp_path / "frames")
    result = cli("--weights", tiny_home.root, "extract-pose", frames, "-o", frames)
    assert result.exit_code == 2 and "is also an input" in result.stderr
    holder = tmp_path / "holder"
    holder.mkdir()
    reference = Path(shutil.copy(photo, holder / "ref.png"))
    result = cli("--weights", tiny_home.root, "extract-pose", frames, "-r", reference, "-o", holder)
    assert result.exit_code == 2 and "holds the input" in result.stderr and reference.is_file()

    export = tmp_path / "export"
    export.mkdir()
    image = Path(shutil.copy(photo, export / "face_mask.png"))  # the name `face -o` writes
    before = _digest(image)
    result = cli("--weights", tiny_home.root, "face", image, "-o", export)
    assert result.exit_code == 2 and "is also an input" in result.stderr and _digest(image) == before
    assert not (tmp_path / "stage-cache").exists()

    result = cli("evaluate", frames, frames, "--metrics", "l1", "--per-frame", frames / "frame_0.png")
    assert result.exit_code == 2 and "is also an input" in result.stderr  # a file of an input folder
    video = clip_with_audio(tmp_path / "gen.mp4", 3, 10)
    before = _digest(video)
    result = cli("evaluate", video, video, "--metrics", "l1", "--per-frame", video)
    assert result.exit_code == 2 and "is also an input" in result.stderr and _digest(video) == before


def test_prepare_data_and_train_keep_their_inputs(cli, tiny_home, tmp_path: Path) -> None:
    videos = tmp_path / "data" / "raw"
    videos.mkdir(parents=True)
    clip = clip_with_audio(videos / "raw.mp4", 4, 10)  # its clip folder would be data/raw: the videos folder
    for output in (videos, tmp_path / "data"):
        result = cli("--weights", tiny_home.root, "prepare-data", videos, "-o", output)
        assert result.exit_code == 2 and "input" in result.stderr, result.stderr
    assert sorted(p.name for p in videos.iterdir()) == ["raw.mp4"] and clip.stat().st_size > 0
    result = cli("--weights", tiny_home.root, "train", "--config", "presets/tiny-cpu.yaml", "--data", videos,
                 "-o", tmp_path / "data")
    assert result.exit_code == 2 and "holds the input" in result.stderr, result.stderr


# --- full disk ----------------------------------------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path: Path):
    """A 256 KiB tmpfs (needs root and mount(8)); skipped where one cannot be mounted."""
    mount = tmp_path / "disk"
    mount.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True)
    except OSError:
        pytest.skip("mount(8) is not available")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def _fill(disk: Path, leave: int) -> None:
    """Fill ``disk`` until only about ``leave`` bytes are free."""
    stats = os.statvfs(disk)
    (disk / "filler").write_bytes(bytes(max(0, stats.f_bavail * stats.f_frsize - leave)))


def test_video_encode_on_a_full_disk(cli, tmp_path: Path, small_disk: Path) -> None:
    rng = np.random.default_rng(0)
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(8):
        write_frame(frames, i, rng.integers(0, 256, (128, 128, 3), np.uint8))  # noise: a large video
    _fill(small_disk, 16 << 10)
    result = cli("video", "encode", frames, "-o", small_disk / "out.mp4", "--crf", 0)
    assert result.exit_code == 2, result.stderr
    assert f"no space left on device at {small_disk / 'out.mp4'}" in result.stderr
    assert "internal error" not in result.stderr
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler"]  # no temporary file left behind


def test_generate_export_on_a_full_disk(cli, tiny_home, tmp_path: Path, photo: Path, small_disk: Path) -> None:
    poses = stick_poses(tmp_path / "poses")
    first = cli("--weights", tiny_home.root, "generate", photo, poses, "-o", tmp_path / "o.mp4", *SMALL)
    assert first.exit_code == 0, first.stderr
    _fill(small_disk, (tmp_path / "o.mp4").stat().st_size // 2)
    result = cli("--weights", tiny_home.root, "generate", photo, poses, "-o", small_disk / "o.mp4", *SMALL)
    assert result.exit_code == 2 and "no space left on device at" in result.stderr, result.stderr
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler"]


def test_disk_full_from_deep_inside_a_write(tmp_path: Path, monkeypatch) -> None:
    """The lowest level a copy reaches (os.sendfile / the fallback write), failing like a full disk."""
    source = tmp_path / "src.bin"
    source.write_bytes(b"x" * 100_000)

    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(shutil, "_fastcopy_sendfile", full)
    monkeypatch.setattr(shutil, "copyfileobj", full)
    target = tmp_path / "out" / "copy.bin"
    with pytest.raises(DiskFullError, match=f"no space left on device at {target}"), atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)
    assert list(target.parent.iterdir()) == []


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_one_classifier_for_cli_and_batch(cli, tiny_home, tmp_path: Path, monkeypatch, code) -> None:
    exc = OSError(code, os.strerror(code), "/data/out.mp4")
    assert is_disk_full(exc) and classify(exc).exit_code == 2
    assert classify(OSError(errno.EACCES, "denied")).kind == "internal"
    (tmp_path / "jobs.yaml").write_text("jobs:\n  - {reference: r.png, poses: p, output: a.mp4}\n")

    def fail(*_):
        raise exc

    monkeypatch.setattr(batch, "run_job", fail)
    result = cli("--weights", tiny_home.root, "batch", tmp_path / "jobs.yaml")  # weights are checked first
    assert result.exit_code == 2 and "no space left on device at /data/out.mp4" in result.stderr
    monkeypatch.setattr(batch, "read_jobs", fail)  # outside any job: the CLI's own handler
    result = cli("--weights", tiny_home.root, "batch", tmp_path / "jobs.yaml")
    assert result.exit_code == 2 and "no space left on device at /data/out.mp4" in result.stderr
    assert "internal error" not in result.stderr


# --- images -------------------------------------------------------------------------------------------------------

def _blank_png(path: Path, width: int, height: int) -> Path:
    """A real greyscale PNG of any size, compressed row by row (a 20000×20000 one is 0.4 MB on disk)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer, row = zlib.compressobj(9), bytes(width + 1)
    body = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


def test_decompression_bomb_is_refused_naming_the_limit(cli, tiny_home, tmp_path: Path) -> None:
    bomb = _blank_png(tmp_path / "bomb.png", 20000, 20000)
    poses = stick_poses(tmp_path / "poses")
    result = cli("--weights", tiny_home.root, "generate", bomb, poses, "-o", tmp_path / "o.mp4", *SMALL)
    assert result.exit_code == 2 and "100 megapixels" in result.stderr, result.stderr
    wide = _blank_png(tmp_path / "wide.png", 12000, 9000)  # above our limit, below Pillow's own
    with pytest.raises(InputError, match="12000×9000 pixels, above the limit of 100 megapixels"):
        load_image(wide)
    assert MAX_PIXELS == 100_000_000
    assert load_image(_blank_png(tmp_path / "ok.png", 5000, 4000)).shape == (4000, 5000, 3)


def test_generate_refuses_a_tiny_reference_like_animate(cli, tiny_home, tmp_path: Path) -> None:
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (20, 20), "white").save(tiny)
    poses = stick_poses(tmp_path / "poses")
    result = cli("--weights", tiny_home.root, "generate", tiny, poses, "-o", tmp_path / "o.mp4", *SMALL)
    assert result.exit_code == 2 and "20×20 pixels" in result.stderr and "at least 32" in result.stderr
    driving = clip_with_audio(tmp_path / "d.mp4", 4, 10)
    result = cli("--weights", tiny_home.root, "animate", tiny, driving, "-o", tmp_path / "o.mp4", *SMALL)
    assert result.exit_code == 2 and "20×20 pixels" in result.stderr


# --- frame folders ----------------------------------------------------------------------------------------------

def test_frame_names_rule(tmp_path: Path, caplog) -> None:
    folder = _frames_folder(tmp_path / "a", 12)
    Image.new("RGB", (64, 64)).save(folder / "frame_x.png")
    Image.new("RGB", (64, 64)).save(folder / "cover.jpg")
    (folder / "notes.txt").write_text("not an image")
    with caplog.at_level(logging.WARNING, logger="animator"):
        frames = list_frames(folder)
    assert [p.name for p in frames] == [f"frame_{i}.png" for i in range(12)]  # numeric, not text, order
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "cover.jpg, frame_x.png" in warnings[0]

    bare = tmp_path / "b"
    bare.mkdir()
    for name in ("0010.png", "0002.png", "0001.jpg"):
        Image.new("RGB", (8, 8)).save(bare / name)
    assert [p.name for p in list_frames(bare)] == ["0001.jpg", "0002.png", "0010.png"]

    Image.new("RGB", (8, 8)).save(bare / "frame_3.png")
    with pytest.raises(InputError, match="mixes frame_<i> and bare-number"):
        list_frames(bare)
    Image.new("RGB", (8, 8)).save(folder / "frame_01.png")
    with pytest.raises(InputError, match="two files for frame 1"):
        list_frames(folder)


def test_stray_image_is_not_encoded_as_a_frame(cli, tmp_path: Path) -> None:
    frames = _frames_folder(tmp_path / "frames", 3)
    Image.new("RGB", (64, 64), "red").save(frames / "frame_x.png")
    result = cli("--json", "video", "encode", frames, "-o", tmp_path / "o.mp4")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["frames"] == 3 and probe(tmp_path / "o.mp4").frame_count == 3
    assert "frame_x.png" in result.stderr


def test_unusable_output_paths_fail_before_any_work(cli, tiny_home, tmp_path: Path, photo: Path) -> None:
    poses = stick_poses(tmp_path / "poses")
    (tmp_path / "taken.mp4").mkdir()
    result = cli("--weights", tiny_home.root, "generate", photo, poses, "-o", tmp_path / "taken.mp4", *SMALL)
    assert result.exit_code == 2 and "is an existing folder" in result.stderr
    result = cli("--weights", tiny_home.root, "generate", photo, poses, "-o", tmp_path / "o.mp4", *SMALL,
                 "--audio-from", tmp_path / "taken.mp4")
    assert result.exit_code == 2 and "taken.mp4 is a folder" in result.stderr
    result = cli("--weights", tiny_home.root, "generate", photo, poses, "-o", photo / "o.mp4", *SMALL)
    assert result.exit_code == 2 and f"{photo} is a file, not a directory" in result.stderr
    assert not (tmp_path / "stage-cache").exists()
    video = clip_with_audio(tmp_path / "v.mp4", 3, 10)
    result = cli("evaluate", video, video, "--metrics", "l1", "--per-frame", tmp_path / "taken.mp4")
    assert result.exit_code == 2 and "is an existing folder" in result.stderr and "evaluation" not in result.stderr
