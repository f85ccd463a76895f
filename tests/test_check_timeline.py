"""Identity timeline on the tiny home: NaN where the face is hidden, CSIM's cosine elsewhere, CSV and PNG files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from animator_cli.check import IdentityTimeline, identity_timeline
from animator_cli.evaluation.csim import cosine
from animator_cli.face import extract_identity
from animator_cli.video import load_image, write_video
from animator_cli.weights.home import WeightsHome

HIDDEN = (3, 4, 9)  # black frames: the tiny detector finds no face there


@pytest.fixture
def rendered(tmp_path: Path, astronaut_path: Path) -> tuple[Path, list[np.ndarray]]:
    astronaut = load_image(astronaut_path)[::4, ::4]  # 128×128
    frames = [np.zeros_like(astronaut) if i in HIDDEN else np.roll(astronaut, 4 * i, axis=1) for i in range(12)]
    video = tmp_path / "rendered.mp4"
    write_video(video, frames, fps=8)
    return video, frames


def test_nan_where_the_face_is_hidden(rendered, tiny_home: WeightsHome, tom_hanks_path: Path, tmp_path: Path):
    video, _ = rendered
    timeline = identity_timeline(video, tom_hanks_path, weights=tiny_home, tile=4, overlap=2, hjb_steps=(0, 5))
    hidden = np.isnan(timeline.cosines)
    assert list(np.flatnonzero(hidden)) == list(HIDDEN)
    assert np.isfinite(timeline.cosines[~hidden]).all() and timeline.missing == len(HIDDEN)
    assert timeline.fps == 8 and timeline.windows[0] == (0, 1, 2, 3) and timeline.hjb_steps == (0, 5)
    # The same cosine CSIM computes: the decoded frame's face against the reference's.
    from animator_cli.video import iter_frames

    decoded = list(iter_frames(video))
    reference = extract_identity(tom_hanks_path, tiny_home).embedding.astype(np.float64)
    expected = cosine(extract_identity(decoded[0], tiny_home).embedding.astype(np.float64), reference)
    assert timeline.cosines[0] == pytest.approx(expected, abs=1e-6)

    csv_path, png_path = timeline.write(tmp_path / "report")
    rows = list(csv.DictReader(csv_path.read_text().splitlines()))
    assert [r["cosine"] == "nan" for r in rows] == list(hidden)
    assert float(rows[0]["cosine"]) == pytest.approx(timeline.cosines[0], abs=1e-5)
    assert rows[0]["window"] == "0" and rows[3]["window"] == "0+1"  # frame 3 is in windows 0 and 1
    with Image.open(png_path) as image:
        image.verify()
        assert image.format == "PNG" and image.size == (1000, 320)


def test_worst_range_and_summary():
    values = np.array([0.8, 0.8, 0.3, 0.2, np.nan, 0.9, 0.9, 0.9])
    timeline = IdentityTimeline(values, fps=2.0)
    assert timeline.worst_range() == (2, 3, pytest.approx(0.25))
    assert timeline.summary() == ("identity: mean cosine 0.686 over 7 of 8 frames; worst frames 2-3 (mean 0.250); "
                                  "no face in 1 frames")
    assert IdentityTimeline(np.full(3, np.nan), fps=2.0).summary() == "identity: no face found in any of 3 frames"


def test_evaluate_without_ground_truth(cli, rendered, tiny_home: WeightsHome, tom_hanks_path: Path,
                                       tmp_path: Path):
    video, _ = rendered
    out = cli("--weights", tiny_home.root, "--json", "evaluate", video, "--reference", tom_hanks_path,
              "--timeline", tmp_path / "timeline", "--face-opt-steps", "0:3")
    assert out.exit_code == 0, out.stderr
    identity = json.loads(out.stdout)["identity"]
    assert [v is None for v in identity["cosines"]] == [i in HIDDEN for i in range(12)]
    assert sorted(Path(f).name for f in identity["files"]) == ["identity.csv", "identity.png"]
    assert "worst frames" in out.stderr
    missing = cli("--weights", tiny_home.root, "evaluate", video)
    assert missing.exit_code == 2 and "needs --reference" in missing.stderr
