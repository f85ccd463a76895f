"""PoseNet: turns a rendered skeleton image into a feature map added to the UNet's first conv output.

Same module tree and state-dict keys as the released ``pose_net.pth`` (MimicMotion's PoseNet).
"""

from __future__ import annotations

import math

import torch
from torch import nn

# (in, out, kernel, stride) of the eight convs; three stride-2 convs bring the skeleton to latent size (H/8).
_CONVS = (
    (3, 3, 3, 1), (3, 16, 4, 2), (16, 16, 3, 1), (16, 32, 4, 2),
    (32, 32, 3, 1), (32, 64, 4, 2), (64, 64, 3, 1), (64, 128, 3, 1),
)


class PoseNet(nn.Module):
    """Skeleton pixels in [-1, 1], shape (B, F, 3, H, W) or (N, 3, H, W) → (N, C, H/8, W/8).

    ``final_proj`` starts at zero, so an untrained PoseNet leaves the UNet exactly as SVD made it.
    """

    def __init__(self, noise_latent_channels: int = 320) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for in_ch, out_ch, kernel, stride in _CONVS:
            conv = nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=1)
            nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / (kernel * kernel * in_ch)))  # He-normal
            nn.init.zeros_(conv.bias)
            layers += [conv, nn.SiLU()]
        self.conv_layers = nn.Sequential(*layers)
        self.final_proj = nn.Conv2d(_CONVS[-1][1], noise_latent_channels, kernel_size=1)
        nn.init.zeros_(self.final_proj.weight)
        nn.init.zeros_(self.final_proj.bias)
        self.scale = nn.Parameter(torch.full((1,), 2.0))

    def forward(self, pose: torch.Tensor) -> torch.Tensor:
        if pose.ndim == 5:
            pose = pose.flatten(0, 1)
        return self.final_proj(self.conv_layers(pose)) * self.scale
