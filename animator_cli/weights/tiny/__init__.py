"""`animator weights make-tiny`: a complete weights home of tiny, seeded random models.

It has exactly the on-disk layout and file formats of the real home (the diffusers SVD folder, the three
`.pth` files and `glintr100_torch.pth`, the DWPose and antelopev2 ONNX files), so every test, benchmark and
user smoke test runs the same loading and inference code as the full-size weights.
"""

from __future__ import annotations

from pathlib import Path

from animator_cli.weights.home import WeightsHome
from animator_cli.weights.tiny import antelopev2, arcface, dwpose, svd


def make_tiny(root: Path, seed: int = 0) -> WeightsHome:
    """Write a tiny weights home at ``root`` and return it."""
    root = Path(root)
    svd.write(root, seed)  # checkpoints/SVD/ and checkpoints/Animation/*.pth
    dwpose.write(root, seed)  # checkpoints/DWPose/*.onnx
    antelopev2.write(root, seed)  # models/antelopev2/*.onnx
    arcface.write(root, seed)  # checkpoints/Animation/glintr100_torch.pth (HJB's torch ArcFace)
    return WeightsHome(root)
