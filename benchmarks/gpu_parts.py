"""The parts of the GPU suite, each run in a process of its own by `benchmarks/gpu_suite.py`.

    python benchmarks/gpu_parts.py JOB_JSON ROWS_FILE

A job names a part, a variant (`Runtime` and sampling overrides), a size and a dtype. The process builds its own
random models (benchmarks/random_models.py), so no part sees another's models, allocator or tuned kernels; it
appends every row to ROWS_FILE (one JSON object per line, flushed) the moment it is measured, so a part killed at
its time limit keeps what it measured. Parts that write a Markdown page (profile, memory) put it beside ROWS_FILE.

Every pipeline comes from `load_pipeline(models=...)`, so runtime options apply exactly as in the CLI.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

_started = time.perf_counter()
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from animator_cli.generate import load_pipeline  # noqa: E402
from animator_cli.options import FaceOptOptions, Runtime, SamplingOptions  # noqa: E402
from animator_cli.sampling.pipeline import AnimationPipeline  # noqa: E402
from animator_cli.weights.home import WeightsHome  # noqa: E402
from benchmarks.measure import GenerationTiming, patched, random_inputs, sync, time_generation  # noqa: E402
from benchmarks.random_models import build_arcface, build_models, build_unet  # noqa: E402

IMPORT_S = time.perf_counter() - _started
GiB = 2**30
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@dataclass(frozen=True)
class Job:
    """What one process measures (JSON on the command line)."""

    part: str
    variant: str = "default"
    width: int = 512
    height: int = 512
    dtype: str = "bf16"
    frames: int = 16
    steps: int = 25
    runtime: dict = field(default_factory=dict)  # Runtime overrides
    sampling: dict = field(default_factory=dict)  # SamplingOptions overrides (schedule, reuse_features, steps)
    tiny: bool = False
    peak_tflops: float | None = None

    @property
    def device(self) -> torch.device:
        return torch.device("cpu" if self.tiny else "cuda")

    @property
    def setting(self) -> str:
        return f"{self.frames} frames × {self.steps} steps, {self.width}×{self.height}, {self.dtype}"


class Rows:
    """Appends each measured row to the rows file at once (flushed and synced: a kill loses nothing written)."""

    def __init__(self, path: Path, job: Job) -> None:
        self.path, self.job = path, job

    def add(self, **cells: object) -> None:
        row = {"part": self.job.part, "variant": self.job.variant, "setting": self.job.setting, **cells}
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())


def peaks(device: torch.device) -> dict[str, float]:
    """Peak allocated and reserved device memory (GiB) since the last reset; the resident peak on the CPU."""
    if device.type == "cuda":
        return {"peak_alloc_gib": torch.cuda.max_memory_allocated(device) / GiB,
                "peak_reserved_gib": torch.cuda.max_memory_reserved(device) / GiB}
    from benchmarks.measure import peak_gib

    return {"peak_alloc_gib": peak_gib(device)}


def reset_peaks(device: torch.device) -> None:
    from benchmarks.measure import reset_peak

    reset_peak(device)


def pipeline_for(job: Job, models=None) -> AnimationPipeline:
    """`load_pipeline` around random models in the job's dtype, with the job's runtime options."""
    runtime = Runtime(device=str(job.device), dtype=job.dtype, **job.runtime)
    runtime.validate()
    models = models or build_models(job.device, DTYPES[job.dtype], tiny=job.tiny)
    return load_pipeline(WeightsHome(Path("/nonexistent")), runtime, models=models)


def sampling_for(job: Job, steps: int | None = None) -> SamplingOptions:
    """The CLI's defaults (16-frame windows, overlap 4) with the job's sampling overrides."""
    return SamplingOptions(**{"steps": job.steps, "tile": min(16, job.frames), "overlap": min(4, job.frames - 1),
                              **job.sampling, **({"steps": steps} if steps else {})})


# ---------------------------------------------------------------------------------------------------------- FLOPs

def unet_call(job: Job, device: torch.device, dtype: torch.dtype, batch: int = 2) -> tuple[torch.nn.Module, tuple]:
    """A UNet and the inputs of one CFG-batched call (batch 2 × frames) on ``device`` (meta: no memory)."""
    unet = build_unet(device, dtype, tiny=job.tiny)
    h, w, frames = job.height // 8, job.width // 8, job.frames
    context, channels = unet.config.cross_attention_dim, unet.config.block_out_channels[0]
    make = lambda *shape: torch.randn(*shape, device=device, dtype=dtype)  # noqa: E731
    return unet, (make(batch, frames, 8, h, w), torch.tensor(1.0, device=device), make(batch, 5, context),
                  torch.zeros(batch, 3, device=device, dtype=dtype), make(batch * frames, channels, h, w))


def count_unet(job: Job) -> tuple[float, list[tuple]]:
    """TFLOP of one CFG-batched UNet call and the (q, k) shapes of its attention calls, counted on the meta device
    (no memory, no device time)."""
    from torch.overrides import TorchFunctionMode

    from animator_cli.sampling.flops import count_flops

    shapes: list[tuple] = []

    class Shapes(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if func is torch.nn.functional.scaled_dot_product_attention:
                shapes.append((tuple(args[0].shape), tuple(args[1].shape)))
            return func(*args, **(kwargs or {}))

    unet, (x, t, context, time_ids, pose) = unet_call(job, torch.device("meta"), DTYPES[job.dtype])
    with torch.no_grad(), Shapes():
        _, flops = count_flops(lambda: unet(x, t, context, time_ids, pose_latents=pose))
    return flops / 1e12, shapes


def unet_tflop(job: Job, rows_dir: Path) -> float:
    """`count_unet`'s TFLOP, remembered per size in the run folder so each size is counted once per suite run."""
    cache = rows_dir / "unet-tflop.json"
    known = json.loads(cache.read_text()) if cache.exists() else {}
    key = f"{job.width}x{job.height}x{job.frames}{'-tiny' if job.tiny else ''}"
    if key not in known:
        known[key] = count_unet(job)[0]
        cache.write_text(json.dumps(known))
    return known[key]


