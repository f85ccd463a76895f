"""Timing and peak-memory helpers shared by the benchmark scripts.

Peak memory: on CUDA the allocator's ``max_memory_allocated`` since the last `reset_peak`; on the CPU the
process's resident high-water mark (VmHWM), which `reset_peak` sets back to the current RSS through
/proc/self/clear_refs (Linux), so consecutive measurements in one process do not hide each other.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
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


class Marks:
    """Points in time on the device's own clock, taken without waiting for the device: CUDA events (read after one
    synchronisation at the end, so the host queues work exactly as the product does), or perf_counter on the CPU."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.points: list = []

    def mark(self) -> int:
        """Record a point after the work queued so far; returns its index."""
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.points.append(event)
        else:
            self.points.append(time.perf_counter())
        return len(self.points) - 1

    def seconds(self, first: int, last: int) -> float:
        """Seconds between two points (after the device finished them: `sync` first on CUDA)."""
        a, b = self.points[first], self.points[last]
        return a.elapsed_time(b) / 1000 if self.cuda else b - a


@contextlib.contextmanager
def patched(owner: object, name: str, wrap: Callable[[Callable], Callable]) -> Iterator[None]:
    """``owner.name`` replaced by ``wrap(owner.name)`` for the block, then restored as it was (an instance
    attribute another wrapper set stays), so wrappers nest."""
    had = name in vars(owner)
    previous = getattr(owner, name)
    setattr(owner, name, wrap(previous))
    try:
        yield
    finally:
        if had:
            setattr(owner, name, previous)
        else:
            delattr(owner, name)


class UNetTimer:
    """Marks the start and end of every call of ``forward`` (the UNet's) on ``marks`` (no synchronisation)."""

    def __init__(self, forward: Callable, marks: Marks) -> None:
        self.forward, self.marks, self.calls = forward, marks, []

    def __call__(self, *args, **kwargs):
        start = self.marks.mark()
        out = self.forward(*args, **kwargs)
        self.calls.append((start, self.marks.mark()))
        return out


@dataclass(frozen=True)
class GenerationTiming:
    """One pipeline call: whole call (host clock, up to the last frame on the host), the denoising loop from the end
    of step 1 to the end of step N on the device clock (so the first step's allocations and tuning, the encoders
    and decoding are left out), and the UNet calls within that loop."""

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

    @property
    def outside_loop_s(self) -> float:
        """The call's time outside its steps 2..N: encoders, the first step, decoding, host work."""
        return self.total_s - self.loop_s


def random_inputs(frames: int, height: int, width: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A random reference (H×W×3), pose frames (F×H×W×3) and identity embedding (512,)."""
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 255, (height, width, 3), dtype=np.uint8),
            rng.integers(0, 255, (frames, height, width, 3), dtype=np.uint8),
            rng.standard_normal(512).astype(np.float32))


def time_generation(pipeline: AnimationPipeline, frames: int, height: int, width: int, options: SamplingOptions,
                    refine: Refiner | None = None, seed: int = 0) -> GenerationTiming:
    """Time one pipeline call on random inputs (at least 2 steps: the loop is timed from step 1's end). The steps and
    UNet calls are marked on the device clock without synchronising, so the host runs ahead as in the product."""
    reference, poses, identity = random_inputs(frames, height, width, seed)
    marks = Marks(pipeline.device)
    steps: list[int] = []
    timers: list[UNetTimer] = []

    def timed(forward: Callable) -> UNetTimer:
        timers.append(UNetTimer(forward, marks))
        return timers[0]

    with patched(pipeline.models.unet, "forward", timed):
        sync(pipeline.device)
        start = time.perf_counter()
        pipeline(reference, poses, identity, options, torch.Generator(pipeline.device).manual_seed(0),
                 lambda step, total: steps.append(marks.mark()), refine=refine)
        sync(pipeline.device)
        total = time.perf_counter() - start
    timer = timers[0]
    inside = [(begin, end) for begin, end in timer.calls if begin > steps[0]]
    return GenerationTiming(total, len(steps) - 1, marks.seconds(steps[0], steps[-1]),
                            sum(marks.seconds(begin, end) for begin, end in inside), len(inside))
