"""``--fp8``: float8 dynamic quantisation of the UNet's linear layers with torchao (lossy, opt-in).

Weights are quantised once per row to float8 e4m3, activations per row at every call, and the matrix products run
on the GPU's FP8 tensor cores (compute capability 8.9 or newer: Ada, Hopper, Blackwell). Convolutions and
attention stay in the model dtype. What it changes is measured by benchmarks/gpu_suite.py (relative L2 of one
UNet output and of the final latents against bf16); docs/speed.md has the figures.
"""

from __future__ import annotations

import torch
from torch import nn

from animator_cli.errors import InputError

MIN_CAPABILITY = (8, 9)


def check_fp8(device: torch.device) -> None:
    """An InputError unless ``device`` is a CUDA GPU with FP8 matrix units and torchao is installed."""
    if device.type != "cuda":
        raise InputError(f"--fp8 needs a CUDA GPU, not {device}")
    capability = torch.cuda.get_device_capability(device)
    if capability < MIN_CAPABILITY:
        raise InputError(f"--fp8 needs a GPU of compute capability 8.9 or newer; {torch.cuda.get_device_name(device)} "
                         f"is {capability[0]}.{capability[1]}", "leave out --fp8")
    try:
        import torchao  # noqa: F401
    except ImportError:
        raise InputError("--fp8 needs torchao", "pip install 'animator[fp8]'") from None


def _eligible(module: nn.Module, name: str) -> bool:
    """Linear layers whose sizes the FP8 kernels take (multiples of 16)."""
    return isinstance(module, nn.Linear) and module.in_features % 16 == 0 and module.out_features % 16 == 0


def quantize_fp8(unet: nn.Module) -> nn.Module:
    """Quantise ``unet``'s linear layers in place (on its GPU); returns it."""
    check_fp8(next(unet.parameters()).device)
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_

    quantize_(unet, Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()), filter_fn=_eligible)
    return unet
