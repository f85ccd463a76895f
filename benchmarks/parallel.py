"""One video on 1 and on N CPU processes (window-parallel sampling, gloo), and the plan for N GPUs.

    .venv/bin/python benchmarks/parallel.py                  # 64 frames of the tiny home, 1 then 2 processes
    .venv/bin/python benchmarks/parallel.py --nproc 2 --only # one launch only (for timing whole processes)
    .venv/bin/python benchmarks/parallel.py --plan           # the paper plan for 576×1024 only

Each run is a fresh launch (`torchrun --standalone` for N > 1), one thread per process, of `generate` on the tiny
weights home (written once to --home): its wall time includes start-up and model loading, and rank 0 also reports
the denoising loop's time (from the first to the last step's progress callback), which is what the ranks share.

The plan: a step costs ceil(W / N) windows' UNet time on N ranks instead of W, plus the step's collective: every
rank sends its windows' (cond, uncond) fp32 v-predictions to every other rank (an all_gather), blended in window
order so the result equals one process bit for bit.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from animator_cli.sampling.windows import window_indices  # noqa: E402

LINKS_GB_S = {"NVLink (H100 SXM, ~400 GB/s)": 400, "PCIe 4.0 x16 (~25 GB/s)": 25,
              "InfiniBand 200 Gb/s (~23 GB/s)": 23, "Ethernet 25 Gb/s (~3 GB/s)": 3}


def plan(frames: int, width: int, height: int, tile: int = 16, overlap: int = 4, step_s: float = 1.0) -> None:
    """Expected speed-up of the denoising loop for N GPUs and the per-step collective's cost on common links."""
    windows = len(window_indices(frames, tile, overlap))
    window_bytes = 2 * tile * 4 * (height // 8) * (width // 8) * 4  # (cond, uncond) × frames × 4 × h × w × fp32
    print(f"{frames} frames at {width}×{height}: {windows} windows; one window's v-predictions "
          f"{window_bytes / 2**20:.2f} MiB; assuming {step_s:g} s of UNet time per window and step")
    print("| N | windows per rank | ideal speed-up | bytes received per rank and step | "
          + " | ".join(f"collective on {link}" for link in LINKS_GB_S) + " |")
    print("|---|---|---|---|" + "---|" * len(LINKS_GB_S))
    for n in (1, 2, 4, 8):
        per_rank = math.ceil(windows / n)
        received = (n - 1) * per_rank * window_bytes  # all_gather of equal, padded shares
        costs = [received / (speed * 1e9) for speed in LINKS_GB_S.values()]
        cells = [f"{1e3 * c:.2f} ms → ×{windows * step_s / (per_rank * step_s + c):.2f}" for c in costs]
        print(f"| {n} | {per_rank} | ×{windows / per_rank:.2f} | {received / 2**20:.1f} MiB | "
              + " | ".join(cells) + " |")


def prepare(home: Path, frames: int) -> tuple[Path, Path]:
    """The tiny weights home and a pose folder of ``frames`` skeletons (made once)."""
    import numpy as np

    from animator_cli.video import write_frame
    from animator_cli.weights.tiny import make_tiny

    if not (home / "models").is_dir():
        make_tiny(home, seed=0)
    poses = home / f"poses-{frames}"
    if not poses.is_dir():
        rng = np.random.default_rng(0)
        for i in range(frames):
            write_frame(poses, i, rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    return home, poses


def worker(home: Path, poses: Path, steps: int) -> None:
    """One rank: `generate` with the loop timed; rank 0 prints a JSON line."""
    import skimage
    import torch

    from animator_cli.cache import StageCache
    from animator_cli.distributed import session
    from animator_cli.generate import generate
    from animator_cli.options import Runtime, generate_options
    from animator_cli.weights.home import WeightsHome

    torch.set_num_threads(1)
    marks: list[float] = []
    with tempfile.TemporaryDirectory() as scratch, session(Runtime(device="cpu")) as (runtime, ranks):
        cache = StageCache(Path(scratch) / "cache")  # each rank its own: no run is served from the cache
        generate(Path(skimage.__file__).parent / "data" / "astronaut.png", poses, Path(scratch) / "out.mp4",
                 generate_options(width=64, height=64, steps=steps, allow_no_face=True), runtime,
                 weights=WeightsHome(home), cache=cache, ranks=ranks,
                 progress=lambda done, total: marks.append(time.perf_counter()))
        if ranks.is_main:
            print(json.dumps({"loop_s": marks[-1] - marks[0], "steps_timed": len(marks) - 1}))


def launch(nproc: int, home: Path, poses: Path, steps: int) -> dict[str, float]:
    """One fresh launch; its wall time and rank 0's loop time."""
    script = [str(Path(__file__).resolve()), "--worker", "--home", str(home), "--steps", str(steps),
              "--poses", str(poses)]
    command = [sys.executable, *script] if nproc == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc), *script]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"launch with {nproc} processes failed:\n{done.stderr[-3000:]}")
    return {"wall_s": wall, **json.loads(done.stdout.strip().splitlines()[-1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, default=Path(tempfile.gettempdir()) / "animator-parallel-bench")
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--only", action="store_true", help="launch with --nproc processes only")
    parser.add_argument("--plan", action="store_true", help="print the plan for 576×1024 only")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--poses", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.home, args.poses, args.steps)
    if not args.plan:
        home, poses = prepare(args.home, args.frames)
        counts = [args.nproc] if args.only else [1, args.nproc]
        runs = {n: launch(n, home, poses, args.steps) for n in counts}
        windows = len(window_indices(args.frames, 16, 4))
        print(f"tiny home, {args.frames} frames 64×64 ({windows} windows), {args.steps} steps, 1 thread/process")
        for n, run in runs.items():
            speed = "" if n == 1 or 1 not in runs else (
                f", speed-up ×{runs[1]['wall_s'] / run['wall_s']:.2f} wall, "
                f"×{runs[1]['loop_s'] / run['loop_s']:.2f} loop (ideal ×{windows / math.ceil(windows / n):.2f})")
            print(f"{n} process(es): wall {run['wall_s']:.1f} s, loop {run['loop_s']:.2f} s "
                  f"over {run['steps_timed']} steps{speed}")
    plan(64, 576, 1024)


if __name__ == "__main__":
    main()
