"""The profile and memory parts of the GPU suite: where a render's device time and memory go.

* ``profile``: `torch.profiler` over a fresh process's first whole call (cold) and over one warm UNet call: time
  per pipeline region (host wall and device time), the top 15 kernels by device time, and device time by kind of
  kernel (GEMM, attention, convolution, normalisation, elementwise and copies). Written to ``profile.md``.
* ``memory``: the peak allocated memory of each region of a cold call and, on CUDA, the largest single
  allocations with the Python frames that asked for them (the allocator's history). Written to ``memory.md``.

Regions are marked by wrapping the models' entry points (each encoder, the UNet, VAE encode and decode) for the
duration of the part; the pipeline itself is unchanged.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from benchmarks.gpu_parts import GiB, Job, Rows, capture_unet_inputs, peaks, pipeline_for, reset_peaks, sampling_for
from benchmarks.measure import patched, sync, time_generation

# Kinds of kernels, first match wins (cuDNN's convolution kernels are implicit GEMMs: matched as convolution first).
KINDS = (("attention", r"flash|fmha|attention|sdpa|softmax"),
         ("convolution", r"conv|fprop|dgrad|wgrad|implicit_gemm|winograd|im2col|col2im|vol2col"),
         ("GEMM", r"gemm|cutlass|xmma|cublas|matmul|nvjet|\bmm\b|addmm|bmm|linear|sm90_"),
         ("normalisation", r"norm|welford|moments"),
         ("elementwise and copies", r"elementwise|vectorized|copy|cat|fill|memcpy|memset|index|unrolled|reduce|"
                                    r"add|mul|silu|gelu|sigmoid|clamp|where|pow|exp|div|sub"))


def kind(name: str) -> str:
    lowered = name.lower()
    return next((label for label, pattern in KINDS if re.search(pattern, lowered)), "other")


@contextlib.contextmanager
def regions(pipeline, enter: Callable[[str], object], leave: Callable[[str, object], None]) -> Iterator[None]:
    """Call ``enter(name)`` before and ``leave(name, token)`` after every call of the models' entry points."""
    models = pipeline.models
    points = [(models.image_encoder, "forward", "CLIP image encoder"), (models.face_encoder, "forward", "face encoder"),
              (models.pose_net, "forward", "PoseNet"), (models.unet, "forward", "UNet"),
              (models.vae, "encode", "VAE encode"), (models.vae, "decode", "VAE decode")]

    def marked(name: str) -> Callable[[Callable], Callable]:
        def wrap(original: Callable) -> Callable:
            def call(*args, **kwargs):
                token = enter(name)
                try:
                    return original(*args, **kwargs)
                finally:
                    leave(name, token)
            return call
        return wrap

    with contextlib.ExitStack() as stack:
        for module, method, name in points:
            stack.enter_context(patched(module, method, marked(name)))
        yield


def _kernels(prof, cuda: bool) -> list[tuple[str, float]]:
    """(name, device seconds) of every kernel (CUDA), or every operator's own CPU time (CPU)."""
    out = []
    for event in prof.events():
        if cuda and event.device_type == torch.autograd.DeviceType.CUDA:
            out.append((event.name, event.time_range.elapsed_us() / 1e6))
        elif not cuda and event.device_type == torch.autograd.DeviceType.CPU and not event.cpu_children:
            out.append((event.name, event.self_cpu_time_total / 1e6))
    return out


def _kernel_tables(kernels: list[tuple[str, float]], title: str) -> list[str]:
    total = sum(seconds for _, seconds in kernels) or 1e-12
    by_name: dict[str, list[float]] = {}
    for name, seconds in kernels:
        by_name.setdefault(name, []).append(seconds)
    lines = [f"### {title}: top 15 kernels by device time (of {total:.3f} s, {len(kernels)} launches)", "",
             "| kernel | kind | launches | seconds | share |", "|---|---|---|---|---|"]
    for name, times in sorted(by_name.items(), key=lambda item: -sum(item[1]))[:15]:
        short = name if len(name) <= 90 else name[:87] + "..."
        lines.append(f"| `{short.replace('|', '/')}` | {kind(name)} | {len(times)} | {sum(times):.4f} | "
                     f"{sum(times) / total:.1%} |")
    by_kind: dict[str, float] = {}
    for name, seconds in kernels:
        by_kind[kind(name)] = by_kind.get(kind(name), 0.0) + seconds
    lines += ["", f"### {title}: device time by kind", "", "| kind | seconds | share |", "|---|---|---|"]
    lines += [f"| {label} | {seconds:.4f} | {seconds / total:.1%} |"
              for label, seconds in sorted(by_kind.items(), key=lambda item: -item[1])]
    return lines + [""]


