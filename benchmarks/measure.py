"""Timing and peak-memory helpers shared by the benchmark scripts.

Peak memory: on CUDA the allocator's ``max_memory_allocated`` since the last `reset_peak`; on the CPU the
process's resident high-water mark (VmHWM), which `reset_peak` sets back to the current RSS through
/proc/self/clear_refs (Linux), so consecutive measurements in one process do not hide each other.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from animator_cli.options import SamplingOptions
from animator_cli.sampling.pipeline import AnimationPipeline, Refiner


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak(device: torch.device) -> float:
    """Start a peak-memory measurement; returns the current use in GiB (the base the peak is compared with)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device) / 2**30
    Path("/proc/self/clear_refs").write_text("5")
    return _status_kib("VmRSS") / 2**20


def peak_gib(device: torch.device) -> float:
    """The peak since `reset_peak`, in GiB: allocated device memory on CUDA, resident memory on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return _status_kib("VmHWM") / 2**20


class UNetTimer:
    """Wraps ``unet.forward`` and records the wall time of every call (synchronising CUDA)."""

    def __init__(self, unet: torch.nn.Module, device: torch.device) -> None:
        self.unet, self.device, self.calls = unet, device, []
        self.forward = unet.forward
        unet.forward = self

    def __call__(self, *args, **kwargs):
        sync(self.device)
        start = time.perf_counter()
        out = self.forward(*args, **kwargs)
        sync(self.device)
        self.calls.append((start, time.perf_counter()))
        return out

    def remove(self) -> None:
        del self.unet.forward


@dataclass(frozen=True)
class GenerationTiming:
    """One pipeline call: whole call, the denoising loop from the end of step 1 to the end of step N (so the
    first call's allocations, encoders and decoding are left out), and the UNet calls within that loop."""

    total_s: float
    loop_steps: int
    loop_s: float
    unet_s: float
    unet_calls: int

    @property
    def per_step_s(self) -> float:
        return self.loop_s / self.loop_steps

    @property
    def unet_per_step_s(self) -> float:
        return self.unet_s / self.loop_steps


def random_inputs(frames: int, height: int, width: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A random reference (H×W×3), pose frames (F×H×W×3) and identity embedding (512,)."""
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 255, (height, width, 3), dtype=np.uint8),
            rng.integers(0, 255, (frames, height, width, 3), dtype=np.uint8),
            rng.standard_normal(512).astype(np.float32))


def time_generation(pipeline: AnimationPipeline, frames: int, height: int, width: int, options: SamplingOptions,
                    refine: Refiner | None = None) -> GenerationTiming:
    """Time one pipeline call on random inputs (at least 2 steps: the loop is timed from step 1's end)."""
    reference, poses, identity = random_inputs(frames, height, width)
    marks: list[float] = []

    def progress(step: int, total: int) -> None:
        sync(pipeline.device)
        marks.append(time.perf_counter())

    timer = UNetTimer(pipeline.models.unet, pipeline.device)
    try:
        start = time.perf_counter()
        pipeline(reference, poses, identity, options, torch.Generator(pipeline.device).manual_seed(0), progress,
                 refine=refine)
        sync(pipeline.device)
        total = time.perf_counter() - start
    finally:
        timer.remove()
    inside = [(begin, end) for begin, end in timer.calls if begin >= marks[0]]
    return GenerationTiming(total, len(marks) - 1, marks[-1] - marks[0], sum(end - begin for begin, end in inside),
                            len(inside))
