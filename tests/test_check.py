"""`animator check` on real photos with real MediaPipe detections: each finding is asserted, not just produced."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from media import drifting_clip, full_body_figure

from animator_cli.cache import StageCache
from animator_cli.check import check_alignment
from animator_cli.check.preview import ROW_HEIGHT
from animator_cli.pose.mediapipe_backend import MediaPipeBackend
from animator_cli.video import load_image, write_video
from animator_cli.weights.home import WeightsHome

pytest.importorskip("mediapipe")
FRAMES = 10


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory, astronaut_path: Path) -> dict[str, Path]:
    """Images and clips: the full-body figure, its drifting clip, the astronaut's, flipped/rotated references."""
    root = tmp_path_factory.mktemp("check-media")
    astronaut = load_image(astronaut_path)
    figure = full_body_figure(astronaut)
    paths = {"figure": root / "figure.png", "flipped": root / "flipped.png", "rotated": root / "rotated.png"}
    for name, rgb in (("figure", figure), ("flipped", astronaut[:, ::-1]), ("rotated", np.rot90(astronaut))):
        cv2.imwrite(str(paths[name]), np.ascontiguousarray(rgb[..., ::-1]))
    paths["figure_clip"] = drifting_clip(root / "figure.mp4", figure, FRAMES)
    paths["astronaut_clip"] = drifting_clip(root / "astronaut.mp4", astronaut, FRAMES)
    return paths


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory):
    """check_alignment with MediaPipe (no weights home) and one pose cache for the module."""
    root = tmp_path_factory.mktemp("check-run")

    def check(reference: Path, driving: Path, **kwargs):
        return check_alignment(reference, driving, weights=WeightsHome(root / "no-weights"),
                               cache=StageCache(root / "cache"), **kwargs)

    return check


def _codes(report, severity: str | None = None) -> set[str]:
    return {f.code for f in report.findings if severity is None or f.severity == severity}


def test_good_pair_has_no_warnings(run, media):
    report = run(media["figure"], media["figure_clip"])
    assert report.warnings == ()
    measured = report.measured
    assert measured.reference_region == "full" and measured.driving_region == "full"
    assert measured.reference_view == "front" and measured.view_mismatch_share == 0
    assert measured.reference_people == 1 and measured.reference_face
    assert measured.off_canvas["global"] == 0 and report.best_align == "global"
    assert measured.no_person_share == 0 and measured.multi_person_share == 0
    assert 0.8 <= measured.scale_ratio <= 1.25
    assert {"body-region", "view", "align-mode"} <= _codes(report, "info")


def test_upper_body_reference_against_full_body_driver(run, media, astronaut_path):
    report = run(astronaut_path, media["figure_clip"])
    assert {"body-region", "off-canvas"} <= _codes(report, "warning")
    assert report.measured.reference_region == "upper" and report.measured.driving_region == "full"
    region = next(f for f in report.findings if f.code == "body-region")
    assert "upper body" in region.message and "full body" in region.suggestion
    # The legs are mapped below the photo's bottom edge in every frame.
    assert report.measured.off_canvas["global"] == 1.0
    assert json.loads(json.dumps(report.as_dict()))["best_align"] in ("global", "limbs")


def test_group_photo_warns_about_several_people(run, media, t1_path):
    report = run(t1_path, media["figure_clip"])
    assert "multi-person" in _codes(report, "warning")
    assert report.measured.reference_people >= 3
    assert "largest" in next(f.message for f in report.findings if f.code == "multi-person")


def test_flipped_reference_mirrors_the_measurements(run, media, astronaut_path):
    plain = run(astronaut_path, media["astronaut_clip"]).measured
    report = run(media["flipped"], media["astronaut_clip"])
    flipped = report.measured
    assert (flipped.reference_region, flipped.reference_view) == (plain.reference_region, plain.reference_view)
    assert flipped.reference_view == "front"
    assert np.sign(flipped.reference_tilt) == -np.sign(plain.reference_tilt)  # the head leans the other way
    assert abs(flipped.reference_tilt) < 30
    assert not _codes(report, "warning") & {"tilt", "view", "multi-person", "scale", "aspect"}
    assert not report.errors