# ---------------------------------------------------------------------------------------------------------- parts

def generate_part(job: Job, rows: Rows) -> None:
    """A fresh process's first call (cold: what a CLI user pays), then a second (warm)."""
    started = time.perf_counter()
    pipeline = pipeline_for(job)
    sync(job.device)
    build_s = time.perf_counter() - started
    tflop = unet_tflop(job, rows.path.parent)
    reset_peaks(job.device)
    cold = time_generation(pipeline, job.frames, job.height, job.width, sampling_for(job))
    cold_peaks = peaks(job.device)
    reset_peaks(job.device)
    warm = time_generation(pipeline, job.frames, job.height, job.width, sampling_for(job))
    rows.add(**generation_cells(job, cold, warm, tflop), **peaks(job.device),
             cold_peak_alloc_gib=cold_peaks["peak_alloc_gib"],
             note=f"import {IMPORT_S:.1f} s, models built and placed in {build_s:.1f} s; cold call peak "
                  f"{cold_peaks['peak_alloc_gib']:.2f} GiB allocated")


def generation_cells(job: Job, cold: GenerationTiming | None, warm: GenerationTiming, tflop: float) -> dict:
    """The table's timing cells of a cold and a warm call (TFLOP/s only where every step runs the whole UNet:
    with shallow steps the loop's work is not calls × one call's FLOPs)."""
    whole = job.sampling.get("reuse_features", 1) == 1
    tflops = tflop * warm.unet_calls / warm.loop_s if warm.loop_s > 0 and whole else None
    return {"cold_s": cold.total_s if cold else None, "warm_s": warm.total_s, "step_s": warm.per_step_s,
            "outside_s": warm.outside_loop_s, "unet_share": warm.unet_s / warm.loop_s if warm.loop_s else None,
            "tflops": tflops, "peak_share": tflops / job.peak_tflops if tflops and job.peak_tflops else None}


