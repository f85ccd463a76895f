"""Tiny stand-in for the release's `checkpoints/Animation/glintr100_torch.pth` (the HJB loss's ArcFace).

An arcface_torch iresnet with the real key names and layout but one block per stage and narrow widths, seeded,
with random BatchNorm statistics so every layer matters; `animator_cli.hjb.load_arcface` reads it with the same
loader as glintr100 (the architecture is inferred from the state dict).
"""

from __future__ import annotations

from pathlib import Path

import torch

from animator_cli.fileio import atomic_path
from animator_cli.hjb.arcface import TORCH_FILE
from animator_cli.hjb.iresnet import IResNet, IResNetConfig
from animator_cli.weights.home import WeightsHome

CONFIG = IResNetConfig(layers=(1, 1, 1, 1), widths=(8, 8, 16, 16), stem=8, features=32)


def tiny_iresnet(seed: int, config: IResNetConfig = CONFIG) -> IResNet:
    """A seeded random iresnet in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    model = IResNet(config)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            elif name.endswith(("running_mean", "bias")):
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.1)
            elif tensor.ndim == 1:  # BN scales and PReLU slopes
                tensor.copy_(torch.rand(tensor.shape, generator=generator) * 0.5 + 0.5)
            else:
                fan_in = tensor[0].numel()
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * (2 / fan_in) ** 0.5)
    return model.eval()


def write(root: Path, seed: int = 0) -> Path:
    """Write `checkpoints/Animation/glintr100_torch.pth` under the weights home ``root``."""
    target = WeightsHome(root).animation_dir / TORCH_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        torch.save(tiny_iresnet(seed + 7).state_dict(), tmp)
    return target
