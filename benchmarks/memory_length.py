"""Peak resident memory of `animator animate` against the driving video's length (tiny weights home, CPU).

Run: .venv/bin/python benchmarks/memory_length.py [--frames 60 600 3000] [--size 512] [--steps 1]
Each length is a fresh `python -m animator_cli --device cpu animate REF CLIP -o OUT --steps 1 --width 512
--height 512` process with an empty stage cache (so pose extraction, the face stage, the alignment check and the
render all run); its peak RSS is the ru_maxrss that wait4 reports for it. The driving clip is a 256×256 moving
gradient (the same content at every length), the reference insightface's t1.jpg. Target (issue 23): the peak at
3,000 frames at most 1.3× the peak at 60.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from animator_cli.video import write_video
from animator_cli.weights.tiny import make_tiny

CLIP_SIZE = 256


def gradient_clip(path: Path, frames: int, fps: int = 25) -> Path:
    """A ``CLIP_SIZE``² H.264 clip of a moving colour gradient, written frame by frame."""
    yy, xx = np.mgrid[0:CLIP_SIZE, 0:CLIP_SIZE]
    write_video(path, (np.stack([(xx * 3 + i * 9) % 256, (yy * 3) % 256, np.full_like(xx, 90)], -1).astype(np.uint8)
                       for i in range(frames)), fps=fps)
    return path


def peak_rss(args: list[str], log: Path) -> tuple[float, float]:
    """(peak RSS in GiB, wall seconds) of one child process running ``args``; its output goes to ``log``."""
    started = time.perf_counter()
    with open(log, "w") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise SystemExit(f"{' '.join(args)} failed ({process.returncode}); see {log}:\n{log.read_text()[-2000:]}")
    return usage.ru_maxrss / 2**20, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[60, 600, 3000])
    parser.add_argument("--size", type=int, default=512, help="output width and height")
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--keep", type=Path, help="keep the clips, outputs and logs in this folder")
    args = parser.parse_args()
    import insightface

    reference = Path(insightface.__file__).parent / "data" / "images" / "t1.jpg"
    with tempfile.TemporaryDirectory() as scratch:
        work = args.keep or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        home = make_tiny(work / "home", seed=0)
        print(f"cpu cores: {os.cpu_count()}, load average before: {os.getloadavg()[0]:.2f}")
        print(f"| frames | peak RSS (GiB) | vs {args.frames[0]} frames | wall (s) |\n|---|---|---|---|")
        first = None
        for frames in args.frames:
            clip = gradient_clip(work / f"clip{frames}.mp4", frames)
            command = [sys.executable, "-m", "animator_cli", "--weights", str(home.root), "--cache-dir",
                       str(work / f"cache{frames}"), "--device", "cpu", "animate", str(reference), str(clip), "-o",
                       str(work / f"out{frames}.mp4"), "--steps", str(args.steps), "--width", str(args.size),
                       "--height", str(args.size)]
            peak, wall = peak_rss(command, work / f"log{frames}.txt")
            first = first or peak
            print(f"| {frames} | {peak:.2f} | {peak / first:.2f}× | {wall:.0f} |", flush=True)


if __name__ == "__main__":
    main()
