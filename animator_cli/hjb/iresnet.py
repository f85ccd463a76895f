"""iresnet, the ArcFace backbone of arcface_torch, as the torch twin of antelopev2's glintr100.onnx.

Same module names and state-dict keys as arcface_torch (conv1, bn1, prelu, layer1-4.*, bn2, fc, features), so the
released ``glintr100_torch.pth`` loads strictly. Depth and widths are read from a state dict
(`config_from_state_dict`), so glintr100 (iresnet100: blocks [3, 13, 30, 3], widths 64/128/256/512) and the tiny
test model use one loader. Input: N×3×112×112 RGB in [-1, 1]; output: the raw (not L2-normalised) embedding.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

INPUT_SIZE = 112
BN_EPS = 1e-5
_FC_SIDE = INPUT_SIZE // 16  # four stride-2 stages: 112 → 7


@dataclass(frozen=True)
class IResNetConfig:
    """Blocks and output channels per stage, stem width and embedding size; the defaults are glintr100's."""

    layers: tuple[int, ...] = (3, 13, 30, 3)
    widths: tuple[int, ...] = (64, 128, 256, 512)
    stem: int = 64
    features: int = 512


class IBasicBlock(nn.Module):
    """Pre-activation residual block: bn1 → conv3x3 → bn2 → PReLU → conv3x3(stride) → bn3, plus the shortcut
    (a 1×1 conv and BN when the shape changes). Modules are registered in forward order."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=BN_EPS)
        self.conv1 = nn.Conv2d(inplanes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, eps=BN_EPS)
        self.prelu = nn.PReLU(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes, eps=BN_EPS)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(planes, eps=BN_EPS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (x if self.downsample is None else self.downsample(x))


class IResNet(nn.Module):
    """conv3x3 stem → four stride-2 stages → bn2 → dropout (identity at inference) → fc → BatchNorm1d."""

    def __init__(self, config: IResNetConfig = IResNetConfig()) -> None:
        super().__init__()
        self.config = config
        self.conv1 = nn.Conv2d(3, config.stem, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(config.stem, eps=BN_EPS)
        self.prelu = nn.PReLU(config.stem)
        inplanes = config.stem
        for stage, (blocks, planes) in enumerate(zip(config.layers, config.widths, strict=True), start=1):
            layer = [IBasicBlock(inplanes, planes, stride=2)] + [IBasicBlock(planes, planes) for _ in range(blocks - 1)]
            self.add_module(f"layer{stage}", nn.Sequential(*layer))
            inplanes = planes
        self.bn2 = nn.BatchNorm2d(inplanes, eps=BN_EPS)
        self.dropout = nn.Dropout(p=0.0)
        self.fc = nn.Linear(inplanes * _FC_SIDE * _FC_SIDE, config.features)
        self.features = nn.BatchNorm1d(config.features, eps=BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prelu(self.bn1(self.conv1(x)))
        for stage in range(1, len(self.config.layers) + 1):
            x = getattr(self, f"layer{stage}")(x)
        x = self.dropout(torch.flatten(self.bn2(x), 1))
        return self.features(self.fc(x))


def config_from_state_dict(state: dict[str, torch.Tensor]) -> IResNetConfig:
    """The architecture a state dict was saved from: block counts from the layer keys, widths from conv shapes."""
    blocks: dict[int, set[int]] = {}
    for key in state:
        if match := re.match(r"layer(\d+)\.(\d+)\.", key):
            blocks.setdefault(int(match[1]), set()).add(int(match[2]))
    stages = sorted(blocks)
    if not stages or stages != list(range(1, len(stages) + 1)) or "conv1.weight" not in state:
        raise KeyError("no iresnet stem/stages (conv1.weight, layer1..N) in the state dict")
    layers = tuple(max(blocks[s]) + 1 for s in stages)
    widths = tuple(int(state[f"layer{s}.0.conv1.weight"].shape[0]) for s in stages)
    return IResNetConfig(layers=layers, widths=widths, stem=int(state["conv1.weight"].shape[0]),
                         features=int(state["fc.weight"].shape[0]))


def iresnet_from_state_dict(state: dict[str, torch.Tensor]) -> IResNet:
    """An inference-ready, frozen IResNet holding exactly ``state`` (strict: every key and shape must match).

    Files saved without BatchNorm's ``num_batches_tracked`` counters (unused at inference) are accepted."""
    model = IResNet(config_from_state_dict(state))
    expected = model.state_dict()
    state = {**{k: v for k, v in expected.items() if k.endswith("num_batches_tracked")}, **state}
    model.load_state_dict(state, strict=True)
    return model.eval().requires_grad_(False)
