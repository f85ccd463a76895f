"""Temporal convolutions run as 2-D convolutions (`Runtime.temporal_conv_2d`, a GPU speed lever).

Every 3-D convolution of SVD's UNet (44) and temporal VAE decoder (29) has a (3, 1, 1) kernel: it mixes frames,
never neighbouring pixels. Such a convolution over (time, height, width) is the 2-D convolution over
(time, height·width) with a (3, 1) kernel, so it can run on the 2-D kernels, which cuDNN serves best; PyTorch 2.9
routed half-precision 3-D convolutions away from cuDNN (slower, and in bf16 several times the memory, pytorch
issue 166643). The module keeps `nn.Conv3d`'s parameters and keys, so checkpoints load and save unchanged; the
result equals the 3-D convolution up to float rounding (tests/test_gpu_levers.py holds it to 1e-5).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TemporalConv(nn.Conv3d):
    """An `nn.Conv3d` with a (k, 1, 1) kernel, stride 1, no dilation and no groups, computed as a 2-D convolution."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        height, width = input.shape[-2:]
        out = F.conv2d(input.flatten(-2), self.weight[..., 0], self.bias, padding=(self.padding[0], 0))
        return out.unflatten(-1, (height, width))


def is_temporal(conv: nn.Module) -> bool:
    """Whether ``conv`` is a 3-D convolution that only mixes frames (what `TemporalConv` can run)."""
    return (type(conv) is nn.Conv3d and tuple(conv.kernel_size[1:]) == (1, 1) and tuple(conv.padding[1:]) == (0, 0)
            and tuple(conv.stride) == (1, 1, 1) and tuple(conv.dilation) == (1, 1, 1) and conv.groups == 1
            and conv.padding_mode == "zeros")


def use_temporal_conv_2d(module: nn.Module) -> int:
    """Replace every temporal 3-D convolution inside ``module`` by a `TemporalConv` holding the same parameters;
    returns how many were replaced."""
    replaced = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if is_temporal(child):
                conv = TemporalConv(child.in_channels, child.out_channels, child.kernel_size, padding=child.padding,
                                    bias=child.bias is not None, device="meta")
                conv.weight, conv.bias = child.weight, child.bias
                conv.train(child.training)
                setattr(parent, name, conv)
                replaced += 1
    return replaced
