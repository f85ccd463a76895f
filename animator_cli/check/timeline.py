"""Identity timeline: where in a rendered video the face stops looking like the reference.

Per frame, the cosine between the ArcFace embedding of the largest face and the reference's (the CSIM of
`animator evaluate`, same detector and embedding: evaluation/csim.py), NaN where no face is found. Written as a CSV
(frame, time, cosine, window) and a PNG plot with the sampler's temporal windows shaded and, when the video was
rendered with --face-opt, the HJB steps named, and with --identity-guard the windows it repaired hatched (its
record goes beside them as guard.json); the summary names the worst WORST_SECONDS-long stretch.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from animator_cli.errors import InputError
from animator_cli.fileio import atomic_path, ensure_writable_dir
from animator_cli.video import iter_frames, load_image
from animator_cli.weights.home import WeightsHome

CSV_FILE = "identity.csv"
GUARD_FILE = "guard.json"
PLOT_FILE = "identity.png"
WORST_SECONDS = 1.0


@dataclass(frozen=True)
class IdentityTimeline:
    cosines: np.ndarray  # (F,) float64, NaN where no face was found
    fps: float
    windows: tuple[tuple[int, ...], ...] = ()  # the sampler's temporal windows (frame indices), if known
    hjb_steps: tuple[int, int] | None = None  # refined denoising steps START, END (inclusive), if --face-opt
    repaired: tuple[int, ...] = ()  # the windows the identity guard rendered again and replaced

    @property
    def missing(self) -> int:
        return int(np.isnan(self.cosines).sum())

    def worst_range(self) -> tuple[int, int, float] | None:
        """(first, last, mean cosine) of the WORST_SECONDS-long stretch with the lowest mean over its faces, among
        those where more than half the frames show a face (any, if none does)."""
        span = max(1, min(len(self.cosines), round(WORST_SECONDS * self.fps)))
        found = np.isfinite(self.cosines)
        counts = np.convolve(found, np.ones(span, int), "valid")
        needed = span // 2 + 1 if (counts >= span // 2 + 1).any() else 1
        best: tuple[int, int, float] | None = None
        for start in np.flatnonzero(counts >= needed).tolist():
            mean = float(np.nanmean(self.cosines[start:start + span]))
            if best is None or mean < best[2]:
                best = (start, start + span - 1, mean)
        return best

    def summary(self) -> str:
        """One line: mean identity, the worst frame range, frames without a face."""
        found = np.isfinite(self.cosines)
        if not found.any():
            return f"identity: no face found in any of {len(self.cosines)} frames"
        first, last, mean = self.worst_range()  # type: ignore[misc]
        text = (f"identity: mean cosine {np.nanmean(self.cosines):.3f} over {int(found.sum())} of "
                f"{len(self.cosines)} frames; worst frames {first}-{last} (mean {mean:.3f})")
        return text + (f"; no face in {self.missing} frames" if self.missing else "")

    def window_of(self) -> list[str]:
        """Per frame, the windows (indices, '+'-joined) whose real frames include it (frame 0 is every window's
        anchor, so it is listed under the first)."""
        owners: list[list[str]] = [[] for _ in self.cosines]
        for number, window in enumerate(self.windows):
            for frame in window[1:] if number else window:
                if frame < len(owners):
                    owners[frame].append(str(number))
        return ["+".join(o) for o in owners]

    def write_csv(self, path: Path) -> Path:
        """frame, time_s, cosine ('nan' where no face), window; written atomically."""
        windows = self.window_of()
        with atomic_path(Path(path)) as tmp, open(tmp, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["frame", "time_s", "cosine", "window"])
            for frame, value in enumerate(self.cosines):
                writer.writerow([frame, f"{frame / self.fps:.4f}", "nan" if math.isnan(value) else f"{value:.6f}",
                                 windows[frame]])
        return Path(path)

    def write_plot(self, path: Path) -> Path:
        """The curve as a PNG (matplotlib, headless): windows shaded, the worst stretch in red, HJB steps named."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            from matplotlib import pyplot as plt
        except ImportError as exc:
            raise InputError("the identity plot needs matplotlib", 'pip install matplotlib') from exc
        frames = np.arange(len(self.cosines))
        fig, ax = plt.subplots(figsize=(10, 3.2), dpi=100)
        try:
            for number, window in enumerate(self.windows):
                real = window[1:] or window
                repaired = number in self.repaired
                ax.axvspan(min(real) - 0.5, max(real) + 0.5, facecolor=("#d8e6f3", "#eef3d8")[number % 2], zorder=0,
                           hatch="//" if repaired else None, edgecolor="#8aa6c1" if repaired else "none")
            worst = self.worst_range()
            if worst:
                ax.axvspan(worst[0] - 0.5, worst[1] + 0.5, color="#f4b6b6", alpha=0.6, zorder=1,
                           label=f"worst frames {worst[0]}-{worst[1]}")
            ax.plot(frames, self.cosines, marker=".", color="#1f4e79", zorder=2, label="cosine to the reference")
            hidden = frames[np.isnan(self.cosines)]
            if len(hidden):
                ax.plot(hidden, np.zeros(len(hidden)), "x", color="#888888", zorder=2, label="no face")
            title = f"identity timeline: {len(self.windows)} window(s) shaded"
            if self.hjb_steps:
                title += f"; HJB face optimisation at denoising steps {self.hjb_steps[0]}-{self.hjb_steps[1]}"
            if self.repaired:
                title += f"; identity guard repaired window(s) {', '.join(map(str, self.repaired))} (hatched)"
            ax.set(title=title, xlabel="frame", ylabel="cosine", ylim=(min(-0.05, np.nanmin(
                np.r_[self.cosines, 0.0])), 1.0), xlim=(-0.5, max(len(frames), 1) - 0.5))
            ax.legend(loc="lower left", fontsize=8)
            fig.tight_layout()
            with atomic_path(Path(path)) as tmp:
                fig.savefig(tmp, format="png")
        finally:
            plt.close(fig)
        return Path(path)

    def write(self, folder: Path) -> list[Path]:
        """identity.csv and identity.png in ``folder``."""
        ensure_writable_dir(Path(folder))
        return [self.write_csv(Path(folder) / CSV_FILE), self.write_plot(Path(folder) / PLOT_FILE)]


