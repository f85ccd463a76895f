"""Fewer and cheaper steps: --schedule ays, --reuse-features N and --draft against the default render.

    .venv/bin/python benchmarks/fewer_steps.py DIR [--frames 40] [--size 64] [--runs 3] [--threads 1]

Writes a tiny weights home, DIR/poses (FRAMES skeleton frames) and DIR/ref.png, then prints:

1. on the tiny home (real AnimationPipeline, this CPU): per variant the wall time of the pipeline call (median of
   RUNS), the UNet calls (whole + shallow) and TFLOP the render counted, and how far its final latents are from
   the default 25-step render's (max and relative RMS difference). Random weights: the deviation says how much a
   setting changes the sampler's arithmetic, nothing about the quality of a trained model's video;
2. the counted UNet TFLOP of one 16-frame window at full SVD-xt size (512×512 and 576×1024, CFG batch of 2),
   counted on the meta device, per variant and against the default;
3. what the counting itself costs: the extra time of a counted call over a plain one (median over 2·RUNS+1
   alternating pairs), times the distinct calls a render counts, against the default tiny render's wall time;
4. the farm-bench command that times `--draft` of the FRAMES-frame clip against the default render, whole
   process (its median ratio is the issue's wall-time figure).

`variants(sampling, width, height)` gives the same variants (name, SamplingOptions, size) for the GPU suite.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from animator_cli import draft  # noqa: E402
from animator_cli.generate import load_pipeline  # noqa: E402
from animator_cli.models.unet import SVD_XT_UNET_CONFIG, AnimatorUNet  # noqa: E402
from animator_cli.options import Runtime, SamplingOptions  # noqa: E402
from animator_cli.sampling.feature_reuse import tapped, unet_forward  # noqa: E402
from animator_cli.sampling.flops import count_flops, meta_flops  # noqa: E402
from animator_cli.sampling.pipeline import AnimationPipeline  # noqa: E402
from animator_cli.weights.home import WeightsHome  # noqa: E402
from animator_cli.weights.tiny import make_tiny  # noqa: E402
from benchmarks.compile_cpu import skeleton_frames  # noqa: E402
from benchmarks.measure import random_inputs  # noqa: E402


@dataclass(frozen=True)
class Variant:
    """One setting to compare: its name, its sampling options and its output size (width, height)."""

    name: str
    sampling: SamplingOptions
    size: tuple[int, int]


def variants(sampling: SamplingOptions, width: int, height: int) -> list[Variant]:
    """The default (``sampling`` as given) and the fewer/cheaper-step settings at (width, height): ays 10 steps,
    with deep features reused every 2nd and 3rd step, and the --draft preset (its own smaller size)."""
    base = replace(sampling, schedule="karras", reuse_features=1)
    ays = replace(base, schedule="ays", steps=10)
    return [Variant(f"karras {base.steps} (default)", base, (width, height)),
            Variant("ays 10", ays, (width, height)),
            Variant("ays 10 + reuse 2", replace(ays, reuse_features=2), (width, height)),
            Variant("ays 10 + reuse 3", replace(ays, reuse_features=3), (width, height)),
            Variant("--draft", replace(base, steps=draft.STEPS, schedule=draft.SCHEDULE,
                                       reuse_features=draft.REUSE_FEATURES), draft.draft_size(width, height))]


def render(pipeline: AnimationPipeline, inputs, options: SamplingOptions) -> tuple[float, torch.Tensor]:
    """Wall time of one pipeline call and its final latents (decoding included in the time)."""
    kept = []
    decode = pipeline._decode
    pipeline._decode = lambda latents, chunk: kept.append(latents) or decode(latents, chunk)
    try:
        started = time.perf_counter()
        pipeline(*inputs, options, torch.Generator().manual_seed(1))
        return time.perf_counter() - started, kept[0]
    finally:
        del pipeline._decode


def tiny_table(pipeline: AnimationPipeline, frames: int, size: int, runs: int) -> float:
    """Part 1; returns the default render's median wall time."""
    print(f"\n## Tiny home, {frames} frames, guidance 3, this CPU (median of {runs})\n")
    print("| variant | size | wall s | × default | UNet calls (shallow) | TFLOP | × less | max abs dev | rel RMS dev |")
    print("|---|---|---|---|---|---|---|---|---|")
    reference, default_s, default_flops = None, 0.0, 0
    for variant in variants(SamplingOptions(), size, size):
        w, h = variant.size
        inputs = random_inputs(frames, h, w)
        render(pipeline, inputs, SamplingOptions(steps=1))  # warm-up: oneDNN builds its kernels per shape
        times, latents = zip(*(render(pipeline, inputs, variant.sampling) for _ in range(runs)), strict=True)
        seconds, work = statistics.median(times), pipeline.work
        if reference is None:
            reference, default_s, default_flops = latents[0], seconds, work.flops
        same_size = latents[0].shape == reference.shape
        deviation = f"{(latents[0] - reference).abs().max().item():.3g}" if same_size else "—"
        rms = f"{((latents[0] - reference).norm() / reference.norm()).item():.3g}" if same_size else "—"
        print(f"| {variant.name} | {w}×{h} | {seconds:.2f} | {seconds / default_s:.2f} | {work.calls} "
              f"({work.shallow_calls}) | {work.tflop:.4g} | {default_flops / work.flops:.2f} | {deviation} | {rms} |")
    return default_s


