"""`--compile` on the CPU: per-step time with and without regional torch.compile, compile time apart.

    .venv/bin/python benchmarks/compile_cpu.py DIR [--frames 40] [--size 128] [--steps 25] [--threads N]

Writes a tiny weights home, DIR/poses (FRAMES skeleton frames) and DIR/ref.png, then runs the real
AnimationPipeline twice in this process (eager, then compiled) and prints the first step's time (the compiled
run compiles there), the median of the later steps and their ratio. It also prints the CLI command for DIR, whose
whole-process wall time with and without ``--compile`` is the issue's figure (time a warm-up run of each first:
it fills inductor's cache, `animator_cli.models.compile.compile_cache_dir`).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from animator_cli.generate import load_pipeline  # noqa: E402
from animator_cli.options import Runtime, SamplingOptions  # noqa: E402
from animator_cli.weights.home import WeightsHome  # noqa: E402
from animator_cli.weights.tiny import make_tiny  # noqa: E402


def skeleton_frames(count: int, size: int = 128) -> list[np.ndarray]:
    """Stick figures whose arm swings, drawn on black like DWPose skeletons."""
    frames = []
    for i in range(count):
        image = np.zeros((size, size, 3), np.uint8)
        cv2.line(image, (size // 2, size // 5), (size // 2, size * 3 // 5), (255, 0, 85), 3)
        end = (int(size / 2 + size / 4 * np.cos(i * 0.4)), int(size / 3 + size / 4 * np.sin(i * 0.4)))
        cv2.line(image, (size // 2, size // 3), end, (0, 255, 0), 3)
        frames.append(image)
    return frames


def step_times(home: WeightsHome, compiled: bool, frames: int, size: int, steps: int) -> list[float]:
    """Seconds of every denoising step of one run (encoders and decoding excluded)."""
    pipeline = load_pipeline(home, Runtime(device="cpu", compile=compiled))
    rng = np.random.default_rng(0)
    reference = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    poses = np.stack(skeleton_frames(frames, size))
    marks = [time.perf_counter()]
    pipeline(reference, poses, rng.standard_normal(512).astype(np.float32), SamplingOptions(steps=steps),
             torch.Generator().manual_seed(0), progress=lambda done, total: marks.append(time.perf_counter()))
    return list(np.diff(marks))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=Path)
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.dir.mkdir(parents=True, exist_ok=True)
    home = WeightsHome(args.dir / "home") if (args.dir / "home").exists() else make_tiny(args.dir / "home", seed=0)
    (args.dir / "poses").mkdir(exist_ok=True)
    for i, frame in enumerate(skeleton_frames(args.frames, args.size)):
        cv2.imwrite(str(args.dir / "poses" / f"frame_{i}.png"), frame)
    cv2.imwrite(str(args.dir / "ref.png"), np.full((args.size, args.size, 3), 128, np.uint8))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.frames} frames, "
          f"{args.size}x{args.size}, {args.steps} steps")
    results = {}
    for compiled in (False, True):
        times = step_times(home, compiled, args.frames, args.size, args.steps)
        results[compiled] = statistics.median(times[1:])
        print(f"{'compiled' if compiled else 'eager   '}: first step {times[0]:.2f} s, "
              f"later steps median {results[compiled]:.3f} s, all steps {sum(times):.1f} s", flush=True)
    print(f"later steps compiled/eager: {results[True] / results[False]:.2f}")
    cli = (f"animator --weights {args.dir / 'home'} --cache-dir {args.dir / 'cache'} generate {args.dir / 'ref.png'} "
           f"{args.dir / 'poses'} -o {args.dir / 'out.mp4'} --width {args.size} --height {args.size} "
           f"--steps {args.steps} --force")
    print(f"whole process (after a warm-up run of each): /usr/bin/time -v {cli} [--compile]")


if __name__ == "__main__":
    main()
