"""The one-command GPU benchmark suite: what a session lent a GPU for a few minutes runs first.

    python benchmarks/gpu_suite.py                        # CUDA, full-size random models, ≤ 8 min, no download
    python benchmarks/gpu_suite.py --peak-tflops 989      # when the card is not in the peak table
    python benchmarks/gpu_suite.py --tiny                 # the same code path on make-tiny-sized models, CPU

Builds the full-size networks (SVD-xt UNet with the ID processors, temporal VAE, CLIP ViT-H, PoseNet, face
encoder; glintr100's iresnet100 for HJB) with random weights directly on the device (benchmarks/random_models.py),
then measures, each part under its own try and time budget:

- the FLOPs of one UNet call (CFG batch of 2 × 16 frames), counted with torch.utils.flop_counter.FlopCounterMode;
- generation of 16 frames × 25 steps at 512×512 and 576×1024 (width × height) in bf16 and fp16: whole call,
  seconds per step of the denoising loop, peak memory, achieved TFLOP/s over the loop (counted FLOPs × UNet calls /
  loop time) and its share of the card's dense bf16 peak;
- ``--face-opt`` (HJB, defaults: 3 iterations on steps 0-20, whole frames) on 16 frames at 512×512;
- one full-size training step (fp32 weights, bf16 autocast, UNet gradient checkpointing, AdamW; the second step
  is timed);
- the generation rows again with ``Runtime(compile=True)``, compile time (the first, 1-step call) reported apart.

The pipeline is built by `load_pipeline` itself (its model loader handed the random models), so runtime options
apply exactly as in the CLI. Writes a Markdown report to stdout and ``--output`` (atomically), with the targets
(≥ 50 % of the bf16 peak in the 512×512 loop, ≤ 8 GB peak at 512×512 with the default fp16 and no offload,
``--face-opt`` ≤ 2× basic time and ≤ 24 GB) marked met or missed with their margin. A part that fails or runs out
of its budget is reported and the others still run; when the total budget is spent the rest are skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import math
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from animator_cli.fileio import atomic_path  # noqa: E402
from animator_cli.hjb import FaceRefiner, reference_face_crop  # noqa: E402
from animator_cli.hjb.memory import plan_decode  # noqa: E402
from animator_cli.options import FaceOptOptions, Runtime, SamplingOptions  # noqa: E402
from animator_cli.sampling.conditioning import to_tensor  # noqa: E402
from animator_cli.sampling.pipeline import AnimationPipeline  # noqa: E402
from animator_cli.weights.home import WeightsHome  # noqa: E402
from benchmarks.measure import peak_gib, random_inputs, reset_peak, sync, time_generation  # noqa: E402
from benchmarks.random_models import build_arcface, build_models  # noqa: E402

# Dense (no sparsity) bf16 tensor-core TFLOP/s from NVIDIA's datasheets; the first name found in the device name
# wins, so "H100 PCIe" precedes "H100" (SXM).
PEAK_TFLOPS = (("H200", 989.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("A100", 312.0), ("L40S", 362.0),
               ("L4", 121.0), ("A10", 125.0))
TOTAL_BUDGET_S = 450.0  # the whole suite stays under 8 minutes with start-up and the report
GiB = 2**30


class PartTimeout(Exception):
    """A part ran past its time budget."""


@dataclass
class Row:
    """One line of the report; None cells print as a dash."""

    part: str
    setting: str
    seconds: float | None = None
    per_step_s: float | None = None
    compile_s: float | None = None
    peak_gib: float | None = None
    tflops: float | None = None
    peak_share: float | None = None
    note: str = ""


@dataclass
class Part:
    name: str
    budget_s: float
    run: Callable[[], list[Row]]


@dataclass
class Setup:
    """What the parts share: where they run, the sizes, and what earlier parts measured."""

    device: torch.device
    tiny: bool
    frames: int
    steps: int
    sizes: tuple[tuple[int, int], ...]  # (width, height)
    peak_tflops: float | None
    compile: bool = True
    models: object = None
    unet_tflop: dict[tuple[int, int], float] = field(default_factory=dict)  # per CFG-batched UNet call
    results: dict[str, Row] = field(default_factory=dict)  # by key, for the targets

    def size_name(self, size: tuple[int, int]) -> str:
        return f"{size[0]}×{size[1]}"


def peak_for(device_name: str) -> float | None:
    for name, tflops in PEAK_TFLOPS:
        if name.lower() in device_name.lower():
            return tflops
    return None


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise PartTimeout in this (main) thread after ``seconds``."""
    def expire(signum, frame):
        raise PartTimeout(f"ran past its {seconds:.3g} s budget")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_parts(parts: list[Part], total_budget_s: float) -> list[Row]:
    """Run every part under its own try and budget (the smaller of its own and what is left of the total)."""
    rows: list[Row] = []
    deadline = time.monotonic() + total_budget_s
    for part in parts:
        left = deadline - time.monotonic()
        if left <= 1:
            rows.append(Row(part.name, "", note="skipped: the suite's time budget is spent"))
            continue
        started = time.monotonic()
        try:
            with time_limit(min(part.budget_s, left)):
                rows += part.run()
        except Exception as exc:  # noqa: BLE001 - one part's failure must not cost the others
            what = "out of memory" if isinstance(exc, torch.cuda.OutOfMemoryError) else type(exc).__name__
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            rows.append(Row(part.name, "", seconds=time.monotonic() - started,
                            note=f"FAILED ({what}): {message}"[:200]))
            traceback.print_exc(file=sys.stderr)
        finally:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    return rows


