"""What checking a stage-cache entry costs on a cached rerun: size + SHA-256 of every file of the entry.

Builds entries the size of a real run (a 10 s, 25 fps clip): a pose entry of 250 skeleton PNGs at 512×512 and a
generate entry holding the encoded 512×512 video, then times `CacheEntry.done` (the whole check) on each.

Run: .venv/bin/python benchmarks/cache_verify.py [--frames N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from animator_cli.cache import StageCache
from animator_cli.video import write_video

SIZE = 512


def _median_ms(check, runs: int = 7) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        assert check()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=250)
    frames = parser.parse_args().frames
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        source = root / "input.bin"
        source.write_bytes(b"driving video")
        cache = StageCache(root / "cache")
        pose = cache.entry("pose", [source], {})
        with pose.writing() as folder:
            for i in range(frames):
                canvas = np.zeros((SIZE, SIZE, 3), np.uint8)
                points = rng.integers(0, SIZE, (18, 2))
                for a, b in zip(points[:-1], points[1:], strict=True):
                    cv2.line(canvas, tuple(map(int, a)), tuple(map(int, b)), (0, 255, 85), 4)
                cv2.imwrite(str(folder / f"frame_{i}.png"), canvas)
        video = cache.entry("generate", [source], {})
        with video.writing() as folder:
            base = rng.integers(0, 256, (SIZE, SIZE, 3), np.uint8)
            write_video(folder / "video.mp4", (np.roll(base, i, 1) for i in range(frames)), 25.0)
        for name, entry in (("pose", pose), ("generate", video)):
            size = sum(p.stat().st_size for p in entry.path.iterdir())
            print(f"{name}: {len(list(entry.path.iterdir())) - 1} files, {size / 2**20:.1f} MiB, "
                  f"check {_median_ms(lambda e=entry: e.done):.1f} ms (median of 7)")


if __name__ == "__main__":
    main()