def full_size_table() -> None:
    """Part 2: counted TFLOP of one window at SVD-xt size."""
    with torch.device("meta"):
        unet = AnimatorUNet.from_config(SVD_XT_UNET_CONFIG)
        unet.install_processors()
    unet.to("meta").eval().requires_grad_(False)
    print("\n## Full-size SVD-xt UNet, one 16-frame window, CFG batch 2 (counted on the meta device)\n")
    print("| size | variant | whole + shallow calls | TFLOP per window | × less than default |")
    print("|---|---|---|---|---|")
    for width, height in ((512, 512), (576, 1024)):
        per_call = {}
        for variant in variants(SamplingOptions(), width, height):
            w, h = variant.size
            if variant.size not in per_call:
                per_call[variant.size] = _call_tflop(unet, h // 8, w // 8)
            whole, shallow = per_call[variant.size]
            s = variant.sampling
            full = len(range(0, s.steps, s.reuse_features))
            tflop = full * whole + (s.steps - full) * shallow
            default = SamplingOptions().steps * per_call[(width, height)][0]
            print(f"| {width}×{height} | {variant.name}{f' ({w}×{h})' if variant.size != (width, height) else ''} | "
                  f"{full} + {s.steps - full} | {tflop:.1f} | {default / tflop:.2f} |")
        whole, shallow = per_call[(width, height)]
        print(f"| {width}×{height} | one whole call / one shallow call | | {whole:.2f} / {shallow:.2f} "
              f"({shallow / whole:.0%}) | |")


def _call_tflop(unet: AnimatorUNet, h: int, w: int) -> tuple[float, float]:
    """TFLOP of one whole and one shallow call, 2 × 16 frames at latent size h×w."""
    with torch.device("meta"):
        args = (torch.empty(2, 16, 8, h, w), torch.empty(()), torch.empty(2, 5, 1024), torch.empty(2, 3))
        kwargs = {"pose_latents": torch.empty(32, 320, h, w)}
        deep = torch.empty(32, unet.config.block_out_channels[1], h, w)
    return (meta_flops(unet_forward, unet, *args, **kwargs) / 1e12,
            meta_flops(unet_forward, unet, *args, deep=deep, **kwargs) / 1e12)


def counting_cost(pipeline: AnimationPipeline, size: int, runs: int, default_s: float) -> None:
    """Part 3: a counted call's extra time over a plain one, for the whole and the shallow call of a window."""
    unet = pipeline.models.unet
    h = size // 8
    args = (torch.randn(2, 16, 8, h, h), torch.tensor(1.0), torch.randn(2, 5, unet.config.cross_attention_dim),
            torch.zeros(2, 3))
    kwargs = {"pose_latents": torch.randn(32, unet.conv_in.out_channels, h, h)}
    with torch.no_grad():
        kept = []
        with tapped(unet, kept.append):
            unet(*args, **kwargs)
        extra = []
        for deep in (None, kept[0]):
            def call(deep=deep) -> torch.Tensor:
                return unet_forward(unet, *args, deep=deep, **kwargs)

            differences = []
            for _ in range(2 * runs + 1):  # alternating, so a change of the machine's speed hits both alike
                started = time.perf_counter()
                call()
                plain = time.perf_counter() - started
                started = time.perf_counter()
                count_flops(call)
                differences.append(time.perf_counter() - started - plain)
            extra.append(statistics.median(differences))
    print(f"\n## Cost of counting (median of {2 * runs + 1} pairs)\n")
    print(f"- extra time of a counted call: whole {extra[0] * 1e3:.0f} ms, shallow {extra[1] * 1e3:.0f} ms; a render "
          "counts each distinct call shape once")
    print(f"- default render (one shape): {extra[0] / default_s:.2%} of its {default_s:.2f} s; with reuse (two "
          f"shapes): {sum(extra) / default_s:.2%} of the default render's time")


def write_inputs(folder: Path, frames: int, size: int) -> tuple[WeightsHome, Path, Path]:
    """The tiny home, a skeleton pose folder and a reference photo under ``folder``."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    home = make_tiny(folder / "home", seed=0)
    poses = folder / "poses"
    poses.mkdir(exist_ok=True)
    for i, frame in enumerate(skeleton_frames(frames, size)):
        cv2.imwrite(str(poses / f"frame_{i}.png"), frame)
    reference = folder / "ref.png"
    cv2.imwrite(str(reference), random_inputs(1, size, size)[0][:, :, ::-1])
    return home, poses, reference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--size", type=int, default=64, help="tiny-home render size of parts 1 and 3 (multiple of 64)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a shared CPU)")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    torch.set_num_threads(args.threads)
    home, poses, reference = write_inputs(args.folder, args.frames, 512)
    pipeline = load_pipeline(home, Runtime(device="cpu"))
    default_s = tiny_table(pipeline, args.frames, args.size, args.runs)
    full_size_table()
    counting_cost(pipeline, args.size, args.runs, default_s)
    out = args.folder / "out.mp4"
    command = (f"{sys.executable} -m animator_cli --weights {home.root} --cache-dir {args.folder / 'cache'} generate "
               f"{reference} {poses} -o {out}")
    print("\n## --draft against the default render (512×512, 25 steps), whole process (from the repository root)\n")
    print(f"    PYTHONPATH=$PWD farm-bench -n 3 --warmup 0 --timeout 3600 --vs '{command} --force' -- "
          f"{command} --draft --force\n")
    print(f"(the draft writes {draft.draft_output(out)}, the full render {out})")


if __name__ == "__main__":
    main()