def _pipeline(setup: Setup, dtype: str, **runtime: object) -> AnimationPipeline:
    """`load_pipeline`'s pipeline around the random models (its checkpoint loader returns them)."""
    from animator_cli import generate

    options = Runtime(device=str(setup.device), dtype=dtype, **runtime)
    with mock.patch("animator_cli.models.loading.load_models", lambda *args, **kwargs: setup.models):
        return generate.load_pipeline(WeightsHome(Path(tempfile.gettempdir())), options)


def _sampling(setup: Setup, steps: int | None = None) -> SamplingOptions:
    """The CLI's defaults (one 16-frame window at full size)."""
    return SamplingOptions(steps=steps or setup.steps, tile=setup.frames, overlap=min(4, setup.frames - 1))


def build_part(setup: Setup) -> list[Row]:
    started = time.perf_counter()
    setup.models = build_models(setup.device, torch.bfloat16, tiny=setup.tiny)
    sync(setup.device)
    modules = [getattr(setup.models, name) for name in ("unet", "vae", "image_encoder", "pose_net", "face_encoder")]
    size = sum(t.numel() * t.element_size() for m in modules for t in (*m.parameters(), *m.buffers())) / GiB
    params = sum(p.numel() for m in modules for p in m.parameters())
    return [Row("build", "all networks, random, bf16", time.perf_counter() - started, peak_gib=size,
                note=f"{params / 1e9:.3f} B parameters; GiB: the models' weights")]


def flops_part(setup: Setup, size: tuple[int, int]) -> list[Row]:
    """FLOPs of one CFG-batched UNet call on ``frames`` frames at ``size``, counted on the device."""
    from torch.utils.flop_counter import FlopCounterMode

    unet, (width, height) = setup.models.unet, size
    dtype = next(unet.parameters()).dtype
    frames, h, w = setup.frames, height // 8, width // 8
    context = unet.config.cross_attention_dim
    channels = unet.config.block_out_channels[0]
    started = time.perf_counter()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        unet(torch.randn(2, frames, 8, h, w, device=setup.device, dtype=dtype), 1.0,
             torch.randn(2, 5, context, device=setup.device, dtype=dtype),
             torch.zeros(2, 3, device=setup.device, dtype=dtype),
             pose_latents=torch.randn(2 * frames, channels, h, w, device=setup.device, dtype=dtype))
    setup.unet_tflop[size] = counter.get_total_flops() / 1e12
    return [Row("UNet FLOPs", f"one call, CFG batch 2×{frames} frames, {setup.size_name(size)}",
                time.perf_counter() - started, note=f"{setup.unet_tflop[size]:.4g} TFLOP per call")]


