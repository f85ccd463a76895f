"""`animator weights make-tiny`: a complete weights home of tiny, seeded random models.

It has exactly the on-disk layout and file formats of the real home (the diffusers SVD folder, the three
`.pth` files and `glintr100_torch.pth`, the DWPose and antelopev2 ONNX files), so every test, benchmark and
user smoke test runs the same loading and inference code as the full-size weights.
"""

from __future__ import annotations

from pathlib import Path

from animator_cli.errors import InputError
from animator_cli.weights.home import WeightsHome
from animator_cli.weights.tiny import antelopev2, arcface, dwpose, svd

MAX_SEED = 2**32  # numpy's seed range


def make_tiny(root: Path, seed: int = 0) -> WeightsHome:
    """Write a tiny weights home at ``root`` and return it. ``seed`` seeds numpy too, so it must fit 32 bits."""
    if not isinstance(seed, int) or not 0 <= seed < MAX_SEED:
        raise InputError(f"--seed {seed} is out of range", f"use a seed between 0 and {MAX_SEED - 1}")
    root = Path(root)
    svd.write(root, seed)  # checkpoints/SVD/ and checkpoints/Animation/*.pth
    dwpose.write(root, seed)  # checkpoints/DWPose/*.onnx
    antelopev2.write(root, seed)  # models/antelopev2/*.onnx
    arcface.write(root, seed)  # checkpoints/Animation/glintr100_torch.pth (HJB's torch ArcFace)
    return WeightsHome(root)
