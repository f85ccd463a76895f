"""`animator evaluate`: compare generated videos with ground truth, one pair or a whole benchmark.

Frames are streamed (one pair in memory at a time, plus one 16-frame clip per side for FVD), matched
by index (the shorter video decides, with a warning), and the ground truth is resized to the generated
size when they differ (area averaging when shrinking, bicubic when enlarging).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from animator_cli.errors import InputError, WeightsError
from animator_cli.evaluation import metrics as m
from animator_cli.evaluation.csim import CsimScorer
from animator_cli.evaluation.fvd import CLIP_FRAMES, ClipCollector, I3DFeatures, fvd, i3d_missing, i3d_path
from animator_cli.video import iter_frames, load_image
from animator_cli.video.images import IMAGE_SUFFIXES
from animator_cli.weights.home import WeightsHome

log = logging.getLogger("animator")

METRICS = ("l1", "psnr", "ssim", "lpips", "fvd", "csim")
VIDEO_SUFFIXES = {".mp4", ".mov", ".m4v", ".mkv", ".avi", ".webm", ".gif"}
FrameMetric = Callable[[np.ndarray, np.ndarray], "float | None"]


def parse_metrics(text: str) -> list[str]:
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in METRICS]
    if unknown or not names:
        raise InputError(f"unknown metric(s): {', '.join(unknown) or '(none given)'}",
                         f"choose from {','.join(METRICS)}")
    return list(dict.fromkeys(names))


def _is_frame_folder(path: Path) -> bool:
    return path.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir())


def _is_source(path: Path) -> bool:
    return (path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES) or _is_frame_folder(path)


def find_cases(generated: Path, truth: Path) -> tuple[list[tuple[str, Path, Path]], list[str]]:
    """(name, generated, ground truth) pairs, and warnings about cases present on one side only."""
    for path in (generated, truth):
        if not path.exists():
            raise InputError(f"{path} does not exist")
    if _is_source(generated) or _is_source(truth) or generated.is_file() or truth.is_file():
        for path in (generated, truth):
            if not _is_source(path):
                raise InputError(f"{path} is not a video file or a folder of frames",
                                 "pass two videos, two frame folders, or two folders of cases")
        return [(generated.stem if generated.is_file() else generated.name, generated, truth)], []

    def entries(folder: Path) -> dict[str, Path]:
        return {(p.stem if p.is_file() else p.name): p for p in sorted(folder.iterdir())
                if not p.name.startswith(".") and _is_source(p)}

    gen, real = entries(generated), entries(truth)
    names = sorted(set(gen) & set(real))
    if not names:
        raise InputError(f"no case of {generated} has a match in {truth}",
                         "benchmark folders must hold videos or frame folders with the same names")
    warnings = [f"case {n} has no ground truth; skipped" for n in sorted(set(gen) - set(real))]
    warnings += [f"case {n} has no generated video; skipped" for n in sorted(set(real) - set(gen))]
    return [(n, gen[n], real[n]) for n in names], warnings


@dataclass
class EvaluationResult:
    metrics: dict[str, float | None]  # over all frames (all clips for FVD) of all cases
    cases: list[dict[str, Any]]  # per case: name, frames, per-metric means
    per_frame: list[dict[str, Any]]  # rows: case, frame, one value per frame metric
    skipped: dict[str, str] = field(default_factory=dict)  # metric → why
    warnings: list[str] = field(default_factory=list)


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    if not present:
        return None
    return math.inf if any(math.isinf(v) for v in present) else float(np.mean(present))


class _Scorers:
    """The requested metrics that can run; the rest go to ``skipped`` with the reason."""

    def __init__(self, names: list[str], weights: WeightsHome, reference: Path | None, device: str | None) -> None:
        self.frame: dict[str, FrameMetric] = {}
        self.skipped: dict[str, str] = {}
        self.csim: CsimScorer | None = None
        self.i3d: I3DFeatures | None = None
        torch_device = device or "cpu"
        for name in names:
            if name in ("l1", "psnr", "ssim"):
                self.frame[name] = getattr(m, name)
            elif name == "lpips":
                if reason := m.lpips_unavailable():
                    self.skipped[name] = reason
                else:
                    try:  # lpips fetches its VGG weights on first use; offline that fails
                        self.frame[name] = m.Lpips(torch_device)
                    except Exception as exc:  # urllib, torch.hub and lpips raise many types
                        self.skipped[name] = f"LPIPS could not load its VGG weights ({exc})"
            elif name == "fvd":
                if reason := i3d_missing(weights):
                    self.skipped[name] = reason
                else:
                    self.i3d = I3DFeatures(i3d_path(weights), torch_device)
            elif name == "csim":
                from animator_cli.face import load_analyzer

                try:
                    analyzer = load_analyzer(weights, device)
                except WeightsError as exc:
                    self.skipped[name] = str(exc)
                    continue
                self.csim = CsimScorer(analyzer, load_image(reference) if reference else None)
                self.frame[name] = self.csim


def evaluate(generated: Path, truth: Path, metric_names: list[str], weights: WeightsHome,
             reference: Path | None = None, device: str | None = None,
             progress: Callable[[str, int], None] | None = None) -> EvaluationResult:
    """Compute the requested metrics; metrics whose weights or packages are missing are skipped."""
    cases, warnings = find_cases(Path(generated), Path(truth))
    scorers = _Scorers(metric_names, weights, reference, device)
    rows: list[dict[str, Any]] = []
    case_summaries: list[dict[str, Any]] = []
    gen_clips: list[np.ndarray] = []
    truth_clips: list[np.ndarray] = []
    for name, gen_path, truth_path in cases:
        clips = (ClipCollector(scorers.i3d), ClipCollector(scorers.i3d)) if scorers.i3d else None
        case_rows = _evaluate_case(name, gen_path, truth_path, scorers.frame, clips, warnings, progress)
        if clips:
            for collector, store in zip(clips, (gen_clips, truth_clips), strict=True):
                collector.finish()
                store.extend(collector.features)
        rows += case_rows
        case_summaries.append({"case": name, "frames": len(case_rows),
                               **{k: _mean([r[k] for r in case_rows]) for k in scorers.frame}})

    summary = {k: _mean([r[k] for r in rows]) for k in scorers.frame}
    skipped = dict(scorers.skipped)
    if scorers.i3d is not None:
        if min(len(gen_clips), len(truth_clips)) < 2:
            skipped["fvd"] = (f"FVD needs at least 2 clips of {CLIP_FRAMES} frames per side "
                              f"(got {len(gen_clips)} and {len(truth_clips)})")
        else:
            summary["fvd"] = fvd(gen_clips, truth_clips)
    if scorers.csim is not None and scorers.csim.missing:
        warnings.append(f"csim: no face found in {scorers.csim.missing} frame(s); they are left out")
    for warning in warnings:
        log.warning(warning)
    return EvaluationResult(summary, case_summaries, rows, skipped, warnings)


def _evaluate_case(name: str, gen_path: Path, truth_path: Path, frame_metrics: dict[str, FrameMetric],
                   clips: tuple[ClipCollector, ClipCollector] | None, warnings: list[str],
                   progress: Callable[[str, int], None] | None) -> list[dict[str, Any]]:
    gen_frames, truth_frames = iter_frames(gen_path), iter_frames(truth_path)
    rows: list[dict[str, Any]] = []
    while True:
        gen, real = next(gen_frames, None), next(truth_frames, None)
        if gen is None or real is None:
            break
        if real.shape[:2] != gen.shape[:2]:
            if not rows:
                warnings.append(f"{name}: ground truth {real.shape[1]}x{real.shape[0]} resized to the generated "
                                f"{gen.shape[1]}x{gen.shape[0]}")
            real = m.resize_like(real, gen.shape[:2])
        rows.append({"case": name, "frame": len(rows), **{k: f(gen, real) for k, f in frame_metrics.items()}})
        if clips:
            clips[0].add(gen)
            clips[1].add(real)
        if progress:
            progress(name, len(rows))
    if gen is not None or real is not None:
        longer = "generated video" if gen is not None else "ground truth"
        warnings.append(f"{name}: the {longer} is longer; compared the first {len(rows)} frames")
    return rows


def json_safe(value: Any) -> Any:
    """inf → "inf" (JSON has no infinity), NaN → None, recursively."""
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value