def _throughput(setup: Setup, size: tuple[int, int], row: Row, calls: int, loop_s: float) -> None:
    if size in setup.unet_tflop:
        row.tflops = setup.unet_tflop[size] * calls / loop_s
        row.peak_share = row.tflops / setup.peak_tflops if setup.peak_tflops else None


def generate_part(setup: Setup, size: tuple[int, int], dtype: str, compiled: bool) -> list[Row]:
    label = f"{setup.frames} frames × {setup.steps} steps, {setup.size_name(size)}, {dtype}"
    part = "generate --compile" if compiled else "generate"
    compile_s = None
    if compiled:
        if not setup.compile:
            return [Row(part, label, note="skipped: --no-compile")]
        if "compile" not in {f.name for f in dataclasses.fields(Runtime)}:
            return [Row(part, label, note="not available: Runtime has no compile option (the speed branch's "
                                          "compile support is not merged)")]
        pipeline = _pipeline(setup, dtype, compile=True)
        started = time.perf_counter()
        time_generation(pipeline, setup.frames, size[1], size[0], _sampling(setup, steps=2))
        compile_s = time.perf_counter() - started
    else:
        pipeline = _pipeline(setup, dtype)
    reset_peak(setup.device)
    timing = time_generation(pipeline, setup.frames, size[1], size[0], _sampling(setup))
    row = Row(part, label, timing.total_s, timing.per_step_s, compile_s, peak_gib(setup.device),
              note=f"UNet calls {timing.unet_s / timing.loop_s:.0%} of the loop")
    _throughput(setup, size, row, timing.unet_calls, timing.loop_s)
    setup.results[f"{part} {size} {dtype}"] = row
    return [row]


