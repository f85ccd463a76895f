"""`animate` runs the alignment check first (warn / strict / off) and writes the identity timeline with --report;
the rendered video is the same with or without the check."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from media import drifting_clip
from PIL import Image

from animator_cli.video import iter_frames, load_image

pytest.importorskip("mediapipe")


def test_animate_checks_first_and_keeps_the_output(cli, tiny_home, tmp_path: Path, t1_path: Path,
                                                   astronaut_path: Path) -> None:
    clip = drifting_clip(tmp_path / "driving.mp4", load_image(astronaut_path)[::4, ::4], frames=4)

    def animate(name: str, *extra: str | Path):
        return cli("--weights", tiny_home.root, "--cache-dir", tmp_path / f"cache-{name}", "animate", t1_path, clip,
                   "-o", tmp_path / f"{name}.mp4", "--width", 64, "--height", 64, "--steps", 1, *extra)

    strict = animate("strict", "--check", "strict")  # t1.jpg holds several people: a warning
    assert strict.exit_code == 2 and "(--strict)" in strict.stderr
    assert not (tmp_path / "strict.mp4").exists()  # stopped before rendering

    off = animate("off", "--check", "off")
    warn = animate("warn", "--report", tmp_path / "report")
    assert off.exit_code == 0 and warn.exit_code == 0, warn.stderr
    assert "check:" in warn.stderr and "check:" not in off.stderr
    for a, b in zip(iter_frames(tmp_path / "off.mp4"), iter_frames(tmp_path / "warn.mp4"), strict=True):
        np.testing.assert_array_equal(a, b)

    rows = list(csv.DictReader((tmp_path / "report" / "identity.csv").read_text().splitlines()))
    assert [int(r["frame"]) for r in rows] == [0, 1, 2, 3]
    with Image.open(tmp_path / "report" / "identity.png") as image:
        assert image.format == "PNG"
    assert "identity: " in warn.stderr
    assert animate("bad", "--check", "maybe").exit_code == 2
