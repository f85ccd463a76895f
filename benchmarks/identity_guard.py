"""What the identity guard costs (issue 21), and the docs' before/after picture.

    .venv/bin/python benchmarks/identity_guard.py DIR [--frames 40] [--size 64] [--steps 25] [--runs 3]
        [--cases clean,hjb,id_scale,face_opt] [--held-budget BYTES] [--plot docs/identity_guard.png]

Writes a tiny weights home, DIR/poses (FRAMES skeleton frames with keypoints.npz, so HJB is a lever) and renders
the clip through the Python API (models loaded once, the stage cache off so every call renders), in alternating
pairs against the same render without the guard, RUNS pairs per case; prints per case the median wall time of the
call (render, guard, encoding) and the median of the pairwise ratios:

- clean: ``--identity-guard`` with a threshold no window falls below: the guard only scores (target ≤ 1.15×);
- one window forced low, fixed by its first attempt: an injected scorer (mechanism; the tiny ArcFace's scores are
  arbitrary) scores window 1 low in the render and its attempts high (target ≤ 1.6×); the first lever is HJB on
  that window (``hjb``), or the ID scale: the same skeletons without face boxes (``id_scale``), or ``face_opt`` on
  in both renders (``face_opt``).

``--plot``: a real tiny-home run (the real scorer) with the threshold at the best window's score, so the other
windows are rendered again; the identity timeline of the video before and after the guard, in one PNG.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_golden_latents import _moving_face  # noqa: E402

from animator_cli import Animator  # noqa: E402
from animator_cli.check import timeline  # noqa: E402
from animator_cli.weights.tiny import make_tiny  # noqa: E402


class ForcedLow:
    """Mechanism scorer: the render (its first ``frames`` frames, scored in the decoder's chunks) scores 0.8 but
    window 1's own frames (16-24) 0.2; attempts score 0.9."""

    def __init__(self, frames: int) -> None:
        self.frames, self.seen = frames, 0

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        if self.seen >= self.frames:
            return np.full(len(frames), 0.9)
        numbers = np.arange(self.seen, self.seen + len(frames))
        self.seen += len(frames)
        return np.where((numbers >= 16) & (numbers <= 24), 0.2, 0.8)


def timed(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def compare(animator: Animator, reference: Path, poses: Path, runs: int, base: dict, guarded: dict,
            scorer=None, frames: int = 40) -> tuple[float, float, float, dict]:
    """Median seconds without and with the guard, the median pairwise ratio, and the last guarded record."""
    plain, guard, ratios, record = [], [], [], {}
    original = timeline.IdentityScorer
    for _ in range(runs):
        plain.append(timed(lambda: animator.generate(reference, poses, **base)))
        if scorer is not None:
            timeline.IdentityScorer = lambda *a, **k: scorer(frames)
        try:
            guard.append(timed(lambda: record.update(animator.generate(reference, poses, **base, **guarded)
                                                     .result.identity_guard)))
        finally:
            timeline.IdentityScorer = original
        ratios.append(guard[-1] / plain[-1])
    return statistics.median(plain), statistics.median(guard), statistics.median(ratios), record


def plot(animator: Animator, reference: Path, poses: Path, base: dict, path: Path) -> None:
    """The identity timeline before and after a real guard run, windows shaded, repaired ones hatched."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    weights = animator.weights
    before = animator.generate(reference, poses, identity=True, **base)
    scores = [np.median(before.identity.cosines[[f for f in w if f or i == 0]])
              for i, w in enumerate(before.identity.windows)]
    threshold = float(max(scores))
    after = animator.generate(reference, poses, identity=True, identity_guard=threshold, **base)
    guard = after.result.identity_guard
    later = timeline.identity_timeline(after.path, reference, weights=weights, repaired=after.identity.repaired)
    fig, ax = plt.subplots(figsize=(10, 3.4), dpi=100)
    for number, window in enumerate(later.windows):
        real = window[1:] if number else window
        repaired = number in later.repaired
        ax.axvspan(min(real) - 0.5, max(real) + 0.5, facecolor=("#d8e6f3", "#eef3d8")[number % 2], zorder=0,
                   hatch="//" if repaired else None, edgecolor="#8aa6c1" if repaired else "none",
                   label="repaired window" if repaired and number == min(later.repaired) else None)
    frames = np.arange(len(later.cosines))
    ax.plot(frames, before.identity.cosines, marker=".", color="#aa4444", label="before the guard")
    ax.plot(frames, later.cosines, marker=".", color="#1f4e79", label="after the guard")
    ax.axhline(threshold, color="#555555", linestyle="--", label=f"threshold {threshold:.3f}")
    kept = ", ".join(f"window {w['window']}: {w['kept']}" for w in guard["windows"] if w["attempts"])
    ax.set(title=f"identity guard on the tiny home (arbitrary ArcFace): {kept}", xlabel="frame",
           ylabel="cosine to the reference")
    ax.title.set_fontsize(9)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    print(f"wrote {path}: {guard['rendered_again']} window(s) rendered again, {guard['repaired']} repaired")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=Path)
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cases", default="clean,hjb,id_scale,face_opt", help="which cases, comma-separated")
    parser.add_argument("--plot", type=Path)
    parser.add_argument("--held-budget", type=int, help="bytes of decoded frames held for the repairs (default "
                        "guard.frames.HELD_FRAMES_BUDGET; 0: every video decoded again, as a long one is)")
    args = parser.parse_args()
    if args.held_budget is not None:
        from animator_cli.guard import frames

        frames.HELD_FRAMES_BUDGET = args.held_budget
    torch.set_num_threads(args.threads)
    args.dir.mkdir(parents=True, exist_ok=True)
    home = make_tiny(args.dir / "home", seed=0) if not (args.dir / "home").is_dir() else None
    poses = args.dir / "poses"
    if not poses.is_dir():
        _moving_face(poses, args.frames)
    import skimage

    reference = Path(skimage.__file__).parent / "data" / "astronaut.png"
    animator = Animator(home.root if home else args.dir / "home", device="cpu", cache=False)
    base = {"width": args.size, "height": args.size, "steps": args.steps, "seed": 3}
    if args.plot:
        plot(animator, reference, poses, base, args.plot)
        return
    animator.generate(reference, poses, **base)  # models loaded before the clock runs
    print(f"{args.frames} frames, {args.size}×{args.size}, {args.steps} steps, tiny home, CPU, "
          f"{args.threads} thread(s), {args.runs} alternating pairs; medians")
    print("| case | without s | with s | ratio (median of pairs) | windows rendered again | kept |")
    print("|---|---|---|---|---|---|")
    boxless = args.dir / "poses-no-boxes"  # the same skeletons without keypoints.npz: no HJB lever
    if not boxless.is_dir():
        shutil.copytree(poses, boxless, ignore=shutil.ignore_patterns("keypoints.npz"))
    low = {"identity_guard": 0.6}
    cases = {"clean": ("clean (nothing below the threshold)", poses, {}, {"identity_guard": -1.0}, None),
             "hjb": ("window 1 forced low, first lever HJB (face-local)", poses, {}, low, ForcedLow),
             "id_scale": ("window 1 forced low, no face boxes, first lever ID scale", boxless, {}, low, ForcedLow),
             "face_opt": ("window 1 forced low, --face-opt on in both, first lever ID scale", poses,
                          {"face_opt": True}, low, ForcedLow)}
    for name, folder, extra, guarded, scorer in (cases[key] for key in args.cases.split(",")):
        plain, guard, ratio, record = compare(animator, reference, folder, args.runs, {**base, **extra}, guarded,
                                              scorer, args.frames)
        kept = "; ".join(f"{w['window']}: {w['kept']}" for w in record["windows"] if w["attempts"]) or "-"
        print(f"| {name} | {plain:.2f} | {guard:.2f} | {ratio:.2f} | {record['rendered_again']} | {kept} |",
              flush=True)


if __name__ == "__main__":
    main()