class IdentityScorer:
    """Per-frame cosine of the largest face's ArcFace embedding with ``reference``'s face, NaN where no face is
    found: the timeline's measure, also the identity guard's (`animator_cli.guard`), so both score alike. The
    analyzer is loaded once per weights home and kept (`animator_cli.face.load_analyzer`)."""

    def __init__(self, reference: Path, *, weights: WeightsHome, device: str | None = None) -> None:
        from animator_cli.evaluation.csim import CsimScorer
        from animator_cli.face import load_analyzer

        self.scorer = CsimScorer(load_analyzer(weights, device), load_image(Path(reference)))

    def frame(self, frame: np.ndarray) -> float:
        from animator_cli.evaluation.csim import cosine

        embedding = self.scorer.embedding(frame)
        return math.nan if embedding is None else cosine(embedding, self.scorer.reference)

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """The cosines (n,) float64 of frames (n, H, W, 3) uint8 RGB."""
        return np.array([self.frame(frame) for frame in frames], np.float64)


def identity_timeline(video: Path, reference: Path, *, weights: WeightsHome, device: str | None = None,
                      fps: float | None = None, tile: int | None = None, overlap: int | None = None,
                      hjb_steps: tuple[int, int] | None = None, repaired: tuple[int, ...] = (),
                      progress: Callable[[int], None] | None = None) -> IdentityTimeline:
    """The per-frame identity of ``video`` (file or frame folder) against ``reference``'s face.

    ``tile``/``overlap``: the sampler's windowing, to mark the windows (defaults: the sampler's), ``repaired`` the
    windows the identity guard replaced; ``fps``: of a
    frame folder (default the video's, else 25). The reference must show a face (InputError otherwise).
    """
    from animator_cli.options import SamplingOptions
    from animator_cli.sampling.windows import window_indices
    from animator_cli.video import probe

    video = Path(video)
    if not video.exists():
        raise InputError(f"video {video} does not exist")
    defaults = SamplingOptions()
    scorer = IdentityScorer(Path(reference), weights=weights, device=device)
    values = []
    for index, frame in enumerate(iter_frames(video)):
        values.append(scorer.frame(frame))
        if progress:
            progress(index + 1)
    if not values:
        raise InputError(f"{video} has no frames")
    rate = fps or (probe(video).fps if video.is_file() else 25.0)
    windows = window_indices(len(values), tile or defaults.tile, overlap or defaults.overlap)
    return IdentityTimeline(np.array(values, np.float64), rate, tuple(tuple(w) for w in windows), hjb_steps,
                            tuple(repaired))


def write_identity_report(folder: Path, video: Path, reference: Path, *, weights: WeightsHome,
                          device: str | None = None, fps: float | None = None, tile: int | None = None,
                          overlap: int | None = None, hjb_steps: tuple[int, int] | None = None,
                          repaired: tuple[int, ...] = (), guard: dict | None = None) -> IdentityTimeline:
    """`--report DIR` of generate/animate: the rendered video's timeline written to ``folder`` (with the identity
    guard's record ``guard`` as guard.json), summary logged."""
    timeline = identity_timeline(video, reference, weights=weights, device=device, fps=fps, tile=tile,
                                 overlap=overlap, hjb_steps=hjb_steps, repaired=repaired)
    timeline.write(folder)
    if guard is not None:
        with atomic_path(Path(folder) / GUARD_FILE) as tmp:
            tmp.write_text(json.dumps(guard, indent=1))
    logging.getLogger("animator").info("%s (%s)", timeline.summary(), Path(folder) / PLOT_FILE)
    return timeline