def profile_part(job: Job, rows: Rows) -> None:
    from torch.profiler import ProfilerActivity, profile, record_function

    cuda = job.device.type == "cuda"
    pipeline = pipeline_for(job)
    sync(job.device)
    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]
    host: dict[str, float] = {}
    calls: dict[str, int] = {}

    def enter(name: str):
        scope = record_function(name)
        scope.__enter__()
        return scope, time.perf_counter()

    def leave(name: str, token) -> None:
        scope, started = token
        scope.__exit__(None, None, None)
        host[name] = host.get(name, 0.0) + time.perf_counter() - started
        calls[name] = calls.get(name, 0) + 1

    with profile(activities=activities) as cold_prof, regions(pipeline, enter, leave):
        started = time.perf_counter()
        time_generation(pipeline, job.frames, job.height, job.width, sampling_for(job))
        sync(job.device)
        cold_s = time.perf_counter() - started
    device = {e.key: e.device_time_total / 1e6 for e in cold_prof.key_averages() if e.key in host}
    cold_kernels = _kernels(cold_prof, cuda)
    lines = [f"# Profile: {job.setting} ({'CUDA' if cuda else 'CPU'}, variant {job.variant})", "",
             f"## Cold whole call: {cold_s:.2f} s under the profiler (a fresh process's first call)", "",
             "Host seconds: wall time inside the region's calls on the host; device seconds: kernel time launched "
             "from it. The rest of the call is the pipeline's own work between them (noise, Euler steps, blending, "
             "moving frames to the host).", "",
             "| region | calls | host s | device s |", "|---|---|---|---|"]
    lines += [f"| {name} | {calls[name]} | {host[name]:.3f} | {device.get(name, 0.0):.3f} |"
              for name in sorted(host, key=lambda n: -host[n])]
    lines += [f"| (outside the regions) | | {cold_s - sum(host.values()):.3f} | "
              f"{sum(s for _, s in cold_kernels) - sum(device.values()):.3f} |", ""]
    lines += _kernel_tables(cold_kernels, "Cold whole call")

    inputs = capture_unet_inputs(pipeline, job)
    unet = pipeline.models.unet
    with torch.no_grad():
        unet(*inputs[:4], pose_latents=inputs[4])
        sync(job.device)
        with profile(activities=activities) as warm_prof:
            started = time.perf_counter()
            unet(*inputs[:4], pose_latents=inputs[4])
            sync(job.device)
            warm_s = time.perf_counter() - started
    warm_kernels = _kernels(warm_prof, cuda)
    lines += [f"## One warm UNet call (CFG batch 2 × {job.frames} frames): {warm_s * 1000:.1f} ms wall, "
              f"{sum(s for _, s in warm_kernels) * 1000:.1f} ms of kernels", ""]
    lines += _kernel_tables(warm_kernels, "Warm UNet call")
    path = rows.path.with_name("profile.md")
    path.write_text("\n".join(lines) + "\n")
    top = max(host, key=lambda n: host[n]) if host else "-"
    rows.add(cold_s=cold_s, note=f"under the profiler; largest region {top} {host.get(top, 0):.2f} s host; warm "
                                 f"UNet call {warm_s * 1000:.0f} ms, kernels "
                                 f"{sum(s for _, s in warm_kernels) * 1000:.0f} ms; tables in {path.name}")


def memory_part(job: Job, rows: Rows) -> None:
    cuda = job.device.type == "cuda"
    pipeline = pipeline_for(job)
    sync(job.device)
    region_peak: dict[str, float] = {}

    def enter(name: str):
        sync(job.device)
        reset_peaks(job.device)
        return None

    def leave(name: str, token) -> None:
        sync(job.device)
        region_peak[name] = max(region_peak.get(name, 0.0), peaks(job.device)["peak_alloc_gib"])

    if cuda:
        torch.cuda.memory._record_memory_history(max_entries=500_000)
    reset_peaks(job.device)
    with regions(pipeline, enter, leave):
        time_generation(pipeline, job.frames, job.height, job.width, sampling_for(job))
    allocations = []
    if cuda:
        snapshot = torch.cuda.memory._snapshot()
        torch.cuda.memory._record_memory_history(enabled=None)
        trace = [e for device_trace in snapshot["device_traces"] for e in device_trace if e["action"] == "alloc"]
        allocations = sorted(trace, key=lambda e: -e["size"])[:8]
    lines = [f"# Memory: {job.setting} ({'CUDA' if cuda else 'CPU'}, variant {job.variant})", "",
             "Peak allocated memory while each region runs (GiB; the models' weights and everything alive "
             "included):", "", "| region | peak GiB |", "|---|---|"]
    lines += [f"| {name} | {gib:.2f} |" for name, gib in sorted(region_peak.items(), key=lambda item: -item[1])]
    if allocations:
        lines += ["", "Largest single allocations of the call and the frames that asked for them:", ""]
        for event in allocations:
            frames = [f"{Path(f['filename']).name}:{f['line']} {f['name']}" for f in event.get("frames", [])
                      if f["filename"].endswith(".py")][:6]
            lines.append(f"- **{event['size'] / GiB:.2f} GiB**: {' ← '.join(frames) or '(no Python frame)'}")
    path = rows.path.with_name("memory.md")
    path.write_text("\n".join(lines) + "\n")
    biggest = allocations[0] if allocations else None
    where = ""
    if biggest:
        frames = [f"{Path(f['filename']).name}:{f['line']} {f['name']}" for f in biggest.get("frames", [])
                  if f["filename"].endswith(".py")][:2]
        where = f"; largest allocation {biggest['size'] / GiB:.2f} GiB at {' ← '.join(frames)}"
    top = max(region_peak, key=lambda n: region_peak[n]) if region_peak else "-"
    rows.add(peak_alloc_gib=max(region_peak.values(), default=0.0),
             note=f"highest region {top} {region_peak.get(top, 0):.2f} GiB{where}; tables in {path.name}")
