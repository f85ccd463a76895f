"""Frames per second of `animator evaluate` for L1, PSNR and SSIM on CPU at 512×512.

Two figures: the metrics alone on decoded frames, and the whole evaluation of two PNG frame folders
(decode + resize check + metrics), which is what a user waits for.

Run: .venv/bin/python benchmarks/evaluate_throughput.py [--frames N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import skimage

from animator_cli.evaluation import evaluate
from animator_cli.evaluation import metrics as m
from animator_cli.video import load_image, write_frame
from animator_cli.weights.home import WeightsHome

SIZE = 512


def _clips(count: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    base = cv2.resize(load_image(Path(skimage.__file__).parent / "data" / "astronaut.png"), (SIZE, SIZE))
    rng = np.random.default_rng(0)
    truth = [np.roll(base, 4 * i, axis=1) for i in range(count)]
    generated = [np.clip(f + rng.normal(0, 6, f.shape), 0, 255).astype(np.uint8) for f in truth]
    return generated, truth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=48)
    args = parser.parse_args()
    generated, truth = _clips(args.frames)

    for name in ("l1", "psnr", "ssim"):
        metric = getattr(m, name)
        start = time.perf_counter()
        for gen, real in zip(generated, truth, strict=True):
            metric(gen, real)
        elapsed = time.perf_counter() - start
        print(f"{name:>5} alone: {args.frames / elapsed:8.1f} frames/s ({1000 * elapsed / args.frames:.2f} ms/frame)")

    with tempfile.TemporaryDirectory() as tmp:
        gen_dir, truth_dir = Path(tmp) / "gen", Path(tmp) / "gt"
        for i, (gen, real) in enumerate(zip(generated, truth, strict=True)):
            write_frame(gen_dir, i, gen)
            write_frame(truth_dir, i, real)
        start = time.perf_counter()
        result = evaluate(gen_dir, truth_dir, ["l1", "psnr", "ssim"], WeightsHome(Path(tmp) / "no-weights"))
        elapsed = time.perf_counter() - start
    print(f"evaluate l1,psnr,ssim on PNG folders ({SIZE}x{SIZE}, {args.frames} frames): "
          f"{args.frames / elapsed:.1f} frames/s; PSNR {result.metrics['psnr']:.2f} dB")


if __name__ == "__main__":
    main()