def test_rotated_reference_is_reported_as_tilted(run, media):
    report = run(media["rotated"], media["astronaut_clip"])
    tilt = next(f for f in report.findings if f.code == "tilt")
    assert tilt.severity == "warning" and "rotate the photo upright (clockwise by about 90°)" in tilt.suggestion
    assert 70 <= abs(report.measured.reference_tilt) <= 110


def test_faceless_reference_is_an_error(run, media, cli, astronaut_path):
    import skimage

    coffee = Path(skimage.__file__).parent / "data" / "coffee.png"
    report = run(coffee, media["figure_clip"])
    assert report.errors[0].code == "no-face" and not report.measured.reference_face
    assert "no-person" in _codes(report, "error")
    result = cli("--weights", media["figure"].parent / "no-weights", "check", coffee, media["figure_clip"])
    assert result.exit_code == 2
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "no face found in the reference image" in error_lines[0]
    assert "Traceback" not in result.stderr


def test_driving_frames_without_anyone(run, media, astronaut_path, tmp_path):
    figure = load_image(media["figure"])
    frames = [figure if i % 5 < 3 else np.full_like(figure, 150) for i in range(FRAMES)]  # 40 % empty
    clip = tmp_path / "gaps.mp4"
    write_video(clip, frames, fps=25)
    report = run(media["figure"], clip)
    assert report.measured.no_person_share == pytest.approx(0.4)
    finding = next(f for f in report.findings if f.code == "driving-people")
    assert finding.severity == "warning" and "40%" in finding.message


def test_preview_skeletons_land_on_the_reference_person(run, media):
    preview = media["figure"].parent / "preview.png"
    report = run(media["figure"], media["figure_clip"], preview=preview)
    assert report.preview == preview
    image = load_image(preview)
    reference = load_image(media["figure"])
    scale = ROW_HEIGHT / reference.shape[0]
    width = round(reference.shape[1] * scale)
    assert image.shape[0] == 3 * ROW_HEIGHT and image.shape[1] > width  # three rows: reference | driving frame
    plain = cv2.resize(reference, (width, ROW_HEIGHT), interpolation=cv2.INTER_AREA).astype(int)
    backend = MediaPipeBackend()
    try:
        pose = backend.detect(reference)[0]
    finally:
        backend.close()
    x0, y0, x1, y1 = pose.body_box() * (width, ROW_HEIGHT, width, ROW_HEIGHT)
    pad = 0.15 * max(x1 - x0, y1 - y0)
    for row in range(3):
        cell = image[row * ROW_HEIGHT:(row + 1) * ROW_HEIGHT, :width].astype(int)
        ys, xs = np.nonzero(np.abs(cell - plain).max(-1) > 60)  # skeleton pixels
        assert len(xs) > 100
        inside = (xs >= x0 - pad) & (xs <= x1 + pad) & (ys >= y0 - pad) & (ys <= y1 + pad)
        assert inside.mean() > 0.95


def test_cli_json_and_strict(cli, media, astronaut_path):
    home = media["figure"].parent / "no-weights"
    result = cli("--weights", home, "--json", "check", astronaut_path, media["figure_clip"], "--align", "limbs")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["align"] == "limbs" and "body-region" in {f["code"] for f in data["findings"]}
    strict = cli("--weights", home, "check", astronaut_path, media["figure_clip"], "--strict")
    assert strict.exit_code == 2 and "warning" in strict.stdout and "(--strict)" in strict.stderr
    good = cli("--weights", home, "check", media["figure"], media["figure_clip"], "--strict")
    assert good.exit_code == 0 and all(line.startswith("info") for line in good.stdout.splitlines())
    bad = cli("--weights", home, "check", astronaut_path, media["figure_clip"], "--preview", "out.jpg")
    assert bad.exit_code == 2 and "must end in .png" in bad.stderr
