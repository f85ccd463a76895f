"""Every weights component a command needs is checked before any work; one error lists all missing ones."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from media import clip_with_audio

from animator_cli.errors import WeightsError
from animator_cli.weights.home import WeightsHome


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


def test_require_components_lists_every_missing_one(tiny_home, tmp_path: Path) -> None:
    home = WeightsHome(shutil.copytree(tiny_home.root, tmp_path / "home"))
    shutil.rmtree(home.svd_dir / "vae")
    (home.antelopev2_dir / "glintr100.onnx").unlink()
    home.require_components(["animation", "dwpose"])  # present: no error
    with pytest.raises(WeightsError) as caught:
        home.require_components(["svd", "animation", "antelopev2"])
    message = str(caught.value)
    assert "SVD" in message and "antelopev2" in message and "StableAnimator" not in message
    assert "glintr100.onnx" in message
    assert "animator weights download --only svd --only antelopev2" in message


def test_animate_without_weights_exits_3_before_the_pose_stage(cli, tmp_path: Path, astronaut_path: Path) -> None:
    clip = clip_with_audio(tmp_path / "d.mp4", frames=3, fps=10)
    result = cli("--weights", tmp_path / "empty", "animate", astronaut_path, clip, "-o", tmp_path / "o.mp4",
                 "--pose-backend", "dwpose")
    assert result.exit_code == 3
    line = _one_line(result.stderr)
    assert "--only svd --only animation --only antelopev2 --only dwpose" in line
    assert not (tmp_path / "stage-cache").exists()  # no stage ran


def test_missing_input_is_reported_before_missing_weights(cli, tmp_path: Path, astronaut_path: Path) -> None:
    result = cli("--weights", tmp_path / "empty", "animate", astronaut_path, tmp_path / "no.mp4", "-o",
                 tmp_path / "o.mp4")
    assert result.exit_code == 2 and "driving video" in _one_line(result.stderr)
    result = cli("--weights", tmp_path / "empty", "generate", astronaut_path, tmp_path, "-o", tmp_path / "o.avi")
    assert result.exit_code == 2 and ".mp4" in _one_line(result.stderr)


@pytest.mark.parametrize(("args", "fix"), [
    (["face", "{photo}"], "--only antelopev2"),
    (["extract-pose", "{clip}", "--backend", "dwpose"], "--only dwpose"),
    (["train", "--data", "{tmp}"], "--only svd --only animation"),
    (["train", "--data", "{tmp}", "--set", "model.init=svd"], "--only svd`"),
    (["prepare-data", "{videos}", "-o", "{tmp}/ds"], "--only antelopev2"),
])
def test_commands_name_the_fix_for_all_missing_components(cli, tmp_path: Path, astronaut_path: Path,
                                                          args: list[str], fix: str) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    clip = clip_with_audio(videos / "d.mp4", frames=3, fps=10)
    values = {"photo": astronaut_path, "clip": clip, "tmp": tmp_path, "videos": videos}
    result = cli("--weights", tmp_path / "empty", *(a.format(**values) for a in args))
    assert result.exit_code == 3 and fix in _one_line(result.stderr), result.stderr
    assert not (tmp_path / "ds").exists()


def test_batch_without_weights_stops_before_its_first_job(cli, tmp_path: Path, astronaut_path: Path) -> None:
    (tmp_path / "poses").mkdir()
    (tmp_path / "jobs.yaml").write_text(f"jobs:\n  - {{reference: {astronaut_path}, poses: poses, output: o.mp4}}\n")
    result = cli("--weights", tmp_path / "empty", "batch", tmp_path / "jobs.yaml")
    assert result.exit_code == 3 and "job 0" not in result.stderr
    assert "--only svd --only animation --only antelopev2" in _one_line(result.stderr)
