"""Model core figures: tiny-UNet call time, tiny-home load time, and the RAM a checkpoint load costs.

Run: .venv/bin/python benchmarks/model_core.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from animator_cli.models import load_models
from animator_cli.models.face_encoder import FaceEncoder
from animator_cli.models.loading import load_checkpoint
from animator_cli.models.manifest import full_size_modules
from animator_cli.weights.home import WeightsHome
from animator_cli.weights.tiny import svd


def _reset_peak_rss() -> float:
    """Reset the kernel's peak-RSS mark (Linux) and return the current RSS in MiB."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_mib("VmRSS")


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def main() -> None:
    start = time.perf_counter()
    full_size_modules()
    print(f"full-size architecture on the meta device: {time.perf_counter() - start:.2f} s")

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        svd.write(root, seed=0)
        print(f"tiny SVD home written: {time.perf_counter() - start:.2f} s")
        start = time.perf_counter()
        models = load_models(WeightsHome(root), "cpu", torch.float32)
        print(f"tiny home loaded: {time.perf_counter() - start:.2f} s")

        context = torch.randn(1, 5, svd.CONTEXT_DIM)
        sample, pose = torch.randn(1, 16, 8, 8, 8), torch.randn(16, 32, 8, 8)
        time_ids = torch.tensor([[6.0, 127.0, 0.02]])
        with torch.no_grad():
            models.unet(sample, torch.tensor(0.5), context, time_ids, pose_latents=pose)
            start = time.perf_counter()
            for _ in range(10):
                models.unet(sample, torch.tensor(0.5), context, time_ids, pose_latents=pose)
        print(f"tiny UNet, 16 frames at 64x64 px: {(time.perf_counter() - start) / 10 * 1000:.0f} ms per call "
              f"({torch.get_num_threads()} threads)")

        # A full-size face_encoder.pth (229 MB fp32): RAM growth while loading it onto the meta-built module.
        path = root / "face_encoder.pth"
        torch.save(FaceEncoder().state_dict(), path)
        size = path.stat().st_size / 2**20
        for dtype in (torch.float32, torch.float16):
            with torch.device("meta"):
                empty = FaceEncoder()
            before = _reset_peak_rss()
            load_checkpoint(empty, path, "cpu", dtype)
            grown = _status_mib("VmHWM") - before
            print(f"full-size face encoder load to {dtype}: checkpoint {size:.0f} MiB, peak RSS +{grown:.0f} MiB "
                  f"({grown / size:.2f}x the file; fp32 stays memory-mapped until first use; "
                  f"building the model and then loading a state dict costs about 2x)")
            del empty


if __name__ == "__main__":
    main()
