"""Seconds `check_alignment` takes on a 512×512 driving clip (MediaPipe), cold and with the pose cache warm.

Run: .venv/bin/python benchmarks/check.py [--frames 300]
The clip is skimage's astronaut drifting sideways; the reference is the astronaut too. "cold": the pose stage runs
(as the first `animate` would anyway); "warm": its cache entry exists (a second check, or a check after
`extract-pose`/`animate` with the same options), so only the reference and 16 sampled frames are detected again.
The acceptance target is the warm figure: ≤ 20 s for 300 frames on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import skimage

from animator_cli.cache import StageCache
from animator_cli.check import check_alignment
from animator_cli.video import load_image, write_video
from animator_cli.weights.home import WeightsHome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    args = parser.parse_args()
    reference = Path(skimage.__file__).parent / "data" / "astronaut.png"
    astronaut = load_image(reference)
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip.mp4"
        write_video(clip, [np.roll(astronaut, (i * 3) % 24 - 12, axis=1) for i in range(args.frames)], fps=25)
        print(f"cpu cores: {os.cpu_count()}, load average before: {os.getloadavg()[0]:.2f}")
        weights, cache = WeightsHome(Path(tmp) / "no-weights"), StageCache(Path(tmp) / "cache")
        for label in ("cold", "warm"):
            start = time.perf_counter()
            report = check_alignment(reference, clip, weights=weights, cache=cache, preview=Path(tmp) / "p.png")
            print(f"check {label} ({args.frames} frames 512x512, preview included): "
                  f"{time.perf_counter() - start:.2f} s, {len(report.findings)} findings")
        print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
