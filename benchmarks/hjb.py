"""Cost of the HJB face optimisation (`--face-opt`) against basic generation.

    .venv/bin/python benchmarks/hjb.py                   # tiny models on CPU: time and peak RSS, basic vs HJB
    .venv/bin/python benchmarks/hjb.py --full-decoder    # also: full-size SVD VAE decoder + iresnet100 backward,
                                                         # 512×512, checkpointing on and off (minutes on a CPU)
    .venv/bin/python benchmarks/hjb.py --flops           # full-size compute of basic vs HJB (seconds)
    .venv/bin/python benchmarks/hjb.py --region [--full-decoder]  # face-region vs full decoding: loss, gradient

Part 1 runs the real AnimationPipeline on a tiny weights home (written to a temporary folder), 64×64, with the
face refiner on every step, and reports wall time and the peak resident memory of each run (the kernel's
high-water mark reset through /proc/self/clear_refs before each run, so the runs do not hide each other).
Part 2 measures, in a fresh subprocess per setting, one refinement iteration at full size: the SVD-xt VAE decoder
(random weights, its real architecture) decodes ``--frames`` frames at 512×512 in fp32, a face crop goes through
iresnet100, and the loss is backpropagated to the latent. The peak memory of that backward bounds the extra
memory HJB needs on a GPU per decode chunk (fp16 halves it); see the printed estimate.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from animator_cli.generate import load_pipeline  # noqa: E402
from animator_cli.hjb import FaceRefiner, load_arcface, reference_face_crop  # noqa: E402
from animator_cli.hjb.checkpointing import checkpointed_layers  # noqa: E402
from animator_cli.hjb.refine import latent_window  # noqa: E402
from animator_cli.options import FaceOptOptions, Runtime, SamplingOptions  # noqa: E402
from animator_cli.weights.home import WeightsHome  # noqa: E402
from animator_cli.weights.tiny import arcface as tiny_arcface  # noqa: E402
from animator_cli.weights.tiny import make_tiny  # noqa: E402

# stabilityai/stable-video-diffusion-img2vid-xt vae/config.json (architecture fields)
SVD_VAE_CONFIG = {"in_channels": 3, "out_channels": 3, "down_block_types": ["DownEncoderBlock2D"] * 4,
                  "block_out_channels": [128, 256, 512, 512], "layers_per_block": 2, "latent_channels": 4,
                  "sample_size": 768, "scaling_factor": 0.18215, "force_upcast": True}


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> int:
    """Reset the peak-RSS counter (VmHWM) to the current RSS and return the current RSS in KiB."""
    Path("/proc/self/clear_refs").write_text("5")
    return _rss_kib("VmRSS")


def _measure(run) -> tuple[float, float]:
    """(seconds, peak RSS above the starting RSS in MiB) of ``run()``."""
    start_rss = _reset_peak()
    start = time.perf_counter()
    run()
    return time.perf_counter() - start, (_rss_kib("VmHWM") - start_rss) / 1024


TINY_RUNS = {"basic": None, "hjb": -1, "hjb region (margin 1)": 1}  # the refiner's margin; -1: whole frames


def tiny_child(name: str, frames: int, steps: int, repeats: int, home: Path) -> dict:
    """Time and peak memory of one tiny run, in a fresh process (an allocator keeps freed memory, so runs in one
    process would hide each other's peaks)."""
    torch.set_num_threads(1)
    pipeline = load_pipeline(WeightsHome(home), Runtime(device="cpu"))
    arcface = load_arcface(WeightsHome(home))
    rng = np.random.default_rng(0)
    reference = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    poses = rng.integers(0, 255, (frames, 64, 64, 3), dtype=np.uint8)
    identity = rng.standard_normal(512).astype(np.float32)
    options, margin, box = SamplingOptions(steps=steps), TINY_RUNS[name], (24, 16, 40, 40)

    def run(refine: bool) -> None:
        refiner = FaceRefiner(arcface, reference_face_crop(reference, box), [box] * frames,
                              FaceOptOptions(start=0, end=steps - 1, margin=None if margin == -1 else margin),
                              steps, options.decode_chunk) if refine else None
        pipeline(reference, poses, identity, options, torch.Generator().manual_seed(0), refine=refiner)

    run(refine=False)  # warm-up: first-call allocations
    timings = [_measure(lambda: run(refine=margin is not None)) for _ in range(repeats)]
    return {"seconds": min(t for t, _ in timings), "peak_mib": max(m for _, m in timings)}


def tiny(frames: int, steps: int, repeats: int) -> None:
    home = make_tiny(Path(tempfile.mkdtemp()) / "home", seed=0)
    tiny_arcface.write(home.root, seed=0)
    print(f"tiny models, CPU 1 thread, {frames} frames 64×64, {steps} steps, HJB on every step "
          f"({FaceOptOptions.iters} iterations, chunks of 4); best of {repeats}, each in a fresh process:")
    basic_time = None
    for name in TINY_RUNS:
        out = subprocess.run([sys.executable, __file__, "--tiny-child", name, str(frames), str(steps), str(repeats),
                              str(home.root)], capture_output=True, text=True, check=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        basic_time = basic_time or row["seconds"]
        print(f"  {name:21s}: {row['seconds']:6.2f} s ({row['seconds'] / basic_time:4.1f}× basic), "
              f"peak RSS +{row['peak_mib']:6.1f} MiB")
    print("  (the tiny UNet is so cheap that the decoder and ArcFace dominate; see --flops for full size)")


MODES = ("off", "blocks", "layers")  # no checkpointing, diffusers' per-block switch, ours per layer


def full_decoder_child(frames: int, mode: str) -> dict:
    """One refinement iteration at full size, measured in this (fresh) process."""
    from diffusers import AutoencoderKLTemporalDecoder

    from animator_cli.hjb import IResNet
    from animator_cli.hjb.arcface import face_crops, identity_distance

    torch.manual_seed(0)
    vae = AutoencoderKLTemporalDecoder(**SVD_VAE_CONFIG).eval().requires_grad_(False)
    arcface = IResNet().eval().requires_grad_(False)
    if mode == "blocks":
        vae.enable_gradient_checkpointing()
    z = torch.randn(frames, 4, 64, 64)
    reference = torch.randn(1, 512)

    def iteration() -> None:
        latent = z.clone().requires_grad_(True)
        layers = checkpointed_layers(vae.decoder) if mode == "layers" else contextlib.nullcontext()
        with torch.enable_grad(), layers:
            pixels = vae.decode(latent / 0.18215, num_frames=frames).sample.clamp(-1, 1)
            crops = face_crops(pixels, [(160, 64, 352, 288)] * frames)
            identity_distance(arcface(crops), reference).mean().backward()
        assert latent.grad is not None and latent.grad.abs().sum() > 0

    seconds, peak = _measure(iteration)
    return {"frames": frames, "mode": mode, "seconds": seconds, "peak_mib": peak}


def full_decoder(frames: int) -> None:
    print(f"full-size SVD VAE decoder + iresnet100, {frames} frame(s) 512×512, fp32 CPU, one forward+backward:")
    rows = {}
    for mode in MODES:
        out = subprocess.run([sys.executable, __file__, "--child", str(frames), mode],
                             capture_output=True, text=True, check=True)
        rows[mode] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"  checkpointing {mode:6s}: {rows[mode]['seconds']:6.1f} s, "
              f"peak RSS +{rows[mode]['peak_mib'] / 1024:5.2f} GiB")
    per_frame_fp16 = rows["layers"]["peak_mib"] / frames / 2 / 1024
    print(f"  estimate on a GPU in fp16, layer checkpointing: ≈{per_frame_fp16:.2f} GiB per decoded frame, "
          f"≈{4 * per_frame_fp16:.1f} GiB for a decode chunk of 4 (independent of the video length)")


def region_vs_full(vae: torch.nn.Module, arcface: torch.nn.Module, size: int, box: tuple[int, int, int, int],
                   margins: tuple[int, ...], frames: int = 1) -> None:
    """Loss and latent gradient of the face-region decode (``--face-opt-margin``) against the full decode."""
    generator = torch.Generator().manual_seed(0)
    z = torch.randn(1, frames, 4, size // 8, size // 8, generator=generator)
    reference = reference_face_crop(np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8), box)
    results = {}
    for margin in (None, *margins):
        refiner = FaceRefiner(arcface, reference, [box] * frames, FaceOptOptions(iters=1, lr=0.0, margin=margin),
                              25, frames)
        latent = z[0].clone().requires_grad_(True)
        window = latent_window([box] * frames, latent.shape[-2:], margin)
        start = time.perf_counter()
        with torch.enable_grad(), checkpointed_layers(vae.decoder):
            loss = refiner._loss(vae, latent, list(range(frames)), [box] * frames, window)
            loss.backward()
        results[margin] = (float(loss.detach()), latent.grad.flatten(), time.perf_counter() - start, window)
    full_loss, full_grad, full_time, _ = results[None]
    print(f"  full decode {size}×{size}: loss {full_loss:.5f}, {full_time:.1f} s")
    for margin in margins:
        loss, grad, seconds, (x0, y0, x1, y1) = results[margin]
        cosine = float(torch.nn.functional.cosine_similarity(grad, full_grad, dim=0))
        area = (x1 - x0) * (y1 - y0) / (size // 8) ** 2
        print(f"  margin {margin:2d} ({area:5.1%} of the latent): loss {loss:.5f} (Δ {loss - full_loss:+.5f}), "
              f"gradient cosine to full {cosine:.3f}, {seconds:.1f} s")


def region(full_size: bool) -> None:
    torch.set_num_threads(2)
    home = make_tiny(Path(tempfile.mkdtemp()) / "home", seed=0)
    tiny_arcface.write(home.root, seed=0)
    arcface = load_arcface(home)
    print("face-region decoding vs full decoding (one refinement iteration's loss and gradient), tiny VAE, 4 frames:")
    region_vs_full(load_pipeline(home, Runtime(device="cpu")).models.vae, arcface, 256, (96, 64, 160, 144),
                   (0, 2, 4, 8), frames=4)
    if full_size:
        from diffusers import AutoencoderKLTemporalDecoder

        torch.manual_seed(0)
        vae = AutoencoderKLTemporalDecoder(**SVD_VAE_CONFIG).eval().requires_grad_(False)
        print("the same, SVD-xt-sized decoder with random weights, 1 frame, face box 96×112 px:")
        region_vs_full(vae, arcface, 512, (208, 64, 304, 176), (2, 4, 8))


def flops(frames: int = 16, steps: int = 25, iters: int = 3, refined: int = 21) -> None:
    """Full-size compute of basic generation and of HJB, counted on the meta device (no weights, no compute)."""
    from diffusers import AutoencoderKLTemporalDecoder
    from torch.utils.flop_counter import FlopCounterMode

    from animator_cli.hjb import IResNet
    from animator_cli.models.unet import SVD_XT_UNET_CONFIG, AnimatorUNet

    with torch.device("meta"):
        vae = AutoencoderKLTemporalDecoder(**SVD_VAE_CONFIG).eval().requires_grad_(False)
        unet = AnimatorUNet(**SVD_XT_UNET_CONFIG).eval().requires_grad_(False)
        unet.install_processors()
        arcface = IResNet().eval().requires_grad_(False)
    vae.to("meta"), unet.to("meta")  # buffers built with torch.Tensor() land on the CPU

    def count(fn) -> float:
        with torch.device("meta"), FlopCounterMode(display=False) as counter:
            fn()
        return counter.get_total_flops() / 1e12

    def unet_call() -> None:
        with torch.no_grad():
            unet(torch.zeros(2, frames, 8, 64, 64), 1.0, torch.zeros(2, 5, 1024), torch.zeros(2, 3),
                 pose_latents=torch.zeros(2, frames, 320, 64, 64))

    def decode(grad: bool) -> None:
        z = torch.zeros(4, 4, 64, 64, requires_grad=grad)
        with torch.set_grad_enabled(grad):
            out = vae.decode(z, num_frames=4).sample
            if grad:
                out.sum().backward()

    def arc() -> None:
        x = torch.zeros(4, 3, 112, 112, requires_grad=True)
        arcface(x).sum().backward()

    unet_frame = count(unet_call) / frames  # per frame and step, CFG batched
    forward, backward = count(lambda: decode(False)) / 4, count(lambda: decode(True)) / 4
    iteration = backward + forward + count(arc) / 4  # checkpointing recomputes the forward once
    basic = steps * unet_frame + forward
    print("full-size compute per output frame at 512×512 (FLOP counter on the meta device), TFLOP:")
    print(f"  UNet, one step (CFG batched, {frames}-frame window): {unet_frame:.2f}; decoder forward {forward:.2f}; "
          f"one HJB iteration (decode + backward + recompute + ArcFace) {iteration:.2f}")
    print(f"  basic generation ({steps} steps + decode): {basic:.1f}")
    extra = refined * iters * iteration
    print(f"  HJB whole frames ({refined} steps × {iters}): +{extra:.0f} → ≈{(basic + extra) / basic:.1f}× basic")
    for area in (0.1, 0.2):
        extra = refined * iters * backward * area  # small windows are not checkpointed
        print(f"  HJB face region {area:.0%} of the frame: +{extra:.0f} → ≈{(basic + extra) / basic:.1f}× basic")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=16, help="tiny run: frames")
    parser.add_argument("--steps", type=int, default=4, help="tiny run: denoising steps")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--full-decoder", action="store_true", help="also measure the full-size decoder backward")
    parser.add_argument("--decoder-frames", type=int, default=1)
    parser.add_argument("--region", action="store_true", help="compare face-region decoding with full decoding")
    parser.add_argument("--flops", action="store_true", help="full-size compute estimate (FLOP counter)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--tiny-child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.tiny_child:
        name, frames, steps, repeats, home = args.tiny_child
        print(json.dumps(tiny_child(name, int(frames), int(steps), int(repeats), Path(home))))
        return
    if args.child:
        torch.set_num_threads(2)
        print(json.dumps(full_decoder_child(int(args.child[0]), args.child[1])))
        return
    if args.flops:
        flops()
        return
    if args.region:
        region(args.full_decoder)
        return
    tiny(args.frames, args.steps, args.repeats)
    if args.full_decoder:
        full_decoder(args.decoder_frames)


if __name__ == "__main__":
    main()
