"""The CLI contract: exit codes, one-line errors on stderr, results on stdout."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from fresh_process import run_fresh

from animator_cli.video import write_video


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    frames = [np.full((32, 48, 3), 10 * i, np.uint8) for i in range(20)]
    return write_video(tmp_path / "clip.mp4", frames, fps=20)


def _one_line_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ") and "Traceback" not in stderr
    return lines[0]


def test_help_and_version(cli) -> None:
    result = cli("--help")
    assert result.exit_code == 0 and "weights" in result.stdout and "video" in result.stdout
    result = cli("--version")
    assert result.exit_code == 0 and result.stdout.startswith("animator ")


def test_usage_error_exits_2(cli) -> None:
    assert cli("no-such-command").exit_code == 2
    assert cli("video", "frames", "x.mp4", "--max-frames", "0", "-o", "out").exit_code == 2


def test_results_on_stdout_logs_on_stderr(cli, clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "frames"
    result = cli("video", "frames", clip, "-o", out)
    assert result.exit_code == 0
    assert result.stdout.strip() == str(out)  # pipe-friendly: `animator video frames ... | xargs ls`
    assert len(list(out.glob("frame_*.png"))) == 20
    result = cli("--json", "video", "info", clip)
    info = json.loads(result.stdout)
    assert info["frame_count"] == 20 and info["fps"] == 20.0 and info["has_audio"] is False


def test_truncated_mp4(cli, clip: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(clip.read_bytes()[: clip.stat().st_size // 3])
    result = cli("video", "frames", broken, "-o", tmp_path / "out")
    assert result.exit_code == 2
    assert "broken.mp4" in _one_line_error(result.stderr)
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_text_file_named_mp4(cli, tmp_path: Path) -> None:
    fake = tmp_path / "notes.mp4"
    fake.write_text("not a video")
    result = cli("video", "info", fake)
    assert result.exit_code == 2
    assert "notes.mp4 is not a readable video" in _one_line_error(result.stderr)


def test_missing_path(cli, tmp_path: Path) -> None:
    result = cli("video", "info", tmp_path / "nowhere.mp4")
    assert result.exit_code == 2
    assert "nowhere.mp4 does not exist" in _one_line_error(result.stderr)


def test_output_under_a_file(cli, clip: Path, tmp_path: Path) -> None:
    result = cli("video", "frames", clip, "-o", clip / "frames")
    assert result.exit_code == 2
    assert "is a file, not a directory" in _one_line_error(result.stderr)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into read-only directories")
def test_unwritable_output_directory(cli, clip: Path, tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    result = cli("video", "encode", tmp_path, "-o", locked / "out.mp4")
    assert result.exit_code == 2
    assert "not writable" in _one_line_error(result.stderr)


def test_verbose_shows_traceback(cli, tmp_path: Path) -> None:
    result = cli("--verbose", "video", "info", tmp_path / "nowhere.mp4")
    assert result.exit_code == 2 and "Traceback" in result.stderr


def test_internal_error_exit_1_and_oom_exit_4(cli, monkeypatch: pytest.MonkeyPatch, clip: Path) -> None:
    import torch

    from animator_cli.cli import video_cmd

    def boom(_: Path) -> None:
        raise ZeroDivisionError("bug")

    monkeypatch.setattr(video_cmd, "probe", boom)
    result = cli("video", "info", clip)
    assert result.exit_code == 1 and "internal error" in _one_line_error(result.stderr)

    def oom(_: Path) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(video_cmd, "probe", oom)
    result = cli("video", "info", clip)
    assert result.exit_code == 4
    assert "--offload" in _one_line_error(result.stderr)


def test_frames_output_never_replaces_a_users_file_or_folder(cli, clip: Path, tmp_path: Path) -> None:
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"precious")
    result = cli("video", "frames", clip, "-o", photo)
    assert result.exit_code == 2 and photo.read_bytes() == b"precious"
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "todo.txt").write_text("keep me")
    result = cli("video", "frames", clip, "-o", folder)
    assert result.exit_code == 2 and "holds other files" in _one_line_error(result.stderr)
    assert [p.name for p in folder.iterdir()] == ["todo.txt"]
    frames = tmp_path / "frames"
    assert cli("video", "frames", clip, "-o", frames, "--max-frames", 3).exit_code == 0
    assert cli("video", "frames", clip, "-o", frames).exit_code == 0  # a previous frames folder is replaced
    assert len(list(frames.iterdir())) == 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "frames", "notes", "photo.jpg"]


def test_encode_output_must_be_an_mp4_file(cli, clip: Path, tmp_path: Path) -> None:
    frames = tmp_path / "frames"
    assert cli("video", "frames", clip, "-o", frames).exit_code == 0
    (tmp_path / "taken.mp4").mkdir()
    for target, message in ((tmp_path / "taken.mp4", "is an existing folder"), (tmp_path / "out.avi", ".mp4")):
        result = cli("video", "encode", frames, "-o", target)
        assert result.exit_code == 2 and message in _one_line_error(result.stderr)
    assert not list((tmp_path / "taken.mp4").iterdir()) and not (tmp_path / "out.avi").exists()


def test_frames_of_different_sizes_are_an_input_error(cli, tmp_path: Path) -> None:
    from animator_cli.video import write_frame

    write_frame(tmp_path / "mixed", 0, np.zeros((64, 64, 3), np.uint8))
    write_frame(tmp_path / "mixed", 1, np.zeros((48, 64, 3), np.uint8))
    result = cli("video", "encode", tmp_path / "mixed", "-o", tmp_path / "out.mp4")
    assert result.exit_code == 2 and "frame 1 is 64×48" in _one_line_error(result.stderr)
    assert not (tmp_path / "out.mp4").exists()


def test_still_image_is_not_a_video(cli, astronaut_path: Path) -> None:
    result = cli("video", "info", astronaut_path)
    assert result.exit_code == 2 and "still image" in _one_line_error(result.stderr)


def test_usage_errors_are_one_line(cli, clip: Path, tmp_path: Path) -> None:
    result = cli("video", "frames", clip, "-o", tmp_path / "out", "--max-frames", 0)
    assert result.exit_code == 2
    assert "--max-frames" in _one_line_error(result.stderr) and not (tmp_path / "out").exists()


def test_info_result_is_on_stdout(cli, clip: Path) -> None:
    result = cli("video", "info", clip)
    assert result.exit_code == 0 and "fps: 20.0" in result.stdout.splitlines()


def _command_paths() -> list[list[str]]:
    """Every command and subcommand of `animator`, as the argument lists that name them ([] for the app)."""
    import contextlib
    import io

    import typer

    from animator_cli.cli.app import app, run

    with contextlib.redirect_stdout(io.StringIO()):
        run(["--help"])  # registers every command module

    def walk(command, path: list[str]) -> list[list[str]]:
        return [path] + [p for name, sub in sorted(getattr(command, "commands", {}).items())
                         for p in walk(sub, [*path, name])]

    return walk(typer.main.get_command(app), [])


# (arguments, a line their output must hold); "{clip}" stands for a 20 fps test clip
LIGHT_COMMANDS = [(["--version"], "animator "), (["video", "info", "{clip}"], "fps: 20.0")]
LIGHT_COMMANDS += [([*path, "--help"], "Usage: animator") for path in _command_paths()]


@pytest.mark.parametrize(("args", "expected"), LIGHT_COMMANDS, ids=[" ".join(a) for a, _ in LIGHT_COMMANDS])
def test_version_and_light_commands_do_not_import_torch(args: list[str], expected: str, clip: Path) -> None:
    """Only the invoked command's module is imported: `--version`, `video info` and every command's help run in a
    new interpreter and finish their work (exit 0, their output) without importing torch or another heavy
    module."""
    done = run_fresh(*(str(clip) if arg == "{clip}" else arg for arg in args))
    assert done.code == 0, done.stderr
    assert done.heavy == [], f"{' '.join(args)} imported {done.heavy}"
    assert expected in done.stdout, done.stdout
