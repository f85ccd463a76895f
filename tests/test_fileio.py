"""Atomic writes: results appear complete or not at all, with ordinary permissions."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from animator_cli import scratch
from animator_cli.fileio import atomic_dir, atomic_path, write_text_atomic
from animator_cli.weights.home import WeightsHome


def test_atomic_path_follows_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "out.txt") as tmp:
            tmp.write_text("x")
        with atomic_dir(tmp_path / "folder") as tmp:
            (tmp / "a").write_text("a")
    finally:
        os.umask(old)
    assert (tmp_path / "out.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "folder").stat().st_mode & 0o777 == 0o755


def test_atomic_dir_replaces_previous_result_and_file(tmp_path: Path) -> None:
    target = tmp_path / "result"
    for text in ("first", "second"):
        with atomic_dir(target) as tmp:
            (tmp / "value.txt").write_text(text)
    assert (target / "value.txt").read_text() == "second"
    with pytest.raises(ValueError), atomic_dir(target) as tmp:
        (tmp / "value.txt").write_text("third")
        raise ValueError("interrupted")
    assert (target / "value.txt").read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result"]


def test_stale_safetensors_twin_is_ignored(tmp_path: Path) -> None:
    home = WeightsHome(tmp_path)
    home.animation_dir.mkdir(parents=True)
    twin, pth = home.animation_dir / "unet.safetensors", home.animation_dir / "unet.pth"
    pth.write_bytes(b"old")
    twin.write_bytes(b"converted")
    assert home.animation_checkpoint("unet") == twin
    later = time.time() + 10
    os.utime(pth, (later, later))  # the .pth was re-downloaded after the conversion
    assert home.animation_checkpoint("unet") == pth


# --- what a killed writer leaves behind ---------------------------------------------------------------------------

def _start_writing(folder: str, connection, swap: bool) -> None:
    """A writer that never finishes (the test kills it): a file and a folder half written, or, with ``swap``, a
    finished folder stopped between moving the previous result aside and renaming the new one into place."""
    import time

    from animator_cli import fileio

    target = Path(folder) / "poses"
    if swap:
        rename = os.replace

        def stalled(source, destination) -> None:
            if Path(destination) == target:
                connection.send("swapping")
                time.sleep(120)
            rename(source, destination)

        fileio.os.replace = stalled
        with fileio.atomic_dir(target) as tmp:
            (tmp / "frame_0.png").write_text("new")
    with fileio.atomic_path(Path(folder) / "video.mp4") as tmp, fileio.atomic_dir(target) as tmp_dir:
        tmp.write_bytes(b"half a video")
        (tmp_dir / "frame_0.png").write_text("half")
        connection.send([str(tmp), str(tmp_dir)])
        time.sleep(120)


@pytest.fixture
def writer():
    """Start ``_start_writing`` in a forked process; every process started is killed and reaped at the end."""
    import multiprocessing

    context, started = multiprocessing.get_context("fork"), []

    def start(folder: Path, swap: bool = False):
        ours, theirs = context.Pipe()
        process = context.Process(target=_start_writing, args=(str(folder), theirs, swap))
        process.start()
        started.append(process)
        assert ours.poll(60), "the writer did not start"
        return process, ours.recv()

    yield start
    for process in started:
        process.kill()
        process.join()


def test_the_next_write_removes_what_a_killed_writer_left_and_nothing_else(writer, tmp_path: Path) -> None:
    killed, leftovers = writer(tmp_path)
    live, live_temps = writer(tmp_path)
    for process, paths in ((killed, leftovers), (live, live_temps)):
        assert all(Path(p).exists() and f"-{process.pid}-" in Path(p).name for p in paths)
    killed.kill()
    killed.join()
    ours = scratch.prefix("video").rsplit("-", 2)[0]  # .video.animator-<host>-<boot>, this machine's
    users = [".video.a1b2c3d4.mp4", ".video.animator-draft.mp4", "video.animator-x.mp4", f"{ours}-abcdefgh.mp4",
             f".video.animator-00000000-00000000-{killed.pid}-abcdefgh.mp4",  # another machine's
             f"{ours}-{'9' * 30}-abcdefgh.mp4"]  # a PID no system has
    for name in users:
        (tmp_path / name).write_text("mine")
    write_text_atomic(tmp_path / "notes.txt", "written")
    assert {p.name for p in tmp_path.iterdir()} == {"notes.txt", *users, *(Path(p).name for p in live_temps)}


def test_a_folder_killed_mid_swap_gets_its_previous_result_back(writer, tmp_path: Path) -> None:
    previous = tmp_path / "poses"
    previous.mkdir()
    (previous / "frame_0.png").write_text("previous")
    killed, said = writer(tmp_path, swap=True)
    assert said == "swapping" and not previous.exists()  # moved aside, the new result not yet in place
    killed.kill()
    killed.join()
    write_text_atomic(tmp_path / "notes.txt", "written")
    assert (previous / "frame_0.png").read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "poses"]