def face_opt_part(setup: Setup, size: tuple[int, int], dtype: str) -> list[Row]:
    """HJB with the CLI's defaults on whole frames; the face box where a portrait's face would be."""
    width, height = size
    pipeline = _pipeline(setup, dtype)
    arcface = build_arcface(setup.device, tiny=setup.tiny)
    box = (int(0.4 * width), int(0.12 * height), int(0.6 * width), int(0.34 * height))
    reference, _, _ = random_inputs(1, height, width, seed=1)
    sampling = _sampling(setup)
    refiner = FaceRefiner(arcface, reference_face_crop(reference, box), [box] * setup.frames,
                          FaceOptOptions(end=min(20, setup.steps - 1)), setup.steps, sampling.decode_chunk)
    reset_peak(setup.device)
    timing = time_generation(pipeline, setup.frames, height, width, sampling, refine=refiner)
    latent = (height // 8, width // 8)
    plan = plan_decode(pipeline.models.vae, sampling.decode_chunk, latent, latent,
                       -(-setup.frames // sampling.decode_chunk))
    finite = all(math.isfinite(loss) for record in refiner.records for loss in record.losses)
    row = Row("generate --face-opt", f"{setup.frames} frames × {setup.steps} steps, {setup.size_name(size)}, {dtype}",
              timing.total_s, timing.per_step_s, peak_gib=peak_gib(setup.device),
              note=f"{len(refiner.records)} refined steps × {refiner.options.iters} iterations; decoder "
                   f"{'checkpointed' if plan.checkpoint else 'not checkpointed'}, {plan.chunks_per_call} chunk(s) "
                   f"of {sampling.decode_chunk} frames per call"
                   + ("" if finite else "; the random weights overflow (non-finite loss, Adam steps skipped; "
                                        "the same work is timed)"))
    setup.results["face-opt"] = row
    return [row]


def train_part(setup: Setup, size: tuple[int, int]) -> list[Row]:
    """Two full-size training steps (the second is timed) as the trainer runs them: fp32 weights, the frozen
    encoders in bf16, bf16 autocast, UNet gradient checkpointing, AdamW over the trained groups."""
    from animator_cli.sampling.conditioning import cast_module
    from animator_cli.training.config import ConditioningConfig
    from animator_cli.training.step import training_loss
    from animator_cli.training.trainer import trainable_parameters

    width, height = size
    frames = setup.frames
    models = build_models(setup.device, torch.float32, tiny=setup.tiny)
    for frozen in (models.image_encoder, models.vae):
        cast_module(frozen, torch.bfloat16)
    groups = trainable_parameters(models.pose_net, models.face_encoder, models.unet, lora=False)
    for module in (models.pose_net, models.face_encoder, models.unet):
        module.train()
    models.unet.enable_gradient_checkpointing()
    optimizer = torch.optim.AdamW([p for params in groups.values() for p in params], lr=1e-5)
    reference, poses, identity = random_inputs(frames, height, width)
    batch = {"pixel_values": to_tensor(poses)[None], "reference": to_tensor(reference),
             "identity": torch.from_numpy(identity)[None], "pose_pixels": to_tensor(poses)}
    batch = {key: value.to(setup.device) for key, value in batch.items()}
    generator = torch.Generator(setup.device).manual_seed(0)

    def step() -> float:
        sync(setup.device)
        started = time.perf_counter()
        loss, _ = training_loss(models, batch, ConditioningConfig(), generator,
                                autocast=lambda: torch.autocast(setup.device.type, torch.bfloat16))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync(setup.device)
        return time.perf_counter() - started

    first = step()
    reset_peak(setup.device)
    seconds = step()
    trained = sum(p.numel() for params in groups.values() for p in params)
    return [Row("train step", f"batch 1 × {frames} frames, {setup.size_name(size)}, bf16 autocast", seconds,
                peak_gib=peak_gib(setup.device),
                note=f"first step {first:.1f} s; {trained / 1e6:.0f} M trained parameters")]


def default_parts(setup: Setup) -> list[Part]:
    """Every part, cheapest and most important first, so the compile rows are the ones a spent budget skips."""
    scale = 0.25 if setup.tiny else 1.0
    sizes, dtypes = setup.sizes, ("bf16", "fp16")
    parts = [Part("build", 90 * scale, lambda: build_part(setup))]
    parts += [Part("UNet FLOPs", 30 * scale, lambda s=s: flops_part(setup, s)) for s in sizes]
    parts += [Part("generate", 60 * scale, lambda s=s, d=d: generate_part(setup, s, d, False))
              for s in sizes for d in dtypes]
    parts.append(Part("generate --face-opt", 150 * scale, lambda: face_opt_part(setup, sizes[0], "fp16")))
    parts.append(Part("train step", 120 * scale, lambda: train_part(setup, sizes[0])))
    parts += [Part("generate --compile", 150 * scale, lambda s=s, d=d: generate_part(setup, s, d, True))
              for s in sizes for d in dtypes]
    return parts


@dataclass
class Target:
    name: str
    value: float | None
    limit: float
    unit: str
    at_least: bool

    def cells(self) -> list[str]:
        if self.value is None or not math.isfinite(self.value):
            return [self.name, "not measured", "—", "—"]
        margin = self.value - self.limit if self.at_least else self.limit - self.value
        met = "met" if margin >= 0 else "MISSED"
        return [self.name, f"{self.value:.2f} {self.unit}", met, f"{margin:+.2f} {self.unit}"]


def targets(setup: Setup) -> list[Target]:
    first = setup.sizes[0]
    bf16 = [row for key, row in setup.results.items() if key.endswith(f"{first} bf16") and row.peak_share]
    share = max((row.peak_share * 100 for row in bf16), default=None)
    basic = setup.results.get(f"generate {first} fp16")
    face = setup.results.get("face-opt")
    ratio = face.seconds / basic.seconds if face and basic and face.seconds and basic.seconds else None
    name = setup.size_name(first)
    return [
        Target(f"{name} UNet loop, share of the dense bf16 peak (best bf16 row)", share, 50, "%", True),
        Target(f"{name} peak memory, fp16 (the GPU default), no offload", basic.peak_gib if basic else None,
               8, "GiB", False),
        Target(f"--face-opt time / basic time, {setup.frames} frames", ratio, 2, "×", False),
        Target(f"--face-opt peak memory, {setup.frames} frames", face.peak_gib if face else None, 24, "GiB", False),
    ]


def _cell(value: float | None, digits: int = 2) -> str:
    """Fixed decimals, or 3 significant digits for values too small for them (tiny models)."""
    if value is None:
        return "—"
    return f"{value:.{digits}f}" if abs(value) >= 10**-digits or value == 0 else f"{value:.3g}"


def report(setup: Setup, rows: list[Row], device_name: str, peak_source: str, command: str) -> str:
    lines = [f"# GPU suite ({'--tiny, ' if setup.tiny else ''}{device_name})", "",
             f"{datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; torch {torch.__version__}; dense bf16 peak "
             f"{_cell(setup.peak_tflops, 0)} TFLOP/s ({peak_source}); command: "
             f"`{' '.join(['python benchmarks/gpu_suite.py', *command.split()])}`", "",
             "| part | setting | seconds | s/step (loop) | compile s | peak GiB | TFLOP/s (loop) | % of peak | note |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        share = None if row.peak_share is None else row.peak_share * 100
        lines.append(f"| {row.part} | {row.setting} | {_cell(row.seconds)} | {_cell(row.per_step_s, 3)} | "
                     f"{_cell(row.compile_s)} | {_cell(row.peak_gib)} | {_cell(row.tflops, 1)} | {_cell(share, 1)} | "
                     f"{row.note.replace('|', '/')} |")
    lines += ["", "| target | value | result | margin |", "|---|---|---|---|"]
    lines += ["| " + " | ".join(target.cells()) + " |" for target in targets(setup)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None, extra_parts: tuple[Part, ...] = ()) -> str:
    """Run the suite; ``extra_parts`` run first (tests use them to check that a failing part is contained)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="make-tiny-sized models on the CPU (checks the code path)")
    parser.add_argument("--peak-tflops", type=float, help="the card's dense bf16 peak, TFLOP/s (default: table)")
    parser.add_argument("--budget-s", type=float, default=TOTAL_BUDGET_S, help="time budget of all parts, seconds")
    parser.add_argument("--no-compile", action="store_true",
                        help="skip the --compile rows (a CPU compiles the tiny models for minutes)")
    parser.add_argument("--output", type=Path, default=Path(__file__).with_name("RESULTS-gpu.md"),
                        help="where the Markdown report is written (atomically)")
    args = parser.parse_args(argv)
    if args.tiny:
        setup = Setup(torch.device("cpu"), True, frames=2, steps=2, sizes=((64, 64), (64, 128)),
                      peak_tflops=args.peak_tflops, compile=not args.no_compile)
        device_name = "CPU, tiny models"
    else:
        if not torch.cuda.is_available():
            parser.error("no CUDA device: run on a GPU, or pass --tiny to check the code path on the CPU")
        setup = Setup(torch.device("cuda"), False, frames=16, steps=25, sizes=((512, 512), (576, 1024)),
                      peak_tflops=args.peak_tflops, compile=not args.no_compile)
        device_name = torch.cuda.get_device_name(setup.device)
    table = peak_for(device_name) if not args.tiny else None
    peak_source = "--peak-tflops" if args.peak_tflops else ("table" if table else "unknown: pass --peak-tflops")
    setup.peak_tflops = args.peak_tflops or table
    rows = run_parts([*extra_parts, *default_parts(setup)], args.budget_s)
    command = " ".join(str(a) for a in (sys.argv[1:] if argv is None else argv))
    text = report(setup, rows, device_name, peak_source, command)
    print(text)
    with atomic_path(args.output) as tmp:
        tmp.write_text(text)
    return text


if __name__ == "__main__":
    main()