def compile_part(job: Job, rows: Rows) -> None:
    """`--compile`: the first call compiles (cold caches) or loads the kernels (warm caches, a second process); the
    second call is the compiled speed."""
    started = time.perf_counter()
    pipeline = pipeline_for(job)
    sync(job.device)
    build_s = time.perf_counter() - started
    tflop = unet_tflop(job, rows.path.parent)
    cache = Path(os.environ.get("TORCHINDUCTOR_CACHE_DIR", "?"))
    warm_cache = cache.is_dir() and any(cache.iterdir())
    reset_peaks(job.device)
    cold = time_generation(pipeline, job.frames, job.height, job.width, sampling_for(job))
    reset_peaks(job.device)
    warm = time_generation(pipeline, job.frames, job.height, job.width, sampling_for(job))
    rows.add(**generation_cells(job, cold, warm, tflop), **peaks(job.device),
             note=f"{'warm' if warm_cache else 'cold'} inductor caches: the first call "
                  f"{'loads' if warm_cache else 'compiles'} the kernels; import {IMPORT_S:.1f} s, models "
                  f"{build_s:.1f} s")


def window_batch_part(job: Job, rows: Rows) -> None:
    """The variant's runtime (e.g. window_batch None = automatic) on a long video."""
    generate_part(job, rows)


def fp8_part(job: Job, rows: Rows) -> None:
    """`--fp8` against bf16 on the same random weights: speed, and the relative L2 deviation of one UNet output
    and of the final latents."""
    if job.device.type != "cuda":
        rows.add(note="not run: FP8 matrix products need a CUDA GPU of compute capability 8.9 or newer")
        return
    models = build_models(job.device, torch.bfloat16, tiny=job.tiny)
    pipeline = pipeline_for(dataclasses.replace(job, runtime={}), models)
    inputs = capture_unet_inputs(pipeline, job)
    latents_bf16 = final_latents(pipeline, job)
    with torch.no_grad():
        out_bf16 = models.unet(*inputs[:4], pose_latents=inputs[4]).float()
    pipeline = pipeline_for(job, models)  # quantises the same UNet in place
    with torch.no_grad():
        out_fp8 = models.unet(*inputs[:4], pose_latents=inputs[4]).float()
    latents_fp8 = final_latents(pipeline, job)
    unet_dev = relative_l2(out_fp8, out_bf16)
    latent_dev = relative_l2(latents_fp8, latents_bf16)
    tflop = unet_tflop(job, rows.path.parent)
    reset_peaks(job.device)
    cold = time_generation(pipeline, job.frames, job.height, job.width, sampling_for(job))
    warm = time_generation(pipeline, job.frames, job.height, job.width, sampling_for(job))
    rows.add(**generation_cells(job, cold, warm, tflop), **peaks(job.device),
             note=f"relative L2 vs bf16: one UNet output {unet_dev:.3g}, final latents {latent_dev:.3g}; cold = "
                  "third call (the first two measured the deviation); TFLOP/s are bf16-equivalent")


def relative_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30))


def capture_unet_inputs(pipeline: AnimationPipeline, job: Job) -> tuple:
    """The arguments of the first UNet call of a 2-step render (sample, timestep, context, time ids, pose)."""
    captured: list[tuple] = []

    def spy(forward: Callable) -> Callable:
        def call(sample, timestep, context, time_ids, pose_latents=None):
            if not captured:
                captured.append((sample, timestep, context, time_ids, pose_latents))
            return forward(sample, timestep, context, time_ids, pose_latents=pose_latents)
        return call

    with patched(pipeline.models.unet, "forward", spy):
        time_generation(pipeline, job.frames, job.height, job.width, sampling_for(job, steps=2))
    return captured[0]


def final_latents(pipeline: AnimationPipeline, job: Job) -> torch.Tensor:
    """The latents a render hands to the decoder (seed 0)."""
    kept: list[torch.Tensor] = []

    def keep(decode: Callable) -> Callable:
        return lambda latents, chunk: (kept.append(latents.clone()), decode(latents, chunk))[1]

    with patched(pipeline, "_decode", keep):
        time_generation(pipeline, job.frames, job.height, job.width, sampling_for(job))
    return kept[0]


