"""Atomic writes: results appear complete or not at all, with ordinary permissions."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from animator_cli.fileio import atomic_dir, atomic_path
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
