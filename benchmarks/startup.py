"""Wall time of commands that must answer at once: help pages, a usage error, a missing input, a cached rerun.

Run: .venv/bin/python benchmarks/startup.py [--repeat N]
Each command runs as `python -m animator_cli ...` in a fresh process (what a user waits for, interpreter start-up
included); the median of N runs is printed. Targets: ≤ 1 s for help and errors, ≤ 2 s for a fully cached `animate`
rerun (the pose, face and generation stages all cached, on the make-tiny weights home, 64×64, 8 frames).
The machine's load average is printed too, since other processes skew the figures.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def animator(*args: str | Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "animator_cli", *map(str, args)], capture_output=True, text=True,
                          env=env)


def median_seconds(args: list[str | Path], env: dict[str, str], repeat: int, expect: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        done = animator(*args, env=env)
        times.append(time.perf_counter() - start)
        if done.returncode != expect:
            raise SystemExit(f"`animator {' '.join(map(str, args))}` exited {done.returncode}: {done.stderr}")
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "tests"))
    from media import clip_with_audio

    insightface = importlib.util.find_spec("insightface")
    reference = Path(insightface.submodule_search_locations[0]) / "data" / "images" / "t1.jpg"
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        env = {**os.environ, "PYTHONPATH": str(REPO), "ANIMATOR_CACHE": str(tmp_path / "cache")}
        home, clip, out = tmp_path / "home", clip_with_audio(tmp_path / "drive.mp4", 8, 10), tmp_path / "out.mp4"
        animator("weights", "make-tiny", home, env=env).check_returncode()
        rerun = ["--weights", home, "animate", reference, clip, "-o", out, "--width", "64", "--height", "64",
                 "--steps", "1"]
        animator(*rerun, env=env).check_returncode()  # fills the pose, face and generation caches
        cases = [
            ("animator --help", ["--help"], 0),
            ("animator generate --help", ["generate", "--help"], 0),
            ("usage error (animator gen)", ["gen"], 2),
            ("missing input (generate nope.png ...)", ["generate", "nope.png", "nope", "-o", "o.mp4"], 2),
            ("cached animate rerun", rerun, 0),
        ]
        print(f"load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; median of {args.repeat} runs")
        for label, command, expect in cases:
            print(f"{label:42s} {median_seconds(command, env, args.repeat, expect):6.2f} s")


if __name__ == "__main__":
    main()