def face_opt_part(job: Job, rows: Rows) -> None:
    """HJB with the CLI's defaults on whole frames; the face box where a portrait's face would be."""
    from animator_cli.hjb import FaceRefiner, reference_face_crop
    from animator_cli.hjb.memory import plan_decode

    pipeline = pipeline_for(job)
    arcface = build_arcface(job.device, tiny=job.tiny)
    width, height = job.width, job.height
    box = (int(0.4 * width), int(0.12 * height), int(0.6 * width), int(0.34 * height))
    reference, _, _ = random_inputs(1, height, width, seed=1)
    sampling = sampling_for(job)

    def refiner() -> FaceRefiner:
        return FaceRefiner(arcface, reference_face_crop(reference, box), [box] * job.frames,
                           FaceOptOptions(end=min(20, job.steps - 1)), job.steps, sampling.decode_chunk)

    reset_peaks(job.device)
    cold = time_generation(pipeline, job.frames, height, width, sampling, refine=refiner())
    warm_refiner = refiner()
    warm = time_generation(pipeline, job.frames, height, width, sampling, refine=warm_refiner)
    plan = plan_decode(pipeline.models.vae, sampling.decode_chunk, (height // 8, width // 8),
                       (height // 8, width // 8), -(-job.frames // sampling.decode_chunk))
    rows.add(cold_s=cold.total_s, warm_s=warm.total_s, step_s=warm.per_step_s, outside_s=warm.outside_loop_s,
             **peaks(job.device),
             note=f"{len(warm_refiner.records)} refined steps × {warm_refiner.options.iters} iterations; decoder "
                  f"{'checkpointed' if plan.checkpoint else 'not checkpointed'}")


def train_part(job: Job, rows: Rows) -> None:
    """Two training steps as the trainer runs them (fp32 weights, frozen encoders in bf16, bf16 autocast, UNet
    gradient checkpointing, AdamW); the second is timed."""
    from animator_cli.sampling.conditioning import cast_module, to_tensor
    from animator_cli.training.config import ConditioningConfig
    from animator_cli.training.step import training_loss
    from animator_cli.training.trainer import trainable_parameters

    device = job.device
    models = build_models(device, torch.float32, tiny=job.tiny)
    for frozen in (models.image_encoder, models.vae):
        cast_module(frozen, torch.bfloat16)
    groups = trainable_parameters(models.pose_net, models.face_encoder, models.unet, lora=False)
    for module in (models.pose_net, models.face_encoder, models.unet):
        module.train()
    models.unet.enable_gradient_checkpointing()
    optimizer = torch.optim.AdamW([p for params in groups.values() for p in params], lr=1e-5)
    reference, poses, identity = random_inputs(job.frames, job.height, job.width)
    batch = {"pixel_values": to_tensor(poses)[None], "reference": to_tensor(reference),
             "identity": torch.from_numpy(identity)[None], "pose_pixels": to_tensor(poses)}
    batch = {key: value.to(device) for key, value in batch.items()}
    generator = torch.Generator(device).manual_seed(0)

    def step() -> float:
        sync(device)
        started = time.perf_counter()
        loss, _ = training_loss(models, batch, ConditioningConfig(), generator,
                                autocast=lambda: torch.autocast(device.type, torch.bfloat16))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync(device)
        return time.perf_counter() - started

    first = step()
    reset_peaks(device)
    seconds = step()
    trained = sum(p.numel() for params in groups.values() for p in params)
    rows.add(cold_s=first, warm_s=seconds, **peaks(device),
             note=f"one optimizer step, batch 1, bf16 autocast, gradient checkpointing; {trained / 1e6:.0f} M trained "
                  "parameters")


def attention_part(job: Job, rows: Rows) -> None:
    """Each distinct attention shape of one UNet call: the kernel torch picks (`torch._fused_sdp_choice`) and the
    milliseconds of each backend alone (a refused shape says so), so a fallback to the math kernel shows. The
    table goes to ``attention.md``; the row sums it up."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from animator_cli.models.id_adapter import MAX_BATCH_HEADS

    _, shapes = count_unet(job)
    names = {int(value): name.lower() for name, value in SDPBackend.__members__.items()}
    backends = (SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH)
    dtype = DTYPES[job.dtype]
    lines = [f"## Attention shapes of one UNet call, {job.width}×{job.height}, {job.frames} frames, CFG batch 2, "
             f"{job.dtype}", "", "q and k are (batch, heads, tokens, head dim); milliseconds per call of each backend "
             "alone; slices: calls of at most " f"{MAX_BATCH_HEADS} batch × heads (animator_cli.models.id_adapter).",
             "", "| q | k | calls per UNet call | torch picks | " + " | ".join(b.name.lower() for b in backends)
             + " |", "|---|---|---|---|" + "---|" * len(backends)]
    picked: dict[str, int] = {}
    total_ms = {b.name.lower(): 0.0 for b in backends}
    for (q_shape, k_shape), count in sorted(_count(shapes).items(), key=lambda item: -_volume(item[0][0])):
        per_call = max(1, MAX_BATCH_HEADS // q_shape[1])
        q = torch.randn((min(q_shape[0], per_call), *q_shape[1:]), device=job.device, dtype=dtype)
        k = torch.randn((min(k_shape[0], per_call), *k_shape[1:]), device=job.device, dtype=dtype)
        slices = -(-q_shape[0] // per_call)
        chosen = names.get(int(torch._fused_sdp_choice(q, k, k)), "?") if job.device.type == "cuda" else "cpu"
        picked[chosen] = picked.get(chosen, 0) + count
        cells = []
        for backend in backends:
            scores_gib = q.shape[0] * q_shape[1] * q_shape[2] * k_shape[2] * 4 / GiB
            if backend == SDPBackend.MATH and scores_gib > 8:
                cells.append(f"skipped ({scores_gib:.0f} GiB of scores)")
                continue
            try:
                with sdpa_kernel([backend]):
                    ms = slices * _time_ms(functools.partial(torch.nn.functional.scaled_dot_product_attention, q, k, k),
                                           job.device)
                cells.append(f"{ms:.3f}")
                total_ms[backend.name.lower()] += ms * count
            except RuntimeError as exc:
                cells.append(f"refused: {str(exc).splitlines()[0][:50]}")
                total_ms[backend.name.lower()] = math.inf
        lines.append(f"| {q_shape} | {k_shape} | {count}{f' ({slices} slices)' if slices > 1 else ''} | {chosen} | "
                     + " | ".join(c.replace("|", "/") for c in cells) + " |")

    with open(rows.path.with_name("attention.md"), "a") as f:
        f.write("\n".join(lines) + "\n\n")
    rows.add(note="torch picks " + ", ".join(f"{name} for {n}" for name, n in picked.items()) + " of "
                  f"{len(shapes)} attention calls; per UNet call, each backend alone: "
                  + ", ".join(f"{name} {ms:.1f} ms" for name, ms in total_ms.items()) + "; table in attention.md")


def _count(items: list) -> dict:
    counts: dict = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return counts


def _volume(shape: tuple) -> int:
    total = 1
    for n in shape:
        total *= n
    return total


def _time_ms(run: Callable[[], object], device: torch.device, repeats: int = 5) -> float:
    run()
    sync(device)
    started = time.perf_counter()
    for _ in range(repeats):
        run()
    sync(device)
    return (time.perf_counter() - started) / repeats * 1000


PARTS: dict[str, Callable[[Job, Rows], None]] = {
    "generate": generate_part, "compile": compile_part, "window-batch": window_batch_part, "fp8": fp8_part,
    "face-opt": face_opt_part, "train": train_part, "attention": attention_part,
}


def main(argv: list[str]) -> None:
    from benchmarks import gpu_profile

    job = Job(**json.loads(argv[0]))
    rows = Rows(Path(argv[1]), job)
    parts = {**PARTS, "profile": gpu_profile.profile_part, "memory": gpu_profile.memory_part}
    parts[job.part](job, rows)


if __name__ == "__main__":
    main(sys.argv[1:])
