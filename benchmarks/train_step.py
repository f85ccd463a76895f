"""Training throughput of the tiny preset on the CPU: optimizer steps per second and peak memory.

Builds a tiny weights home and a 3-clip dataset (``prepare_dataset`` on generated videos) in a temporary folder,
then runs ``train`` with presets/tiny-cpu.yaml. Steps per second exclude the first step (allocations, first
calls); peak memory is the process's maximum resident set size (CPU) or ``max_memory_allocated`` (CUDA).

Run: .venv/bin/python benchmarks/train_step.py [--steps 12] [--frames 4] [--batch-size 2] [--size 64]
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import skimage
import torch
from PIL import Image

from animator_cli.training.config import load_config
from animator_cli.training.prepare import prepare_dataset
from animator_cli.training.trainer import train
from animator_cli.video import write_video
from animator_cli.weights.tiny import make_tiny


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--size", type=int, default=64, help="training width = height (multiple of 64)")
    args = parser.parse_args()
    logging.getLogger("animator").setLevel(logging.WARNING)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        home = make_tiny(root / "home", seed=0)
        photo = np.asarray(Image.open(Path(skimage.__file__).parent / "data" / "astronaut.png").convert("RGB")
                           .resize((args.size, args.size)))
        (root / "videos").mkdir()
        for k in range(3):
            write_video(root / "videos" / f"clip{k}.mp4",
                        [np.roll(photo, 2 * i * (k + 1), axis=1) for i in range(args.frames * 2 + 2)], fps=8)
        started = time.perf_counter()
        prepare_dataset(root / "videos", root / "data", home)
        prepare_s = time.perf_counter() - started

        config = load_config("presets/tiny-cpu.yaml", [
            f"data.path={root / 'data'}", f"output={root / 'run'}", f"max_steps={args.steps}",
            f"checkpoint_every={args.steps}", f"data.num_frames={args.frames}", f"data.batch_size={args.batch_size}",
            f"data.buckets=[{{width: {args.size}, height: {args.size}, list_file: video_rec_path.txt}}]"])
        stamps: list[float] = []
        started = time.perf_counter()
        result = train(config, home, on_step=lambda step, loss: stamps.append(time.perf_counter()))
        total_s = time.perf_counter() - started
        metrics = [json.loads(line) for line in (root / "run" / "metrics.jsonl").read_text().splitlines()]

    steady = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else float("nan")
    if torch.cuda.is_available():
        peak = f"{torch.cuda.max_memory_allocated() / 2**20:.0f} MiB (CUDA allocated)"
    else:
        peak = f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB (max RSS)"
    print(f"tiny preset, {args.size}x{args.size}, {args.frames} frames, batch {args.batch_size}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"prepare-data (3 clips of {args.frames * 2 + 2} frames): {prepare_s:.1f} s")
    print(f"steps/s (steps 2..{result.step}): {steady:.2f}  ({1 / steady:.2f} s/step)")
    print(f"whole train() call incl. model load and final checkpoint: {total_s:.1f} s")
    print(f"loss first/last step: {metrics[0]['loss']:.4f} / {metrics[-1]['loss']:.4f}")
    print(f"peak memory: {peak}")


if __name__ == "__main__":
    main()
