"""`check_alignment`: detect the reference's and the driving video's poses, measure, and judge.

The driving poses come from the pose stage itself (`extract_pose`, cached), called exactly as `animate` calls
it, so a check before `animate` costs no second pass over the video and reuses any earlier extraction. The
reference photo and SAMPLE_FRAMES evenly spaced driving frames are looked at once more, to count people.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from animator_cli.cache import StageCache
from animator_cli.check import measure
from animator_cli.check.findings import AlignmentReport, Measurements, best_align, judge
from animator_cli.check.fit import aligned_tracks, off_canvas, residual
from animator_cli.check.people import PeopleCounter
from animator_cli.check.preview import representative_frames, write_preview
from animator_cli.errors import InputError
from animator_cli.pose import credible, extract_pose
from animator_cli.pose.align import ALIGN_MODES, align_track
from animator_cli.pose.backend import open_backend, resolve_backend
from animator_cli.pose.extract import NoPersonError
from animator_cli.pose.keypoints import Pose, PoseTrack, face_visible, load_source_track
from animator_cli.pose.track import largest
from animator_cli.video import iter_frames, load_image
from animator_cli.weights.home import WeightsHome

SAMPLE_FRAMES = 16
CHECK_MODES = ("warn", "strict", "off")  # what `animate` does with the check's findings
STAGE = "check"
MEASURED_FILE = "measured.json"
log = logging.getLogger("animator")


def _shares(values: list[str | None]) -> dict[str, float]:
    known = [v for v in values if v is not None]
    return {k: n / len(known) for k, n in Counter(known).most_common()} if known else {}


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return float(np.median(known)) if known else None


def _frames_at(source: Path, indices: set[int], max_frames: int | None) -> dict[int, np.ndarray]:
    """The driving frames at ``indices``, decoded in one pass that stops after the last one."""
    frames: dict[int, np.ndarray] = {}
    if not indices:
        return frames
    for index, frame in enumerate(iter_frames(source, max_frames)):
        if index in indices:
            frames[index] = frame
        if index >= max(indices):
            break
    return frames


def _ratio(driving: float | None, reference: float | None) -> float | None:
    return driving / reference if driving is not None and reference else None


def _measure(align: str, ref_pose: Pose | None, ref_size: tuple[int, int], ref_people: int, ref_face: bool,
             track: PoseTrack, drawn: PoseTrack, aligned: dict[str, PoseTrack],
             people: list[int]) -> Measurements:
    size = track.size
    detected = np.flatnonzero(track.present)
    poses = [track.pose(i) for i in detected]
    regions = [measure.body_region(p) for p in poses]
    views = [measure.facing(p, size) for p in poses]
    ref_view = measure.facing(ref_pose, ref_size) if ref_pose else None
    known = [v for v in views if v is not None]
    ref_head = measure.head_length(ref_pose, ref_size) if ref_pose else None
    used = np.flatnonzero(drawn.present | drawn.filled)
    return Measurements(
        align=align, frames=len(track), reference_size=ref_size, driving_size=size, reference_people=ref_people,
        reference_face=ref_face, reference_region=measure.body_region(ref_pose) if ref_pose else None,
        reference_view=ref_view, reference_tilt=measure.tilt_degrees(ref_pose, ref_size) if ref_pose else None,
        driving_region=Counter(r for r in regions if r).most_common(1)[0][0] if any(regions) else None,
        driving_regions=_shares(regions), driving_views=_shares(views),
        view_mismatch_share=(sum(v != ref_view for v in known) / len(known)) if ref_view and known else None,
        no_person_share=1 - len(detected) / max(1, len(track)),
        multi_person_share=sum(n > 1 for n in people) / len(people) if people else None,
        sampled_frames=len(people),
        driving_face_share=float(face_visible(track.scores[detected]).mean()) if len(detected) else 0.0,
        scale_ratio=_ratio(_median([measure.head_length(drawn.pose(i), drawn.size) for i in used]), ref_head)
        if ref_pose and align != "none" else None,
        aspect_ratio=_ratio(_median([measure.body_aspect(p, size) for p in poses]),
                            measure.body_aspect(ref_pose, ref_size) if ref_pose else None),
        off_canvas={mode: float(off_canvas(t)[used].mean()) if len(used) else 0.0 for mode, t in aligned.items()},
        residuals={mode: residual(t, ref_pose) for mode, t in aligned.items()} if ref_pose else {},
    )


def _driving_track(driving: Path, **options: Any) -> PoseTrack:
    """The pose stage's tracked poses of ``driving`` (``options`` are extract_pose's); a video where nobody is
    found gives its empty track, which the findings report as an error, next to what is wrong with the reference."""
    try:
        return load_source_track(extract_pose(driving, **options))
    except NoPersonError as exc:
        return exc.track


def check_alignment(reference: Path, driving: Path, *, weights: WeightsHome, cache: StageCache,
                    align: str = "global", backend: str = "auto", device: str | None = None,
                    max_frames: int | None = None, preview: Path | None = None) -> AlignmentReport:
    """Predict, before rendering, whether ``driving``'s poses fit the ``reference`` person (docs/check.md).

    ``align``, ``backend``, ``max_frames`` are `animate`'s options (the pose stage's cache entry is shared with
    it); ``preview`` also writes the preview PNG there. Bad input raises InputError; what is wrong with a usable
    pair is reported as findings.
    """
    reference, driving = Path(reference), Path(driving)
    if align not in ALIGN_MODES:
        raise InputError(f"unknown alignment '{align}'", f"choose from {', '.join(ALIGN_MODES)}")
    if preview is not None and Path(preview).suffix.lower() != ".png":
        raise InputError(f"--preview {preview} must end in .png")
    if not reference.is_file():
        raise InputError(f"reference image {reference} does not exist")
    if not driving.exists():
        raise InputError(f"driving video {driving} does not exist")
    ref_rgb = load_image(reference)
    ref_size = (ref_rgb.shape[1], ref_rgb.shape[0])
    detector = open_backend(backend, weights, device)
    counter = PeopleCounter(detector)
    try:
        persons, faces = counter.count(ref_rgb)
        ref_pose = largest(persons, ref_size)
        ref_face = faces > 0 or bool(ref_pose and face_visible(ref_pose.scores))
        # Without a reference person the stage cannot align; the driving video is still judged on its own.
        track = _driving_track(driving, reference=reference, align=align if ref_pose else "none", backend=backend,
                               max_frames=max_frames, weights=weights, cache=cache, device=device)
        samples = {int(i) for i in np.linspace(0, len(track) - 1, min(SAMPLE_FRAMES, len(track))).round()}
        shown = set(representative_frames(track)) if preview is not None else set()
        frames = _frames_at(driving, samples | shown, max_frames)
        people = [max(len(p), n) for p, n in (counter.count(frames[i]) for i in sorted(samples) if i in frames)]
    finally:
        counter.close()
        detector.close()
    aligned = aligned_tracks(track, ref_pose, ref_size) if ref_pose else {}
    drawn = aligned.get(align) or align_track(track, "none", None, ref_size)[0]
    if align == "none":
        aligned["none"] = drawn
    measured = _measure(align, ref_pose, ref_size, max(len(persons), faces), ref_face, track, drawn, aligned,
                        people)
    # Without anyone in the driving video there is nothing to preview (the findings say so).
    written = write_preview(preview, ref_rgb, drawn, track, {i: frames[i] for i in shown if i in frames}) \
        if preview is not None and shown else None
    return AlignmentReport(judge(measured), best_align(measured), measured, written)


def preflight(reference: Path, driving: Path, mode: str, *, weights: WeightsHome, cache: StageCache,
              align: str = "global", backend: str = "auto", device: str | None = None,
              max_frames: int | None = None) -> AlignmentReport | None:
    """The check `animate` runs first: warnings and errors are logged; ``mode`` strict raises on any of them
    (before anything is rendered), warn never raises for a finding, off skips the check."""
    if mode not in CHECK_MODES:
        raise InputError(f"unknown --check {mode}", f"choose from {', '.join(CHECK_MODES)}")
    if mode == "off":
        return None
    report = _cached_check(reference, driving, weights=weights, cache=cache, align=align, backend=backend,
                           device=device, max_frames=max_frames)
    for finding in report.warnings:
        log.warning("check: %s", finding.message + (f" → {finding.suggestion}" if finding.suggestion else ""))
    if mode == "strict":
        report.raise_for(strict=True)
    return report


def _cached_check(reference: Path, driving: Path, *, weights: WeightsHome, cache: StageCache, align: str,
                  backend: str, device: str | None, max_frames: int | None) -> AlignmentReport:
    """`check_alignment` through the stage cache: a rerun of `animate` judges the stored measurements again
    instead of running the detectors (so a cached rerun loads no pose or face model)."""
    params = {"align": align, "backend": resolve_backend(backend, weights), "max_frames": max_frames,
              "person": credible.RULE}
    entry = cache.entry(STAGE, [Path(reference), Path(driving)], params)
    if entry.done:
        measured = Measurements(**json.loads((entry.path / MEASURED_FILE).read_text()))
        measured = replace(measured, reference_size=tuple(measured.reference_size),
                           driving_size=tuple(measured.driving_size))
        return AlignmentReport(judge(measured), best_align(measured), measured)
    report = check_alignment(reference, driving, weights=weights, cache=cache, align=align, backend=backend,
                             device=device, max_frames=max_frames)
    with entry.writing() as tmp:
        (tmp / MEASURED_FILE).write_text(json.dumps(asdict(report.measured)))
    return report
