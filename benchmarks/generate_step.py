"""Seconds per denoising step, peak memory and the share of loop time spent outside UNet calls.

    .venv/bin/python benchmarks/generate_step.py                 # tiny models on CPU + one full-size UNet call
    .venv/bin/python benchmarks/generate_step.py --skip-full     # tiny models only
    .venv/bin/python benchmarks/generate_step.py --device cuda   # the same on a GPU (full-size UNet in fp16)

Part 1 runs the real AnimationPipeline on a tiny weights home (written to a temporary folder) and times every
UNet call with a wrapper around ``unet.forward``; the loop time is measured between the first and the last
step's progress callbacks, so encoders and decoding are excluded. Part 2 builds the SVD-xt-sized UNet (1.55 B
parameters, random init) and times one UNet call at 512×512 for 16 frames: a full 25-step run at that size
would take hours on a small CPU.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from animator_cli.generate import load_pipeline  # noqa: E402
from animator_cli.options import Runtime, SamplingOptions  # noqa: E402
from animator_cli.sampling.pipeline import AnimationPipeline  # noqa: E402


class UNetTimer:
    """Wraps ``unet.forward`` and records the wall time of every call (synchronising CUDA)."""

    def __init__(self, unet: torch.nn.Module, device: torch.device) -> None:
        self.unet, self.device, self.calls = unet, device, []
        self.forward = unet.forward
        unet.forward = self

    def __call__(self, *args, **kwargs):
        _sync(self.device)
        start = time.perf_counter()
        out = self.forward(*args, **kwargs)
        _sync(self.device)
        self.calls.append((start, time.perf_counter()))
        return out

    def remove(self) -> None:
        del self.unet.forward


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_memory(device: torch.device) -> str:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB → GiB
    if device.type == "cuda":
        return f"GPU peak {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB, host RSS peak {rss:.2f} GiB"
    return f"RSS peak {rss:.2f} GiB"


def time_pipeline(pipeline: AnimationPipeline, frames: int, size: int, steps: int, label: str) -> None:
    rng = np.random.default_rng(0)
    reference = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    poses = rng.integers(0, 255, (frames, size, size, 3), dtype=np.uint8)
    identity = rng.standard_normal(512).astype(np.float32)
    marks: list[float] = []

    def progress(step: int, total: int) -> None:
        _sync(pipeline.device)
        marks.append(time.perf_counter())

    timer = UNetTimer(pipeline.models.unet, pipeline.device)
    try:
        start = time.perf_counter()
        pipeline(reference, poses, identity, SamplingOptions(steps=steps), torch.Generator(pipeline.device)
                 .manual_seed(0), progress)
        total = time.perf_counter() - start
    finally:
        timer.remove()
    loop = marks[-1] - marks[0]  # steps 2..N
    unet = sum(end - begin for begin, end in timer.calls if begin >= marks[0])
    per_step = loop / (len(marks) - 1)
    print(f"[{label}] {frames} frames {size}x{size}, {steps} steps, {len(timer.calls) // steps} UNet call(s)/step: "
          f"{per_step:.3f} s/step, UNet {unet / (len(marks) - 1):.3f} s/step, outside UNet "
          f"{100 * (1 - unet / loop):.2f}% of the loop; whole call {total:.1f} s; {_peak_memory(pipeline.device)}")


def full_size_unet_call(device: torch.device, dtype: torch.dtype, frames: int, size: int) -> None:
    """One UNet call of the SVD-xt-sized AnimatorUNet (random weights), conditional branch, batch 1."""
    from animator_cli.models.unet import SVD_XT_UNET_CONFIG, AnimatorUNet

    start = time.perf_counter()
    unet = AnimatorUNet.from_config(SVD_XT_UNET_CONFIG)
    unet.install_processors()
    unet.to(device, dtype).eval().requires_grad_(False)
    params = sum(p.numel() for p in unet.parameters())
    print(f"[full UNet] built {params / 1e9:.3f} B parameters in {time.perf_counter() - start:.1f} s")
    h = w = size // 8
    sample = torch.randn(1, frames, 8, h, w, device=device, dtype=dtype)
    context = torch.randn(1, 5, 1024, device=device, dtype=dtype)
    time_ids = torch.tensor([[6.0, 127.0, 0.02]], device=device, dtype=dtype)
    pose = torch.randn(frames, 320, h, w, device=device, dtype=dtype)
    with torch.no_grad():
        _sync(device)
        start = time.perf_counter()
        out = unet(sample, 0.25 * np.log(700.0), context, time_ids, pose_latents=pose)
        _sync(device)
    seconds = time.perf_counter() - start
    print(f"[full UNet] one call, 1×{frames} frames at {size}x{size} ({dtype}): {seconds:.1f} s, output "
          f"{tuple(out.shape)}; a 25-step run with batched CFG makes 25 calls of twice that batch per window, "
          f"about {2 * 25 * seconds / 60:.0f} min per 16-frame window here; {_peak_memory(device)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--tiny-steps", type=int, default=6)
    parser.add_argument("--skip-full", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.set_grad_enabled(False)

    from animator_cli.weights.tiny import svd

    with tempfile.TemporaryDirectory() as folder:
        svd.write(Path(folder), seed=0)
        from animator_cli.weights.home import WeightsHome

        pipeline = load_pipeline(WeightsHome(Path(folder)), Runtime(device=args.device, dtype="fp32"))
        blank = np.zeros((args.frames, 64, 64, 3), np.uint8)
        pipeline(blank[0], blank, np.zeros(512, np.float32), SamplingOptions(steps=1),
                 torch.Generator(device).manual_seed(0))  # warm-up: oneDNN builds its kernels per shape
        time_pipeline(pipeline, args.frames, 64, args.tiny_steps, "tiny")
        time_pipeline(pipeline, 40, 64, args.tiny_steps, "tiny, 3 windows")
    if args.skip_full:
        return
    full_size_unet_call(device, torch.float16 if device.type == "cuda" else torch.float32, args.frames, 512)


if __name__ == "__main__":
    main()
